//! How a process reads: one index, one block cache, one fetch configuration (GET slots, memory
//! budget, buffer pool) and one client per store, shared by every view it builds. The daemon has
//! one for all its mounts and restores; a CLI command has one for its run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::{CopyRules, Placement, SstableRules, View, ViewError, VolumeView};
use crate::cache::{BlockCache, CacheConfig, CacheError, CacheStats};
use crate::catalog::{self, Selector};
use crate::fetch::{BufferBudget, FetchConfig, Fetcher, RequestSlots};
use crate::index::Index;
use crate::names::VolumeId;
use crate::scylla::{self, ScyllaError};
use crate::store::{BlockBuffers, Store, StoreConfig, StoreError, StoreUrl};

/// The memory plan and fetch settings of a process. One cap, `cache_memory`, holds every block
/// byte in memory: blocks being fetched take up to half of it (at most `request_size` x
/// `concurrency`), free buffers kept for reuse an eighth, verified blocks the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingConfig {
    pub cache_memory: u64,
    /// Folder of the disk cache; `None` keeps blocks in memory only.
    pub cache_dir: Option<PathBuf>,
    pub cache_disk: u64,
    /// Largest ranged GET.
    pub request_size: u64,
    /// Ranged GETs in flight at once, for every view of the process together.
    pub concurrency: usize,
    /// Furthest a sequential reader's readahead window grows.
    pub readahead_max: u64,
    /// How long a GET may send nothing before it is abandoned and retried.
    pub stall_timeout: Duration,
}

impl Default for ReadingConfig {
    fn default() -> Self {
        ReadingConfig {
            cache_memory: 256 << 20,
            cache_dir: None,
            cache_disk: 10 << 30,
            request_size: 8 << 20,
            concurrency: 16,
            readahead_max: 128 << 20,
            stall_timeout: crate::fetch::DEFAULT_STALL_TIMEOUT,
        }
    }
}

impl ReadingConfig {
    fn in_flight(&self) -> u64 {
        (self.cache_memory / 2)
            .min(self.request_size.saturating_mul(self.concurrency as u64))
            .max(1)
    }

    fn pooled(&self) -> u64 {
        self.cache_memory / 8
    }

    pub fn cache(&self) -> CacheConfig {
        CacheConfig {
            memory_bytes: self.cache_memory.saturating_sub(self.in_flight() + self.pooled()),
            disk_dir: self.cache_dir.clone(),
            disk_bytes: self.cache_disk,
        }
    }

    pub fn fetch(&self) -> FetchConfig {
        FetchConfig {
            max_request_bytes: self.request_size,
            slots: RequestSlots::new(self.concurrency),
            readahead_max: self.readahead_max,
            stall_timeout: self.stall_timeout,
            budget: BufferBudget::new(self.in_flight()),
            buffers: BlockBuffers::new(self.pooled()),
            ..FetchConfig::default()
        }
    }
}

/// What to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewSpec {
    /// Volumes of a store at a selector. No volumes with a backup selector: the one volume of a
    /// backup location, named by its generations.
    Volumes {
        store: StoreUrl,
        volumes: Vec<VolumeId>,
        selector: Selector,
    },
    /// The sstables of an ingested ScyllaDB snapshot that match a filter, at the view's root.
    Scylla(scylla::Filter),
    /// Volumes of a store each at its own manifest, pinned by a snapshot (a Fusion guest volume).
    Planned { store: StoreUrl, volumes: Vec<PlannedPart> },
}

/// Volumes of a planned view resolved at once: each waits on a few small requests (snapshot
/// record, manifest), so this is about round trips, not bandwidth.
const PLANNED_RESOLVED_AT_ONCE: usize = 64;

/// One volume of a [`ViewSpec::Planned`]: the snapshot that pins it, the manifest that snapshot
/// must pin (the view is refused otherwise) and the ID its folder carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPart {
    pub volume: VolumeId,
    pub snapshot: String,
    pub manifest: String,
    pub shown_as: VolumeId,
}

/// One volume of a planned view at the manifest its snapshot pins, refused if that is not the
/// manifest the plan names.
async fn resolve_planned_part(store: Store, index: Arc<Index>, planned: PlannedPart) -> Result<VolumeView, ViewError> {
    let selector = Selector::Snapshot(planned.snapshot.clone());
    let (manifest, snapshot) = catalog::resolve(&store, &index, &planned.volume, &selector).await?;
    if manifest.name != planned.manifest {
        return Err(ViewError::Moved {
            what: format!("snapshot {} of volume {}", planned.snapshot, planned.volume),
            now: manifest.name,
            pinned: planned.manifest.clone(),
        });
    }
    Ok(planned.view(manifest, snapshot))
}

