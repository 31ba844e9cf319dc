//! ScyllaDB backups in the index: one row per table of a snapshot (its tablet layout), per sstable
//! (like ScyllaDB's `snapshot_sstables`) and per component object listed in the store at ingest.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{store_id, Index, IndexError, Result};
use crate::manifest::scylla::tablets::TokenRange;
use crate::manifest::scylla::{ScyllaManifest, Table};
use crate::store::StoreUrl;

/// A table of a snapshot, with its tablet layout as the manifests gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaTableRow {
    pub id: i64,
    pub snapshot: String,
    pub keyspace: String,
    pub table: String,
    pub table_id: Option<String>,
    pub tablets_type: Option<String>,
    pub tablet_count: Option<u64>,
    /// Explicit tablet ranges, when the manifests listed them.
    pub tablets: Vec<TokenRange>,
}

/// One sstable of a snapshot's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaSstableRow {
    pub id: i64,
    pub store: String,
    pub manifest_key: String,
    pub sstable_id: String,
    pub toc_name: String,
    /// The key prefix its component objects live under (ends with `/`, or is empty).
    pub prefix: String,
    pub datacenter: Option<String>,
    pub rack: Option<String>,
    pub node: Option<String>,
    pub tokens: TokenRange,
    pub data_size: Option<u64>,
    pub index_size: Option<u64>,
    pub tablet_id: Option<u64>,
    pub repaired_at: Option<i64>,
    pub created_at_ms: Option<u64>,
    /// The component names its TOC lists, once the TOC was read.
    pub components: Option<Vec<String>>,
}

/// A component object as the store listed it at ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaObjectRow {
    pub name: String,
    pub size: u64,
    pub etag: String,
}

/// What ingest found for one manifest: where each of its sstables' objects are.
#[derive(Debug)]
pub struct ScyllaIngest<'a> {
    pub store: &'a StoreUrl,
    pub manifest_key: &'a str,
    pub manifest: &'a ScyllaManifest,
    /// Per sstable, in manifest order: the key prefix of its objects and the objects found there.
    pub objects: Vec<(String, Vec<ScyllaObjectRow>)>,
}

/// How many rows an ingest added, and how many it found already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScyllaIngestCounts {
    pub tables: u64,
    pub sstables: u64,
    pub already_known: u64,
}

const SSTABLE_COLUMNS: &str = "s.id, st.url, s.manifest_key, s.sstable_id, s.toc_name, s.prefix, s.datacenter, s.rack,
    s.node, s.first_token, s.last_token, s.data_size, s.index_size, s.tablet_id, s.repaired_at, s.created_at_ms,
    s.components";

