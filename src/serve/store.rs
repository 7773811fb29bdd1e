//! The service's store: one directory holding a SQLite database (WAL mode) with datasets,
//! jobs, their events and models, and folders for the files they name:
//!
//! ```text
//! STORE/mdn.sqlite          datasets, jobs, events, models
//! STORE/datasets/ID.csv|npy uploaded data (ID.columns.json beside an .npy)
//! STORE/jobs/ID/            a job's checkpoint
//! STORE/models/ID.json      trained models, in the format `mdn train` writes
//! STORE/uploads/            bodies being received (removed when done or refused)
//! ```
//!
//! Every state change is one committed transaction. File names are made only from ids the
//! store generated (checked by [`valid_id`]), never from anything a client sent. The rest of
//! the service talks to the store only through [`Store`]'s methods, so that another store
//! (PostgreSQL for several workers) is an addition behind the same interface.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A new id: `prefix` and 16 random hex digits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Whether `id` looks like one the store made (letters, digits and `_` only, at most 40):
/// anything else is refused before it gets near a query or a path.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An uploaded data set.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetRow {
    pub id: String,
    pub name: String,
    /// `csv` or `npy`.
    pub format: String,
    pub rows: usize,
    pub columns: Vec<String>,
    pub bytes: u64,
    pub created: f64,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub status: String,
    pub dataset: String,
    /// What the client sent: target, features and options.
    pub request: Value,
    pub epoch: Option<usize>,
    pub max_epochs: Option<usize>,
    pub train_nll: Option<f64>,
    pub val_nll: Option<f64>,
    pub best_epoch: Option<usize>,
    pub best_val_nll: Option<f64>,
    pub rows_per_sec: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub device: Option<String>,
    pub error: Option<String>,
    pub model: Option<String>,
    pub cancel_requested: bool,
    /// How many times the job was started (more than 1 after a restart resumed it).
    pub attempts: u32,
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
}

/// Progress of a running job, written after each epoch.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub epoch: usize,
    pub max_epochs: usize,
    pub train_nll: f64,
    pub val_nll: Option<f64>,
    pub best_epoch: usize,
    pub best_val_nll: Option<f64>,
    pub rows_per_sec: f64,
    pub eta_seconds: f64,
}

/// Job statuses.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const STATUSES: [&str; 5] = [QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED];

pub struct Store {
    dir: PathBuf,
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> Error {
    Error::Backend(format!("the service's database failed: {e}"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL, rows INTEGER NOT NULL,
    columns TEXT NOT NULL, bytes INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL,
    dataset TEXT NOT NULL, request TEXT NOT NULL, spec TEXT NOT NULL,
    epoch INTEGER, max_epochs INTEGER, train_nll REAL, val_nll REAL, best_epoch INTEGER,
    best_val_nll REAL, rows_per_sec REAL, eta_seconds REAL, device TEXT, error TEXT,
    model TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, started REAL, finished REAL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);
CREATE TABLE IF NOT EXISTS events (
    job TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job, seq));
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, created REAL NOT NULL);
";

const JOB_COLUMNS: &str = "id, status, dataset, request, epoch, max_epochs, train_nll, val_nll, \
    best_epoch, best_val_nll, rows_per_sec, eta_seconds, device, error, model, cancel_requested, \
    attempts, created, started, finished";

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    let request: String = r.get(3)?;
    let opt_usize = |i: usize| -> rusqlite::Result<Option<usize>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as usize))
    };
    Ok(JobRow {
        id: r.get(0)?,
        status: r.get(1)?,
        dataset: r.get(2)?,
        request: serde_json::from_str(&request).unwrap_or(Value::Null),
        epoch: opt_usize(4)?,
        max_epochs: opt_usize(5)?,
        train_nll: r.get(6)?,
        val_nll: r.get(7)?,
        best_epoch: opt_usize(8)?,
        best_val_nll: r.get(9)?,
        rows_per_sec: r.get(10)?,
        eta_seconds: r.get(11)?,
        device: r.get(12)?,
        error: r.get(13)?,
        model: r.get(14)?,
        cancel_requested: r.get::<_, i64>(15)? != 0,
        attempts: r.get::<_, i64>(16)? as u32,
        created: r.get(17)?,
        started: r.get(18)?,
        finished: r.get(19)?,
    })
}

