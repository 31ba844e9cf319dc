//! A simulated Fusion rebalance and snapshot restore through the real daemon, on file:// and S3:
//! 64 vbuckets published as `kv/<uuid>/kvstore-<vb>`, a bulk 0x70 in kv_engine's current body, a
//! plan for two nodes, one node's volumes mounted as 4 lazy guests (byte-equal, each vbucket in
//! exactly one), the `fusion` stats following hydration, release; a restore plan shown under
//! `dstVolumeID`; malformed bodies and plans refused with nothing mounted.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::data;
use support::node::Node;
use support::stores::TestStore;

const BUCKET: &str = "b7f1c2";
const NEW_BUCKET: &str = "d9e0a4";
const PLAN: &str = "plan-5d1e";
const VBUCKETS: u16 = 64;

fn volume(bucket: &str, vb: u16) -> String {
    format!("kv/{bucket}/kvstore-{vb}")
}

/// The files of vbucket `vb`: sizes differ, so guests split unevenly and every file is distinct.
fn files_of(vb: u16) -> Vec<(String, Vec<u8>)> {
    let seed = u64::from(vb) * 10;
    vec![
        (
            format!("{vb}.couch.1"),
            data::bytes(seed, 40_000 + usize::from(vb) * 3_000),
        ),
        ("meta/state".to_string(), data::bytes(seed + 1, 1_000 + usize::from(vb))),
    ]
}

fn storage_size(vb: u16) -> u64 {
    files_of(vb).iter().map(|(_, b)| b.len() as u64).sum()
}

/// Publishes every vbucket; answers the bulk 0x70's answer for `snapshot`.
fn publish_and_snapshot(node: &Node, store: &TestStore, snapshot: &str) -> Vec<Value> {
    for vb in 0..VBUCKETS {
        let src = node.path(&format!("src/{vb}"));
        for (path, bytes) in files_of(vb) {
            data::write(&src, &path, &bytes);
        }
        node.publish(store, &src, &volume(BUCKET, vb), &[]);
    }
    let body = json!({"snapshot_uuid": snapshot, "bucket_uuid": BUCKET, "metadatastore_uri": "chronicle://local",
                      "metadatastore_auth_token": "token", "valid_till": lazysnap::time::now_ms() / 1000 + 3600,
                      "vbucket_list": (0..VBUCKETS).collect::<Vec<_>>()});
    let answer = node.json(&["kv-engine", "0x70", &body.to_string(), "--store", &store.url()]);
    answer.as_array().expect("0x70 answers an array").clone()
}

/// A plan: node a receives the even vbuckets, node b the odd ones.
fn plan_of(created: &[Value], restore: bool) -> Value {
    let mut nodes = serde_json::Map::new();
    for (node, parity) in [("ns_1@a", 0), ("ns_1@b", 1)] {
        let volumes: Vec<Value> = created
            .iter()
            .enumerate()
            .filter(|(vb, _)| vb % 2 == parity)
            .map(|(vb, c)| {
                let vb = vb as u16;
                let mut v = json!({"volumeID": c["volumeID"], "logManifestName": c["logManifestName"],
                                   "snapshotUUID": c["snapshotUUID"], "createdAt": c["createdAt"],
                                   "validTill": c["validTill"], "version": 1,
                                   "logicalSize": storage_size(vb), "storageSize": storage_size(vb)});
                if restore {
                    v["dstVolumeID"] = volume(NEW_BUCKET, vb).into();
                }
                v
            })
            .collect();
        nodes.insert(node.to_string(), Value::Array(volumes));
    }
    json!({"planUUID": PLAN, "nodes": nodes, "logicalSize": 0, "storageSize": 0})
}