impl Index {
    /// Records the sstables of every manifest in one transaction: all or nothing. Ingesting a
    /// manifest again changes nothing; an sstable already known from another manifest, or a table
    /// whose tablet layout disagrees with what is recorded, is a conflict.
    pub fn ingest_scylla(&self, batch: &[ScyllaIngest<'_>]) -> Result<ScyllaIngestCounts> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut counts = ScyllaIngestCounts::default();
        for item in batch {
            let (table_ref, new_table) = table_ref(&tx, &item.manifest.snapshot, &item.manifest.table)?;
            counts.tables += u64::from(new_table);
            let store = store_id(&tx, item.store)?;
            for (sstable, (prefix, objects)) in item.manifest.sstables.iter().zip(&item.objects) {
                let known: Option<(String, String)> = tx
                    .prepare_cached(
                        "SELECT st.url, s.manifest_key FROM scylla_sstables s JOIN stores st ON st.id = s.store_id
                         WHERE s.table_ref = ?1 AND s.sstable_id = ?2",
                    )?
                    .query_row(params![table_ref, sstable.id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((url, key)) = known {
                    if (url.as_str(), key.as_str()) == (item.store.to_string().as_str(), item.manifest_key) {
                        counts.already_known += 1;
                        continue;
                    }
                    return Err(IndexError::Conflict(format!(
                        "sstable {} of snapshot {} is already ingested from {url}#{key}",
                        sstable.id, item.manifest.snapshot
                    )));
                }
                tx.prepare_cached(
                    "INSERT INTO scylla_sstables (table_ref, store_id, manifest_key, sstable_id, toc_name, prefix,
                       datacenter, rack, node, first_token, last_token, data_size, index_size, tablet_id,
                       repaired_at, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )?
                .execute(params![
                    table_ref,
                    store,
                    item.manifest_key,
                    sstable.id,
                    sstable.toc_name,
                    prefix,
                    sstable.node.datacenter,
                    sstable.node.rack,
                    sstable.node.host_id,
                    sstable.tokens.first,
                    sstable.tokens.last,
                    sstable.data_size.map(|s| s as i64),
                    sstable.index_size.map(|s| s as i64),
                    sstable.tablet_id.map(|s| s as i64),
                    sstable.repaired_at,
                    item.manifest.created_at_ms.map(|s| s as i64),
                ])?;
                let sstable_ref = tx.last_insert_rowid();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO scylla_objects (sstable_ref, name, size, etag) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for object in objects {
                    insert.execute(params![sstable_ref, object.name, object.size as i64, object.etag])?;
                }
                counts.sstables += 1;
            }
        }
        tx.commit()?;
        Ok(counts)
    }

    /// The table `keyspace.table` of `snapshot`, when ingested.
    pub fn scylla_table(&self, snapshot: &str, keyspace: &str, table: &str) -> Result<Option<ScyllaTableRow>> {
        let conn = self.conn();
        let row = conn
            .prepare_cached(
                "SELECT id, snapshot, keyspace, table_name, table_id, tablets_type, tablet_count, tablets
                 FROM scylla_tables WHERE snapshot = ?1 AND keyspace = ?2 AND table_name = ?3",
            )?
            .query_row(params![snapshot, keyspace, table], table_row)
            .optional()?;
        row.transpose()
    }

    /// Every ingested table of every snapshot.
    pub fn scylla_tables(&self) -> Result<Vec<ScyllaTableRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, snapshot, keyspace, table_name, table_id, tablets_type, tablet_count, tablets
             FROM scylla_tables ORDER BY snapshot, keyspace, table_name",
        )?;
        let rows = stmt.query_map([], table_row)?;
        rows.map(|r| r.map_err(IndexError::from).and_then(|r| r)).collect()
    }

    /// The sstables of a table, by sstable id.
    pub fn scylla_sstables(&self, table_ref: i64) -> Result<Vec<ScyllaSstableRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SSTABLE_COLUMNS} FROM scylla_sstables s JOIN stores st ON st.id = s.store_id
             WHERE s.table_ref = ?1 ORDER BY s.sstable_id"
        ))?;
        let rows = stmt.query_map([table_ref], sstable_row)?;
        rows.map(|r| r.map_err(IndexError::from).and_then(|r| r)).collect()
    }

    /// The objects listed for an sstable at ingest.
    pub fn scylla_objects(&self, sstable_ref: i64) -> Result<Vec<ScyllaObjectRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name, size, etag FROM scylla_objects WHERE sstable_ref = ?1 ORDER BY name")?;
        let rows = stmt.query_map([sstable_ref], |r| {
            Ok(ScyllaObjectRow {
                name: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                etag: r.get(2)?,
            })
        })?;
        rows.map(|r| r.map_err(IndexError::from)).collect()
    }

    /// Records the component names an sstable's TOC lists (read once, then kept).
    pub fn set_scylla_components(&self, sstable_ref: i64, components: &[String]) -> Result<()> {
        let json = serde_json::to_string(components).expect("names serialise");
        self.conn().execute(
            "UPDATE scylla_sstables SET components = ?2 WHERE id = ?1",
            params![sstable_ref, json],
        )?;
        Ok(())
    }
}

