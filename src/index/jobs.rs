//! Node-local records of long-running work the daemon must take up again after it restarts:
//! continuous backups and restore jobs. Records are opaque JSON owned by their writers; the index
//! only keys and stores them.

use rusqlite::{params, OptionalExtension};

use super::{Index, IndexError, Result};

/// A restore job as recorded: its id, the request that made it (canonical JSON, unique, so the
/// same request finds the same job) and the job's own JSON record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreJobRow {
    pub id: String,
    pub request: String,
    pub record: String,
}

impl Index {
    /// Records a running backup (its start request) so a daemon that died starts it again.
    pub fn record_backup(&self, location: &str, request: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO backups (location, request) VALUES (?1, ?2)",
            params![location, request],
        )?;
        Ok(())
    }

    pub fn remove_backup(&self, location: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM backups WHERE location = ?1", [location])?;
        Ok(())
    }

    /// The start requests of the recorded backups.
    pub fn backups(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT request FROM backups ORDER BY location")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.map(|r| r.map_err(IndexError::from)).collect()
    }

    /// Inserts a job, or answers the job already recorded for the same request (and inserts
    /// nothing): one transaction, so two clients starting the same restore get one job.
    pub fn insert_restore_job(&self, job: &RestoreJobRow) -> Result<RestoreJobRow> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existing = find_by_request(&tx, &job.request)?;
        if let Some(existing) = existing {
            return Ok(existing);
        }
        tx.execute(
            "INSERT INTO restore_jobs (id, request, record, updated_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![job.id, job.request, job.record, crate::time::now_ms() as i64],
        )?;
        tx.commit()?;
        Ok(job.clone())
    }

    pub fn update_restore_job(&self, id: &str, record: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE restore_jobs SET record = ?2, updated_at_ms = ?3 WHERE id = ?1",
            params![id, record, crate::time::now_ms() as i64],
        )?;
        Ok(())
    }

    pub fn restore_job(&self, id: &str) -> Result<Option<RestoreJobRow>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT id, request, record FROM restore_jobs WHERE id = ?1")?
            .query_row([id], row)
            .optional()?)
    }

    /// The job the same request made, if any.
    pub fn restore_job_by_request(&self, request: &str) -> Result<Option<RestoreJobRow>> {
        find_by_request(&self.conn(), request)
    }

    /// Every restore job, oldest first.
    pub fn restore_jobs(&self) -> Result<Vec<RestoreJobRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, request, record FROM restore_jobs ORDER BY rowid")?;
        let rows = stmt.query_map([], row)?;
        rows.map(|r| r.map_err(IndexError::from)).collect()
    }
}

fn find_by_request(conn: &rusqlite::Connection, request: &str) -> Result<Option<RestoreJobRow>> {
    Ok(conn
        .prepare_cached("SELECT id, request, record FROM restore_jobs WHERE request = ?1")?
        .query_row([request], row)
        .optional()?)
}

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RestoreJobRow> {
    Ok(RestoreJobRow {
        id: row.get(0)?,
        request: row.get(1)?,
        record: row.get(2)?,
    })
}
