//! The service's state: datasets, jobs with their leases and events, and models, behind one
//! trait ([`Store`]) with two implementations:
//!
//! - [`SqliteStore`] (`--store DIR`, the default): one file, `DIR/mdn.sqlite`, owned by one
//!   process at a time (a second `mdn serve` on it is refused). Nothing to install.
//! - [`PostgresStore`] (`--store postgres://...`): the same tables in PostgreSQL, shared by
//!   any number of `mdn serve` processes on any number of machines. Events reach every
//!   process through `LISTEN/NOTIFY`.
//!
//! Files (uploaded data, checkpoints, models) are not in the store but in [`Files`], a
//! directory every process sees; rows name them only by ids the store generated.
//!
//! **Leases.** A worker claims the oldest queued job in one statement, which bumps the job's
//! attempt and gives it a fresh lease id with an expiry. Everything the worker writes after
//! that (renewals, progress, events, its outcome) is fenced on (job, lease): once the lease
//! expired and any process re-queued the job ([`Store::requeue_expired`]), the old worker's
//! writes change nothing, and it stops. A job whose worker vanished `max_attempts` times
//! ends `failed` with the reason. Every state change is one transaction; a job's events are
//! numbered 1, 2, ... without gaps, in the order they were committed.

mod files;
mod objects;
mod postgres;
mod sqlite;

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

pub use files::Files;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

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

/// The workspace of everything made before workspaces existed, and of a server admin's
/// requests that name none.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Which workspaces a call sees: `Some(name)` one, `None` (a server admin) every one.
pub type Ws<'a> = Option<&'a str>;

/// Whether `name` can name a workspace: 1 to 40 lowercase letters, digits, `-` and `_`.
pub fn valid_workspace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// What an API key may do, each including the one before: `read` (list, fetch, predict),
/// `write` (also upload, submit, cancel, delete), `admin` (also manage keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!("expected read, write or admin, got {s:?}")),
        }
    }
}

/// An API key as stored: never the key itself, only the SHA-256 of its secret part.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct KeyRow {
    /// `key_` and 16 hex digits: the key's first part, which finds its row.
    pub id: String,
    /// None: a server admin key, which sees every workspace.
    pub workspace: Option<String>,
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the key's secret, in hex.
    #[serde(skip)]
    pub hash: String,
    pub created: f64,
    pub last_used: Option<f64>,
    pub revoked: Option<f64>,
}

/// A workspace and its quotas (None: no limit).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Workspace {
    pub name: String,
    /// Most jobs queued or running at once.
    pub max_jobs: Option<u64>,
    /// Most bytes of data sets and models stored.
    pub max_bytes: Option<u64>,
    pub created: f64,
}

/// A workspace with what it uses now.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Usage {
    #[serde(flatten)]
    pub workspace: Workspace,
    /// Jobs queued or running.
    pub jobs: u64,
    /// Bytes of its data sets and models.
    pub bytes: u64,
    /// Keys not revoked.
    pub keys: u64,
}

/// A quota a request would go past.
#[derive(Debug, Clone, PartialEq)]
pub struct OverQuota {
    /// `max_jobs` or `max_bytes`.
    pub quota: &'static str,
    pub workspace: String,
    /// What the workspace uses now (jobs, or bytes).
    pub used: u64,
    /// What the request adds.
    pub adds: u64,
    pub limit: u64,
}

/// How [`Store::insert_dataset`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    New,
    /// The idempotency key was used before: the data set that request added.
    Replayed(DatasetRow),
    /// The workspace has a data set of the same bytes, format and column names: that one
    /// (nothing added).
    Existing(DatasetRow),
    /// The workspace's `max_bytes` would be passed: nothing added.
    OverQuota(OverQuota),
}

/// Whether `name` can name a registered model: 1 to 64 letters, digits, `.`, `-` and `_`,
/// starting with a letter, and not shaped like a model id (`m_` and hex digits), so that
/// `/v1/models/{name}` is never ambiguous.
pub fn valid_model_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        && !name.starts_with("m_")
}

