//! mountd's control API: one JSON request and one JSON answer per connection on a Unix socket that
//! only the daemon's owner (and root) may use. Operations and errors follow Fusion's protocol:
//! every failure carries a status (`Einval` bad input, `NotMyVbucket` unknown or foreign volume,
//! `Einternal` internal) and a message that names the input.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::access::AccessRequest;
use crate::catalog::Selector;
use crate::names::VolumeId;
pub use crate::publish::Term;
use crate::view::{PlannedPart, ViewSpec};

pub mod answers;
mod error;
pub mod guests;
mod jobs;
pub mod ops;
pub mod records;

pub use error::OpError;
pub use jobs::{BackupStartRequest, JobRequest, LocationRequest, RestoreStartRequest, RestoreStatusRequest};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Mount volumes of one store; answers `{"mountPaths": [path]}`.
    Mount(MountRequest),
    /// Unmount a mount made by this daemon. `lazy` detaches it at once even while files are open;
    /// it goes away when they are closed.
    Umount {
        #[serde(rename = "mountPath")]
        mount_path: String,
        #[serde(default)]
        lazy: bool,
    },
    /// Start, pause, resume, cancel or ask about the hydration of a mount; answers its status.
    Hydrate(HydrateRequest),
    /// Fusion 0x70: pin each volume's current manifest; answers one element per volume.
    SnapshotCreate(SnapshotCreateRequest),
    /// Fusion 0x71: release a snapshot of each volume (idempotent).
    SnapshotRelease(SnapshotReleaseRequest),
    /// The snapshots of a volume, with their states.
    SnapshotList(VolumeRequest),
    /// One snapshot of a volume.
    SnapshotDescribe(SnapshotDescribeRequest),
    /// Log cleaning: delete data files no needed manifest names.
    Gc(GcRequest),
    /// Fusion 0x75: start (or take over with a newer term) the uploader of a volume on this node.
    UploaderStart(UploaderStartRequest),
    /// Fusion 0x76: stop this node's uploader of a volume.
    UploaderStop(VolumeRequest),
    /// This node's uploaders and their states.
    Uploaders,
    /// Fusion 0x74: upload what is pending and write a manifest now; answers once it is durable.
    Sync(VolumeRequest),
    /// Fusion 0x78: the namespaces of a store and their volumes.
    NamespaceList(NamespaceListRequest),
    /// Fusion 0x77: delete every namespace of a store except those listed.
    NamespaceDelete(NamespaceDeleteRequest),
    /// Start backing a folder up into a backup location every interval; answers its status.
    BackupStart(BackupStartRequest),
    /// Run a final round and stop a backup; answers its final status.
    BackupStop(LocationRequest),
    /// This node's backups.
    Backups,
    /// The generations of a backup location.
    BackupInfo(LocationRequest),
    /// Start copying a view into a local folder, or answer the job of the same request.
    RestoreStart(RestoreStartRequest),
    /// A job's status; with `waitMs`, answered as soon as the job ends, or after that long.
    RestoreStatus(RestoreStatusRequest),
    RestoreList,
    RestoreCancel(JobRequest),
    /// Run a job that is not running (cancelled, failed, completed) again, keeping what is done.
    RestoreResume(JobRequest),
    /// Mount a node's volumes of a Fusion AccelerationPlan as lazy guest volumes, hydrating in
    /// the background; answers the `uploadMountedVolumes` body once every guest is readable.
    GuestsMount(guests::GuestsMountRequest),
    /// Progress of a plan's guests: bytes local and total per guest and volume, rate, ETA.
    GuestsStatus(guests::GuestsRequest),
    /// Unmount a plan's guests (refused while files are open, unless `lazy`).
    GuestsRelease(guests::GuestsRequest),
    /// A Fusion request in kv_engine's current form (opcodes 0x70-0x78): the body checked as
    /// kv_engine checks it, run as the operation above that does the same; answers kv_engine's shape.
    KvEngine(crate::fusion::bodies::KvEngineRequest),
    /// One key of kv_engine's `fusion` stats group for a bucket (`fusion migration 12`).
    FusionStats(crate::fusion::stats::FusionStatsRequest),
    /// Every mount with its volumes and counters.
    Mounts,
    /// The daemon's pid, home, mounts and cache figures.
    Status,
    /// The daemon's pid, flags and whether it serves what a previous daemon left: cheap whatever
    /// the number of mounts.
    Ping,
    /// Change the daemon's log filter while it runs (a level, or `tracing` directives).
    LogLevel(LogLevelRequest),
    /// Unmount everything and exit.
    Shutdown,
    /// Stop serving without unmounting and exit, leaving every mount to the next daemon (which
    /// takes them over live through the handover holder). `lazysnap daemon restart` sends it.
    HandOver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRequest {
    /// The store of the volumes (unused by a ScyllaDB view, whose sstables name their stores).
    #[serde(default)]
    pub store: String,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default = "latest")]
    pub selector: Selector,
    #[serde(default, rename = "mountPath", skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Start hydrating the mount as soon as it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrate: Option<HydrateParams>,
    /// Mount the sstables of an ingested ScyllaDB snapshot's table that match this filter, flat,
    /// as a table's upload directory holds them (instead of volumes of a store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scylla: Option<crate::scylla::Filter>,
    /// Owner, modes and who else may enter; default: private to the user who asked. A mount's
    /// record keeps it resolved to numbers.
    #[serde(default, skip_serializing_if = "is_default")]
    pub access: AccessRequest,
    /// Volumes each at the manifest a snapshot pins, instead of `volumes` at one selector: what a
    /// Fusion guest volume shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<PlannedMount>,
    /// The guest volume of a plan this mount is (set by `guests_mount`, kept in its record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestOf>,
}

