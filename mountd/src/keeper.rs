//! Who keeps mounts' FUSE connections while the daemon restarts, so that open files survive a
//! crash or an upgrade: the daemon's holder process (see [`crate::holder`]), or systemd's file
//! descriptor store when systemd runs the daemon ([`crate::fdstore`]), or nobody.

use lazysnap::fuse::Mount;
use lazysnap::handover::{Held, HolderStatus};

use crate::fdstore::FdStore;
use crate::holder::Holder;

/// `--handover`: where connections are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Handover {
    /// systemd's store when systemd started the daemon (NOTIFY_SOCKET is set), else a holder.
    Auto,
    /// A holder process of the daemon's.
    Holder,
    /// systemd's file descriptor store (needs FileDescriptorStoreMax= in the unit).
    Systemd,
    /// Nobody: mounts end with the daemon.
    None,
}

impl Handover {
    /// What `Auto` means for this process.
    pub fn resolve(self) -> Handover {
        match self {
            Handover::Auto if under_systemd() => Handover::Systemd,
            Handover::Auto => Handover::Holder,
            other => other,
        }
    }
}

/// Whether a service manager that speaks sd_notify started this process.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

pub enum Keeper {
    Holder(Holder),
    Systemd(FdStore),
    Nobody,
}

impl Keeper {
    pub fn name(&self) -> &'static str {
        match self {
            Keeper::Holder(_) => "holder",
            Keeper::Systemd(_) => "systemd",
            Keeper::Nobody => "none",
        }
    }

    /// What a previous daemon left kept.
    pub fn take_all(&self) -> Vec<Held> {
        match self {
            Keeper::Holder(holder) => holder.take_all(),
            Keeper::Systemd(store) => store.take_all(),
            Keeper::Nobody => Vec::new(),
        }
    }

    /// Keeps `mount`'s connection for a successor.
    pub fn keep(&self, mount: &Mount) {
        match self {
            Keeper::Holder(holder) => holder.keep(mount),
            Keeper::Systemd(store) => store.keep(mount),
            Keeper::Nobody => {}
        }
    }

    /// Lets go of the connection of the mount at `path` (unmounted).
    pub fn forget(&self, path: &str) {
        match self {
            Keeper::Holder(holder) => holder.forget(path),
            Keeper::Systemd(store) => store.forget(path),
            Keeper::Nobody => {}
        }
    }

    pub fn status(&self) -> Option<HolderStatus> {
        match self {
            Keeper::Holder(holder) => holder.status(),
            Keeper::Systemd(store) => Some(HolderStatus {
                pid: 1,
                held: store.held(),
            }),
            Keeper::Nobody => None,
        }
    }

    /// False when the keeper was lost and a new one started: every live mount is to be kept again.
    pub fn check(&self) -> bool {
        match self {
            Keeper::Holder(holder) => holder.check(),
            Keeper::Systemd(_) | Keeper::Nobody => true,
        }
    }

    /// A clean stop: nothing is left to hand over.
    pub fn exit(&self) {
        match self {
            Keeper::Holder(holder) => holder.exit(),
            Keeper::Systemd(store) => store.exit(),
            Keeper::Nobody => {}
        }
    }
}
