//! Warm starts from first-touch profiles. A mount records the blocks first read after it starts
//! ([`crate::fs::FirstTouches`]); they are kept in the store beside the volume's manifests
//! (`volumes/<id>/profiles/first-touch.json`), so every node benefits, and the next mount of any
//! manifest of that volume fetches them first, in that order, on the background lane: an engine
//! opening a database reads the same footers, indexes and filters every time.
//!
//! - A profile names files by path and bytes by range, not blocks, so it applies to later
//!   manifests whatever their block size; files gone since are skipped.
//! - It also keeps the GETs its replay makes (object key and range): a mount starts them as soon
//!   as the profile is read, a round trip before its manifest says which blocks to fetch and how
//!   to check them ([`prime`]), and the replay then finds their bytes on their way.
//! - Profiles are hints: one that is missing, unreadable or malformed costs the warm start, never
//!   the mount; saving one needs write access to the store and is skipped (with a warning) without.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use futures::stream::{FuturesOrdered, StreamExt};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::fetch::ObjectHandle;
use crate::fs::FirstTouches;
use crate::names::VolumeId;
use crate::store::{layout, Primed, PrimedRead, Scheme, Store, StoreError};
use crate::view::{NodeKind, View};

/// Ranges fetched at once while replaying: enough to hide a store's latency, ordered so that
/// what an engine reads first arrives first.
const REPLAY_PARALLEL: usize = 16;

/// Bytes a mount primes before it knows its manifest (see [`prime`]), held in memory until its
/// replay has used them: as much as the default first-touch recording keeps.
const PRIME_MAX: u64 = 64 << 20;

const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub version: u32,
    /// The manifest the profile was recorded on.
    pub manifest: String,
    pub recorded_at_ms: u64,
    /// Byte ranges in the order first read; adjacent ones of a file are merged.
    pub ranges: Vec<Touched>,
    /// The GETs that replaying `ranges` makes on that manifest, in order: a later mount starts
    /// them while it still reads its own manifest ([`prime`]). Absent from older profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gets: Vec<StoreRead>,
    /// The bytes of the first of those GETs, kept as one object beside the profile
    /// ([`layout::first_touch_pack_key`]) and read at the same time as the profile: the mount
    /// needs no round trip after the profile's to have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<Pack>,
    /// The pack's bytes, once read and found to be the pack this profile names.
    #[serde(skip)]
    pub packed: Option<Bytes>,
}

/// What a first-touch pack holds: the bytes of the profile's first `gets` GETs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    pub gets: usize,
    pub len: u64,
    pub crc32c: u32,
}

/// One GET of a replay: bytes of a data object (whole blocks of the manifest recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRead {
    pub key: String,
    pub offset: u64,
    pub len: u64,
    /// The version read, when the manifest pins one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub path: String,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("first-touch profile {key}: {reason}")]
    Malformed { key: String, reason: String },
}

/// Where a volume's profile is kept.
pub fn profile_key(volume: &VolumeId) -> Path {
    layout::first_touch_key(volume)
}