/// One volume of a planned mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedMount {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    #[serde(rename = "logManifestName")]
    pub log_manifest_name: String,
    #[serde(rename = "snapshotUUID")]
    pub snapshot_uuid: String,
    /// The ID its folder carries, when not its own (`dstVolumeID` of a restore plan).
    #[serde(rename = "shownAs", default, skip_serializing_if = "Option::is_none")]
    pub shown_as: Option<String>,
}

/// Which guest of which plan a mount is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestOf {
    #[serde(rename = "planUUID")]
    pub plan_uuid: String,
    pub node: String,
    pub guest: usize,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl MountRequest {
    /// Volumes of `store` at `selector`, at a path the daemon picks, private to the requester.
    pub fn of_volumes(store: String, volumes: Vec<String>, selector: Selector) -> MountRequest {
        MountRequest {
            store,
            volumes,
            selector,
            mount_path: None,
            hydrate: None,
            scylla: None,
            access: AccessRequest::default(),
            planned: Vec::new(),
            guest: None,
        }
    }

    /// The volumes it shows, whether named in `volumes` or in `planned`.
    pub fn volume_ids(&self) -> Vec<String> {
        let planned = self.planned.iter().map(|p| p.volume_id.clone());
        self.volumes.iter().cloned().chain(planned).collect()
    }

    /// The view this request names.
    pub fn view_spec(&self) -> Result<ViewSpec, OpError> {
        if self.planned.is_empty() {
            return view_spec(&self.store, &self.volumes, &self.selector, self.scylla.as_ref());
        }
        if !self.volumes.is_empty() || self.scylla.is_some() || self.selector != Selector::Latest {
            return Err(OpError::invalid(
                "a planned mount names its volumes and snapshots in `planned` alone (no volumes, selector or scylla)",
            ));
        }
        let volumes = self
            .planned
            .iter()
            .map(|p| {
                let volume = VolumeId::parse(&p.volume_id)?;
                crate::snapshot::validate_uuid(&p.snapshot_uuid)?;
                Ok(PlannedPart {
                    shown_as: match &p.shown_as {
                        Some(id) => VolumeId::parse(id)?,
                        None => volume.clone(),
                    },
                    volume,
                    snapshot: p.snapshot_uuid.clone(),
                    manifest: p.log_manifest_name.clone(),
                })
            })
            .collect::<Result<_, OpError>>()?;
        Ok(ViewSpec::Planned {
            store: self.store.parse()?,
            volumes,
        })
    }
}

