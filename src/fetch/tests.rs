use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use super::*;
use crate::cache::CacheConfig;
use crate::checksum::BlockChecksums;
use crate::store::testing::{CountingStore, GetCounters};

const BLOCK: u64 = 4096;

struct Fixture {
    fetcher: Arc<Fetcher>,
    object: Arc<ObjectHandle>,
    data: Vec<u8>,
    gets: Arc<GetCounters>,
    raw: Arc<InMemory>,
}

async fn fixture(size: usize, config: FetchConfig) -> Fixture {
    fixture_with_cache(size, config, CacheConfig::default()).await
}

async fn fixture_with_cache(size: usize, config: FetchConfig, cache: CacheConfig) -> Fixture {
    fixture_over(size, config, cache, |raw| raw).await
}

/// A fixture whose store is `wrap` of the in-memory one, counted above the wrapper.
async fn fixture_over(
    size: usize,
    config: FetchConfig,
    cache: CacheConfig,
    wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
) -> Fixture {
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
    let raw = Arc::new(InMemory::new());
    let key = Path::from("volumes/v/files/f");
    raw.put(&key, data.clone().into()).await.unwrap();
    let (counting, gets) = CountingStore::new(wrap(raw.clone() as Arc<dyn ObjectStore>));
    let store = Store::from_object_store("test://fetch-test".parse().unwrap(), Arc::new(counting));
    let (checksums, _) = BlockChecksums::compute(&data[..], BLOCK).unwrap();
    let object = Arc::new(ObjectHandle::new(&store, key, size as u64, BLOCK, checksums));
    let cache = Arc::new(BlockCache::new(&cache).unwrap());
    Fixture {
        fetcher: Arc::new(Fetcher::new(store, cache, config)),
        object,
        data,
        gets,
        raw,
    }
}

/// `data` as one object behind a store that injects `plan`'s faults, read by a fetcher with
/// `config` and a memory-only cache: the fetcher, the object, the faults injected and their switch.
async fn faulty_fixture(
    data: &[u8],
    plan: crate::store::testing::FaultPlan,
    config: FetchConfig,
) -> (
    Fetcher,
    ObjectHandle,
    Arc<crate::store::testing::Faults>,
    crate::store::testing::FaultSwitch,
) {
    let raw = Arc::new(InMemory::new());
    let key = Path::from("volumes/v/files/f");
    raw.put(&key, data.to_vec().into()).await.unwrap();
    let (faulty, faults, switch) = crate::store::testing::FaultyStore::new(raw, plan);
    let store = Store::from_object_store("test://faulty-fetch".parse().unwrap(), Arc::new(faulty));
    let (checksums, _) = BlockChecksums::compute(data, BLOCK).unwrap();
    let object = ObjectHandle::new(&store, key, data.len() as u64, BLOCK, checksums);
    let cache = Arc::new(BlockCache::new(&CacheConfig::default()).unwrap());
    (Fetcher::new(store, cache, config), object, faults, switch)
}

#[tokio::test]
async fn reads_any_range_correctly() {
    let f = fixture(5 * BLOCK as usize + 100, FetchConfig::default()).await;
    let size = f.data.len() as u64;
    for (offset, len) in [
        (0, 1),
        (0, size),
        (BLOCK - 1, 2),
        (BLOCK, BLOCK),
        (size - 1, 10),
        (size, 5),
        (3, 3 * BLOCK),
    ] {
        let got = f.fetcher.read(&f.object, offset, len).await.unwrap();
        let end = (offset + len).min(size) as usize;
        assert_eq!(&got[..], &f.data[offset as usize..end], "offset {offset} len {len}");
    }
}

#[tokio::test]
async fn a_random_read_fetches_only_its_block_and_a_reread_fetches_nothing() {
    let f = fixture(64 * BLOCK as usize, FetchConfig::default()).await;
    f.fetcher.read(&f.object, 20 * BLOCK + 10, 100).await.unwrap();
    assert_eq!((f.gets.requests(), f.gets.bytes()), (1, BLOCK));
    f.fetcher.read(&f.object, 20 * BLOCK + 500, 100).await.unwrap();
    assert_eq!((f.gets.requests(), f.gets.bytes()), (1, BLOCK));
}