impl PlannedPart {
    fn view(&self, manifest: crate::index::ManifestRow, snapshot: Option<crate::index::SnapshotRow>) -> VolumeView {
        let mut view = VolumeView::in_folder(self.volume.clone(), manifest, snapshot);
        view.shown_as = (self.shown_as != self.volume).then(|| self.shown_as.clone());
        view
    }
}

/// A view resolved in the index, its tree not built yet (see [`Reading::assemble`]).
#[derive(Debug)]
pub struct Resolved {
    /// The store of the parts that name none of their own.
    pub store: Store,
    pub parts: Vec<VolumeView>,
    pub rules: Option<Arc<dyn CopyRules>>,
    /// A ScyllaDB view: the sstables shown and those spanning the range asked for.
    pub scylla: Option<scylla::ResolvedView>,
}

impl Resolved {
    /// The manifest each part shows: given back as `pinned`, the same view again.
    pub fn manifest_names(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.manifest.name.clone()).collect()
    }

    pub fn file_count(&self) -> u64 {
        self.parts.iter().map(|p| p.manifest.file_count).sum()
    }
}

#[derive(Debug)]
pub struct Reading {
    index: Arc<Index>,
    cache: Arc<BlockCache>,
    fetch: FetchConfig,
    stores: Mutex<HashMap<StoreUrl, Store>>,
}

impl Reading {
    /// Opens the cache the plan describes.
    pub fn open(index: Arc<Index>, config: &ReadingConfig) -> Result<Reading, CacheError> {
        let cache = Arc::new(BlockCache::new(&config.cache())?);
        Ok(Reading::new(index, cache, config.fetch()))
    }

    pub fn new(index: Arc<Index>, cache: Arc<BlockCache>, fetch: FetchConfig) -> Reading {
        Reading {
            index,
            cache,
            fetch,
            stores: Mutex::default(),
        }
    }

    /// Runs background work (hydration) of every view on `runtime` (a
    /// [`crate::fetch::BackgroundRuntime`]'s) from now on.
    pub fn set_background_runtime(&mut self, runtime: tokio::runtime::Handle) {
        self.fetch.background_runtime = Some(runtime);
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn fetch_config(&self) -> &FetchConfig {
        &self.fetch
    }

    /// The process's client of a store, made once and shared by every view of it: a client per
    /// view would hold a connection pool per view.
    pub fn store(&self, url: &StoreUrl) -> Result<Store, StoreError> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(url) {
            return Ok(store.clone());
        }
        let store = Store::open(url, &StoreConfig::default())?;
        stores.insert(url.clone(), store.clone());
        Ok(store)
    }

    /// Resolves and assembles a view; `pinned` holds the manifest names a view shown before must
    /// show again (after a restart), and it is refused if it would show others.
    pub async fn build(&self, spec: &ViewSpec, pinned: Option<&[String]>) -> Result<View, ViewError> {
        let resolved = self.resolve(spec, pinned).await?;
        self.assemble(resolved)
    }

    /// What a view shows, resolved in the index (reading the store only for what it does not know
    /// yet), without building its tree: enough to check limits before paying for one.
    pub async fn resolve(&self, spec: &ViewSpec, pinned: Option<&[String]>) -> Result<Resolved, ViewError> {
        match spec {
            ViewSpec::Volumes {
                store,
                volumes,
                selector,
            } => self.resolve_volumes(store, volumes, selector, pinned).await,
            ViewSpec::Scylla(filter) => self.resolve_scylla(filter, pinned).await,
            ViewSpec::Planned { store, volumes } => self.resolve_planned(store, volumes).await,
        }
    }

    /// The view of parts already resolved, reading through this process's cache.
    pub fn assemble(&self, resolved: Resolved) -> Result<View, ViewError> {
        // Checksums learned of foreign objects are kept in the index, to check cached blocks
        // and restored files after a restart.
        let fetcher =
            Fetcher::new(resolved.store, self.cache.clone(), self.fetch.clone()).with_recall(self.index.clone());
        View::new(self.index.clone(), Arc::new(fetcher), resolved.parts, resolved.rules)
    }

    /// The view `pinned` names, from the index alone, or `None` when the index does not know all
    /// of it (then [`Reading::resolve`] reads the stores): a daemon taking a mount over must not
    /// keep its open files waiting on a store that is slow or gone.
    pub fn resolve_indexed(&self, spec: &ViewSpec, pinned: &[String]) -> Option<Resolved> {
        if let ViewSpec::Planned { store: url, volumes } = spec {
            let store = self.store(url).ok()?;
            let mut parts = Vec::new();
            for planned in volumes {
                let manifest = self.index.manifest(url, &planned.volume, &planned.manifest).ok()??;
                let snapshot = self.index.snapshot(url, &planned.volume, &planned.snapshot).ok()?;
                parts.push(planned.view(manifest, snapshot));
            }
            return Some(Resolved {
                store,
                parts,
                rules: None,
                scylla: None,
            });
        }
        let ViewSpec::Volumes {
            store: url,
            volumes,
            selector,
        } = spec
        else {
            return None;
        };
        let store = self.store(url).ok()?;
        let mut parts = Vec::new();
        if volumes.is_empty() && selector.is_backup() {
            let manifest = self.index.manifest_in_store(url, pinned.first()?).ok()??;
            parts.push(VolumeView::in_folder(manifest.volume.clone(), manifest, None));
        } else {
            if volumes.len() != pinned.len() {
                return None;
            }
            for (volume, name) in volumes.iter().zip(pinned) {
                let manifest = self.index.manifest(url, volume, name).ok()??;
                let snapshot = match selector {
                    Selector::Snapshot(uuid) => self.index.snapshot(url, volume, uuid).ok()?,
                    _ => None,
                };
                parts.push(VolumeView::in_folder(volume.clone(), manifest, snapshot));
            }
        }
        Some(Resolved {
            store,
            parts,
            rules: None,
            scylla: None,
        })
    }

