//! lazysnap: database snapshots and backups kept in object storage, mounted as read-only FUSE
//! filesystems whose blocks are fetched on first read, verified and cached.
//!
//! One direction of flow: [`store`] -> [`fetch`] -> [`cache`] -> [`fs`] -> [`fuse`] (or the CLI).
//! Manifest [`manifest`] formats turn foreign and native JSON into validated rows of the SQLite
//! [`index`], the only module that speaks SQL; [`catalog`] resolves names into those rows. The
//! library never reads argv or the environment: binaries pass everything in.

pub mod backup;
pub mod cache;
pub mod catalog;
pub mod checksum;
pub mod control;
pub mod failpoint;
pub mod fdpass;
pub mod fetch;
pub mod fs;
pub mod fuse;
pub mod gc;
pub mod handover;
pub mod hydrate;
pub mod index;
pub mod manifest;
pub mod names;
pub mod namespace;
pub mod paths;
pub mod publish;
pub mod restore;
pub mod scylla;
pub mod snapshot;
pub mod store;
pub mod units;

/// Milliseconds since the Unix epoch, the unit of every timestamp lazysnap writes.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