/// The view of a store's volumes at a selector, or of a ScyllaDB filter.
fn view_spec(
    store: &str,
    volumes: &[String],
    selector: &Selector,
    scylla: Option<&crate::scylla::Filter>,
) -> Result<ViewSpec, OpError> {
    if let Some(filter) = scylla {
        return Ok(ViewSpec::Scylla(filter.clone()));
    }
    Ok(ViewSpec::Volumes {
        store: store.parse()?,
        volumes: volumes.iter().map(|v| VolumeId::parse(v)).collect::<Result<_, _>>()?,
        selector: selector.clone(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLevelRequest {
    pub level: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HydrateParams {
    /// Bytes per second at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// Unix milliseconds to finish by; default for snapshot mounts: the snapshot's validTill.
    #[serde(default, rename = "deadlineMs", skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HydrateAction {
    /// Start (or, when one runs, change its cap and deadline and resume it).
    Start,
    Pause,
    Resume,
    Cancel,
    #[default]
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HydrateRequest {
    #[serde(rename = "mountPath")]
    pub mount_path: String,
    #[serde(default)]
    pub action: HydrateAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    #[serde(default, rename = "deadlineMs", skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// One volume ID, or several: `"volumes": "v"` and `"volumes": ["v", "w"]` (or `"volume"`) both work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Volumes {
    One(String),
    Many(Vec<String>),
}

impl Volumes {
    pub fn ids(&self) -> &[String] {
        match self {
            Volumes::One(id) => std::slice::from_ref(id),
            Volumes::Many(ids) => ids,
        }
    }
}

/// Operations on one volume of a store. `logstore_uri` is accepted for `store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    pub volume: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    #[serde(alias = "volume")]
    pub volumes: Volumes,
    #[serde(rename = "snapshotUuid")]
    pub snapshot_uuid: String,
    /// Seconds the snapshot stays valid.
    pub validity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReleaseRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    #[serde(alias = "volume")]
    pub volumes: Volumes,
    #[serde(rename = "snapshotUuid")]
    pub snapshot_uuid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDescribeRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    pub volume: String,
    #[serde(rename = "snapshotUuid")]
    pub snapshot_uuid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    pub volume: String,
    /// Seconds a superseded manifest stays needed (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
    /// Seconds an object no manifest names is left alone, as a publish may still be writing it (default 3600).
    #[serde(default, rename = "uploadGrace", skip_serializing_if = "Option::is_none")]
    pub upload_grace: Option<u64>,
    /// Run under this term (default: the volume's current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    #[serde(default, rename = "dryRun")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploaderStartRequest {
    #[serde(alias = "logstore_uri")]
    pub store: String,
    pub volume: String,
    /// The engine's local folder whose files are uploaded.
    pub source: String,
    pub term: Term,
    /// Seconds between uploads (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceListRequest {
    #[serde(alias = "store")]
    pub logstore_uri: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceDeleteRequest {
    #[serde(alias = "store")]
    pub logstore_uri: String,
    /// Namespaces to keep; every other one is deleted (an empty list deletes all).
    pub namespaces: Vec<String>,
    /// Delete even while this node has live mounts of the store or uploaders of deleted volumes.
    #[serde(default)]
    pub force: bool,
    #[serde(default, rename = "dryRun")]
    pub dry_run: bool,
}

fn latest() -> Selector {
    Selector::Latest
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Success,
    Einval,
    NotMyVbucket,
    Einternal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            status: Status::Success,
            result: Some(result),
            error: None,
        }
    }

    /// The response carrying a typed answer (see [`answers`]) or the error.
    pub fn answer<T: Serialize>(result: Result<T, OpError>) -> Response {
        match result {
            Ok(value) => Response::ok(serde_json::to_value(value).expect("answers serialise")),
            Err(e) => Response::err(e.status, e.message),
        }
    }

    pub fn err(status: Status, message: impl Into<String>) -> Response {
        Response {
            status,
            result: None,
            error: Some(message.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach lazysnap-mountd at {socket}: {source}")]
    Unavailable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lazysnap-mountd answered something that is not a control response: {0}")]
    Protocol(String),
    #[error("{message}")]
    Remote { status: Status, message: String },
}

/// Sends one request and waits up to `timeout` for its answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<serde_json::Value, ControlError> {
    let unavailable = |source| ControlError::Unavailable {
        socket: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unavailable)?;
    stream.set_read_timeout(Some(timeout)).map_err(unavailable)?;
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    stream.write_all(&line).map_err(unavailable)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(unavailable)?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol(format!("{e}: {answer:?}")))?;
    match response.status {
        Status::Success => Ok(response.result.unwrap_or(serde_json::Value::Null)),
        status => Err(ControlError::Remote {
            status,
            message: response.error.unwrap_or_default(),
        }),
    }
}

/// Sends one request and reads its answer as `T` (see [`answers`]).
pub fn call_as<T: serde::de::DeserializeOwned>(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<T, ControlError> {
    let value = call(socket, request, timeout)?;
    serde_json::from_value(value).map_err(|e| ControlError::Protocol(format!("an answer of another shape: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_the_documented_json() {
        let req: Request = serde_json::from_str(
            r#"{"op":"mount","store":"file:///s","volumes":["v"],"selector":{"snapshot":"u1"},"mountPath":"/m"}"#,
        )
        .unwrap();
        assert_eq!(
            req,
            Request::Mount(MountRequest {
                store: "file:///s".into(),
                volumes: vec!["v".into()],
                selector: Selector::Snapshot("u1".into()),
                mount_path: Some("/m".into()),
                hydrate: None,
                scylla: None,
                access: AccessRequest::default(),
                planned: Vec::new(),
                guest: None,
            })
        );
        let owned: Request = serde_json::from_str(
            r#"{"op":"mount","store":"s","volumes":["v"],"access":{"uid":"couchbase","gid":998,"fileMode":"0440","allowOther":true}}"#,
        )
        .unwrap();
        let Request::Mount(owned) = owned else {
            panic!("a mount")
        };
        assert_eq!(
            owned.access.uid,
            Some(crate::access::Principal::Name("couchbase".into()))
        );
        assert_eq!(owned.access.gid, Some(crate::access::Principal::Id(998)));
        assert_eq!(owned.access.file_mode.map(|m| m.bits()), Some(0o440));
        assert!(owned.access.allow_other);
        let bad_mode = r#"{"op":"mount","store":"s","volumes":[],"access":{"fileMode":"01777"}}"#;
        let error = serde_json::from_str::<Request>(bad_mode).unwrap_err().to_string();
        assert!(error.contains("01777"), "{error}");
        let latest: Request = serde_json::from_str(r#"{"op":"mount","store":"s","volumes":[]}"#).unwrap();
        assert!(matches!(
            latest,
            Request::Mount(MountRequest {
                selector: Selector::Latest,
                ..
            })
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op":"mount","store":"s","volumes":[],"bogus":1}"#).is_err());
        let err = serde_json::to_value(Response::err(Status::NotMyVbucket, "volume v not found")).unwrap();
        assert_eq!(
            err,
            serde_json::json!({"status": "NotMyVbucket", "error": "volume v not found"})
        );
    }
}