/// Saves what `touches` recorded of `view`, one profile per volume touched; the volumes saved.
pub async fn save(view: &View, touches: &FirstTouches) -> Result<Vec<VolumeId>, WarmError> {
    let mut by_part: HashMap<usize, Vec<Touched>> = HashMap::new();
    let mut order = Vec::new();
    for (ino, range) in touches.take() {
        let Some((part, path)) = file_of(view, ino) else {
            continue;
        };
        let ranges = by_part.entry(part).or_insert_with(|| {
            order.push(part);
            Vec::new()
        });
        match ranges.last_mut() {
            Some(last) if last.path == path && last.offset + last.len == range.start => {
                last.len += range.end - range.start
            }
            _ => ranges.push(Touched {
                path,
                offset: range.start,
                len: range.end - range.start,
            }),
        }
    }
    let mut saved = Vec::new();
    for part in order {
        let volume = &view.parts()[part];
        let ranges = by_part.remove(&part).unwrap_or_default();
        let gets: Vec<_> = planned(view, &[(part, &ranges)])
            .into_iter()
            .filter_map(|(ino, range)| {
                let object = view.object(ino).ok()?;
                let blocks = object.blocks_for(range);
                let bytes = (!blocks.is_empty()).then(|| object.shape.byte_range(blocks))?;
                Some((object, bytes))
            })
            .collect();
        let store = volume.store.as_ref().unwrap_or(view.fetcher().store());
        // Written before the profile that names it: a reader in between finds the old profile
        // unlike this pack, and fetches without it.
        let pack = match store.url().scheme() {
            Scheme::File => None,
            _ => pack_of(view, &gets).await,
        };
        if let Some((bytes, _)) = &pack {
            store
                .put(&layout::first_touch_pack_key(&volume.volume), bytes.clone().into())
                .await?;
        }
        let profile = Profile {
            version: VERSION,
            manifest: volume.manifest.name.clone(),
            recorded_at_ms: crate::time::now_ms(),
            ranges,
            gets: gets
                .iter()
                .map(|(object, bytes)| StoreRead {
                    key: object.key.to_string(),
                    offset: bytes.start,
                    len: bytes.end - bytes.start,
                    etag: object.checksums.etag().map(str::to_owned),
                })
                .collect(),
            pack: pack.map(|(_, pack)| pack),
            packed: None,
        };
        let json = serde_json::to_vec(&profile).expect("a profile serializes");
        store.put(&profile_key(&volume.volume), json.into()).await?;
        saved.push(volume.volume.clone());
    }
    Ok(saved)
}

/// The bytes of `gets` in order, as many whole GETs as fit in [`PRIME_MAX`], read through the
/// view's cache (the mount has just read them); `None` when one cannot be read.
async fn pack_of(view: &View, gets: &[(Arc<ObjectHandle>, Range<u64>)]) -> Option<(Bytes, Pack)> {
    let mut bytes = Vec::new();
    let mut count = 0;
    for (object, range) in gets {
        let len = range.end - range.start;
        if bytes.len() as u64 + len > PRIME_MAX {
            break;
        }
        let read = view.fetcher().read(object, range.start, len).await.ok()?;
        bytes.extend_from_slice(&read);
        count += 1;
    }
    let pack = Pack {
        gets: count,
        len: bytes.len() as u64,
        crc32c: crate::checksum::crc32c(&bytes),
    };
    (count > 0).then(|| (bytes.into(), pack))
}

/// The profiles `store` keeps for `volumes` (a view's parts, in order), by part, read at once.
/// It needs no view: a mount starts it while it still resolves its manifests, so that the
/// profile is there (and the store's connections open) when the mount is.
pub async fn load(store: &Store, volumes: &[VolumeId]) -> Vec<(usize, Profile)> {
    let reads = volumes.iter().enumerate().map(|(part, volume)| async move {
        let key = profile_key(volume);
        let pack_key = layout::first_touch_pack_key(volume);
        let pack = async {
            match store.url().scheme() {
                Scheme::File => None,
                _ => store.get_unchecked(&pack_key).await.ok(),
            }
        };
        let (profile, pack) = futures::join!(store.get(&key), pack);
        let loaded = match profile {
            Ok(bytes) => parse(&key, &bytes),
            Err(e) if e.is_not_found() => return None,
            Err(e) => Err(e.into()),
        };
        match loaded {
            Ok(mut profile) => {
                profile.packed = pack.filter(|bytes| {
                    let whole = profile
                        .pack
                        .is_some_and(|p| p.len == bytes.len() as u64 && p.crc32c == crate::checksum::crc32c(bytes));
                    if !whole {
                        tracing::debug!(%volume, "first-touch pack unlike its profile: its GETs are made instead");
                    }
                    whole
                });
                Some((part, profile))
            }
            Err(e) => {
                tracing::warn!(error = %e, %volume, "no warm start from this profile");
                None
            }
        }
    });
    futures::future::join_all(reads).await.into_iter().flatten().collect()
}

