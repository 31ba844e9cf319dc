use super::*;
use crate::checksum::{BlockChecksums, Pinned};

fn object(n: u8) -> ObjectId {
    let url: StoreUrl = "test://cache-test".parse().unwrap();
    ObjectId::new(&url, &format!("k{n}"), 1 << 20, &BlockChecksums::default().into())
}

const SHAPE: BlockShape = BlockShape {
    block_size: 4096,
    object_size: 10_000,
};

fn block(object: ObjectId, block: u64, fill: u8) -> (BlockKey, Bytes, u32) {
    let bytes = Bytes::from(vec![fill; SHAPE.len(block) as usize]);
    let crc = crc32c::crc32c(&bytes);
    (BlockKey { object, block }, bytes, crc)
}

fn disk_config(dir: &std::path::Path, memory: u64, disk: u64) -> CacheConfig {
    CacheConfig {
        memory_bytes: memory,
        disk_dir: Some(dir.to_path_buf()),
        disk_bytes: disk,
    }
}

#[test]
fn object_ids_depend_on_every_part_of_the_identity() {
    let url: StoreUrl = "test://a".parse().unwrap();
    let other: StoreUrl = "test://b".parse().unwrap();
    let sums = BlockChecksums::new(vec![1]).into();
    let id = ObjectId::new(&url, "k", 1, &sums);
    assert_eq!(id, ObjectId::new(&url, "k", 1, &sums));
    assert_ne!(id, ObjectId::new(&other, "k", 1, &sums));
    assert_ne!(id, ObjectId::new(&url, "k2", 1, &sums));
    assert_ne!(id, ObjectId::new(&url, "k", 2, &sums));
    assert_ne!(id, ObjectId::new(&url, "k", 1, &BlockChecksums::new(vec![2]).into()));
    let pinned = |etag| Integrity::Pinned(Pinned::new(etag));
    assert_ne!(id, ObjectId::new(&url, "k", 1, &pinned("e1")));
    assert_ne!(
        ObjectId::new(&url, "k", 1, &pinned("e1")),
        ObjectId::new(&url, "k", 1, &pinned("e2"))
    );
    assert_eq!(ObjectId::from_hex(&id.hex()), Some(id));
}

#[test]
fn memory_tier_evicts_least_recently_used_under_its_byte_cap() {
    let cache = MemoryCache::new(10_000);
    let keys: Vec<_> = (0..3)
        .map(|b| BlockKey {
            object: object(1),
            block: b,
        })
        .collect();
    cache.insert(keys[0], Bytes::from(vec![0; 4000]));
    cache.insert(keys[1], Bytes::from(vec![1; 4000]));
    assert!(cache.get(&keys[0]).is_some()); // keys[0] is now the most recent
    cache.insert(keys[2], Bytes::from(vec![2; 4000]));
    assert!(cache.contains(&keys[0]));
    assert!(!cache.contains(&keys[1]), "the least recently used block goes first");
    assert_eq!(cache.used(), 8000);
    cache.insert(keys[1], Bytes::from(vec![1; 20_000]));
    assert!(!cache.contains(&keys[1]), "a block larger than the cap is not kept");
}

#[test]
fn disk_tier_survives_a_restart_and_counts_fetched_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, bytes, crc) = block(object(1), 2, 9);
    {
        let cache = BlockCache::new(&disk_config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        cache.insert(key, SHAPE, bytes.clone(), true);
        assert_eq!(cache.stats().disk_bytes, bytes.len() as u64);
    }
    let cache = BlockCache::new(&disk_config(dir.path(), 1 << 20, 1 << 20)).unwrap();
    assert_eq!(
        cache.stats().disk_bytes,
        bytes.len() as u64,
        "accounting is rebuilt from the maps"
    );
    assert_eq!(cache.get(&key, SHAPE, crc), Some(bytes.clone()));
    let status = cache.object_status(&key.object, SHAPE);
    assert_eq!(
        (status.blocks_cached, status.blocks_total, status.bytes_fetched),
        (1, 3, bytes.len() as u64)
    );
}

#[test]
fn a_block_written_from_many_chunks_reads_back_whole() {
    // More chunks than one pwritev takes (1024), some empty, of uneven sizes.
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
    let shape = BlockShape {
        block_size: 64 << 10,
        object_size: 64 << 10,
    };
    let bytes: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7 % 251) as u8).collect();
    let mut parts = Vec::new();
    let mut at = 0;
    for n in 0.. {
        let len = [0, 1, 17, 64, 3][n % 5].min(bytes.len() - at);
        parts.push(Bytes::copy_from_slice(&bytes[at..at + len]));
        at += len;
        if at == bytes.len() {
            break;
        }
    }
    assert!(parts.len() > 2048, "{} parts", parts.len());
    let key = BlockKey {
        object: object(7),
        block: 0,
    };
    cache.insert_disk(key, shape, &parts.into_iter().collect(), true);
    assert_eq!(cache.stats().disk_bytes, bytes.len() as u64);
    let back = cache
        .get(&key, shape, crc32c::crc32c(&bytes))
        .expect("cached and verified");
    assert_eq!(&back[..], &bytes[..]);
}