/// Whether `alias` can name an alias (`production`, `staging`): 1 to 40 letters, digits,
/// `-` and `_`, starting with a letter, and not all digits (those are versions).
pub fn valid_alias(alias: &str) -> bool {
    let b = alias.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}

/// A version of a registered model.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct VersionRow {
    pub name: String,
    pub workspace: String,
    /// 1, 2, ... in the order they were registered.
    pub version: u32,
    /// The model's id (`/v1/models/{id}`).
    pub model: String,
    /// The job that trained it, if it was registered by its job.
    pub job: Option<String>,
    pub tags: Vec<String>,
    /// The aliases that point at this version now.
    pub aliases: Vec<String>,
    pub created: f64,
    pub created_by: Option<String>,
}

impl VersionRow {
    /// A version just registered (no aliases yet).
    #[allow(clippy::too_many_arguments)]
    fn registered(
        ws: &str,
        name: &str,
        version: u32,
        model: &str,
        job: Option<&str>,
        tags: &[String],
        by: Option<&str>,
        created: f64,
    ) -> VersionRow {
        VersionRow {
            name: name.into(),
            workspace: ws.into(),
            version,
            model: model.into(),
            job: job.map(str::to_string),
            tags: tags.to_vec(),
            aliases: vec![],
            created,
            created_by: by.map(str::to_string),
        }
    }
}

/// A registered model name: its newest version and its aliases.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RegisteredModel {
    pub name: String,
    pub workspace: String,
    pub latest: u32,
    pub versions: u32,
    /// alias -> version.
    pub aliases: std::collections::BTreeMap<String, u32>,
    pub created: f64,
}

/// Which version of a registered model a request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    Latest,
    Version(u32),
    Alias(&'a str),
}

/// An uploaded data set.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DatasetRow {
    pub id: String,
    pub workspace: String,
    /// The key that uploaded it (`name (key_...)`), None without keys.
    pub created_by: Option<String>,
    pub name: String,
    /// `csv` or `npy`.
    pub format: String,
    pub rows: usize,
    pub columns: Vec<String>,
    pub bytes: u64,
    /// The SHA-256 of the file's bytes, in hex: an upload of the same bytes, format and
    /// column names into the same workspace is this data set, not a copy. None for data sets
    /// stored before the service kept it.
    pub sha256: Option<String>,
    pub created: f64,
}

/// A trained model as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ModelRow {
    pub id: String,
    pub workspace: String,
    /// The job that trained it (it may have been deleted since).
    pub job: String,
    /// The size of its file.
    pub bytes: u64,
    pub created: f64,
    /// The registry versions that hold it, `NAME:VERSION`.
    pub versions: Vec<String>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobRow {
    pub id: String,
    pub workspace: String,
    /// The key that submitted it (`name (key_...)`), None without keys.
    pub created_by: Option<String>,
    /// The registered model name its model becomes a new version of, when it succeeds.
    pub register: Option<String>,
    pub status: String,
    pub dataset: String,
    /// Its own validation data set (else it holds out rows of `dataset`).
    pub val_dataset: Option<String>,
    /// What the client sent: target, features and options.
    #[schema(value_type = Object)]
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
    /// The worker running it (`host:pid:thread`), while it runs.
    pub worker: Option<String>,
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

/// A job a worker took: run it while the lease holds.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    /// The [`crate::job::TrainJob`] to run, as JSON.
    pub spec: String,
    /// Fences every later write of this attempt.
    pub lease: String,
    /// 1 for the first run, 2 after one resume, ...
    pub attempt: u32,
}

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still this worker's; whether a client asked the job to stop.
    Held { cancel_requested: bool },
    /// Another process re-queued the job (this worker was too slow to renew, or the job is
    /// gone): stop, and write nothing more.
    Lost,
}

impl Renewal {
    /// What a fenced update that returns the job's `cancel_requested` found: None when no
    /// row matched (the lease is gone).
    fn from_cancel(cancel_requested: Option<bool>) -> Renewal {
        match cancel_requested {
            Some(cancel_requested) => Renewal::Held { cancel_requested },
            None => Renewal::Lost,
        }
    }
}

/// An event as stored: its job, number, and JSON text (with `seq` in it).
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub job: String,
    pub seq: u64,
    pub data: String,
}

