use std::sync::Arc;

use super::*;
use crate::cache::{BlockCache, CacheConfig};
use crate::catalog::{self, Selector};
use crate::fetch::{FetchConfig, Fetcher};
use crate::index::Index;
use crate::names::VolumeId;
use crate::publish::{self, NoProgress, PublishOptions};
use crate::store::{Store, StoreConfig};
use crate::view::{Placement, View, VolumeView};

struct Fixture {
    fs: LazyFs,
    _dir: tempfile::TempDir,
}

use testing::FileSpec;

async fn fixture(name: &str, volumes: &[(&str, &[FileSpec<'_>])]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (fs, _) = testing::published(name, volumes, dir.path()).await;
    Fixture { fs, _dir: dir }
}

fn walk(fs: &LazyFs, path: &str) -> Result<Attr, FsError> {
    let mut attr = fs.getattr(ROOT)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = fs.lookup(attr.ino, part)?;
    }
    Ok(attr)
}

#[tokio::test]
async fn the_tree_is_volume_id_then_files() {
    let big = vec![3u8; 10_000];
    let f = fixture(
        "fs-tree",
        &[
            ("kv/b/kvstore-0", &[("log.1", b"abc"), ("d/e/f.sst", &big)]),
            ("kv/b/kvstore-1", &[("log.9", b"z")]),
        ],
    )
    .await;
    let root: Vec<_> = f.fs.readdir(ROOT).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(root, [".", "..", "kv"]);
    let b = walk(&f.fs, "kv/b").unwrap();
    let vbs: Vec<_> = f.fs.readdir(b.ino).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(vbs, [".", "..", "kvstore-0", "kvstore-1"]);
    let file = walk(&f.fs, "kv/b/kvstore-0/d/e/f.sst").unwrap();
    // The fixture's access: private to root.
    assert_eq!((file.kind, file.size, file.perm), (Kind::File, 10_000, 0o400));
    assert_eq!((file.uid, file.gid), (0, 0));
    let dir = walk(&f.fs, "kv/b/kvstore-0/d").unwrap();
    assert_eq!((dir.kind, dir.perm), (Kind::Dir, 0o500));
    assert!(matches!(walk(&f.fs, "kv/b/kvstore-2"), Err(FsError::NotFound)));
    assert!(matches!(
        walk(&f.fs, "kv/b/kvstore-1/log.9/x"),
        Err(FsError::NotADirectory)
    ));
    assert_eq!(f.fs.file_count(), 3);
    assert_eq!(f.fs.statfs().blocks, 10_004u64.div_ceil(4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_return_published_bytes_and_xattrs_report_the_cache() {
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 199) as u8).collect();
    let f = fixture("fs-read", &[("v", &[("f", &data)])]).await;
    let ino = walk(&f.fs, "v/f").unwrap().ino;
    assert!(matches!(f.fs.open(ino, true), Err(FsError::ReadOnly)));
    assert!(matches!(
        f.fs.open(walk(&f.fs, "v").unwrap().ino, false),
        Err(FsError::IsADirectory)
    ));
    let fh = f.fs.open(ino, false).unwrap();
    let xattr = |name| String::from_utf8(f.fs.xattr(ino, name).unwrap()).unwrap();
    assert_eq!(xattr("user.lazysnap.blocks_cached"), "0");
    assert_eq!(
        &f.fs.read(fh, 5000, 100).await.unwrap().to_bytes()[..],
        &data[5000..5100]
    );
    assert_eq!(xattr("user.lazysnap.blocks_cached"), "1");
    assert_eq!(xattr("user.lazysnap.cached_bytes"), "4096");
    assert_eq!(xattr("user.lazysnap.blocks_total"), "5");
    assert_eq!(xattr("user.lazysnap.block_size"), "4096");
    assert_eq!(xattr("user.lazysnap.volume"), "v");
    assert!(matches!(f.fs.xattr(ino, "user.other"), Err(FsError::NoAttribute)));
    assert_eq!(
        &f.fs.read(fh, 19_990, 100).await.unwrap().to_bytes()[..],
        &data[19_990..]
    );
    assert!(f.fs.read(fh, 30_000, 10).await.unwrap().is_empty());
    f.fs.release(fh);
    assert!(matches!(f.fs.read(fh, 0, 1).await, Err(FsError::BadHandle)));
    let stats = f.fs.stats();
    assert_eq!((stats.opens, stats.read_errors), (1, 0));
    assert_eq!(stats.store.bytes_fetched, 4096 + (20_000 - 4 * 4096));
}

#[tokio::test]
async fn a_volume_shown_twice_is_refused() {
    let store = Store::open(&"test://fs-twice".parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Arc::new(Index::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"1").unwrap();
    let volume = VolumeId::parse("v").unwrap();
    publish::publish(
        &store,
        &index,
        dir.path(),
        &volume,
        &PublishOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    let (manifest, _) = catalog::resolve(&store, &index, &volume, &Selector::Latest)
        .await
        .unwrap();
    let view = VolumeView {
        volume,
        manifest,
        snapshot: None,
        store: None,
        placement: Placement::InVolumeFolder,
        shown_as: None,
    };
    let cache = CacheConfig {
        disk_dir: Some(dir.path().join("cache")),
        ..CacheConfig::default()
    };
    let cache = Arc::new(BlockCache::new(&cache).unwrap());
    let fetcher = Arc::new(Fetcher::new(store, cache, FetchConfig::default()));
    let err = View::new(index, fetcher, vec![view.clone(), view], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shown twice"), "{err}");
}

#[tokio::test]
async fn a_file_read_whole_has_a_verified_local_copy_and_a_partly_read_one_does_not() {
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let f = fixture(
        "fs-local",
        &[("kv/b/kvstore-0", &[("whole", &bytes), ("part", &bytes)])],
    )
    .await;
    let whole = walk(&f.fs, "kv/b/kvstore-0/whole").unwrap().ino;
    let part = walk(&f.fs, "kv/b/kvstore-0/part").unwrap().ino;
    assert!(f.fs.local_copy(whole).is_none(), "nothing fetched yet");
    let handle = f.fs.open(whole, false).unwrap();
    assert_eq!(f.fs.read(handle, 0, 20_000).await.unwrap().to_bytes(), bytes);
    let handle = f.fs.open(part, false).unwrap();
    f.fs.read(handle, 0, 4096).await.unwrap();

    let copy = f.fs.local_copy(whole).expect("every block fetched and verified");
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut &copy.file, &mut content).unwrap();
    assert_eq!(content, bytes);
    assert!(f.fs.local_copy(part).is_none(), "blocks 1 and 2 are only in the store");
}

/// Waits until no background verification runs.
async fn verified(fs: &LazyFs) {
    while !fs.verifying.idle() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Asks for a local copy until one comes: verifiers are shared by the whole process (other tests
/// may hold them), so an ask may start nothing and a later one the verification.
async fn local_copy_once_verified(fs: &LazyFs, ino: u64) -> Option<super::LocalCopy> {
    for _ in 0..500 {
        if let Some(copy) = fs.local_copy(ino) {
            return Some(copy);
        }
        verified(fs).await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_file_gets_a_local_copy_only_once_its_checksums_are_known_and_keeps_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&"test://fs-foreign".parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Arc::new(Index::open_in_memory().unwrap());
    let bytes: Vec<u8> = (0..5 * testing::BLOCK_SIZE as u32 + 9)
        .map(|i| (i % 241) as u8)
        .collect();
    let status = |fs: &LazyFs, ino| {
        let object = fs.object(ino).unwrap();
        fs.view().fetcher().cache().object_status(&object.id, object.shape)
    };

    let fs = testing::foreign(&store, &bytes, &index, dir.path(), true).await;
    let ino = walk(&fs, "f.db").unwrap().ino;
    let handle = fs.open(ino, false).unwrap();
    assert_eq!(fs.read(handle, 0, 1 << 20).await.unwrap().to_bytes(), bytes);
    assert!(
        fs.local_copy(ino).is_some(),
        "every block fetched, and checked by this process"
    );
    let total = status(&fs, ino).blocks_total;
    drop(fs);

    // A process that learned nothing cannot check the cached blocks: no local copy, and the
    // blocks stay cached (checking them against a checksum it does not have would evict them).
    let fs = testing::foreign(&store, &bytes, &index, dir.path(), false).await;
    let ino = walk(&fs, "f.db").unwrap().ino;
    assert!(fs.local_copy(ino).is_none());
    verified(&fs).await;
    assert!(fs.local_copy(ino).is_none());
    verified(&fs).await;
    assert_eq!(status(&fs, ino).blocks_cached, total, "cached blocks were evicted");
    drop(fs);

    // One that recalls what was learned checks them in the background, then has a local copy.
    let fs = testing::foreign(&store, &bytes, &index, dir.path(), true).await;
    let ino = walk(&fs, "f.db").unwrap().ino;
    assert!(fs.local_copy(ino).is_none(), "found on disk, not checked yet");
    let copy = local_copy_once_verified(&fs, ino)
        .await
        .expect("checked against the recalled checksums");
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut &copy.file, &mut content).unwrap();
    assert_eq!(content, bytes);
    assert_eq!(fs.view().fetcher().stats().bytes_fetched, 0);
}