#[tokio::test]
async fn missing_adjacent_blocks_are_coalesced_into_bounded_requests() {
    let config = FetchConfig {
        max_request_bytes: 4 * BLOCK,
        ..Default::default()
    };
    let f = fixture(10 * BLOCK as usize, config).await;
    f.fetcher.read(&f.object, 0, 10 * BLOCK).await.unwrap();
    assert_eq!((f.gets.requests(), f.gets.bytes()), (3, 10 * BLOCK));
    assert_eq!(
        coalesce(vec![1, 2, 3, 7, 8], BLOCK, 2 * BLOCK, 0),
        vec![1..3, 3..4, 7..9]
    );
    // Bridging steps over gaps up to its size, never past the request size.
    assert_eq!(
        coalesce(vec![1, 2, 5, 9], BLOCK, 8 * BLOCK, 2 * BLOCK),
        vec![1..6, 9..10]
    );
    assert_eq!(coalesce(vec![1, 3, 5, 7], BLOCK, 4 * BLOCK, BLOCK), vec![1..4, 5..8]);
}

#[tokio::test]
async fn background_fetches_step_over_small_cached_gaps_and_demand_reads_do_not() {
    let config = FetchConfig {
        bridge_bytes: 2 * BLOCK,
        ..Default::default()
    };
    let f = fixture(32 * BLOCK as usize, config).await;
    f.fetcher.read(&f.object, BLOCK, 10).await.unwrap();
    f.fetcher.read(&f.object, 4 * BLOCK, 10).await.unwrap();
    f.fetcher.read(&f.object, 10 * BLOCK, 3 * BLOCK).await.unwrap();
    assert_eq!((f.gets.requests(), f.gets.bytes()), (3, 5 * BLOCK));
    // The cached blocks 1 and 4 are fetched again inside one GET (0..10); the gap of three
    // (10..13) is wider than the bridge, so 13..32 is a GET of its own.
    let fetched = f.fetcher.fetch_in_background(&f.object, 0..32).await.unwrap();
    assert_eq!(fetched, 27 * BLOCK, "bytes counted are the blocks that were missing");
    assert_eq!((f.gets.requests(), f.gets.bytes()), (5, 5 * BLOCK + 29 * BLOCK));
    let all = f.fetcher.read(&f.object, 0, 32 * BLOCK).await.unwrap();
    assert!(all == f.data, "every block reads back exactly");
    assert_eq!(f.gets.requests(), 5, "all of it is cached");

    // A read a process waits for fetches only what it misses, in as many GETs as it takes.
    let g = fixture(16 * BLOCK as usize, FetchConfig::default()).await;
    g.fetcher.read(&g.object, 5 * BLOCK, 10).await.unwrap();
    g.fetcher.read(&g.object, 0, 16 * BLOCK).await.unwrap();
    assert_eq!((g.gets.requests(), g.gets.bytes()), (3, 16 * BLOCK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_one_block_fetch_it_once() {
    let f = fixture(8 * BLOCK as usize, FetchConfig::default()).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (fetcher, object) = (f.fetcher.clone(), f.object.clone());
            tokio::spawn(async move { fetcher.read(&object, 3 * BLOCK + i, 10).await.unwrap() })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let start = 3 * BLOCK as usize + i;
        assert_eq!(&task.await.unwrap()[..], &f.data[start..start + 10]);
    }
    assert_eq!(f.gets.bytes(), BLOCK, "one block fetched once for 16 readers");
}

#[tokio::test]
async fn changed_bytes_in_the_store_are_an_error_not_data() {
    let f = fixture(4 * BLOCK as usize, FetchConfig::default()).await;
    let mut changed = f.data.clone();
    changed[2 * BLOCK as usize + 5] ^= 1;
    f.raw.put(&f.object.key, changed.into()).await.unwrap();
    let err = f.fetcher.read(&f.object, 2 * BLOCK, 10).await.unwrap_err();
    assert!(matches!(err.root(), FetchError::Checksum { block: 2, .. }), "{err}");
    // Fetched again on every attempt before the read failed.
    assert_eq!(f.fetcher.stats().checksum_failures, u64::from(ATTEMPTS));
    // Untouched blocks still read fine.
    assert_eq!(&f.fetcher.read(&f.object, 0, 10).await.unwrap()[..], &f.data[..10]);
}

#[tokio::test]
async fn a_missing_object_is_a_not_found_error() {
    let f = fixture(BLOCK as usize, FetchConfig::default()).await;
    f.raw.delete(&f.object.key).await.unwrap();
    let err = f.fetcher.read(&f.object, 0, 1).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_prefetch_ahead_and_random_reads_do_not() {
    let config = FetchConfig {
        readahead_initial: 4 * BLOCK,
        readahead_max: 16 * BLOCK,
        ..Default::default()
    };
    let f = fixture(256 * BLOCK as usize, config).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    reader.read(0, BLOCK).await.unwrap();
    reader.read(BLOCK, BLOCK).await.unwrap();
    // Wait for the background readahead of the next window to land in the cache.
    for _ in 0..100 {
        if f.fetcher.cache().contains(&BlockKey {
            object: f.object.id,
            block: 5,
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(f.fetcher.cache().contains(&BlockKey {
        object: f.object.id,
        block: 5
    }));
    let before = f.gets.bytes();
    assert_eq!(
        &reader.read(2 * BLOCK, 4 * BLOCK).await.unwrap().to_bytes()[..],
        &f.data[2 * BLOCK as usize..6 * BLOCK as usize]
    );

    let random = FileReader::new(f.fetcher.clone(), f.object.clone());
    random.read(200 * BLOCK, 100).await.unwrap();
    random.read(100 * BLOCK, 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!f.fetcher.cache().contains(&BlockKey {
        object: f.object.id,
        block: 201
    }));
    assert!(f.gets.bytes() >= before + 2 * BLOCK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_arrive_slightly_out_of_order_still_count_as_sequential() {
    let config = FetchConfig {
        readahead_initial: 8 * BLOCK,
        ..Default::default()
    };
    let f = fixture(256 * BLOCK as usize, config).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    // The kernel's readahead pieces, delivered by different FUSE threads in another order.
    for block in [0, 2, 1, 3] {
        reader.read(block * BLOCK, BLOCK).await.unwrap();
    }
    let ahead = BlockKey {
        object: f.object.id,
        block: 8,
    };
    for _ in 0..100 {
        if f.fetcher.cache().contains(&ahead) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        f.fetcher.cache().contains(&ahead),
        "readahead ran despite the reordering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_random_reads_that_land_close_fetch_about_what_they_read() {
    let config = FetchConfig {
        readahead_initial: 32 * BLOCK,
        ..Default::default()
    };
    let f = fixture(256 * BLOCK as usize, config).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    // Point lookups: an index block, then a data block three blocks on (near, not contiguous).
    reader.read(100 * BLOCK, BLOCK).await.unwrap();
    reader.read(103 * BLOCK, BLOCK).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fetched = f.gets.bytes() / BLOCK;
    assert!(fetched <= 8, "{fetched} blocks fetched for 2 read (the floor is 32)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbouring_pages_of_lookups_do_not_earn_the_readahead_floor() {
    // The default floor is 1 MiB: 256 of these 4 KiB blocks.
    let f = fixture(4096 * BLOCK as usize, FetchConfig::default()).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    // B-tree lookups as SQLite makes them, a page at a time: an index leaf, then the table leaf
    // allocated right after it, each pair megabytes from the last.
    let pairs = [100, 700, 1300, 1900, 2500, 3100, 3700, 400];
    for at in pairs {
        reader.read(at * BLOCK, BLOCK).await.unwrap();
        reader.read((at + 1) * BLOCK, BLOCK).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (read, fetched) = (2 * pairs.len() as u64, f.gets.bytes() / BLOCK);
    // Each pair may fetch what it read again ahead (the least growth), never the floor.
    assert!(fetched * 2 <= read * 5, "{fetched} blocks fetched for {read} read");
}

#[tokio::test]
async fn bytes_fetched_counts_every_block_handed_on_also_of_a_get_cut_short() {
    use crate::store::testing::{Fault, FaultPlan};

    let size = 256 * BLOCK as usize;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 241) as u8).collect();
    // Half the GETs drop their connection part way: the blocks before the cut reach the reader,
    // and the GET resumed after them fetches only the rest.
    let plan = FaultPlan::mixed(0.5, &[Fault::Reset], Duration::from_millis(1), 0xc0_0e7);
    let config = FetchConfig {
        max_request_bytes: 16 * BLOCK,
        ..Default::default()
    };
    let (fetcher, object, faults, _) = faulty_fixture(&data, plan, config).await;
    let got = fetcher.read(&object, 0, size as u64).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    assert!(faults.injected().count(Fault::Reset) > 0, "no GET was cut short");
    // Counted when handed on: at once, and each block once, whichever GET brought it.
    assert_eq!(fetcher.stats().bytes_fetched, size as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sequential_read_is_fetched_in_large_requests() {
    let config = FetchConfig {
        readahead_initial: 4 * BLOCK,
        readahead_max: 32 * BLOCK,
        max_request_bytes: 8 * BLOCK,
        ..Default::default()
    };
    let f = fixture(256 * BLOCK as usize, config).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    for block in 0..256 {
        let got = reader.read(block * BLOCK, BLOCK).await.unwrap().to_bytes();
        assert_eq!(
            &got[..],
            &f.data[(block * BLOCK) as usize..((block + 1) * BLOCK) as usize]
        );
    }
    // Readahead that followed the reader one block at a time would make ~256 one-block GETs.
    let (requests, bytes) = (f.gets.requests(), f.gets.bytes());
    assert!(requests <= 256 / 4, "{requests} GETs for 256 blocks");
    assert!(
        bytes <= 256 * BLOCK + 32 * BLOCK,
        "{bytes} bytes fetched for {} bytes",
        256 * BLOCK
    );
}

#[tokio::test]
async fn a_scan_keeps_its_window_full_one_request_at_a_time() {
    let config = FetchConfig {
        readahead_initial: 4 * BLOCK,
        readahead_max: 64 * BLOCK,
        max_request_bytes: 8 * BLOCK,
        ..Default::default()
    };
    let f = fixture(4096 * BLOCK as usize, config).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    // A run becomes a scan after 8 MiB: 2048 blocks here.
    let (scan, last) = (2048, 3000);
    let mut extensions = Vec::new();
    for block in 0..last {
        if let Some(ahead) = reader.plan(block * BLOCK, BLOCK) {
            // However it is extended, a run never has more than its window ahead.
            assert!(ahead.end <= (block + 1 + 64) * BLOCK, "{ahead:?} after block {block}");
            if block >= scan {
                extensions.push(ahead);
            }
        }
    }
    // Half a window at once would be 32-block extensions every 32 blocks: GETs in waves.
    assert!(
        extensions.iter().all(|ahead| ahead.end - ahead.start == 8 * BLOCK),
        "{extensions:?}"
    );
    let expected = (last - scan) / 8;
    assert!(
        extensions.len() as u64 >= expected - 1,
        "{} extensions for {} blocks read",
        extensions.len(),
        last - scan
    );
    for pair in extensions.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "contiguous: {pair:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_never_pushes_out_what_it_fetched_before_reading_it() {
    // A 32 MiB window against a 16 MiB memory tier and no disk tier: blocks fetched ahead and
    // pushed out before the reader came to them would be fetched again. The window must fit the
    // tier, and blocks already read must go first (a window within the tier but over half of it
    // still lost its oldest blocks to the ones just read, in LRU order).
    let config = FetchConfig {
        readahead_initial: 64 * BLOCK,
        readahead_max: 32 << 20,
        max_request_bytes: 64 * BLOCK,
        ..Default::default()
    };
    let cache = CacheConfig {
        memory_bytes: 16 << 20,
        disk_dir: None,
        disk_bytes: 0,
    };
    let size = 96u64 << 20;
    let f = fixture_with_cache(size as usize, config, cache).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    let read = 32 * BLOCK;
    for offset in (0..size).step_by(read as usize) {
        let got = reader.read(offset, read).await.unwrap().to_bytes();
        assert!(
            got[..] == f.data[offset as usize..(offset + read) as usize],
            "bytes at {offset}"
        );
    }
    let fetched = f.gets.bytes();
    assert!(fetched <= size + size / 50, "{fetched} bytes fetched to read {size}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_that_stop_short_shrink_readahead_to_about_what_they_read() {
    let config = FetchConfig {
        readahead_initial: 32 * BLOCK,
        readahead_max: 1024 * BLOCK,
        max_request_bytes: 8 * BLOCK,
        ..Default::default()
    };
    let f = fixture(6144 * BLOCK as usize, config).await;
    let reader = FileReader::new(f.fetcher.clone(), f.object.clone());
    // An engine reading column chunks: 32 blocks each in reads of 4, further apart than a skip.
    let mut fetched_by_chunk = Vec::new();
    for chunk in 0..12u64 {
        let start = chunk * 400 * BLOCK;
        let before = f.gets.bytes();
        for piece in 0..8 {
            let offset = start + piece * 4 * BLOCK;
            let got = reader.read(offset, 4 * BLOCK).await.unwrap().to_bytes();
            assert_eq!(&got[..], &f.data[offset as usize..(offset + 4 * BLOCK) as usize]);
        }
        // Let this chunk's readahead land before the next chunk starts.
        tokio::time::sleep(Duration::from_millis(30)).await;
        fetched_by_chunk.push((f.gets.bytes() - before) / BLOCK);
    }
    let read = 12 * 32;
    let fetched: u64 = fetched_by_chunk.iter().sum();
    assert!(
        fetched <= 2 * read,
        "{fetched} blocks fetched for {read} read: {fetched_by_chunk:?}"
    );
    let last = *fetched_by_chunk.last().unwrap();
    assert!(last <= 2 * 32, "a chunk after adapting fetched {last} blocks for 32");

    // The same reader on a long scan grows its window again: large GETs, little overshoot.
    let before = (f.gets.requests(), f.gets.bytes());
    for block in 5000..6024 {
        reader.read(block * BLOCK, BLOCK).await.unwrap();
    }
    let (requests, bytes) = (f.gets.requests() - before.0, f.gets.bytes() - before.1);
    assert!(requests <= 1024 / 6, "{requests} GETs for a 1024-block scan");
    // What runs past the scan's end is its last window's unread part: at most a quarter here.
    assert!(bytes <= 1280 * BLOCK, "{} blocks fetched for 1024", bytes / BLOCK);
}

#[tokio::test]
async fn demand_reads_are_visible_to_background_work_for_a_while() {
    let f = fixture(16 * BLOCK as usize, FetchConfig::default()).await;
    let quiet = Duration::from_millis(100);
    assert!(!f.fetcher.demand_active(quiet), "no read yet");
    f.fetcher.read(&f.object, 0, 10).await.unwrap();
    assert!(f.fetcher.demand_active(quiet), "a read just fetched");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!f.fetcher.demand_active(quiet), "quiet for longer than {quiet:?}");
    // Hits need no store, so they do not hold background work back.
    f.fetcher.read(&f.object, 0, 10).await.unwrap();
    assert!(!f.fetcher.demand_active(quiet));
    f.fetcher.fetch_in_background(&f.object, 4..8).await.unwrap();
    assert!(!f.fetcher.demand_active(quiet), "background fetches are not demand");
}

#[tokio::test]
async fn a_block_cached_between_look_and_claim_is_not_fetched_again() {
    let f = fixture(8 * BLOCK as usize, FetchConfig::default()).await;
    // Another fetch lands block 2 in the cache after this caller saw it missing, before its claim.
    let block2 = Bytes::copy_from_slice(&f.data[2 * BLOCK as usize..3 * BLOCK as usize]);
    let key = BlockKey {
        object: f.object.id,
        block: 2,
    };
    f.fetcher.cache().insert(key, f.object.shape, block2, true);
    let claim = f.fetcher.inflight.claim(f.object.id, &[1, 2, 3]);
    let fetched = f.fetcher.fetch_claimed(&f.object, &claim, false).await.unwrap();
    assert_eq!(fetched, 2 * BLOCK, "only blocks 1 and 3 go to the store");
    assert_eq!(f.gets.bytes(), 2 * BLOCK);
    let mut answered: Vec<u64> = claim.fetched().into_iter().map(|(block, _)| block).collect();
    answered.sort();
    assert_eq!(answered, [1, 2, 3], "waiters on block 2 get it from the cache");
}

#[tokio::test]
async fn readahead_holds_no_block_that_another_fetch_led() {
    // No memory tier: every live block buffer is held by the fetcher's own bookkeeping.
    let cache = CacheConfig {
        memory_bytes: 0,
        disk_dir: None,
        disk_bytes: 0,
    };
    let config = FetchConfig {
        max_request_bytes: BLOCK,
        budget: BufferBudget::new(8 * BLOCK),
        ..FetchConfig::default()
    };
    let f = fixture_with_cache(16 * BLOCK as usize, config, cache).await;
    let buffers = f.fetcher.config().buffers.clone();
    let reader = f.fetcher.inflight.claim(f.object.id, &[0, 1, 2, 3]);
    // With the whole budget taken, readahead's own GETs wait and its claim stays alive.
    let everything = f.fetcher.config().budget.reserve(8 * BLOCK, false).await;
    f.fetcher.prefetch(&f.object, 0..8);
    for block in 0..4 {
        reader.complete(block, Ok(buffers.take(BLOCK as usize).freeze()));
    }
    drop(reader);
    assert_eq!(
        buffers.stats().live_bytes,
        0,
        "the waiting readahead must not keep blocks the reader fetched"
    );
    drop(everything);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.gets.bytes() < 4 * BLOCK || buffers.stats().live_bytes > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "readahead did not finish: {:?}",
            buffers.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A pinned object in a memory store, read by fresh fetchers (as restarted processes would be)
/// over one disk cache folder.
struct PinnedFixture {
    data: Vec<u8>,
    key: Path,
    etag: String,
    store: Store,
    gets: Arc<GetCounters>,
    cache_dir: tempfile::TempDir,
}

impl PinnedFixture {
    async fn new(size: usize) -> PinnedFixture {
        let data: Vec<u8> = (0..size).map(|i| (i * 11 % 251) as u8).collect();
        let raw = Arc::new(InMemory::new());
        let key = Path::from("backup/me-1-big-Data.db");
        let etag = raw.put(&key, data.clone().into()).await.unwrap().e_tag.unwrap();
        let (counting, gets) = CountingStore::new(raw as Arc<dyn ObjectStore>);
        let store = Store::from_object_store("test://pinned-test".parse().unwrap(), Arc::new(counting));
        PinnedFixture {
            data,
            key,
            etag,
            store,
            gets,
            cache_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Reads the whole object through a new fetcher; the bytes fetched from the store to do so.
    async fn read_all(&self, memory: Option<Arc<dyn ChecksumRecall>>) -> u64 {
        let config = CacheConfig {
            disk_dir: Some(self.cache_dir.path().to_path_buf()),
            ..Default::default()
        };
        let mut fetcher = Fetcher::new(
            self.store.clone(),
            Arc::new(BlockCache::new(&config).unwrap()),
            FetchConfig::default(),
        );
        if let Some(memory) = memory {
            fetcher = fetcher.with_recall(memory);
        }
        let pin = Integrity::Pinned(crate::checksum::Pinned::new(&self.etag));
        let size = self.data.len() as u64;
        let object = fetcher.handle(&self.store, self.key.clone(), size, BLOCK, pin);
        let before = self.gets.bytes();
        let got = fetcher.read(&object, 0, size).await.unwrap();
        assert!(got[..] == self.data[..], "a pinned read returned other bytes");
        self.gets.bytes() - before
    }
}

#[tokio::test]
async fn checksums_learned_of_a_pinned_object_outlive_the_fetcher_that_learned_them() {
    let f = PinnedFixture::new(10 * BLOCK as usize + 7).await;
    let size = f.data.len() as u64;
    // Without a memory, a new process cannot check the cached blocks: it fetches them again.
    assert_eq!(f.read_all(None).await, size);
    assert_eq!(f.read_all(None).await, size);
    let index: Arc<dyn ChecksumRecall> = Arc::new(crate::index::Index::open_in_memory().unwrap());
    assert_eq!(f.read_all(Some(index.clone())).await, size, "learned once");
    assert_eq!(
        f.read_all(Some(index.clone())).await,
        0,
        "recalled: the cached copy is checked, not refetched"
    );
}

/// The index as checksum memory, counting the calls that write to it.
#[derive(Debug)]
struct CountedMemory {
    index: crate::index::Index,
    remembered: std::sync::atomic::AtomicUsize,
}

impl ChecksumRecall for CountedMemory {
    fn recall(&self, object: &ObjectId, block_size: u64) -> Result<Vec<(u64, u32)>, RecallError> {
        self.index.recall(object, block_size)
    }

    fn remember(&self, object: &ObjectId, block_size: u64, learned: &[(u64, u32)]) -> Result<(), RecallError> {
        self.remembered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.index.remember(object, block_size, learned)
    }
}

#[tokio::test]
async fn a_recalled_checksum_still_refuses_a_torn_cached_block() {
    let f = PinnedFixture::new(4 * BLOCK as usize).await;
    let memory = Arc::new(CountedMemory {
        index: crate::index::Index::open_in_memory().unwrap(),
        remembered: Default::default(),
    });
    f.read_all(Some(memory.clone())).await;
    let writes = memory.remembered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(writes > 0);
    let data_file = std::fs::read_dir(f.cache_dir.path().join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "data"))
        .unwrap();
    let mut bytes = std::fs::read(&data_file).unwrap();
    bytes[BLOCK as usize + 3] ^= 0xff;
    std::fs::write(&data_file, bytes).unwrap();
    assert_eq!(
        f.read_all(Some(memory.clone())).await,
        BLOCK,
        "only the torn block is fetched again"
    );
    assert_eq!(
        memory.remembered.load(std::sync::atomic::Ordering::Relaxed),
        writes,
        "a refetched block whose checksum was known is not remembered again"
    );
}

/// Reads through a store where 30% of GETs are faulty (every kind mixed): a read either returns
/// exactly the object's bytes or fails, never other bytes; once the faults stop, every read
/// succeeds through the same fetcher, with nothing remembered of the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_gets_never_become_wrong_bytes_and_leave_nothing_behind() {
    use crate::store::testing::{Fault, FaultPlan};

    let size = 512 * BLOCK as usize;
    let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
    let plan = FaultPlan::mixed(0.3, &Fault::ALL, Duration::from_millis(20), 0xfa17);
    let config = FetchConfig {
        max_request_bytes: 8 * BLOCK,
        ..Default::default()
    };
    let (fetcher, object, faults, switch) = faulty_fixture(&data, plan, config).await;
    let injected = faults.injected();

    let mut state = 0x5eed_u64;
    let mut next = move |below: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % below
    };
    let (mut good, mut failed) = (0, 0);
    for _ in 0..300 {
        let (offset, len) = (next(size as u64 - 1), 1 + next(6 * BLOCK));
        let len = len.min(size as u64 - offset);
        match fetcher.read(&object, offset, len).await {
            Ok(got) => {
                assert_eq!(
                    &got[..],
                    &data[offset as usize..(offset + len) as usize],
                    "wrong bytes at {offset}+{len}"
                );
                good += 1;
            }
            Err(_) => failed += 1,
        }
    }
    eprintln!(
        "{good} reads good, {failed} failed; {} faults in {} GETs",
        injected.total(),
        injected.gets()
    );
    assert!(injected.total() >= 30, "only {} faults injected", injected.total());
    assert!(good > 0 && good + failed == 300, "{good} good, {failed} failed");

    switch.set(false);
    for block in 0..512 {
        let got = fetcher.read(&object, block * BLOCK, BLOCK).await.unwrap();
        assert_eq!(
            &got[..],
            &data[(block * BLOCK) as usize..((block + 1) * BLOCK) as usize]
        );
    }
}

/// A GET that stalls (before its answer or in the middle of its body) is abandoned after the
/// stall timeout and fetched again, so a read costs about that, not the whole request deadline;
/// when every GET stalls, the read fails after its attempts, still long before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_get_is_given_up_after_the_stall_timeout_not_the_deadline() {
    use crate::store::testing::{Fault, FaultPlan, Faults};

    let size = 64 * BLOCK as usize;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
    let kinds = [Fault::StallFirstByte, Fault::StallMidBody];
    let over = |share: f64, seed: u64| {
        let data = data.clone();
        async move {
            let plan = FaultPlan::mixed(share, &kinds, Duration::from_secs(20), seed);
            let config = FetchConfig {
                max_request_bytes: 8 * BLOCK,
                stall_timeout: Duration::from_millis(100),
                retry_pause: Duration::from_millis(5),
                ..Default::default()
            };
            let (fetcher, object, faults, _) = faulty_fixture(&data, plan, config).await;
            (fetcher, object, faults)
        }
    };
    let stalls = |faults: &Faults| faults.injected().total();

    // Every GET stalls: the read fails after its attempts' timeouts, not after 20 s or 30 s.
    let (fetcher, object, faults) = over(1.0, 5).await;
    let started = std::time::Instant::now();
    let err = fetcher.read(&object, 0, 4 * BLOCK).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(stalls(&faults) >= 2, "the GETs really stalled");

    // Half of them stall: every read succeeds with the right bytes, each well within one stall.
    let (fetcher, object, faults) = over(0.5, 6).await;
    for block in (0..64).step_by(4) {
        let started = std::time::Instant::now();
        let got = fetcher.read(&object, block * BLOCK, 4 * BLOCK).await.unwrap();
        assert_eq!(
            &got[..],
            &data[(block * BLOCK) as usize..((block + 4) * BLOCK) as usize]
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "block {block}: {:?}",
            started.elapsed()
        );
    }
    assert!(stalls(&faults) >= 4, "{} stalls", stalls(&faults));
}

#[tokio::test]
async fn a_hydration_fills_the_disk_tier_only_and_a_reader_meanwhile_fetches_its_block_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheConfig {
        disk_dir: Some(dir.path().to_path_buf()),
        ..CacheConfig::default()
    };
    // Every GET waits 200 ms for its first byte, so the reader asks while the hydration's GET
    // has delivered nothing yet, however busy the machine.
    let stalled = |raw| {
        use crate::store::testing::{Fault, FaultPlan, FaultyStore};
        let plan = FaultPlan::mixed(1.0, &[Fault::StallFirstByte], Duration::from_millis(200), 1);
        Arc::new(FaultyStore::new(raw, plan).0) as Arc<dyn ObjectStore>
    };
    let f = fixture_over(64 * BLOCK as usize, FetchConfig::default(), cache, stalled).await;
    let (filled, read) = futures::join!(f.fetcher.hydrate(&f.object, 0..64), async {
        tokio::task::yield_now().await;
        f.fetcher.read(&f.object, 40 * BLOCK, 100).await
    });
    assert_eq!(
        &read.unwrap()[..],
        &f.data[40 * BLOCK as usize..40 * BLOCK as usize + 100]
    );
    filled.unwrap();
    let stats = f.fetcher.cache().stats();
    assert_eq!(stats.disk_bytes, 64 * BLOCK, "every block is on disk");
    assert!(
        stats.memory_bytes <= BLOCK,
        "only a block a reader waited for is in memory: {stats:?}"
    );
    // The reader did not wait for the hydration's GET to reach its block: it fetched it itself.
    assert_eq!(f.gets.bytes(), 65 * BLOCK, "only the read block fetched twice");
    let again = f.fetcher.read(&f.object, 0, 64 * BLOCK).await.unwrap();
    assert!(again[..] == f.data[..]);
    assert_eq!(f.gets.bytes(), 65 * BLOCK, "read back from disk");
}

#[tokio::test]
async fn primed_bytes_that_fail_their_checksum_are_fetched_again_from_the_store() {
    use crate::store::PrimedRead;
    let f = fixture(3 * BLOCK as usize, FetchConfig::default()).await;
    // A stale first-touch pack: the right length, other bytes.
    let stale = bytes::Bytes::from(vec![0u8; 2 * BLOCK as usize]);
    let primed = f.object.store.prime(
        vec![PrimedRead {
            key: f.object.key.clone(),
            range: 0..2 * BLOCK,
            held: Some((stale, None)),
        }],
        1,
    );
    let got = f.fetcher.read(&f.object, 0, 2 * BLOCK).await.unwrap();
    assert_eq!(&got[..], &f.data[..2 * BLOCK as usize]);
    assert!(
        f.fetcher.stats().checksum_failures > 0,
        "the stale bytes were never checked"
    );
    assert!(f.gets.requests() >= 1, "the right bytes came from the store");
    drop(primed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_blocks_go_to_disk_a_batch_at_a_time_while_it_streams() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheConfig {
        disk_dir: Some(dir.path().to_path_buf()),
        ..CacheConfig::default()
    };
    let blocks = 300;
    let f = fixture_with_cache(blocks * BLOCK as usize, FetchConfig::default(), cache).await;
    let key = |block: u64| BlockKey {
        object: f.object.id,
        block,
    };
    let bytes = |block: u64| Bytes::copy_from_slice(&f.data[(block * BLOCK) as usize..((block + 1) * BLOCK) as usize]);
    let mut writes = DiskWrites::new(&f.fetcher, &f.object);
    for block in 0..blocks as u64 {
        writes.add(key(block), bytes(block).into(), None);
    }
    // 1 MiB gathered (256 blocks): their write started before the run ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f.fetcher.cache().contains(&key(255)) {
        assert!(std::time::Instant::now() < deadline, "the first batch was not written");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        !f.fetcher.cache().contains(&key(256)),
        "the rest waits for the run's end"
    );
    writes.finish().await;
    assert!((0..blocks as u64).all(|block| f.fetcher.cache().contains(&key(block))));
    let again = f.fetcher.read(&f.object, 0, blocks as u64 * BLOCK).await.unwrap();
    assert!(again[..] == f.data[..]);
    assert_eq!(f.gets.bytes(), 0, "read back from disk");
}
