//! lazysnap's own log manifest: a JSON object per manifest, written create-only by its uploader.
//!
//! ```json
//! {"format": "lazysnap.log-manifest", "version": 1, "volume_id": "kv/b/kvstore-0",
//!  "term": 0, "seq": 3, "created_at_ms": 1765700000000, "writer": "<uuid>", "block_size": 262144,
//!  "files": [{"path": "log.0001", "size": 1048576, "crc32c": "<8 hex digits per block>",
//!             "low_seqno": 1, "high_seqno": 900}]}
//! ```
//! `writer` lets a writer whose create-if-absent answer was lost tell "I won" from "someone else won".

use serde::{Deserialize, Serialize};

use super::{Manifest, ManifestError, ManifestFile};
use crate::checksum::BlockChecksums;
use crate::names::{RelPath, VolumeId};
use crate::store::layout;

pub const FORMAT: &str = "lazysnap.log-manifest";
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    version: u32,
    volume_id: String,
    term: u64,
    seq: u64,
    created_at_ms: u64,
    writer: String,
    block_size: u64,
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    path: String,
    size: u64,
    crc32c: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    low_seqno: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    high_seqno: Option<u64>,
}

/// Serialises a manifest with the writer's id.
pub fn to_json(manifest: &Manifest, writer: &str) -> Vec<u8> {
    let doc = Document {
        format: FORMAT.to_string(),
        version: VERSION,
        volume_id: manifest.volume.to_string(),
        term: manifest.term,
        seq: manifest.seq,
        created_at_ms: manifest.created_at_ms,
        writer: writer.to_string(),
        block_size: manifest.block_size,
        files: manifest
            .files
            .iter()
            .map(|f| FileEntry {
                path: f.path.to_string(),
                size: f.size,
                crc32c: f.checksums.to_hex(),
                low_seqno: f.low_seqno,
                high_seqno: f.high_seqno,
            })
            .collect(),
    };
    serde_json::to_vec(&doc).expect("manifest serialises")
}

/// Who wrote a manifest and under which term, read without validating the rest: what a writer
/// that lost a create-only race needs to tell "I won" from "someone else won" and "I am fenced".
#[derive(Debug, Deserialize)]
pub struct Authorship {
    pub writer: String,
    pub term: u64,
}

pub fn authorship(bytes: &[u8]) -> Option<Authorship> {
    serde_json::from_slice(bytes).ok()
}

/// Parses and validates the manifest stored as `name` for `volume`.
pub fn parse(bytes: &[u8], volume: &VolumeId, name: &str) -> Result<Manifest, ManifestError> {
    // Errors name the volume too: manifest names repeat across volumes.
    let label = format!("{name} of volume {volume}");
    let invalid = |reason: String| ManifestError::Invalid {
        name: label.clone(),
        reason,
    };
    let doc: Document = super::read_document(bytes, &label, |d: &Document| (&d.format, d.version), (FORMAT, VERSION))?;
    if doc.volume_id != volume.as_str() {
        return Err(invalid(format!("belongs to volume {:?}, not {volume}", doc.volume_id)));
    }
    if layout::parse_manifest_name(name) != Some(doc.seq) {
        return Err(invalid(format!(
            "records seq {}, which does not match its name",
            doc.seq
        )));
    }
    let files = doc
        .files
        .into_iter()
        .map(|entry| {
            let path = RelPath::parse(&entry.path).map_err(|source| ManifestError::Name {
                name: label.clone(),
                source,
            })?;
            let checksums =
                BlockChecksums::from_hex(&entry.crc32c).map_err(|e| invalid(format!("file {path}: {e}")))?;
            Ok(ManifestFile {
                path,
                size: entry.size,
                checksums,
                low_seqno: entry.low_seqno,
                high_seqno: entry.high_seqno,
                object_key: None,
                etag: None,
            })
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    let manifest = Manifest {
        volume: volume.clone(),
        name: name.to_string(),
        term: doc.term,
        seq: doc.seq,
        created_at_ms: doc.created_at_ms,
        block_size: doc.block_size,
        files,
    };
    manifest.validate()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::manifest_name;

    fn sample() -> Manifest {
        let data = vec![7u8; 5000];
        let (checksums, size) = BlockChecksums::compute(&data[..], 4096).unwrap();
        Manifest {
            volume: VolumeId::parse("kv/b/kvstore-1").unwrap(),
            name: manifest_name(5),
            term: 2,
            seq: 5,
            created_at_ms: 1_765_700_000_000,
            block_size: 4096,
            files: vec![
                ManifestFile {
                    path: RelPath::parse("dir/a.log").unwrap(),
                    size,
                    checksums,
                    low_seqno: Some(1),
                    high_seqno: Some(9),
                    object_key: None,
                    etag: None,
                },
                ManifestFile {
                    path: RelPath::parse("empty").unwrap(),
                    size: 0,
                    checksums: BlockChecksums::default(),
                    low_seqno: None,
                    high_seqno: None,
                    object_key: None,
                    etag: None,
                },
            ],
        }
    }

    fn edit(f: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, ManifestError> {
        let m = sample();
        let mut value: serde_json::Value = serde_json::from_slice(&to_json(&m, "w1")).unwrap();
        f(&mut value);
        parse(&serde_json::to_vec(&value).unwrap(), &m.volume, &m.name)
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let bytes = to_json(&m, "writer-1");
        assert_eq!(parse(&bytes, &m.volume, &m.name).unwrap(), m);
        assert_eq!(authorship(&bytes).map(|a| a.writer).as_deref(), Some("writer-1"));
    }

    #[test]
    fn rejects_paths_that_escape_the_volume() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let err = edit(|v| v["files"][0]["path"] = bad.into()).unwrap_err();
            assert!(err.to_string().contains("invalid file path"), "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_inconsistent_content() {
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("checksums", Box::new(|v| v["files"][0]["crc32c"] = "00000000".into())),
            ("listed twice", Box::new(|v| v["files"][1]["path"] = "dir/a.log".into())),
            (
                "both a file and a directory",
                Box::new(|v| v["files"][1]["path"] = "dir/a.log/x".into()),
            ),
            ("block size", Box::new(|v| v["block_size"] = 1000.into())),
            ("belongs to volume", Box::new(|v| v["volume_id"] = "other".into())),
            ("does not match its name", Box::new(|v| v["seq"] = 6.into())),
            ("low_seqno", Box::new(|v| v["files"][0]["low_seqno"] = 10.into())),
            ("format", Box::new(|v| v["version"] = 9.into())),
        ];
        for (needle, f) in cases {
            let err = edit(f).unwrap_err().to_string();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }

    #[test]
    fn rejects_wrong_json() {
        let v = VolumeId::parse("v").unwrap();
        let name = manifest_name(1);
        assert!(matches!(
            parse(b"{not json", &v, &name),
            Err(ManifestError::Json { .. })
        ));
        assert!(matches!(parse(b"[]", &v, &name), Err(ManifestError::Json { .. })));
        assert!(matches!(
            parse(b"{\"format\":1}", &v, &name),
            Err(ManifestError::Json { .. })
        ));
    }
}
