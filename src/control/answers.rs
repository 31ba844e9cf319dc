//! The answers of the control API, typed: the daemon builds them, clients read them back (see
//! [`super::call_as`]). Field names are the API's (camelCase, Fusion's spellings where it has them).

use serde::{Deserialize, Serialize};

use crate::cache::CacheStats;
use crate::fs::MountStats;
use crate::handover::HolderStatus;
use crate::hydrate::HydrationStatus;
use crate::scylla::{Filter, Spanning};
use crate::store::BufferStats;
use crate::uploader::UploaderStatus;

/// An answer with nothing to say (`umount`, `shutdown`, `hand_over`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// `mount`: where it is; for a ScyllaDB view, what it shows and the sstables left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mounted {
    pub mount_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sstables: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spanning: Option<Vec<Spanning>>,
}

/// `snapshot_release`, one per volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Released {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    /// False when it was already gone.
    pub released: bool,
}

/// `backup_info`: the generations of a backup location (what `cbcontbk info` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    pub location: String,
    #[serde(rename = "volumeID")]
    pub volume_id: Option<String>,
    pub generations: Vec<GenerationInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationInfo {
    pub generation: u64,
    /// RFC 3339, as `--at` takes it.
    pub created_at: String,
    pub created_at_ms: u64,
    pub files: u64,
    pub bytes: u64,
    /// Files not in the previous generation.
    pub new_files: usize,
    pub low_seqno: Option<u64>,
    pub high_seqno: Option<u64>,
}

/// One mount of `mounts` and `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountInfo {
    pub mount_path: String,
    pub scylla: Option<ScyllaMounted>,
    pub store: String,
    pub volumes: Vec<VolumeShown>,
    pub files: u64,
    pub open_files: usize,
    pub stats: MountStats,
    pub hydration: Option<HydrationStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScyllaMounted {
    pub view: Option<Filter>,
    pub sstables: usize,
    pub spanning: Vec<Spanning>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeShown {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// The ID its folder carries when not its own (a Fusion restore's `dstVolumeID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_as: Option<String>,
    pub log_manifest_name: String,
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: Option<String>,
    pub snapshot: Option<SnapshotExpiry>,
}

/// A mounted snapshot: VALID, EXPIRING within the warning window, or EXPIRED, with the bytes not
/// local yet (counted only once it is not VALID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotExpiry {
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    pub valid_till: u64,
    pub state: ExpiryPhase,
    pub bytes_not_local: Option<u64>,
    pub at_risk: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExpiryPhase {
    Valid,
    Expiring,
    Expired,
}

/// The limits new mounts are checked against, with what is used of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub mounts: usize,
    pub max_mounts: usize,
    pub descriptor_limit: u64,
    pub fuse_requests_in_flight: usize,
    pub max_fuse_requests: usize,
    /// How long the oldest FUSE request now waiting has waited.
    #[serde(default)]
    pub oldest_fuse_request_ms: u64,
    /// FUSE requests that ever waited past 30 s (each logged as an error): 0 on a healthy node.
    #[serde(default)]
    pub stuck_fuse_requests: u64,
    pub gets_in_flight: usize,
    pub max_gets: usize,
    pub max_open_files_per_mount: usize,
    pub files: u64,
    pub max_files: u64,
}

/// `ping`: who answers, cheaply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub pid: u32,
    /// The daemon's command-line flags (a restart without flags uses them again).
    pub flags: Vec<String>,
    /// True once it brought back what a previous daemon left (mounts, jobs).
    pub recovered: bool,
    /// A service manager (systemd) runs it and starts its successor after a hand-over.
    #[serde(default)]
    pub supervised: bool,
}

/// `status`: the daemon and everything it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub pid: u32,
    pub home: std::path::PathBuf,
    pub flags: Vec<String>,
    pub recovered: bool,
    /// The log filter in force (`lazysnap daemon log-level` changes it).
    pub log_level: String,
    /// Who keeps mounts' connections across a restart: holder, systemd or none.
    pub handover: String,
    /// Where Prometheus metrics are served, when they are.
    pub metrics_addr: Option<String>,
    pub mounts: Vec<MountInfo>,
    pub limits: Limits,
    pub holder: Option<HolderStatus>,
    pub cache: CacheStats,
    pub block_buffers: BufferStats,
    pub uploaders: Vec<UploaderStatus>,
}

/// `log_level`: the filter now in force and the one it replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLevelSet {
    pub level: String,
    pub previous: String,
}
