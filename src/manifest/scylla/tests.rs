use serde_json::json;

use super::*;

fn node_scope() -> serde_json::Value {
    json!({
        "manifest": {"version": "1.0", "scope": "node"},
        "node": {"host_id": "h1", "datacenter": "dc1", "rack": "rack1"},
        "snapshot": {"name": "snap1", "created_at": 1765700000, "expires_at": null},
        "table": {"keyspace_name": "ks", "table_name": "cf", "table_id": "t1", "tablets_type": "powof2", "tablet_count": 4},
        "sstables": [{"id": "s1", "toc_name": "me-3gw7_0ndy_3wlq829wcsddgwha1n-big-TOC.txt", "data_size": 75,
            "index_size": 8, "first_token": -8629266958227979430i64, "last_token": -4704379515263290123i64,
            "tablet_id": 0, "repaired_at": 0}],
        "tablets": [{"id": 0, "first_token": -9223372036854775807i64, "last_token": -4611686018427387905i64},
                    {"id": 1, "first_token": -4611686018427387904i64, "last_token": -1},
                    {"id": 2, "first_token": 0, "last_token": 4611686018427387903i64},
                    {"id": 3, "first_token": 4611686018427387904i64, "last_token": i64::MAX}]
    })
}

fn parse_value(v: &serde_json::Value) -> Result<ScyllaManifest, ManifestError> {
    parse(&serde_json::to_vec(v).unwrap(), "file:///b#m.json", None)
}

fn error_of(v: &serde_json::Value) -> String {
    parse_value(v).unwrap_err().to_string()
}

#[test]
fn reads_a_node_scope_manifest() {
    let m = parse_value(&node_scope()).unwrap();
    assert_eq!((m.scope.as_str(), m.snapshot.as_str()), ("node", "snap1"));
    assert_eq!(m.created_at_ms, Some(1765700000000));
    assert_eq!((m.table.keyspace.as_str(), m.table.table.as_str()), ("ks", "cf"));
    assert_eq!(m.table.tablets.as_ref().map(Tablets::count), Some(4));
    let s = &m.sstables[0];
    assert_eq!(s.component_prefix(), "me-3gw7_0ndy_3wlq829wcsddgwha1n-big-");
    assert_eq!(s.node.datacenter.as_deref(), Some("dc1"));
    assert_eq!(s.tokens.first, -8629266958227979430);
}

#[test]
fn reads_a_dc_scope_manifest_with_nodes_per_sstable() {
    let mut v = node_scope();
    v["manifest"]["scope"] = json!("dc");
    v.as_object_mut().unwrap().remove("node");
    v["datacenter"] = json!("dc2");
    v["nodes"] = json!([{"host_id": "h7", "rack": "r2"}]);
    v["sstables"][0]["node"] = json!("h7");
    let m = parse_value(&v).unwrap();
    let node = &m.sstables[0].node;
    assert_eq!(
        (
            node.host_id.as_deref(),
            node.datacenter.as_deref(),
            node.rack.as_deref()
        ),
        (Some("h7"), Some("dc2"), Some("r2"))
    );
}

#[test]
fn missing_fields_are_tolerated_where_they_can_be() {
    let v = json!({
        "table": {"keyspace_name": "ks", "table_name": "cf"},
        "sstables": [{"toc_name": "me-1-big-TOC.txt", "first_token": "-5", "last_token": 7}]
    });
    let m = parse(&serde_json::to_vec(&v).unwrap(), "m", Some("snapX")).unwrap();
    assert_eq!(m.snapshot, "snapX");
    assert_eq!(m.sstables[0].id, "me-1-big");
    assert_eq!(m.table.tablets, None);
    assert_eq!(m.sstables[0].node, Node::default());
}

#[test]
fn refuses_what_cannot_be_used_with_the_reason() {
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|v| v["sstables"] = json!([])), "lists no sstables"),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("sstables");
            }),
            "lists no sstables",
        ),
        (
            Box::new(|v| v["sstables"][0]["first_token"] = json!("abc")),
            "first_token \"abc\" is not a 64-bit token",
        ),
        (
            Box::new(|v| v["sstables"][0]["last_token"] = json!(-9e30)),
            "last_token",
        ),
        (
            Box::new(|v| v["sstables"][0]["last_token"] = json!(-9000000000000000000i64)),
            "is after last_token",
        ),
        (
            Box::new(|v| {
                v["sstables"][0].as_object_mut().unwrap().remove("first_token");
            }),
            "first_token is missing",
        ),
        (
            Box::new(|v| {
                v["table"]["tablet_count"] = json!(3);
                v.as_object_mut().unwrap().remove("tablets");
            }),
            "tablet_count 3 is not a power of two",
        ),
        (
            Box::new(|v| v["table"]["tablet_count"] = json!(8)),
            "disagrees with the 4 tablets",
        ),
        (
            Box::new(|v| v["tablets"][1]["first_token"] = json!(-100)),
            "tablet 1 starts at -100",
        ),
        (
            Box::new(|v| v["sstables"][0]["toc_name"] = json!("../../etc/passwd-TOC.txt")),
            "is not a file name",
        ),
        (
            Box::new(|v| v["sstables"][0]["toc_name"] = json!("me-1-big-Data.db")),
            "ending in -TOC.txt",
        ),
        (
            Box::new(|v| v["sstables"][0]["id"] = json!("..")),
            "is not a plain name",
        ),
        (
            Box::new(|v| v["sstables"][0]["tablet_id"] = json!(4)),
            "tablet_id 4 is not below tablet_count 4",
        ),
        (
            Box::new(|v| {
                let s = v["sstables"][0].clone();
                v["sstables"].as_array_mut().unwrap().push(s);
            }),
            "listed twice",
        ),
        (
            Box::new(|v| v["table"]["keyspace_name"] = json!("")),
            "names no keyspace",
        ),
        (
            Box::new(|v| v["manifest"]["scope"] = json!("cluster")),
            "scope \"cluster\"",
        ),
        (
            Box::new(|v| {
                v["snapshot"] = json!({});
            }),
            "names no snapshot",
        ),
    ];
    for (change, expected) in cases {
        let mut v = node_scope();
        change(&mut v);
        let error = error_of(&v);
        assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        assert!(error.contains("file:///b#m.json"), "{error:?} should name the manifest");
    }
    assert!(parse(b"{not json", "m", None)
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
}
