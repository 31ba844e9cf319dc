//! A real SQLite database for the selective-read figures: written locally, published, then
//! queried by key through a mount by SQLite itself, so the figure is what the engine reads rather
//! than a model of it. Each lookup walks the key's index B-tree, then the table's, a 4 KiB page
//! per level, at places unrelated to the last lookup's.

use std::path::Path;

use anyhow::{ensure, Context};
use rusqlite::{Connection, OpenFlags};

/// Bytes of each row's value: a few rows per 4 KiB page, as in a table of small records.
const VALUE_BYTES: usize = 400;

/// The database file's name inside the folder it is published from.
pub const FILE: &str = "rows.sqlite";

/// A database [`create`] wrote.
pub struct Database {
    pub rows: u64,
    /// SQLite's page: what it reads at a time, and the block size it is published with.
    pub page_size: u64,
}

/// Writes a database of about `bytes` at `path`: `rows(id INTEGER PRIMARY KEY, k TEXT UNIQUE,
/// v BLOB)`, each `v` derived from its `id`, with SQLite's default page size.
pub fn create(path: &Path, bytes: u64) -> anyhow::Result<Database> {
    let rows = (bytes / (VALUE_BYTES as u64 + 80)).max(1000);
    let mut db = Connection::open(path).with_context(|| format!("create {}", path.display()))?;
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE rows (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, v BLOB NOT NULL);",
    )?;
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO rows (id, k, v) VALUES (?1, ?2, ?3)")?;
        for id in 0..rows {
            insert.execute((id as i64, key(id), value(id)))?;
        }
    }
    tx.commit()?;
    let page_size: i64 = db.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    Ok(Database {
        rows,
        page_size: page_size as u64,
    })
}

/// Looks up `count` keys of a database of `rows` rows at `path`, opened read-only and immutable
/// as an engine attaching a snapshot would, and checks each value it gets back.
pub fn lookups(path: &Path, rows: u64, count: usize) -> anyhow::Result<()> {
    let db = Connection::open_with_flags(
        format!("file:{}?immutable=1", path.display()),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("open {} with SQLite", path.display()))?;
    let mut select = db.prepare("SELECT v FROM rows WHERE k = ?1")?;
    for id in super::stats::random_offsets(rows, 1, count, 0x5_9113) {
        let got: Vec<u8> = select
            .query_row([key(id)], |row| row.get(0))
            .with_context(|| format!("look up {} in {}", key(id), path.display()))?;
        ensure!(
            got == value(id),
            "{} in {} has the wrong value",
            key(id),
            path.display()
        );
    }
    Ok(())
}

fn key(id: u64) -> String {
    format!("key{id:010}")
}

fn value(id: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_BYTES];
    let mut state = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    super::stats::fill_random(&mut v, &mut state);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_looked_up_has_its_own_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let db = create(&path, 2 << 20).unwrap();
        assert!(db.rows >= 4000, "{} rows", db.rows);
        assert_eq!(db.page_size, 4096);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!((1 << 20..8 << 20).contains(&size), "{size} bytes");
        lookups(&path, db.rows, 50).unwrap();
    }

    #[test]
    fn a_changed_value_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let rows = create(&path, 1 << 20).unwrap().rows;
        let db = Connection::open(&path).unwrap();
        db.execute("UPDATE rows SET v = zeroblob(400)", []).unwrap();
        drop(db);
        let err = lookups(&path, rows, 5).unwrap_err();
        assert!(err.to_string().contains("wrong value"), "{err:#}");
    }
}