#[test]
fn disk_tier_keeps_to_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(&disk_config(dir.path(), 0, 10_000)).unwrap();
    let blocks: Vec<_> = (0..3).map(|n| block(object(n), 0, n)).collect();
    for (key, bytes, _) in &blocks {
        cache.insert(*key, SHAPE, bytes.clone(), true);
    }
    assert!(cache.stats().disk_bytes <= 10_000);
    assert_eq!(
        cache.get(&blocks[0].0, SHAPE, blocks[0].2),
        None,
        "oldest block evicted"
    );
    assert_eq!(cache.get(&blocks[2].0, SHAPE, blocks[2].2), Some(blocks[2].1.clone()));
    assert_eq!(cache.object_status(&blocks[0].0.object, SHAPE).blocks_cached, 0);
}

#[test]
fn a_corrupt_disk_block_is_a_miss_never_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (key, bytes, crc) = block(object(4), 0, 5);
    {
        let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
        cache.insert(key, SHAPE, bytes, false);
    }
    let data = dir.path().join("objects").join(format!("{}.data", key.object.hex()));
    let mut content = std::fs::read(&data).unwrap();
    content[10] ^= 0xff;
    std::fs::write(&data, content).unwrap();
    let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
    assert_eq!(cache.get(&key, SHAPE, crc), None);
    assert_eq!(cache.stats().disk_bytes, 0, "the bad block was dropped");
}

#[test]
fn a_second_process_reads_the_disk_tier_but_does_not_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let owner = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
    let reader = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
    assert!(owner.stats().disk_writable);
    assert!(!reader.stats().disk_writable);
    let (key, bytes, crc) = block(object(6), 1, 3);
    owner.insert(key, SHAPE, bytes.clone(), true);
    assert_eq!(reader.get(&key, SHAPE, crc), Some(bytes.clone()));
    let (key2, bytes2, crc2) = block(object(7), 0, 3);
    reader.insert(key2, SHAPE, bytes2, true);
    assert_eq!(owner.get(&key2, SHAPE, crc2), None);
}

#[test]
fn after_a_restart_a_partly_cached_object_takes_more_blocks_and_evicts_them() {
    let dir = tempfile::tempdir().unwrap();
    let id = object(8);
    let blocks: Vec<_> = (0..3).map(|b| block(id, b, b as u8 + 1)).collect();
    {
        let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
        cache.insert(blocks[0].0, SHAPE, blocks[0].1.clone(), true);
    }
    // Quota for two blocks: the third insert must evict the first, on disk too.
    let quota = 2 * 4096;
    {
        let cache = BlockCache::new(&disk_config(dir.path(), 0, quota)).unwrap();
        assert_eq!(cache.get(&blocks[0].0, SHAPE, blocks[0].2), Some(blocks[0].1.clone()));
        cache.insert(blocks[1].0, SHAPE, blocks[1].1.clone(), true);
        cache.insert(blocks[2].0, SHAPE, blocks[2].1.clone(), true);
        assert_eq!(
            cache.object_status(&id, SHAPE).blocks_cached,
            2,
            "written and evicted on disk"
        );
        assert!(cache.stats().disk_bytes <= quota);
    }
    let cache = BlockCache::new(&disk_config(dir.path(), 0, quota)).unwrap();
    assert!(cache.stats().disk_bytes <= quota, "the quota holds across restarts");
    assert_eq!(cache.get(&blocks[2].0, SHAPE, blocks[2].2), Some(blocks[2].1.clone()));
}

fn whole_object(cache: &BlockCache, id: ObjectId) -> Vec<(BlockKey, Bytes, u32)> {
    let blocks: Vec<_> = (0..SHAPE.blocks()).map(|b| block(id, b, b as u8 + 7)).collect();
    for (key, bytes, _) in &blocks {
        cache.insert(*key, SHAPE, bytes.clone(), true);
    }
    blocks
}

fn concatenated(blocks: &[(BlockKey, Bytes, u32)]) -> Vec<u8> {
    blocks.iter().flat_map(|(_, bytes, _)| bytes.to_vec()).collect()
}

