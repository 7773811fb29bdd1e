//! The PostgreSQL store: the same tables as SQLite's in a PostgreSQL database that any number
//! of `mdn serve` processes share. A worker claims a job with one `UPDATE ... WHERE seq =
//! (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)`, so each job is taken by exactly one worker
//! without a global lock; lease expiry is measured on the database's clock, so machines need
//! not agree on the time. Appending an event locks its job's row (numbers without gaps, in
//! commit order) and sends `NOTIFY mdn_events`; queuing a job sends `NOTIFY mdn_jobs`.
//!
//! Connections come from a bounded pool and are made again when the database comes back;
//! until then every call answers [`Error::Store`] and the callers retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, GenericClient, NoTls, Row, Transaction};
use serde_json::Value;

use super::*;

/// Schema versions, applied in order under an advisory lock (so that processes starting
/// together apply each once); `mdn_migrations` records which ran.
const MIGRATIONS: [&str; 5] = ["
CREATE TABLE datasets (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, format TEXT NOT NULL, rows BIGINT NOT NULL,
    columns TEXT NOT NULL, bytes BIGINT NOT NULL, created DOUBLE PRECISION NOT NULL,
    idempotency_key TEXT UNIQUE);
CREATE TABLE jobs (
    seq BIGSERIAL PRIMARY KEY, id TEXT UNIQUE NOT NULL, status TEXT NOT NULL,
    dataset TEXT NOT NULL, request TEXT NOT NULL, spec TEXT NOT NULL,
    epoch BIGINT, max_epochs BIGINT, train_nll DOUBLE PRECISION, val_nll DOUBLE PRECISION,
    best_epoch BIGINT, best_val_nll DOUBLE PRECISION, rows_per_sec DOUBLE PRECISION,
    eta_seconds DOUBLE PRECISION, device TEXT, error TEXT, model TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, attempts INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION, finished DOUBLE PRECISION,
    lease TEXT, lease_expires DOUBLE PRECISION, worker TEXT,
    vanished INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT UNIQUE);
CREATE INDEX jobs_status ON jobs(status, seq);
CREATE TABLE events (
    job TEXT NOT NULL, seq BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job, seq));
CREATE TABLE models (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, created DOUBLE PRECISION NOT NULL);
", "
CREATE TABLE workspaces (
    name TEXT PRIMARY KEY, max_jobs BIGINT, max_bytes BIGINT, created DOUBLE PRECISION NOT NULL);
INSERT INTO workspaces (name, created) VALUES ('default', EXTRACT(EPOCH FROM now())::float8);
CREATE TABLE keys (
    id TEXT PRIMARY KEY, workspace TEXT, name TEXT NOT NULL, scope TEXT NOT NULL,
    hash TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, last_used DOUBLE PRECISION,
    revoked DOUBLE PRECISION);
ALTER TABLE datasets ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE datasets ADD COLUMN created_by TEXT;
ALTER TABLE jobs ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN created_by TEXT;
ALTER TABLE models ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE models ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
CREATE INDEX datasets_workspace ON datasets(workspace, created);
CREATE INDEX jobs_workspace ON jobs(workspace, status);
UPDATE jobs SET idempotency_key = 'default/' || idempotency_key WHERE idempotency_key IS NOT NULL;
UPDATE datasets SET idempotency_key = 'default/' || idempotency_key WHERE idempotency_key IS NOT NULL;
", "
ALTER TABLE jobs ADD COLUMN register TEXT;
CREATE TABLE registry (
    workspace TEXT NOT NULL, name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workspace, name));
CREATE TABLE versions (
    workspace TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, model TEXT NOT NULL,
    job TEXT, tags TEXT NOT NULL DEFAULT '[]', created DOUBLE PRECISION NOT NULL, created_by TEXT,
    PRIMARY KEY (workspace, name, version));
CREATE TABLE aliases (
    workspace TEXT NOT NULL, name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    updated DOUBLE PRECISION NOT NULL, updated_by TEXT, PRIMARY KEY (workspace, name, alias));
", "
ALTER TABLE datasets ADD COLUMN sha256 TEXT;
CREATE INDEX datasets_content ON datasets(workspace, sha256);
ALTER TABLE registry ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
UPDATE registry SET last_version = (SELECT COALESCE(MAX(v.version), 0) FROM versions v WHERE v.workspace = registry.workspace AND v.name = registry.name);
CREATE INDEX models_job ON models(job);
CREATE INDEX versions_model ON versions(model);
", "
ALTER TABLE jobs ADD COLUMN val_dataset TEXT;
"];

/// The database's clock, in seconds since the Unix epoch.
const DB_NOW: &str = "EXTRACT(EPOCH FROM clock_timestamp())::float8";

const JOB_COLUMNS: &str = "id, status, dataset, request, epoch, max_epochs, train_nll, val_nll, \
    best_epoch, best_val_nll, rows_per_sec, eta_seconds, device, error, model, cancel_requested, \
    attempts, worker, created, started, finished, workspace, created_by, register, val_dataset";

const DATASET_COLUMNS: &str =
    "id, name, format, rows, columns, bytes, created, workspace, created_by, sha256";

const KEY_COLUMNS: &str = "id, workspace, name, scope, hash, created, last_used, revoked";

/// Most connections a process opens for requests at once (more callers wait for one: a
/// burst of requests does not open a burst of connections).
const POOL: usize = 16;

/// Connections open now and those free for the next caller.
struct Pool {
    idle: Vec<Client>,
    open: usize,
}