fn dataset_row(r: &rusqlite::Row) -> rusqlite::Result<DatasetRow> {
    let columns: String = r.get(4)?;
    Ok(DatasetRow {
        id: r.get(0)?,
        name: r.get(1)?,
        format: r.get(2)?,
        rows: r.get::<_, i64>(3)? as usize,
        columns: serde_json::from_str(&columns).unwrap_or_default(),
        bytes: r.get::<_, i64>(5)? as u64,
        created: r.get(6)?,
    })
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        for sub in ["", "datasets", "jobs", "models", "uploads"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        // Bodies left half-received by a crash.
        if let Ok(entries) = std::fs::read_dir(dir.join("uploads")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let path = dir.join("mdn.sqlite");
        let conn = Connection::open(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each change is one
        // statement or transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new, unique file for an upload being received.
    pub fn upload_path(&self) -> PathBuf {
        self.dir.join("uploads").join(new_id("up"))
    }

    /// Where dataset `id` of `format` lives.
    pub fn dataset_path(&self, id: &str, format: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.dir.join("datasets").join(format!("{id}.{format}"))
    }

    pub fn model_path(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.dir.join("models").join(format!("{id}.json"))
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.dir.join("jobs").join(id)
    }

    pub fn insert_dataset(&self, d: &DatasetRow) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO datasets (id, name, format, rows, columns, bytes, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    d.id,
                    d.name,
                    d.format,
                    d.rows as i64,
                    serde_json::to_string(&d.columns).expect("names"),
                    d.bytes as i64,
                    d.created
                ],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        self.conn()
            .query_row(
                "SELECT id, name, format, rows, columns, bytes, created FROM datasets WHERE id = ?1",
                [id],
                dataset_row,
            )
            .optional()
            .map_err(db)
    }

    pub fn datasets(&self) -> Result<Vec<DatasetRow>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT id, name, format, rows, columns, bytes, created FROM datasets ORDER BY created")
            .map_err(db)?;
        let rows = st.query_map([], dataset_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    /// Removes a data set unless a queued or running job uses it (then the name of one).
    pub fn delete_dataset(&self, id: &str) -> Result<std::result::Result<bool, String>> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        let busy: Option<String> = tx
            .query_row(
                "SELECT id FROM jobs WHERE dataset = ?1 AND status IN ('queued', 'running') LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(job) = busy {
            return Ok(Err(job));
        }
        let format: Option<String> = tx
            .query_row("SELECT format FROM datasets WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        let Some(format) = format else {
            return Ok(Ok(false));
        };
        tx.execute("DELETE FROM datasets WHERE id = ?1", [id])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        let path = self.dataset_path(id, &format);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(crate::npy::columns_path(&path));
        Ok(Ok(true))
    }

    /// Queues a job: `request` is what the client sent, `spec` the [`crate::job::TrainJob`]
    /// the runner resolves.
    pub fn insert_job(&self, id: &str, dataset: &str, request: &Value, spec: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO jobs (id, status, dataset, request, spec, created) VALUES (?1, 'queued', ?2, ?3, ?4, ?5)",
                params![id, dataset, request.to_string(), spec, now()],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn job(&self, id: &str) -> Result<Option<JobRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
            .map_err(db)
    }

    /// Jobs, oldest first, optionally of one status.
    pub fn jobs(&self, status: Option<&str>) -> Result<Vec<JobRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE ?1 IS NULL OR status = ?1 ORDER BY seq"
            ))
            .map_err(db)?;
        let rows = st.query_map([status], job_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    /// Counts of jobs by status.
    pub fn job_counts(&self) -> Result<Vec<(String, u64)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    /// Takes the oldest queued job and marks it running (one transaction: a job is taken
    /// once). Returns its id and spec.
    pub fn claim_next(&self) -> Result<Option<(String, String)>> {
        let mut c = self.conn();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let next: Option<(String, String)> = tx
            .query_row(
                "SELECT id, spec FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        if let Some((id, _)) = &next {
            tx.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = COALESCE(started, ?2), error = NULL WHERE id = ?1",
                params![id, now()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(next)
    }

    /// Jobs left `running` by a process that stopped (crash, SIGKILL, shutdown) go back to
    /// the queue; they resume from their checkpoints. Returns their ids.
    pub fn requeue_running(&self) -> Result<Vec<String>> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        let ids: Vec<String> = {
            let mut st = tx
                .prepare("SELECT id FROM jobs WHERE status = 'running' ORDER BY seq")
                .map_err(db)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)?
        };
        tx.execute(
            "UPDATE jobs SET status = 'queued' WHERE status = 'running'",
            [],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(ids)
    }

    /// Sets a job's status (and when it finished, for a final one).
    pub fn set_status(&self, id: &str, status: &str) -> Result<()> {
        let finished = matches!(status, SUCCEEDED | FAILED | CANCELLED).then(now);
        self.conn()
            .execute(
                "UPDATE jobs SET status = ?2, finished = COALESCE(?3, finished) WHERE id = ?1",
                params![id, status, finished],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Cancels a queued job (true), or asks a running one to stop (false); None when the
    /// job is finished or unknown.
    pub fn cancel(&self, id: &str) -> Result<Option<bool>> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(db)?;
        let out = match status.as_deref() {
            Some(QUEUED) => {
                tx.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished = ?2 WHERE id = ?1",
                    params![id, now()],
                )
                .map_err(db)?;
                Some(true)
            }
            Some(RUNNING) => {
                tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])
                    .map_err(db)?;
                Some(false)
            }
            _ => None,
        };
        tx.commit().map_err(db)?;
        Ok(out)
    }

    pub fn cancel_requested(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(db)?
            .is_some_and(|v| v != 0))
    }

    pub fn set_device(&self, id: &str, device: &str) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE jobs SET device = ?2 WHERE id = ?1",
                params![id, device],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn set_progress(&self, id: &str, p: &Progress) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE jobs SET epoch = ?2, max_epochs = ?3, train_nll = ?4, val_nll = ?5, best_epoch = ?6, best_val_nll = ?7, rows_per_sec = ?8, eta_seconds = ?9 WHERE id = ?1",
                params![
                    id,
                    p.epoch as i64,
                    p.max_epochs as i64,
                    p.train_nll,
                    p.val_nll,
                    p.best_epoch as i64,
                    p.best_val_nll,
                    p.rows_per_sec,
                    p.eta_seconds
                ],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Ends a job: its final status, the error if it failed, the model if one was written
    /// (registered in the same transaction).
    pub fn finish(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        model: Option<&str>,
    ) -> Result<()> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        let t = now();
        if let Some(m) = model {
            tx.execute(
                "INSERT OR REPLACE INTO models (id, job, created) VALUES (?1, ?2, ?3)",
                params![m, id, t],
            )
            .map_err(db)?;
        }
        tx.execute(
            "UPDATE jobs SET status = ?2, error = ?3, model = ?4, finished = ?5, eta_seconds = 0 WHERE id = ?1",
            params![id, status, error, model, t],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// Appends an event to a job's history; returns its sequence number (1, 2, ...).
    pub fn append_event(&self, job: &str, data: &Value) -> Result<u64> {
        let mut c = self.conn();
        let tx = c.transaction().map_err(db)?;
        let seq: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job = ?1",
                [job],
                |r| r.get(0),
            )
            .map_err(db)?;
        let mut data = data.clone();
        data["seq"] = Value::from(seq);
        tx.execute(
            "INSERT INTO events (job, seq, data) VALUES (?1, ?2, ?3)",
            params![job, seq, data.to_string()],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(seq as u64)
    }

    /// A job's events after `after`, in order, as (seq, JSON text).
    pub fn events(&self, job: &str, after: u64) -> Result<Vec<(u64, String)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT seq, data FROM events WHERE job = ?1 AND seq > ?2 ORDER BY seq")
            .map_err(db)?;
        let rows = st
            .query_map(params![job, after as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    /// Whether model `id` exists (its file is `model_path(id)`).
    pub fn model_exists(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM models WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map_err(db)?
            .is_some())
    }

    /// The data set the job that wrote model `id` trained on (None if either is gone).
    pub fn model_dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        let ds: Option<String> = self
            .conn()
            .query_row(
                "SELECT j.dataset FROM models m JOIN jobs j ON j.id = m.job WHERE m.id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        match ds {
            Some(ds) => self.dataset(&ds),
            None => Ok(None),
        }
    }
}