/// Starts the GETs `profiles` recorded (up to [`PRIME_MAX`] bytes), on `store`, the mount's, before
/// its manifests are read, and holds the bytes their packs brought: a later [`replay`] (and any
/// read) of the same ranges takes those bytes rather than waiting a round trip more. GETs of objects a later manifest no longer names are
/// wasted, never used: the fetcher asks only for the objects of its own view and checks every
/// block. A local directory answers at once and is not primed.
pub fn prime(store: &Store, profiles: &[(usize, Profile)]) -> Option<Primed> {
    if store.url().scheme() == Scheme::File {
        return None;
    }
    let mut left = PRIME_MAX;
    let mut reads = Vec::new();
    for (_, profile) in profiles {
        let pack = profile.packed.as_ref().zip(profile.pack);
        let mut at = 0usize;
        for (i, get) in profile.gets.iter().enumerate() {
            let len = usize::try_from(get.len).unwrap_or(usize::MAX);
            let held = match pack {
                Some((bytes, pack)) if i < pack.gets && at.saturating_add(len) <= bytes.len() => {
                    at += len;
                    Some((bytes.slice(at - len..at), get.etag.clone()))
                }
                _ => None,
            };
            let Some(rest) = left.checked_sub(get.len) else { break };
            left = rest;
            let (Ok(key), Some(end)) = (Path::parse(&get.key), get.offset.checked_add(get.len)) else {
                continue;
            };
            reads.push(PrimedRead {
                key,
                range: get.offset..end,
                held,
            });
        }
    }
    (!reads.is_empty()).then(|| store.prime(reads, REPLAY_PARALLEL))
}

fn parse(key: &Path, bytes: &[u8]) -> Result<Profile, WarmError> {
    let malformed = |reason: String| WarmError::Malformed {
        key: key.to_string(),
        reason,
    };
    let profile: Profile = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if profile.version != VERSION {
        return Err(malformed(format!(
            "version {} (this lazysnap reads {VERSION})",
            profile.version
        )));
    }
    Ok(profile)
}

/// Fetches what `profiles` name into the cache, in their order, on the background lane, while
/// `keep_going` holds (the mount is still there); the bytes fetched.
pub async fn replay(view: &View, profiles: &[(usize, Profile)], keep_going: impl Fn() -> bool) -> u64 {
    let parts: Vec<(usize, &[Touched])> = profiles.iter().map(|(part, p)| (*part, p.ranges.as_slice())).collect();
    let mut wanted = planned(view, &parts).into_iter();
    let (mut running, mut fetched) = (FuturesOrdered::new(), 0);
    loop {
        while running.len() < REPLAY_PARALLEL && keep_going() {
            let Some((ino, range)) = wanted.next() else { break };
            running.push_back(fetch_range(view, ino, range));
        }
        match running.next().await {
            Some(bytes) => fetched += bytes,
            None => return fetched,
        }
    }
}

/// The ranges a replay of `parts` (each a view part's first touches) fetches, by file, in order.
fn planned(view: &View, parts: &[(usize, &[Touched])]) -> Vec<(u64, Range<u64>)> {
    let block_size = |ino| view.object(ino).map_or(1, |object| object.shape.block_size);
    merge_nearby(touched(view, parts), block_size)
}

/// What `profiles` say the last mounts read first of each file of `view`, by inode: what a
/// mount that replays them inherits ([`FirstTouches::inherit`]).
pub fn first_reads_by_inode(view: &View, profiles: &[(usize, Profile)]) -> HashMap<u64, Vec<Range<u64>>> {
    let parts: Vec<(usize, &[Touched])> = profiles.iter().map(|(part, p)| (*part, p.ranges.as_slice())).collect();
    let mut by_inode: HashMap<u64, Vec<Range<u64>>> = HashMap::new();
    for (ino, range) in touched(view, &parts) {
        by_inode.entry(ino).or_default().push(range);
    }
    by_inode
}

/// The ranges `parts` name, as (inode of `view`, byte range), in order; files gone are skipped.
fn touched(view: &View, parts: &[(usize, &[Touched])]) -> Vec<(u64, Range<u64>)> {
    let inodes: HashMap<(usize, String), u64> = view
        .files()
        .iter()
        .filter_map(|file| Some((file_of(view, file.ino)?, file.ino)))
        .collect();
    let mut wanted = Vec::new();
    for (part, ranges) in parts {
        for t in *ranges {
            if let Some(&ino) = inodes.get(&(*part, t.path.clone())) {
                wanted.push((ino, t.offset..t.offset.saturating_add(t.len)));
            }
        }
    }
    wanted
}

