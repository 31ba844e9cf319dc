//! ScyllaDB backup manifests (`manifest.json`), node scope and dc scope, parsed leniently: every
//! field may be missing, and only what cannot be used is refused, with the reason.
//!
//! ```json
//! {"manifest": {"version": "1.0", "scope": "node"},
//!  "node": {"host_id": "<uuid>", "datacenter": "dc1", "rack": "rack1"},
//!  "snapshot": {"name": "snap1", "created_at": 1765700000},
//!  "table": {"keyspace_name": "ks", "table_name": "cf", "table_id": "<uuid>",
//!            "tablets_type": "powof2", "tablet_count": 4},
//!  "sstables": [{"id": "<uuid>", "toc_name": "me-3gw7_0ndy_3wlq829wcsddgwha1n-big-TOC.txt",
//!                "data_size": 75, "index_size": 8, "first_token": -8629266958227979430,
//!                "last_token": -4704379515263290123, "tablet_id": 0, "repaired_at": 0}],
//!  "tablets": [{"id": 0, "first_token": -9223372036854775807, "last_token": -4611686018427387905}]}
//! ```
//! A dc-scope manifest has `"scope": "dc"`, `nodes[]`, and a `node` per sstable (a host id, or an
//! object like the node-scope `node`).

pub mod sstable;
pub mod tablets;

use serde::Deserialize;
use serde_json::Value;

use super::ManifestError;
use tablets::{Tablets, TokenRange};

/// Where a node of the backed-up cluster was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Node {
    #[serde(default)]
    pub host_id: Option<String>,
    #[serde(default)]
    pub datacenter: Option<String>,
    #[serde(default)]
    pub rack: Option<String>,
}

/// One sstable of a manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sstable {
    pub id: String,
    pub toc_name: String,
    pub data_size: Option<u64>,
    pub index_size: Option<u64>,
    pub tokens: TokenRange,
    pub tablet_id: Option<u64>,
    pub repaired_at: Option<i64>,
    pub node: Node,
}

impl Sstable {
    /// What every component's file name starts with (`me-<generation>-big-`).
    pub fn component_prefix(&self) -> &str {
        self.toc_name.strip_suffix("TOC.txt").unwrap_or(&self.toc_name)
    }
}

/// The table a manifest backs up, with its tablet layout when the manifest gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub keyspace: String,
    pub table: String,
    pub table_id: Option<String>,
    pub tablets_type: Option<String>,
    pub tablet_count: Option<u64>,
    pub tablets: Option<Tablets>,
    /// The manifest's explicit tablet ranges, as given.
    pub tablet_ranges: Vec<TokenRange>,
}

/// A manifest, validated: what ingest turns into index rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaManifest {
    pub scope: String,
    pub snapshot: String,
    pub created_at_ms: Option<u64>,
    pub table: Table,
    pub sstables: Vec<Sstable>,
}

#[derive(Debug, Default, Deserialize)]
struct Document {
    #[serde(default)]
    manifest: Option<Header>,
    #[serde(default)]
    node: Option<Node>,
    #[serde(default)]
    nodes: Vec<Node>,
    #[serde(default)]
    datacenter: Option<String>,
    #[serde(default)]
    snapshot: Option<SnapshotDoc>,
    #[serde(default)]
    table: Option<TableDoc>,
    #[serde(default)]
    sstables: Option<Vec<SstableDoc>>,
    #[serde(default)]
    tablets: Option<Vec<TabletDoc>>,
}

#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct SnapshotDoc {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    created_at: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct TableDoc {
    #[serde(default)]
    keyspace_name: Option<String>,
    #[serde(default)]
    table_name: Option<String>,
    #[serde(default)]
    table_id: Option<String>,
    #[serde(default)]
    tablets_type: Option<String>,
    #[serde(default)]
    tablet_count: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct SstableDoc {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    toc_name: Option<String>,
    #[serde(default)]
    data_size: Option<u64>,
    #[serde(default)]
    index_size: Option<u64>,
    #[serde(default)]
    first_token: Option<Value>,
    #[serde(default)]
    last_token: Option<Value>,
    #[serde(default)]
    tablet_id: Option<u64>,
    #[serde(default)]
    repaired_at: Option<i64>,
    #[serde(default)]
    node: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct TabletDoc {
    #[serde(default)]
    first_token: Option<Value>,
    #[serde(default)]
    last_token: Option<Value>,
}

/// Parses the manifest at `label` (its store and key, for errors). `snapshot_hint` names the
/// snapshot when the manifest does not (the folder a cluster layout keeps it in).
pub fn parse(bytes: &[u8], label: &str, snapshot_hint: Option<&str>) -> Result<ScyllaManifest, ManifestError> {
    let invalid = |reason: String| ManifestError::Invalid {
        name: label.to_string(),
        reason,
    };
    let doc: Document = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        name: label.to_string(),
        source,
    })?;
    let scope = doc.manifest.and_then(|m| m.scope).unwrap_or_else(|| "node".into());
    if scope != "node" && scope != "dc" {
        return Err(invalid(format!("scope {scope:?} is neither \"node\" nor \"dc\"")));
    }
    let snapshot_doc = doc.snapshot.unwrap_or_default();
    let snapshot = snapshot_doc
        .name
        .or_else(|| snapshot_hint.map(str::to_string))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("names no snapshot (snapshot.name)".into()))?;
    let table = table(doc.table.unwrap_or_default(), doc.tablets.unwrap_or_default()).map_err(invalid)?;

    let Some(docs) = doc.sstables.filter(|s| !s.is_empty()) else {
        return Err(invalid("lists no sstables".into()));
    };
    let top_node = doc.node.unwrap_or_default();
    let mut sstables = Vec::with_capacity(docs.len());
    let mut ids = std::collections::HashSet::new();
    for (i, s) in docs.into_iter().enumerate() {
        let sstable = sstable(s, &top_node, &doc.nodes, doc.datacenter.as_deref())
            .map_err(|reason| invalid(format!("sstable {i}: {reason}")))?;
        if let (Some(count), Some(tablet)) = (table.tablet_count, sstable.tablet_id) {
            if tablet >= count {
                return Err(invalid(format!(
                    "sstable {}: tablet_id {tablet} is not below tablet_count {count}",
                    sstable.id
                )));
            }
        }
        if !ids.insert(sstable.id.clone()) {
            return Err(invalid(format!("sstable {} is listed twice", sstable.id)));
        }
        sstables.push(sstable);
    }
    Ok(ScyllaManifest {
        scope,
        snapshot,
        created_at_ms: snapshot_doc.created_at.map(|s| s.saturating_mul(1000)),
        table,
        sstables,
    })
}

