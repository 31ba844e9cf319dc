//! The one place a publish can race GC: a file the previous manifest does not name, found already
//! in the store and reused, may belong to an old manifest GC is deleting. GC writes a tombstone
//! for each manifest before its last look at the manifests and removes it when it has finished
//! deleting; the publish writes its manifest, then looks for tombstones. If GC did not see the new
//! manifest, the publish sees the tombstone: it waits for that GC to finish and uploads again any
//! reused file that is gone, so the manifest it wrote names only files that exist.

use std::time::{Duration, Instant};

use super::{upload, LocalFile, Progress, PublishError, PublishOptions};
use crate::names::VolumeId;
use crate::store::{layout, Store};

/// A GC that has not finished by then has died: nothing is deleting any more.
const GC_WAIT: Duration = Duration::from_secs(60);

pub(super) async fn restore_reused(
    store: &Store,
    volume: &VolumeId,
    reused: &[&LocalFile],
    options: &PublishOptions,
    progress: &dyn Progress,
) -> Result<(), PublishError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    while gc_running(store, volume).await? {
        if started.elapsed() > GC_WAIT {
            tracing::warn!(volume = %volume, "a GC tombstone has stayed for {GC_WAIT:?}; going on as if that GC died");
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    // Checked even when no tombstone was seen: a GC may have finished between our manifest
    // landing and our look.
    for file in reused {
        if store.head(&layout::file_key(volume, &file.path)).await?.is_none() {
            tracing::warn!(volume = %volume, path = %file.path, "GC deleted a file this publish reused; uploading it again");
            upload(store, &layout::file_key(volume, &file.path), file, options, progress).await?;
        }
    }
    Ok(())
}

pub(crate) async fn gc_running(store: &Store, volume: &VolumeId) -> Result<bool, PublishError> {
    let (_, objects) = store.list_children(&layout::manifests_dir(volume)).await?;
    Ok(objects
        .iter()
        .any(|o| o.key.filename().is_some_and(|n| n.ends_with(layout::COLLECTING_SUFFIX))))
}