fn job_row(r: &Row) -> JobRow {
    let request: String = r.get(3);
    let opt_usize = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v as usize);
    JobRow {
        id: r.get(0),
        status: r.get(1),
        dataset: r.get(2),
        request: serde_json::from_str(&request).unwrap_or(Value::Null),
        epoch: opt_usize(4),
        max_epochs: opt_usize(5),
        train_nll: r.get(6),
        val_nll: r.get(7),
        best_epoch: opt_usize(8),
        best_val_nll: r.get(9),
        rows_per_sec: r.get(10),
        eta_seconds: r.get(11),
        device: r.get(12),
        error: r.get(13),
        model: r.get(14),
        cancel_requested: r.get(15),
        attempts: r.get::<_, i32>(16) as u32,
        worker: r.get(17),
        created: r.get(18),
        started: r.get(19),
        finished: r.get(20),
        workspace: r.get(21),
        created_by: r.get(22),
        register: r.get(23),
        val_dataset: r.get(24),
    }
}

const VERSION_COLUMNS: &str = "v.workspace, v.name, v.version, v.model, v.job, v.tags, v.created, v.created_by, \
    (SELECT string_agg(a.alias, ',') FROM aliases a WHERE a.workspace = v.workspace AND a.name = v.name AND a.version = v.version)";

fn version_row(r: &Row) -> VersionRow {
    let tags: String = r.get(5);
    VersionRow {
        workspace: r.get(0),
        name: r.get(1),
        version: r.get::<_, i32>(2) as u32,
        model: r.get(3),
        job: r.get(4),
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        created: r.get(6),
        created_by: r.get(7),
        aliases: alias_list(r.get(8)),
    }
}

