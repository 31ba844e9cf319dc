//! mountd's control API with Fusion's request bodies, on file:// and the local S3 server: the
//! operations answer what docs/control-api.md says, and every error case answers its status and a
//! message that names the bad input.

mod support;

use serde_json::{json, Value};
use support::data;
use support::node::Node;
use support::stores::TestStore;

const VOLUME: &str = "kv/b1/kvstore-0";
const OTHER: &str = "kv/b1/kvstore-1";

/// Sends `body` and requires `status` with every needle in the error message.
fn expect_error(node: &Node, body: &Value, status: &str, needles: &[&str]) {
    let answer = node.request(&body.to_string());
    assert_eq!(answer["status"], status, "{body} -> {answer}");
    let message = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}: no message in {answer}"));
    for needle in needles {
        assert!(message.contains(needle), "{body}: expected {needle:?} in {message:?}");
    }
}

fn expect_ok(node: &Node, body: &Value) -> Value {
    let answer = node.request(&body.to_string());
    assert_eq!(answer["status"], "Success", "{body} -> {answer}");
    answer["result"].clone()
}

#[test]
fn operations_answer_fusion_shapes_and_every_error_its_status_and_message() {
    require_root!();
    for store in TestStore::all() {
        let url = store.url();
        let node = Node::new(store.env());
        let src = node.path("engine");
        data::write(&src, "a.sst", &data::bytes(1, 10_000));
        node.publish(&store, &src, VOLUME, &[]);
        node.publish(&store, &src, OTHER, &[]);
        node.ok(&["daemon", "start"]);
        let name = store.name();

        // 0x70 over two volumes: one element per volume, Fusion's keys, unknown keys ignored.
        let created = expect_ok(
            &node,
            &json!({"op": "snapshot_create", "logstore_uri": url, "volumes": [VOLUME, OTHER],
                    "snapshotUuid": "s1", "validity": 600, "someFutureKey": true}),
        );
        let created = created.as_array().unwrap_or_else(|| panic!("{name}: {created}"));
        assert_eq!(created.len(), 2);
        for (answer, volume) in created.iter().zip([VOLUME, OTHER]) {
            let mut keys: Vec<_> = answer.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            let expected = [
                "createdAt",
                "logFiles",
                "logManifestName",
                "snapshotUUID",
                "validTill",
                "version",
                "volumeID",
            ];
            assert_eq!(keys, expected);
            assert_eq!(answer["volumeID"], volume);
            assert_eq!(answer["logFiles"], json!(["a.sst"]));
            assert_eq!(
                answer["validTill"].as_u64().unwrap() - answer["createdAt"].as_u64().unwrap(),
                600_000
            );
        }
        let described = expect_ok(
            &node,
            &json!({"op": "snapshot_describe", "store": url, "volume": VOLUME, "snapshotUuid": "s1"}),
        );
        assert_eq!(described["state"], "COMMITTED");
        let listed = expect_ok(&node, &json!({"op": "snapshot_list", "store": url, "volume": OTHER}));
        assert_eq!(listed[0]["snapshotUUID"], "s1");

        // Einval: the request itself is wrong.
        let create = |extra: Value| {
            let mut body =
                json!({"op": "snapshot_create", "store": url, "volumes": VOLUME, "snapshotUuid": "s2", "validity": 60});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            body
        };
        let answer = node.request("this is not json");
        assert_eq!(answer["status"], "Einval", "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("malformed request"),
            "{answer}"
        );
        expect_error(
            &node,
            &json!({"op": "make_coffee"}),
            "Einval",
            &["unknown variant `make_coffee`"],
        );
        expect_error(
            &node,
            &create(json!({"snapshotUuid": "../../etc"})),
            "Einval",
            &["invalid snapshot UUID \"../../etc\""],
        );
        expect_error(
            &node,
            &create(json!({"validity": 0})),
            "Einval",
            &["validity of 0 seconds"],
        );
        expect_error(
            &node,
            &create(json!({"validity": "soon"})),
            "Einval",
            &["malformed request", "soon"],
        );
        expect_error(
            &node,
            &json!({"op": "snapshot_create", "store": url, "volumes": VOLUME, "snapshotUuid": "s3"}),
            "Einval",
            &["missing field `validity`"],
        );
        expect_error(
            &node,
            &create(json!({"snapshotUuid": "s1"})),
            "Einval",
            &["snapshot s1 of volume kv/b1/kvstore-0 already exists"],
        );
        expect_error(&node, &create(json!({"volumes": "kv/../x"})), "Einval", &["kv/../x"]);
        expect_error(
            &node,
            &create(json!({"store": "ftp://nowhere/x"})),
            "Einval",
            &["invalid store URL \"ftp://nowhere/x\""],
        );
        let start = |term: Value, source: &str| json!({"op": "uploader_start", "store": url, "volume": VOLUME, "source": source, "term": term, "interval": 3600});
        let source = src.to_str().unwrap();
        expect_error(
            &node,
            &start(json!("12x"), source),
            "Einval",
            &["term \"12x\" is not an unsigned 64-bit integer"],
        );
        expect_error(&node, &start(json!("-1"), source), "Einval", &["term \"-1\""]);
        expect_error(
            &node,
            &start(json!("5"), "/no/such/engine"),
            "Einval",
            &["source /no/such/engine is not an absolute path to a folder"],
        );
        let started = expect_ok(&node, &start(json!("5"), source));
        assert_eq!(
            (started["term"].clone(), started["state"].clone()),
            (json!("5"), json!("RUNNING"))
        );
        expect_error(
            &node,
            &start(json!("4"), source),
            "Einval",
            &["term 4 is older than the term 5"],
        );
        let gc = |term: &str| json!({"op": "gc", "store": url, "volume": VOLUME, "term": term, "dryRun": true});
        expect_error(
            &node,
            &gc("3"),
            "Einval",
            &["term 3 is older than the current term 5", "fenced"],
        );
        let dry = expect_ok(&node, &gc("5"));
        assert_eq!((dry["term"].clone(), dry["dryRun"].clone()), (json!("5"), json!(true)));
        let synced = expect_ok(&node, &json!({"op": "sync", "store": url, "volume": VOLUME}));
        assert!(synced["logManifestName"].is_string(), "{synced}");
        let stopped = expect_ok(&node, &json!({"op": "uploader_stop", "store": url, "volume": VOLUME}));
        assert_eq!(stopped["state"], "STOPPED");
        expect_error(
            &node,
            &json!({"op": "namespace_delete", "logstore_uri": url}),
            "Einval",
            &["missing field `namespaces`"],
        );
        expect_error(
            &node,
            &json!({"op": "namespace_delete", "logstore_uri": url, "namespaces": ["../etc"]}),
            "Einval",
            &["namespace to keep \"../etc\""],
        );
        let mount = node.mount(&["--store", &url, "--volume", VOLUME]);
        expect_error(
            &node,
            &json!({"op": "namespace_delete", "logstore_uri": url, "namespaces": [], "metadatastore_uri": "x"}),
            "Einval",
            &["live mount", &mount.path.display().to_string()],
        );
        mount.unmount();

        // NotMyVbucket: the volume, snapshot or uploader is not here.
        let nope = "kv/b9/kvstore-0";
        expect_error(&node, &create(json!({"volumes": nope})), "NotMyVbucket", &[nope]);
        expect_error(
            &node,
            &create(json!({"volumes": [VOLUME, nope], "snapshotUuid": "s4"})),
            "NotMyVbucket",
            &[nope, "no volume was snapshotted"],
        );
        let s4 = json!({"op": "snapshot_describe", "store": url, "volume": VOLUME, "snapshotUuid": "s4"});
        expect_error(
            &node,
            &s4,
            "NotMyVbucket",
            &["snapshot s4 of volume kv/b1/kvstore-0 not found"],
        );
        expect_error(
            &node,
            &json!({"op": "snapshot_list", "store": url, "volume": nope}),
            "NotMyVbucket",
            &[nope, "not found"],
        );
        expect_error(
            &node,
            &json!({"op": "gc", "store": url, "volume": nope}),
            "NotMyVbucket",
            &[nope],
        );
        expect_error(
            &node,
            &json!({"op": "sync", "store": url, "volume": VOLUME}),
            "NotMyVbucket",
            &["no uploader of volume kv/b1/kvstore-0"],
        );
        expect_error(
            &node,
            &json!({"op": "uploader_stop", "store": url, "volume": VOLUME}),
            "NotMyVbucket",
            &["no uploader"],
        );
        let mount = json!({"op": "mount", "store": url, "volumes": [VOLUME], "selector": {"snapshot": "s4"}});
        expect_error(&node, &mount, "NotMyVbucket", &["snapshot s4", "not found"]);

        // Einternal: the store holds something broken.
        store.put(
            &format!("volumes/{VOLUME}/snapshots/bad/00000000000000000001.json"),
            b"{not a record",
        );
        let bad = json!({"op": "snapshot_describe", "store": url, "volume": VOLUME, "snapshotUuid": "bad"});
        expect_error(&node, &bad, "Einternal", &["snapshot record", "malformed"]);

        // Releasing is idempotent: twice, and for a snapshot that never existed.
        for _ in 0..2 {
            let released = expect_ok(
                &node,
                &json!({"op": "snapshot_release", "store": url, "volumes": [VOLUME, OTHER], "snapshotUuid": "s1"}),
            );
            assert_eq!(released.as_array().unwrap().len(), 2);
        }
        let never = expect_ok(
            &node,
            &json!({"op": "snapshot_release", "store": url, "volumes": VOLUME, "snapshotUuid": "never"}),
        );
        assert_eq!(never[0]["released"], false);
        expect_error(&node, &s4, "NotMyVbucket", &["not found"]);
        let namespaces = expect_ok(&node, &json!({"op": "namespace_list", "logstore_uri": url}));
        assert_eq!(namespaces, json!([{"namespace": "kv/b1", "volumes": [VOLUME, OTHER]}]));
    }
}
