//! Object store access: the only module that talks to S3, GCS, Azure or a local directory.
//!
//! A store is named by a URL (see [`StoreUrl`]). Everything durable lives in the store; every other
//! part of lazysnap reaches it through [`Store`], which adds three things object_store leaves to us:
//! explicit retry and timeout limits (its defaults can hold one read for minutes), errors that name
//! the store and key, and the key layout of volumes ([`layout`]).

mod buffers;
mod error;
mod etag;
pub mod layout;
mod metered;
mod open;
mod piece;
mod primed;
mod split;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod upload;
mod url;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use buffers::{BlockBuffer, BlockBuffers, BufferStats};
pub use error::StoreError;
pub use metered::{http_stats, prepare_http_clients, HttpStats};
pub use open::StoreConfig;
pub use piece::Piece;
pub use primed::{Primed, PrimedRead};
pub use upload::PartUpload;
pub use url::{Scheme, StoreUrl};

/// Size and identity of one object, as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: Path,
    pub size: u64,
    pub etag: Option<String>,
    /// When the store last wrote it, in Unix milliseconds (the store's clock).
    pub modified_ms: u64,
}

impl From<object_store::ObjectMeta> for ObjectInfo {
    fn from(meta: object_store::ObjectMeta) -> Self {
        ObjectInfo {
            key: meta.location,
            size: meta.size,
            etag: meta.e_tag,
            modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
        }
    }
}

/// Reads of a whole object ([`Store::get`]) before its body's failure is the caller's.
const WHOLE_READS: u32 = 3;

/// A handle on one store: cheap to clone, safe to share between threads.
#[derive(Clone, Debug)]
pub struct Store {
    url: StoreUrl,
    inner: Arc<dyn ObjectStore>,
    /// Until two reads of an object agree with each other and not with its ETag.
    etags_are_digests: Arc<AtomicBool>,
    /// Ranged reads started ahead of their callers ([`Store::prime`]).
    primed: Arc<primed::PrimedReads>,
}

impl Store {
    /// Opens the store named by `url` with the given limits. Nothing is read yet.
    pub fn open(url: &StoreUrl, config: &StoreConfig) -> Result<Store, StoreError> {
        let inner = open::build(url, config)?;
        Ok(Store {
            url: url.clone(),
            inner,
            etags_are_digests: Arc::new(AtomicBool::new(true)),
            primed: Default::default(),
        })
    }