/// How [`Store::delete_dataset`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// Removed; its files (of this format) are the caller's to remove.
    Removed { format: String },
    /// No such data set.
    Missing,
    /// A queued or running job (this one) uses it.
    InUse(String),
}

/// How [`Store::delete_job`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum JobDeleted {
    /// The job and its events are gone. `model`: its model, removed with it (its file is the
    /// caller's to remove); `kept`: its model, kept because the registry holds it.
    Removed {
        model: Option<String>,
        kept: Option<String>,
    },
    /// No such job.
    Missing,
    /// Queued or running (this status): it must end first.
    Unfinished(String),
}

/// How [`Store::delete_model`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelDeleted {
    /// Gone; its file is the caller's to remove.
    Removed,
    /// No such model.
    Missing,
    /// Registered as these versions (name, version): those are deleted first.
    Registered(Vec<(String, u32)>),
}

/// How [`Store::cancel`] went.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// It was queued: now cancelled (the event says so).
    Cancelled(Posted),
    /// It is running: its worker stops after the epoch (the next renewal tells it); the
    /// event says who asked.
    Requested(Posted),
    /// It has already finished, with this status.
    Finished(String),
    Missing,
}

/// How a worker leaves a job: back to the queue (status [`QUEUED`], the service stopping)
/// or finished.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub model: Option<&'a str>,
    /// The model file's size (counted against its workspace's `max_bytes`).
    pub model_bytes: u64,
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub workspace: &'a str,
    /// The key that submitted it.
    pub created_by: Option<&'a str>,
    pub dataset: &'a str,
    /// Its own validation data set, if it has one.
    pub val_dataset: Option<&'a str>,
    /// What the client sent.
    pub request: &'a Value,
    /// The [`crate::job::TrainJob`] the worker runs, as JSON.
    pub spec: &'a str,
    /// Registers the job's model under this name (a new version) when it succeeds.
    pub register: Option<&'a str>,
}

/// How [`Store::insert_job`] went.
#[derive(Debug, Clone)]
pub enum Queued {
    /// Queued, with this first event.
    New(Posted),
    /// The idempotency key was used before: the job that request queued.
    Replayed(Box<JobRow>),
    /// The workspace's `max_jobs` would be passed: nothing queued.
    OverQuota(OverQuota),
    /// Its data set (or validation data set), this one, was deleted meanwhile: nothing
    /// queued.
    NoDataset(String),
}

/// What another process did, as the PostgreSQL store hears it.
#[derive(Debug, Clone)]
pub enum Notice {
    Event(Posted),
    /// A job was queued: a worker may take it.
    Queued,
}

/// The service's state; see the module's description. Every method is one transaction.
pub trait Store: Send + Sync {
    /// Starts passing what other processes do to `on` (PostgreSQL); false when the store
    /// has one process, which then tells its own listeners (SQLite).
    fn listen(&self, on: Arc<dyn Fn(Notice) + Send + Sync>) -> Result<bool>;

    /// Adds a data set (its workspace's `max_bytes` allowing). With an idempotency `key`
    /// already used in its workspace, adds nothing and returns the data set the first
    /// request added.
    fn insert_dataset(&self, d: &DatasetRow, key: Option<&str>) -> Result<Added>;
    /// A data set of workspace `ws` (None: of any).
    fn dataset(&self, ws: Ws, id: &str) -> Result<Option<DatasetRow>>;
    /// Data sets, oldest first.
    fn datasets(&self, ws: Ws) -> Result<Vec<DatasetRow>>;
    /// Removes a data set unless a queued or running job uses it.
    fn delete_dataset(&self, ws: Ws, id: &str) -> Result<Deleted>;
    /// The workspace's data set of these bytes (their SHA-256), format and column names
    /// (None: any).
    fn dataset_by_content(
        &self,
        ws: &str,
        sha256: &str,
        format: &str,
        columns: Option<&[String]>,
    ) -> Result<Option<DatasetRow>>;
    /// Deletes a finished job, its events, and its model unless a registry version holds it.
    fn delete_job(&self, ws: Ws, id: &str) -> Result<JobDeleted>;
    /// Deletes a model that no registry version holds.
    fn delete_model(&self, ws: Ws, id: &str) -> Result<ModelDeleted>;

