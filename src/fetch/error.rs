use std::sync::Arc;
use std::time::Duration;

use crate::store::StoreError;

/// Why a read could not be served. Every variant is an I/O error for the read that needed it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("block {block} of {key} does not match its checksum (changed or corrupt in the store)")]
    Checksum { key: String, block: u64 },
    #[error("fetching {key} took longer than {deadline:?}")]
    Timeout { key: String, deadline: Duration },
    /// The same failure, seen by a reader that waited on another reader's fetch.
    #[error(transparent)]
    Shared(Arc<FetchError>),
}

impl FetchError {
    /// The error at the root of a shared one.
    pub fn root(&self) -> &FetchError {
        match self {
            FetchError::Shared(inner) => inner.root(),
            other => other,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.root(), FetchError::Store(e) if e.is_not_found())
    }
}
