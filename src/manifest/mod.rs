//! Manifest formats: each turns foreign or native JSON into validated [`Manifest`]s, the one shape
//! the index stores. Parsing is the only gate: whatever reaches the index has safe paths, a
//! checksum per block and no duplicates.
//!
//! - [`native`]: lazysnap's own log manifests, written by `publish` and uploaders.
//! - [`backup`]: the generations of a continuous backup location (`metadata.<n>.dat`).
//! - [`scylla`]: ScyllaDB backup manifests (`manifest.json`, node and dc scope).

pub mod backup;
pub mod native;
pub mod scylla;

use std::collections::HashSet;

use crate::checksum::BlockChecksums;
use crate::names::{NameError, RelPath, VolumeId};

/// Smallest and largest checksum block sizes accepted. Below 4 KiB checksums outweigh the data they
/// guard; above 64 MiB a random read would fetch far too much.
pub const MIN_BLOCK_SIZE: u64 = 4 * 1024;
pub const MAX_BLOCK_SIZE: u64 = 64 * 1024 * 1024;

/// 256 KiB: a random read costs one small GET (close to a 4 KiB GET on S3's first-byte latency),
/// while sequential reads still fetch many blocks per request.
pub const DEFAULT_BLOCK_SIZE: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {name} is not valid JSON of the expected shape: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("manifest {name}: {source}")]
    Name {
        name: String,
        #[source]
        source: NameError,
    },
}

/// Reads a manifest document of format `expected` (name, version) from JSON; `label` names it in
/// errors.
pub(crate) fn read_document<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    label: &str,
    format_of: impl Fn(&T) -> (&str, u32),
    expected: (&str, u32),
) -> Result<T, ManifestError> {
    let doc: T = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        name: label.to_string(),
        source,
    })?;
    check_format(label, format_of(&doc), expected)?;
    Ok(doc)
}

/// Refuses a document of another format or version than the parser knows.
fn check_format(label: &str, found: (&str, u32), expected: (&str, u32)) -> Result<(), ManifestError> {
    if found == expected {
        return Ok(());
    }
    Err(ManifestError::Invalid {
        name: label.to_string(),
        reason: format!(
            "format {:?} version {} is not {} version {}",
            found.0, found.1, expected.0, expected.1
        ),
    })
}

/// One data file of a manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: RelPath,
    pub size: u64,
    pub checksums: BlockChecksums,
    pub low_seqno: Option<u64>,
    pub high_seqno: Option<u64>,
    /// Where the bytes are in the store, relative to its root, when not at the volume layout's
    /// `files/<path>` (a backup location keeps its own layout).
    pub object_key: Option<String>,
    /// For a foreign object with no recorded checksums (`checksums` empty): the ETag every read
    /// must match.
    pub etag: Option<String>,
}

/// A validated manifest of one volume: what the index stores and mounts show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub volume: VolumeId,
    pub name: String,
    pub term: u64,
    pub seq: u64,
    pub created_at_ms: u64,
    pub block_size: u64,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Checks what every format must guarantee; formats call this last.
    pub(crate) fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            name: format!("{} of volume {}", self.name, self.volume),
            reason,
        };
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) || !self.block_size.is_power_of_two() {
            return Err(invalid(format!(
                "block size {} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}",
                self.block_size
            )));
        }
        let mut files = HashSet::new();
        for file in &self.files {
            if !files.insert(file.path.as_str()) {
                return Err(invalid(format!("file {} is listed twice", file.path)));
            }
            let blocks = crate::checksum::block_count(file.size, self.block_size);
            let pinned = file.etag.is_some() && file.checksums.is_empty();
            if !pinned && file.checksums.len() as u64 != blocks {
                return Err(invalid(format!(
                    "file {} has {} checksums for {} blocks",
                    file.path,
                    file.checksums.len(),
                    blocks
                )));
            }
            if let (Some(low), Some(high)) = (file.low_seqno, file.high_seqno) {
                if low > high {
                    return Err(invalid(format!(
                        "file {} has low_seqno {low} > high_seqno {high}",
                        file.path
                    )));
                }
            }
        }
        // A path that is a file cannot also be a directory holding other files.
        for file in &self.files {
            let mut prefix = String::new();
            for part in file.path.components() {
                if !prefix.is_empty() {
                    if files.contains(prefix.as_str()) {
                        return Err(invalid(format!("{prefix} is both a file and a directory")));
                    }
                    prefix.push('/');
                }
                prefix.push_str(part);
            }
        }
        Ok(())
    }
}
