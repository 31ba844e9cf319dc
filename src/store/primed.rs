//! Ranged reads started before anyone asks for them. A mount knows from its volume's first-touch
//! profile which GETs its engine will need long before it knows the manifest that says how to
//! check them: it primes those GETs while the manifest is still on its way, and the fetcher's own
//! GET of a primed range ([`Store::get_range_pieces`]) takes the primed bytes instead of asking
//! the store again. Primed bytes are never trusted more than a GET's: the fetcher verifies every
//! block it is handed, and a read with an ETag to keep uses them only if the primed answer had it.
//!
//! Primed reads live as long as the [`Primed`] guard that started them, a few at a time in the
//! order given; a failed or stalled one is simply not used (the caller GETs as usual).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;
use object_store::path::Path;
use object_store::GetOptions;

use super::{BlockBuffers, Store};

/// What a primed GET brought: the bytes and the ETag they were answered with.
type Answer = Option<Arc<(Bytes, Option<String>)>>;

#[derive(Debug, Default)]
pub(super) struct PrimedReads {
    entries: Mutex<Vec<Entry>>,
    next_owner: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    owner: u64,
    key: Path,
    range: Range<u64>,
    answer: Shared<BoxFuture<'static, Answer>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{:?}]", self.key, self.range)
    }
}

/// One read to prime: GET `range` of `key`, or use `held` (its bytes, exactly that range, and
/// the ETag of the version they are of) if the caller has them already.
#[derive(Debug, Clone)]
pub struct PrimedRead {
    pub key: Path,
    pub range: Range<u64>,
    pub held: Option<(Bytes, Option<String>)>,
}

/// Keeps a set of primed reads: dropping it stops those not done and forgets all of them.
#[must_use = "primed reads are forgotten when this is dropped"]
#[derive(Debug)]
pub struct Primed {
    reads: Arc<PrimedReads>,
    owner: u64,
    driver: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Primed {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            driver.abort();
        }
        let mut entries = self.reads.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.owner != self.owner);
    }
}

impl Store {
    /// Starts ranged GETs of `reads` (key, byte range and, when the caller has them already, the
    /// bytes with the ETag of their version), `parallel` GETs at a time in the order given, for
    /// [`Store::get_range_pieces`] to use when it is asked for a range one of them covers. Must be
    /// called inside a tokio runtime.
    pub fn prime(&self, reads: Vec<PrimedRead>, parallel: usize) -> Primed {
        let owner = self.primed.next_owner.fetch_add(1, Relaxed);
        let entries: Vec<Entry> = reads
            .into_iter()
            .filter(|read| read.range.start < read.range.end)
            .map(|read| Entry {
                owner,
                answer: match read.held {
                    Some((bytes, etag)) => futures::future::ready(Some(Arc::new((bytes, etag)))).boxed().shared(),
                    None => self.primed_get(read.key.clone(), read.range.clone()).boxed().shared(),
                },
                key: read.key,
                range: read.range,
            })
            .collect();
        let answers: Vec<_> = entries.iter().map(|e| e.answer.clone()).collect();
        self.primed
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(entries);
        let driver = tokio::spawn(async move {
            futures::stream::iter(answers)
                .buffered(parallel.max(1))
                .for_each(|_| async {})
                .await
        });
        Primed {
            reads: self.primed.clone(),
            owner,
            driver: Some(driver),
        }
    }

    /// Forgets every primed read of `key`: its bytes failed a check, so the retries that follow
    /// must ask the store rather than be handed the same bytes again.
    pub fn forget_primed(&self, key: &Path) {
        let mut entries = self.primed.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.key != *key);
    }

    fn primed_get(&self, key: Path, range: Range<u64>) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let options = GetOptions {
                range: Some(range.clone().into()),
                ..GetOptions::default()
            };
            let result = inner.get_opts(&key, options).await.ok()?;
            let etag = result.meta.e_tag.clone();
            let bytes = result.bytes().await.ok()?;
            (bytes.len() as u64 == range.end - range.start).then(|| Arc::new((bytes, etag)))
        }
    }

    /// `range` of `key` in pieces of `piece` bytes (copied into `buffers`' buffers, so that a
    /// cached piece holds no more memory than its own), if a primed read covers it and brings it
    /// within `patience`, as version `etag` when one is given; `None`: GET it as usual.
    pub(super) async fn primed_pieces(
        &self,
        key: &Path,
        etag: Option<&str>,
        range: &Range<u64>,
        piece: u64,
        buffers: &BlockBuffers,
        patience: Duration,
    ) -> Option<Vec<Bytes>> {
        let entry = {
            let entries = self.primed.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .iter()
                .find(|e| e.key == *key && e.range.start <= range.start && range.end <= e.range.end)
                .cloned()?
        };
        let Ok(answer) = tokio::time::timeout(patience, entry.answer.clone()).await else {
            // A stalled primed GET is forgotten: the caller's retries GET for themselves rather
            // than waiting on it again.
            let mut entries = self.primed.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(|e| !(e.owner == entry.owner && e.key == entry.key && e.range == entry.range));
            return None;
        };
        let answer = answer?;
        let (bytes, answered_etag) = &*answer;
        if (etag.is_some() && answered_etag.as_deref() != etag)
            || bytes.len() as u64 != entry.range.end - entry.range.start
        {
            return None;
        }
        let start = (range.start - entry.range.start) as usize;
        let wanted = &bytes[start..start + (range.end - range.start) as usize];
        Some(
            wanted
                .chunks(piece as usize)
                .map(|chunk| {
                    let mut buffer = buffers.take_empty(chunk.len());
                    buffer.extend_from_slice(chunk);
                    buffer.freeze()
                })
                .collect(),
        )
    }
}
