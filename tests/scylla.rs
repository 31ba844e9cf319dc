//! ScyllaDB backups through the real CLI and daemon: manifests of two datacenters in two stores
//! (node scope in the flat layout, dc scope in the cluster layout) ingested in one call, then
//! views by tablet, token range, datacenter, rack and node mounted for real. Each view must list
//! exactly the components of the sstables wholly inside what was asked (computed here from the
//! tokens), byte-identical to the store, and report the sstables that span it. Malformed manifests
//! are refused with the reason and leave nothing ingested.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use support::node::Node;
use support::scylla::{self, Sstable, KEYSPACE, SNAPSHOT, TABLE, TABLETS};
use support::stores::TestStore;

/// Two backup locations: dc1's node backups in `dc1_store`, dc2's cluster backup in `dc2_store`.
/// Answers the ingest arguments.
fn build_backup(dc1_store: &TestStore, dc2_store: &TestStore, sstables: &[Sstable]) -> Vec<String> {
    let mut args = Vec::new();
    for (host, dc, _) in scylla::hosts().into_iter().filter(|(_, dc, _)| dc == "dc1") {
        let key = scylla::write_node_backup(dc1_store, &format!("backups/{dc}/{host}"), &host, sstables);
        args.extend(["--store".to_string(), dc1_store.url(), "--manifest".to_string(), key]);
    }
    let key = scylla::write_cluster_backup(dc2_store, "cluster", "dc2", sstables);
    args.extend(["--store".to_string(), dc2_store.url(), "--manifest".to_string(), key]);
    args
}

/// A node that ingested the two-datacenter backup (dc1 in `dc1_store`, dc2 in a local store),
/// with the sstables, the ingest arguments and the ingest's report.
fn ingested(dc1_store: &TestStore, dc2_store: &TestStore) -> (Node, Vec<Sstable>, Vec<String>, Value) {
    let mut env = dc1_store.env();
    env.extend(dc2_store.env());
    let node = Node::new(env);
    let sstables = scylla::sstables();
    let args = build_backup(dc1_store, dc2_store, &sstables);
    let mut ingest = vec!["scylla", "ingest"];
    ingest.extend(args.iter().map(String::as_str));
    let report = node.json(&ingest);
    (node, sstables, args, report)
}

/// The two-datacenter backup with dc1 on the S3 server, ingested; its S3 counters start at zero.
/// The node comes first so that it stops before the stores go.
fn ingested_with_dc1_on_s3() -> (Node, Vec<Sstable>, TestStore, TestStore) {
    let dc1_store = TestStore::s3();
    let dc2_store = TestStore::file();
    let (node, sstables, _, _) = ingested(&dc1_store, &dc2_store);
    dc1_store.server().unwrap().reset_stats();
    (node, sstables, dc1_store, dc2_store)
}

/// Every file of a mounted view, by name, with its bytes.
fn listed(path: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert!(e.file_type().unwrap().is_file(), "a view is flat: {:?}", e.path());
            (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// `restore start` of a view, with `extra` flags.
fn restore_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["restore".to_string(), "start".to_string()];
    args.extend(base_args(extra));
    args
}

fn base_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--scylla", SNAPSHOT, "--keyspace", KEYSPACE, "--table", TABLE]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Mounts a view and checks it against the sstables `want` keeps and the tokens of `range`.
fn check_view(
    node: &Node,
    sstables: &[Sstable],
    extra: &[&str],
    range: Option<(i64, i64)>,
    want: impl Fn(&Sstable) -> bool,
) {
    let args = base_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mount, answer) = node.mount_answer(&args);
    let chosen: Vec<&Sstable> = sstables.iter().filter(|s| want(s)).collect();
    let inside = |s: &Sstable| range.is_none_or(|(a, b)| a <= s.first && s.last <= b);
    let spans = |s: &Sstable| range.is_some_and(|(a, b)| !inside(s) && s.first <= b && a <= s.last);
    let expected: BTreeMap<String, Vec<u8>> = chosen
        .iter()
        .filter(|s| inside(s))
        .flat_map(|s| s.files.clone())
        .collect();
    let got = listed(&mount.path);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "view {extra:?}: {answer}"
    );
    assert!(got == expected, "view {extra:?}: bytes differ from the store");
    let spanning: BTreeSet<String> = answer["spanning"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sstableId"].as_str().unwrap().to_string())
        .collect();
    let expected_spanning: BTreeSet<String> = chosen.iter().filter(|s| spans(s)).map(|s| s.id.clone()).collect();
    assert_eq!(spanning, expected_spanning, "view {extra:?}: {answer}");
    assert_eq!(
        answer["sstables"],
        chosen.iter().filter(|s| inside(s)).count(),
        "{answer}"
    );
    // `mounts` reports the same spanning sstables for the mount.
    let mounts = node.json(&["mounts"]);
    let this = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"].as_str() == mount.path.to_str())
        .unwrap_or_else(|| panic!("{mounts}"));
    assert_eq!(this["scylla"]["spanning"], answer["spanning"]);
    mount.unmount();
}