/// Adds the next version of `name` (inside `tx`; the name's row locked, so that versions
/// registered at once are numbered in turn).
fn register_tx(
    tx: &mut Transaction,
    ws: &str,
    name: &str,
    model: &str,
    job: Option<&str>,
    tags: &[String],
    by: Option<&str>,
) -> Result<VersionRow, ::postgres::Error> {
    let t = now();
    tx.execute(
        "INSERT INTO registry (workspace, name, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&ws, &name, &t],
    )?;
    // The name's row is locked until the commit: registrations under one name number in
    // turn, and a deleted version's number is never given again.
    let version: i32 = tx
        .query_one(
            "UPDATE registry SET last_version = last_version + 1 WHERE workspace = $1 AND name = $2 RETURNING last_version",
            &[&ws, &name],
        )?
        .get(0);
    tx.execute(
        "INSERT INTO versions (workspace, name, version, model, job, tags, created, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&ws, &name, &version, &model, &job, &serde_json::to_string(tags).expect("tags"), &t, &by],
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

fn dataset_row(r: &Row) -> DatasetRow {
    let columns: String = r.get(4);
    DatasetRow {
        id: r.get(0),
        name: r.get(1),
        format: r.get(2),
        rows: r.get::<_, i64>(3) as usize,
        columns: serde_json::from_str(&columns).unwrap_or_default(),
        bytes: r.get::<_, i64>(5) as u64,
        created: r.get(6),
        workspace: r.get(7),
        created_by: r.get(8),
        sha256: r.get(9),
    }
}

/// The workspace's data set of the same bytes, format and column names.
fn same_content(
    c: &mut impl GenericClient,
    ws: &str,
    sha256: &str,
    format: &str,
    columns: Option<&[String]>,
) -> Result<Option<DatasetRow>, ::postgres::Error> {
    Ok(c.query_opt(
        &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE workspace = $1 AND sha256 = $2 AND format = $3 AND ($4::TEXT IS NULL OR columns = $4) ORDER BY created LIMIT 1"),
        &[&ws, &sha256, &format, &columns.map(|c| serde_json::to_string(c).expect("names"))],
    )?
    .as_ref()
    .map(dataset_row))
}

fn key_row(r: &Row) -> KeyRow {
    let scope: String = r.get(3);
    KeyRow {
        id: r.get(0),
        workspace: r.get(1),
        name: r.get(2),
        scope: scope.parse().unwrap_or(Scope::Read),
        hash: r.get(4),
        created: r.get(5),
        last_used: r.get(6),
        revoked: r.get(7),
    }
}

/// Locks workspace `ws`'s row (so that its quota checks and inserts are serialised) and
/// returns its quotas (None: no such workspace).
#[allow(clippy::type_complexity)]
fn lock_quotas(
    tx: &mut Transaction,
    ws: &str,
) -> Result<Option<(Option<i64>, Option<i64>)>, ::postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT max_jobs, max_bytes FROM workspaces WHERE name = $1 FOR UPDATE",
            &[&ws],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

/// Bytes of data sets and models workspace `ws` stores.
fn bytes_used(tx: &mut Transaction, ws: &str) -> Result<u64, ::postgres::Error> {
    Ok(tx
        .query_one(
            "SELECT ((SELECT COALESCE(SUM(bytes), 0) FROM datasets WHERE workspace = $1) + (SELECT COALESCE(SUM(bytes), 0) FROM models WHERE workspace = $1))::BIGINT",
            &[&ws],
        )?
        .get::<_, i64>(0) as u64)
}

/// See the module's description.
pub struct PostgresStore {
    config: ::postgres::Config,
    /// `host:port/db`, for messages (never the password).
    name: String,
    pool: Mutex<Pool>,
    /// Told when a connection is given back or closed.
    freed: std::sync::Condvar,
}

impl PostgresStore {
    /// Connects to the database at `url` and brings its tables up to date.
    pub fn open(url: &str) -> Result<PostgresStore> {
        let mut config: ::postgres::Config = url.parse().map_err(|e| {
            Error::config(format!(
                "--store: not a PostgreSQL URL like postgres://USER:PASSWORD@HOST:5432/DB ({e})"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A process paused (SIGSTOP, a VM frozen) in the middle of a transaction would hold
        // its job's row lock, so no other process could re-queue the job when its lease ran
        // out: the server ends such a session after this long, releasing the lock. Every
        // transaction here takes milliseconds.
        let options = match config.get_options() {
            Some(o) => format!("{o} -c idle_in_transaction_session_timeout=5000"),
            None => "-c idle_in_transaction_session_timeout=5000".to_string(),
        };
        config.options(&options);
        let host = match config.get_hosts().first() {
            Some(::postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(::postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let name = format!(
            "{host}:{port}/{}",
            config
                .get_dbname()
                .or(config.get_user())
                .unwrap_or("postgres")
        );
        let store = PostgresStore {
            config,
            name,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: std::sync::Condvar::new(),
        };
        let first = blocking(|| store.connect_as(true))?;
        store.pool.lock().unwrap_or_else(|p| p.into_inner()).open += 1;
        store.give_back(first);
        store.migrate()?;
        Ok(store)
    }

    fn connect(&self) -> Result<Client> {
        self.connect_as(false)
    }

    /// A new connection. `first`: the one `open` makes, where a wrong user, password or
    /// database is the URL's mistake (exit 2), not a fault that may pass.
    fn connect_as(&self, first: bool) -> Result<Client> {
        self.config.connect(NoTls).map_err(|e| {
            let refused = first
                && e.as_db_error().is_some_and(|d| {
                    let code = d.code();
                    code == &::postgres::error::SqlState::INVALID_PASSWORD
                        || code == &::postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                        || code == &::postgres::error::SqlState::INVALID_CATALOG_NAME
                });
            let text = format!(
                "the PostgreSQL store at {} cannot be reached: {}",
                self.name,
                with_causes(&e)
            );
            if refused {
                Error::Config(format!(
                    "{text} (check the user, password and database in --store)"
                ))
            } else {
                Error::Store(text)
            }
        })
    }

    fn failed(&self, e: ::postgres::Error) -> Error {
        Error::Store(format!(
            "the PostgreSQL store at {} failed: {}",
            self.name,
            with_causes(&e)
        ))
    }

    /// Runs `f` on a pooled connection (a new one if none is free and fewer than [`POOL`]
    /// are open, else the next one given back; again on a new one if it turned out closed:
    /// the database restarted). All of it runs as blocking work: the client blocks on its
    /// own runtime, also when it is dropped.
    fn with<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T, ::postgres::Error>) -> Result<T> {
        blocking(|| {
            for round in 0..2 {
                let mut client = self.take()?;
                match f(&mut client) {
                    Ok(v) => {
                        self.give_back(client);
                        return Ok(v);
                    }
                    Err(e) if client.is_closed() && round == 0 => {
                        self.give_back(client);
                        log::warn!("{}: connection lost ({e}); connecting again", self.name);
                    }
                    Err(e) => {
                        self.give_back(client);
                        return Err(self.failed(e));
                    }
                }
            }
            unreachable!("the second round returns")
        })
    }

    /// A free connection, a new one, or (with [`POOL`] open) the next one given back.
    fn take(&self) -> Result<Client> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while let Some(c) = pool.idle.pop() {
                if !c.is_closed() {
                    return Ok(c);
                }
                pool.open -= 1;
            }
            if pool.open < POOL {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| {
                    self.pool.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                    self.freed.notify_one();
                });
            }
            let (p, waited) = self
                .freed
                .wait_timeout(pool, Duration::from_secs(30))
                .unwrap_or_else(|p| p.into_inner());
            pool = p;
            if waited.timed_out() && pool.idle.is_empty() {
                return Err(Error::Store(format!(
                    "the PostgreSQL store at {}: all {POOL} connections of this process stayed busy for 30 s",
                    self.name
                )));
            }
        }
    }

    /// Returns a connection to the pool (a closed one is let go).
    fn give_back(&self, client: Client) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if client.is_closed() {
            pool.open -= 1;
        } else {
            pool.idle.push(client);
        }
        drop(pool);
        self.freed.notify_one();
    }

    /// `f` in one transaction.
    fn tx<T>(
        &self,
        mut f: impl FnMut(&mut Transaction) -> Result<T, ::postgres::Error>,
    ) -> Result<T> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn migrate(&self) -> Result<()> {
        self.tx(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock(7282611)", &[])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS mdn_migrations (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)",
            )?;
            let done: i32 = tx
                .query_one("SELECT COALESCE(MAX(version), 0) FROM mdn_migrations", &[])?
                .get(0);
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO mdn_migrations (version, applied) VALUES ($1, $2)",
                    &[&(i as i32 + 1), &now()],
                )?;
            }
            Ok(done)
        })
        .and_then(|done| {
            if done as usize > MIGRATIONS.len() {
                Err(Error::config(format!(
                    "the PostgreSQL store at {} is of a newer mdn (schema {done}; this one knows {})",
                    self.name,
                    MIGRATIONS.len()
                )))
            } else {
                Ok(())
            }
        })
    }
}

/// An error with what caused it (`error connecting to server: Connection refused`; for a
/// database error, the server's message).
fn with_causes(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// Appends an event inside `tx` (its job's row locked first: numbers without gaps, in commit
/// order), fenced on `lease` when given; tells the listeners at commit.
fn append_tx(
    tx: &mut Transaction,
    job: &str,
    lease: Option<&str>,
    data: &Value,
) -> Result<Option<Posted>, ::postgres::Error> {
    let row = tx.query_opt(
        "SELECT lease, status FROM jobs WHERE id = $1 FOR UPDATE",
        &[&job],
    )?;
    if let Some(l) = lease {
        let held = row.as_ref().is_some_and(|r| {
            r.get::<_, Option<String>>(0).as_deref() == Some(l) && r.get::<_, String>(1) == RUNNING
        });
        if !held {
            return Ok(None);
        }
    }
    let seq: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job = $1",
            &[&job],
        )?
        .get(0);
    let text = numbered(data, seq as u64);
    tx.execute(
        "INSERT INTO events (job, seq, data) VALUES ($1, $2, $3)",
        &[&job, &seq, &text],
    )?;
    tx.execute(
        "SELECT pg_notify('mdn_events', $1)",
        &[&format!("{job} {seq}")],
    )?;
    Ok(Some(Posted {
        job: job.to_string(),
        seq: seq as u64,
        data: text,
    }))
}

