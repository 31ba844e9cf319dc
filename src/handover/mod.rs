//! Keeping FUSE connections alive across the death of the daemon that serves them.
//!
//! A FUSE connection lives as long as any process holds its `/dev/fuse` file. The daemon hands a
//! copy of each mount's device file, with the state a successor needs, to a **holder**: a small
//! process that does nothing but keep them (it reads no requests, allocates nothing per request,
//! and never touches a store). When the daemon dies or is restarted on purpose, the kernel keeps
//! every request queued instead of failing it; the next daemon takes the files back from the holder
//! and serves on, and the kernel resends what the dead daemon had read but not answered.
//!
//! - The holder drops a file once its connection ends (unmounted), and everything when told to
//!   exit (a clean `daemon stop`).
//! - With no daemon connected for `grace`, it lets every connection go, so that mounts whose
//!   daemon never comes back fail (ENOTCONN) rather than hang forever.
//! - If the holder dies while the daemon lives, nothing is lost: the daemon still has every file,
//!   starts a new holder and hands them over again. Only if both die at once do the mounts end, as
//!   they did before handover existed (the next daemon mounts them again).
//!
//! The protocol is one message per `SOCK_SEQPACKET` datagram, at most one descriptor attached;
//! see [`protocol`].

mod holder;
mod link;
mod protocol;

pub use holder::{run as run_holder, HolderConfig};
pub use link::{Held, HolderLink, HolderStatus};