#[test]
fn views_of_a_two_dc_backup_show_exactly_the_sstables_asked_for() {
    require_root!();
    for dc1_store in TestStore::all() {
        let what = dc1_store.name();
        let dc2_store = TestStore::file();
        // A stray object with an sstable's prefix that its TOC does not list is not shown.
        let first = &scylla::sstables()[0];
        let stray = first.toc_name.replace("TOC.txt", "Junk.tmp");
        dc1_store.put(&format!("backups/dc1/{}/{stray}", first.host), b"not a component");
        let (node, sstables, args, report) = ingested(&dc1_store, &dc2_store);
        assert_eq!(report["sstables"], sstables.len(), "{what}: {report}");
        assert_eq!(report["manifests"].as_array().unwrap().len(), 3, "{report}");
        assert_eq!(report["manifests"][2]["layout"], "cluster", "{report}");
        assert_eq!(report["manifests"][2]["scope"], "dc", "{report}");
        let mut ingest = vec!["scylla", "ingest"];
        ingest.extend(args.iter().map(String::as_str));
        // Ingesting again changes nothing.
        let again = node.json(&ingest);
        assert_eq!(
            (again["sstables"].as_u64(), again["already_known"].as_u64()),
            (Some(0), Some(12)),
            "{again}"
        );
        let tables = node.json(&["scylla", "ls"]);
        assert_eq!(tables[0]["tabletCount"], TABLETS, "{tables}");
        assert_eq!(tables[0]["sstables"], 12, "{tables}");

        // Each tablet of the table's own layout, across both datacenters and stores.
        for t in 0..TABLETS {
            let tablet = t.to_string();
            let range = scylla::tablet_range(t, TABLETS);
            check_view(&node, &sstables, &["--tablet", &tablet], Some(range), |_| true);
        }
        // A coarser layout than the backup's (2 tablets), one node, a rack, a datacenter.
        let range = scylla::tablet_range(1, 2);
        check_view(
            &node,
            &sstables,
            &["--tablet", "1", "--tablet-count", "2"],
            Some(range),
            |_| true,
        );
        for (host, _, _) in scylla::hosts() {
            let range = scylla::tablet_range(2, TABLETS);
            check_view(
                &node,
                &sstables,
                &["--node", &host, "--tablet", "2"],
                Some(range),
                |s| s.host == host,
            );
        }
        check_view(&node, &sstables, &["--dc", "dc2", "--rack", "rack1"], None, |s| {
            s.dc == "dc2" && s.rack == "rack1"
        });
        check_view(&node, &sstables, &["--dc", "dc1"], None, |s| s.dc == "dc1");
        let (a, b) = (scylla::tablet_range(1, TABLETS).0, scylla::tablet_range(2, TABLETS).1);
        let token_range = format!("{}:{b}", a - 1);
        check_view(&node, &sstables, &["--token-range", &token_range], Some((a, b)), |_| {
            true
        });

        // Unknown names and impossible filters are clear errors; nothing is mounted.
        let fails = |extra: &[&str], expected: &str| {
            let args = base_args(extra);
            let mut full = vec!["mount"];
            full.extend(args.iter().map(String::as_str));
            let error = node.fails(&full);
            assert!(error.contains(expected), "{extra:?}: {error}");
        };
        fails(&["--tablet", "4"], "there is no tablet 4");
        fails(&["--tablet", "1", "--tablet-count", "3"], "not a power of two");
        fails(&["--node", "no-such-host"], "no sstable");
        fails(&["--token-range", "5:1"], "is empty");
        let error = node.fails(&["mount", "--scylla", "snapX", "--keyspace", KEYSPACE, "--table", TABLE]);
        assert!(
            error.contains("no table ks.cf in snapshot snapX") && error.contains("ks.cf in snap1"),
            "{error}"
        );
        assert!(node.mounts_below().is_empty());
        // ScyllaDB's refresh moves sstables out of the upload directory: a read-only mount there
        // would fail it, so an in-place restore of a view is refused, leaving no job and no folder.
        let dest = node.path("upload-in-place");
        let mut full = vec!["restore", "start", "--dest", dest.to_str().unwrap(), "--in-place"];
        let args = base_args(&[]);
        full.extend(args.iter().map(String::as_str));
        let error = node.fails(&full);
        assert!(error.contains("--in-place cannot restore a ScyllaDB view"), "{error}");
        assert!(!dest.exists() && node.mounts_below().is_empty());
        assert_eq!(node.json(&["restore", "list"])["jobs"], serde_json::json!([]));
    }
}