impl Store for PostgresStore {
    fn listen(&self, on: Arc<dyn Fn(Notice) + Send + Sync>) -> Result<bool> {
        // The first connection is made here, so that a wrong URL is an error at start-up;
        // later ones by the thread, as often as the database goes away.
        let mut first = Some(blocking(|| self.connect())?);
        let config = self.config.clone();
        let name = self.name.clone();
        std::thread::Builder::new()
            .name("mdn-listen".into())
            .spawn(move || {
                let mut wait = Duration::from_millis(200);
                loop {
                    let client = match first.take() {
                        Some(c) => Ok(c),
                        None => config.connect(NoTls),
                    };
                    match client.and_then(|c| listen_on(c, &*on)) {
                        Ok(()) => return,
                        Err(e) => {
                            log::warn!("{name}: listening for events failed ({e}); trying again");
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            })
            .map_err(|e| Error::Store(format!("starting the event listener failed: {e}")))?;
        Ok(true)
    }

    fn insert_dataset(&self, d: &DatasetRow, key: Option<&str>) -> Result<Added> {
        let key = key.map(|k| format!("{}/{k}", d.workspace));
        self.tx(|tx| {
            // The workspace's row first: uploads to one workspace check its quota in turn.
            let quotas = lock_quotas(tx, &d.workspace)?;
            if let Some(k) = &key
                && let Some(first) = tx.query_opt(
                    &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE idempotency_key = $1"),
                    &[k],
                )?
            {
                return Ok(Added::Replayed(dataset_row(&first)));
            }
            // The same bytes (uploads to one workspace come here in turn, so two at once
            // store one copy).
            if let Some(h) = &d.sha256
                && let Some(same) = same_content(tx, &d.workspace, h, &d.format, Some(&d.columns))?
            {
                return Ok(Added::Existing(same));
            }
            if let Some((_, Some(max))) = quotas {
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
            // ON CONFLICT: two requests with the same key at once add one data set.
            let added = tx.execute(
                "INSERT INTO datasets (id, name, format, rows, columns, bytes, created, idempotency_key, workspace, created_by, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (idempotency_key) DO NOTHING",
                &[
                    &d.id,
                    &d.name,
                    &d.format,
                    &(d.rows as i64),
                    &serde_json::to_string(&d.columns).expect("names"),
                    &(d.bytes as i64),
                    &d.created,
                    &key,
                    &d.workspace,
                    &d.created_by,
                    &d.sha256,
                ],
            )?;
            if added == 1 {
                return Ok(Added::New);
            }
            let first = tx.query_one(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE idempotency_key = $1"),
                &[&key],
            )?;
            Ok(Added::Replayed(dataset_row(&first)))
        })
    }

    fn dataset(&self, ws: Ws, id: &str) -> Result<Option<DatasetRow>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2)"),
                &[&id, &ws],
            )
            .map(|r| r.as_ref().map(dataset_row))
        })
    }

    fn datasets(&self, ws: Ws) -> Result<Vec<DatasetRow>> {
        self.with(|c| {
            c.query(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE $1::TEXT IS NULL OR workspace = $1 ORDER BY created, id"),
                &[&ws],
            )
            .map(|rows| rows.iter().map(dataset_row).collect())
        })
    }

    fn delete_dataset(&self, ws: Ws, id: &str) -> Result<Deleted> {
        self.tx(|tx| {
            // Lock the data set first: a job queued on it meanwhile waits, then finds it gone.
            let Some(row) = tx.query_opt(
                "SELECT format FROM datasets WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2) FOR UPDATE",
                &[&id, &ws],
            )?
            else {
                return Ok(Deleted::Missing);
            };
            let busy = tx.query_opt(
                "SELECT id FROM jobs WHERE (dataset = $1 OR val_dataset = $1) AND status IN ('queued', 'running') ORDER BY seq LIMIT 1",
                &[&id],
            )?;
            if let Some(job) = busy {
                return Ok(Deleted::InUse(job.get(0)));
            }
            tx.execute("DELETE FROM datasets WHERE id = $1", &[&id])?;
            Ok(Deleted::Removed { format: row.get(0) })
        })
    }

    fn dataset_by_content(
        &self,
        ws: &str,
        sha256: &str,
        format: &str,
        columns: Option<&[String]>,
    ) -> Result<Option<DatasetRow>> {
        self.with(|c| same_content(c, ws, sha256, format, columns))
    }

    fn delete_job(&self, ws: Ws, id: &str) -> Result<JobDeleted> {
        self.tx(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT status FROM jobs WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2) FOR UPDATE",
                &[&id, &ws],
            )?
            else {
                return Ok(JobDeleted::Missing);
            };
            let status: String = row.get(0);
            if status == QUEUED || status == RUNNING {
                return Ok(JobDeleted::Unfinished(status));
            }
            // The model's row locked: a registration of it meanwhile waits, then finds it gone
            // (or, first, makes this keep it).
            let model: Option<String> = tx
                .query_opt("SELECT id FROM models WHERE job = $1 FOR UPDATE", &[&id])?
                .map(|r| r.get(0));
            let registered = match &model {
                Some(m) => tx
                    .query_opt("SELECT 1 FROM versions WHERE model = $1 LIMIT 1", &[m])?
                    .is_some(),
                None => false,
            };
            tx.execute("DELETE FROM events WHERE job = $1", &[&id])?;
            tx.execute("DELETE FROM jobs WHERE id = $1", &[&id])?;
            if registered {
                return Ok(JobDeleted::Removed {
                    model: None,
                    kept: model.clone(),
                });
            }
            if let Some(m) = &model {
                tx.execute("DELETE FROM models WHERE id = $1", &[m])?;
            }
            Ok(JobDeleted::Removed {
                model: model.clone(),
                kept: None,
            })
        })
    }

    fn delete_model(&self, ws: Ws, id: &str) -> Result<ModelDeleted> {
        self.tx(|tx| {
            if tx
                .query_opt(
                    "SELECT 1 FROM models WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2) FOR UPDATE",
                    &[&id, &ws],
                )?
                .is_none()
            {
                return Ok(ModelDeleted::Missing);
            }
            let versions: Vec<(String, u32)> = tx
                .query(
                    "SELECT name, version FROM versions WHERE model = $1 ORDER BY name, version",
                    &[&id],
                )?
                .iter()
                .map(|r| (r.get(0), r.get::<_, i32>(1) as u32))
                .collect();
            if !versions.is_empty() {
                return Ok(ModelDeleted::Registered(versions));
            }
            tx.execute("DELETE FROM models WHERE id = $1", &[&id])?;
            Ok(ModelDeleted::Removed)
        })
    }

    fn insert_job(&self, job: &NewJob, key: Option<&str>) -> Result<Queued> {
        let key = key.map(|k| format!("{}/{k}", job.workspace));
        self.tx(|tx| {
            // The workspace's row first: submissions to one workspace count its jobs in turn.
            let quotas = lock_quotas(tx, job.workspace)?;
            if let Some(k) = &key
                && let Some(first) = tx.query_opt(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"),
                    &[k],
                )?
            {
                return Ok(Queued::Replayed(Box::new(job_row(&first))));
            }
            if let Some((Some(max), _)) = quotas {
                let used: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM jobs WHERE workspace = $1 AND status IN ('queued', 'running')",
                        &[&job.workspace],
                    )?
                    .get(0);
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
            // The data sets' rows shared-locked: a deletion waits for this job (and then
            // finds it queued), or this finds it gone.
            for id in std::iter::once(job.dataset).chain(job.val_dataset) {
                if tx
                    .query_opt("SELECT 1 FROM datasets WHERE id = $1 FOR SHARE", &[&id])?
                    .is_none()
                {
                    return Ok(Queued::NoDataset(id.to_string()));
                }
            }
            let added = tx.execute(
                "INSERT INTO jobs (id, status, dataset, request, spec, created, idempotency_key, workspace, created_by, register, val_dataset) VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (idempotency_key) DO NOTHING",
                &[
                    &job.id,
                    &job.dataset,
                    &job.request.to_string(),
                    &job.spec,
                    &now(),
                    &key,
                    &job.workspace,
                    &job.created_by,
                    &job.register,
                    &job.val_dataset,
                ],
            )?;
            if added == 0 {
                let first = tx.query_one(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1"),
                    &[&key],
                )?;
                return Ok(Queued::Replayed(Box::new(job_row(&first))));
            }
            let posted = append_tx(tx, job.id, None, &queued_event(job.created_by))?
                .expect("unfenced");
            tx.execute("SELECT pg_notify('mdn_jobs', $1)", &[&job.id])?;
            Ok(Queued::New(posted))
        })
    }

    fn job(&self, ws: Ws, id: &str) -> Result<Option<JobRow>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2)"),
                &[&id, &ws],
            )
            .map(|r| r.as_ref().map(job_row))
        })
    }

    fn jobs(&self, ws: Ws, status: Option<&str>) -> Result<Vec<JobRow>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::TEXT IS NULL OR workspace = $2) ORDER BY seq"
                ),
                &[&status, &ws],
            )
            .map(|rows| rows.iter().map(job_row).collect())
        })
    }

    fn job_counts(&self) -> Result<Vec<(String, u64)>> {
        self.with(|c| {
            c.query(
                "SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status",
                &[],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                    .collect()
            })
        })
    }

    fn claim_next(&self, worker: &str, lease_seconds: f64) -> Result<Option<Claim>> {
        let lease = new_id("lease");
        self.with(|c| {
            c.query_opt(
                &format!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = COALESCE(started, $1), error = NULL, lease = $2, lease_expires = {DB_NOW} + $3, worker = $4 \
                     WHERE seq = (SELECT seq FROM jobs WHERE status = 'queued' ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 1) \
                     RETURNING id, spec, attempts"
                ),
                &[&now(), &lease, &lease_seconds, &worker],
            )
        })
        .map(|row| {
            row.map(|r| Claim {
                id: r.get(0),
                spec: r.get(1),
                lease: lease.clone(),
                attempt: r.get::<_, i32>(2) as u32,
            })
        })
    }

    fn renew(&self, id: &str, lease: &str, lease_seconds: f64) -> Result<Renewal> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "UPDATE jobs SET lease_expires = {DB_NOW} + $3 WHERE id = $1 AND lease = $2 AND status = 'running' RETURNING cancel_requested"
                ),
                &[&id, &lease, &lease_seconds],
            )
        })
        .map(|r| Renewal::from_cancel(r.map(|r| r.get(0))))
    }

    fn requeue_expired(&self, max_attempts: u32, all: bool) -> Result<Vec<Posted>> {
        self.tx(|tx| {
            // SKIP LOCKED: a job whose worker is writing right now is not expired.
            let expired = tx.query(
                &format!(
                    "SELECT id, attempts, vanished FROM jobs WHERE status = 'running' AND ($1 OR lease_expires IS NULL OR lease_expires < {DB_NOW}) ORDER BY seq FOR UPDATE SKIP LOCKED"
                ),
                &[&all],
            )?;
            let mut out = Vec::new();
            for r in expired {
                let id: String = r.get(0);
                let v = Vanished::new(r.get::<_, i32>(1) as u32, r.get::<_, i32>(2) as u32, max_attempts);
                tx.execute(
                    "UPDATE jobs SET status = $2, vanished = $3, lease = NULL, lease_expires = NULL, worker = NULL, error = $4, finished = $5 WHERE id = $1",
                    &[&id, &v.status, &(v.count as i32), &v.error(), &v.finished],
                )?;
                if let Some(p) = append_tx(tx, &id, None, &v.event)? {
                    out.push(p);
                }
                if v.status == QUEUED {
                    tx.execute("SELECT pg_notify('mdn_jobs', $1)", &[&id])?;
                }
            }
            Ok(out)
        })
    }

    fn cancel(&self, ws: Ws, id: &str, by: Option<&str>) -> Result<Cancel> {
        self.tx(|tx| {
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM jobs WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2) FOR UPDATE",
                    &[&id, &ws],
                )?
                .map(|r| r.get(0));
            Ok(match status.as_deref() {
                Some(QUEUED) => {
                    tx.execute(
                        "UPDATE jobs SET status = 'cancelled', cancel_requested = TRUE, finished = $2 WHERE id = $1",
                        &[&id, &now()],
                    )?;
                    let posted = append_tx(tx, id, None, &cancelled_event(by))?;
                    Cancel::Cancelled(posted.expect("unfenced"))
                }
                Some(RUNNING) => {
                    tx.execute(
                        "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1",
                        &[&id],
                    )?;
                    let posted = append_tx(tx, id, None, &cancel_requested_event(by))?;
                    Cancel::Requested(posted.expect("unfenced"))
                }
                Some(s) => Cancel::Finished(s.to_string()),
                None => Cancel::Missing,
            })
        })
    }

    fn set_device(&self, id: &str, lease: &str, device: &str) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET device = $3 WHERE id = $1 AND lease = $2 AND status = 'running'",
                &[&id, &lease, &device],
            )
        })
        .map(|n| n == 1)
    }

    fn set_progress(
        &self,
        id: &str,
        lease: &str,
        lease_seconds: f64,
        p: &Progress,
    ) -> Result<Renewal> {
        self.with(|c| {
            c.query_opt(
                &format!("UPDATE jobs SET epoch = $3, max_epochs = $4, train_nll = $5, val_nll = $6, best_epoch = $7, best_val_nll = $8, rows_per_sec = $9, eta_seconds = $10, lease_expires = {DB_NOW} + $11 WHERE id = $1 AND lease = $2 AND status = 'running' RETURNING cancel_requested"),
                &[
                    &id,
                    &lease,
                    &(p.epoch as i64),
                    &(p.max_epochs as i64),
                    &p.train_nll,
                    &p.val_nll,
                    &(p.best_epoch as i64),
                    &p.best_val_nll,
                    &p.rows_per_sec,
                    &p.eta_seconds,
                    &lease_seconds,
                ],
            )
        })
        .map(|r| Renewal::from_cancel(r.map(|r| r.get(0))))
    }

    fn end(
        &self,
        id: &str,
        lease: &str,
        outcome: &Outcome,
        event: &Value,
    ) -> Result<Option<Posted>> {
        self.tx(|tx| {
            let held = tx
                .query_opt(
                    "SELECT 1 FROM jobs WHERE id = $1 AND lease = $2 AND status = 'running' FOR UPDATE",
                    &[&id, &lease],
                )?
                .is_some();
            if !held {
                return Ok(None);
            }
            if outcome.status == QUEUED {
                tx.execute(
                    "UPDATE jobs SET status = 'queued', lease = NULL, lease_expires = NULL, worker = NULL WHERE id = $1",
                    &[&id],
                )?;
                tx.execute("SELECT pg_notify('mdn_jobs', $1)", &[&id])?;
            } else {
                let t = now();
                if let Some(m) = outcome.model {
                    tx.execute(
                        "INSERT INTO models (id, job, created, workspace, bytes) SELECT $1, $2, $3, workspace, $4 FROM jobs WHERE id = $2 ON CONFLICT (id) DO UPDATE SET job = EXCLUDED.job, created = EXCLUDED.created, workspace = EXCLUDED.workspace, bytes = EXCLUDED.bytes",
                        &[&m, &id, &t, &(outcome.model_bytes as i64)],
                    )?;
                }
                tx.execute(
                    "UPDATE jobs SET status = $2, error = $3, model = $4, finished = $5, eta_seconds = 0, lease = NULL, lease_expires = NULL, worker = NULL WHERE id = $1",
                    &[&id, &outcome.status, &outcome.error, &outcome.model, &t],
                )?;
                // A job that asked for it registers its model, in the same transaction.
                let row = tx.query_one(
                    "SELECT workspace, register, created_by FROM jobs WHERE id = $1",
                    &[&id],
                )?;
                let (ws, register, by): (String, Option<String>, Option<String>) =
                    (row.get(0), row.get(1), row.get(2));
                if let (SUCCEEDED, Some(m), Some(name)) = (outcome.status, outcome.model, register) {
                    let v = register_tx(tx, &ws, &name, m, Some(id), &[], by.as_deref())?;
                    return append_tx(tx, id, None, &with_registered(event, Some(&v)));
                }
            }
            append_tx(tx, id, None, event)
        })
    }

    fn append_event(&self, job: &str, lease: Option<&str>, data: &Value) -> Result<Option<Posted>> {
        self.tx(|tx| append_tx(tx, job, lease, data))
    }

    fn events(&self, job: &str, after: u64) -> Result<Vec<(u64, String)>> {
        self.with(|c| {
            c.query(
                "SELECT seq, data FROM events WHERE job = $1 AND seq > $2 ORDER BY seq",
                &[&job, &(after as i64)],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                    .collect()
            })
        })
    }

    fn model_workspace(&self, id: &str) -> Result<Option<String>> {
        self.with(|c| c.query_opt("SELECT workspace FROM models WHERE id = $1", &[&id]))
            .map(|r| r.map(|r| r.get(0)))
    }

    fn models(&self, ws: Ws) -> Result<Vec<ModelRow>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT m.id, m.workspace, m.job, m.bytes, m.created, \
                 (SELECT string_agg(v.name || ':' || v.version, ',') FROM versions v WHERE v.model = m.id) \
                 FROM models m WHERE $1::TEXT IS NULL OR m.workspace = $1 ORDER BY m.created, m.id",
                &[&ws],
            )?;
            Ok(rows
                .iter()
                .map(|r| ModelRow {
                    id: r.get(0),
                    workspace: r.get(1),
                    job: r.get(2),
                    bytes: r.get::<_, i64>(3) as u64,
                    created: r.get(4),
                    versions: sorted_versions(r.get(5)),
                })
                .collect())
        })
    }

    fn model_dataset(&self, id: &str) -> Result<Option<DatasetRow>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {} FROM models m JOIN jobs j ON j.id = m.job JOIN datasets d ON d.id = j.dataset WHERE m.id = $1",
                    prefixed("d", DATASET_COLUMNS)
                ),
                &[&id],
            )
            .map(|r| r.as_ref().map(dataset_row))
        })
    }

    fn put_workspace(&self, w: &Workspace) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO workspaces (name, max_jobs, max_bytes, created) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET max_jobs = EXCLUDED.max_jobs, max_bytes = EXCLUDED.max_bytes",
                &[
                    &w.name,
                    &w.max_jobs.map(|v| v as i64),
                    &w.max_bytes.map(|v| v as i64),
                    &w.created,
                ],
            )
        })
        .map(|_| ())
    }

    fn workspaces(&self, ws: Ws) -> Result<Vec<Usage>> {
        self.with(|c| {
            c.query(
                "SELECT w.name, w.max_jobs, w.max_bytes, w.created, \
                 (SELECT COUNT(*) FROM jobs j WHERE j.workspace = w.name AND j.status IN ('queued', 'running')), \
                 ((SELECT COALESCE(SUM(bytes), 0) FROM datasets d WHERE d.workspace = w.name) + (SELECT COALESCE(SUM(bytes), 0) FROM models m WHERE m.workspace = w.name))::BIGINT, \
                 (SELECT COUNT(*) FROM keys k WHERE k.workspace = w.name AND k.revoked IS NULL) \
                 FROM workspaces w WHERE $1::TEXT IS NULL OR w.name = $1 ORDER BY w.name",
                &[&ws],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| Usage {
                        workspace: Workspace {
                            name: r.get(0),
                            max_jobs: r.get::<_, Option<i64>>(1).map(|v| v as u64),
                            max_bytes: r.get::<_, Option<i64>>(2).map(|v| v as u64),
                            created: r.get(3),
                        },
                        jobs: r.get::<_, i64>(4) as u64,
                        bytes: r.get::<_, i64>(5) as u64,
                        keys: r.get::<_, i64>(6) as u64,
                    })
                    .collect()
            })
        })
    }

    fn insert_key(&self, k: &KeyRow) -> Result<()> {
        self.tx(|tx| {
            if let Some(ws) = &k.workspace {
                tx.execute(
                    "INSERT INTO workspaces (name, created) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[ws, &k.created],
                )?;
            }
            tx.execute(
                &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &[
                    &k.id,
                    &k.workspace,
                    &k.name,
                    &k.scope.as_str(),
                    &k.hash,
                    &k.created,
                    &k.last_used,
                    &k.revoked,
                ],
            )?;
            Ok(())
        })
    }

    fn key(&self, id: &str) -> Result<Option<KeyRow>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"),
                &[&id],
            )
            .map(|r| r.as_ref().map(key_row))
        })
    }

    fn keys(&self, ws: Ws) -> Result<Vec<KeyRow>> {
        self.with(|c| {
            c.query(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE $1::TEXT IS NULL OR workspace = $1 ORDER BY created, id"),
                &[&ws],
            )
            .map(|rows| rows.iter().map(key_row).collect())
        })
    }

    fn revoke_key(&self, ws: Ws, id: &str) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE keys SET revoked = $3 WHERE id = $1 AND ($2::TEXT IS NULL OR workspace = $2) AND revoked IS NULL",
                &[&id, &ws, &now()],
            )
        })
        .map(|n| n == 1)
    }

    fn touch_key(&self, id: &str, t: f64) -> Result<()> {
        self.with(|c| c.execute("UPDATE keys SET last_used = $2 WHERE id = $1", &[&id, &t]))
            .map(|_| ())
    }

    fn any_keys(&self) -> Result<bool> {
        self.with(|c| c.query_opt("SELECT 1 FROM keys LIMIT 1", &[]))
            .map(|r| r.is_some())
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
            // FOR SHARE: a deletion of the model waits for this registration, or this for it.
            let job = tx.query_opt(
                "SELECT job FROM models WHERE id = $1 AND workspace = $2 FOR SHARE",
                &[&model, &ws],
            )?;
            match job {
                None => Ok(None),
                Some(r) => {
                    let job: Option<String> = r.get(0);
                    register_tx(tx, ws, name, model, job.as_deref(), tags, by).map(Some)
                }
            }
        })
    }

    fn registry(&self, ws: Ws) -> Result<Vec<RegisteredModel>> {
        self.with(|c| {
            let mut out: Vec<RegisteredModel> = c
                .query(
                    "SELECT r.workspace, r.name, r.created, \
                     (SELECT MAX(version) FROM versions v WHERE v.workspace = r.workspace AND v.name = r.name), \
                     (SELECT COUNT(*) FROM versions v WHERE v.workspace = r.workspace AND v.name = r.name) \
                     FROM registry r WHERE $1::TEXT IS NULL OR r.workspace = $1 ORDER BY r.name, r.workspace",
                    &[&ws],
                )?
                .iter()
                .map(|r| RegisteredModel {
                    workspace: r.get(0),
                    name: r.get(1),
                    created: r.get(2),
                    latest: r.get::<_, Option<i32>>(3).unwrap_or(0) as u32,
                    versions: r.get::<_, i64>(4) as u32,
                    aliases: Default::default(),
                })
                .collect();
            for r in c.query(
                "SELECT workspace, name, alias, version FROM aliases WHERE $1::TEXT IS NULL OR workspace = $1",
                &[&ws],
            )? {
                let (w, n): (String, String) = (r.get(0), r.get(1));
                if let Some(m) = out.iter_mut().find(|m| m.workspace == w && m.name == n) {
                    m.aliases.insert(r.get(2), r.get::<_, i32>(3) as u32);
                }
            }
            Ok(out)
        })
    }

    fn versions(&self, ws: &str, name: &str) -> Result<Vec<VersionRow>> {
        self.with(|c| {
            c.query(
                &format!("SELECT {VERSION_COLUMNS} FROM versions v WHERE v.workspace = $1 AND v.name = $2 ORDER BY v.version"),
                &[&ws, &name],
            )
            .map(|rows| rows.iter().map(version_row).collect())
        })
    }

    fn resolve(&self, ws: &str, name: &str, which: Selector) -> Result<Option<VersionRow>> {
        let base = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.workspace = $1 AND v.name = $2"
        );
        self.with(|c| {
            match which {
                Selector::Latest => c.query_opt(
                    &format!("{base} ORDER BY v.version DESC LIMIT 1"),
                    &[&ws, &name],
                ),
                Selector::Version(n) => c.query_opt(
                    &format!("{base} AND v.version = $3"),
                    &[&ws, &name, &(n as i32)],
                ),
                Selector::Alias(a) => c.query_opt(
                    &format!("{base} AND v.version = (SELECT version FROM aliases WHERE workspace = $1 AND name = $2 AND alias = $3)"),
                    &[&ws, &name, &a],
                ),
            }
            .map(|r| r.as_ref().map(version_row))
        })
    }

    fn set_tags(&self, ws: &str, name: &str, version: u32, tags: &[String]) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE versions SET tags = $4 WHERE workspace = $1 AND name = $2 AND version = $3",
                &[
                    &ws,
                    &name,
                    &(version as i32),
                    &serde_json::to_string(tags).expect("tags"),
                ],
            )
        })
        .map(|n| n == 1)
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
            // The version's row shared-locked: its deletion waits for this alias (and then
            // removes it), or this finds the version gone.
            if tx
                .query_opt(
                    "SELECT 1 FROM versions WHERE workspace = $1 AND name = $2 AND version = $3 FOR SHARE",
                    &[&ws, &name, &(version as i32)],
                )?
                .is_none()
            {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO aliases (workspace, name, alias, version, updated, updated_by) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (workspace, name, alias) DO UPDATE SET version = EXCLUDED.version, updated = EXCLUDED.updated, updated_by = EXCLUDED.updated_by",
                &[&ws, &name, &alias, &(version as i32), &now(), &by],
            )?;
            Ok(true)
        })
    }

    fn delete_alias(&self, ws: &str, name: &str, alias: &str) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "DELETE FROM aliases WHERE workspace = $1 AND name = $2 AND alias = $3",
                &[&ws, &name, &alias],
            )
        })
        .map(|n| n == 1)
    }

    fn delete_version(&self, ws: &str, name: &str, version: u32) -> Result<Option<Vec<String>>> {
        let v = version as i32;
        self.tx(|tx| {
            let found = tx.execute(
                "DELETE FROM versions WHERE workspace = $1 AND name = $2 AND version = $3",
                &[&ws, &name, &v],
            )?;
            if found == 0 {
                return Ok(None);
            }
            let aliases = tx
                .query(
                    "DELETE FROM aliases WHERE workspace = $1 AND name = $2 AND version = $3 RETURNING alias",
                    &[&ws, &name, &v],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect::<Vec<String>>();
            let mut aliases = aliases;
            aliases.sort();
            Ok(Some(aliases))
        })
    }
}

