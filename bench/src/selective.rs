//! Engine-shaped selective reads: bytes read through FUSE (the kernel's own readahead included)
//! against bytes fetched from the store, each workload on a fresh node. Column chunks of an
//! analytic engine and point lookups of an LSM engine are modelled with plain reads, the lookups
//! on the default block size and on the finer one an operator publishes a database read by point
//! lookups with (where a cold sequential read shows what the finer grain costs). Then the engines
//! themselves look up keys: SQLite in a database published a block per page, and RocksDB (`ldb`,
//! when installed) at the finer block size.

use std::path::Path;

use lazysnap::publish::PublishOptions;

use super::node::BenchNode;
use super::report::SelectiveFigures;
use super::targets::Target;
use super::{publish_dir_with, reads, rocksdb, say, sqlite, stats, BIG_FILE};

/// Where the volumes are published and the nodes that read them run.
pub struct Setting<'a> {
    pub target: &'a Target,
    pub work: &'a Path,
    pub daemon_args: &'a [String],
    pub namespace: &'a str,
}

/// Keys each engine looks up through a mount.
const ENGINE_LOOKUPS: usize = 200;

/// Publishes what the workloads need beside `default` (the `data` folder at the default block
/// size, as volume and manifest), then runs each on a fresh node.
pub fn measure(on: &Setting, data: &Path, default: (&str, &str), size: u64) -> anyhow::Result<SelectiveFigures> {
    let fine_options = PublishOptions {
        block_size: reads::LOOKUP_BLOCK,
        ..PublishOptions::default()
    };
    let fine_volume = format!("{}/fine", on.namespace);
    let fine_manifest = publish_dir_with(on.target, data, &fine_volume, &fine_options)?;
    let fine = (fine_volume.as_str(), fine_manifest.as_str());

    let chunk_room = size.saturating_sub(reads::COLUMN_CHUNK).max(4096);
    let chunks = stats::random_offsets(chunk_room, 4096, 16, 0xc01_c4a2);
    let (chunk_read, chunk_fetched) = on.read(default, BIG_FILE, &|file| reads::column_chunks(file, &chunks))?;
    let lookups = stats::random_offsets(size - (16 << 10), 4096, 400, 0x15_3e7);
    let (lookup_read, lookup_fetched) = on.read(default, BIG_FILE, &|file| reads::point_lookups(file, &lookups))?;
    let (fine_read, fine_fetched) = on.read(fine, BIG_FILE, &|file| reads::point_lookups(file, &lookups))?;
    let seconds = std::cell::Cell::new(0.0);
    on.read(fine, BIG_FILE, &|file| {
        let (n, took) = reads::sequential(file)?;
        anyhow::ensure!(n == size, "read {n} bytes of {size} through the mount");
        seconds.set(took.as_secs_f64());
        Ok(())
    })?;

    // Each database is about an eighth of the big file: large enough that lookups land far apart.
    let db_bytes = (size / 8).max(4 << 20);
    let folder = tempfile::Builder::new().prefix("sqlite-").tempdir_in(on.work)?;
    let sqlite_db = sqlite::create(&folder.path().join(sqlite::FILE), db_bytes)?;
    let by_page = PublishOptions {
        block_size: sqlite_db.page_size,
        ..PublishOptions::default()
    };
    let sqlite_volume = format!("{}/sqlite", on.namespace);
    let sqlite_manifest = publish_dir_with(on.target, folder.path(), &sqlite_volume, &by_page)?;
    drop(folder);
    let (sqlite_read, sqlite_fetched) = on.read((&sqlite_volume, &sqlite_manifest), sqlite::FILE, &|file| {
        sqlite::lookups(file, sqlite_db.rows, ENGINE_LOOKUPS)
    })?;

    let rocksdb = match super::peers::on_path("ldb") {
        true => Some(rocksdb_lookups(on, db_bytes, &fine_options)?),
        false => {
            say("ldb is not on PATH (apt-get install rocksdb-tools): no RocksDB lookup figure");
            None
        }
    };

    Ok(SelectiveFigures {
        column_chunks_read: chunk_read,
        column_chunks_fetched: chunk_fetched,
        point_lookups_read: lookup_read,
        point_lookups_fetched: lookup_fetched,
        fine_block_size: reads::LOOKUP_BLOCK,
        fine_point_lookups_read: fine_read,
        fine_point_lookups_fetched: fine_fetched,
        fine_cold_sequential_mbps: size as f64 / seconds.get() / 1e6,
        engine_lookups: ENGINE_LOOKUPS,
        sqlite_block_size: sqlite_db.page_size,
        sqlite_lookups_read: sqlite_read,
        sqlite_lookups_fetched: sqlite_fetched,
        rocksdb_lookups_read: rocksdb.map(|(read, _)| read),
        rocksdb_lookups_fetched: rocksdb.map(|(_, fetched)| fetched),
    })
}

/// A RocksDB database of about `bytes`, published with `options`, looked up by `ldb query` (which
/// opens it first: its tables' footers and indexes count as read too).
fn rocksdb_lookups(on: &Setting, bytes: u64, options: &PublishOptions) -> anyhow::Result<(u64, u64)> {
    let folder = tempfile::Builder::new().prefix("rocksdb-").tempdir_in(on.work)?;
    let database = rocksdb::create(folder.path(), bytes)?;
    let volume = format!("{}/rocksdb", on.namespace);
    let manifest = publish_dir_with(on.target, folder.path(), &volume, options)?;
    drop(folder);
    let secondary = tempfile::Builder::new().prefix("ldb-secondary-").tempdir_in(on.work)?;
    // The database is the volume's root folder.
    on.read((&volume, &manifest), "", &|db| {
        rocksdb::lookups(db, secondary.path(), &database, ENGINE_LOOKUPS)
    })
}

impl Setting<'_> {
    /// Mounts `(volume, manifest)` on a fresh node, runs `read` on `file` in it: bytes read
    /// through FUSE, bytes fetched.
    fn read(
        &self,
        (volume, manifest): (&str, &str),
        file: &str,
        read: &dyn Fn(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<(u64, u64)> {
        let node = BenchNode::start(self.target, self.work, self.daemon_args)?;
        let (mounted, _) = node.mount(volume, Some(manifest))?;
        read(&mounted.volume_dir.join(file))?;
        node.read_and_fetched(&mounted.path)
    }
}