    /// Wraps an existing object store (tests and benchmarks wrap stores to count or slow them).
    #[cfg(any(test, feature = "testing"))]
    pub fn from_object_store(url: StoreUrl, inner: Arc<dyn ObjectStore>) -> Store {
        Store {
            url,
            inner,
            etags_are_digests: Arc::new(AtomicBool::new(true)),
            primed: Default::default(),
        }
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The object store underneath, for tests and the benchmark's raw baselines; lazysnap itself
    /// reaches the store only through this type.
    #[cfg(any(test, feature = "testing"))]
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Reads a whole object; for manifests and records, not for data files. A body that breaks
    /// off, comes short or differs from the MD5 its ETag states is read again, up to
    /// [`WHOLE_READS`] times: the client retries requests that fail, not bodies that fail after
    /// the answer started (a mount would fail on one), and a flipped bit that still parses would
    /// steer a mount wrong.
    pub async fn get(&self, key: &Path) -> Result<Bytes, StoreError> {
        let mut read = 1;
        let mut suspect: Option<Bytes> = None;
        loop {
            let result = self.inner.get(key).await.map_err(|e| self.err(key, e))?;
            let size = result.meta.size;
            let stated = match self.etags_are_digests.load(Relaxed) {
                true => etag::stated_md5(result.meta.e_tag.as_deref()),
                false => None,
            };
            let error = match result.bytes().await {
                Ok(bytes) if bytes.len() as u64 == size => match etag::judge(&bytes, stated, suspect.as_ref()) {
                    etag::Verdict::Sound => return Ok(bytes),
                    etag::Verdict::NotADigest => {
                        tracing::info!(store = %self.url, %key, "this store's ETags are not MD5 digests of their objects; whole-object reads go unchecked");
                        self.etags_are_digests.store(false, Relaxed);
                        return Ok(bytes);
                    }
                    etag::Verdict::Suspect => {
                        suspect = Some(bytes);
                        StoreError::NotAsStated {
                            store: self.url.to_string(),
                            key: key.to_string(),
                        }
                    }
                },
                Ok(bytes) => self.short_read(key, 0..size, bytes.len() as u64),
                Err(e) => self.err(key, e),
            };
            if read == WHOLE_READS {
                return Err(error);
            }
            tracing::debug!(%key, read, error = %error, "reading the object again");
            tokio::time::sleep(std::time::Duration::from_millis(50 << read)).await;
            read += 1;
        }
    }

    /// Reads a whole object as it comes, for callers that check it themselves (a first-touch
    /// pack carries its own checksum): no ETag digest is computed over it.
    pub async fn get_unchecked(&self, key: &Path) -> Result<Bytes, StoreError> {
        let result = self.inner.get(key).await.map_err(|e| self.err(key, e))?;
        let size = result.meta.size;
        let bytes = result.bytes().await.map_err(|e| self.err(key, e))?;
        if bytes.len() as u64 != size {
            return Err(self.short_read(key, 0..size, bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Reads `range` of an object. A short answer is an error: callers rely on exact lengths.
    pub async fn get_range(&self, key: &Path, range: Range<u64>) -> Result<Bytes, StoreError> {
        let want = range.end - range.start;
        let bytes = self
            .inner
            .get_range(key, range.clone())
            .await
            .map_err(|e| self.err(key, e))?;
        if bytes.len() as u64 != want {
            return Err(self.short_read(key, range, bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Size and etag of an object, or `None` when it does not exist.
    pub async fn head(&self, key: &Path) -> Result<Option<ObjectInfo>, StoreError> {
        match self.inner.head(key).await {
            Ok(meta) => Ok(Some(meta.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    /// Writes an object unconditionally (data files, whose names are never reused for other bytes).
    pub async fn put(&self, key: &Path, payload: PutPayload) -> Result<Option<String>, StoreError> {
        let result = self.inner.put(key, payload).await.map_err(|e| self.err(key, e))?;
        Ok(result.e_tag)
    }

    /// Writes an object only if no object has that key yet; [`StoreError::AlreadyExists`] otherwise.
    /// This is the one conditional write every store supports (LocalFileSystem has no `Update`).
    pub async fn put_if_absent(&self, key: &Path, bytes: Bytes) -> Result<(), StoreError> {
        let options = PutOptions::from(PutMode::Create);
        self.inner
            .put_opts(key, bytes.into(), options)
            .await
            .map(|_| ())
            .map_err(|e| self.err(key, e))
    }

    /// Every object below `prefix`, in no particular order.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner
            .list(Some(prefix))
            .map_ok(ObjectInfo::from)
            .try_collect()
            .await
            .map_err(|e| self.err(prefix, e))
    }

    /// The immediate children of `prefix`: (sub-folders, objects).
    pub async fn list_children(&self, prefix: &Path) -> Result<(Vec<Path>, Vec<ObjectInfo>), StoreError> {
        let listing = self
            .inner
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(|e| self.err(prefix, e))?;
        let objects = listing.objects.into_iter().map(ObjectInfo::from).collect();
        Ok((listing.common_prefixes, objects))
    }

    pub async fn delete(&self, key: &Path) -> Result<(), StoreError> {
        match self.inner.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn err(&self, key: &Path, source: object_store::Error) -> StoreError {
        StoreError::from_object_store(&self.url, key, source)
    }
}

#[cfg(test)]
mod tests;
