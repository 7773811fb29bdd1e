//! The SQLite store: `DIR/mdn.sqlite` (WAL mode), owned by one process at a time through a
//! lock on `DIR/mdn.lock` (which the system releases when the process ends, however it
//! ends). That process's workers are threads, so leases here only matter within it; at
//! start-up every job still `running` was left by a process that died, and is re-queued.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use super::*;

/// Schema versions, applied in order (`PRAGMA user_version` says how many ran).
const MIGRATIONS: [&str; 2] = [
    "
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
",
    // Leases, and idempotency keys of submissions and uploads.
    "
ALTER TABLE jobs ADD COLUMN lease TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires REAL;
ALTER TABLE jobs ADD COLUMN worker TEXT;
ALTER TABLE jobs ADD COLUMN vanished INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX jobs_idempotency ON jobs(idempotency_key);
ALTER TABLE datasets ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX datasets_idempotency ON datasets(idempotency_key);
",
];

const JOB_COLUMNS: &str = "id, status, dataset, request, epoch, max_epochs, train_nll, val_nll, \
    best_epoch, best_val_nll, rows_per_sec, eta_seconds, device, error, model, cancel_requested, \
    attempts, worker, created, started, finished";

const DATASET_COLUMNS: &str = "id, name, format, rows, columns, bytes, created";

fn db(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::DiskFull
    {
        return Error::Io {
            path: "the store's database".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
    }
    Error::Store(format!("the service's SQLite database failed: {e}"))
}

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
        worker: r.get(17)?,
        created: r.get(18)?,
        started: r.get(19)?,
        finished: r.get(20)?,
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

/// See the module's description.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Held while the store is open: the lock that keeps a second process out.
    _owner: std::fs::File,
}

