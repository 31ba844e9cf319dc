use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::{BlockCache, BlockKey, CacheConfig};
use crate::catalog::{self, Selector};
use crate::fetch::{FetchConfig, Fetcher};
use crate::fs::LazyFs;
use crate::index::Index;
use crate::names::VolumeId;
use crate::publish::{self, NoProgress, PublishOptions};
use crate::store::testing::GetCounters;
use crate::store::{Store, StoreConfig};
use crate::view::{Placement, View, VolumeView};

const BLOCK: u64 = 64 << 10;

struct Fixture {
    fs: Arc<LazyFs>,
    gets: Arc<GetCounters>,
    sizes: Vec<u64>,
    _dir: tempfile::TempDir,
}

/// A mount of one volume holding a file of each size, published with 64 KiB blocks.
async fn fixture(name: &str, sizes: &[u64]) -> Fixture {
    let url = format!("test://hydrate-{name}");
    let store = Store::open(&url.parse().unwrap(), &StoreConfig::default()).unwrap();
    let index = Arc::new(Index::open_in_memory().unwrap());
    let dir = tempfile::tempdir().unwrap();
    for (i, size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*size).map(|n| (n * 7 + i as u64) as u8).collect();
        std::fs::write(dir.path().join(format!("f{i}.data")), bytes).unwrap();
    }
    let volume = VolumeId::parse("kv/hydrate").unwrap();
    let options = PublishOptions {
        block_size: BLOCK,
        ..Default::default()
    };
    publish::publish(&store, &index, dir.path(), &volume, &options, &NoProgress)
        .await
        .unwrap();
    let (manifest, snapshot) = catalog::resolve(&store, &index, &volume, &Selector::Latest)
        .await
        .unwrap();
    let (counted, gets) = crate::store::testing::counted(&store);
    let cache = Arc::new(BlockCache::new(&CacheConfig::default()).unwrap());
    let fetcher = Arc::new(Fetcher::new(counted, cache, FetchConfig::default()));
    let views = vec![VolumeView {
        volume,
        manifest,
        snapshot,
        store: None,
        placement: Placement::InVolumeFolder,
        shown_as: None,
    }];
    Fixture {
        fs: Arc::new(LazyFs::new(
            Arc::new(View::new(index, fetcher, views, None).unwrap()),
            crate::access::Access::private_to(0, 0),
        )),
        gets,
        sizes: sizes.to_vec(),
        _dir: dir,
    }
}

impl Fixture {
    fn total(&self) -> u64 {
        self.sizes.iter().sum()
    }

    fn all_cached(&self) -> bool {
        self.fs.view().files().into_iter().all(|file| {
            let object = self.fs.view().object(file.ino).unwrap();
            (0..object.shape.blocks()).all(|block| {
                self.fs.view().fetcher().cache().contains(&BlockKey {
                    object: object.id,
                    block,
                })
            })
        })
    }
}

