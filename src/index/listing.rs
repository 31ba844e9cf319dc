//! What the index holds of one store, listed whole: for comparing it with the store (a check after
//! a crash) and for dropping rows the store no longer backs.

use rusqlite::params;

use super::{existing_store_id, Index, IndexError, ManifestRow, Result, SnapshotRow};
use crate::names::VolumeId;
use crate::store::StoreUrl;

impl Index {
    /// Every volume of `store` the index holds a manifest or a snapshot of, sorted.
    pub fn indexed_volumes(&self, store: &StoreUrl) -> Result<Vec<VolumeId>> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT volume_id FROM manifests WHERE store_id = ?1
             UNION SELECT volume_id FROM snapshots WHERE store_id = ?1 ORDER BY 1",
        )?;
        let names = stmt.query_map([store_id], |row| row.get::<_, String>(0))?;
        names
            .map(|name| {
                let name = name?;
                VolumeId::parse(&name).map_err(|e| IndexError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// The manifests of a volume the index holds, oldest first.
    pub fn volume_manifests(&self, store: &StoreUrl, volume: &VolumeId) -> Result<Vec<ManifestRow>> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT id, volume_id, name, term, seq, created_at_ms, block_size, file_count, total_bytes
             FROM manifests WHERE store_id = ?1 AND volume_id = ?2 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![store_id, volume.as_str()], ManifestRow::from_row)?;
        rows.map(|r| r.map_err(IndexError::from).and_then(|r| r)).collect()
    }

    /// The snapshot records of a volume the index holds, by UUID.
    pub fn volume_snapshots(&self, store: &StoreUrl, volume: &VolumeId) -> Result<Vec<SnapshotRow>> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT volume_id, uuid, manifest_name, created_at_ms, valid_till_ms, state
             FROM snapshots WHERE store_id = ?1 AND volume_id = ?2 ORDER BY uuid",
        )?;
        let rows = stmt.query_map(params![store_id, volume.as_str()], SnapshotRow::from_row)?;
        rows.map(|r| r.map_err(IndexError::from).and_then(|r| r)).collect()
    }

    /// Forgets one manifest and its files (read again from the store when next asked for).
    pub fn forget_manifest(&self, store: &StoreUrl, volume: &VolumeId, name: &str) -> Result<()> {
        let conn = self.conn();
        let Some(store_id) = existing_store_id(&conn, store)? else {
            return Ok(());
        };
        conn.execute(
            "DELETE FROM manifests WHERE store_id = ?1 AND volume_id = ?2 AND name = ?3",
            params![store_id, volume.as_str(), name],
        )?;
        Ok(())
    }
}
