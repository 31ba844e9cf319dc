//! A continuous backup location's generation: `metadata.<n>.dat`, written create-only once per
//! call of the engine's metadata writer. It names every file the view of generation `n` holds
//! (Magma's `BackupFile {name, len, low_seqno, high_seqno}`), where its bytes are in the location,
//! their block checksums (what a restore verifies, Trove's backup checksum), and the engine's own
//! metadata string, kept verbatim.
//!
//! ```json
//! {"format": "lazysnap.backup-generation", "version": 1, "generation": 3,
//!  "volume_id": "kvstore-0", "created_at_ms": 1765700000000, "writer": "<uuid>",
//!  "block_size": 262144, "metadata": "<engine metadata>",
//!  "files": [{"name": "seqIndex/log.0001", "len": 1048576, "low_seqno": 1, "high_seqno": 900,
//!             "object": "files/seqIndex/log.0001", "crc32c": "<8 hex digits per block>"}]}
//! ```

use serde::{Deserialize, Serialize};

use super::{Manifest, ManifestError, ManifestFile};
use crate::checksum::BlockChecksums;
use crate::names::{RelPath, VolumeId};
use crate::store::layout;

pub const FORMAT: &str = "lazysnap.backup-generation";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    version: u32,
    generation: u64,
    volume_id: String,
    created_at_ms: u64,
    writer: String,
    block_size: u64,
    #[serde(default)]
    metadata: String,
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    len: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_seqno: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_seqno: Option<u64>,
    object: String,
    crc32c: String,
}

/// One generation read back: the view it records and the engine's metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub manifest: Manifest,
    pub metadata: String,
}

/// Serialises a generation; `manifest.seq` is its number and every file names its object key.
pub fn to_json(generation: &Generation, writer: &str) -> Vec<u8> {
    let m = &generation.manifest;
    let doc = Document {
        format: FORMAT.to_string(),
        version: VERSION,
        generation: m.seq,
        volume_id: m.volume.to_string(),
        created_at_ms: m.created_at_ms,
        writer: writer.to_string(),
        block_size: m.block_size,
        metadata: generation.metadata.clone(),
        files: m
            .files
            .iter()
            .map(|f| FileEntry {
                name: f.path.to_string(),
                len: f.size,
                low_seqno: f.low_seqno,
                high_seqno: f.high_seqno,
                object: f.object_key.clone().unwrap_or_default(),
                crc32c: f.checksums.to_hex(),
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("generation serialises")
}

/// The writer id of a stored generation, to tell our own lost-answer write from a rival's.
pub fn writer(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Writer {
        writer: String,
    }
    serde_json::from_slice::<Writer>(bytes).ok().map(|w| w.writer)
}

/// Parses and validates the generation stored as `name` (`metadata.<n>.dat`).
pub fn parse(bytes: &[u8], location: &str, name: &str) -> Result<Generation, ManifestError> {
    let label = format!("{name} of backup location {location}");
    let invalid = |reason: String| ManifestError::Invalid {
        name: label.clone(),
        reason,
    };
    let doc: Document = super::read_document(bytes, &label, |d: &Document| (&d.format, d.version), (FORMAT, VERSION))?;
    if layout::parse_generation_name(name) != Some(doc.generation) {
        return Err(invalid(format!(
            "records generation {}, which does not match its name",
            doc.generation
        )));
    }
    let volume = VolumeId::parse(&doc.volume_id).map_err(|source| ManifestError::Name {
        name: label.clone(),
        source,
    })?;
    let name_err = |source| ManifestError::Name {
        name: label.clone(),
        source,
    };
    let files = doc
        .files
        .into_iter()
        .map(|entry| {
            let path = RelPath::parse(&entry.name).map_err(name_err)?;
            let object = RelPath::parse(&entry.object).map_err(name_err)?;
            if object.components().next() != Some(layout::BACKUP_FILES) {
                return Err(invalid(format!(
                    "file {path} is kept at {object}, outside the location's {}/ folder",
                    layout::BACKUP_FILES
                )));
            }
            let checksums =
                BlockChecksums::from_hex(&entry.crc32c).map_err(|e| invalid(format!("file {path}: {e}")))?;
            Ok(ManifestFile {
                path,
                size: entry.len,
                checksums,
                low_seqno: entry.low_seqno,
                high_seqno: entry.high_seqno,
                object_key: Some(object.to_string()),
                etag: None,
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    let manifest = Manifest {
        volume,
        name: name.to_string(),
        term: 0,
        seq: doc.generation,
        created_at_ms: doc.created_at_ms,
        block_size: doc.block_size,
        files,
    };
    manifest.validate()?;
    Ok(Generation {
        manifest,
        metadata: doc.metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Generation {
        let data = vec![3u8; 9000];
        let (checksums, size) = BlockChecksums::compute(&data[..], 4096).unwrap();
        Generation {
            manifest: Manifest {
                volume: VolumeId::parse("kvstore-0").unwrap(),
                name: layout::generation_name(4),
                term: 0,
                seq: 4,
                created_at_ms: 1_765_700_000_000,
                block_size: 4096,
                files: vec![ManifestFile {
                    path: RelPath::parse("seqIndex/log.1").unwrap(),
                    size,
                    checksums,
                    low_seqno: Some(10),
                    high_seqno: Some(20),
                    object_key: Some("files/seqIndex/log.1".into()),
                    etag: None,
                }],
            },
            metadata: "engine state {\"x\":1}".into(),
        }
    }

    fn edit(f: impl FnOnce(&mut serde_json::Value)) -> Result<Generation, ManifestError> {
        let g = sample();
        let mut value: serde_json::Value = serde_json::from_slice(&to_json(&g, "w")).unwrap();
        f(&mut value);
        parse(&serde_json::to_vec(&value).unwrap(), "file:///b", &g.manifest.name)
    }

    #[test]
    fn round_trips_with_the_engine_metadata() {
        let g = sample();
        let bytes = to_json(&g, "w1");
        assert_eq!(parse(&bytes, "file:///b", &g.manifest.name).unwrap(), g);
        assert_eq!(writer(&bytes).as_deref(), Some("w1"));
    }

    #[test]
    fn rejects_what_a_view_cannot_use() {
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("does not match its name", Box::new(|v| v["generation"] = 5.into())),
            ("invalid file path", Box::new(|v| v["files"][0]["name"] = "../x".into())),
            (
                "invalid file path",
                Box::new(|v| v["files"][0]["object"] = "files/../../x".into()),
            ),
            (
                "outside the location",
                Box::new(|v| v["files"][0]["object"] = "metadata.1.dat".into()),
            ),
            ("checksums", Box::new(|v| v["files"][0]["len"] = 1.into())),
            ("low_seqno", Box::new(|v| v["files"][0]["low_seqno"] = 99.into())),
            ("format", Box::new(|v| v["format"] = "x".into())),
            ("invalid volume", Box::new(|v| v["volume_id"] = "/abs".into())),
        ];
        for (needle, f) in cases {
            let err = edit(f).unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
        assert!(matches!(
            parse(b"{}", "file:///b", "metadata.1.dat"),
            Err(ManifestError::Json { .. })
        ));
    }
}
