use std::sync::Arc;

use super::*;
use crate::fs::{testing, LazyFs};
use crate::names::VolumeId;
use crate::store::{layout, Store};

const BLOCK: usize = testing::BLOCK_SIZE as usize;

/// A one-volume view ("v") of `files` in a fresh memory store, with its own cache.
async fn view(name: &str, files: &[(&str, Vec<u8>)], dir: &Path) -> (Arc<LazyFs>, Store) {
    let specs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    let (fs, store) = testing::published(name, &[("v", &specs)], dir).await;
    (Arc::new(fs), store)
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
    copy_view(fs.view(), &dest, "j1", None, &progress).await.unwrap();
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
    copy_view(fs.view(), &dest, "j2", None, &again).await.unwrap();
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
    let err = copy_view(fs.view(), &dest, "j", None, &Progress::default())
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
    let err = copy_view(fs.view(), &other, "j", None, &Progress::default())
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
    let err = copy_view(fs.view(), &dest, "j", None, &progress).await.unwrap_err();
    assert!(matches!(err, RestoreError::Cancelled));
    let left: Vec<_> = walkdir::WalkDir::new(&dest)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_copy_fetches_many_files_in_large_chunks_past_the_cache_and_takes_cached_blocks() {
    let dir = tempfile::tempdir().unwrap();
    // Two files of several chunks each (a chunk is one 8 MiB GET) and small ones between them.
    let big = pattern(4, 20 << 20);
    let other = pattern(5, (9 << 20) + 3);
    let mut files = vec![("big", big.clone()), ("d/other", other.clone())];
    let small: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("s/{i}"), pattern(i, 3 * BLOCK + i as usize)))
        .collect();
    files.extend(small.iter().map(|(p, b)| (p.as_str(), b.clone())));
    let (fs, _) = view("restore-wire", &files, dir.path()).await;
    let view = fs.view();
    // One block of `big` is cached already: the copy takes it from there.
    let big_object = view
        .object(view.files().iter().find(|f| f.path.as_str() == "big").unwrap().ino)
        .unwrap();
    view.fetcher().blocks(&big_object, 7..8).await.unwrap();
    let requests_before = view.fetcher().stats().requests;
    let cache_before = view.fetcher().cache().stats();

    let dest = dir.path().join("dest");
    let progress = Progress::default();
    copy_view(view, &dest, "j", None, &progress).await.unwrap();
    for (path, bytes) in &files {
        assert!(std::fs::read(dest.join(path)).unwrap() == *bytes, "{path} differs");
    }
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(progress.bytes_done.load(Relaxed), total);
    assert_eq!(progress.files_done.load(Relaxed), files.len() as u64);
    assert_eq!(
        progress.bytes_fetched.load(Relaxed),
        total - BLOCK as u64,
        "the cached block was not fetched"
    );
    let requests = view.fetcher().stats().requests - requests_before;
    // big: 3 chunks, split in two around the cached block; other: 2; the small files: one each.
    assert_eq!(requests, 3 + 1 + 2 + 20);
    let cache = view.fetcher().cache().stats();
    assert_eq!(
        (cache.memory_bytes, cache.disk_bytes),
        (cache_before.memory_bytes, cache_before.disk_bytes),
        "fetched blocks went to the destination only"
    );
    let temps: Vec<_> = walkdir::WalkDir::new(&dest)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("lazysnap-restore"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}