/// Takes `DIR/mdn.lock`, writing this process's id into it; refuses when another process
/// holds it.
fn take_ownership(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("mdn.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(Error::config(format!(
                "store {} is in use by process {}: one process serves a SQLite store at a time (stop that one first, or give another --store; several machines share a PostgreSQL store)",
                dir.display(),
                if pid.is_empty() { "?" } else { pid }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.flush();
    Ok(file)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, as its only process.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let owner = take_ownership(dir)?;
        let path = dir.join("mdn.sqlite");
        let conn = Connection::open(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        // The write-ahead log shrinks back to this after each checkpoint, rather than
        // keeping its largest size (which on a nearly full disk is room the database needs).
        conn.pragma_update(None, "journal_size_limit", 4 << 20)
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .map_err(db)? as usize;
        if version > MIGRATIONS.len() {
            return Err(Error::config(format!(
                "store {}: its database is of a newer mdn (schema {version}; this one knows {})",
                dir.display(),
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(&format!(
                "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))
            .map_err(db)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            _owner: owner,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (each change is one
        // statement or transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Appends an event inside `tx`.
fn append_tx(tx: &Transaction, job: &str, data: &Value) -> rusqlite::Result<Posted> {
    let seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job = ?1",
        [job],
        |r| r.get(0),
    )?;
    let text = numbered(data, seq as u64);
    tx.execute(
        "INSERT INTO events (job, seq, data) VALUES (?1, ?2, ?3)",
        params![job, seq, text],
    )?;
    Ok(Posted {
        job: job.to_string(),
        seq: seq as u64,
        data: text,
    })
}

/// Whether `lease` holds job `id` (inside `tx`).
fn holds(tx: &Transaction, id: &str, lease: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM jobs WHERE id = ?1 AND lease = ?2 AND status = 'running'",
            params![id, lease],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

impl SqliteStore {
    fn tx<T>(&self, f: impl FnOnce(&Transaction) -> rusqlite::Result<T>) -> Result<T> {
        let mut c = self.conn();
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let out = f(&tx).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn listen(&self, _on: Arc<dyn Fn(Notice) + Send + Sync>) -> Result<bool> {
        Ok(false)
    }

    fn insert_dataset(&self, d: &DatasetRow, key: Option<&str>) -> Result<Option<DatasetRow>> {
        self.tx(|tx| {
            if let Some(k) = key {
                let first = tx
                    .query_row(
                        &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE idempotency_key = ?1"),
                        [k],
                        dataset_row,
                    )
                    .optional()?;
                if first.is_some() {
                    return Ok(first);
                }
            }
            tx.execute(
                "INSERT INTO datasets (id, name, format, rows, columns, bytes, created, idempotency_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    d.id,
                    d.name,
                    d.format,
                    d.rows as i64,
                    serde_json::to_string(&d.columns).expect("names"),
                    d.bytes as i64,
                    d.created,
                    key
                ],
            )?;
            Ok(None)
        })
    }

    fn dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE id = ?1"),
                [id],
                dataset_row,
            )
            .optional()
            .map_err(db)
    }

    fn datasets(&self) -> Result<Vec<DatasetRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {DATASET_COLUMNS} FROM datasets ORDER BY created, id"
            ))
            .map_err(db)?;
        let rows = st.query_map([], dataset_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn delete_dataset(&self, id: &str) -> Result<Deleted> {
        self.tx(|tx| {
            let busy: Option<String> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE dataset = ?1 AND status IN ('queued', 'running') ORDER BY seq LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(job) = busy {
                return Ok(Deleted::InUse(job));
            }
            let format: Option<String> = tx
                .query_row("SELECT format FROM datasets WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(format) = format else {
                return Ok(Deleted::Missing);
            };
            tx.execute("DELETE FROM datasets WHERE id = ?1", [id])?;
            Ok(Deleted::Removed { format })
        })
    }

    fn insert_job(&self, job: &NewJob, key: Option<&str>) -> Result<Queued> {
        self.tx(|tx| {
            if let Some(k) = key {
                let first = tx
                    .query_row(
                        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?1"),
                        [k],
                        job_row,
                    )
                    .optional()?;
                if let Some(first) = first {
                    return Ok(Queued::Replayed(Box::new(first)));
                }
            }
            tx.execute(
                "INSERT INTO jobs (id, status, dataset, request, spec, created, idempotency_key) VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6)",
                params![job.id, job.dataset, job.request.to_string(), job.spec, now(), key],
            )?;
            let posted =
                append_tx(tx, job.id, &serde_json::json!({"type": "status", "status": QUEUED}))?;
            Ok(Queued::New(posted))
        })
    }

    fn job(&self, id: &str) -> Result<Option<JobRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
            .map_err(db)
    }

    fn jobs(&self, status: Option<&str>) -> Result<Vec<JobRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE ?1 IS NULL OR status = ?1 ORDER BY seq"
            ))
            .map_err(db)?;
        let rows = st.query_map([status], job_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn job_counts(&self) -> Result<Vec<(String, u64)>> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status")
            .map_err(db)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn claim_next(&self, worker: &str, lease_seconds: f64) -> Result<Option<Claim>> {
        self.tx(|tx| {
            let next: Option<(String, String)> = tx
                .query_row(
                    "SELECT id, spec FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, spec)) = next else {
                return Ok(None);
            };
            let lease = new_id("lease");
            let t = now();
            let attempt: i64 = tx.query_row(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = COALESCE(started, ?2), error = NULL, lease = ?3, lease_expires = ?4, worker = ?5 WHERE id = ?1 RETURNING attempts",
                params![id, t, lease, t + lease_seconds, worker],
                |r| r.get(0),
            )?;
            Ok(Some(Claim {
                id,
                spec,
                lease,
                attempt: attempt as u32,
            }))
        })
    }

    fn renew(&self, id: &str, lease: &str, lease_seconds: f64) -> Result<Renewal> {
        self.tx(|tx| {
            let cancel: Option<i64> = tx
                .query_row(
                    "UPDATE jobs SET lease_expires = ?3 WHERE id = ?1 AND lease = ?2 AND status = 'running' RETURNING cancel_requested",
                    params![id, lease, now() + lease_seconds],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(Renewal::from_cancel(cancel.map(|c| c != 0)))
        })
    }

    fn requeue_expired(&self, max_attempts: u32, all: bool) -> Result<Vec<Posted>> {
        self.tx(|tx| {
            let expired: Vec<(String, i64, i64)> = {
                let mut st = tx.prepare(
                    "SELECT id, attempts, vanished FROM jobs WHERE status = 'running' AND (?1 OR lease_expires IS NULL OR lease_expires < ?2) ORDER BY seq",
                )?;
                let rows = st.query_map(params![all, now()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::new();
            for (id, attempts, vanished) in expired {
                let v = Vanished::new(attempts as u32, vanished as u32, max_attempts);
                tx.execute(
                    "UPDATE jobs SET status = ?2, vanished = ?3, lease = NULL, lease_expires = NULL, worker = NULL, error = ?4, finished = ?5 WHERE id = ?1",
                    params![id, v.status, v.count, v.error(), v.finished],
                )?;
                out.push(append_tx(tx, &id, &v.event)?);
            }
            Ok(out)
        })
    }

    fn cancel(&self, id: &str) -> Result<Cancel> {
        self.tx(|tx| {
            let status: Option<String> = tx
                .query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            Ok(match status.as_deref() {
                Some(QUEUED) => {
                    tx.execute(
                        "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished = ?2 WHERE id = ?1",
                        params![id, now()],
                    )?;
                    Cancel::Cancelled(append_tx(
                        tx,
                        id,
                        &serde_json::json!({"type": "status", "status": CANCELLED}),
                    )?)
                }
                Some(RUNNING) => {
                    tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])?;
                    Cancel::Requested
                }
                Some(s) => Cancel::Finished(s.to_string()),
                None => Cancel::Missing,
            })
        })
    }

    fn set_device(&self, id: &str, lease: &str, device: &str) -> Result<bool> {
        self.tx(|tx| {
            Ok(tx.execute(
                "UPDATE jobs SET device = ?3 WHERE id = ?1 AND lease = ?2 AND status = 'running'",
                params![id, lease, device],
            )? == 1)
        })
    }

    fn set_progress(
        &self,
        id: &str,
        lease: &str,
        lease_seconds: f64,
        p: &Progress,
    ) -> Result<Renewal> {
        self.tx(|tx| {
            let cancel: Option<i64> = tx.query_row(
                "UPDATE jobs SET epoch = ?3, max_epochs = ?4, train_nll = ?5, val_nll = ?6, best_epoch = ?7, best_val_nll = ?8, rows_per_sec = ?9, eta_seconds = ?10, lease_expires = ?11 WHERE id = ?1 AND lease = ?2 AND status = 'running' RETURNING cancel_requested",
                params![
                    id,
                    lease,
                    p.epoch as i64,
                    p.max_epochs as i64,
                    p.train_nll,
                    p.val_nll,
                    p.best_epoch as i64,
                    p.best_val_nll,
                    p.rows_per_sec,
                    p.eta_seconds,
                    now() + lease_seconds
                ],
                |r| r.get(0),
            ).optional()?;
            Ok(Renewal::from_cancel(cancel.map(|c| c != 0)))
        })
    }

    fn end(
        &self,
        id: &str,
        lease: &str,
        outcome: &Outcome,
        event: &Value,
    ) -> Result<Option<Posted>> {
        self.tx(|tx| {
            if !holds(tx, id, lease)? {
                return Ok(None);
            }
            if outcome.status == QUEUED {
                tx.execute(
                    "UPDATE jobs SET status = 'queued', lease = NULL, lease_expires = NULL, worker = NULL WHERE id = ?1",
                    [id],
                )?;
            } else {
                let t = now();
                if let Some(m) = outcome.model {
                    tx.execute(
                        "INSERT OR REPLACE INTO models (id, job, created) VALUES (?1, ?2, ?3)",
                        params![m, id, t],
                    )?;
                }
                tx.execute(
                    "UPDATE jobs SET status = ?2, error = ?3, model = ?4, finished = ?5, eta_seconds = 0, lease = NULL, lease_expires = NULL, worker = NULL WHERE id = ?1",
                    params![id, outcome.status, outcome.error, outcome.model, t],
                )?;
            }
            append_tx(tx, id, event).map(Some)
        })
    }

    fn append_event(&self, job: &str, lease: Option<&str>, data: &Value) -> Result<Option<Posted>> {
        self.tx(|tx| {
            if let Some(l) = lease
                && !holds(tx, job, l)?
            {
                return Ok(None);
            }
            append_tx(tx, job, data).map(Some)
        })
    }

    fn events(&self, job: &str, after: u64) -> Result<Vec<(u64, String)>> {
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

    fn model_exists(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM models WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map_err(db)?
            .is_some())
    }

    fn model_dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        self.conn()
            .query_row(
                "SELECT d.id, d.name, d.format, d.rows, d.columns, d.bytes, d.created FROM models m JOIN jobs j ON j.id = m.job JOIN datasets d ON d.id = j.dataset WHERE m.id = ?1",
                [id],
                dataset_row,
            )
            .optional()
            .map_err(db)
    }
}
