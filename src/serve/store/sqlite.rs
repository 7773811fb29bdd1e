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
const MIGRATIONS: [&str; 6] = [
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
    // Workspaces, their quotas, API keys; who made what. Idempotency keys are kept as
    // `workspace/key`.
    "
CREATE TABLE workspaces (
    name TEXT PRIMARY KEY, max_jobs INTEGER, max_bytes INTEGER, created REAL NOT NULL);
INSERT INTO workspaces (name, created) VALUES ('default', (julianday('now') - 2440587.5) * 86400.0);
CREATE TABLE keys (
    id TEXT PRIMARY KEY, workspace TEXT, name TEXT NOT NULL, scope TEXT NOT NULL,
    hash TEXT NOT NULL, created REAL NOT NULL, last_used REAL, revoked REAL);
ALTER TABLE datasets ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE datasets ADD COLUMN created_by TEXT;
ALTER TABLE jobs ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN created_by TEXT;
ALTER TABLE models ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE models ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX datasets_workspace ON datasets(workspace, created);
CREATE INDEX jobs_workspace ON jobs(workspace, status);
UPDATE jobs SET idempotency_key = 'default/' || idempotency_key WHERE idempotency_key IS NOT NULL;
UPDATE datasets SET idempotency_key = 'default/' || idempotency_key WHERE idempotency_key IS NOT NULL;
",
    // The model registry: names, versions, aliases; a job may register its model.
    "
ALTER TABLE jobs ADD COLUMN register TEXT;
CREATE TABLE registry (
    workspace TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (workspace, name));
CREATE TABLE versions (
    workspace TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, model TEXT NOT NULL,
    job TEXT, tags TEXT NOT NULL DEFAULT '[]', created REAL NOT NULL, created_by TEXT,
    PRIMARY KEY (workspace, name, version));
CREATE TABLE aliases (
    workspace TEXT NOT NULL, name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    updated REAL NOT NULL, updated_by TEXT, PRIMARY KEY (workspace, name, alias));
",
    // Uploads known by their bytes; deletion of jobs, models and versions (a name counts its
    // versions itself, so that a deleted number is never given again).
    "
ALTER TABLE datasets ADD COLUMN sha256 TEXT;
CREATE INDEX datasets_content ON datasets(workspace, sha256);
ALTER TABLE registry ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
UPDATE registry SET last_version = (SELECT COALESCE(MAX(v.version), 0) FROM versions v WHERE v.workspace = registry.workspace AND v.name = registry.name);
CREATE INDEX models_job ON models(job);
CREATE INDEX versions_model ON versions(model);
",
    // A job's own validation data set.
    "
ALTER TABLE jobs ADD COLUMN val_dataset TEXT;
",
];

const JOB_COLUMNS: &str = "id, status, dataset, request, epoch, max_epochs, train_nll, val_nll, \
    best_epoch, best_val_nll, rows_per_sec, eta_seconds, device, error, model, cancel_requested, \
    attempts, worker, created, started, finished, workspace, created_by, register, val_dataset";

const DATASET_COLUMNS: &str =
    "id, name, format, rows, columns, bytes, created, workspace, created_by, sha256";

const KEY_COLUMNS: &str = "id, workspace, name, scope, hash, created, last_used, revoked";

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
        workspace: r.get(21)?,
        created_by: r.get(22)?,
        register: r.get(23)?,
        val_dataset: r.get(24)?,
    })
}

const VERSION_COLUMNS: &str = "v.workspace, v.name, v.version, v.model, v.job, v.tags, v.created, v.created_by, \
    (SELECT group_concat(a.alias, ',') FROM aliases a WHERE a.workspace = v.workspace AND a.name = v.name AND a.version = v.version)";

fn version_row(r: &rusqlite::Row) -> rusqlite::Result<VersionRow> {
    let tags: String = r.get(5)?;
    Ok(VersionRow {
        workspace: r.get(0)?,
        name: r.get(1)?,
        version: r.get::<_, i64>(2)? as u32,
        model: r.get(3)?,
        job: r.get(4)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created: r.get(6)?,
        created_by: r.get(7)?,
        aliases: alias_list(r.get(8)?),
    })
}

