//! Ingest: read manifests, find each sstable's component objects in the store (one listing per
//! folder), check every TOC is there, then record everything in one index transaction, so a bad
//! manifest anywhere in the call leaves nothing ingested.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;

use super::ScyllaError;
use crate::index::{Index, ScyllaIngest, ScyllaIngestCounts, ScyllaObjectRow};
use crate::manifest::scylla::{self, ScyllaManifest};
use crate::store::{ObjectInfo, Store};

/// Folders listed at once while ingesting a cluster layout (one folder per sstable).
const LISTINGS_IN_FLIGHT: usize = 8;

/// A manifest to ingest: its store and key.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub store: Store,
    pub key: String,
}

/// One manifest as ingested.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestedManifest {
    pub store: String,
    pub manifest: String,
    pub scope: String,
    pub layout: &'static str,
    pub snapshot: String,
    pub keyspace: String,
    pub table: String,
    pub sstables: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestReport {
    pub manifests: Vec<IngestedManifest>,
    #[serde(flatten)]
    pub counts: ScyllaIngestCounts,
}

/// Where a manifest's sstables keep their components.
enum Layout {
    /// Every component flat in the manifest's own folder (a node's backup).
    Flat { dir: String },
    /// `<root>/sstables/<sstable id>/<component>`, manifests at `<root>/snapshots/<name>/`.
    Cluster { root: String },
}

impl Layout {
    fn of(key: &str) -> (Layout, Option<String>) {
        let parts: Vec<&str> = key.split('/').collect();
        let n = parts.len();
        if n >= 3 && parts[n - 3] == "snapshots" {
            let root = parts[..n - 3].join("/");
            return (Layout::Cluster { root }, Some(parts[n - 2].to_string()));
        }
        (
            Layout::Flat {
                dir: parts[..n - 1].join("/"),
            },
            None,
        )
    }

    fn name(&self) -> &'static str {
        match self {
            Layout::Flat { .. } => "flat",
            Layout::Cluster { .. } => "cluster",
        }
    }

    fn prefix(&self, sstable_id: &str) -> String {
        let folder = match self {
            Layout::Flat { dir } => dir.clone(),
            Layout::Cluster { root } if root.is_empty() => format!("sstables/{sstable_id}"),
            Layout::Cluster { root } => format!("{root}/sstables/{sstable_id}"),
        };
        match folder.is_empty() {
            true => folder,
            false => format!("{folder}/"),
        }
    }
}

struct Read {
    source: ManifestSource,
    manifest: ScyllaManifest,
    layout: Layout,
    objects: Vec<(String, Vec<ScyllaObjectRow>)>,
}

/// Ingests every manifest of `sources` into the index, or none of them (see the module doc).
pub async fn ingest(index: &Index, sources: &[ManifestSource]) -> Result<IngestReport, ScyllaError> {
    let mut read = Vec::with_capacity(sources.len());
    for source in sources {
        read.push(read_one(source).await?);
    }
    let batch: Vec<ScyllaIngest<'_>> = read
        .iter()
        .map(|r| ScyllaIngest {
            store: r.source.store.url(),
            manifest_key: &r.source.key,
            manifest: &r.manifest,
            objects: r.objects.clone(),
        })
        .collect();
    let counts = index.ingest_scylla(&batch)?;
    let manifests = read
        .iter()
        .map(|r| IngestedManifest {
            store: r.source.store.url().to_string(),
            manifest: r.source.key.clone(),
            scope: r.manifest.scope.clone(),
            layout: r.layout.name(),
            snapshot: r.manifest.snapshot.clone(),
            keyspace: r.manifest.table.keyspace.clone(),
            table: r.manifest.table.table.clone(),
            sstables: r.manifest.sstables.len(),
            bytes: r.objects.iter().flat_map(|(_, o)| o).map(|o| o.size).sum(),
        })
        .collect();
    tracing::info!(
        manifests = sources.len(),
        sstables = counts.sstables,
        "ingested ScyllaDB manifests"
    );
    Ok(IngestReport { manifests, counts })
}

async fn read_one(source: &ManifestSource) -> Result<Read, ScyllaError> {
    let store = &source.store;
    let label = format!("{}#{}", store.url(), source.key);
    let bytes = store.get(&Path::from(source.key.as_str())).await.map_err(|e| match e {
        e if e.is_not_found() => ScyllaError::ManifestNotFound {
            store: store.url().to_string(),
            key: source.key.clone(),
        },
        other => other.into(),
    })?;
    let (layout, hint) = Layout::of(&source.key);
    let manifest = scylla::parse(&bytes, &label, hint.as_deref())?;
    let prefixes: Vec<String> = manifest.sstables.iter().map(|s| layout.prefix(&s.id)).collect();
    let mut folders: Vec<String> = prefixes.clone();
    folders.sort();
    folders.dedup();
    let listed: HashMap<String, Vec<ObjectInfo>> = futures::stream::iter(folders)
        .map(|folder| async move {
            let (_, objects) = store.list_children(&Path::from(folder.trim_end_matches('/'))).await?;
            Ok::<_, ScyllaError>((folder, objects))
        })
        .buffer_unordered(LISTINGS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut objects = Vec::with_capacity(manifest.sstables.len());
    for (sstable, prefix) in manifest.sstables.iter().zip(prefixes) {
        let mut found = Vec::new();
        for info in &listed[&prefix] {
            let name = info.key.filename().unwrap_or_default();
            if !name.starts_with(sstable.component_prefix()) {
                continue;
            }
            // Some servers leave ETags out of listings; a HEAD has it.
            let etag = match &info.etag {
                Some(etag) => Some(etag.clone()),
                None => store.head(&info.key).await?.and_then(|head| head.etag),
            };
            let etag = etag.ok_or_else(|| ScyllaError::NoEtag {
                store: store.url().to_string(),
                key: info.key.to_string(),
            })?;
            found.push(ScyllaObjectRow {
                name: name.to_string(),
                size: info.size,
                etag,
            });
        }
        if !found.iter().any(|o| o.name == sstable.toc_name) {
            return Err(ScyllaError::MissingToc {
                manifest: label,
                detail: format!(
                    "sstable {}: its TOC {} is missing from store {} (looked under {prefix:?})",
                    sstable.id,
                    sstable.toc_name,
                    store.url()
                ),
            });
        }
        objects.push((prefix, found));
    }
    Ok(Read {
        source: source.clone(),
        manifest,
        layout,
        objects,
    })
}