    /// Queues a job with its first event (`queued`), its workspace's `max_jobs` allowing.
    /// With an idempotency `key` already used in its workspace, queues nothing and returns
    /// the job the first request queued.
    fn insert_job(&self, job: &NewJob, key: Option<&str>) -> Result<Queued>;
    fn job(&self, ws: Ws, id: &str) -> Result<Option<JobRow>>;
    /// Jobs, oldest first, optionally of one status.
    fn jobs(&self, ws: Ws, status: Option<&str>) -> Result<Vec<JobRow>>;
    /// Counts of jobs by status, in every workspace.
    fn job_counts(&self) -> Result<Vec<(String, u64)>>;

    /// Takes the oldest queued job for `worker`, with a lease of `lease_seconds`.
    fn claim_next(&self, worker: &str, lease_seconds: f64) -> Result<Option<Claim>>;
    /// Extends a lease by `lease_seconds` from now.
    fn renew(&self, id: &str, lease: &str, lease_seconds: f64) -> Result<Renewal>;
    /// Re-queues running jobs whose lease expired (`all`: every running job, for a store
    /// that one process owns and that process just started), each with a status event; a
    /// job that lost its worker `max_attempts` times fails instead.
    fn requeue_expired(&self, max_attempts: u32, all: bool) -> Result<Vec<Posted>>;
    /// Cancels a queued job, or asks a running one to stop; the event names who (`by`).
    fn cancel(&self, ws: Ws, id: &str, by: Option<&str>) -> Result<Cancel>;

    /// Fenced writes of the worker holding `lease`: false (or None) when it no longer does.
    fn set_device(&self, id: &str, lease: &str, device: &str) -> Result<bool>;
    /// Records an epoch's progress and renews the lease (one statement): what a renewal
    /// finds.
    fn set_progress(
        &self,
        id: &str,
        lease: &str,
        lease_seconds: f64,
        p: &Progress,
    ) -> Result<Renewal>;
    /// Ends the attempt: back to the queue or finished (the model, if any, registered in
    /// the same transaction), with `event` as the job's status event.
    fn end(
        &self,
        id: &str,
        lease: &str,
        outcome: &Outcome,
        event: &Value,
    ) -> Result<Option<Posted>>;
    /// Appends an event to a job's history, fenced on `lease` when given.
    fn append_event(&self, job: &str, lease: Option<&str>, data: &Value) -> Result<Option<Posted>>;

    /// A job's events after `after`, in order, as (seq, JSON text).
    fn events(&self, job: &str, after: u64) -> Result<Vec<(u64, String)>>;
    /// The workspace of model `id`, if it exists (its file is [`Files::model_path`]).
    fn model_workspace(&self, id: &str) -> Result<Option<String>>;
    /// The models of a workspace (None: all), oldest first, with the versions holding them.
    fn models(&self, ws: Ws) -> Result<Vec<ModelRow>>;
    /// The data set the job that wrote model `id` trained on (None if either is gone).
    fn model_dataset(&self, id: &str) -> Result<Option<DatasetRow>>;

    /// Creates workspace `w.name`, or sets its quotas.
    fn put_workspace(&self, w: &Workspace) -> Result<()>;
    /// Workspaces with what each uses, by name (`ws`: only that one).
    fn workspaces(&self, ws: Ws) -> Result<Vec<Usage>>;
    /// Adds a key (creating its workspace if new).
    fn insert_key(&self, k: &KeyRow) -> Result<()>;
    /// The key with this id, revoked or not.
    fn key(&self, id: &str) -> Result<Option<KeyRow>>;
    /// Keys, oldest first, revoked ones too.
    fn keys(&self, ws: Ws) -> Result<Vec<KeyRow>>;
    /// Revokes a key of `ws`; false when there is no such key not yet revoked.
    fn revoke_key(&self, ws: Ws, id: &str) -> Result<bool>;
    /// Records that a key was used at `t`.
    fn touch_key(&self, id: &str, t: f64) -> Result<()>;
    /// Whether any key was ever made (revoked ones count): then every request needs one.
    fn any_keys(&self) -> Result<bool>;