/// Adds the next version of `name` (inside `tx`).
fn register_tx(
    tx: &Transaction,
    ws: &str,
    name: &str,
    model: &str,
    job: Option<&str>,
    tags: &[String],
    by: Option<&str>,
) -> rusqlite::Result<VersionRow> {
    let t = now();
    tx.execute(
        "INSERT INTO registry (workspace, name, created) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![ws, name, t],
    )?;
    tx.execute(
        "UPDATE registry SET last_version = last_version + 1 WHERE workspace = ?1 AND name = ?2",
        params![ws, name],
    )?;
    let version: i64 = tx.query_row(
        "SELECT last_version FROM registry WHERE workspace = ?1 AND name = ?2",
        params![ws, name],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO versions (workspace, name, version, model, job, tags, created, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![ws, name, version, model, job, serde_json::to_string(tags).expect("tags"), t, by],
    )?;
    Ok(VersionRow::registered(
        ws,
        name,
        version as u32,
        model,
        job,
        tags,
        by,
        t,
    ))
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
        workspace: r.get(7)?,
        created_by: r.get(8)?,
        sha256: r.get(9)?,
    })
}

/// The workspace's data set of the same bytes, format and column names.
fn same_content(
    c: &Connection,
    ws: &str,
    sha256: &str,
    format: &str,
    columns: Option<&[String]>,
) -> rusqlite::Result<Option<DatasetRow>> {
    c.query_row(
        &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE workspace = ?1 AND sha256 = ?2 AND format = ?3 AND (?4 IS NULL OR columns = ?4) ORDER BY created LIMIT 1"),
        params![ws, sha256, format, columns.map(|c| serde_json::to_string(c).expect("names"))],
        dataset_row,
    )
    .optional()
}

fn key_row(r: &rusqlite::Row) -> rusqlite::Result<KeyRow> {
    let scope: String = r.get(3)?;
    Ok(KeyRow {
        id: r.get(0)?,
        workspace: r.get(1)?,
        name: r.get(2)?,
        scope: scope.parse().unwrap_or(Scope::Read),
        hash: r.get(4)?,
        created: r.get(5)?,
        last_used: r.get(6)?,
        revoked: r.get(7)?,
    })
}

/// Bytes of data sets and models workspace `ws` stores (inside `tx`).
fn bytes_used(tx: &Transaction, ws: &str) -> rusqlite::Result<u64> {
    tx.query_row(
        "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM datasets WHERE workspace = ?1) + (SELECT COALESCE(SUM(bytes), 0) FROM models WHERE workspace = ?1)",
        [ws],
        |r| r.get::<_, i64>(0),
    )
    .map(|b| b as u64)
}

