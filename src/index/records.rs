//! What the daemon keeps of the work it runs (mounts, uploaders, continuous backups, restore jobs)
//! so that a daemon that died takes it up again and any client can ask about it. The index stores
//! each record as JSON of the caller's type and hands it back as that type: no caller parses
//! records by field names. A record this build cannot read (another version wrote it) comes back
//! as [`Unreadable`], never guessed at.

use rusqlite::{params, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Index, IndexError, Result};
use crate::names::VolumeId;
use crate::store::StoreUrl;

/// A record read back: its key (a mount path, a store and volume, a backup location, a job id)
/// and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept<T> {
    pub key: String,
    pub record: std::result::Result<T, Unreadable>,
}

/// Why a kept record could not be read as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {key} is in a shape this build does not know: {reason}")]
pub struct Unreadable {
    pub key: String,
    pub reason: String,
}

fn to_json<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("records serialise")
}

fn kept<T: DeserializeOwned>(key: String, text: &str) -> Kept<T> {
    let record = serde_json::from_str(text).map_err(|e| Unreadable {
        key: key.clone(),
        reason: e.to_string(),
    });
    Kept { key, record }
}

impl Index {
    /// Keeps the record of the mount at `path` (replacing one kept before).
    pub fn record_mount<T: Serialize>(&self, path: &str, record: &T) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO mounts (path, request, created_at_ms) VALUES (?1, ?2, ?3)",
            params![path, to_json(record), crate::time::now_ms() as i64],
        )?;
        Ok(())
    }

    pub fn remove_mount(&self, path: &str) -> Result<()> {
        self.conn().execute("DELETE FROM mounts WHERE path = ?1", [path])?;
        Ok(())
    }

    /// Every kept mount, by path.
    pub fn mounts<T: DeserializeOwned>(&self) -> Result<Vec<Kept<T>>> {
        self.kept_rows("SELECT path, request FROM mounts ORDER BY path")
    }

    /// Keeps the record of a running uploader so a daemon that died starts it again.
    pub fn record_uploader<T: Serialize>(&self, store: &StoreUrl, volume: &VolumeId, record: &T) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO uploaders (store, volume_id, request) VALUES (?1, ?2, ?3)",
            params![store.to_string(), volume.as_str(), to_json(record)],
        )?;
        Ok(())
    }

    pub fn remove_uploader(&self, store: &StoreUrl, volume: &VolumeId) -> Result<()> {
        self.conn().execute(
            "DELETE FROM uploaders WHERE store = ?1 AND volume_id = ?2",
            params![store.to_string(), volume.as_str()],
        )?;
        Ok(())
    }

    /// Every kept uploader, keyed `<store>#<volume>`.
    pub fn uploaders<T: DeserializeOwned>(&self) -> Result<Vec<Kept<T>>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT store, volume_id, request FROM uploaders ORDER BY store, volume_id")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?))
        })?;
        rows.map(|r| {
            let (store, volume, text): (String, String, String) = r.map_err(IndexError::from)?;
            Ok(kept(format!("{store}#{volume}"), &text))
        })
        .collect()
    }

    /// Keeps the record of a running continuous backup of `location`.
    pub fn record_backup<T: Serialize>(&self, location: &str, record: &T) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO backups (location, request) VALUES (?1, ?2)",
            params![location, to_json(record)],
        )?;
        Ok(())
    }

    pub fn remove_backup(&self, location: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM backups WHERE location = ?1", [location])?;
        Ok(())
    }

    /// Every kept backup, by location.
    pub fn backups<T: DeserializeOwned>(&self) -> Result<Vec<Kept<T>>> {
        self.kept_rows("SELECT location, request FROM backups ORDER BY location")
    }

    /// Keeps job `id`, made by `request`, or answers the id of the job the same request made
    /// before (and keeps nothing): one transaction, so two clients starting the same restore get
    /// one job. Requests are compared as their JSON, so give them in one canonical spelling.
    pub fn insert_restore_job<R: Serialize, T: Serialize>(&self, id: &str, request: &R, job: &T) -> Result<String> {
        let request = to_json(request);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing: Option<String> = tx
            .prepare_cached("SELECT id FROM restore_jobs WHERE request = ?1")?
            .query_row([&request], |row| row.get(0))
            .optional()?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        tx.execute(
            "INSERT INTO restore_jobs (id, request, record, updated_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, request, to_json(job), crate::time::now_ms() as i64],
        )?;
        tx.commit()?;
        Ok(id.to_string())
    }

    pub fn update_restore_job<T: Serialize>(&self, id: &str, job: &T) -> Result<()> {
        self.conn().execute(
            "UPDATE restore_jobs SET record = ?2, updated_at_ms = ?3 WHERE id = ?1",
            params![id, to_json(job), crate::time::now_ms() as i64],
        )?;
        Ok(())
    }

    pub fn restore_job<T: DeserializeOwned>(&self, id: &str) -> Result<Option<Kept<T>>> {
        let text: Option<String> = self
            .conn()
            .prepare_cached("SELECT record FROM restore_jobs WHERE id = ?1")?
            .query_row([id], |row| row.get(0))
            .optional()?;
        Ok(text.map(|text| kept(id.to_string(), &text)))
    }

    /// The job `request` made, if any.
    pub fn restore_job_by_request<R: Serialize, T: DeserializeOwned>(&self, request: &R) -> Result<Option<Kept<T>>> {
        let row: Option<(String, String)> = self
            .conn()
            .prepare_cached("SELECT id, record FROM restore_jobs WHERE request = ?1")?
            .query_row([to_json(request)], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(row.map(|(id, text)| kept(id, &text)))
    }

    /// Every restore job, oldest first.
    pub fn restore_jobs<T: DeserializeOwned>(&self) -> Result<Vec<Kept<T>>> {
        self.kept_rows("SELECT id, record FROM restore_jobs ORDER BY rowid")
    }

    fn kept_rows<T: DeserializeOwned>(&self, sql: &str) -> Result<Vec<Kept<T>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
        rows.map(|r| {
            let (key, text) = r.map_err(IndexError::from)?;
            Ok(kept(key, &text))
        })
        .collect()
    }
}
