//! lazysnap: database snapshots and backups kept in object storage, mounted as read-only FUSE
//! filesystems whose blocks are fetched on first read, verified and cached.
//!
//! Data flows one way: object store -> fetcher -> cache -> reader -> FUSE or CLI. The modules sit
//! in layers; a module uses only modules of the layers above it in this list and those listed
//! before it in its own layer (the `layers` test holds the crate to this list, so it is the rule,
//! not a wish):
//!
//! <!-- layers -->
//! 1. foundation: time units names paths process failpoint fdpass access
//! 2. checksums: checksum
//! 3. store: store
//! 4. read path: cache fetch
//! 5. manifest formats: manifest
//! 6. index: index
//! 7. chains: chain
//! 8. lifecycle: publish snapshot gc namespace backup uploader
//! 9. views: catalog reconcile scylla view
//! 10. filesystem: fs fuse handover
//! 11. jobs: hydrate restore warm
//! 12. control: fusion control
//! <!-- /layers -->
//!
//! - [`store`] is the only module that talks to S3, GCS, Azure or a local directory; [`fetch`]
//!   reads blocks through it into the [`cache`], verified against their checksums.
//! - [`manifest`] formats (lazysnap's own, Magma backup generations, ScyllaDB manifests) turn
//!   foreign JSON into validated values, which the SQLite [`index`] keeps; the index is the only
//!   module that speaks SQL.
//! - [`chain`] reads a volume's chain of log manifests and a backup location's generations into the
//!   index; the lifecycle operations ([`publish`], [`snapshot`], [`gc`], [`namespace`], [`backup`],
//!   [`uploader`]) write and prune them.
//! - [`catalog`] resolves what an operator names (a selector) into index rows; [`view`] turns those
//!   rows into a [`view::View`]: the files shown and the fetcher that reads them, which the FUSE
//!   filesystem ([`fs`], served by [`fuse`]), `ls`/`cat`/`stat` and restores all read.
//! - [`hydrate`] and [`restore`] are jobs over a view; [`control`] is the daemon's API.
//!
//! The library never reads argv or the environment: binaries pass everything in.

pub mod access;
pub mod backup;
pub mod cache;
pub mod catalog;
pub mod chain;
pub mod checksum;
pub mod control;
pub mod failpoint;
pub mod fdpass;
pub mod fetch;
pub mod fs;
pub mod fuse;
pub mod fusion;
pub mod gc;
pub mod handover;
pub mod hydrate;
pub mod index;
pub mod manifest;
pub mod names;
pub mod namespace;
pub mod paths;
pub mod process;
pub mod publish;
pub mod reconcile;
pub mod restore;
pub mod scylla;
pub mod snapshot;
pub mod store;
pub mod time;
pub mod units;
pub mod uploader;
pub mod view;
pub mod warm;

#[cfg(test)]
mod layers;