/// A workspace's quotas (None: no such workspace).
fn quotas(tx: &Transaction, ws: &str) -> rusqlite::Result<Option<(Option<i64>, Option<i64>)>> {
    tx.query_row(
        "SELECT max_jobs, max_bytes FROM workspaces WHERE name = ?1",
        [ws],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// See the module's description.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Held while the store is open: the lock that keeps a second process out (None: opened
    /// beside its owner, by `mdn serve keys`).
    _owner: Option<std::fs::File>,
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
        SqliteStore::open_with(dir, true)
    }

    /// Opens the store in `dir` beside the process serving it (if any), for short
    /// administrative changes (keys, quotas): SQLite serialises the two processes' writes,
    /// and the serving process sees each change at its next request.
    pub fn open_beside(dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(dir, false)
    }

    fn open_with(dir: &Path, own: bool) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let owner = if own {
            Some(take_ownership(dir)?)
        } else {
            None
        };
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
            // IMMEDIATE, and the version read again inside: a process opening the store
            // beside its owner may be migrating it at the same moment.
            conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
            let now: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(db)?;
            if now as usize > i {
                conn.execute_batch("COMMIT").map_err(db)?;
                continue;
            }
            conn.execute_batch(&format!("{sql}; PRAGMA user_version = {}; COMMIT;", i + 1))
                .map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    db(e)
                })?;
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

    fn insert_dataset(&self, d: &DatasetRow, key: Option<&str>) -> Result<Added> {
        let key = key.map(|k| format!("{}/{k}", d.workspace));
        self.tx(|tx| {
            if let Some(k) = &key {
                let first = tx
                    .query_row(
                        &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE idempotency_key = ?1"),
                        [k],
                        dataset_row,
                    )
                    .optional()?;
                if let Some(first) = first {
                    return Ok(Added::Replayed(first));
                }
            }
            if let Some(h) = &d.sha256
                && let Some(same) = same_content(tx, &d.workspace, h, &d.format, Some(&d.columns))?
            {
                return Ok(Added::Existing(same));
            }
            if let Some((_, Some(max))) = quotas(tx, &d.workspace)? {
                let used = bytes_used(tx, &d.workspace)?;
                if used + d.bytes > max as u64 {
                    return Ok(Added::OverQuota(OverQuota {
                        quota: "max_bytes",
                        workspace: d.workspace.clone(),
                        used,
                        adds: d.bytes,
                        limit: max as u64,
                    }));
                }
            }
            tx.execute(
                "INSERT INTO datasets (id, name, format, rows, columns, bytes, created, idempotency_key, workspace, created_by, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    d.id,
                    d.name,
                    d.format,
                    d.rows as i64,
                    serde_json::to_string(&d.columns).expect("names"),
                    d.bytes as i64,
                    d.created,
                    key,
                    d.workspace,
                    d.created_by,
                    d.sha256
                ],
            )?;
            Ok(Added::New)
        })
    }

    fn dataset(&self, ws: Ws, id: &str) -> Result<Option<DatasetRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2)"),
                params![id, ws],
                dataset_row,
            )
            .optional()
            .map_err(db)
    }

    fn datasets(&self, ws: Ws) -> Result<Vec<DatasetRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {DATASET_COLUMNS} FROM datasets WHERE ?1 IS NULL OR workspace = ?1 ORDER BY created, id"
            ))
            .map_err(db)?;
        let rows = st.query_map([ws], dataset_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn delete_dataset(&self, ws: Ws, id: &str) -> Result<Deleted> {
        self.tx(|tx| {
            let format: Option<String> = tx
                .query_row(
                    "SELECT format FROM datasets WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2)",
                    params![id, ws],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(format) = format else {
                return Ok(Deleted::Missing);
            };
            let busy: Option<String> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE (dataset = ?1 OR val_dataset = ?1) AND status IN ('queued', 'running') ORDER BY seq LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(job) = busy {
                return Ok(Deleted::InUse(job));
            }
            tx.execute("DELETE FROM datasets WHERE id = ?1", [id])?;
            Ok(Deleted::Removed { format })
        })
    }

    fn dataset_by_content(
        &self,
        ws: &str,
        sha256: &str,
        format: &str,
        columns: Option<&[String]>,
    ) -> Result<Option<DatasetRow>> {
        same_content(&self.conn(), ws, sha256, format, columns).map_err(db)
    }

    fn delete_job(&self, ws: Ws, id: &str) -> Result<JobDeleted> {
        self.tx(|tx| {
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM jobs WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2)",
                    params![id, ws],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(status) = status else {
                return Ok(JobDeleted::Missing);
            };
            if status == QUEUED || status == RUNNING {
                return Ok(JobDeleted::Unfinished(status));
            }
            let model: Option<String> = tx
                .query_row("SELECT id FROM models WHERE job = ?1", [id], |r| r.get(0))
                .optional()?;
            let registered = match &model {
                Some(m) => tx
                    .query_row(
                        "SELECT 1 FROM versions WHERE model = ?1 LIMIT 1",
                        [m],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some(),
                None => false,
            };
            tx.execute("DELETE FROM events WHERE job = ?1", [id])?;
            tx.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
            if registered {
                return Ok(JobDeleted::Removed {
                    model: None,
                    kept: model,
                });
            }
            if let Some(m) = &model {
                tx.execute("DELETE FROM models WHERE id = ?1", [m])?;
            }
            Ok(JobDeleted::Removed { model, kept: None })
        })
    }

    fn delete_model(&self, ws: Ws, id: &str) -> Result<ModelDeleted> {
        self.tx(|tx| {
            let found = tx
                .query_row(
                    "SELECT 1 FROM models WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2)",
                    params![id, ws],
                    |_| Ok(()),
                )
                .optional()?;
            if found.is_none() {
                return Ok(ModelDeleted::Missing);
            }
            let mut st = tx.prepare(
                "SELECT name, version FROM versions WHERE model = ?1 ORDER BY name, version",
            )?;
            let versions = st
                .query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)))?
                .collect::<rusqlite::Result<Vec<(String, u32)>>>()?;
            if !versions.is_empty() {
                return Ok(ModelDeleted::Registered(versions));
            }
            tx.execute("DELETE FROM models WHERE id = ?1", [id])?;
            Ok(ModelDeleted::Removed)
        })
    }

    fn insert_job(&self, job: &NewJob, key: Option<&str>) -> Result<Queued> {
        let key = key.map(|k| format!("{}/{k}", job.workspace));
        self.tx(|tx| {
            if let Some(k) = &key {
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
            if let Some((Some(max), _)) = quotas(tx, job.workspace)? {
                let used: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE workspace = ?1 AND status IN ('queued', 'running')",
                    [job.workspace],
                    |r| r.get(0),
                )?;
                if used >= max {
                    return Ok(Queued::OverQuota(OverQuota {
                        quota: "max_jobs",
                        workspace: job.workspace.to_string(),
                        used: used as u64,
                        adds: 1,
                        limit: max as u64,
                    }));
                }
            }
            for id in std::iter::once(job.dataset).chain(job.val_dataset) {
                let dataset = tx
                    .query_row("SELECT 1 FROM datasets WHERE id = ?1", [id], |_| Ok(()))
                    .optional()?;
                if dataset.is_none() {
                    return Ok(Queued::NoDataset(id.to_string()));
                }
            }
            tx.execute(
                "INSERT INTO jobs (id, status, dataset, request, spec, created, idempotency_key, workspace, created_by, register, val_dataset) VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![job.id, job.dataset, job.request.to_string(), job.spec, now(), key, job.workspace, job.created_by, job.register, job.val_dataset],
            )?;
            let posted = append_tx(tx, job.id, &queued_event(job.created_by))?;
            Ok(Queued::New(posted))
        })
    }

    fn job(&self, ws: Ws, id: &str) -> Result<Option<JobRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2)"),
                params![id, ws],
                job_row,
            )
            .optional()
            .map_err(db)
    }

    fn jobs(&self, ws: Ws, status: Option<&str>) -> Result<Vec<JobRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workspace = ?2) ORDER BY seq"
            ))
            .map_err(db)?;
        let rows = st.query_map(params![status, ws], job_row).map_err(db)?;
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

    fn cancel(&self, ws: Ws, id: &str, by: Option<&str>) -> Result<Cancel> {
        self.tx(|tx| {
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM jobs WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2)",
                    params![id, ws],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match status.as_deref() {
                Some(QUEUED) => {
                    tx.execute(
                        "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished = ?2 WHERE id = ?1",
                        params![id, now()],
                    )?;
                    Cancel::Cancelled(append_tx(tx, id, &cancelled_event(by))?)
                }
                Some(RUNNING) => {
                    tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])?;
                    Cancel::Requested(append_tx(tx, id, &cancel_requested_event(by))?)
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
                        "INSERT OR REPLACE INTO models (id, job, created, workspace, bytes) SELECT ?1, ?2, ?3, workspace, ?4 FROM jobs WHERE id = ?2",
                        params![m, id, t, outcome.model_bytes as i64],
                    )?;
                }
                tx.execute(
                    "UPDATE jobs SET status = ?2, error = ?3, model = ?4, finished = ?5, eta_seconds = 0, lease = NULL, lease_expires = NULL, worker = NULL WHERE id = ?1",
                    params![id, outcome.status, outcome.error, outcome.model, t],
                )?;
                // A job that asked for it registers its model, in the same transaction.
                let (ws, register, by): (String, Option<String>, Option<String>) = tx.query_row(
                    "SELECT workspace, register, created_by FROM jobs WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                if let (SUCCEEDED, Some(m), Some(name)) = (outcome.status, outcome.model, register) {
                    let v = register_tx(tx, &ws, &name, m, Some(id), &[], by.as_deref())?;
                    return append_tx(tx, id, &with_registered(event, Some(&v))).map(Some);
                }
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

    fn model_workspace(&self, id: &str) -> Result<Option<String>> {
        self.conn()
            .query_row("SELECT workspace FROM models WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)
    }

    fn models(&self, ws: Ws) -> Result<Vec<ModelRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT m.id, m.workspace, m.job, m.bytes, m.created, \
                 (SELECT group_concat(v.name || ':' || v.version, ',') FROM versions v WHERE v.model = m.id) \
                 FROM models m WHERE ?1 IS NULL OR m.workspace = ?1 ORDER BY m.created, m.id",
            )
            .map_err(db)?;
        let rows = st
            .query_map([ws], |r| {
                Ok(ModelRow {
                    id: r.get(0)?,
                    workspace: r.get(1)?,
                    job: r.get(2)?,
                    bytes: r.get::<_, i64>(3)? as u64,
                    created: r.get(4)?,
                    versions: sorted_versions(r.get(5)?),
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn model_dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {} FROM models m JOIN jobs j ON j.id = m.job JOIN datasets d ON d.id = j.dataset WHERE m.id = ?1",
                    prefixed("d", DATASET_COLUMNS)
                ),
                [id],
                dataset_row,
            )
            .optional()
            .map_err(db)
    }

    fn put_workspace(&self, w: &Workspace) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO workspaces (name, max_jobs, max_bytes, created) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE SET max_jobs = excluded.max_jobs, max_bytes = excluded.max_bytes",
                params![w.name, w.max_jobs.map(|v| v as i64), w.max_bytes.map(|v| v as i64), w.created],
            )?;
            Ok(())
        })
    }

    fn workspaces(&self, ws: Ws) -> Result<Vec<Usage>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT w.name, w.max_jobs, w.max_bytes, w.created, \
                 (SELECT COUNT(*) FROM jobs j WHERE j.workspace = w.name AND j.status IN ('queued', 'running')), \
                 (SELECT COALESCE(SUM(bytes), 0) FROM datasets d WHERE d.workspace = w.name) + (SELECT COALESCE(SUM(bytes), 0) FROM models m WHERE m.workspace = w.name), \
                 (SELECT COUNT(*) FROM keys k WHERE k.workspace = w.name AND k.revoked IS NULL) \
                 FROM workspaces w WHERE ?1 IS NULL OR w.name = ?1 ORDER BY w.name",
            )
            .map_err(db)?;
        let rows = st
            .query_map([ws], |r| {
                Ok(Usage {
                    workspace: Workspace {
                        name: r.get(0)?,
                        max_jobs: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                        max_bytes: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                        created: r.get(3)?,
                    },
                    jobs: r.get::<_, i64>(4)? as u64,
                    bytes: r.get::<_, i64>(5)? as u64,
                    keys: r.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn insert_key(&self, k: &KeyRow) -> Result<()> {
        self.tx(|tx| {
            if let Some(ws) = &k.workspace {
                tx.execute(
                    "INSERT INTO workspaces (name, created) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                    params![ws, k.created],
                )?;
            }
            tx.execute(
                &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![k.id, k.workspace, k.name, k.scope.as_str(), k.hash, k.created, k.last_used, k.revoked],
            )?;
            Ok(())
        })
    }

    fn key(&self, id: &str) -> Result<Option<KeyRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"),
                [id],
                key_row,
            )
            .optional()
            .map_err(db)
    }

    fn keys(&self, ws: Ws) -> Result<Vec<KeyRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE ?1 IS NULL OR workspace = ?1 ORDER BY created, id"
            ))
            .map_err(db)?;
        let rows = st.query_map([ws], key_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn revoke_key(&self, ws: Ws, id: &str) -> Result<bool> {
        self.tx(|tx| {
            Ok(tx.execute(
                "UPDATE keys SET revoked = ?3 WHERE id = ?1 AND (?2 IS NULL OR workspace = ?2) AND revoked IS NULL",
                params![id, ws, now()],
            )? == 1)
        })
    }

    fn touch_key(&self, id: &str, t: f64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE keys SET last_used = ?2 WHERE id = ?1",
                params![id, t],
            )
            .map_err(db)?;
        Ok(())
    }

    fn any_keys(&self) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM keys LIMIT 1", [], |_| Ok(()))
            .optional()
            .map_err(db)?
            .is_some())
    }

    fn register(
        &self,
        ws: &str,
        name: &str,
        model: &str,
        tags: &[String],
        by: Option<&str>,
    ) -> Result<Option<VersionRow>> {
        self.tx(|tx| {
            let job: Option<Option<String>> = tx
                .query_row(
                    "SELECT job FROM models WHERE id = ?1 AND workspace = ?2",
                    params![model, ws],
                    |r| r.get(0),
                )
                .optional()?;
            match job {
                None => Ok(None),
                Some(job) => register_tx(tx, ws, name, model, job.as_deref(), tags, by).map(Some),
            }
        })
    }

    fn registry(&self, ws: Ws) -> Result<Vec<RegisteredModel>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT r.workspace, r.name, r.created, \
                 (SELECT MAX(version) FROM versions v WHERE v.workspace = r.workspace AND v.name = r.name), \
                 (SELECT COUNT(*) FROM versions v WHERE v.workspace = r.workspace AND v.name = r.name) \
                 FROM registry r WHERE ?1 IS NULL OR r.workspace = ?1 ORDER BY r.name, r.workspace",
            )
            .map_err(db)?;
        let mut out: Vec<RegisteredModel> = st
            .query_map([ws], |r| {
                Ok(RegisteredModel {
                    workspace: r.get(0)?,
                    name: r.get(1)?,
                    created: r.get(2)?,
                    latest: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u32,
                    versions: r.get::<_, i64>(4)? as u32,
                    aliases: Default::default(),
                })
            })
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        let mut st = c
            .prepare("SELECT workspace, name, alias, version FROM aliases WHERE ?1 IS NULL OR workspace = ?1")
            .map_err(db)?;
        let aliases = st
            .query_map([ws], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        for (w, n, a, v) in aliases {
            if let Some(m) = out.iter_mut().find(|m| m.workspace == w && m.name == n) {
                m.aliases.insert(a, v as u32);
            }
        }
        Ok(out)
    }

    fn versions(&self, ws: &str, name: &str) -> Result<Vec<VersionRow>> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.workspace = ?1 AND v.name = ?2 ORDER BY v.version"
            ))
            .map_err(db)?;
        let rows = st.query_map(params![ws, name], version_row).map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn resolve(&self, ws: &str, name: &str, which: Selector) -> Result<Option<VersionRow>> {
        let c = self.conn();
        let base = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.workspace = ?1 AND v.name = ?2"
        );
        match which {
            Selector::Latest => c.query_row(
                &format!("{base} ORDER BY v.version DESC LIMIT 1"),
                params![ws, name],
                version_row,
            ),
            Selector::Version(n) => c.query_row(
                &format!("{base} AND v.version = ?3"),
                params![ws, name, n as i64],
                version_row,
            ),
            Selector::Alias(a) => c.query_row(
                &format!("{base} AND v.version = (SELECT version FROM aliases WHERE workspace = ?1 AND name = ?2 AND alias = ?3)"),
                params![ws, name, a],
                version_row,
            ),
        }
        .optional()
        .map_err(db)
    }

    fn set_tags(&self, ws: &str, name: &str, version: u32, tags: &[String]) -> Result<bool> {
        self.tx(|tx| {
            Ok(tx.execute(
                "UPDATE versions SET tags = ?4 WHERE workspace = ?1 AND name = ?2 AND version = ?3",
                params![
                    ws,
                    name,
                    version as i64,
                    serde_json::to_string(tags).expect("tags")
                ],
            )? == 1)
        })
    }

    fn set_alias(
        &self,
        ws: &str,
        name: &str,
        alias: &str,
        version: u32,
        by: Option<&str>,
    ) -> Result<bool> {
        self.tx(|tx| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM versions WHERE workspace = ?1 AND name = ?2 AND version = ?3",
                    params![ws, name, version as i64],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO aliases (workspace, name, alias, version, updated, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (workspace, name, alias) DO UPDATE SET version = excluded.version, updated = excluded.updated, updated_by = excluded.updated_by",
                params![ws, name, alias, version as i64, now(), by],
            )?;
            Ok(true)
        })
    }

    fn delete_alias(&self, ws: &str, name: &str, alias: &str) -> Result<bool> {
        self.tx(|tx| {
            Ok(tx.execute(
                "DELETE FROM aliases WHERE workspace = ?1 AND name = ?2 AND alias = ?3",
                params![ws, name, alias],
            )? == 1)
        })
    }

    fn delete_version(&self, ws: &str, name: &str, version: u32) -> Result<Option<Vec<String>>> {
        self.tx(|tx| {
            let v = version as i64;
            let found = tx.execute(
                "DELETE FROM versions WHERE workspace = ?1 AND name = ?2 AND version = ?3",
                params![ws, name, v],
            )?;
            if found == 0 {
                return Ok(None);
            }
            let mut st = tx.prepare(
                "SELECT alias FROM aliases WHERE workspace = ?1 AND name = ?2 AND version = ?3 ORDER BY alias",
            )?;
            let aliases = st
                .query_map(params![ws, name, v], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            tx.execute(
                "DELETE FROM aliases WHERE workspace = ?1 AND name = ?2 AND version = ?3",
                params![ws, name, v],
            )?;
            Ok(Some(aliases))
        })
    }
}
