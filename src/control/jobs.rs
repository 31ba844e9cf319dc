//! Requests of the control API for continuous backups and restore jobs.

use serde::{Deserialize, Serialize};

use crate::catalog::Selector;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStartRequest {
    /// The engine's folder (absolute).
    pub source: String,
    /// The backup location's URL (a store URL of its own).
    pub location: String,
    /// Seconds between rounds (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// The volume ID views of the location show; default: the source folder's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Checksum block size of the generations (default 256 KiB).
    #[serde(default, rename = "blockSize", skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationRequest {
    pub location: String,
}

/// What to restore: a volume of a store (at its latest manifest, a manifest or a snapshot) or a
/// backup location (at a generation, a time or a seqno; `volume` may then be left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreStartRequest {
    /// The store of the volume or backup location (unused by a ScyllaDB view).
    #[serde(default)]
    pub store: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default = "super::latest")]
    pub selector: Selector,
    /// The local folder to fill (absolute; created if missing).
    pub dest: String,
    /// Bytes per second fetched from the store at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// Mount the view at `dest` and hydrate it instead of copying: the engine uses the mount at
    /// once, and the job completes when every block is local.
    #[serde(default, rename = "inPlace", skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
    /// Restore the sstables of an ingested ScyllaDB snapshot's table that match this filter,
    /// from every store they are in, into `dest` (a table's upload directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scylla: Option<crate::scylla::Filter>,
}

impl RestoreStartRequest {
    /// The view this request copies.
    pub fn view_spec(&self) -> Result<crate::view::ViewSpec, super::OpError> {
        let volumes: Vec<String> = self.volume.iter().cloned().collect();
        super::view_spec(&self.store, &volumes, &self.selector, self.scylla.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub id: String,
}

/// `restore_status`: a job's status now, or, with `waitMs`, as soon as the job ends (at most that
/// long): a client following a job learns its end at once instead of at its next poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreStatusRequest {
    pub id: String,
    #[serde(default, rename = "waitMs", skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}