fn table(doc: TableDoc, tablets: Vec<TabletDoc>) -> Result<Table, String> {
    let keyspace = doc
        .keyspace_name
        .filter(|s| !s.is_empty())
        .ok_or("names no keyspace (table.keyspace_name)")?;
    let table = doc
        .table_name
        .filter(|s| !s.is_empty())
        .ok_or("names no table (table.table_name)")?;
    let ranges = tablets
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(TokenRange {
                first: token(t.first_token.as_ref()).map_err(|e| format!("tablet {i}: first_token {e}"))?,
                last: token(t.last_token.as_ref()).map_err(|e| format!("tablet {i}: last_token {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let powof2 = doc.tablets_type.as_deref() == Some("powof2");
    let tablets = match (ranges.is_empty(), doc.tablet_count) {
        (false, count) => {
            let explicit = Tablets::explicit(&ranges).map_err(|e| format!("tablets: {e}"))?;
            if count.is_some_and(|c| c != explicit.count()) {
                return Err(format!(
                    "tablet_count {} disagrees with the {} tablets listed",
                    count.unwrap_or(0),
                    explicit.count()
                ));
            }
            if powof2 && !explicit.count().is_power_of_two() {
                return Err(format!(
                    "tablets_type is powof2 but {} tablets are listed",
                    explicit.count()
                ));
            }
            Some(explicit)
        }
        (true, Some(count)) if powof2 => Some(
            Tablets::power_of_two(count)
                .ok_or_else(|| format!("tablet_count {count} is not a power of two, but tablets_type is powof2"))?,
        ),
        (true, Some(0)) => return Err("tablet_count is 0".into()),
        // Another layout without its ranges: the count is kept, the ranges are unknown.
        (true, _) => None,
    };
    Ok(Table {
        keyspace,
        table,
        table_id: doc.table_id,
        tablets_type: doc.tablets_type,
        tablet_count: doc.tablet_count.or(tablets.as_ref().map(Tablets::count)),
        tablets,
        tablet_ranges: ranges,
    })
}

fn sstable(s: SstableDoc, top_node: &Node, nodes: &[Node], datacenter: Option<&str>) -> Result<Sstable, String> {
    let toc_name = s.toc_name.ok_or("has no toc_name")?;
    let safe = !toc_name.is_empty()
        && !toc_name.contains('/')
        && !toc_name.contains('\0')
        && toc_name != "."
        && toc_name != "..";
    if !safe || !toc_name.ends_with("-TOC.txt") {
        return Err(format!("toc_name {toc_name:?} is not a file name ending in -TOC.txt"));
    }
    let tokens = TokenRange {
        first: token(s.first_token.as_ref()).map_err(|e| format!("{toc_name}: first_token {e}"))?,
        last: token(s.last_token.as_ref()).map_err(|e| format!("{toc_name}: last_token {e}"))?,
    };
    if tokens.first > tokens.last {
        return Err(format!(
            "{toc_name}: first_token {} is after last_token {}",
            tokens.first, tokens.last
        ));
    }
    let id = match s.id.filter(|id| !id.is_empty()) {
        Some(id) if id.contains('/') || id == "." || id == ".." => {
            return Err(format!("{toc_name}: id {id:?} is not a plain name"));
        }
        Some(id) => id,
        // Without an id, the generation in the file name is unique within the table.
        None => toc_name.trim_end_matches("-TOC.txt").to_string(),
    };
    let mut node = match s.node {
        None => top_node.clone(),
        Some(Value::String(host)) => nodes
            .iter()
            .find(|n| n.host_id.as_deref() == Some(host.as_str()))
            .cloned()
            .unwrap_or(Node {
                host_id: Some(host),
                ..Node::default()
            }),
        Some(object @ Value::Object(_)) => {
            serde_json::from_value(object).map_err(|e| format!("{toc_name}: node: {e}"))?
        }
        Some(other) => return Err(format!("{toc_name}: node {other} is neither a host id nor an object")),
    };
    if node.datacenter.is_none() {
        node.datacenter = datacenter.map(str::to_string).or_else(|| top_node.datacenter.clone());
    }
    Ok(Sstable {
        id,
        toc_name,
        data_size: s.data_size,
        index_size: s.index_size,
        tokens,
        tablet_id: s.tablet_id,
        repaired_at: s.repaired_at,
        node,
    })
}

/// A token: a JSON integer, or a string holding one (some writers quote 64-bit numbers).
fn token(value: Option<&Value>) -> Result<i64, String> {
    match value {
        None | Some(Value::Null) => Err("is missing".into()),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("{n} is not a 64-bit token")),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| format!("{s:?} is not a 64-bit token")),
        Some(other) => Err(format!("{other} is not a token")),
    }
}

#[cfg(test)]
mod tests;
