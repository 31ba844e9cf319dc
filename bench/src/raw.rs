//! Baselines: the fastest ways to read the same object straight from the store with object_store,
//! measured in the same run as the mount so the ratios compare like with like.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use lazysnap::store::Store;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::Serialize;

use super::stats::{mbps, Latencies};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawFigures {
    /// One GET of the whole object, consumed as it streams in.
    pub single_get_mbps: f64,
    /// Ranged GETs of `ranged_get_bytes` each, `ranged_get_parallelism` in flight.
    pub parallel_get_mbps: f64,
    /// The same GETs, each written into a local file at its offset as it completes: what landing
    /// the bytes on this disk costs any tool, without checksums or a cache (hydration's floor).
    pub parallel_get_into_file_mbps: f64,
    pub ranged_get_bytes: u64,
    pub ranged_get_parallelism: usize,
    /// One 4 KiB ranged GET at a time, at random offsets.
    pub get_4k: Latencies,
}

impl RawFigures {
    pub fn best_mbps(&self) -> f64 {
        self.single_get_mbps.max(self.parallel_get_mbps)
    }
}

pub async fn measure(
    store: &Store,
    key: &Path,
    size: u64,
    chunk: u64,
    parallelism: usize,
    samples: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<RawFigures> {
    let single = single_get(store, key).await?;
    let parallel = parallel_get(store, key, size, chunk, parallelism).await?;
    let into_file = parallel_get_into_file(store, key, size, chunk, parallelism, scratch).await?;
    let mut latencies = Vec::with_capacity(samples);
    for offset in super::stats::random_offsets(size, 4096, samples, super::stats::OFFSETS_SEED) {
        let started = Instant::now();
        store.get_range(key, offset..offset + 4096.min(size - offset)).await?;
        latencies.push(started.elapsed());
    }
    Ok(RawFigures {
        single_get_mbps: mbps(size, single),
        parallel_get_mbps: mbps(size, parallel),
        parallel_get_into_file_mbps: mbps(size, into_file),
        ranged_get_bytes: chunk,
        ranged_get_parallelism: parallelism,
        get_4k: Latencies::of(latencies),
    })
}

async fn single_get(store: &Store, key: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let result = store.object_store().get(key).await.context("raw GET")?;
    let mut stream = result.into_stream();
    while let Some(chunk) = stream.try_next().await.context("raw GET body")? {
        std::hint::black_box(chunk);
    }
    Ok(started.elapsed())
}

pub async fn parallel_get(
    store: &Store,
    key: &Path,
    size: u64,
    chunk: u64,
    parallelism: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    ranged_gets(store, key, size, chunk, parallelism)
        .try_for_each(|(_, bytes)| {
            std::hint::black_box(bytes);
            futures::future::ready(Ok(()))
        })
        .await
        .context("raw ranged GETs")?;
    Ok(started.elapsed())
}

/// [`parallel_get`], each answer written into a new file under `scratch` at its offset on a
/// blocking thread as it arrives (as many writes in flight as GETs); the time until the last write
/// returned. The file is removed afterwards.
pub async fn parallel_get_into_file(
    store: &Store,
    key: &Path,
    size: u64,
    chunk: u64,
    parallelism: usize,
    scratch: &std::path::Path,
) -> anyhow::Result<Duration> {
    use std::os::unix::fs::FileExt;
    let dest = tempfile::NamedTempFile::new_in(scratch).context("a file for raw GETs")?;
    let file = Arc::new(dest.as_file().try_clone()?);
    let started = Instant::now();
    ranged_gets(store, key, size, chunk, parallelism)
        .map_err(anyhow::Error::from)
        .map_ok(|(offset, bytes)| {
            let file = file.clone();
            async move {
                tokio::task::spawn_blocking(move || file.write_all_at(&bytes, offset))
                    .await?
                    .context("write a raw GET into a file")
            }
        })
        .try_buffer_unordered(parallelism)
        .try_for_each(|()| futures::future::ready(Ok(())))
        .await?;
    Ok(started.elapsed())
}

/// Ranged GETs of `chunk` bytes over `0..size`, `parallelism` in flight, each with its offset.
fn ranged_gets<'a>(
    store: &Store,
    key: &'a Path,
    size: u64,
    chunk: u64,
    parallelism: usize,
) -> impl futures::Stream<Item = object_store::Result<(u64, bytes::Bytes)>> + 'a {
    let inner = Arc::clone(store.object_store());
    let ranges: Vec<_> = (0..size)
        .step_by(chunk as usize)
        .map(|s| s..(s + chunk).min(size))
        .collect();
    futures::stream::iter(ranges)
        .map(move |range| {
            let inner = inner.clone();
            async move { Ok((range.start, inner.get_range(key, range).await?)) }
        })
        .buffer_unordered(parallelism)
}