#[test]
fn malformed_manifests_are_refused_and_nothing_is_ingested() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let sstables = scylla::sstables();
    let good = scylla::write_node_backup(&store, "good", &sstables[0].host, &sstables);
    let manifest: Value = serde_json::from_slice(&std::fs::read(store_path(&store, &good)).unwrap()).unwrap();
    let url = store.url();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "no-sstables",
            Box::new(|m| m["sstables"] = serde_json::json!([])),
            "lists no sstables",
        ),
        (
            "bad-token",
            Box::new(|m| m["sstables"][1]["first_token"] = serde_json::json!("12abc")),
            "is not a 64-bit token",
        ),
        (
            "reversed",
            Box::new(|m| m["sstables"][1]["first_token"] = serde_json::json!(i64::MAX)),
            "is after last_token",
        ),
        (
            "three-tablets",
            Box::new(|m| m["table"]["tablet_count"] = serde_json::json!(3)),
            "tablet_count 3 is not a power of two",
        ),
        (
            "no-toc",
            Box::new(|m| m["sstables"][2]["toc_name"] = serde_json::json!("me-3gw7_0ndy_9999999999999-big-TOC.txt")),
            "is missing from store",
        ),
    ];
    for (name, change, expected) in cases {
        let mut bad = manifest.clone();
        change(&mut bad);
        // The hostile manifest sits beside the good one's components (the flat layout).
        let key = format!("good/{name}.json");
        store.put(&key, bad.to_string().as_bytes());
        // The good manifest first: one bad manifest in the call leaves nothing ingested.
        let error = node.fails(&[
            "scylla",
            "ingest",
            "--store",
            &url,
            "--manifest",
            &good,
            "--manifest",
            &key,
        ]);
        assert!(error.contains(expected) && error.contains(&key), "{name}: {error}");
        assert_eq!(node.json(&["scylla", "ls"]), serde_json::json!([]), "{name}");
    }
    let error = node.fails(&[
        "scylla",
        "ingest",
        "--store",
        &url,
        "--manifest",
        "nowhere/manifest.json",
    ]);
    assert!(error.contains("nowhere/manifest.json not found"), "{error}");
    store.put("junk.json", b"{\"sstables\": 5");
    let error = node.fails(&["scylla", "ingest", "--store", &url, "--manifest", "junk.json"]);
    assert!(error.contains("not valid JSON"), "{error}");
    assert_eq!(node.json(&["scylla", "ls"]), serde_json::json!([]));
    // The good manifest alone goes in.
    let report = node.json(&["scylla", "ingest", "--store", &url, "--manifest", &good]);
    assert_eq!(report["sstables"], 3, "{report}");
}