    async fn resolve_volumes(
        &self,
        url: &StoreUrl,
        volumes: &[VolumeId],
        selector: &Selector,
        pinned: Option<&[String]>,
    ) -> Result<Resolved, ViewError> {
        let backup = selector.is_backup();
        if volumes.is_empty() && !backup {
            return Err(ViewError::NoVolume);
        }
        let store = self.store(url)?;
        // A backup location shows its one volume, named by its generations.
        let targets: Vec<Option<&VolumeId>> = match volumes.is_empty() {
            true => vec![None],
            false => volumes.iter().map(Some).collect(),
        };
        let mut parts = Vec::new();
        for (i, target) in targets.into_iter().enumerate() {
            let pinned = pinned.and_then(|p| p.get(i));
            let selector = pinned.map_or_else(|| selector.clone(), |name| selector.pinned(name));
            let (manifest, snapshot) = match target {
                Some(volume) => catalog::resolve(&store, &self.index, volume, &selector).await?,
                None => (catalog::resolve_backup(&store, &self.index, &selector).await?, None),
            };
            if let Some(pinned) = pinned.filter(|name| **name != manifest.name) {
                return Err(ViewError::Moved {
                    what: format!("volume {}", manifest.volume),
                    now: manifest.name,
                    pinned: pinned.clone(),
                });
            }
            parts.push(VolumeView::in_folder(manifest.volume.clone(), manifest, snapshot));
        }
        Ok(Resolved {
            store,
            parts,
            rules: None,
            scylla: None,
        })
    }

    /// Each volume at the manifest its snapshot pins, refused when that is not the manifest the
    /// plan names (or the snapshot is gone, uncommitted or expired).
    async fn resolve_planned(&self, url: &StoreUrl, volumes: &[PlannedPart]) -> Result<Resolved, ViewError> {
        if volumes.is_empty() {
            return Err(ViewError::NoVolume);
        }
        let store = self.store(url)?;
        // A plan names hundreds of volumes, each a few round trips (snapshot record, manifest):
        // resolved side by side, in order.
        // Owned arguments: a future borrowing through the closure would not be provably Send.
        let parts = futures::stream::iter(volumes.iter().cloned())
            .map(|planned| resolve_planned_part(store.clone(), self.index.clone(), planned))
            .buffered(PLANNED_RESOLVED_AT_ONCE)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Resolved {
            store,
            parts,
            rules: None,
            scylla: None,
        })
    }

    async fn resolve_scylla(&self, filter: &scylla::Filter, pinned: Option<&[String]>) -> Result<Resolved, ViewError> {
        let open = |url: &str| -> Result<Store, ScyllaError> { Ok(self.store(&url.parse()?)?) };
        let view = scylla::resolve(&self.index, filter, open).await?;
        let what = || format!("{}.{} in snapshot {}", filter.keyspace, filter.table, filter.snapshot);
        // A view with nothing inside its range is a valid answer (the node holds nothing of that
        // tablet); one where no sstable has the datacenter, rack or node asked for is a mistake.
        let Some(first_store) = view.first_store.clone() else {
            return Err(ViewError::NoSstableThere(what()));
        };
        let names: Vec<String> = view.manifests.iter().map(|(_, m)| m.name.clone()).collect();
        if let Some(pinned) = pinned.filter(|p| *p != names.as_slice()) {
            return Err(ViewError::Moved {
                what: format!("the view of {}", what()),
                now: names.join(", "),
                pinned: pinned.join(", "),
            });
        }
        let parts = view
            .manifests
            .iter()
            .map(|(store, manifest)| VolumeView {
                volume: manifest.volume.clone(),
                manifest: manifest.clone(),
                snapshot: None,
                store: Some(store.clone()),
                placement: Placement::AtRoot,
                shown_as: None,
            })
            .collect();
        Ok(Resolved {
            store: open(&first_store)?,
            parts,
            rules: Some(Arc::new(SstableRules)),
            scylla: Some(view),
        })
    }
}