/// Ranges of one file this many blocks apart or closer are fetched as one GET (1 MiB at the
/// default block size): an engine reads a table's footer, then its index and filter just before
/// it, each first touched at another moment, and a GET apiece put half of a replay behind the
/// first 16 (a round trip more before the first lookup).
const MERGE_GAP_BLOCKS: u64 = 4;
/// A merged range stays one GET's worth.
const MERGE_MAX: u64 = 8 << 20;

/// `wanted` with each range merged into an earlier one of the same file it touches or nearly
/// does, keeping the order in which each merged range was first wanted.
fn merge_nearby(wanted: Vec<(u64, Range<u64>)>, block_size: impl Fn(u64) -> u64) -> Vec<(u64, Range<u64>)> {
    let mut merged: Vec<(u64, Range<u64>)> = Vec::with_capacity(wanted.len());
    // Per file: its merge gap and the indexes of its ranges so far.
    let mut by_file: HashMap<u64, (u64, Vec<usize>)> = HashMap::new();
    for (ino, range) in wanted {
        let (gap, earlier) = by_file
            .entry(ino)
            .or_insert_with(|| (MERGE_GAP_BLOCKS * block_size(ino), Vec::new()));
        let gap = *gap;
        let near = earlier.iter().copied().find(|&i| {
            let e = &merged[i].1;
            let (start, end) = (e.start.min(range.start), e.end.max(range.end));
            range.start <= e.end.saturating_add(gap)
                && e.start <= range.end.saturating_add(gap)
                && end - start <= MERGE_MAX
        });
        match near {
            Some(i) => {
                let e = &mut merged[i].1;
                *e = e.start.min(range.start)..e.end.max(range.end);
            }
            None => {
                earlier.push(merged.len());
                merged.push((ino, range));
            }
        }
    }
    merged
}

/// Fetches bytes `range` of file `ino` into the cache; the bytes fetched (0 when it fails: a
/// demand read will fetch it and report the failure).
async fn fetch_range(view: &View, ino: u64, range: Range<u64>) -> u64 {
    let Ok(object) = view.object(ino) else { return 0 };
    let blocks = object.blocks_for(range);
    view.fetcher().fetch_in_background(&object, blocks).await.unwrap_or(0)
}

