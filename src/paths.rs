//! Where a node keeps its state: one home folder holding the index, the block cache, the daemon's
//! socket, log and default mountpoints. Binaries choose the home; the library only lays it out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    home: PathBuf,
}

impl Paths {
    pub fn new(home: impl Into<PathBuf>) -> Paths {
        Paths { home: home.into() }
    }

    /// `$LAZYSNAP_HOME`, else `/var/lib/lazysnap` for root, else `~/.local/share/lazysnap`.
    pub fn default_home(lazysnap_home: Option<OsString>, euid: u32, user_home: Option<OsString>) -> PathBuf {
        if let Some(home) = lazysnap_home.filter(|h| !h.is_empty()) {
            return PathBuf::from(home);
        }
        if euid == 0 {
            return PathBuf::from("/var/lib/lazysnap");
        }
        match user_home {
            Some(home) => Path::new(&home).join(".local/share/lazysnap"),
            None => PathBuf::from("/tmp/lazysnap"),
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn index(&self) -> PathBuf {
        self.home.join("index.db")
    }

    pub fn cache(&self) -> PathBuf {
        self.home.join("cache")
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("mountd.sock")
    }

    pub fn daemon_lock(&self) -> PathBuf {
        self.home.join("mountd.lock")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.home.join("mountd.log")
    }

    /// Journals of the files open on each mount (see `fuse`), kept for a daemon that takes over.
    pub fn sessions(&self) -> PathBuf {
        self.home.join("sessions")
    }

    /// Where the handover holder listens (see `handover`).
    pub fn holder_socket(&self) -> PathBuf {
        self.home.join("holder.sock")
    }

    /// Where mounts without an explicit mountpoint go.
    pub fn mounts(&self) -> PathBuf {
        self.home.join("mnt")
    }

    /// Takes the lock only one lazysnap-mountd of this home holds while it runs; `None` when a
    /// daemon (or a command that must not overlap one) holds it. Released when the file is dropped.
    pub fn try_lock_daemon(&self) -> std::io::Result<Option<std::fs::File>> {
        use std::os::fd::AsRawFd;
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.daemon_lock())?;
        // SAFETY: flock on a descriptor we own; non-blocking.
        match unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
            0 => Ok(Some(lock)),
            _ => Ok(None),
        }
    }

    /// Creates the home folder readable by its owner only: it holds the control socket.
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.home)
    }

    /// Creates the home and its cache folder (owner only) when missing, then refuses both when
    /// another user owns them or can write them: whoever can write there could replace the control
    /// socket, the index or cached blocks, which a daemon serves as verified.
    pub fn create_private(&self, uid: u32) -> Result<(), PrivacyError> {
        use std::os::unix::fs::DirBuilderExt;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PrivacyError::Io { path, source }
        };
        self.create().map_err(io(&self.home))?;
        ensure_private(&self.home, uid)?;
        let cache = self.cache();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&cache)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(io(&cache)(e)),
            })?;
        ensure_private(&cache, uid)
    }
}

/// A home or cache folder lazysnap will not use, and why.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("{path} belongs to user {owner}, not to user {uid} that lazysnap-mountd runs as: another user could replace its socket, index or cached blocks; chown it or choose another --home")]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path} can be written by other users (mode {mode:04o}): they could replace its socket, index or cached blocks; chmod go-w it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path} is not a folder (a symlink or a file): lazysnap keeps its home and cache in real folders it owns")]
    NotAFolder { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `dir` is a folder (not a symlink to one) owned by `uid` that no one else can write.
fn ensure_private(dir: &Path, uid: u32) -> Result<(), PrivacyError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| PrivacyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.to_path_buf();
    if meta.uid() != uid {
        return Err(PrivacyError::Owner {
            path,
            owner: meta.uid(),
            uid,
        });
    }
    if !meta.is_dir() {
        return Err(PrivacyError::NotAFolder { path });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(PrivacyError::Writable {
            path,
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_home_prefers_the_environment_then_root_then_the_user() {
        assert_eq!(Paths::default_home(Some("/x".into()), 0, None), PathBuf::from("/x"));
        assert_eq!(
            Paths::default_home(Some("".into()), 0, None),
            PathBuf::from("/var/lib/lazysnap")
        );
        assert_eq!(
            Paths::default_home(None, 1000, Some("/home/u".into())),
            PathBuf::from("/home/u/.local/share/lazysnap")
        );
    }

    #[test]
    fn a_cache_folder_that_is_a_symlink_is_refused_as_such() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("home"));
        paths.create_private(uid).unwrap();
        std::fs::remove_dir(paths.cache()).unwrap();
        std::os::unix::fs::symlink(dir.path(), paths.cache()).unwrap();
        let error = paths.create_private(uid).unwrap_err();
        assert!(matches!(error, PrivacyError::NotAFolder { .. }), "{error}");
        assert!(error.to_string().contains("is not a folder"), "{error}");
    }
}
