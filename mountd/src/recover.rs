//! What a starting daemon does with the mounts a previous one recorded: a mount whose connection
//! the holder kept is taken over live (open files never notice); one whose connection died with
//! its daemon is detached and mounted again at the same path, showing the same manifests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lazysnap::control::records::MountRecord;
use lazysnap::control::OpError;
use lazysnap::fuse::{self, SessionState};
use lazysnap::handover::Held;
use lazysnap::index::Kept;
use lazysnap::store::StoreUrl;

use crate::mounts::{Active, Mounts};

type MountRow = Kept<MountRecord>;

impl Mounts {
    /// Brings back every recorded mount: live ones handed over through `held` first (their
    /// readers are waiting), then the others, which need their stores. `admin` is the admin lock,
    /// taken before the control socket listened: a mount asked for meanwhile waits, as otherwise
    /// its fresh record would be read here as a dead mount and detached from under its caller.
    pub async fn recover(&self, held: Vec<Held>, admin: tokio::sync::OwnedMutexGuard<()>) {
        let _admin = admin;
        lazysnap::failpoint::delayed(
            lazysnap::failpoint::MOUNTS_RECOVERY_STARTED,
            std::time::Duration::from_secs(2),
        )
        .await;
        let rows = self.index.mounts::<MountRecord>().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the recorded mounts");
            Vec::new()
        });
        let mut held: HashMap<String, Held> = held.into_iter().map(|h| (h.name.clone(), h)).collect();
        let mut dead = Vec::new();
        let mut adopted = 0;
        for row in rows {
            match held.remove(&row.key) {
                Some(live) => match self.adopt(&row, live).await {
                    Ok(()) => adopted += 1,
                    Err(e) => {
                        tracing::warn!(path = row.key, error = %e, "cannot take over a live mount; mounting it again");
                        self.holder.forget(&row.key);
                        dead.push(row);
                    }
                },
                None => dead.push(row),
            }
        }
        // Held without a record: unmounted by a daemon that died before telling the holder, so
        // the connection has ended. Nothing is detached: whatever is mounted there now is not it.
        for name in held.into_keys() {
            tracing::info!(path = name, "letting go of a held connection nobody recorded");
            self.holder.forget(&name);
        }
        if adopted > 0 {
            tracing::info!(mounts = adopted, "took over live mounts");
        }
        for row in &dead {
            // The dead FUSE connection a crashed daemon left; the row is recorded again below.
            if let Err(e) = fuse::detach_path(Path::new(&row.key)) {
                tracing::debug!(path = %row.key, error = %e, "nothing to detach");
            }
            let _ = self.index.remove_mount(&row.key);
        }
        for row in dead {
            self.remount(row).await;
        }
    }

    /// Serves a live connection a previous daemon handed over, building the same tree from the
    /// index alone: a store that is slow or gone must not keep its open files waiting.
    async fn adopt(&self, row: &MountRow, held: Held) -> Result<(), OpError> {
        let record = row.record.clone().map_err(|e| OpError::invalid(e.to_string()))?;
        let state: SessionState = serde_json::from_slice(&held.state)
            .map_err(|e| OpError::invalid(format!("held state of another daemon version: {e}")))?;
        let fs = self.recorded_filesystem(&record).await?;
        let mount =
            fuse::adopt(&self.tuning.server, fs, held.fd, &state).map_err(|e| OpError::internal(e.to_string()))?;
        let store: StoreUrl = record.request.store.parse()?;
        self.serve(Active {
            mount,
            store,
            created_dir: record.created_dir,
            record,
        });
        Ok(())
    }

    /// Mounts again, at the same path and showing the same manifests, a mount whose connection
    /// died with its daemon, resuming its hydration. One that cannot come back is logged and
    /// dropped.
    async fn remount(&self, row: MountRow) {
        let record = match row.record {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(path = %row.key, error = %e, "not restoring a mount recorded by an older daemon");
                return;
            }
        };
        match self
            .mount_as(record.request.clone(), Some(&record), crate::mounts::server_ids())
            .await
        {
            Ok(path) => tracing::info!(
                path,
                hydrating = record.request.hydrate.is_some(),
                "restored a mount after a restart"
            ),
            Err(e) => {
                tracing::warn!(path = %row.key, error = %e, "cannot restore a mount after a restart");
                // A folder the previous daemon made goes, as its unmount would have removed it.
                if record.created_dir {
                    let _ = std::fs::remove_dir(PathBuf::from(&row.key));
                }
            }
        }
    }
}
