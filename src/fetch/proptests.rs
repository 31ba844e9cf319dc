//! Reads against a reference model: whatever the file size, block size, cache sizes (down to
//! evicting everything) and read pattern, a read that succeeds returns exactly the source bytes,
//! and a read fails only if it needs a block that is corrupt in the store and was never cached.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;

use super::*;
use crate::cache::CacheConfig;
use crate::checksum::BlockChecksums;

#[derive(Debug, Clone)]
struct Case {
    size: usize,
    block_size: u64,
    memory_bytes: u64,
    disk_bytes: Option<u64>,
    corrupt_at: Option<usize>,
    reads: Vec<(u64, u64, bool)>,
}

fn case() -> impl Strategy<Value = Case> {
    (0usize..120_000, prop_oneof![Just(4096u64), Just(8192), Just(65536)]).prop_flat_map(|(size, block_size)| {
        (
            Just(size),
            Just(block_size),
            0u64..40_000,
            proptest::option::of(0u64..60_000),
            proptest::option::of(0..size.max(1)),
            proptest::collection::vec((0..size as u64 + 10, 0u64..40_000, any::<bool>()), 1..25),
        )
            .prop_map(|(size, block_size, memory_bytes, disk_bytes, corrupt_at, reads)| Case {
                size,
                block_size,
                memory_bytes,
                disk_bytes,
                corrupt_at: corrupt_at.filter(|_| size > 0),
                reads,
            })
    })
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let data: Vec<u8> = (0..case.size).map(|i| (i * 131 % 251) as u8).collect();
    let (checksums, _) = BlockChecksums::compute(&data[..], case.block_size).unwrap();
    let disk = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        memory_bytes: case.memory_bytes,
        disk_dir: case.disk_bytes.map(|_| disk.path().to_path_buf()),
        disk_bytes: case.disk_bytes.unwrap_or(0),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let raw = Arc::new(InMemory::new());
        let key = Path::from("volumes/v/files/f");
        let mut stored = data.clone();
        if let Some(at) = case.corrupt_at {
            stored[at] ^= 0x5a;
        }
        raw.put(&key, stored.into()).await.unwrap();
        let store = Store::from_object_store("test://model".parse().unwrap(), raw as Arc<dyn ObjectStore>);
        let object = Arc::new(ObjectHandle::new(
            &store,
            key,
            case.size as u64,
            case.block_size,
            checksums,
        ));
        let fetcher = Arc::new(Fetcher::new(
            store,
            Arc::new(BlockCache::new(&config).unwrap()),
            // Corrupt blocks fail every attempt: no pauses between them here.
            FetchConfig {
                retry_pause: Duration::ZERO,
                ..FetchConfig::default()
            },
        ));
        let reader = FileReader::new(fetcher.clone(), object.clone());
        let bad_block = case.corrupt_at.map(|at| at as u64 / case.block_size);
        for (offset, len, through_reader) in case.reads {
            let got = if through_reader {
                reader.read(offset, len).await.map(|pieces| pieces.to_bytes())
            } else {
                fetcher.read(&object, offset, len).await
            };
            let end = offset.saturating_add(len).min(case.size as u64);
            match got {
                Ok(bytes) => {
                    let want = if offset >= end {
                        &[][..]
                    } else {
                        &data[offset as usize..end as usize]
                    };
                    prop_assert_eq!(&bytes[..], want, "read {}+{}", offset, len);
                }
                Err(e) => {
                    let needed = object.blocks_for(offset..end);
                    prop_assert!(
                        bad_block.is_some_and(|b| needed.contains(&b)),
                        "read {}+{} failed without needing the corrupt block: {}",
                        offset,
                        len,
                        e
                    );
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn reads_match_the_source_or_fail_only_on_corrupt_blocks(case in case()) {
        run(case)?;
    }
}