#[test]
fn a_complete_copy_needs_every_block_and_each_verified_by_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let id = object(9);
    let blocks = {
        let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
        let (key, bytes, _) = block(id, 0, 7);
        cache.insert(key, SHAPE, bytes, true);
        assert!(cache.complete_copy(&id, SHAPE).is_none(), "blocks 1 and 2 are missing");
        let blocks = whole_object(&cache, id);
        let copy = cache.complete_copy(&id, SHAPE).expect("complete");
        assert!(copy.unverified.is_empty(), "written from verified bytes");
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut &copy.file, &mut content).unwrap();
        assert_eq!(
            content,
            concatenated(&blocks),
            "byte n of the object is byte n of the file"
        );
        blocks
    };
    // After a restart nothing on disk is trusted until read back.
    {
        let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
        let copy = cache.complete_copy(&id, SHAPE).expect("complete");
        assert_eq!(copy.unverified, vec![0, 1, 2]);
        for (key, _, crc) in &blocks {
            assert!(cache.verify_on_disk(key, SHAPE, *crc));
        }
        assert!(cache.complete_copy(&id, SHAPE).unwrap().unverified.is_empty());
        let reader = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
        assert!(
            reader.complete_copy(&id, SHAPE).is_none(),
            "only the owner evicts, so only it can pin"
        );
    }
    // A block gone bad on disk fails verification, is dropped, and the copy is not complete.
    let data = dir.path().join("objects").join(format!("{}.data", id.hex()));
    let mut content = std::fs::read(&data).unwrap();
    content[4096 + 5] ^= 0xff;
    std::fs::write(&data, content).unwrap();
    let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 20)).unwrap();
    assert!(!cache.verify_on_disk(&blocks[1].0, SHAPE, blocks[1].2));
    assert!(cache.complete_copy(&id, SHAPE).is_none());
}

#[test]
fn eviction_leaves_a_pinned_object_whole_until_the_pin_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(&disk_config(dir.path(), 0, SHAPE.object_size)).unwrap();
    let pinned = object(10);
    let blocks = whole_object(&cache, pinned);
    let copy = cache.complete_copy(&pinned, SHAPE).expect("complete");
    let (other, bytes, _) = block(object(11), 0, 1);
    cache.insert(other, SHAPE, bytes.clone(), true);
    assert_eq!(
        cache.object_status(&pinned, SHAPE).blocks_cached,
        3,
        "nothing of it evicted"
    );
    assert!(
        cache.stats().disk_bytes <= SHAPE.object_size,
        "the quota holds by evicting the rest"
    );
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut &copy.file, &mut content).unwrap();
    assert_eq!(content, concatenated(&blocks), "no hole punched under a reader");
    drop(copy);
    cache.insert(other, SHAPE, bytes, true);
    assert_eq!(cache.object_status(&pinned, SHAPE).blocks_cached, 2, "evictable again");
}

#[test]
fn blocks_of_one_object_cached_at_once_are_all_counted_as_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let cache = BlockCache::new(&disk_config(dir.path(), 0, 1 << 30)).unwrap();
    let shape = BlockShape {
        block_size: 4096,
        object_size: 4096 * 2048,
    };
    let id = object(7);
    std::thread::scope(|scope| {
        for thread in 0..8u64 {
            let cache = &cache;
            scope.spawn(move || {
                for block in (thread..shape.blocks()).step_by(8) {
                    let key = BlockKey { object: id, block };
                    cache.insert(key, shape, Bytes::from(vec![thread as u8; 4096]), true);
                }
            });
        }
    });
    let status = cache.object_status(&id, shape);
    assert_eq!(status.blocks_cached, shape.blocks());
    assert_eq!(
        status.bytes_fetched, shape.object_size,
        "no count lost to a concurrent writer"
    );
}

#[test]
fn lookups_and_evictions_are_counted_by_tier() {
    let dir = tempfile::tempdir().unwrap();
    // Room for two 4 KiB blocks in memory and on disk.
    let cache = BlockCache::new(&disk_config(dir.path(), 9_000, 9_000)).unwrap();
    let blocks: Vec<_> = (0..3).map(|n| block(object(n), 0, n)).collect();
    for (key, bytes, _) in &blocks {
        cache.insert(*key, SHAPE, bytes.clone(), true);
    }
    let stats = cache.stats();
    assert_eq!((stats.memory_evictions, stats.disk_evictions), (1, 1), "{stats:?}");
    let (newest, oldest) = (&blocks[2], &blocks[0]);
    assert!(cache.get(&newest.0, SHAPE, newest.2).is_some());
    assert!(cache.get(&oldest.0, SHAPE, oldest.2).is_none());
    let stats = cache.stats();
    assert_eq!(
        (stats.memory_hits, stats.disk_hits, stats.misses),
        (1, 0, 1),
        "{stats:?}"
    );
    // After a restart only the disk tier holds the block: a disk hit.
    drop(cache);
    let reopened = BlockCache::new(&disk_config(dir.path(), 0, 9_000)).unwrap();
    assert!(reopened.get(&newest.0, SHAPE, newest.2).is_some());
    assert_eq!(reopened.stats().disk_hits, 1);
}