fn write_plan(node: &Node, plan: &Value) -> String {
    let path = node.path(&format!("plan-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, plan.to_string()).unwrap();
    path.display().to_string()
}

fn guests_mount(node: &Node, store: &TestStore, plan: &str, root: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let url = store.url();
    let mut args = vec![
        "guests",
        "mount",
        "--store",
        &url,
        "--plan",
        plan,
        "--node",
        "ns_1@a",
        "--root",
        root.to_str().unwrap(),
        "--parts",
        "4",
    ];
    args.extend_from_slice(extra);
    let answer = node.json(&args);
    let nodes = answer["nodes"].as_array().expect("the uploadMountedVolumes body");
    assert_eq!(nodes.len(), 1, "{answer}");
    assert_eq!(nodes[0]["name"], "ns_1@a", "{answer}");
    assert_eq!(answer.as_object().unwrap().len(), 1, "nothing but nodes: {answer}");
    nodes[0]["guestVolumePaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// Every `kv/<bucket>/kvstore-<vb>` folder of each guest, with its vbucket.
fn vbuckets_in(guest: &Path, bucket: &str) -> BTreeSet<u16> {
    let dir = guest.join("kv").join(bucket);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("kvstore-").unwrap().parse().unwrap()
        })
        .collect()
}

/// Each of node a's vbuckets in exactly one guest, byte-equal, shown under `bucket`.
fn assert_node_a_shown(guests: &[PathBuf], bucket: &str, what: &str) {
    let mut seen = BTreeSet::new();
    for guest in guests {
        for vb in vbuckets_in(guest, bucket) {
            assert!(seen.insert(vb), "{what}: vbucket {vb} is in two guests");
            for (path, bytes) in files_of(vb) {
                let read = std::fs::read(guest.join(volume(bucket, vb)).join(&path)).unwrap();
                assert!(read == bytes, "{what}: {path} of vbucket {vb} differs");
            }
        }
    }
    let expected: BTreeSet<u16> = (0..VBUCKETS).filter(|vb| vb % 2 == 0).collect();
    assert_eq!(seen, expected, "{what}: exactly node a's vbuckets");
}

fn stat(node: &Node, store: &TestStore, key: &[&str]) -> Value {
    let url = store.url();
    let mut args = vec!["fusion-stats"];
    args.extend_from_slice(key);
    args.extend_from_slice(&["--bucket", BUCKET, "--store", &url]);
    node.json(&args)
}

fn assert_nothing_mounted(node: &Node, root: &Path, what: &str) {
    assert!(node.mounts_below().is_empty(), "{what}: {:?}", node.mounts_below());
    assert_eq!(node.json(&["mounts"]), json!([]), "{what}");
    assert!(!root.join(PLAN).exists(), "{what}: the plan's folder was left behind");
}

#[test]
fn a_rebalance_mounts_one_nodes_vbuckets_as_lazy_guests_and_releases_them() {
    require_root!();
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let created = publish_and_snapshot(&node, &store, &format!("{PLAN}:{BUCKET}"));
        assert_eq!(created.len(), usize::from(VBUCKETS));
        for (vb, c) in created.iter().enumerate() {
            let keys: BTreeSet<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                BTreeSet::from([
                    "createdAt",
                    "logManifestName",
                    "snapshotUUID",
                    "validTill",
                    "version",
                    "volumeID"
                ]),
                "{c}"
            );
            assert_eq!(c["volumeID"], volume(BUCKET, vb as u16));
        }
        let plan = write_plan(&node, &plan_of(&created, false));
        let root = node.path("guests");
        // Slow enough that nothing is local when the stats are first read.
        let guests = guests_mount(&node, &store, &plan, &root, &["--bandwidth", "256K"]);
        assert_eq!(guests.len(), 4, "{}", store.name());
        for (i, guest) in guests.iter().enumerate() {
            assert_eq!(*guest, root.join(PLAN).join(format!("guest{i}")));
        }
        let retried = guests_mount(&node, &store, &plan, &root, &["--bandwidth", "256K"]);
        assert_eq!(retried, guests, "a retry answers the same guests");
        let other_split = node.fails(&[
            "guests",
            "mount",
            "--store",
            &store.url(),
            "--plan",
            &plan,
            "--node",
            "ns_1@a",
            "--root",
            root.to_str().unwrap(),
            "--parts",
            "2",
        ]);
        assert!(other_split.contains("release them first"), "{other_split}");
        assert_eq!(node.mounts_below().len(), 4, "a refused mount takes no guest down");
        let active = stat(&node, &store, &["active_guest_volumes"]);
        assert!(!active.as_array().unwrap().is_empty(), "{}: {active}", store.name());
        assert_node_a_shown(&guests, BUCKET, store.name());

        // Hydration finishes once uncapped; the stats follow it.
        for guest in &guests {
            node.json(&["hydrate", guest.to_str().unwrap(), "--bandwidth", "1G"]);
        }
        let status = wait_local(&node);
        assert_eq!(status["guests"].as_array().unwrap().len(), 4, "{status}");
        let a_total: u64 = (0..VBUCKETS).filter(|vb| vb % 2 == 0).map(storage_size).sum();
        assert_eq!(status["bytesTotal"], a_total, "{status}");
        assert_eq!(stat(&node, &store, &["active_guest_volumes"]), json!([]));
        assert_eq!(
            stat(&node, &store, &["migration", "4"]),
            json!({"completed_bytes": storage_size(4), "total_bytes": storage_size(4)})
        );
        assert_eq!(
            stat(&node, &store, &["migration", "5"]),
            json!({"completed_bytes": 0, "total_bytes": 0}),
            "node b's vbucket is not migrating here"
        );
        assert_eq!(stat(&node, &store, &["is_mounted", "4"]), json!({"is_mounted": true}));
        assert_eq!(stat(&node, &store, &["is_mounted", "5"]), json!({"is_mounted": false}));
        let detail = stat(&node, &store, &["is_mounted", "detail"]);
        assert_eq!(detail.as_object().unwrap().len(), usize::from(VBUCKETS), "{detail}");
        assert_eq!(detail["vb_63"], json!({"is_mounted": false}));
        let sync = stat(&node, &store, &["sync_info", "9"]);
        assert!(sync["logTerm"].is_u64() && sync["logSeqno"].is_u64(), "{sync}");

        // kv_engine's 0x72 with the guests: the vbucket's folder is found in its guest.
        let holding = node.json(&[
            "kv-engine",
            "0x72",
            &json!({"source": "FusionGuestVolumes", "mountPaths": guests}).to_string(),
            "--store",
            &store.url(),
            "--bucket",
            BUCKET,
            "--vbucket",
            "6",
        ]);
        assert_eq!(holding["deks"], json!([]));
        let paths = holding["mountPaths"].as_array().unwrap();
        assert_eq!(paths.len(), 1, "{holding}");
        assert!(Path::new(paths[0].as_str().unwrap()).join(volume(BUCKET, 6)).is_dir());

        // Survives a daemon restart like any mount.
        node.kill_daemon();
        node.restart_daemon_and_wait_for_mounts();
        let after = node.json(&["guests", "status", "--plan", PLAN]);
        assert_eq!(after["guests"].as_array().unwrap().len(), 4, "{after}");

        // Release: refused while a file is open, then frees everything.
        let file = std::fs::File::open(first_file(&guests[1])).unwrap();
        let refused = node.fails(&["guests", "release", "--plan", PLAN]);
        assert!(
            refused.contains("files open") && refused.contains("guest1"),
            "{refused}"
        );
        assert_eq!(node.mounts_below().len(), 4, "nothing was unmounted");
        drop(file);
        let released = node.json(&["guests", "release", "--plan", PLAN]);
        assert_eq!(released["unmounted"].as_array().unwrap().len(), 4, "{released}");
        assert_nothing_mounted(&node, &root, store.name());
        let again = node.fails(&["guests", "status", "--plan", PLAN]);
        assert!(again.contains("no guest volumes of plan"), "{again}");
    }
}

