//! Fuzzing of every parser that reads what lazysnap does not write itself: native manifests,
//! backup generations, ScyllaDB manifests and Digest files, control API requests, store URLs,
//! volume IDs and paths, sizes and file modes (the FUSE request parser has its own, in the crate).
//!
//! Each parser gets raw bytes, and valid documents mutated in their structure (keys dropped, values
//! of other types, hostile strings such as `../x`, huge and negative numbers, duplicated entries).
//! Properties: no panic, an answer within a second, and every rejection a non-empty error that
//! names the document it rejects. Parsers are pure (nothing is ingested or mounted from what they
//! refuse; the all-or-nothing ingest and mount paths are `tests/bad_input.rs`).
//!
//! `LAZYSNAP_FUZZ_CASES` inputs per parser and per kind (raw, mutated): 2000 by default, a million
//! in `make reliability`.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use lazysnap::checksum::BlockChecksums;
use lazysnap::control::Request;
use lazysnap::manifest::{backup, native, scylla, Manifest, ManifestFile};
use lazysnap::names::{RelPath, VolumeId};
use lazysnap::store::layout;

fn cases() -> u32 {
    std::env::var("LAZYSNAP_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

/// Runs `check` on `cases()` inputs from `strategy`, failing on a panic or a slow answer.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(&S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    TestRunner::new(config)
        .run(&strategy, |input| {
            let at = Instant::now();
            let verdict = check(&input);
            prop_assert!(at.elapsed() < Duration::from_secs(1), "{name}: took {:?}", at.elapsed());
            verdict.map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // A row of `make reliability`'s table: test, load, faults injected, inputs, failures, wrong bytes.
    let took = started.elapsed().as_secs_f64();
    eprintln!("| fuzz: {name} | 1 thread, {took:.1} s | - | {} | 0 | - |", cases());
}

/// A rejection must say something, and name the document when it is given a name.
fn clear(error: impl std::fmt::Display, label: &str) -> Result<(), String> {
    let text = error.to_string();
    match text.trim().is_empty() || !text.contains(label) {
        true => Err(format!("unclear rejection {text:?} (should name {label:?})")),
        false => Ok(()),
    }
}

/// Values that break assumptions: other types, hostile paths, extreme numbers.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(-1.5f64), Just(1e300), Just(-0.0), Just(0.5)].prop_map(Value::from),
        prop_oneof![
            Just(""),
            Just(".."),
            Just("../../etc/passwd"),
            Just("/abs/path"),
            Just("a/../b"),
            Just("a//b"),
            Just("a\u{0}b"),
            Just("-1"),
            Just("18446744073709551616"),
            Just("ffffffff"),
        ]
        .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        Just(Value::from("x".repeat(5000))),
        prop::collection::vec(any::<u32>().prop_map(Value::from), 0..4).prop_map(Value::from),
        Just(json!({"unexpected": {"deeply": [1, {"nested": null}]}})),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Remove,
    Replace(Value),
    /// Duplicates an array element, or adds an unknown key to an object.
    Grow,
}

fn edits() -> impl Strategy<Value = Vec<(usize, Edit)>> {
    let edit = prop_oneof![
        Just(Edit::Remove),
        odd_value().prop_map(Edit::Replace),
        Just(Edit::Grow),
    ];
    prop::collection::vec((any::<usize>(), edit), 1..4)
}

/// Every node of `value`, as paths of object keys and array indexes.
fn paths(value: &Value, at: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            let mut p = at.clone();
            p.push(Value::from(k.as_str()));
            out.push(p.clone());
            paths(v, p, out);
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
            let mut p = at.clone();
            p.push(Value::from(i));
            out.push(p.clone());
            paths(v, p, out);
        }),
        _ => {}
    }
}

fn apply(mut doc: Value, edits: &[(usize, Edit)]) -> Value {
    for (pick, edit) in edits {
        let mut all = Vec::new();
        paths(&doc, Vec::new(), &mut all);
        let Some(path) = all.get(pick % all.len().max(1)).cloned() else {
            break;
        };
        let (last, parent_path) = path.split_last().expect("paths are not empty");
        let mut parent = &mut doc;
        for step in parent_path {
            parent = match step {
                Value::String(k) => &mut parent[k.as_str()],
                step => &mut parent[step.as_u64().unwrap() as usize],
            };
        }
        match (parent, last, edit) {
            (Value::Object(map), Value::String(k), Edit::Remove) => drop(map.remove(k)),
            (Value::Object(map), _, Edit::Grow) => drop(map.insert("unexpectedKey".into(), json!(1))),
            (Value::Array(items), i, Edit::Remove) => drop(items.remove(i.as_u64().unwrap() as usize)),
            (Value::Array(items), i, Edit::Grow) => {
                let copy = items[i.as_u64().unwrap() as usize].clone();
                items.push(copy)
            }
            (Value::Object(map), Value::String(k), Edit::Replace(v)) => drop(map.insert(k.clone(), v.clone())),
            (Value::Array(items), i, Edit::Replace(v)) => items[i.as_u64().unwrap() as usize] = v.clone(),
            _ => {}
        }
    }
    doc
}

