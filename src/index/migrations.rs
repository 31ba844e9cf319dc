//! Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
//! Append new steps; never edit a released one.

use rusqlite::Connection;

use super::{IndexError, Result};

const STEPS: &[&str] = &[
    // 1: stores, manifests and their files, snapshot records, node-local mounts.
    "CREATE TABLE stores (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE
     );
     CREATE TABLE manifests (
        id INTEGER PRIMARY KEY,
        store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        volume_id TEXT NOT NULL,
        name TEXT NOT NULL,
        term INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        block_size INTEGER NOT NULL,
        file_count INTEGER NOT NULL,
        total_bytes INTEGER NOT NULL,
        UNIQUE (store_id, volume_id, name)
     );
     CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        checksums BLOB NOT NULL,
        low_seqno INTEGER,
        high_seqno INTEGER,
        UNIQUE (manifest_id, path)
     );
     CREATE TABLE snapshots (
        store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        volume_id TEXT NOT NULL,
        uuid TEXT NOT NULL,
        manifest_name TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        valid_till_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (store_id, volume_id, uuid)
     );
     CREATE TABLE mounts (
        path TEXT PRIMARY KEY,
        request TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
     );",
    // 2: the daemon's running uploaders, to start again after a crash.
    "CREATE TABLE uploaders (
        store TEXT NOT NULL,
        volume_id TEXT NOT NULL,
        request TEXT NOT NULL,
        PRIMARY KEY (store, volume_id)
     );",
    // 3: files kept under a key of their own (backup locations, foreign layouts); the daemon's
    // running continuous backups; restore jobs, so any client can ask and a restart resumes them.
    "ALTER TABLE files ADD COLUMN object_key TEXT;
     CREATE TABLE backups (
        location TEXT PRIMARY KEY,
        request TEXT NOT NULL
     );
     CREATE TABLE restore_jobs (
        id TEXT PRIMARY KEY,
        request TEXT NOT NULL UNIQUE,
        record TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
     );",
    // 4: foreign files pinned by ETag; ScyllaDB backups: one row per table of a snapshot (its
    // tablet layout) and per sstable (like ScyllaDB's snapshot_sstables), with the component
    // objects listed at ingest and the TOC's component names once read.
    "ALTER TABLE files ADD COLUMN etag TEXT;
     CREATE TABLE scylla_tables (
        id INTEGER PRIMARY KEY,
        snapshot TEXT NOT NULL,
        keyspace TEXT NOT NULL,
        table_name TEXT NOT NULL,
        table_id TEXT,
        tablets_type TEXT,
        tablet_count INTEGER,
        tablets TEXT,
        UNIQUE (snapshot, keyspace, table_name)
     );
     CREATE TABLE scylla_sstables (
        id INTEGER PRIMARY KEY,
        table_ref INTEGER NOT NULL REFERENCES scylla_tables(id) ON DELETE CASCADE,
        store_id INTEGER NOT NULL REFERENCES stores(id) ON DELETE CASCADE,
        manifest_key TEXT NOT NULL,
        sstable_id TEXT NOT NULL,
        toc_name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        datacenter TEXT,
        rack TEXT,
        node TEXT,
        first_token INTEGER NOT NULL,
        last_token INTEGER NOT NULL,
        data_size INTEGER,
        index_size INTEGER,
        tablet_id INTEGER,
        repaired_at INTEGER,
        created_at_ms INTEGER,
        components TEXT,
        UNIQUE (table_ref, sstable_id)
     );
     CREATE TABLE scylla_objects (
        sstable_ref INTEGER NOT NULL REFERENCES scylla_sstables(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        PRIMARY KEY (sstable_ref, name)
     );",
    // 5: checksums learned of pinned objects on their first verified fetch, so that a restarted
    // process can still check cached blocks and copied files. One row per 1024 blocks: a byte per
    // block (1 = known) and its CRC32C, four bytes little-endian.
    "CREATE TABLE learned_checksums (
        object BLOB NOT NULL,
        block_size INTEGER NOT NULL,
        chunk INTEGER NOT NULL,
        known BLOB NOT NULL,
        crcs BLOB NOT NULL,
        PRIMARY KEY (object, block_size, chunk)
     ) WITHOUT ROWID;",
];

pub(super) fn apply(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let supported = STEPS.len() as i64;
    if version > supported {
        return Err(IndexError::TooNew {
            found: version,
            supported,
        });
    }
    for (i, step) in STEPS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