fn first_file(guest: &Path) -> PathBuf {
    let vb = *vbuckets_in(guest, BUCKET).iter().next().unwrap();
    guest.join(volume(BUCKET, vb)).join(&files_of(vb)[0].0)
}

/// Waits until every guest of the plan is local; answers `guests status`.
fn wait_local(node: &Node) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = node.json(&["guests", "status", "--plan", PLAN]);
        if status["bytesLocal"] == status["bytesTotal"] {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guests never became local: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_restore_plan_shows_its_volumes_under_their_new_ids() {
    require_root!();
    for store in TestStore::all() {
        let node = Node::new(store.env());
        let created = publish_and_snapshot(&node, &store, &format!("{PLAN}:{BUCKET}"));
        let plan = write_plan(&node, &plan_of(&created, true));
        let root = node.path("guests");
        let refused = node.fails(&[
            "guests",
            "mount",
            "--store",
            &store.url(),
            "--plan",
            &plan,
            "--node",
            "ns_1@a",
            "--root",
            root.to_str().unwrap(),
        ]);
        assert!(refused.contains("dstVolumeID"), "{refused}");
        assert_nothing_mounted(&node, &root, "a restore plan mounted as a rebalance");
        let guests = guests_mount(&node, &store, &plan, &root, &["--restore"]);
        assert_node_a_shown(&guests, NEW_BUCKET, store.name());
        assert!(
            !guests[0].join("kv").join(BUCKET).exists(),
            "the old bucket's ID shows nowhere"
        );
        let mounts = node.json(&["mounts"]);
        assert_eq!(
            mounts[0]["volumes"][0]["shownAs"].as_str().unwrap().split('/').nth(1),
            Some(NEW_BUCKET)
        );
        node.json(&["guests", "release", "--plan", PLAN]);
        assert_nothing_mounted(&node, &root, store.name());
    }
}

#[test]
fn malformed_plans_and_bodies_are_refused_whole_with_nothing_mounted() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let created = publish_and_snapshot(&node, &store, &format!("{PLAN}:{BUCKET}"));
    let good = plan_of(&created, false);
    let root = node.path("guests");
    let last = good["nodes"]["ns_1@a"].as_array().unwrap().len() - 1;
    let with_last = |key: &str, value: Value| {
        let mut plan = good.clone();
        plan["nodes"]["ns_1@a"][last][key] = value;
        plan
    };
    let other_manifest = "00000000000000000009.json";
    for (plan, expected) in [
        (json!({"nodes": {}}), "planUUID"),
        (json!({"planUUID": PLAN, "nodes": {"ns_1@b": []}}), "receives nothing"),
        (with_last("volumeID", volume(BUCKET, 999).into()), "kvstore-999"),
        (with_last("logManifestName", other_manifest.into()), other_manifest),
        (with_last("snapshotUUID", "never-made".into()), "never-made"),
        (with_last("validTill", 1_000.into()), "expired"),
        (with_last("storageSize", "big".into()), "storageSize"),
    ] {
        let file = write_plan(&node, &plan);
        let error = node.fails(&[
            "guests",
            "mount",
            "--store",
            &store.url(),
            "--plan",
            &file,
            "--node",
            "ns_1@a",
            "--root",
            root.to_str().unwrap(),
        ]);
        assert!(error.contains(expected), "{expected}: {error}");
        assert_nothing_mounted(&node, &root, expected);
    }
    let url = store.url();
    for (opcode, body, expected) in [
        (
            "0x70",
            json!({"bucket_uuid": BUCKET}),
            "get_fusion_storage_snapshot_validator: Missing snapshot_uuid",
        ),
        ("0x72", json!({"mountPaths": [], "extra": 1}), "Unexpected key: extra"),
        (
            "0x74",
            json!({"reset": 1}),
            "sync_fusion_logstore_validator: reset not boolean",
        ),
        (
            "0x77",
            json!({"logstore_uri": "x", "metadatastore_uri": "m", "metadatastore_auth_token": "t", "namespace": "kv"}),
            "namespace must be in format 'kv/bucketUUID'",
        ),
    ] {
        let error = node.fails(&[
            "kv-engine",
            opcode,
            &body.to_string(),
            "--store",
            &url,
            "--bucket",
            BUCKET,
            "--vbucket",
            "1",
        ]);
        assert!(
            error.contains(expected) && error.contains("Einval"),
            "{opcode}: {error}"
        );
    }
    assert_eq!(node.json(&["mounts"]), json!([]));
    // The same store answers the rest of today's bodies.
    let namespaces = node.json(&[
        "kv-engine",
        "0x78",
        r#"{"metadatastore_uri":"m","metadatastore_auth_token":"t"}"#,
        "--store",
        &url,
    ]);
    assert_eq!(
        namespaces,
        json!({"version": 1, "namespaces": [format!("kv/{BUCKET}")]})
    );
    let mounted = node.json(&[
        "kv-engine",
        "0x72",
        &json!({"source": "FusionLogStore", "snapshotUUID": format!("{PLAN}:{BUCKET}")}).to_string(),
        "--store",
        &url,
        "--bucket",
        BUCKET,
        "--vbucket",
        "3",
    ]);
    let path = PathBuf::from(mounted["mountPaths"][0].as_str().unwrap());
    let (name, bytes) = &files_of(3)[0];
    assert!(std::fs::read(path.join(volume(BUCKET, 3)).join(name)).unwrap() == *bytes);
    assert_eq!(stat(&node, &store, &["is_mounted", "3"]), json!({"is_mounted": true}));
    // 0x73 unmounts it; again, with nothing mounted, it still succeeds as in kv_engine.
    for _ in 0..2 {
        node.json(&[
            "kv-engine",
            "0x73",
            "--store",
            &url,
            "--bucket",
            BUCKET,
            "--vbucket",
            "3",
        ]);
        assert!(node.mounts_below().is_empty());
    }
    // 0x75/0x74/0x76 and the uploader stat: what is pending, then uploaded, then stopped.
    let src = node.path("src/3");
    let vb3 = ["--store", &url, "--bucket", BUCKET, "--vbucket", "3"];
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&vb3);
        node.json(&all)
    };
    with(&[
        "kv-engine",
        "0x75",
        r#"{"term":"5"}"#,
        "--source",
        src.to_str().unwrap(),
    ]);
    // The uploader's first round runs as it starts: a sync waits for it, so the file written next
    // is pending until the next round (10 s away) or sync.
    with(&["kv-engine", "0x74", r#"{"reset":true}"#]);
    data::write(&src, "new.couch", &data::bytes(77, 12_345));
    let uploading = stat(&node, &store, &["uploader", "3"]);
    assert_eq!(
        (uploading["state"].as_str(), uploading["term"].as_u64()),
        (Some("enabled"), Some(5)),
        "{uploading}"
    );
    assert!(
        uploading["snapshot_pending_bytes"].as_u64().unwrap() >= 12_345,
        "{uploading}"
    );
    assert_eq!(
        uploading["logstore_data_size"].as_u64().unwrap(),
        storage_size(3),
        "{uploading}"
    );
    with(&["kv-engine", "0x74", r#"{"reset":false}"#]);
    let synced = stat(&node, &store, &["uploader", "3"]);
    assert_eq!(synced["snapshot_pending_bytes"], 0, "{synced}");
    assert_eq!(
        synced["logstore_data_size"].as_u64().unwrap(),
        storage_size(3) + 12_345,
        "{synced}"
    );
    with(&["kv-engine", "0x76"]);
    with(&["kv-engine", "0x76"]);
    assert_eq!(stat(&node, &store, &["uploader", "3"])["state"], "disabled");
    let release = json!({"snapshot_uuid": format!("{PLAN}:{BUCKET}"), "bucket_uuid": BUCKET,
                         "metadatastore_uri": "m", "metadatastore_auth_token": "t", "vbucket_list": [0, 1]});
    assert_eq!(
        node.json(&["kv-engine", "0x71", &release.to_string(), "--store", &url]),
        json!({})
    );
    let delete = json!({"logstore_uri": &url, "metadatastore_uri": "m", "metadatastore_auth_token": "t",
                        "namespace": format!("kv/{BUCKET}")});
    assert_eq!(
        node.json(&["kv-engine", "0x77", &delete.to_string(), "--store", &url]),
        json!({})
    );
    assert_eq!(
        node.json(&[
            "kv-engine",
            "0x78",
            r#"{"metadatastore_uri":"m","metadatastore_auth_token":"t"}"#,
            "--store",
            &url
        ]),
        json!({"version": 1, "namespaces": []})
    );
}