/// Raw bytes: random ones, and the seed document's bytes cut short or with bytes changed.
fn bytes_near(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (0..=len).prop_map({
            let seed = seed.clone();
            move |cut| seed[..cut].to_vec()
        }),
        prop::collection::vec((0..len.max(1), any::<u8>()), 1..8).prop_map(move |flips| {
            let mut bytes = seed.clone();
            for (at, b) in flips {
                if let Some(x) = bytes.get_mut(at) {
                    *x = b;
                }
            }
            bytes
        }),
    ]
}

fn mutated(seed: Value) -> impl Strategy<Value = Vec<u8>> {
    edits().prop_map(move |e| serde_json::to_vec(&apply(seed.clone(), &e)).unwrap())
}

/// A valid manifest to mutate; `keyed` gives every file an object key (backup generations do).
fn sample_manifest(volume: &str, seq: u64, name: String, keyed: bool) -> Manifest {
    let key = |path: &str| keyed.then(|| format!("files/{path}"));
    let data = vec![7u8; 9000];
    let (checksums, size) = BlockChecksums::compute(&data[..], 4096).unwrap();
    Manifest {
        volume: VolumeId::parse(volume).unwrap(),
        name,
        term: 2,
        seq,
        created_at_ms: 1_765_700_000_000,
        block_size: 4096,
        files: vec![
            ManifestFile {
                path: RelPath::parse("dir/a.log").unwrap(),
                size,
                checksums,
                low_seqno: Some(1),
                high_seqno: Some(9),
                object_key: key("dir/a.log"),
                etag: None,
            },
            ManifestFile {
                path: RelPath::parse("empty").unwrap(),
                size: 0,
                checksums: BlockChecksums::default(),
                low_seqno: None,
                high_seqno: None,
                object_key: key("empty"),
                etag: None,
            },
        ],
    }
}

#[test]
fn native_manifests() {
    let volume = VolumeId::parse("kv/b/kvstore-1").unwrap();
    let name = layout::manifest_name(5);
    let seed = native::to_json(&sample_manifest("kv/b/kvstore-1", 5, name.clone(), false), "fuzz");
    native::parse(&seed, &volume, &name).expect("the seed is valid");
    let (accepted, refused_valid_json) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let check = |bytes: &Vec<u8>| match native::parse(bytes, &volume, &name) {
        Ok(m) => {
            accepted.fetch_add(1, Relaxed);
            let blocks: u64 = m.files.iter().map(|f| f.size.div_ceil(m.block_size)).sum();
            let sums: u64 = m.files.iter().map(|f| f.checksums.len() as u64).sum();
            (blocks == sums)
                .then_some(())
                .ok_or(format!("accepted with {sums} checksums for {blocks} blocks"))
        }
        Err(e) => {
            if !matches!(e, lazysnap::manifest::ManifestError::Json { .. }) {
                refused_valid_json.fetch_add(1, Relaxed);
            }
            clear(e, &name)
        }
    };
    let doc: Value = serde_json::from_slice(&seed).unwrap();
    fuzz("native manifest, bytes", bytes_near(seed.clone()), check);
    fuzz("native manifest, structure", mutated(doc), check);
    // The structural mutations reach validation past the JSON shape, both ways.
    let (accepted, refused) = (accepted.into_inner(), refused_valid_json.into_inner());
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused after parsing"
    );
}

#[test]
fn backup_generations() {
    let name = layout::generation_name(4);
    let generation = backup::Generation {
        manifest: sample_manifest("kvstore-0", 4, name.clone(), true),
        metadata: "engine state {\"x\":1}".into(),
    };
    let seed = backup::to_json(&generation, "fuzz");
    backup::parse(&seed, "file:///backups", &name).expect("the seed is valid");
    let check = |bytes: &Vec<u8>| match backup::parse(bytes, "file:///backups", &name) {
        Ok(_) => Ok(()),
        Err(e) => clear(e, &name),
    };
    let doc: Value = serde_json::from_slice(&seed).unwrap();
    fuzz("backup generation, bytes", bytes_near(seed.clone()), check);
    fuzz("backup generation, structure", mutated(doc), check);
}

