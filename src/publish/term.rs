//! Starting an uploader term: the fence that stops every uploader with an older term.

use serde::{Deserialize, Serialize};

use super::{write_manifest, PublishError};
use crate::chain;
use crate::index::Index;
use crate::manifest::{native, Manifest, DEFAULT_BLOCK_SIZE};
use crate::names::VolumeId;
use crate::store::{layout, Store};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TermStart {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    #[serde(serialize_with = "term_as_string")]
    pub term: u64,
    /// The term the volume had before.
    #[serde(serialize_with = "optional_term_as_string")]
    pub previous_term: Option<u64>,
    /// The manifest that now carries the term.
    pub log_manifest_name: String,
}

/// Makes `term` the volume's current term by writing the next manifest of the chain under it
/// (the same files as the head). From then on an uploader with an older term loses every race to
/// extend the chain and is told it is fenced; GC under an older term refuses to run. Starting the
/// current term again is a no-op; starting an older one is [`PublishError::Fenced`].
pub async fn start_term(store: &Store, index: &Index, volume: &VolumeId, term: u64) -> Result<TermStart, PublishError> {
    // A rival writer may extend the chain between our read and our write: read again and retry.
    let mut last_error = None;
    for _ in 0..5 {
        let head = match chain::latest_manifest_name(store, volume).await? {
            Some(name) => {
                let bytes = store.get(&layout::manifest_key(volume, &name)).await?;
                Some(native::parse(&bytes, volume, &name).map_err(PublishError::Manifest)?)
            }
            None => None,
        };
        let previous_term = head.as_ref().map(|h| h.term);
        if let Some(head) = &head {
            if head.term > term {
                return Err(PublishError::Fenced {
                    requested: term,
                    current: head.term,
                });
            }
            if head.term == term {
                return Ok(TermStart {
                    volume_id: volume.to_string(),
                    term,
                    previous_term,
                    log_manifest_name: head.name.clone(),
                });
            }
        }
        let seq = head.as_ref().map_or(1, |h| h.seq + 1);
        let manifest = Manifest {
            volume: volume.clone(),
            name: layout::manifest_name(seq),
            term,
            seq,
            created_at_ms: crate::time::now_ms(),
            block_size: head.as_ref().map_or(DEFAULT_BLOCK_SIZE, |h| h.block_size),
            files: head.map(|h| h.files).unwrap_or_default(),
        };
        match write_manifest(store, &manifest).await {
            Ok(()) => {
                index.insert_manifest(store.url(), &manifest)?;
                tracing::info!(volume = %volume, term, ?previous_term, manifest = %manifest.name, "uploader term started");
                return Ok(TermStart {
                    volume_id: volume.to_string(),
                    term,
                    previous_term,
                    log_manifest_name: manifest.name,
                });
            }
            Err(e @ PublishError::Conflict { .. }) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.expect("five attempts failed"))
}

/// An uploader term: an unsigned 64-bit integer sent as a string (`"term": "1234"`), as Fusion does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Term(pub u64);

impl Serialize for Term {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Term {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Term, D::Error> {
        // Numbers are accepted too: a client that sends 7 means term 7.
        let value = serde_json::Value::deserialize(deserializer)?;
        let parsed = match &value {
            serde_json::Value::String(text) => text
                .parse::<u64>()
                .ok()
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit())),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        };
        parsed.map(Term).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "term {value} is not an unsigned 64-bit integer in a string, like \"1234\""
            ))
        })
    }
}

/// Serialises a term as the control API writes every term: a string.
pub fn term_as_string<S: serde::Serializer>(term: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    Term(*term).serialize(serializer)
}

pub fn optional_term_as_string<S: serde::Serializer>(term: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    term.map(Term).serialize(serializer)
}