    /// Registers model `model` (of workspace `ws`) as the next version of `name` there;
    /// None when `ws` has no such model.
    fn register(
        &self,
        ws: &str,
        name: &str,
        model: &str,
        tags: &[String],
        by: Option<&str>,
    ) -> Result<Option<VersionRow>>;
    /// Registered names, by name (`ws` None: of every workspace).
    fn registry(&self, ws: Ws) -> Result<Vec<RegisteredModel>>;
    /// The versions of `name` in `ws`, oldest first (empty: no such name).
    fn versions(&self, ws: &str, name: &str) -> Result<Vec<VersionRow>>;
    /// The version a selector means, read in one statement (an alias moving meanwhile gives
    /// the old version or the new one, never neither).
    fn resolve(&self, ws: &str, name: &str, which: Selector) -> Result<Option<VersionRow>>;
    /// Sets a version's tags; false when there is no such version.
    fn set_tags(&self, ws: &str, name: &str, version: u32, tags: &[String]) -> Result<bool>;
    /// Points `alias` at `version` (made, or moved from wherever it pointed); false when
    /// there is no such version.
    fn set_alias(
        &self,
        ws: &str,
        name: &str,
        alias: &str,
        version: u32,
        by: Option<&str>,
    ) -> Result<bool>;
    /// Removes an alias; false when there was none.
    fn delete_alias(&self, ws: &str, name: &str, alias: &str) -> Result<bool>;
    /// Deletes a version (its model stays) and the aliases on it, which it returns; None
    /// when there is no such version. Its number is never given again.
    fn delete_version(&self, ws: &str, name: &str, version: u32) -> Result<Option<Vec<String>>>;
}

/// Runs blocking work (a database or object store call) from anywhere: on the HTTP
/// runtime's threads the runtime hands their other tasks on first (the clients block on
/// small runtimes of their own).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Opens the store `spec` names: `postgres://` or `postgresql://` URL, else a directory for
/// SQLite. Files go to `files` (a directory, or `s3://bucket/prefix` cached in `cache`), or
/// with SQLite to the store's directory.
pub fn open(
    spec: &str,
    files: Option<&str>,
    cache: Option<&std::path::Path>,
) -> Result<(Arc<dyn Store>, Files)> {
    let postgres = spec.starts_with("postgres://") || spec.starts_with("postgresql://");
    if postgres && files.is_none() {
        return Err(Error::config(
            "--files is needed with a PostgreSQL store: a directory every machine sees (a shared filesystem), or s3://BUCKET/PREFIX",
        ));
    }
    let (store, default_files): (Arc<dyn Store>, Option<&std::path::Path>) = if postgres {
        (Arc::new(PostgresStore::open(spec)?), None)
    } else if spec.contains("://") {
        return Err(Error::config(format!(
            "--store {spec}: expected a directory (SQLite) or a postgres:// URL"
        )));
    } else {
        let dir = std::path::Path::new(spec);
        (Arc::new(SqliteStore::open(dir)?), Some(dir))
    };
    let files = match (files, default_files) {
        (Some(url), _) if url.starts_with("s3://") => {
            let cache = match (cache, default_files) {
                (Some(c), _) => c.to_path_buf(),
                (None, Some(dir)) => dir.join("cache"),
                (None, None) => std::env::temp_dir().join("mdn-cache").join(
                    url.trim_start_matches("s3://")
                        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
                ),
            };
            Files::in_object_store(url, &cache)?
        }
        (Some(url), _) if url.contains("://") => {
            return Err(Error::config(format!(
                "--files {url}: expected a directory or s3://BUCKET/PREFIX"
            )));
        }
        (Some(dir), _) => Files::open(std::path::Path::new(dir))?,
        (None, Some(dir)) => Files::open(dir)?,
        (None, None) => {
            return Err(Error::config(
                "--files is needed with a PostgreSQL store: a directory every machine sees (a shared filesystem), or s3://BUCKET/PREFIX",
            ));
        }
    };
    Ok((store, files))
}