fn store_path(store: &TestStore, key: &str) -> std::path::PathBuf {
    match store {
        TestStore::File(dir) => dir.path().join(key),
        TestStore::S3(_) => unreachable!(),
    }
}

fn wait_job(node: &Node, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = node.json(&["restore", "status", id, "--json"]);
        if done(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {s}\n{}",
            node.daemon_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
}

/// Every file under `dir`, by name, with its bytes.
fn local_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    support::data::tree(dir)
}

#[test]
fn a_restore_of_both_datacenters_cancels_resumes_and_fetches_nothing_twice() {
    require_root!();
    let (node, sstables, dc1_store, _dc2_store) = ingested_with_dc1_on_s3();
    let server = dc1_store.server().unwrap();

    let dest = node.path("upload");
    let start = restore_args(&["--dest", dest.to_str().unwrap(), "--bandwidth", "1M"]);
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let job = node.json(&start);
    let id = job["id"].as_str().unwrap_or_else(|| panic!("{job}")).to_string();
    wait_job(&node, &id, "a sstable done", |s| {
        s["sstablesDone"].as_u64().unwrap_or(0) >= 1
    });
    let cancelled = node.json(&["restore", "cancel", &id]);
    assert_eq!(cancelled["state"], "CANCELLED", "{cancelled}");
    let expected: BTreeMap<String, Vec<u8>> = sstables.iter().flat_map(|s| s.files.clone()).collect();
    let kept = local_files(&dest);
    assert!(
        kept.len() < expected.len(),
        "cancel came after the job had finished: {cancelled}"
    );
    for (name, bytes) in &kept {
        assert!(expected.get(name) == Some(bytes), "cancel left {name} torn or foreign");
    }
    // Status from any client: the same request answers the same job.
    let again = node.json(&start);
    assert_eq!(again["id"], id.as_str(), "{again}");

    let resumed = node.json(&["restore", "resume", &id]);
    assert_eq!(resumed["state"], "RUNNING", "{resumed}");
    let done = wait_job(&node, &id, "completion", |s| s["state"] == "COMPLETED");
    assert_eq!(done["sstablesTotal"], sstables.len(), "{done}");
    assert_eq!(done["sstablesDone"], sstables.len(), "{done}");
    assert_eq!(done["filesTotal"], expected.len(), "{done}");
    assert!(
        local_files(&dest) == expected,
        "the upload directory differs from the backup"
    );

    // Counted at the S3 server: dc1's components were fetched once each across cancel and resume
    // (each TOC once more, read when the view was made).
    let dc1: Vec<&Sstable> = sstables.iter().filter(|s| s.dc == "dc1").collect();
    let once: u64 = dc1.iter().flat_map(|s| s.files.values()).map(|b| b.len() as u64).sum();
    let tocs: u64 = dc1.iter().map(|s| s.files[&s.toc_name].len() as u64).sum();
    let fetched = server.stats().get_bytes;
    assert!(
        fetched <= once + tocs,
        "fetched {fetched} bytes from S3 for {once} bytes of dc1 components"
    );
    assert!(
        fetched >= once,
        "fetched {fetched} < {once}: the count does not see the copy"
    );
}

