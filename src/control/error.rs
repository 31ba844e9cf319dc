//! The one place that decides which Fusion status each failure answers: `Einval` when the input is
//! wrong, `NotMyVbucket` when the volume (or what was named in it) is unknown here or this node
//! does not own its role, `Einternal` when the store or node failed. The message is the error's own,
//! which names the input.

use super::Status;
use crate::catalog::CatalogError;
use crate::chain::ChainError;
use crate::gc::GcError;
use crate::index::IndexError;
use crate::names::NameError;
use crate::namespace::NamespaceError;
use crate::publish::PublishError;
use crate::scylla::ScyllaError;
use crate::snapshot::SnapshotError;
use crate::store::StoreError;
use crate::view::ViewError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub status: Status,
    pub message: String,
}

impl OpError {
    pub fn invalid(message: impl Into<String>) -> OpError {
        OpError {
            status: Status::Einval,
            message: message.into(),
        }
    }

    pub fn unknown(message: impl Into<String>) -> OpError {
        OpError {
            status: Status::NotMyVbucket,
            message: message.into(),
        }
    }

    /// The same error, its message led by what it concerns.
    pub fn context(mut self, what: &str) -> OpError {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn internal(message: impl Into<String>) -> OpError {
        OpError {
            status: Status::Einternal,
            message: message.into(),
        }
    }
}

impl From<crate::fusion::FusionError> for OpError {
    fn from(e: crate::fusion::FusionError) -> Self {
        OpError::invalid(e.0)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidUrl { .. } => OpError::invalid(e.to_string()),
            StoreError::Open { .. } | StoreError::NotFound { .. } => OpError::unknown(e.to_string()),
            other => OpError::internal(other.to_string()),
        }
    }
}

impl From<ScyllaError> for OpError {
    fn from(e: ScyllaError) -> Self {
        let message = e.to_string();
        match e {
            ScyllaError::Store(e) => e.into(),
            ScyllaError::Index(IndexError::Conflict(_)) => OpError::invalid(message),
            ScyllaError::Index(_) => OpError::internal(message),
            ScyllaError::UnknownTable { .. } | ScyllaError::ManifestNotFound { .. } => OpError::unknown(message),
            _ => OpError::invalid(message),
        }
    }
}

impl From<crate::access::AccessError> for OpError {
    fn from(e: crate::access::AccessError) -> Self {
        OpError::invalid(e.to_string())
    }
}

impl From<NameError> for OpError {
    fn from(e: NameError) -> Self {
        OpError::invalid(e.to_string())
    }
}

impl From<CatalogError> for OpError {
    fn from(e: CatalogError) -> Self {
        let message = e.to_string();
        match e {
            CatalogError::NoGeneration { .. } => OpError::unknown(message),
            CatalogError::BeforeFirstGeneration { .. }
            | CatalogError::SeqnoNotCovered { .. }
            | CatalogError::NotABackupSelector(_) => OpError::invalid(message),
            CatalogError::Chain(e) => e.into(),
            CatalogError::Snapshot(e) => e.into(),
            CatalogError::Store(e) => e.into(),
            CatalogError::Index(_) => OpError::internal(message),
        }
    }
}

impl From<ViewError> for OpError {
    fn from(e: ViewError) -> Self {
        let message = e.to_string();
        match e {
            ViewError::Layout(_) | ViewError::NoVolume | ViewError::Moved { .. } | ViewError::NoSstableThere(_) => {
                OpError::invalid(message)
            }
            ViewError::NoSuchFile(_) | ViewError::IsADirectory(_) | ViewError::Index(_) => OpError::internal(message),
            ViewError::Store(e) => e.into(),
            ViewError::Catalog(e) => (*e).into(),
            ViewError::Scylla(e) => (*e).into(),
        }
    }
}

impl From<ChainError> for OpError {
    fn from(e: ChainError) -> Self {
        let message = e.to_string();
        match e {
            ChainError::UnknownVolume { .. }
            | ChainError::UnknownManifest { .. }
            | ChainError::UnknownGeneration { .. } => OpError::unknown(message),
            // A manifest that does not parse was written by someone else: the request named it.
            ChainError::Manifest(_) => OpError::invalid(message),
            ChainError::Store(e) => e.into(),
            ChainError::Index(_) => OpError::internal(message),
        }
    }
}

impl From<crate::backup::BackupError> for OpError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError;
        let message = e.to_string();
        match e {
            BackupError::NotAFolder(_) | BackupError::BlockSize(_) | BackupError::Conflict { .. } => {
                OpError::invalid(message)
            }
            BackupError::Manifest(_) | BackupError::Place { .. } => OpError::internal(message),
            BackupError::Chain(e) => e.into(),
            BackupError::Publish(e) => e.into(),
            BackupError::Store(e) => e.into(),
        }
    }
}

impl From<crate::uploader::UploaderError> for OpError {
    fn from(e: crate::uploader::UploaderError) -> Self {
        use crate::uploader::UploaderError;
        match e {
            UploaderError::Fenced { .. } => OpError::unknown(e.to_string()),
            UploaderError::Stopped(_) => OpError::internal(e.to_string()),
            UploaderError::Publish(e) => e.into(),
        }
    }
}

impl From<SnapshotError> for OpError {
    fn from(e: SnapshotError) -> Self {
        let message = e.to_string();
        match e {
            SnapshotError::InvalidUuid(_) | SnapshotError::InvalidValidity(_) | SnapshotError::Exists { .. } => {
                OpError::invalid(message)
            }
            // An expired snapshot behaves as a released one; one still being created is not there yet.
            SnapshotError::Unknown { .. }
            | SnapshotError::Expired { .. }
            | SnapshotError::NotCommitted { .. }
            | SnapshotError::EmptyVolume(_) => OpError::unknown(message),
            SnapshotError::Store(e) => e.into(),
            SnapshotError::Chain(e) => (*e).into(),
            SnapshotError::Index(_) => OpError::internal(message),
            SnapshotError::RolledBack { .. } | SnapshotError::Malformed { .. } => OpError::internal(message),
        }
    }
}

impl From<GcError> for OpError {
    fn from(e: GcError) -> Self {
        let message = e.to_string();
        match e {
            GcError::EmptyVolume(_) => OpError::unknown(message),
            GcError::Fenced { .. } | GcError::TermNotStarted { .. } => OpError::invalid(message),
            GcError::MissingPinned { .. } => OpError::internal(message),
            GcError::Snapshot(e) => e.into(),
            GcError::Chain(e) => (*e).into(),
            GcError::Index(_) => OpError::internal(message),
            GcError::Store(e) => e.into(),
        }
    }
}

impl From<PublishError> for OpError {
    fn from(e: PublishError) -> Self {
        let message = e.to_string();
        match e {
            PublishError::NotADirectory(_)
            | PublishError::NotUtf8(_)
            | PublishError::Name(_)
            | PublishError::Immutable { .. }
            | PublishError::Fenced { .. } => OpError::invalid(message),
            PublishError::Read { .. } | PublishError::Conflict { .. } => OpError::internal(message),
            PublishError::Store(e) => e.into(),
            PublishError::Chain(e) => (*e).into(),
            PublishError::Manifest(_) => OpError::invalid(message),
            PublishError::Index(_) => OpError::internal(message),
        }
    }
}

impl From<NamespaceError> for OpError {
    fn from(e: NamespaceError) -> Self {
        match e {
            NamespaceError::InvalidKeep { .. } => OpError::invalid(e.to_string()),
            NamespaceError::Store(e) => e.into(),
            NamespaceError::Index(_) => OpError::internal(e.to_string()),
        }
    }
}
