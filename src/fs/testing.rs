//! For unit tests: volumes published into a memory store and shown by a [`LazyFs`], with a disk
//! cache under the caller's folder.

use std::path::Path;
use std::sync::Arc;

use super::LazyFs;
use crate::cache::{BlockCache, CacheConfig};
use crate::catalog::{self, Selector};
use crate::fetch::{FetchConfig, Fetcher};
use crate::index::Index;
use crate::names::VolumeId;
use crate::publish::{self, NoProgress, PublishOptions};
use crate::store::{Store, StoreConfig};
use crate::view::{Placement, View, VolumeView};

/// (path, contents) of one file to publish.
pub type FileSpec<'a> = (&'a str, &'a [u8]);

/// Block size of the published volumes: small, so small files have several blocks.
pub const BLOCK_SIZE: u64 = 4096;

/// Publishes each volume's files into `test://<name>` and mounts them all (not in a kernel).
pub async fn published(name: &str, volumes: &[(&str, &[FileSpec<'_>])], dir: &Path) -> (LazyFs, Store) {
    let store = Store::open(&format!("test://{name}").parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Arc::new(Index::open_in_memory().unwrap());
    let mut views = Vec::new();
    for (i, (volume, files)) in volumes.iter().enumerate() {
        let src = dir.join(format!("src-{i}"));
        std::fs::create_dir_all(&src).unwrap();
        for (path, bytes) in *files {
            let full = src.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, bytes).unwrap();
        }
        let volume = VolumeId::parse(volume).unwrap();
        let options = PublishOptions {
            block_size: BLOCK_SIZE,
            ..Default::default()
        };
        publish::publish(&store, &index, &src, &volume, &options, &NoProgress)
            .await
            .unwrap();
        let (manifest, snapshot) = catalog::resolve(&store, &index, &volume, &Selector::Latest)
            .await
            .unwrap();
        views.push(VolumeView::in_folder(volume, manifest, snapshot));
    }
    (filesystem(&store, &index, views, dir, false), store)
}

/// A filesystem of `views` reading `store` through a disk cache under `dir`; `remember` keeps
/// checksums learned of foreign objects in `index`.
fn filesystem(store: &Store, index: &Arc<Index>, views: Vec<VolumeView>, dir: &Path, remember: bool) -> LazyFs {
    let cache = CacheConfig {
        disk_dir: Some(dir.join("cache")),
        ..CacheConfig::default()
    };
    let cache = Arc::new(BlockCache::new(&cache).unwrap());
    let mut fetcher = Fetcher::new(store.clone(), cache, FetchConfig::default());
    if remember {
        fetcher = fetcher.with_recall(index.clone());
    }
    let view = View::new(index.clone(), Arc::new(fetcher), views, None).unwrap();
    LazyFs::new(Arc::new(view), crate::access::Access::private_to(0, 0))
}

/// One foreign object (pinned by its ETag, no recorded checksums) in `test://<name>`, shown as
/// `<volume>/f.db` by a filesystem over `index` and a disk cache under `dir`, as a process that
/// remembers learned checksums in the index (`remember`) or not would show it.
pub async fn foreign(store: &Store, bytes: &[u8], index: &Arc<Index>, dir: &Path, remember: bool) -> LazyFs {
    use crate::checksum::BlockChecksums;
    use crate::manifest::{Manifest, ManifestFile};
    use crate::names::RelPath;
    let key = object_store::path::Path::from("backup/f.db");
    let etag = store.put(&key, bytes.to_vec().into()).await.unwrap().unwrap();
    let volume = VolumeId::parse("scylla/ks/cf").unwrap();
    let manifest = Manifest {
        volume: volume.clone(),
        name: "foreign-view".into(),
        term: 0,
        seq: 1,
        created_at_ms: 1,
        block_size: BLOCK_SIZE,
        files: vec![ManifestFile {
            path: RelPath::parse("f.db").unwrap(),
            size: bytes.len() as u64,
            checksums: BlockChecksums::default(),
            low_seqno: None,
            high_seqno: None,
            object_key: Some(key.to_string()),
            etag: Some(etag),
        }],
    };
    let manifest = index.insert_manifest(store.url(), &manifest).unwrap();
    let view = VolumeView {
        volume,
        manifest,
        snapshot: None,
        store: None,
        placement: Placement::AtRoot,
        shown_as: None,
    };
    filesystem(store, index, vec![view], dir, remember)
}

/// The same parts as `fs`, as a new node would show them: a fresh cache under `dir`.
pub fn on_a_new_node(fs: &LazyFs, dir: &Path) -> LazyFs {
    on_a_new_node_over(fs, fs.view().fetcher().store().clone(), dir)
}

/// As [`on_a_new_node`], reading the same objects through `store` (a counting or faulty wrapper).
pub fn on_a_new_node_over(fs: &LazyFs, store: Store, dir: &Path) -> LazyFs {
    let view = fs.view();
    filesystem(&store, view.index(), view.parts().to_vec(), dir, false)
}
