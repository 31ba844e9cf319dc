//! The node-local SQLite index: the only module that speaks SQL.
//!
//! It holds what was read from stores (manifests and their files, snapshot records) and node-local
//! state (mounts). Everything from stores can be rebuilt by reading them again, so losing the file
//! loses no data. Mounts, lookups and directory listings are served from here, never from a store
//! listing. One connection behind a mutex is enough: the data path only asks it at `open`.

mod learned;
mod listing;
mod migrations;
mod records;
mod rows;
mod scylla;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::checksum::{BlockChecksums, Integrity, Pinned};
use crate::manifest::Manifest;
use crate::names::{RelPath, VolumeId};
use crate::store::StoreUrl;

pub use records::{Kept, Unreadable};
pub use rows::{FileRow, ManifestRow, SnapshotRow};
pub use scylla::{ScyllaIngest, ScyllaIngestCounts, ScyllaObjectRow, ScyllaSstableRow, ScyllaTableRow};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("index database is at schema version {found}, newer than this lazysnap ({supported}); upgrade lazysnap")]
    TooNew { found: i64, supported: i64 },
    #[error("index query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("index row is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, IndexError>;

pub struct Index {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index")
    }
}

impl Index {
    /// Opens (creating if needed) the index at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Index> {
        let wrap = |source| IndexError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        // WAL lets the CLI read while mountd writes; the timeout rides out the other's short writes.
        conn.busy_timeout(Duration::from_secs(10)).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(wrap)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Index> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Index> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&mut conn)?;
        Ok(Index { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent; keep serving.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a validated manifest and its files in one transaction; a manifest already present is
    /// left as it is (manifests are immutable). Returns its row.
    pub fn insert_manifest(&self, store: &StoreUrl, manifest: &Manifest) -> Result<ManifestRow> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let store_id = store_id(&tx, store)?;
        let existing = find_manifest(&tx, store_id, &manifest.volume, &manifest.name)?;
        if let Some(row) = existing {
            return Ok(row);
        }
        tx.execute(
            "INSERT INTO manifests (store_id, volume_id, name, term, seq, created_at_ms, block_size, file_count, total_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                store_id,
                manifest.volume.as_str(),
                manifest.name,
                manifest.term as i64,
                manifest.seq as i64,
                manifest.created_at_ms as i64,
                manifest.block_size as i64,
                manifest.files.len() as i64,
                manifest.total_bytes() as i64
            ],
        )?;
        let manifest_id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare(
                "INSERT INTO files (manifest_id, path, size, checksums, low_seqno, high_seqno, object_key, etag)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for file in &manifest.files {
                insert.execute(params![
                    manifest_id,
                    file.path.as_str(),
                    file.size as i64,
                    file.checksums.to_le_bytes(),
                    file.low_seqno.map(|s| s as i64),
                    file.high_seqno.map(|s| s as i64),
                    file.object_key,
                    file.etag
                ])?;
            }
        }
        let row = find_manifest(&tx, store_id, &manifest.volume, &manifest.name)?
            .ok_or_else(|| IndexError::Corrupt("manifest vanished inside its own transaction".into()))?;
        tx.commit()?;
        Ok(row)
    }

    pub fn manifest(&self, store: &StoreUrl, volume: &VolumeId, name: &str) -> Result<Option<ManifestRow>> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(None);
        };
        find_manifest(&conn, store_id, volume, name)
    }

    /// The manifest `name` of any volume of a store: a backup location has exactly one volume,
    /// known only once a generation was read.
    pub fn manifest_in_store(&self, store: &StoreUrl, name: &str) -> Result<Option<ManifestRow>> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(None);
        };
        let volume: Option<String> = conn
            .prepare_cached("SELECT volume_id FROM manifests WHERE store_id = ?1 AND name = ?2 LIMIT 1")?
            .query_row(params![store_id, name], |row| row.get(0))
            .optional()?;
        match volume {
            Some(v) => find_manifest(
                &conn,
                store_id,
                &VolumeId::parse(&v).map_err(|e| IndexError::Corrupt(e.to_string()))?,
                name,
            ),
            None => Ok(None),
        }
    }

    /// Every file of a manifest, without checksums (those are loaded per file on open).
    pub fn manifest_files(&self, manifest_id: i64) -> Result<Vec<FileRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, path, size, low_seqno, high_seqno, object_key FROM files WHERE manifest_id = ?1 ORDER BY path",
        )?;
        let rows = stmt.query_map([manifest_id], FileRow::from_row)?;
        rows.map(|r| r.map_err(IndexError::from).and_then(|r| r)).collect()
    }

    pub fn file_by_path(&self, manifest_id: i64, path: &RelPath) -> Result<Option<FileRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, path, size, low_seqno, high_seqno, object_key FROM files WHERE manifest_id = ?1 AND path = ?2",
        )?;
        let row = stmt
            .query_row(params![manifest_id, path.as_str()], FileRow::from_row)
            .optional()?;
        row.transpose()
    }

    pub fn file_checksums(&self, file_id: i64) -> Result<BlockChecksums> {
        let conn = self.conn();
        let blob: Vec<u8> = conn
            .prepare_cached("SELECT checksums FROM files WHERE id = ?1")?
            .query_row([file_id], |row| row.get(0))?;
        BlockChecksums::from_le_bytes(&blob).map_err(|e| IndexError::Corrupt(format!("file {file_id}: {e}")))
    }

    /// What a file's blocks are checked against: its recorded checksums, or, for a foreign object
    /// recorded with an ETag, that ETag.
    pub fn file_integrity(&self, file_id: i64) -> Result<Integrity> {
        let conn = self.conn();
        let (blob, etag): (Vec<u8>, Option<String>) = conn
            .prepare_cached("SELECT checksums, etag FROM files WHERE id = ?1")?
            .query_row([file_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        if let Some(etag) = etag {
            return Ok(Integrity::Pinned(Pinned::new(&etag)));
        }
        BlockChecksums::from_le_bytes(&blob)
            .map(Integrity::Published)
            .map_err(|e| IndexError::Corrupt(format!("file {file_id}: {e}")))
    }

    pub fn put_snapshot(&self, store: &StoreUrl, snapshot: &SnapshotRow) -> Result<()> {
        let conn = self.conn();
        let store_id = store_id(&conn, store)?;
        conn.execute(
            "INSERT INTO snapshots (store_id, volume_id, uuid, manifest_name, created_at_ms, valid_till_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (store_id, volume_id, uuid) DO UPDATE SET
               manifest_name = excluded.manifest_name, created_at_ms = excluded.created_at_ms,
               valid_till_ms = excluded.valid_till_ms, state = excluded.state",
            params![
                store_id,
                snapshot.volume.as_str(),
                snapshot.uuid,
                snapshot.manifest_name,
                snapshot.created_at_ms as i64,
                snapshot.valid_till_ms as i64,
                snapshot.state
            ],
        )?;
        Ok(())
    }

    pub fn delete_snapshot(&self, store: &StoreUrl, volume: &VolumeId, uuid: &str) -> Result<()> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(());
        };
        conn.execute(
            "DELETE FROM snapshots WHERE store_id = ?1 AND volume_id = ?2 AND uuid = ?3",
            params![store_id, volume.as_str(), uuid],
        )?;
        Ok(())
    }

    /// Forgets every manifest, file and snapshot row of a volume (its objects were deleted).
    pub fn forget_volume(&self, store: &StoreUrl, volume: &VolumeId) -> Result<()> {
        let mut conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(());
        };
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM manifests WHERE store_id = ?1 AND volume_id = ?2",
            params![store_id, volume.as_str()],
        )?;
        tx.execute(
            "DELETE FROM snapshots WHERE store_id = ?1 AND volume_id = ?2",
            params![store_id, volume.as_str()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn snapshot(&self, store: &StoreUrl, volume: &VolumeId, uuid: &str) -> Result<Option<SnapshotRow>> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(None);
        };
        let row = conn
            .prepare_cached(
                "SELECT volume_id, uuid, manifest_name, created_at_ms, valid_till_ms, state
                 FROM snapshots WHERE store_id = ?1 AND volume_id = ?2 AND uuid = ?3",
            )?
            .query_row(params![store_id, volume.as_str(), uuid], SnapshotRow::from_row)
            .optional()?;
        row.transpose()
    }
}

fn existing_store_id(conn: &Connection, store: &StoreUrl) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM stores WHERE url = ?1")?
        .query_row([store.to_string()], |row| row.get(0))
        .optional()?)
}

fn store_id(conn: &Connection, store: &StoreUrl) -> Result<i64> {
    if let Some(id) = existing_store_id(conn, store)? {
        return Ok(id);
    }
    conn.execute("INSERT INTO stores (url) VALUES (?1)", [store.to_string()])?;
    Ok(conn.last_insert_rowid())
}

fn find_manifest(conn: &Connection, store_id: i64, volume: &VolumeId, name: &str) -> Result<Option<ManifestRow>> {
    let row = conn
        .prepare_cached(
            "SELECT id, volume_id, name, term, seq, created_at_ms, block_size, file_count, total_bytes
             FROM manifests WHERE store_id = ?1 AND volume_id = ?2 AND name = ?3",
        )?
        .query_row(params![store_id, volume.as_str(), name], ManifestRow::from_row)
        .optional()?;
    row.transpose()
}

#[cfg(test)]
mod tests;