/// The row of a snapshot's table, made on first sight. Manifests of one table may each give part
/// of its layout (a node's manifest the count, a cluster's the ranges): what one gives and the
/// record lacks is added; what both give must agree, or it is a conflict. True when made now.
fn table_ref(tx: &Transaction<'_>, snapshot: &str, table: &Table) -> Result<(i64, bool)> {
    let ranges = |r: &[TokenRange]| {
        serde_json::to_string(&r.iter().map(|r| [r.first, r.last]).collect::<Vec<_>>()).expect("ranges serialise")
    };
    let given = (
        table.tablets_type.clone(),
        table.tablet_count.map(|c| c as i64),
        (!table.tablet_ranges.is_empty()).then(|| ranges(&table.tablet_ranges)),
    );
    type Layout = (Option<String>, Option<i64>, Option<String>);
    let existing: Option<(i64, Layout)> = tx
        .prepare_cached(
            "SELECT id, tablets_type, tablet_count, tablets FROM scylla_tables
             WHERE snapshot = ?1 AND keyspace = ?2 AND table_name = ?3",
        )?
        .query_row(params![snapshot, table.keyspace, table.table], |r| {
            let tablets: Option<String> = r.get(3)?;
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?, tablets.filter(|t| t != "[]"))))
        })
        .optional()?;
    let Some((id, recorded)) = existing else {
        tx.execute(
            "INSERT INTO scylla_tables (snapshot, keyspace, table_name, table_id, tablets_type, tablet_count, tablets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                snapshot,
                table.keyspace,
                table.table,
                table.table_id,
                given.0,
                given.1,
                given.2
            ],
        )?;
        return Ok((tx.last_insert_rowid(), true));
    };
    let conflict = |what: &str, had: String, now: String| {
        IndexError::Conflict(format!(
            "table {}.{} of snapshot {snapshot}: a manifest gives {what} {now}, but {had} is recorded",
            table.keyspace, table.table
        ))
    };
    if let (Some(had), Some(now)) = (&recorded.0, &given.0) {
        if had != now {
            return Err(conflict("tablets_type", had.clone(), now.clone()));
        }
    }
    if let (Some(had), Some(now)) = (recorded.1, given.1) {
        if had != now {
            return Err(conflict("tablet_count", had.to_string(), now.to_string()));
        }
    }
    if let (Some(had), Some(now)) = (&recorded.2, &given.2) {
        if had != now {
            return Err(conflict("tablets", had.clone(), now.clone()));
        }
    }
    tx.execute(
        "UPDATE scylla_tables SET tablets_type = COALESCE(tablets_type, ?2), tablet_count = COALESCE(tablet_count, ?3),
           tablets = COALESCE(NULLIF(tablets, '[]'), ?4) WHERE id = ?1",
        params![id, given.0, given.1, given.2],
    )?;
    Ok((id, false))
}

type Parsed<T> = rusqlite::Result<Result<T>>;

fn table_row(r: &Row<'_>) -> Parsed<ScyllaTableRow> {
    let tablets: Option<String> = r.get(7)?;
    let row = ScyllaTableRow {
        id: r.get(0)?,
        snapshot: r.get(1)?,
        keyspace: r.get(2)?,
        table: r.get(3)?,
        table_id: r.get(4)?,
        tablets_type: r.get(5)?,
        tablet_count: r.get::<_, Option<i64>>(6)?.map(|c| c as u64),
        tablets: Vec::new(),
    };
    let ranges = serde_json::from_str::<Vec<[i64; 2]>>(tablets.as_deref().unwrap_or("[]"))
        .map_err(|e| IndexError::Corrupt(format!("tablets of scylla table {}: {e}", row.table)));
    Ok(ranges.map(|ranges| ScyllaTableRow {
        tablets: ranges
            .into_iter()
            .map(|[first, last]| TokenRange { first, last })
            .collect(),
        ..row
    }))
}

fn sstable_row(r: &Row<'_>) -> Parsed<ScyllaSstableRow> {
    let unsigned = |i: usize| -> rusqlite::Result<Option<u64>> { Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64)) };
    let components: Option<String> = r.get(16)?;
    let components = components
        .map(|c| serde_json::from_str::<Vec<String>>(&c))
        .transpose()
        .map_err(|e| IndexError::Corrupt(format!("components of scylla sstable: {e}")));
    let row = ScyllaSstableRow {
        id: r.get(0)?,
        store: r.get(1)?,
        manifest_key: r.get(2)?,
        sstable_id: r.get(3)?,
        toc_name: r.get(4)?,
        prefix: r.get(5)?,
        datacenter: r.get(6)?,
        rack: r.get(7)?,
        node: r.get(8)?,
        tokens: TokenRange {
            first: r.get(9)?,
            last: r.get(10)?,
        },
        data_size: unsigned(11)?,
        index_size: unsigned(12)?,
        tablet_id: unsigned(13)?,
        repaired_at: r.get(14)?,
        created_at_ms: unsigned(15)?,
        components: None,
    };
    Ok(components.map(|components| ScyllaSstableRow { components, ..row }))
}