#[test]
fn a_data_file_that_disagrees_with_its_digest_never_takes_its_final_name() {
    require_root!();
    let store = TestStore::file();
    let node = Node::new(store.env());
    let mut sstables = scylla::sstables();
    sstables.truncate(3);
    // The backup holds a Digest.crc32 that does not match its Data.db.
    let digest = sstables[0].toc_name.replace("TOC.txt", "Digest.crc32");
    sstables[0].files.insert(digest, b"12345".to_vec());
    let key = scylla::write_node_backup(&store, "n1", &sstables[0].host, &sstables);
    node.json(&["scylla", "ingest", "--store", &store.url(), "--manifest", &key]);
    let dest = node.path("upload");
    let start = restore_args(&["--node", &sstables[0].host, "--dest", dest.to_str().unwrap()]);
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let job = node.json(&start);
    let id = job["id"].as_str().unwrap().to_string();
    let failed = wait_job(&node, &id, "failure", |s| s["state"] == "FAILED");
    let data = sstables[0].toc_name.replace("TOC.txt", "Data.db");
    assert!(
        failed["error"].as_str().unwrap().contains("Digest.crc32 says 00003039"),
        "{failed}"
    );
    assert!(
        !dest.join(&data).exists(),
        "a Data.db that fails its digest took its final name"
    );
    assert!(
        local_files(&dest).keys().all(|k| !k.contains("lazysnap-restore")),
        "temp files left"
    );
}

/// What the checksums learned of foreign objects are worth after a crash: a restarted daemon
/// resumes the copy checking what it finds on disk, and serves the cache, without asking S3 again.
#[test]
fn a_restore_cut_by_a_daemon_crash_resumes_and_a_restarted_mount_serves_the_cache_without_refetching() {
    require_root!();
    let (node, sstables, dc1_store, _dc2_store) = ingested_with_dc1_on_s3();
    let server = dc1_store.server().unwrap();
    let dc1: Vec<&Sstable> = sstables.iter().filter(|s| s.dc == "dc1").collect();
    let expected: BTreeMap<String, Vec<u8>> = dc1.iter().flat_map(|s| s.files.clone()).collect();

    let dest = node.path("upload");
    let start = restore_args(&["--dc", "dc1", "--dest", dest.to_str().unwrap(), "--bandwidth", "1M"]);
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let id = node.json(&start)["id"].as_str().unwrap().to_string();
    // Killed once a Data.db is complete: a restarted daemon must check it, not fetch it again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !local_files(&dest).keys().any(|k| k.ends_with("-Data.db")) {
        assert!(std::time::Instant::now() < deadline, "no Data.db restored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = node.json(&["restore", "status", &id, "--json"]);
    node.kill_daemon();
    let total = before["bytesTotal"].as_u64().unwrap();
    let done_before = before["bytesDone"].as_u64().unwrap();
    assert!(
        done_before < total,
        "the crash came after the job had finished: {before}"
    );
    server.reset_stats();

    node.ok(&["daemon", "start"]);
    let done = wait_job(&node, &id, "completion after the restart", |s| {
        s["state"] == "COMPLETED"
    });
    assert_eq!(done["sstablesDone"], dc1.len(), "{done}");
    assert!(
        local_files(&dest) == expected,
        "the upload directory differs from the backup"
    );
    // Bytes in flight at the crash may be fetched again; nothing the job had done may be.
    let fetched_again = done["bytesFetchedThisRun"].as_u64().unwrap();
    let at_server = server.stats().get_bytes;
    assert!(
        fetched_again <= total - done_before && at_server <= total - done_before,
        "{fetched_again} bytes fetched after the restart ({at_server} counted at S3), but {done_before} of {total} were done before: {done}"
    );

    // A restore writes to its destination, not the block cache (the engine reads the restored
    // files): a mount of the view fetches what it reads once, and a daemon started again checks
    // those cached blocks against the checksums it learned before instead of fetching them.
    let args = base_args(&["--dc", "dc1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mount = node.mount(&args);
    assert!(listed(&mount.path) == expected, "the view differs from the backup");
    mount.unmount();
    node.ok(&["daemon", "stop"]);
    node.ok(&["daemon", "start"]);
    server.reset_stats();
    let mount = node.mount(&args);
    assert!(listed(&mount.path) == expected, "the view differs from the backup");
    assert_eq!(
        server.stats().get_bytes,
        0,
        "a restarted daemon fetched cached blocks again: {}",
        node.daemon_log()
    );
    mount.unmount();
}