/// The part and in-volume path of file `ino`.
fn file_of(view: &View, ino: u64) -> Option<(usize, String)> {
    let node = view.tree().get(ino)?;
    match &node.kind {
        NodeKind::File { row, part } => Some((*part, row.path.as_str().to_owned())),
        NodeKind::Dir { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::BlockKey;
    use crate::fs::testing;

    const BLOCK: u64 = testing::BLOCK_SIZE;

    #[test]
    fn nearby_ranges_of_a_file_are_fetched_together_in_first_wanted_order() {
        const M: u64 = 1 << 20;
        let wanted = vec![
            (1, 100 * M..100 * M + 10), // a footer
            (2, 0..16),                 // another file
            (1, 99 * M..99 * M + 500),  // the index just before the footer
            (1, 10 * M..10 * M + 4096), // a data block far away
            (1, 98 * M - 1..98 * M),    // within the gap of the merged range
            (1, 90 * M..90 * M + 1),    // too far, and would make it too long
            (2, 16..32),                // touching the other file's range
        ];
        assert_eq!(
            merge_nearby(wanted, |_| 256 << 10),
            vec![
                (1, 98 * M - 1..100 * M + 10),
                (2, 0..32),
                (1, 10 * M..10 * M + 4096),
                (1, 90 * M..90 * M + 1),
            ]
        );
    }

    #[tokio::test]
    async fn a_new_node_fetches_what_the_last_mount_read_first_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 64 * BLOCK as usize];
        let small = vec![9u8; 3 * BLOCK as usize];
        let files: &[(&str, &[u8])] = &[("db/big.sst", &big), ("db/MANIFEST", &small)];
        let (fs, _) = testing::published("warm", &[("v", files)], dir.path()).await;
        let fs = Arc::new(fs);
        let touches = Arc::new(FirstTouches::new(1 << 30, std::time::Duration::from_secs(60)));
        fs.record_first_touches(touches.clone());
        let ino = |path: &str| fs.view().files().iter().find(|f| f.path.as_str() == path).unwrap().ino;
        // An engine opening its database: the MANIFEST, then the big file's footer, then a block.
        fs.read_at(1, ino("db/MANIFEST"), 0, 100).await.unwrap();
        fs.read_at(2, ino("db/big.sst"), 63 * BLOCK, 100).await.unwrap();
        fs.read_at(2, ino("db/big.sst"), 10 * BLOCK + 5, 2 * BLOCK as u32)
            .await
            .unwrap();
        let saved = save(fs.view(), &touches).await.unwrap();
        assert_eq!(saved, [VolumeId::parse("v").unwrap()]);

        let other = tempfile::tempdir().unwrap();
        let fresh = testing::on_a_new_node(&fs, other.path());
        let view = fresh.view();
        let profiles = load(view.fetcher().store(), &[VolumeId::parse("v").unwrap()]).await;
        assert_eq!(profiles.len(), 1);
        let ranges: Vec<(&str, u64, u64)> = profiles[0]
            .1
            .ranges
            .iter()
            .map(|t| (t.path.as_str(), t.offset / BLOCK, t.len / BLOCK))
            .collect();
        assert_eq!(
            ranges,
            [("db/MANIFEST", 0, 1), ("db/big.sst", 63, 1), ("db/big.sst", 10, 3)]
        );
        let inherited = first_reads_by_inode(view, &profiles);
        let fresh_ino = |path: &str| view.files().iter().find(|f| f.path.as_str() == path).unwrap().ino;
        assert_eq!(
            inherited[&fresh_ino("db/big.sst")],
            [63 * BLOCK..64 * BLOCK, 10 * BLOCK..13 * BLOCK],
            "what a passthrough open of the big file on the new node notes"
        );
        let fetched = replay(view, &profiles, || true).await;
        assert_eq!(fetched, 5 * BLOCK);
        let cached = |path: &str, block: u64| {
            let object = view.object(ino(path)).unwrap();
            view.fetcher().cache().contains(&BlockKey {
                object: object.id,
                block,
            })
        };
        for (path, block) in [
            ("db/MANIFEST", 0),
            ("db/big.sst", 63),
            ("db/big.sst", 10),
            ("db/big.sst", 12),
        ] {
            assert!(cached(path, block), "{path} block {block} was not warmed");
        }
        assert!(!cached("db/big.sst", 30), "a block nobody read was fetched");
        assert!(!cached("db/MANIFEST", 1));
        // The pack saved beside the profile holds those bytes: a node that primes from it
        // replays without a single data GET.
        assert!(profiles[0].1.packed.is_some(), "the pack was not loaded");
        let fourth = tempfile::tempdir().unwrap();
        let (counted, counters) = crate::store::testing::counted(view.fetcher().store());
        let packed = testing::on_a_new_node_over(&fs, counted.clone(), fourth.path());
        let primed = prime(&counted, &profiles);
        assert!(primed.is_some());
        assert_eq!(replay(packed.view(), &profiles, || true).await, 5 * BLOCK);
        assert_eq!(counters.requests(), 0, "the replay GET what its pack held");
        drop(primed);
        // A pack unlike its profile (another save's, or damaged) is not used.
        let store = view.fetcher().store();
        let pack_key = layout::first_touch_pack_key(&VolumeId::parse("v").unwrap());
        let mut damaged = store.get(&pack_key).await.unwrap().to_vec();
        damaged[0] ^= 1;
        store.put(&pack_key, damaged.into()).await.unwrap();
        let reloaded = load(store, &[VolumeId::parse("v").unwrap()]).await;
        assert!(reloaded[0].1.packed.is_none(), "a damaged pack was loaded");
        // A replay told the mount is gone fetches nothing.
        let third = tempfile::tempdir().unwrap();
        let gone = testing::on_a_new_node(&fs, third.path());
        assert_eq!(replay(gone.view(), &profiles, || false).await, 0);
    }

    #[tokio::test]
    async fn a_malformed_profile_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[("a", b"abc")];
        let (_fs, store) = testing::published("warm-bad", &[("v", files)], dir.path()).await;
        let key = profile_key(&VolumeId::parse("v").unwrap());
        store.put(&key, b"{not json".to_vec().into()).await.unwrap();
        assert!(load(&store, &[VolumeId::parse("v").unwrap()]).await.is_empty());
        let err = parse(&key, br#"{"version":9,"manifest":"m","recordedAtMs":1,"ranges":[]}"#).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }
}
