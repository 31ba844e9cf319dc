//! Snapshot expiry on live mounts. A mount keeps serving after its snapshot expires, but an
//! expired snapshot pins nothing: GC may then delete its files, and blocks not yet local become
//! unreadable. So each mounted snapshot reports its state (VALID, EXPIRING within the warning
//! window, EXPIRED) with the bytes not yet local, and the daemon logs one warning per mount and
//! state while bytes are missing — before reads can fail, not after.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lazysnap::control::answers::SnapshotExpiry;
use lazysnap::index::SnapshotRow;
use lazysnap::view::View;

/// Warn this long before validTill, or a fifth of the validity for short-lived snapshots.
const WARNING_MS: u64 = 10 * 60 * 1000;

pub use lazysnap::control::answers::ExpiryPhase as Phase;

pub fn phase(snapshot: &SnapshotRow, now_ms: u64) -> Phase {
    let validity = snapshot.valid_till_ms.saturating_sub(snapshot.created_at_ms);
    let warning = WARNING_MS.min(validity / 5);
    if now_ms >= snapshot.valid_till_ms {
        Phase::Expired
    } else if now_ms + warning >= snapshot.valid_till_ms {
        Phase::Expiring
    } else {
        Phase::Valid
    }
}

/// What `mounts` shows of one mounted snapshot.
pub fn status(view: &View, volume: usize, snapshot: &SnapshotRow, now_ms: u64) -> SnapshotExpiry {
    let phase = phase(snapshot, now_ms);
    // Counting local bytes reads every file's cache map: only once it matters.
    let not_local = (phase != Phase::Valid).then(|| view.bytes_not_local(volume));
    SnapshotExpiry {
        snapshot_uuid: snapshot.uuid.clone(),
        valid_till: snapshot.valid_till_ms,
        state: phase,
        bytes_not_local: not_local,
        at_risk: not_local.is_some_and(|n| n > 0),
    }
}

/// Remembers which (mount, volume) was last warned about in which phase.
#[derive(Default)]
pub struct Watch {
    warned: Mutex<HashMap<(PathBuf, usize), Phase>>,
}

impl Watch {
    /// Logs once per phase change of each mounted snapshot that still has bytes to fetch.
    pub fn check(&self, path: &Path, view: &View, now_ms: u64) {
        for (i, part) in view.parts().iter().enumerate() {
            let Some(snapshot) = &part.snapshot else { continue };
            let phase = phase(snapshot, now_ms);
            let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
            let key = (path.to_path_buf(), i);
            if phase == Phase::Valid || warned.get(&key) == Some(&phase) {
                continue;
            }
            warned.insert(key, phase);
            drop(warned);
            let not_local = view.bytes_not_local(i);
            if not_local == 0 {
                continue;
            }
            let (volume, uuid, valid_till) = (&part.volume, &snapshot.uuid, snapshot.valid_till_ms);
            match phase {
                Phase::Expiring => tracing::warn!(
                    path = %path.display(), %volume, uuid, valid_till, bytes_not_local = not_local,
                    "mounted snapshot expires soon with blocks not yet local: hydrate the mount or release it and mount a newer snapshot"
                ),
                _ => tracing::warn!(
                    path = %path.display(), %volume, uuid, valid_till, bytes_not_local = not_local,
                    "mounted snapshot has expired with blocks not yet local: reads of them fail once GC deletes its files"
                ),
            }
        }
    }

    pub fn forget(&self, path: &Path) {
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, _), _| p != path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(created: u64, valid_till: u64) -> SnapshotRow {
        SnapshotRow {
            volume: lazysnap::names::VolumeId::parse("v").unwrap(),
            uuid: "s".into(),
            manifest_name: "00000000000000000001.json".into(),
            created_at_ms: created,
            valid_till_ms: valid_till,
            state: "COMMITTED".into(),
        }
    }

    #[test]
    fn a_snapshot_expires_soon_within_ten_minutes_or_a_fifth_of_its_validity() {
        let day = snapshot(0, 86_400_000);
        assert_eq!(phase(&day, 86_400_000 - WARNING_MS - 1), Phase::Valid);
        assert_eq!(phase(&day, 86_400_000 - WARNING_MS), Phase::Expiring);
        assert_eq!(phase(&day, 86_400_000), Phase::Expired);
        let short = snapshot(0, 10_000);
        assert_eq!(phase(&short, 7_999), Phase::Valid);
        assert_eq!(phase(&short, 8_000), Phase::Expiring);
        assert_eq!(phase(&short, 10_001), Phase::Expired);
    }
}
