use std::sync::Arc;

use super::*;
use crate::cache::{BlockCache, CacheConfig};
use crate::catalog::{self, Selector};
use crate::fetch::{FetchConfig, Fetcher};
use crate::fs::VolumeView;
use crate::index::Index;
use crate::names::VolumeId;
use crate::publish::{self, NoProgress, PublishOptions};
use crate::store::{layout, Store, StoreConfig};

const BLOCK: usize = 4096;

/// A one-volume view of `files` in a fresh memory store, with its own cache.
async fn view(name: &str, files: &[(&str, Vec<u8>)], dir: &Path) -> (Arc<LazyFs>, Store) {
    let store = Store::open(&format!("memory://{name}").parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Arc::new(Index::open_in_memory().unwrap());
    let src = dir.join("src");
    for (path, bytes) in files {
        let full = src.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, bytes).unwrap();
    }
    let volume = VolumeId::parse("v").unwrap();
    let options = PublishOptions {
        block_size: BLOCK as u64,
        ..Default::default()
    };
    publish::publish(&store, &index, &src, &volume, &options, &NoProgress)
        .await
        .unwrap();
    let (manifest, snapshot) = catalog::resolve(&store, &index, &volume, &Selector::Latest)
        .await
        .unwrap();
    let cache = CacheConfig {
        disk_dir: Some(dir.join("cache")),
        ..CacheConfig::default()
    };
    let fetcher = Arc::new(Fetcher::new(
        store.clone(),
        Arc::new(BlockCache::new(&cache).unwrap()),
        FetchConfig::default(),
    ));
    let views = vec![VolumeView {
        volume,
        manifest,
        snapshot,
    }];
    (Arc::new(LazyFs::new(index, fetcher, views, (0, 0)).unwrap()), store)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_resumed_copy_keeps_the_verified_blocks_of_its_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(1, 10 * BLOCK + 5);
    let (fs, _) = view(
        "restore-resume",
        &[("d/a.log", data.clone()), ("empty", vec![])],
        dir.path(),
    )
    .await;
    let dest = dir.path().join("dest");
    let path = RelPath::parse("d/a.log").unwrap();
    // A run that died half-way: the first 4 blocks written, block 5 torn.
    let temp = temp_name(&dest, &path, "j1");
    std::fs::create_dir_all(temp.parent().unwrap()).unwrap();
    let mut partial = data[..5 * BLOCK].to_vec();
    partial[4 * BLOCK + 10] ^= 0xff;
    std::fs::write(&temp, &partial).unwrap();

    let progress = Progress::default();
    copy_view(&fs, 0, &dest, "j1", None, &progress).await.unwrap();
    assert_eq!(std::fs::read(dest.join("d/a.log")).unwrap(), data);
    assert_eq!(std::fs::read(dest.join("empty")).unwrap(), b"");
    assert!(!temp.exists(), "the temporary file was renamed");
    assert_eq!(
        progress.bytes_fetched.load(Relaxed),
        (data.len() - 4 * BLOCK) as u64,
        "only the blocks not kept"
    );
    assert_eq!(progress.bytes_done.load(Relaxed), data.len() as u64);
    assert_eq!(progress.files_done.load(Relaxed), 2);

    // Run again: everything at its final name verifies, nothing is fetched.
    let again = Progress::default();
    copy_view(&fs, 0, &dest, "j2", None, &again).await.unwrap();
    assert_eq!(again.bytes_fetched.load(Relaxed), 0);
    assert_eq!(again.bytes_done.load(Relaxed), data.len() as u64);
}

#[tokio::test]
async fn bad_store_bytes_and_occupied_names_leave_no_file_under_a_final_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(2, 3 * BLOCK);
    let (fs, store) = view("restore-bad", &[("a.log", data.clone())], dir.path()).await;
    let key = layout::file_key(&VolumeId::parse("v").unwrap(), &RelPath::parse("a.log").unwrap());
    store.put(&key, vec![0u8; data.len()].into()).await.unwrap();
    let dest = dir.path().join("dest");
    let err = copy_view(&fs, 0, &dest, "j", None, &Progress::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RestoreError::Fetch { .. }), "{err}");
    assert!(
        !dest.join("a.log").exists(),
        "a file that failed verification appeared under its name"
    );

    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("a.log"), b"not the view").unwrap();
    let err = copy_view(&fs, 0, &other, "j", None, &Progress::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already holds a different file"), "{err}");
    assert_eq!(std::fs::read(other.join("a.log")).unwrap(), b"not the view");
}

#[tokio::test]
async fn cancel_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, _) = view("restore-cancel", &[("a.log", pattern(3, 2 * BLOCK))], dir.path()).await;
    let dest = dir.path().join("dest");
    let progress = Progress::default();
    progress.cancelled.store(true, Relaxed);
    let err = copy_view(&fs, 0, &dest, "j", None, &progress).await.unwrap_err();
    assert!(matches!(err, RestoreError::Cancelled));
    let left: Vec<_> = walkdir::WalkDir::new(&dest)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
