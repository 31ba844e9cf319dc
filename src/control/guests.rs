//! Requests and answers of Fusion guest volumes: a node's part of an AccelerationPlan mounted as
//! lazy guests, their progress, and their release.

use serde::{Deserialize, Serialize};

use crate::access::AccessRequest;
use crate::hydrate::HydrationStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestsMountRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    /// The AccelerationPlan as ns_server answered it.
    pub plan: serde_json::Value,
    /// The node whose volumes to mount (`ns_1@host`).
    pub node: String,
    /// Guests are mounted at `<root>/<planUUID>/guest<i>`.
    pub root: String,
    /// At most this many guests (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<usize>,
    /// Bytes of storage each guest but the last holds at least (default 0).
    #[serde(default, rename = "minPartSize", skip_serializing_if = "Option::is_none")]
    pub min_part_size: Option<u64>,
    /// A snapshot-restore plan: volumes show under their `dstVolumeID`.
    #[serde(default)]
    pub restore: bool,
    /// Bytes per second all guests of the node hydrate at together, at most (default: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub access: AccessRequest,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestsRequest {
    #[serde(rename = "planUUID")]
    pub plan_uuid: String,
    /// `guests_release`: unmount even while files are open (each guest goes once they close).
    #[serde(default)]
    pub lazy: bool,
}

/// `guests_mount`: exactly the body ns_server's `uploadMountedVolumes` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMountedVolumes {
    pub nodes: Vec<NodeGuests>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGuests {
    pub name: String,
    pub guest_volume_paths: Vec<String>,
}

/// `guests_status`: the download stage's progress, per guest and per volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestsStatus {
    #[serde(rename = "planUUID")]
    pub plan_uuid: String,
    pub node: String,
    pub bytes_local: u64,
    pub bytes_total: u64,
    pub guests: Vec<GuestStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestStatus {
    pub path: String,
    pub guest: usize,
    pub bytes_local: u64,
    pub bytes_total: u64,
    /// Bytes per second hydrated lately.
    pub rate: f64,
    pub eta_seconds: Option<f64>,
    pub open_files: usize,
    pub hydration: Option<HydrationStatus>,
    pub volumes: Vec<GuestVolumeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestVolumeStatus {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// The folder it shows as (its own ID, or the restore plan's `dstVolumeID`).
    pub shown_as: String,
    pub bytes_local: u64,
    pub bytes_total: u64,
}

/// `guests_release`: the guests unmounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestsReleased {
    #[serde(rename = "planUUID")]
    pub plan_uuid: String,
    pub unmounted: Vec<String>,
}
