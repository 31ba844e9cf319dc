//! Validated names: volume IDs and file paths inside a volume.
//!
//! Both arrive from outside (command lines, manifests written by others) and both become store keys
//! and paths under a mount, so they are checked once, here, and carried as types afterwards: a
//! `RelPath` can never escape its volume, a `VolumeId` never collides with lazysnap's own keys.

use std::fmt;

/// Names a volume cannot use as a path component: they are the folders lazysnap keeps per volume.
pub const RESERVED_COMPONENTS: &[&str] = &["manifests", "snapshots", "files", "terms"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid volume ID {id:?}: {reason}")]
    Volume { id: String, reason: &'static str },
    #[error("invalid file path {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
}

/// A volume ID such as `kv/<bucketUUID>/kvstore-12` or `ks/table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    pub fn parse(id: &str) -> Result<VolumeId, NameError> {
        let bad = |reason| NameError::Volume {
            id: id.to_string(),
            reason,
        };
        if id.is_empty() || id.len() > 512 {
            return Err(bad("must be 1 to 512 characters"));
        }
        for part in id.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(bad("components must be non-empty and not . or .."));
            }
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if !part.chars().all(allowed) {
                return Err(bad("only letters, digits, '-', '_', '.' and '/' are allowed"));
            }
            if RESERVED_COMPONENTS.contains(&part) {
                return Err(bad("uses a reserved component (manifests, snapshots, files, terms)"));
            }
        }
        Ok(VolumeId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The namespace a volume belongs to: everything before its last component
    /// (`kv/<bucketUUID>` for `kv/<bucketUUID>/kvstore-12`), or the ID itself when it has one component.
    pub fn namespace(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(ns, _)| ns)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relative file path inside a volume: `/`-separated, no empty, `.` or `..` components, no control
/// characters. It cannot name anything outside its volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(path: &str) -> Result<RelPath, NameError> {
        let bad = |reason| NameError::Path {
            path: path.to_string(),
            reason,
        };
        if path.is_empty() {
            return Err(bad("is empty"));
        }
        if path.starts_with('/') {
            return Err(bad("is absolute; paths in a volume are relative"));
        }
        if path.len() > 4096 {
            return Err(bad("is longer than 4096 bytes"));
        }
        for part in path.split('/') {
            if part == ".." {
                return Err(bad("escapes its volume with .."));
            }
            if part.is_empty() || part == "." {
                return Err(bad("has an empty or . component"));
            }
            if part.len() > 255 {
                return Err(bad("has a component longer than 255 bytes"));
            }
            if part.chars().any(|c| c.is_control() || c == '\\') {
                return Err(bad("contains a control character or backslash"));
            }
        }
        Ok(RelPath(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_ids() {
        assert!(VolumeId::parse("kv/0a1b/kvstore-12").is_ok());
        assert_eq!(VolumeId::parse("kv/b/kvstore-1").unwrap().namespace(), "kv/b");
        assert_eq!(VolumeId::parse("single").unwrap().namespace(), "single");
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "a/./b",
            "a b",
            "a/manifests",
            "files",
            "a~b",
        ] {
            assert!(VolumeId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn relative_paths() {
        for good in ["a", "a/b.log", "dir/sub/file.sst", "x..y", ".hidden", "with space"] {
            assert!(RelPath::parse(good).is_ok(), "{good:?} should be accepted");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "a//b",
            "./a",
            "a/\nb",
            "a\\b",
        ] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
