//! How the benchmark reads files: the way an engine would, through the ordinary file API.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::stats::Latencies;

/// Reads the whole file front to back in 1 MiB reads; bytes read and time taken.
pub fn sequential(path: &Path) -> anyhow::Result<(u64, Duration)> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let read = read_range(&file, path, &mut buf, 0, u64::MAX)?;
    Ok((read, started.elapsed()))
}

/// Reads `start..end` (or to the end of the file) in reads of `buf`'s size; the bytes read.
fn read_range(file: &File, path: &Path, buf: &mut [u8], start: u64, end: u64) -> anyhow::Result<u64> {
    let mut offset = start;
    while offset < end {
        let n = file
            .read_at(buf, offset)
            .with_context(|| format!("read {} at {offset}", path.display()))?;
        if n == 0 {
            break;
        }
        offset += n as u64;
    }
    Ok(offset - start)
}

/// The median time of three sequential reads: warm reads take tens of milliseconds, where one
/// scheduler hiccup on a small machine would move a single figure by a third.
pub fn sequential_median(path: &Path) -> anyhow::Result<Duration> {
    let mut times = [Duration::ZERO; 3];
    for time in &mut times {
        *time = sequential(path)?.1;
    }
    times.sort();
    Ok(times[1])
}

/// One 4 KiB pread at each offset, one at a time, on a file opened for random access (the kernel's
/// readahead off, as a database engine would have it): the latency of each.
pub fn random_4k(path: &Path, offsets: &[u64]) -> anyhow::Result<Latencies> {
    random_4k_while(path, offsets, || true)
}

/// Like [`random_4k`], but only while `busy()` holds (and at most once per offset).
pub fn random_4k_while(path: &Path, offsets: &[u64], mut busy: impl FnMut() -> bool) -> anyhow::Result<Latencies> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: a valid fd; POSIX_FADV_RANDOM only changes readahead policy.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    let mut buf = [0u8; 4096];
    let mut latencies = Vec::with_capacity(offsets.len());
    for &offset in offsets {
        if !busy() {
            break;
        }
        let started = Instant::now();
        file.read_at(&mut buf, offset)
            .with_context(|| format!("read {} at {offset}", path.display()))?;
        latencies.push(started.elapsed());
    }
    Ok(Latencies::of(latencies))
}

/// `readers` threads, each reading its own slice of the file sequentially at the same time.
pub fn concurrent(path: &Path, size: u64, readers: usize) -> anyhow::Result<(u64, Duration)> {
    let slice = size.div_ceil(readers as u64);
    let started = Instant::now();
    let total = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers as u64)
            .map(|i| {
                scope.spawn(move || -> anyhow::Result<u64> {
                    let file = File::open(path)?;
                    let mut buf = vec![0u8; 1 << 20];
                    let (start, end) = ((i * slice).min(size), ((i + 1) * slice).min(size));
                    let mut offset = start;
                    while offset < end {
                        let want = buf.len().min((end - offset) as usize);
                        let n = file.read_at(&mut buf[..want], offset)?;
                        if n == 0 {
                            break;
                        }
                        offset += n as u64;
                    }
                    Ok(offset - start)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread panicked"))
            .sum::<anyhow::Result<u64>>()
    })?;
    Ok((total, started.elapsed()))
}

/// Bytes per column chunk and per read within one, as an analytic engine reads a column of one
/// row group: one chunk front to back in a few reads, then a jump to the next chunk it needs.
pub const COLUMN_CHUNK: u64 = 1 << 20;
const COLUMN_READ: usize = 128 << 10;

/// Reads one [`COLUMN_CHUNK`] at each offset, in 128 KiB reads, kernel readahead left on.
pub fn column_chunks(path: &Path, offsets: &[u64]) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; COLUMN_READ];
    for &start in offsets {
        read_range(&file, path, &mut buf, start, start + COLUMN_CHUNK)?;
    }
    Ok(())
}

/// The block size a database read by point lookups is published with in the bench: its reads
/// (16 KiB index blocks, 4 KiB data blocks) then fetch about what they read.
pub const LOOKUP_BLOCK: u64 = 8 << 10;

/// Point lookups as an LSM engine makes them on a file opened for random access: per lookup an
/// index block (16 KiB) and a data block (4 KiB) at unrelated places.
pub fn point_lookups(path: &Path, offsets: &[u64]) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: a valid fd; POSIX_FADV_RANDOM only changes readahead policy.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    let (mut index, mut data) = (vec![0u8; 16 << 10], [0u8; 4096]);
    for pair in offsets.chunks(2) {
        file.read_at(&mut index, pair[0])
            .with_context(|| format!("read {} at {}", path.display(), pair[0]))?;
        if let Some(&at) = pair.get(1) {
            file.read_at(&mut data, at)
                .with_context(|| format!("read {} at {at}", path.display()))?;
        }
    }
    Ok(())
}