/// A job's first event; `by`: the key that queued it.
fn queued_event(by: Option<&str>) -> Value {
    let mut e = serde_json::json!({"type": "status", "status": QUEUED});
    if let Some(by) = by {
        e["by"] = Value::from(by);
    }
    e
}

/// The event of a queued job cancelled by `by`.
fn cancelled_event(by: Option<&str>) -> Value {
    let mut e = serde_json::json!({"type": "status", "status": CANCELLED});
    if let Some(by) = by {
        e["by"] = Value::from(by);
    }
    e
}

/// The event of a running job asked to stop (by `by`): its worker stops after the epoch.
fn cancel_requested_event(by: Option<&str>) -> Value {
    let mut e = serde_json::json!({"type": "cancel_requested"});
    if let Some(by) = by {
        e["by"] = Value::from(by);
    }
    e
}

/// A version's aliases from the store's comma-joined list, sorted.
/// `NAME:VERSION`s joined with commas, in order of name, then version.
fn sorted_versions(joined: Option<String>) -> Vec<String> {
    let mut v: Vec<String> = joined
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    v.sort_by_key(|s| {
        let (name, version) = s.rsplit_once(':').unwrap_or((s, "0"));
        (name.to_string(), version.parse::<u32>().unwrap_or(0))
    });
    v
}

fn alias_list(joined: Option<String>) -> Vec<String> {
    let mut v: Vec<String> = joined
        .unwrap_or_default()
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The status event of a job whose model was registered: with `registered`.
fn with_registered(event: &Value, v: Option<&VersionRow>) -> Value {
    let mut e = event.clone();
    if let Some(v) = v {
        e["registered"] = serde_json::json!({"name": v.name, "version": v.version});
    }
    e
}

/// `a.x, a.y` of the column list `x, y`.
fn prefixed(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens the store `spec` names for an administrative change (keys, quotas), beside the
/// processes serving it: a SQLite store without taking its ownership.
pub fn open_beside(spec: &str) -> Result<Arc<dyn Store>> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(spec)?))
    } else if spec.contains("://") {
        Err(Error::config(format!(
            "--store {spec}: expected a directory (SQLite) or a postgres:// URL"
        )))
    } else {
        Ok(Arc::new(SqliteStore::open_beside(std::path::Path::new(
            spec,
        ))?))
    }
}

/// The text of an event with its number in it.
fn numbered(data: &Value, seq: u64) -> String {
    let mut data = data.clone();
    data["seq"] = Value::from(seq);
    data.to_string()
}

/// What becomes of a running job whose worker vanished (its lease expired): queued again, or
/// failed once its worker vanished `max_attempts` times; with its status event.
struct Vanished {
    status: &'static str,
    /// Times its worker vanished, this one included.
    count: u32,
    event: Value,
    finished: Option<f64>,
}

impl Vanished {
    fn new(attempts: u32, vanished_before: u32, max_attempts: u32) -> Vanished {
        let count = vanished_before + 1;
        let (status, event) = if count >= max_attempts {
            let error = vanished_error(attempts, max_attempts);
            (
                FAILED,
                serde_json::json!({"type": "status", "status": FAILED, "error": error}),
            )
        } else {
            (
                QUEUED,
                serde_json::json!({
                    "type": "status",
                    "status": QUEUED,
                    "reason": "its worker stopped (killed, out of memory, or out of touch past its lease); the job resumes from its last checkpoint, or from the beginning if it wrote none",
                }),
            )
        };
        Vanished {
            status,
            count,
            event,
            finished: (status == FAILED).then(now),
        }
    }

    fn error(&self) -> Option<&str> {
        self.event["error"].as_str()
    }
}

fn vanished_error(attempts: u32, max_attempts: u32) -> String {
    format!(
        "the job's worker stopped without a word {max_attempts} times (killed, out of memory, or out of touch; {attempts} attempts in all); it is not retried (--max-attempts {max_attempts})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_reach_a_query_or_a_path() {
        assert!(valid_id(&new_id("job")));
        for bad in ["", "../x", "a b", "A", "x;drop", &"a".repeat(41)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