#[test]
fn scylla_manifests_and_digests() {
    let seed = json!({
        "manifest": {"version": "1.0", "scope": "node"},
        "node": {"host_id": "9b1c5bb4-5f4e-4b8e-9a55-43a4a4a7b0c1", "datacenter": "dc1", "rack": "rack1"},
        "snapshot": {"name": "snap1", "created_at": 1765700000},
        "table": {"keyspace_name": "ks", "table_name": "cf", "table_id": "1c6f9a40-0000-11f0-8000-000000000000",
                  "tablets_type": "powof2", "tablet_count": 2},
        "sstables": [
            {"id": "3gw7_0ndy_3wlq829wcsddgwha1n", "toc_name": "me-3gw7_0ndy_3wlq829wcsddgwha1n-big-TOC.txt",
             "data_size": 75, "index_size": 8, "first_token": -8629266958227979430i64,
             "last_token": -4704379515263290123i64, "tablet_id": 0, "repaired_at": 0},
            {"id": "3gw7_0ndy_4wlq829wcsddgwha1n", "toc_name": "me-3gw7_0ndy_4wlq829wcsddgwha1n-big-TOC.txt",
             "data_size": 90, "index_size": 8, "first_token": 10, "last_token": 20, "tablet_id": 1, "repaired_at": 0}],
        "tablets": [{"id": 0, "first_token": -9223372036854775807i64, "last_token": -1},
                    {"id": 1, "first_token": 0, "last_token": 9223372036854775807i64}]
    });
    let label = "backup/sst/manifest.json";
    let bytes = serde_json::to_vec(&seed).unwrap();
    scylla::parse(&bytes, label, None).expect("the seed is valid");
    let check = |bytes: &Vec<u8>| match scylla::parse(bytes, label, None) {
        Ok(_) => Ok(()),
        Err(e) => clear(e, label),
    };
    fuzz("scylla manifest, bytes", bytes_near(bytes.clone()), check);
    fuzz("scylla manifest, structure", mutated(seed), check);
    fuzz("scylla Digest", bytes_near(b"3735928559".to_vec()), |bytes| {
        let _ = scylla::sstable::parse_digest(bytes);
        Ok(())
    });
}

#[test]
fn control_requests() {
    let seeds = [
        json!({"op": "mount", "store": "file:///s", "volumes": ["v"], "selector": {"snapshot": "u1"}, "mountPath": "/m"}),
        json!({"op": "mount", "store": "s", "volumes": ["v"],
               "access": {"uid": "couchbase", "gid": 998, "fileMode": "0440", "allowOther": true}}),
        json!({"op": "mount", "store": "s", "volumes": []}),
        json!({"op": "umount", "mountPath": "/m", "lazy": false}),
        json!({"op": "hydrate", "mountPath": "/m", "action": "start", "bandwidth": 1000}),
    ];
    let check = |bytes: &Vec<u8>| match serde_json::from_slice::<Request>(bytes) {
        Ok(_) => Ok(()),
        Err(e) => clear(e, ""),
    };
    for (i, seed) in seeds.into_iter().enumerate() {
        let bytes = serde_json::to_vec(&seed).unwrap();
        serde_json::from_slice::<Request>(&bytes).unwrap_or_else(|e| panic!("seed {i} is valid: {e}"));
        fuzz(&format!("control request {i}, bytes"), bytes_near(bytes), check);
        fuzz(&format!("control request {i}, structure"), mutated(seed), check);
    }
}

/// Text inputs: printable noise, and valid examples with characters changed.
fn text_near(seeds: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,64}",
        (
            0..seeds.len(),
            prop::collection::vec((any::<usize>(), any::<char>()), 0..4)
        )
            .prop_map(move |(i, changes)| {
                let mut chars: Vec<char> = seeds[i].chars().collect();
                for (at, c) in changes {
                    let at = at % (chars.len() + 1);
                    match at == chars.len() {
                        true => chars.push(c),
                        false => chars[at] = c,
                    }
                }
                chars.into_iter().collect()
            }),
    ]
}

/// No component that climbs out of where a name is joined (`..`), stays (`.`) or is empty.
fn safe_components(name: &str) -> bool {
    name.split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

#[test]
fn store_urls_names_sizes_and_modes() {
    const URLS: &[&str] = &[
        "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true",
        "gs://bucket/a/b",
        "az://account/container/p",
        "file:///var/lib/store",
    ];
    fuzz("store URL", text_near(URLS), |text| {
        match text.parse::<lazysnap::store::StoreUrl>() {
            Ok(_) => Ok(()),
            Err(e) => clear(e, ""),
        }
    });
    const VOLUMES: &[&str] = &["kv/6a9f/kvstore-12", "kvstore-0", "a.b-c_d"];
    fuzz("volume ID", text_near(VOLUMES), |text| match VolumeId::parse(text) {
        Ok(v) => safe_components(v.as_str()).then_some(()).ok_or(format!("accepted {v}")),
        Err(e) => clear(e, ""),
    });
    const PATHS: &[&str] = &["dir/a.log", "seqIndex/log.1", "a"];
    fuzz("relative path", text_near(PATHS), |text| match RelPath::parse(text) {
        Ok(p) => safe_components(p.as_str())
            .then_some(())
            .ok_or(format!("accepted {p:?}")),
        Err(e) => clear(e, ""),
    });
    const SIZES: &[&str] = &["256M", "10G", "4096", "1.5K", "64k"];
    fuzz("size", text_near(SIZES), |text| {
        match lazysnap::units::parse_size(text) {
            Ok(_) => Ok(()),
            Err(e) => clear(e, ""),
        }
    });
    const MODES: &[&str] = &["0440", "0o755", "644"];
    fuzz(
        "file mode",
        text_near(MODES),
        |text| match lazysnap::access::Mode::parse(text) {
            Ok(m) => (m.bits() & !0o777 == 0)
                .then_some(())
                .ok_or(format!("accepted {:o}", m.bits())),
            Err(e) => clear(e, ""),
        },
    );
}