async fn until_final(hydration: &Hydration) -> HydrationStatus {
    for _ in 0..3000 {
        let status = hydration.status();
        if status.state.is_final() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("hydration did not end: {:?}", hydration.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_block_is_fetched_once_and_progress_adds_up() {
    let f = fixture("once", &[0, 1, BLOCK - 1, 3 * BLOCK + 5, 20 << 20]).await;
    // A reader got there first: its block is cached and must not be fetched again.
    let ino = f.fs.view().files()[3].ino;
    let handle = f.fs.open(ino, false).unwrap();
    f.fs.read(handle, BLOCK, 10).await.unwrap();
    let read_before = f.gets.bytes();
    assert_eq!(read_before, BLOCK);

    let hydration = Hydration::start(f.fs.view().clone(), HydrateOptions::default());
    let status = until_final(&hydration).await;
    assert_eq!(status.state, HydrationState::Completed, "{status:?}");
    assert_eq!((status.bytes_done, status.bytes_total), (f.total(), f.total()));
    assert_eq!((status.files_done, status.files_total), (5, 5));
    assert_eq!(status.bytes_fetched, f.total() - BLOCK);
    // The reader's block sat between missing ones: it is fetched again inside the GET that
    // bridges it (one GET instead of two), and no block is fetched twice otherwise.
    assert_eq!(f.gets.bytes(), f.total() + BLOCK, "a block was fetched twice");
    assert!(f.all_cached());

    // Again (as after a restart with the cache kept): nothing left to fetch.
    let again = Hydration::start(f.fs.view().clone(), HydrateOptions::default());
    let status = until_final(&again).await;
    assert_eq!(
        (status.state, status.bytes_done, status.bytes_fetched),
        (HydrationState::Completed, f.total(), 0)
    );
    assert_eq!(f.gets.bytes(), f.total() + BLOCK, "nothing fetched the second time");
}

#[test]
fn beside_reads_a_process_waits_for_one_piece_runs_and_the_next_waits_its_gap() {
    assert!(may_start_beside_demand(0, None, false), "the first piece");
    assert!(!may_start_beside_demand(1, None, false), "one is running");
    assert!(
        !may_start_beside_demand(0, Some(DEMAND_PIECE_GAP / 2), false),
        "too soon after the last"
    );
    assert!(may_start_beside_demand(0, Some(DEMAND_PIECE_GAP), false));
    assert!(!may_start_beside_demand(1, Some(DEMAND_PIECE_GAP * 3), false));
    // A deadline that needs more than a piece per gap keeps one piece in flight, without the gap.
    assert!(may_start_beside_demand(0, Some(Duration::ZERO), true));
    assert!(!may_start_beside_demand(1, Some(Duration::ZERO), true));
    let now_ms = crate::time::now_ms();
    let options = |deadline_ms| HydrateOptions {
        bandwidth: None,
        deadline_ms,
    };
    assert!(!deadline_needs_more_than_gaps(&options(None), 1 << 40));
    assert!(deadline_needs_more_than_gaps(&options(Some(now_ms + 10_000)), 1 << 30));
    assert!(!deadline_needs_more_than_gaps(
        &options(Some(now_ms + 100_000)),
        1 << 20
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_never_stop_slow_hydration_down_but_never_stall_it() {
    let f = fixture("beside", &[24 << 20]).await;
    let fetcher = f.fs.view().fetcher().clone();
    let reading = fetcher.demand_for_tests();
    let started = Instant::now();
    let hydration = Hydration::start(f.fs.view().clone(), HydrateOptions::default());
    let status = until_final(&hydration).await;
    let took = started.elapsed();
    drop(reading);
    assert_eq!(status.state, HydrationState::Completed, "{status:?}");
    assert!(f.all_cached());
    // Three 8 MiB pieces, each started a gap after the one before.
    assert!(took >= DEMAND_PIECE_GAP * 2, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bandwidth_cap_holds_the_rate_down() {
    let f = fixture("cap", &[24 << 20]).await;
    let started = Instant::now();
    let options = HydrateOptions {
        bandwidth: Some(16 << 20),
        deadline_ms: None,
    };
    let status = until_final(&Hydration::start(f.fs.view().clone(), options)).await;
    assert_eq!(status.state, HydrationState::Completed);
    // Three 8 MiB pieces at 16 MiB/s: the last may start no sooner than a second in.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_fetching_until_resumed_and_cancel_ends_it() {
    let f = fixture("pause", &[32 << 20]).await;
    let options = HydrateOptions {
        bandwidth: Some(32 << 20),
        deadline_ms: None,
    };
    let hydration = Hydration::start(f.fs.view().clone(), options.clone());
    hydration.pause();
    assert_eq!(hydration.state(), HydrationState::Paused);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = f.gets.bytes();
    assert!(
        paused_at <= 8 << 20,
        "at most the piece in flight when paused: {paused_at}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.gets.bytes(), paused_at, "fetched while paused");
    hydration.resume();
    let status = until_final(&hydration).await;
    assert_eq!((status.state, status.bytes_done), (HydrationState::Completed, 32 << 20));

    let g = fixture("cancel", &[32 << 20]).await;
    let slow = HydrateOptions {
        bandwidth: Some(4 << 20),
        deadline_ms: None,
    };
    let hydration = Hydration::start(g.fs.view().clone(), slow);
    tokio::time::sleep(Duration::from_millis(100)).await;
    hydration.cancel();
    assert_eq!(hydration.state(), HydrationState::Cancelled);
    let at_cancel = g.gets.bytes();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(g.gets.bytes(), at_cancel, "fetched after cancel");
    assert!(at_cancel < 32 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_raises_the_rate_and_a_passed_one_is_reported() {
    let f = fixture("deadline", &[16 << 20]).await;
    let started = Instant::now();
    // At the cap alone this would take 16 s; the deadline asks for it within 3 s.
    let options = HydrateOptions {
        bandwidth: Some(1 << 20),
        deadline_ms: Some(crate::time::now_ms() + 3000),
    };
    let status = until_final(&Hydration::start(f.fs.view().clone(), options)).await;
    assert_eq!(status.state, HydrationState::Completed);
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    assert!(!status.deadline_at_risk);

    let g = fixture("late", &[16 << 20]).await;
    let options = HydrateOptions {
        bandwidth: Some(1 << 20),
        deadline_ms: Some(crate::time::now_ms() - 1000),
    };
    let hydration = Hydration::start(g.fs.view().clone(), options);
    hydration.pause();
    let status = hydration.status();
    assert!(status.deadline_at_risk, "{status:?}");
    assert_eq!(status.required_rate, Some(f64::INFINITY));
    hydration.cancel();
}
