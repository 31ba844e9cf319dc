//! A small ScyllaDB backup built in a test: `me`-format component sets (names, TOCs and
//! Digest.crc32 as ScyllaDB writes them; other contents are deterministic filler, since lazysnap
//! never parses them) for 2 datacenters of 2 racks each, a table with 4 power-of-two tablets, and
//! sstables inside tablets and spanning their boundaries. Datacenter dc1 is backed up per node
//! (node-scope manifests, components flat beside them); dc2 as a cluster backup (one dc-scope
//! manifest, components under `sstables/<id>/`).

use std::collections::BTreeMap;

use serde_json::json;

use super::data;
use super::stores::TestStore;

pub const SNAPSHOT: &str = "snap1";
pub const KEYSPACE: &str = "ks";
pub const TABLE: &str = "cf";
pub const TABLETS: u64 = 4;

#[derive(Debug, Clone)]
pub struct Sstable {
    pub id: String,
    pub toc_name: String,
    pub first: i64,
    pub last: i64,
    pub dc: String,
    pub rack: String,
    pub host: String,
    /// Every component by file name, with its bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The tokens of tablet `t` of `count`, computed on i128 (independently of lazysnap's bit tricks).
pub fn tablet_range(t: u64, count: u64) -> (i64, i64) {
    let width = (1i128 << 64) / count as i128;
    let first = i64::MIN as i128 + width * t as i128;
    (first as i64, (first + width - 1) as i64)
}

/// The hosts: (host id, datacenter, rack).
pub fn hosts() -> Vec<(String, String, String)> {
    let mut hosts = Vec::new();
    for dc in ["dc1", "dc2"] {
        for rack in ["rack1", "rack2"] {
            hosts.push((format!("host-{dc}-{rack}"), dc.to_string(), rack.to_string()));
        }
    }
    hosts
}

/// Three sstables per host: two inside tablets, one spanning a tablet boundary.
pub fn sstables() -> Vec<Sstable> {
    let mut out = Vec::new();
    for (n, (host, dc, rack)) in hosts().into_iter().enumerate() {
        for j in 0..3u64 {
            let seed = (n as u64) * 10 + j;
            let (first, last) = match j {
                0 => {
                    let (start, _) = tablet_range(n as u64 % TABLETS, TABLETS);
                    (start + 1000 * n as i64, start + 1000 * n as i64 + 700)
                }
                1 => {
                    let (_, end) = tablet_range((n as u64 + 1) % TABLETS, TABLETS);
                    (end - 5000, end)
                }
                _ => {
                    let (_, end) = tablet_range(n as u64 % (TABLETS - 1), TABLETS);
                    (end - 20, end + 20)
                }
            };
            let generation = format!("3gw7_0ndy_{:05}{:08}", n, j * 7919 + 13);
            let id = format!("5c1b{n:04}-{j:04}-4000-8000-{seed:012}");
            out.push(component_set(id, &generation, seed, j, first, last, &host, &dc, &rack));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn component_set(
    id: String,
    generation: &str,
    seed: u64,
    j: u64,
    first: i64,
    last: i64,
    host: &str,
    dc: &str,
    rack: &str,
) -> Sstable {
    let prefix = format!("me-{generation}-big-");
    let data = data::bytes(seed + 1000, 300_000 + (seed as usize) * 7001);
    let mut components: Vec<(&str, Vec<u8>)> = vec![
        ("Data.db", data.clone()),
        ("Index.db", data::bytes(seed + 2000, 900 + seed as usize)),
        ("Summary.db", data::bytes(seed + 3000, 200)),
        ("Filter.db", data::bytes(seed + 4000, 64)),
        ("Statistics.db", data::bytes(seed + 5000, 4500)),
        ("Scylla.db", data::bytes(seed + 6000, 120)),
        ("Digest.crc32", crc32(&data).to_string().into_bytes()),
    ];
    // Compressed sstables keep CompressionInfo.db, uncompressed ones CRC.db.
    match j % 2 {
        0 => components.push(("CompressionInfo.db", data::bytes(seed + 7000, 300))),
        _ => components.push(("CRC.db", data::bytes(seed + 8000, 80))),
    }
    let mut toc: Vec<&str> = components.iter().map(|(c, _)| *c).collect();
    toc.push("TOC.txt");
    toc.sort();
    let mut files: BTreeMap<String, Vec<u8>> = components
        .into_iter()
        .map(|(c, bytes)| (format!("{prefix}{c}"), bytes))
        .collect();
    files.insert(format!("{prefix}TOC.txt"), (toc.join("\n") + "\n").into_bytes());
    Sstable {
        id,
        toc_name: format!("{prefix}TOC.txt"),
        first,
        last,
        dc: dc.into(),
        rack: rack.into(),
        host: host.into(),
        files,
    }
}

pub fn crc32(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, bytes) as u32
}

fn sstable_json(s: &Sstable, with_node: bool) -> serde_json::Value {
    let mut v = json!({
        "id": s.id, "toc_name": s.toc_name,
        "data_size": s.files[&s.toc_name.replace("TOC.txt", "Data.db")].len(),
        "index_size": s.files[&s.toc_name.replace("TOC.txt", "Index.db")].len(),
        "first_token": s.first, "last_token": s.last, "repaired_at": 0,
    });
    if with_node {
        v["node"] = json!(s.host);
    }
    v
}

fn table_json() -> serde_json::Value {
    json!({"keyspace_name": KEYSPACE, "table_name": TABLE, "table_id": "7e57ab1e-0000-4000-8000-000000000001",
           "tablets_type": "powof2", "tablet_count": TABLETS})
}

/// The node-scope manifest of `host`, in the flat layout under `dir/`; answers its key.
pub fn write_node_backup(store: &TestStore, dir: &str, host: &str, all: &[Sstable]) -> String {
    let mine: Vec<&Sstable> = all.iter().filter(|s| s.host == host).collect();
    let first = mine[0];
    let manifest = json!({
        "manifest": {"version": "1.0", "scope": "node"},
        "node": {"host_id": host, "datacenter": first.dc, "rack": first.rack},
        "snapshot": {"name": SNAPSHOT, "created_at": 1765700000, "expires_at": null},
        "table": table_json(),
        "sstables": mine.iter().map(|s| sstable_json(s, false)).collect::<Vec<_>>(),
    });
    for s in &mine {
        for (name, bytes) in &s.files {
            store.put(&format!("{dir}/{name}"), bytes);
        }
    }
    store.put(
        &format!("{dir}/schema.cql"),
        b"CREATE TABLE ks.cf (pk int PRIMARY KEY, v text);",
    );
    let key = format!("{dir}/manifest.json");
    store.put(&key, manifest.to_string().as_bytes());
    key
}

/// The dc-scope manifest of datacenter `dc` in the cluster layout under `root/`; answers its key.
pub fn write_cluster_backup(store: &TestStore, root: &str, dc: &str, all: &[Sstable]) -> String {
    let mine: Vec<&Sstable> = all.iter().filter(|s| s.dc == dc).collect();
    let nodes: Vec<serde_json::Value> = hosts()
        .into_iter()
        .filter(|(_, d, _)| d == dc)
        .map(|(host, d, rack)| json!({"host_id": host, "datacenter": d, "rack": rack}))
        .collect();
    let manifest = json!({
        "manifest": {"version": "1.0", "scope": "dc"},
        "datacenter": dc,
        "nodes": nodes,
        "snapshot": {"name": SNAPSHOT, "created_at": 1765700000},
        "table": table_json(),
        "sstables": mine.iter().map(|s| sstable_json(s, true)).collect::<Vec<_>>(),
        "tablets": (0..TABLETS).map(|t| {
            let (first, last) = tablet_range(t, TABLETS);
            json!({"id": t, "first_token": first.max(i64::MIN + 1), "last_token": last})
        }).collect::<Vec<_>>(),
    });
    for s in &mine {
        for (name, bytes) in &s.files {
            store.put(&format!("{root}/sstables/{}/{name}", s.id), bytes);
        }
    }
    let key = format!("{root}/snapshots/{SNAPSHOT}/manifest.json");
    store.put(&key, manifest.to_string().as_bytes());
    key
}
