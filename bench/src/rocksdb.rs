//! A real RocksDB database, through `ldb` (`apt-get install rocksdb-tools`): written with `ldb
//! load`, then read by RocksDB itself, one key (`ldb get`, the warm-start figure) or many in one
//! process (`ldb query`, the selective-read figure). Read as a secondary instance: a mount is
//! read-only, and a secondary writes its own files elsewhere.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context};

/// A database [`create`] wrote: keys `key00000000`... with values of 1000 bytes.
pub struct Database {
    pub keys: u64,
}

impl Database {
    /// A key two thirds of the way through, and its value.
    pub fn picked(&self) -> (String, String) {
        let pick = self.keys * 2 / 3;
        (key(pick), value(pick))
    }
}

/// Writes a database of about `bytes` into `dir` with `ldb load` (compacted, uncompressed).
pub fn create(dir: &Path, bytes: u64) -> anyhow::Result<Database> {
    let keys = (bytes / 1024).max(1000);
    let mut child = Command::new("ldb")
        .arg(format!("--db={}", dir.display()))
        .args([
            "--create_if_missing",
            "--compression_type=no",
            "load",
            "--compact",
            "--disable_wal",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot run ldb (apt-get install rocksdb-tools)")?;
    {
        let mut input = std::io::BufWriter::new(child.stdin.take().expect("piped"));
        for i in 0..keys {
            writeln!(input, "{} ==> {}", key(i), value(i))?;
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "ldb load failed: {status}");
    Ok(Database { keys })
}

/// `ldb get` of one key: the value RocksDB answers.
pub fn get(db: &Path, secondary: &Path, key: &str) -> anyhow::Result<String> {
    let out = ldb(db, secondary)
        .args(["get", key])
        .output()
        .context("cannot run ldb (apt-get install rocksdb-tools)")?;
    if !out.status.success() {
        bail!("ldb get {key}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Looks up `count` keys of `database` (at `db`) in one `ldb query`, and checks every answer.
pub fn lookups(db: &Path, secondary: &Path, database: &Database, count: usize) -> anyhow::Result<()> {
    let ids = super::stats::random_offsets(database.keys, 1, count, 0x15_e74b);
    let mut child = ldb(db, secondary)
        .arg("query")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ldb (apt-get install rocksdb-tools)")?;
    // Written from a thread of its own: `ldb` answers as it reads, and a full stdout pipe must
    // not stop it reading while the questions are still being written.
    let mut input = child.stdin.take().expect("piped");
    let questions: String = ids.iter().map(|&id| format!("get {}\n", key(id))).collect();
    let writer = std::thread::spawn(move || input.write_all(questions.as_bytes()));
    let out = child.wait_with_output()?;
    let written = writer.join();
    // An `ldb` that failed says why on stderr; a write it cut short says less.
    ensure!(
        out.status.success(),
        "ldb query: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    written
        .map_err(|_| anyhow::anyhow!("the thread writing ldb's questions panicked"))?
        .context("write the keys to ldb query")?;
    let answers = String::from_utf8_lossy(&out.stdout);
    let mut answers = answers.lines().filter(|line| !line.trim().is_empty());
    for id in ids {
        let expected = format!("{} ==> {}", key(id), value(id));
        match answers.next() {
            Some(line) if line.trim() == expected => {}
            Some(line) => bail!("ldb query of {} in {} answered {line:.80}", key(id), db.display()),
            None => bail!("ldb query stopped before {} in {}", key(id), db.display()),
        }
    }
    Ok(())
}

fn ldb(db: &Path, secondary: &Path) -> Command {
    let mut command = Command::new("ldb");
    command
        .arg(format!("--db={}", db.display()))
        .arg(format!("--secondary_path={}", secondary.display()));
    command
}

fn key(i: u64) -> String {
    format!("key{i:08}")
}

fn value(i: u64) -> String {
    format!("{i:016x}").repeat(1000 / 16) + &"v".repeat(1000 % 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ldb_installed() -> bool {
        Command::new("ldb").arg("--version").output().is_ok()
    }

    #[test]
    fn lookups_check_every_answer() {
        if !ldb_installed() {
            eprintln!("skipped: no ldb");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (db, secondary) = (dir.path().join("db"), dir.path().join("secondary"));
        let database = create(&db, 2 << 20).unwrap();
        lookups(&db, &secondary, &database, 50).unwrap();
        let (key, value) = database.picked();
        assert_eq!(get(&db, &secondary, &key).unwrap(), value);
        // A database that lacks the keys asked for is an error, not a pass.
        let short = Database {
            keys: database.keys * 4,
        };
        let err = lookups(&db, &secondary, &short, 50).unwrap_err();
        assert!(err.to_string().contains("ldb query"), "{err:#}");
    }
}
