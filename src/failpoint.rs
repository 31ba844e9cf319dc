//! Named places where a process can be made to stop dead, so tests can prove that a crash at the
//! worst moment (between the two phases of a snapshot create, half-way through a namespace delete)
//! leaves state a later run repairs. Disarmed unless a binary arms one; the library itself never
//! reads the environment.

use std::sync::OnceLock;

static ARMED: OnceLock<String> = OnceLock::new();

/// Makes the process hang at the failpoint `name`, to be killed there. Only the first call counts.
pub fn arm(name: &str) {
    let _ = ARMED.set(name.to_string());
}

/// At an armed failpoint: says so on standard error and waits forever for the kill.
pub fn reached(name: &str) {
    if ARMED.get().is_some_and(|armed| armed == name) {
        eprintln!("lazysnap: failpoint {name} reached; waiting to be killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// At an armed failpoint inside the daemon's async work: says so on standard error and never
/// carries on, without blocking the thread (the rest of the daemon keeps answering, so a test can
/// ask for its pid and kill it there).
pub async fn stopped_at(name: &str) {
    if ARMED.get().is_some_and(|armed| armed == name) {
        eprintln!("lazysnap: failpoint {name} reached; waiting to be killed");
        std::future::pending::<()>().await;
    }
}

/// At an armed failpoint that slows a step down: waits `how_long`, then carries on. For races a
/// test must make certain (what happens to a request that arrives while a step runs).
pub async fn delayed(name: &str, how_long: std::time::Duration) {
    if ARMED.get().is_some_and(|armed| armed == name) {
        tracing::warn!(failpoint = name, ?how_long, "failpoint reached; waiting");
        tokio::time::sleep(how_long).await;
    }
}

/// Every failpoint, for `--help` texts and for tests that arm them.
pub const SNAPSHOT_RECORDED: &str = "snapshot-create-recorded";
pub const NAMESPACE_FILES_DELETED: &str = "namespace-delete-files-deleted";
/// Publish: every data file is in the store, the manifest that makes them visible is not.
pub const PUBLISH_DATA_UPLOADED: &str = "publish-data-uploaded";
/// GC: its tombstones are written, nothing is deleted yet.
pub const GC_TOMBSTONES_WRITTEN: &str = "gc-tombstones-written";
/// GC: the doomed manifests are deleted, their files not yet.
pub const GC_MANIFESTS_DELETED: &str = "gc-manifests-deleted";
/// Snapshot release: the released marker is written, the record and outcome not yet deleted.
pub const SNAPSHOT_RELEASE_MARKED: &str = "snapshot-release-marked";
/// A starting daemon holds its admin lock and has not yet read the mounts its predecessor
/// recorded: delayed 2 s, not killed (a mount asked for meanwhile must wait).
pub const MOUNTS_RECOVERY_STARTED: &str = "mounts-recovery-started";
/// Backup round: every changed file is placed in the location, the generation naming them not
/// yet written.
pub const BACKUP_FILES_PLACED: &str = "backup-files-placed";
/// Restore copy: one file is complete under its final name, others are not.
pub const RESTORE_FILE_COMPLETED: &str = "restore-file-completed";
/// Hydration: one piece is fetched into the disk cache, the rest not.
pub const HYDRATION_PIECE_CACHED: &str = "hydration-piece-cached";
