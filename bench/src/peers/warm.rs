//! The warm-start figure: the time from `mount` to the first correct RocksDB `ldb get` through
//! the mount, cold (no first-touch profile in the store) and warm (the profile the cold run left),
//! beside the time to download the whole database first (a restore) and get the key from that
//! copy, each on a fresh node.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::super::node::BenchNode;
use super::Work;

/// A RocksDB database published for the figure, and one of its keys.
pub struct Database<'a> {
    pub volume: &'a str,
    pub manifest: &'a str,
    pub key: &'a str,
    pub value: &'a str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmFigures {
    pub cold_ms: f64,
    pub warm_ms: f64,
    pub download_ms: f64,
    /// The download's `ldb get` alone, on the local copy: the floor under both mounts' figures.
    pub ldb_local_ms: f64,
}

/// One cold run, one warm run and one download, each on a fresh node.
pub fn measure(w: &Work, db: &Database) -> anyhow::Result<WarmFigures> {
    let store = w.target.open()?;
    let volume = lazysnap::names::VolumeId::parse(db.volume)?;
    let profile = lazysnap::warm::profile_key(&volume);
    // Cold: no profile (a previous run's is removed first, with its pack).
    let _ = lazysnap_tools::block_on(store.delete(&profile));
    let _ = lazysnap_tools::block_on(store.delete(&lazysnap::store::layout::first_touch_pack_key(&volume)));
    // The node that ran cold saves its first touches as its mount ends: wait for them.
    let saved = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while lazysnap_tools::block_on(store.get(&profile)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "the cold run left no first-touch profile");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    let cold = first_get(w, db, &saved)?;
    let warm = first_get(w, db, &|| Ok(()))?;
    let (restored, ldb_local) = download_first(w, db)?;
    Ok(WarmFigures {
        cold_ms: cold.as_secs_f64() * 1e3,
        warm_ms: warm.as_secs_f64() * 1e3,
        download_ms: (restored + ldb_local).as_secs_f64() * 1e3,
        ldb_local_ms: ldb_local.as_secs_f64() * 1e3,
    })
}

/// Restore the whole database on a fresh node, then `ldb get` from the local copy: the time to
/// the same first answer the mounts are timed to, as the restore's and the `ldb get`'s.
fn download_first(w: &Work, db: &Database) -> anyhow::Result<(Duration, Duration)> {
    let dest = tempfile::Builder::new().prefix("restored-").tempdir_in(w.work)?;
    let secondary = tempfile::Builder::new().prefix("ldb-secondary-").tempdir_in(w.work)?;
    let restored = super::restore_into(w, (db.volume, db.manifest), dest.path())?;
    let started = Instant::now();
    let current = walkdir::WalkDir::new(dest.path())
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name() == "CURRENT")
        .context("the restored database has no CURRENT file")?;
    let dir = current.path().parent().context("CURRENT has a folder")?;
    let got = crate::rocksdb::get(dir, secondary.path(), db.key)?;
    anyhow::ensure!(
        got == db.value,
        "ldb get {} on the restored copy answered {got:?}",
        db.key
    );
    Ok((restored, started.elapsed()))
}

/// Mount on a fresh node, then `ldb get` through it (as a secondary instance: the mount is
/// read-only): the time from the mount request to the right value. `after` runs once the mount
/// is gone, before the node stops.
fn first_get(w: &Work, db: &Database, after: &dyn Fn() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut daemon_args = w.daemon_args.to_vec();
    daemon_args.push("--first-touch=64M".into());
    let node = BenchNode::start(w.target, w.work, &daemon_args)?;
    let secondary = tempfile::Builder::new().prefix("ldb-secondary-").tempdir_in(w.work)?;
    let started = Instant::now();
    let (mounted, _) = node.mount(db.volume, Some(db.manifest))?;
    let got = crate::rocksdb::get(&mounted.volume_dir, secondary.path(), db.key)?;
    let took = started.elapsed();
    anyhow::ensure!(got == db.value, "ldb get {} answered {got:?}", db.key);
    node.unmount(&mounted)?;
    after()?;
    Ok(took)
}