/// Listens on `client` until the connection fails, passing each notification to `on`.
fn listen_on(
    mut client: Client,
    on: &(dyn Fn(Notice) + Send + Sync),
) -> Result<(), ::postgres::Error> {
    client.batch_execute("LISTEN mdn_events; LISTEN mdn_jobs")?;
    loop {
        let mut batch = Vec::new();
        {
            let mut n = client.notifications();
            // Waits for one (or 30 s, then checks the connection), then takes what else is
            // already here.
            let first = n.timeout_iter(Duration::from_secs(30)).next()?;
            if let Some(first) = first {
                batch.push(first);
                let mut more = n.iter();
                while let Some(m) = more.next()? {
                    batch.push(m);
                }
            }
        }
        if batch.is_empty() {
            client.simple_query("SELECT 1")?;
            continue;
        }
        for note in batch {
            if note.channel() == "mdn_jobs" {
                on(Notice::Queued);
                continue;
            }
            let mut parts = note.payload().split(' ');
            let (Some(job), Some(Ok(seq))) = (parts.next(), parts.next().map(str::parse::<i64>))
            else {
                continue;
            };
            if let Some(r) = client.query_opt(
                "SELECT data FROM events WHERE job = $1 AND seq = $2",
                &[&job, &seq],
            )? {
                on(Notice::Event(Posted {
                    job: job.to_string(),
                    seq: seq as u64,
                    data: r.get(0),
                }));
            }
        }
    }
}
