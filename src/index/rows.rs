use rusqlite::Row;

use super::{IndexError, Result};
use crate::names::{RelPath, VolumeId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub id: i64,
    pub volume: VolumeId,
    pub name: String,
    pub term: u64,
    pub seq: u64,
    pub created_at_ms: u64,
    pub block_size: u64,
    pub file_count: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub path: RelPath,
    pub size: u64,
    pub low_seqno: Option<u64>,
    pub high_seqno: Option<u64>,
    /// The file's object key in its store when it is not where the volume layout puts it.
    pub object_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub volume: VolumeId,
    pub uuid: String,
    pub manifest_name: String,
    pub created_at_ms: u64,
    pub valid_till_ms: u64,
    pub state: String,
}

fn volume(text: String) -> Result<VolumeId> {
    VolumeId::parse(&text).map_err(|e| IndexError::Corrupt(e.to_string()))
}

// Rows are read in two steps: SQL types first (rusqlite's error), then our validation (ours).
type Parsed<T> = rusqlite::Result<Result<T>>;

impl ManifestRow {
    pub(super) fn from_row(row: &Row<'_>) -> Parsed<ManifestRow> {
        let volume_text: String = row.get(1)?;
        let fields = (
            row.get::<_, i64>(0)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, i64>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, i64>(7)?,
            row.get::<_, i64>(8)?,
        );
        Ok(volume(volume_text).map(|volume| ManifestRow {
            id: fields.0,
            volume,
            name: fields.1,
            term: fields.2 as u64,
            seq: fields.3 as u64,
            created_at_ms: fields.4 as u64,
            block_size: fields.5 as u64,
            file_count: fields.6 as u64,
            total_bytes: fields.7 as u64,
        }))
    }
}

impl FileRow {
    pub(super) fn from_row(row: &Row<'_>) -> Parsed<FileRow> {
        let id: i64 = row.get(0)?;
        let path: String = row.get(1)?;
        let size: i64 = row.get(2)?;
        let low: Option<i64> = row.get(3)?;
        let high: Option<i64> = row.get(4)?;
        let object_key: Option<String> = row.get(5)?;
        Ok(RelPath::parse(&path)
            .map_err(|e| IndexError::Corrupt(e.to_string()))
            .map(|path| FileRow {
                id,
                path,
                size: size as u64,
                low_seqno: low.map(|s| s as u64),
                high_seqno: high.map(|s| s as u64),
                object_key,
            }))
    }
}

impl SnapshotRow {
    pub(super) fn from_row(row: &Row<'_>) -> Parsed<SnapshotRow> {
        let volume_text: String = row.get(0)?;
        let uuid: String = row.get(1)?;
        let manifest_name: String = row.get(2)?;
        let created: i64 = row.get(3)?;
        let valid: i64 = row.get(4)?;
        let state: String = row.get(5)?;
        Ok(volume(volume_text).map(|volume| SnapshotRow {
            volume,
            uuid,
            manifest_name,
            created_at_ms: created as u64,
            valid_till_ms: valid as u64,
            state,
        }))
    }
}
