use std::ops::Range;
use std::time::Duration;

use object_store::path::Path;

use super::StoreUrl;

/// What went wrong talking to a store. Every variant names the store and, where there is one, the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot open store {store}: {reason}")]
    Open { store: String, reason: String },
    #[error("object {key} not found in store {store}")]
    NotFound { store: String, key: String },
    #[error("object {key} already exists in store {store}")]
    AlreadyExists { store: String, key: String },
    #[error("object {key} in store {store} changed under a conditional request")]
    Precondition { store: String, key: String },
    #[error("store {store} returned {got} bytes for {key} range {range:?}")]
    ShortRead {
        store: String,
        key: String,
        range: Range<u64>,
        got: u64,
    },
    #[error("store {store} sent a body for {key} that differs from the MD5 its ETag states (changed on the way)")]
    NotAsStated { store: String, key: String },
    #[error("store {store} sent nothing for {waited:?} while answering a GET of {key} (stalled; abandoned)")]
    Stalled {
        store: String,
        key: String,
        waited: Duration,
    },
    #[error("store {store}, object {key}: {source}")]
    Other {
        store: String,
        key: String,
        #[source]
        source: object_store::Error,
    },
}

impl StoreError {
    pub(crate) fn from_object_store(url: &StoreUrl, key: &Path, source: object_store::Error) -> Self {
        let store = url.to_string();
        let key = key.to_string();
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound { store, key },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists { store, key },
            object_store::Error::Precondition { .. } => StoreError::Precondition { store, key },
            source => StoreError::Other { store, key, source },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
