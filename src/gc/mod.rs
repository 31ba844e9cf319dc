//! Log cleaning: deletes the data files of a volume that no needed manifest references.
//!
//! Needed: the newest manifest, every manifest a live (PENDING or COMMITTED, unexpired) snapshot
//! pins, and manifests younger than the retention window. Everything is decided from durable
//! state in the store, and the first listing or read error stops the run before any delete.
//!
//! The race with snapshot creation is closed the way Milvus closes it, with a check on both
//! sides: GC writes a tombstone for each manifest it will delete, then lists the snapshots again;
//! a creator writes its PENDING record, then looks for the tombstone. Whatever the interleaving,
//! one side sees the other: GC keeps the manifest, or the creator rolls back and pins the newer
//! head. Data objects that no manifest names at all (an upload whose manifest is not written
//! yet) are kept for an upload grace period.
//!
//! GC runs under the volume's current uploader term only, and checks the term again before each
//! batch of deletes, so an uploader that has been replaced stops deleting.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use crate::chain::{self, ChainError};
use crate::index::Index;
use crate::index::IndexError;
use crate::names::{RelPath, VolumeId};
use crate::snapshot::{self, SnapshotError};
use crate::store::{layout, ObjectInfo, Store, StoreError};

/// Deletes between two checks of the term.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("volume {0} has no manifest: nothing to collect")]
    EmptyVolume(VolumeId),
    #[error("term {requested} is older than the current term {current} of volume {volume}: this GC is fenced and deleted nothing further")]
    Fenced {
        volume: VolumeId,
        requested: u64,
        current: u64,
    },
    #[error("term {requested} has not started on volume {volume} (its current term is {current}); start an uploader with it first")]
    TermNotStarted {
        volume: VolumeId,
        requested: u64,
        current: u64,
    },
    #[error("snapshot {uuid} of volume {volume} pins manifest {manifest}, which is missing from the store; GC stops rather than guess")]
    MissingPinned {
        volume: VolumeId,
        uuid: String,
        manifest: String,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Chain(Box<ChainError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ChainError> for GcError {
    fn from(e: ChainError) -> Self {
        GcError::Chain(Box::new(e))
    }
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Run under this term; default: the volume's current term.
    pub term: Option<u64>,
    /// Manifests younger than this stay needed.
    pub retention_ms: u64,
    /// Data objects no manifest names stay this long (they may belong to a publish in progress).
    pub upload_grace_ms: u64,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            term: None,
            retention_ms: 3_600_000,
            upload_grace_ms: 3_600_000,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    #[serde(rename = "volumeID")]
    pub volume_id: String,
    /// A string, as terms are everywhere in the control API.
    #[serde(serialize_with = "crate::publish::term_as_string")]
    pub term: u64,
    pub dry_run: bool,
    pub manifests_kept: Vec<String>,
    pub manifests_deleted: Vec<String>,
    pub files_deleted: Vec<String>,
    pub bytes_deleted: u64,
    /// Snapshots released, expired, rolled back or abandoned whose leftovers were cleared.
    pub snapshots_tidied: Vec<String>,
}

/// What one pass over the store decided.
struct Plan {
    names: Vec<String>,
    needed: BTreeSet<String>,
    /// Files of each manifest read.
    files: BTreeMap<String, Vec<RelPath>>,
}

impl Plan {
    fn referenced(&self) -> HashSet<&RelPath> {
        self.needed.iter().flat_map(|n| &self.files[n]).collect()
    }
}

pub async fn collect(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    options: &GcOptions,
    now_ms: u64,
) -> Result<GcReport, GcError> {
    // One listing gives the manifests and the tombstones a killed run left.
    let (_, listed) = store.list_children(&layout::manifests_dir(volume)).await?;
    let names = chain::manifest_names_in(&listed);
    let head = names.last().ok_or_else(|| GcError::EmptyVolume(volume.clone()))?;
    let head_term = chain::load_manifest(store, index, volume, head).await?.term;
    let term = options.term.unwrap_or(head_term);
    check_term(volume, term, head_term)?;
    let mut report = GcReport {
        volume_id: volume.to_string(),
        term,
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    if !options.dry_run {
        report.snapshots_tidied = snapshot::tidy(store, volume, now_ms).await?;
        sweep_tombstones(store, volume, &listed).await?;
    }
    let mut plan = Plan {
        names: Vec::new(),
        needed: BTreeSet::new(),
        files: BTreeMap::new(),
    };
    extend_plan(store, index, volume, options, now_ms, &mut plan, names).await?;
    let collectable: Vec<String> = plan
        .names
        .iter()
        .filter(|n| !plan.needed.contains(*n))
        .cloned()
        .collect();
    let candidates = candidates(store, volume, options, now_ms, &plan).await?;
    if options.dry_run {
        report.manifests_kept = plan.needed.iter().cloned().collect();
        report.manifests_deleted = collectable;
        report.bytes_deleted = candidates.values().sum();
        report.files_deleted = candidates.into_keys().map(|p| p.to_string()).collect();
        return Ok(report);
    }
    for name in &collectable {
        match store
            .put_if_absent(&layout::collecting_key(volume, name), "{}".into())
            .await
        {
            Ok(()) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    crate::failpoint::reached(crate::failpoint::GC_TOMBSTONES_WRITTEN);
    // The second look: snapshots created and manifests written since the first one.
    let outcome = async {
        let names = chain::manifest_names(store, volume).await?;
        let head = names.last().ok_or_else(|| GcError::EmptyVolume(volume.clone()))?;
        check_term(
            volume,
            term,
            chain::load_manifest(store, index, volume, head).await?.term,
        )?;
        extend_plan(store, index, volume, options, now_ms, &mut plan, names).await
    }
    .await;
    let keep: Vec<&String> = collectable
        .iter()
        .filter(|n| plan.needed.contains(*n) || outcome.is_err())
        .collect();
    for name in keep {
        store.delete(&layout::collecting_key(volume, name)).await?;
    }
    outcome?;
    let referenced = plan.referenced();
    let doomed: Vec<String> = collectable.into_iter().filter(|n| !plan.needed.contains(n)).collect();
    let files: Vec<(RelPath, u64)> = candidates
        .into_iter()
        .filter(|(path, _)| !referenced.contains(path))
        .collect();
    // Manifests first, so nothing can name a file once it starts to go; a crash after this
    // leaves only objects no manifest names, which the next run collects after the grace period.
    let deleted = delete_all(store, index, volume, term, &doomed, &files, &mut report).await;
    // Our tombstones go whatever happened: publishes wait for them to disappear.
    for name in &doomed {
        store.delete(&layout::collecting_key(volume, name)).await?;
    }
    deleted?;
    tracing::info!(volume = %volume, term, manifests = doomed.len(), files = files.len(), bytes = report.bytes_deleted, "gc done");
    report.manifests_kept = plan.needed.into_iter().collect();
    report.manifests_deleted = doomed;
    Ok(report)
}

/// Deletes the tombstones of manifests already gone: a run killed between deleting a manifest and
/// its tombstone leaves one that nothing else would ever remove. A tombstone whose manifest exists
/// is another run's (or this one's to rewrite), and stays.
async fn sweep_tombstones(store: &Store, volume: &VolumeId, listed: &[ObjectInfo]) -> Result<(), GcError> {
    let names: BTreeSet<&str> = listed.iter().filter_map(|o| o.key.filename()).collect();
    for name in &names {
        let Some(manifest) = name.strip_suffix(layout::COLLECTING_SUFFIX) else {
            continue;
        };
        if !names.contains(manifest) {
            tracing::info!(volume = %volume, manifest, "removing the tombstone a killed GC left");
            store.delete(&layout::collecting_key(volume, manifest)).await?;
        }
    }
    Ok(())
}

async fn delete_all(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    term: u64,
    manifests: &[String],
    files: &[(RelPath, u64)],
    report: &mut GcReport,
) -> Result<(), GcError> {
    for (i, name) in manifests.iter().enumerate() {
        if i % BATCH == 0 {
            recheck_term(store, index, volume, term).await?;
        }
        store.delete(&layout::manifest_key(volume, name)).await?;
    }
    if !manifests.is_empty() {
        crate::failpoint::reached(crate::failpoint::GC_MANIFESTS_DELETED);
    }
    for (i, (path, size)) in files.iter().enumerate() {
        if i % BATCH == 0 {
            recheck_term(store, index, volume, term).await?;
        }
        store.delete(&layout::file_key(volume, path)).await?;
        report.files_deleted.push(path.to_string());
        report.bytes_deleted += size;
    }
    Ok(())
}

/// Adds to the plan what the store holds now: manifests not seen before (all needed if they are
/// new since the first look, else by the rules) and every live snapshot's pin.
async fn extend_plan(
    store: &Store,
    index: &Index,
    volume: &VolumeId,
    options: &GcOptions,
    now_ms: u64,
    plan: &mut Plan,
    names: Vec<String>,
) -> Result<(), GcError> {
    let first_look = plan.names.is_empty();
    for name in &names {
        if plan.files.contains_key(name) {
            continue;
        }
        let row = chain::load_manifest(store, index, volume, name).await?;
        let files = index.manifest_files(row.id)?.into_iter().map(|f| f.path).collect();
        plan.files.insert(name.clone(), files);
        let young = row.created_at_ms.saturating_add(options.retention_ms) > now_ms;
        if young || !first_look || Some(name) == names.last() {
            plan.needed.insert(name.clone());
        }
    }
    for snap in snapshot::list(store, volume, now_ms)
        .await?
        .into_iter()
        .filter(|s| s.pins())
    {
        if !plan.files.contains_key(&snap.log_manifest_name) {
            return Err(GcError::MissingPinned {
                volume: volume.clone(),
                uuid: snap.snapshot_uuid,
                manifest: snap.log_manifest_name,
            });
        }
        plan.needed.insert(snap.log_manifest_name);
    }
    plan.names = names;
    Ok(())
}

/// Data objects that may go: named by no needed manifest and either named by some manifest that
/// is not needed or older than the upload grace.
async fn candidates(
    store: &Store,
    volume: &VolumeId,
    options: &GcOptions,
    now_ms: u64,
    plan: &Plan,
) -> Result<BTreeMap<RelPath, u64>, GcError> {
    let referenced = plan.referenced();
    let named: HashSet<&RelPath> = plan.files.values().flatten().collect();
    let prefix = layout::files_dir(volume);
    let mut out = BTreeMap::new();
    for object in store.list(&prefix).await? {
        let Some(relative) = object.key.prefix_match(&prefix) else {
            continue;
        };
        let text = relative.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/");
        let Ok(path) = RelPath::parse(&text) else {
            tracing::warn!(key = %object.key, "skipping an object whose name is not a valid file path");
            continue;
        };
        let old = object.modified_ms.saturating_add(options.upload_grace_ms) <= now_ms;
        if !referenced.contains(&path) && (named.contains(&path) || old) {
            out.insert(path, object.size);
        }
    }
    Ok(out)
}

fn check_term(volume: &VolumeId, requested: u64, current: u64) -> Result<(), GcError> {
    match requested.cmp(&current) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(GcError::Fenced {
            volume: volume.clone(),
            requested,
            current,
        }),
        std::cmp::Ordering::Greater => Err(GcError::TermNotStarted {
            volume: volume.clone(),
            requested,
            current,
        }),
    }
}

async fn recheck_term(store: &Store, index: &Index, volume: &VolumeId, term: u64) -> Result<(), GcError> {
    let head = chain::latest_manifest_name(store, volume)
        .await?
        .ok_or_else(|| GcError::EmptyVolume(volume.clone()))?;
    let current = chain::load_manifest(store, index, volume, &head).await?.term;
    check_term(volume, term, current)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
