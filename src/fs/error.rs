//! Filesystem errors and the errno each one becomes: the one place that picks errnos.

use crate::fetch::FetchError;
use crate::index::IndexError;
use crate::view::ViewError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("bad file handle")]
    BadHandle,
    #[error("no such attribute")]
    NoAttribute,
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Only a file's object is looked up while serving; nothing else of a view can fail then.
    #[error(transparent)]
    View(Box<ViewError>),
}

impl From<ViewError> for FsError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::NoSuchFile(_) => FsError::NotFound,
            ViewError::IsADirectory(_) => FsError::IsADirectory,
            ViewError::Index(e) => FsError::Index(e),
            other => FsError::View(Box::new(other)),
        }
    }
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotADirectory => libc::ENOTDIR,
            FsError::IsADirectory => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::BadHandle => libc::EBADF,
            FsError::NoAttribute => libc::ENODATA,
            // A read that cannot be served with verified bytes is an I/O error, for that read only.
            FsError::Fetch(_) | FsError::Index(_) | FsError::View(_) => libc::EIO,
        }
    }
}
