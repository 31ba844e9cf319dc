//! The records the daemon keeps in the index of the work it runs, so that a daemon that died
//! takes it up again as it was: mounts, restore jobs (uploaders and backups are kept as their start
//! requests). Written and read back typed, through the index.

use serde::{Deserialize, Serialize};

use super::{MountRequest, RestoreStartRequest};
use crate::scylla::Spanning;

/// What the index keeps of a mount, so that a daemon that died brings it back as it was.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountRecord {
    /// The request, with `hydrate` set while a hydration runs (not when paused or cancelled).
    pub request: MountRequest,
    /// The manifest each volume showed: a restored mount shows the same files even if the
    /// volume has moved on since.
    pub manifests: Vec<String>,
    pub created_dir: bool,
    /// A ScyllaDB view: the sstables shown and those spanning the requested range (not shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scylla: Option<ScyllaShown>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScyllaShown {
    pub sstables: usize,
    pub spanning: Vec<Spanning>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    /// Made, or interrupted by a daemon stop: runs when the daemon (re)starts.
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreJob {
    pub id: String,
    pub request: RestoreStartRequest,
    /// The manifests (or generation) the view resolved to when the job was made, one per part: a
    /// resumed job copies the same files even if the volume moved on.
    #[serde(alias = "manifest", deserialize_with = "one_or_many")]
    pub manifests: Vec<String>,
    pub state: JobState,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub files_total: u64,
    pub files_done: u64,
    /// ScyllaDB views: sstables of the view, and those whose every component is in place.
    #[serde(default)]
    pub sstables_total: u64,
    #[serde(default)]
    pub sstables_done: u64,
    /// Bytes fetched from the store by the job's runs (the rest came from the cache or was kept).
    pub bytes_fetched: u64,
    /// Of those, bytes fetched by the current (or last) run: what a resume cost.
    #[serde(default)]
    pub bytes_fetched_this_run: u64,
    pub error: Option<String>,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

/// A list of manifests, or, as older daemons recorded it, one string of them a line each.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Lines(String),
        List(Vec<String>),
    }
    Ok(match Shape::deserialize(deserializer)? {
        Shape::Lines(text) => text.lines().map(str::to_string).collect(),
        Shape::List(list) => list,
    })
}

/// A restore job as the control API answers it: the record, with live figures while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreJobStatus {
    #[serde(flatten)]
    pub job: RestoreJob,
    /// The manifest a one-volume view shows (the API's answer before views had several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Bytes per second done, and seconds left at that rate, while the job runs.
    pub rate: Option<f64>,
    pub eta_seconds: Option<f64>,
}

impl JobState {
    /// Completed, failed or cancelled: nothing runs until it is resumed.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled | JobState::Failed)
    }
}

impl RestoreJobStatus {
    pub fn new(job: RestoreJob, rate: Option<f64>, eta_seconds: Option<f64>) -> RestoreJobStatus {
        let manifest = match job.manifests.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        RestoreJobStatus {
            job,
            manifest,
            rate,
            eta_seconds,
        }
    }
}

/// The answer to `restore_list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreJobs {
    pub jobs: Vec<RestoreJobStatus>,
}
