//! The HTTP API under `/v1`, `/healthz` and `/metrics`. Handlers are thin: they parse, call
//! the store or the library, and answer; every error becomes
//! `{"error": {"code", "message"}}` with its status in one place ([`ApiError`]).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::{self, Caller, Refusal};
use super::runner::{self, Shared};
use super::store::{self, DatasetRow, JobRow, Usage, VersionRow, valid_id};
use crate::backend::CpuBackend;
use crate::data::{ColumnChoice, CsvRows, Dataset};
use crate::error::Error;
use crate::job::TrainJob;
use crate::model::Model;

/// Largest JSON request body (predictions, job submissions).
pub const JSON_LIMIT: usize = 32 << 20;

/// How much more of an upload over the limit is read (and dropped) before the 413 answer.
const DRAIN_BYTES: u64 = 16 << 20;

/// What every handler sees.
pub struct App {
    pub shared: Arc<Shared>,
    /// Bearer token every `/v1` request must carry (None: none needed; loopback only).
    pub token: Option<String>,
    pub max_upload_bytes: u64,
    /// Most rows in one predict, sample or eval request (answers and their memory grow
    /// with them).
    pub max_request_rows: usize,
    /// `device` of jobs that do not name one.
    pub default_device: crate::backend::DeviceChoice,
    /// `checkpoint_seconds` of every job.
    pub checkpoint_seconds: f64,
    /// Most parameters of a job's model, all ensemble members together: its training state
    /// (weights, gradients, Adam's moments) is about 16 bytes each.
    pub max_model_params: u128,
    /// Whether this process's own workers are the only ones (a SQLite store): then a job
    /// asking for a device they lack is refused at submission.
    pub only_local_workers: bool,
    /// Which adapters this machine has, (hardware GPU, software), looked up once when a job
    /// first asks for one.
    adapters: std::sync::OnceLock<(bool, bool)>,
    pub metrics: Metrics,
    /// Models loaded (whether one still exists is asked of the store each time).
    pub models: super::models::ModelCache,
}

impl App {
    pub fn new(
        shared: Arc<Shared>,
        token: Option<String>,
        max_upload_bytes: u64,
        default_device: crate::backend::DeviceChoice,
        checkpoint_seconds: f64,
    ) -> App {
        App {
            shared,
            token,
            max_upload_bytes,
            max_request_rows: 10_000,
            default_device,
            checkpoint_seconds,
            max_model_params: 20_000_000,
            only_local_workers: false,
            adapters: std::sync::OnceLock::new(),
            metrics: Metrics::default(),
            models: super::models::ModelCache::new(1 << 30),
        }
    }

    /// Drops a deleted model from the models kept in memory.
    fn forget_model(&self, id: &str) {
        self.models.remove(id);
    }
}

type AppState = Arc<App>;

/// An error answer: status, a stable code, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} with id {}", shown_json(&Value::from(id))),
        )
    }
}

/// The body of every error answer of `/v1`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `in_use`, `finished`, `too_large`, `too_many_rows`, `quota_exceeded`,
    /// `idempotency_key_reused`, `store_unavailable`, `store_full`, ...
    pub code: String,
    /// For people: what is wrong and where.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The error answers a `/v1` operation may give; the body says which and why.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Errors {
    /// The request is not valid: the message says what and where.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No key, a malformed Authorization header, an unknown key or a revoked one.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key's scope or workspace does not allow this.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such thing in the workspaces the key sees.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// It is in use, or has already finished.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body, the rows of the request, or the workspace's stored bytes are past a limit.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// An Idempotency-Key used before for another request.
    #[response(status = 422)]
    KeyReused(ErrorBody),
    /// The workspace has as many jobs queued or running as its quota allows.
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// The store cannot be reached just now: try again shortly.
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// The store's disk is full.
    #[response(status = 507)]
    Full(ErrorBody),
}

/// Library errors: what the client can fix is a 400 with the library's message (the same
/// text as the CLI's); the rest is a 500.
impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        if e.is_disk_full() {
            log::error!("{e}");
            return ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                "the service's store is full (no space left on its disk); free space there, or ask the operator",
            );
        }
        if let Error::Store(text) = &e {
            // The database is down or refused: the client may try again later.
            log::error!("{text}");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the service's store cannot be reached just now; try again shortly",
            );
        }
        match e.exit_code() {
            2 => ApiError::bad(e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

pub(super) type ApiResult<T> = std::result::Result<T, ApiError>;

/// The OpenAPI 3.1 document of `/v1` and `/v2`, from the handlers' annotations and the
/// types they take and answer with (served at `/v1/openapi.json`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "mdn serve",
        description = "Training jobs, models, a model registry, keys and workspaces (/v1), and the Open Inference Protocol (/v2). See docs/service.md.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        upload, list_datasets, get_dataset, delete_dataset,
        submit, list_jobs, get_job, delete_job, cancel_job, job_events, all_events,
        list_models, get_model, delete_model, predict, sample, eval, plot,
        list_registry, get_registered, add_version, get_version, put_version, delete_version, put_alias, delete_alias,
        list_keys, add_key, revoke_key, list_workspaces, get_workspace, put_workspace,
        super::v2::server, super::v2::live, super::v2::server_ready,
        super::v2::metadata, super::v2::metadata_of, super::v2::ready, super::v2::ready_of,
        super::v2::infer, super::v2::infer_of,
    ),
    components(schemas(ErrorBody, ErrorDetail, super::v2::V2ErrorBody)),
    modifiers(&BearerKey),
    tags(
        (name = "datasets", description = "Uploaded data"),
        (name = "jobs", description = "Training jobs and their events"),
        (name = "models", description = "Trained models: files, predictions, samples, scores, figures"),
        (name = "registry", description = "Named models with versions and aliases"),
        (name = "keys", description = "API keys and workspaces (admin)"),
        (name = "inference", description = "The Open Inference Protocol (KServe V2)"),
    ),
)]
pub struct ApiDoc;

/// The `key` security scheme: `Authorization: Bearer <key>`.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`mdn serve keys add`) or the --token-file token",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /v1/openapi.json`.
async fn openapi() -> Response {
    use utoipa::OpenApi;
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_json().expect("the document is JSON"),
    )
        .into_response()
}

/// The routes, with authentication on `/v1` and request metrics on everything.
pub fn router(app: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/datasets",
            post(upload)
                .layer(DefaultBodyLimit::disable())
                .get(list_datasets),
        )
        .route("/datasets/{id}", get(get_dataset).delete(delete_dataset))
        .route("/jobs", post(submit).get(list_jobs))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/events", get(job_events))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/models", get(list_models))
        .route("/models/{id}", get(get_model).delete(delete_model))
        .route("/models/{id}/predict", post(predict))
        .route("/models/{id}/sample", post(sample))
        .route("/models/{id}/eval", post(eval))
        .route("/models/{id}/plot/{panel}", get(plot))
        .route("/events", get(all_events))
        .route("/keys", get(list_keys).post(add_key))
        .route("/keys/{id}", axum::routing::delete(revoke_key))
        .route("/registry", get(list_registry))
        .route("/registry/{name}", get(get_registered))
        .route("/registry/{name}/versions", post(add_version))
        .route(
            "/registry/{name}/versions/{version}",
            get(get_version).put(put_version).delete(delete_version),
        )
        .route(
            "/registry/{name}/aliases/{alias}",
            axum::routing::put(put_alias).delete(delete_alias),
        )
        .route("/workspaces", get(list_workspaces))
        .route("/workspaces/{name}", get(get_workspace).put(put_workspace))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize))
        // After the layer: the document needs no key.
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/v1", v1)
        .nest("/v2", super::v2::routes(app.clone()))
        .route("/", get(super::web::index))
        .route("/static/{name}", get(super::web::asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .with_state(app)
}

/// Finds the caller ([`auth::authenticate`]), checks the route's scope, and hands the
/// [`Caller`] to the handler.
pub(super) async fn authorize(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let needed = auth::needed(req.method(), &route);
    let store = app.shared.store.clone();
    let token = app.token.clone();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let named = req
        .headers()
        .get("mdn-workspace")
        .map(|v| v.to_str().map(str::to_string));
    let found = store::blocking(|| -> crate::Result<_> {
        let mut caller = match auth::authenticate(&*store, token.as_deref(), header.as_deref())? {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let named = match &named {
            Some(Ok(n)) => Some(n.as_str()),
            Some(Err(_)) => {
                return Ok(Err(Refusal::Forbidden(
                    "Mdn-Workspace: not a workspace name".into(),
                )));
            }
            None => None,
        };
        Ok(auth::choose_workspace(&*store, &mut caller, named)?.map(|()| caller))
    });
    // The Open Inference Protocol's errors are `{"error": "message"}`.
    let v2 = route.starts_with("/v2");
    let refuse = |status: StatusCode, code: &'static str, message: String| {
        let mut r = if v2 {
            (status, axum::Json(json!({"error": message}))).into_response()
        } else {
            ApiError::new(status, code, message).into_response()
        };
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    };
    let caller = match found {
        Ok(Ok(c)) => c,
        Ok(Err(Refusal::Unauthenticated(message))) => {
            return refuse(StatusCode::UNAUTHORIZED, "unauthorized", message.into());
        }
        Ok(Err(Refusal::Forbidden(message))) => {
            return refuse(StatusCode::FORBIDDEN, "forbidden", message);
        }
        Err(e) => {
            let e = ApiError::from(e);
            return refuse(e.status, e.code, e.message);
        }
    };
    if caller.scope < needed {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this key's scope is {}; {} {route} needs {}",
                caller.scope.as_str(),
                req.method(),
                needed.as_str()
            ),
        );
    }
    req.extensions_mut().insert(Arc::new(caller));
    next.run(req).await
}

pub(super) type Who = axum::Extension<Arc<Caller>>;

/// Request counts and latencies by route, for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<HashMap<(String, String), RouteStats>>,
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: HashMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut m = app.metrics.inner.lock().unwrap_or_else(|p| p.into_inner());
    let s = m.entry((method, route)).or_default();
    *s.by_status.entry(response.status().as_u16()).or_default() += 1;
    for (i, b) in BUCKETS.iter().enumerate() {
        if seconds <= *b {
            s.buckets[i] += 1;
        }
    }
    s.count += 1;
    s.sum += seconds;
    response
}

async fn metrics(State(app): State<AppState>) -> ApiResult<Response> {
    use std::fmt::Write;
    let store = &app.shared.store;
    let counts = store.job_counts()?;
    let mut out = String::new();
    out.push_str("# HELP mdn_jobs Jobs by status.\n# TYPE mdn_jobs gauge\n");
    for status in store::STATUSES {
        let n = counts.iter().find(|(s, _)| s == status).map_or(0, |c| c.1);
        let _ = writeln!(out, "mdn_jobs{{status=\"{status}\"}} {n}");
    }
    let queued = counts
        .iter()
        .find(|(s, _)| s == store::QUEUED)
        .map_or(0, |c| c.1);
    let _ = writeln!(
        out,
        "# HELP mdn_queue_length Jobs waiting to run.\n# TYPE mdn_queue_length gauge\nmdn_queue_length {queued}"
    );
    let rows = app
        .shared
        .rows_trained
        .load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP mdn_rows_trained_total Training rows processed by this process.\n# TYPE mdn_rows_trained_total counter\nmdn_rows_trained_total {rows}"
    );
    let (loaded, bytes) = app.models.usage();
    let _ = writeln!(
        out,
        "# HELP mdn_models_loaded Models this process keeps loaded for predictions.\n# TYPE mdn_models_loaded gauge\nmdn_models_loaded {loaded}\n# HELP mdn_models_loaded_bytes The size of their files (at most --model-cache-mb).\n# TYPE mdn_models_loaded_bytes gauge\nmdn_models_loaded_bytes {bytes}"
    );
    out.push_str("# HELP mdn_http_requests_total HTTP requests by route and status.\n# TYPE mdn_http_requests_total counter\n");
    let m = app.metrics.inner.lock().unwrap_or_else(|p| p.into_inner());
    let mut keys: Vec<_> = m.keys().cloned().collect();
    keys.sort();
    for k in &keys {
        let mut statuses: Vec<_> = m[k].by_status.iter().collect();
        statuses.sort();
        for (status, n) in statuses {
            let _ = writeln!(
                out,
                "mdn_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                k.0, k.1
            );
        }
    }
    out.push_str("# HELP mdn_http_request_seconds HTTP request latency.\n# TYPE mdn_http_request_seconds histogram\n");
    for k in &keys {
        let s = &m[k];
        let labels = format!("method=\"{}\",route=\"{}\"", k.0, k.1);
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "mdn_http_request_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                s.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "mdn_http_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}\nmdn_http_request_seconds_sum{{{labels}}} {}\nmdn_http_request_seconds_count{{{labels}}} {}",
            s.count, s.sum, s.count
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// Parses a JSON body into `T`, naming the field a type error is at.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            ApiError::bad(format!("request body: {}", e.inner()))
        } else {
            ApiError::bad(format!("request body: {path}: {}", e.inner()))
        }
    })
}

fn query<T>(
    q: std::result::Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad(format!("query string: {}", e.body_text())))
}

fn checked_id<'a>(what: &str, id: &'a str) -> ApiResult<&'a str> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(what, id))
    }
}

/// Runs blocking work (file reading, training-job checks, predictions) off the async side.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("a worker task failed: {e}"),
        )
    })?
}

// ---- datasets ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// How the data set is named in listings and messages (default: "upload").
    name: Option<String>,
    /// `csv` or `npy` (default: from the first bytes).
    format: Option<String>,
    /// Column names of an `.npy` upload, comma-separated (default: "0", "1", ...).
    columns: Option<String>,
}

/// Removes a file when dropped, unless disarmed: nothing half-received is left behind,
/// also when the client goes away mid-body.
struct Scrap(Option<std::path::PathBuf>);

impl Drop for Scrap {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_file(crate::npy::columns_path(&p));
        }
    }
}

/// Sizes in messages: `512 bytes`, `3.2 MiB`, in the binary units quotas are given in
/// (`--max-mb 1` is 1 MiB, and `mdn serve workspaces` lists MiB).
fn size(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else if b < K * K {
        format!("{:.1} KiB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MiB", b / (K * K))
    } else {
        format!("{:.2} GiB", b / (K * K * K))
    }
}

/// The answer to a request that would pass a workspace's quota: 429 for jobs (wait, then
/// try again), 413 for bytes.
fn over_quota(q: &store::OverQuota) -> ApiError {
    if q.quota == "max_jobs" {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "workspace {:?} has {} jobs queued or running; its quota (max_jobs) is {} at once: wait for one to finish, or cancel one",
                q.workspace, q.used, q.limit
            ),
        )
    } else {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
            format!(
                "workspace {:?} stores {} of data sets and models; {} more would pass its quota (max_bytes) of {}: delete data sets it no longer needs, or ask a server admin for a larger quota",
                q.workspace,
                size(q.used),
                if q.adds == 0 {
                    "any".to_string()
                } else {
                    size(q.adds)
                },
                size(q.limit)
            ),
        )
    }
}

/// An upload's bytes as they arrive: the body itself, or for a form (`multipart/form-data`,
/// what `curl -F file=@data.csv` and HTML forms send) its first part that is a file, with
/// that file's name.
type UploadBytes = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

async fn upload_stream(
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<(UploadBytes, Option<String>)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let raw = body
            .into_data_stream()
            .map(|r| r.map_err(|e| e.to_string()));
        return Ok((Box::pin(raw), None));
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        ApiError::bad(format!(
            "a multipart/form-data upload without a usable boundary ({e}): send the file as the \
             raw body (curl --data-binary @data.csv) or as a form part (curl -F file=@data.csv)"
        ))
    })?;
    let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
    let field = loop {
        match form.next_field().await {
            Ok(Some(f)) if f.file_name().is_some() => break f,
            Ok(Some(_)) => continue,
            Ok(None) => {
                return Err(ApiError::bad(
                    "the form has no file part: send the file as a part of its own (curl -F \
                     file=@data.csv) or as the raw body (curl --data-binary @data.csv)",
                ));
            }
            Err(e) => return Err(ApiError::bad(format!("reading the form failed: {e}"))),
        }
    };
    let name = field.file_name().map(|n| {
        // A browser may send a path; the name is its last part.
        n.rsplit(['/', '\\']).next().unwrap_or(n).to_string()
    });
    let chunks = futures::stream::unfold(Some((form, field)), |state| async move {
        let (form, mut field) = state?;
        match field.chunk().await {
            Ok(Some(c)) => Some((Ok(c), Some((form, field)))),
            Ok(None) => None,
            Err(e) => Some((Err(e.to_string()), None)),
        }
    });
    Ok((Box::pin(chunks), name))
}

#[utoipa::path(post, path = "/v1/datasets", tag = "datasets",
    params(
        ("name" = Option<String>, Query, description = "How the data set is named in listings and messages (default: upload)"),
        ("format" = Option<String>, Query, description = "csv or npy (default: from the first bytes)"),
        ("columns" = Option<String>, Query, description = "Column names of an .npy upload, comma-separated"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retried upload with the same key adds nothing and gets the first answer"),
    ),
    request_body(description = "The file: a CSV with a header, or an .npy array", content(("text/csv"), ("application/octet-stream"))),
    responses((status = 200, description = "The workspace has a data set of the same bytes, format and column names: that one (nothing stored)", body = DatasetRow), (status = 201, description = "Stored", body = DatasetRow, links(
        ("GetDataset" = (operation_id = "get_dataset", parameters(("id" = "$response.body#/id")))),
        ("DeleteDataset" = (operation_id = "delete_dataset", parameters(("id" = "$response.body#/id")))),
    )), Errors),
    security(("key" = [])))]
async fn upload(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    q: std::result::Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let q = query(q)?;
    let workspace = who.home().to_string();
    // The workspace's room, if it has a quota: past it, nothing more is written, but the
    // body is still read (up to --max-upload-mb) and hashed, since the same bytes as a data
    // set the workspace has add nothing (that data set is the answer).
    let room = app
        .shared
        .store
        .workspaces(Some(&workspace))?
        .first()
        .and_then(|u| u.workspace.max_bytes.map(|max| (u.bytes, max)));
    let mut over = room.filter(|(used, max)| used >= max);
    let key = idempotency_key(&headers)?;
    // The raw file as the body, or a form (multipart/form-data) with the file as a part.
    let (mut stream, file_name) = upload_stream(&headers, body).await?;
    let name = q.name.or(file_name).unwrap_or_else(|| "upload".into());
    if name.len() > 200 || name.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad(
            "name: at most 200 characters, no control characters",
        ));
    }
    if let Some(f) = &q.format
        && f != "csv"
        && f != "npy"
    {
        return Err(ApiError::bad(format!(
            "format: expected csv or npy, got {f:?}"
        )));
    }
    let tmp = app.shared.files.upload_path();
    let mut scrap = Scrap(Some(tmp.clone()));
    let mut file = Some(
        tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io(&tmp, e))?,
    );
    let mut bytes: u64 = 0;
    let mut head = Vec::new();
    let mut digest = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("reading the body failed: {e}")))?;
        bytes += chunk.len() as u64;
        if over.is_none() {
            over = room.filter(|(used, max)| used + bytes > *max);
        }
        if over.is_some() && file.take().is_some() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        if bytes > app.max_upload_bytes {
            // Read and drop the rest of a body up to DRAIN_BYTES larger, so that a client
            // still sending it gets this answer rather than a connection closed under it.
            let mut drained = 0u64;
            while drained < DRAIN_BYTES {
                match stream.next().await {
                    Some(Ok(more)) => drained += more.len() as u64,
                    _ => break,
                }
            }
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the upload is larger than this server's limit of {} MB (--max-upload-mb)",
                    app.max_upload_bytes >> 20
                ),
            ));
        }
        if head.len() < 6 {
            head.extend_from_slice(&chunk[..chunk.len().min(6 - head.len())]);
        }
        digest.update(&chunk);
        if let Some(f) = &mut file {
            f.write_all(&chunk).await.map_err(|e| Error::io(&tmp, e))?;
        }
    }
    let sha256 = auth::hex(&digest.finalize());
    if bytes == 0 {
        return Err(ApiError::bad(
            "the body is empty: send the CSV or .npy file as the request body",
        ));
    }
    let format = q.format.unwrap_or_else(|| {
        if head.starts_with(b"\x93NUMPY") {
            "npy".into()
        } else {
            "csv".into()
        }
    });
    let columns = q.columns.map(|c| {
        c.split(',')
            .map(|s| s.trim().to_string())
            .collect::<Vec<_>>()
    });
    let Some(file) = file else {
        // Past the quota: the data set of the same bytes, if the workspace has it (a CSV's
        // bytes include its header; an .npy's names, when given, must match too).
        let (used, max) = over.expect("past the quota");
        let same = app.shared.store.dataset_by_content(
            &workspace,
            &sha256,
            &format,
            columns.as_deref(),
        )?;
        return match same {
            Some(same) => {
                log::info!(
                    "dataset {} ({}) in workspace {} uploaded again{}: nothing stored",
                    same.id,
                    same.name,
                    same.workspace,
                    by_text(&who)
                );
                Ok((StatusCode::OK, axum::Json(same)).into_response())
            }
            None => Err(over_quota(&store::OverQuota {
                quota: "max_bytes",
                workspace,
                used,
                adds: bytes,
                limit: max,
            })),
        };
    };
    file.sync_all().await.map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    let shared = app.shared.clone();
    let by = who.by.clone();
    let (row, how) = blocking(move || {
        let id = store::new_id("ds");
        let dest = shared.files.dataset_path(&id, &format);
        // Validated where it will live, under its final name, so that messages name it as
        // the client does.
        let (rows, names) = validate(&tmp, &format, columns.as_deref())
            .map_err(|e| ApiError::from(rename_in(e, &tmp, &name)))?;
        // The same bytes, format and columns already here: that data set, nothing stored.
        // (With an idempotency key the store looks, after the key: a retry gets the first
        // answer, 201 and all.)
        if key.is_none()
            && let Some(same) =
                shared
                    .store
                    .dataset_by_content(&workspace, &sha256, &format, Some(&names))?
        {
            let _ = std::fs::remove_file(&tmp);
            return Ok((same, Upload::Existing));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        let mut scrap = Scrap(Some(dest.clone()));
        if format == "npy" {
            let cols = crate::npy::columns_path(&dest);
            crate::atomic::write_atomic(
                &cols,
                serde_json::to_string(&names).expect("names").as_bytes(),
            )?;
        }
        let is_npy = format == "npy";
        let row = DatasetRow {
            id,
            workspace,
            created_by: by,
            name,
            format,
            rows,
            columns: names,
            bytes,
            sha256: Some(sha256),
            created: store::now(),
        };
        let files = &shared.files;
        let unpublish = || {
            files.remove(&dest);
            files.remove(&crate::npy::columns_path(&dest));
        };
        let published = files.publish(&dest).and_then(|()| {
            if is_npy {
                files.publish(&crate::npy::columns_path(&dest))
            } else {
                Ok(())
            }
        });
        if let Err(e) = published {
            unpublish();
            return Err(e.into());
        }
        match shared.store.insert_dataset(&row, key.as_deref()) {
            Ok(store::Added::New) => {
                scrap.0 = None;
                Ok((row, Upload::New))
            }
            // A retried upload: the first one's data set (this copy is removed).
            Ok(store::Added::Replayed(first)) => {
                unpublish();
                // The key of another file: a mistake, as for a job (its first file's digest
                // is known since the service keeps them).
                if first.sha256.is_some() && first.sha256 != row.sha256 {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "idempotency_key_reused",
                        format!(
                            "Idempotency-Key was used for another upload (data set {}, {}): a retry sends the same file; a new upload takes a new key",
                            first.id, first.name
                        ),
                    ));
                }
                Ok((first, Upload::Replayed))
            }
            // The same bytes, stored meanwhile by another upload.
            Ok(store::Added::Existing(same)) => {
                unpublish();
                Ok((same, Upload::Existing))
            }
            Ok(store::Added::OverQuota(q)) => {
                unpublish();
                Err(over_quota(&q))
            }
            Err(e) => {
                unpublish();
                Err(e.into())
            }
        }
    })
    .await?;
    scrap.0 = None;
    match how {
        Upload::New => log::info!(
            "dataset {} ({}) in workspace {}: {} rows, {:?}{}",
            row.id,
            row.name,
            row.workspace,
            row.rows,
            row.columns,
            by_text(&who)
        ),
        Upload::Existing => log::info!(
            "dataset {} ({}) in workspace {} uploaded again{}: nothing stored",
            row.id,
            row.name,
            row.workspace,
            by_text(&who)
        ),
        Upload::Replayed => {}
    }
    let status = match how {
        Upload::Existing => StatusCode::OK,
        Upload::New | Upload::Replayed => StatusCode::CREATED,
    };
    Ok(replay(
        (status, axum::Json(row)).into_response(),
        how == Upload::Replayed,
    ))
}

/// What an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// Stored a new data set (201).
    New,
    /// A retry of an earlier request with the same idempotency key: its answer (201).
    Replayed,
    /// The workspace had the same bytes, format and columns: that data set (200).
    Existing,
}

/// `, by KEY` for logs (nothing without keys).
fn by_text(who: &Caller) -> String {
    who.by().map(|b| format!(", by {b}")).unwrap_or_default()
}

/// The `Idempotency-Key` of a request: a retried POST with the same key gets the first
/// answer instead of doing the work again.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k)
            if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::bad(
            "Idempotency-Key: expected 1 to 255 visible ASCII characters (a UUID, say)",
        )),
    }
}

/// Marks the answer to a retried request (`Idempotent-Replayed: true`).
fn replay(mut r: Response, replayed: bool) -> Response {
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Brings a data set (and an .npy's column names) into the files' cache, where it lives in
/// an object store.
pub fn fetch_dataset(files: &store::Files, path: &FsPath) -> crate::Result<()> {
    files.fetch(path)?;
    if path.extension().is_some_and(|e| e == "npy") {
        files.fetch(&crate::npy::columns_path(path))?;
    }
    Ok(())
}

/// An error about the temporary upload file, told with the client's name for it.
fn rename_in(e: Error, tmp: &FsPath, name: &str) -> Error {
    rename_files(e, &[(tmp, name)])
}

/// An error about the service's files, each `(path, name)` told by the client's name for it.
fn rename_files(e: Error, files: &[(&FsPath, &str)]) -> Error {
    let mut text = e.to_string();
    for (path, name) in files {
        text = text.replace(&path.display().to_string(), name);
    }
    match e {
        Error::Data { .. } | Error::Config(_) => Error::Config(text),
        Error::Io { path, source } => Error::Io {
            path: files
                .iter()
                .find(|(p, _)| *p == path.as_path())
                .map(|(_, n)| std::path::PathBuf::from(n))
                .unwrap_or(path),
            source,
        },
        other => other,
    }
}

/// Checks an uploaded file as `mdn train` would read it: every cell of a CSV parses as a
/// finite number, an `.npy` has a readable header of the right size. Returns the rows and
/// the column names.
fn validate(
    path: &FsPath,
    format: &str,
    columns: Option<&[String]>,
) -> crate::Result<(usize, Vec<String>)> {
    if format == "npy" {
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let h = crate::npy::read_header(path, &mut f)?;
        let names = match columns {
            Some(c) if c.len() != h.cols => {
                return Err(Error::config(format!(
                    "columns: {} names for {} columns",
                    c.len(),
                    h.cols
                )));
            }
            Some(c) => c.to_vec(),
            None => (0..h.cols).map(|i| i.to_string()).collect(),
        };
        if let Some((i, n)) = names
            .iter()
            .enumerate()
            .find(|(i, n)| names[..*i].contains(n))
        {
            return Err(Error::config(format!(
                "columns: {n:?} is named twice (column {i})"
            )));
        }
        // Every value is read once: NaN or infinity is refused with its place. The columns
        // by index: the upload's names file is written after this check.
        let index: Vec<String> = (0..h.cols).map(|i| i.to_string()).collect();
        let choice = ColumnChoice::exactly(
            index[..h.cols.saturating_sub(1)].to_vec(),
            index[h.cols.saturating_sub(1)..].to_vec(),
        );
        let _ = crate::data::NpySource::open(path, &choice)?;
        return Ok((h.rows, names));
    }
    if columns.is_some() {
        return Err(Error::config(
            "columns: only for .npy uploads (a CSV names its columns in its header)",
        ));
    }
    // Every record is read (ragged rows and bad text are refused with their place), but no
    // cell is judged: a data set keeps every column, text and ids and gaps included, and a
    // job's columns are read (and refused with their place) when it runs.
    let mut rows = CsvRows::open(path)?;
    let mut sink = Vec::new();
    let mut n = 0usize;
    while rows.next_cells(&[], &mut sink)?.is_some() {
        n += 1;
    }
    if n == 0 {
        return Err(Error::config("the CSV has a header but no rows"));
    }
    Ok((n, rows.header.clone()))
}

/// The data sets a key sees.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetQuery {
    sha256: Option<String>,
}

#[utoipa::path(get, path = "/v1/datasets", tag = "datasets",
    params(("sha256" = Option<String>, Query, description = "Only the data sets of these bytes (their SHA-256 in hex): whether the service has a file already, before uploading it")),
    responses((status = 200, description = "The data sets of the key's workspace, oldest first", body = DatasetList), Errors),
    security(("key" = [])))]
async fn list_datasets(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    q: std::result::Result<Query<DatasetQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<DatasetList>> {
    let q = query(q)?;
    let mut datasets = app.shared.store.datasets(who.ws())?;
    if let Some(sha) = &q.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad(format!(
                "sha256: expected 64 hexadecimal digits, got {}",
                shown_json(&Value::from(sha.as_str()))
            )));
        }
        let sha = sha.to_ascii_lowercase();
        datasets.retain(|d| d.sha256.as_deref() == Some(sha.as_str()));
    }
    Ok(axum::Json(DatasetList { datasets }))
}

#[utoipa::path(get, path = "/v1/datasets/{id}", tag = "datasets",
    params(("id" = String, Path, description = "A data set's id")),
    responses((status = 200, description = "The data set", body = DatasetRow), Errors),
    security(("key" = [])))]
async fn get_dataset(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<DatasetRow>> {
    let id = checked_id("dataset", &id)?;
    match app.shared.store.dataset(who.ws(), id)? {
        Some(d) => Ok(axum::Json(d)),
        None => Err(ApiError::not_found("dataset", id)),
    }
}

#[utoipa::path(delete, path = "/v1/datasets/{id}", tag = "datasets",
    params(("id" = String, Path, description = "A data set's id")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("key" = [])))]
async fn delete_dataset(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = checked_id("dataset", &id)?;
    match app.shared.store.delete_dataset(who.ws(), id)? {
        store::Deleted::Removed { format } => {
            log::info!("dataset {id} deleted{}", by_text(&who));
            let files = &app.shared.files;
            let path = files.dataset_path(id, &format);
            files.remove(&path);
            files.remove(&crate::npy::columns_path(&path));
            Ok(StatusCode::NO_CONTENT)
        }
        store::Deleted::Missing => Err(ApiError::not_found("dataset", id)),
        store::Deleted::InUse(job) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_use",
            format!("dataset {id} is used by job {job}, which has not finished"),
        )),
    }
}

// ---- jobs ----

/// A job's data set deleted (by another request) while the job was being checked.
fn dataset_gone(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "dataset_deleted",
        format!("dataset {id} was deleted while this job was being checked: upload the data again"),
    )
}

/// A training job: a data set, its columns, and `mdn train`'s options.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The data set's id.
    dataset: String,
    /// The target column name, or a list of them (default: the last column).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    target: Option<Value>,
    /// The feature column names (default: every other column).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    features: Option<Value>,
    /// `mdn train`'s options by their JSON names (`epochs`, `components`, `hidden`, `lr`,
    /// ...), except the paths the service sets.
    #[serde(default)]
    #[schema(value_type = Object)]
    options: serde_json::Map<String, Value>,
    /// Registers the model, when the job succeeds, as the next version of this name.
    #[serde(default)]
    register: Option<String>,
    /// A data set (its id) whose rows validate the job (`mdn train --val`): early stopping
    /// and the reported validation NLL use them, and every row of `dataset` is trained on.
    /// It has the training columns (targets included). Default: `options.val_fraction` of
    /// `dataset` is held out.
    #[serde(default)]
    val_dataset: Option<String>,
}

/// `TrainJob` fields a client does not give in `options`, and why: the service sets the
/// paths itself (paths on the server are never the client's to name), and the columns go
/// beside `options`. Every other `TrainJob` field is an option.
pub const SERVICE_OPTIONS: [(&str, &str); 9] = [
    ("data", "use \"dataset\""),
    (
        "val",
        "use \"val_dataset\" beside \"options\": a data set's id",
    ),
    (
        "out",
        "the service keeps the model; fetch it from /v1/models/{id}",
    ),
    ("checkpoint", "the service checkpoints every epoch"),
    ("checkpoint_every", "the service checkpoints every epoch"),
    (
        "checkpoint_seconds",
        "set by mdn serve --checkpoint-seconds",
    ),
    ("resume", "a job resumes by itself after a restart"),
    ("target", "give it beside \"options\", not in it"),
    ("features", "give it beside \"options\", not in it"),
];

/// The options a client may give: every `TrainJob` field but [`SERVICE_OPTIONS`].
pub fn client_options() -> Vec<String> {
    let job = serde_json::to_value(TrainJob::default()).expect("a job is plain data");
    job.as_object()
        .expect("an object")
        .keys()
        .filter(|k| !SERVICE_OPTIONS.iter().any(|(s, _)| s == k))
        .cloned()
        .collect()
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried submission with the same key queues nothing and gets the first answer")),
    request_body = JobRequest,
    responses((status = 202, description = "Queued", body = Submitted, links(
        ("GetJob" = (operation_id = "get_job", parameters(("id" = "$response.body#/id")))),
        ("CancelJob" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/id")))),
        ("JobEvents" = (operation_id = "job_events", parameters(("id" = "$response.body#/id")))),
    )), Errors),
    security(("key" = [])))]
async fn submit(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let req: JobRequest = parse_json(&body)?;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    for (key, why) in SERVICE_OPTIONS {
        if req.options.contains_key(key) {
            return Err(ApiError::bad(format!(
                "options.{key}: set by the service ({why})"
            )));
        }
    }
    if let Some(name) = &req.register
        && !store::valid_model_name(name)
    {
        return Err(ApiError::bad(format!(
            "register: {} is not a model name (1 to 64 letters, digits, '.', '-' and '_', starting with a letter, not m_...)",
            shown_json(&Value::from(name.as_str()))
        )));
    }
    let store = &app.shared.store;
    if !valid_id(&req.dataset) {
        return Err(ApiError::bad(format!(
            "dataset: no dataset with id {}",
            shown_json(&Value::from(req.dataset.as_str()))
        )));
    }
    let Some(dataset) = store.dataset(who.ws(), &req.dataset)? else {
        return Err(ApiError::bad(format!(
            "dataset: no dataset with id {:?}",
            req.dataset
        )));
    };
    let val_dataset = match &req.val_dataset {
        None => None,
        Some(id) if !valid_id(id) => {
            return Err(ApiError::bad(format!(
                "val_dataset: no dataset with id {}",
                shown_json(&Value::from(id.as_str()))
            )));
        }
        Some(id) if *id == dataset.id => {
            return Err(ApiError::bad(format!(
                "val_dataset: {id} is the training dataset itself: its rows would be trained on and validated on (give another dataset, or leave val_dataset out to hold out options.val_fraction of the rows)"
            )));
        }
        Some(id) => match store.dataset(who.ws(), id)? {
            // (An admin key sees every workspace: a job's data sets are of one.)
            Some(d) if d.workspace != dataset.workspace => {
                return Err(ApiError::bad(format!(
                    "val_dataset: {id} is in workspace {:?}, the dataset in {:?}: a job's data sets are of one workspace",
                    d.workspace, dataset.workspace
                )));
            }
            Some(d) => Some(d),
            None => {
                return Err(ApiError::bad(format!(
                    "val_dataset: no dataset with id {id:?}"
                )));
            }
        },
    };
    let id = store::new_id("job");
    let model_id = runner::model_id(&id);
    let mut spec = req.options.clone();
    if !spec.contains_key("device") {
        spec.insert("device".into(), Value::from(app.default_device.to_string()));
    }
    if let Some(t) = req.target {
        spec.insert("target".into(), t);
    }
    if let Some(f) = req.features {
        spec.insert("features".into(), f);
    }
    let files = &app.shared.files;
    let data = files.dataset_path(&dataset.id, &dataset.format);
    let job_dir = files.job_dir(&id);
    spec.insert("data".into(), json!(data));
    let val = val_dataset
        .as_ref()
        .map(|v| files.dataset_path(&v.id, &v.format));
    if let Some(v) = &val {
        spec.insert("val".into(), json!(v));
    }
    // The worker writes the model and the checkpoints into the attempt's folder; these are
    // what `resolve` checks here.
    spec.insert("out".into(), json!(files.model_path(&model_id)));
    // Running jobs checkpoint (a deep ensemble every member), and resume after a restart.
    spec.insert("checkpoint".into(), json!(files.checkpoint_path(&id, 1)));
    spec.insert("checkpoint_every".into(), json!(1));
    spec.insert("checkpoint_seconds".into(), json!(app.checkpoint_seconds));
    let spec_text = Value::Object(spec).to_string();
    let shared = app.shared.clone();
    let dataset_name = dataset.name.clone();
    let job_id = id.clone();
    let caller = who.clone();
    let register = req.register.clone();
    let max_params = app.max_model_params;
    let app_for_devices = app.clone();
    let queued = blocking(move || {
        let job = TrainJob::from_json(&spec_text)
            .map_err(|e| ApiError::bad(option_names(&option_error(&e.to_string()))))?;
        if let Some(missing) = missing_device(&app_for_devices, job.device) {
            return Err(ApiError::bad(missing));
        }
        fetch_dataset(&shared.files, &data)?;
        if let Some(v) = &val {
            fetch_dataset(&shared.files, v)?;
        }
        // Messages name the data sets as they were uploaded, not by the store's files.
        let names: Vec<(&FsPath, &str)> = std::iter::once((data.as_path(), dataset_name.as_str()))
            .chain(val.as_deref().zip(val_dataset.as_ref().map(|d| d.name.as_str())))
            .collect();
        let ckpt_dir = shared.files.checkpoint_path(&job_id, 1);
        let ckpt_dir = ckpt_dir.parent().expect("a folder");
        std::fs::create_dir_all(ckpt_dir).map_err(|e| Error::io(ckpt_dir, e))?;
        // Everything `mdn train` checks before reading the rows, with the dataset's name in
        // messages instead of the store's file name.
        let (components, batch_size) = (job.components, job.batch_size);
        let checked = job.resolve();
        let _ = std::fs::remove_dir_all(&job_dir);
        // The job's columns are read whole now (a data set keeps every column as uploaded,
        // so a bad cell in a column this job uses is refused here, with its place).
        let checked = checked.and_then(|r| {
            crate::data::check_rows(&data, &r.choice())?;
            if let Some(v) = &val {
                crate::data::check_rows(v, &r.choice())?;
            }
            Ok(r)
        });
        let resolved = match checked {
            Ok(r) => r,
            Err(e) => {
                // A file gone under it: its data set was deleted meanwhile.
                if matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
                {
                    for d in std::iter::once(&dataset).chain(&val_dataset) {
                        if shared.store.dataset(None, &d.id)?.is_none() {
                            return Err(dataset_gone(&d.id));
                        }
                    }
                }
                let mut e = ApiError::from(rename_files(e, &names));
                e.message = option_names(&e.message);
                return Err(e);
            }
        };
        // Too few rows for the defaults' validation split: known since the upload.
        if let Err(e) = resolved.check_row_count(dataset.rows) {
            let mut e = ApiError::from(rename_files(e, &names));
            e.message = option_names(&e.message);
            return Err(e);
        }
        // A model whose training state would not fit this server's bound.
        let params = model_size(&resolved)?;
        if params > max_params {
            return Err(ApiError::bad(format!(
                "options.hidden: the model would have {params} parameters (all ensemble members together), more than this server's limit of {max_params} (--max-model-params): use narrower or fewer hidden layers, fewer components or members"
            )));
        }
        // What the data set's row count (known since its upload) already rules out.
        if let Some(k) = components
            && k > dataset.rows
        {
            return Err(ApiError::bad(format!(
                "options.components: {k} is more than the {} rows of {dataset_name}: each component needs rows to describe",
                dataset.rows
            )));
        }
        if let Some(b) = batch_size
            && b > dataset.rows
        {
            return Err(ApiError::bad(format!(
                "options.batch_size: {b} is more than the {} rows of {dataset_name}: a batch \
                 must fit in the training rows, which are fewer still (the validation rows are \
                 held out)",
                dataset.rows
            )));
        }
        let new = store::NewJob {
            id: &job_id,
            // A job goes where its data set is (a server admin's too).
            workspace: &dataset.workspace,
            created_by: caller.by(),
            dataset: &dataset.id,
            val_dataset: val_dataset.as_ref().map(|d| d.id.as_str()),
            request: &request,
            spec: &spec_text,
            register: register.as_deref(),
        };
        Ok(shared.store.insert_job(&new, key.as_deref())?)
    })
    .await?;
    let (id, replayed) = match queued {
        store::Queued::New(posted) => {
            app.shared.published(posted);
            app.shared.notify();
            log::info!(
                "job {id} queued on dataset {}{}",
                req.dataset,
                by_text(&who)
            );
            (id, false)
        }
        store::Queued::OverQuota(q) => return Err(over_quota(&q)),
        store::Queued::NoDataset(id) => return Err(dataset_gone(&id)),
        store::Queued::Replayed(first) => {
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if first.request != sent {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    format!(
                        "Idempotency-Key: already used for another request (job {}); use a new key for a new job",
                        first.id
                    ),
                ));
            }
            (first.id, true)
        }
    };
    let model = runner::model_id(&id);
    Ok(replay(
        (
            StatusCode::ACCEPTED,
            axum::Json(Submitted {
                id,
                status: store::QUEUED.into(),
                model,
            }),
        )
            .into_response(),
        replayed,
    ))
}

/// A queued job.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Submitted {
    pub id: String,
    /// `queued`.
    pub status: String,
    /// The id its model will have when it finishes.
    pub model: String,
}

/// A library message in the API's words: the command line's `--max-epochs` is the job's
/// `options.max_epochs`, `--data` its `"dataset"`; flags the API has no name for stay.
/// A library error about a prediction's settings in the request's terms: its fields
/// (`temperature`), not the command line's options (`--temperature`).
fn request_terms(e: Error) -> Error {
    match e {
        Error::Config(m) => Error::Config(
            m.replace("--temperature", "temperature")
                .replace("--sigma-scale", "sigma_scale")
                .replace("--interval", "interval"),
        ),
        e => e,
    }
}

/// A request's JSON value in a message, cut short where long (a message never echoes a
/// megabyte of the request back).
fn shown_json(v: &Value) -> String {
    crate::bench::truncate(&v.to_string(), 41)
}

pub fn option_names(text: &str) -> String {
    // A validation file is a validation data set here.
    let text = &text.replace("--val FILE", "--val");
    let options = client_options();
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = text;
    while let Some(i) = rest.find("--") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        let flag = &after[..end];
        let field = flag.replace('-', "_");
        match field.as_str() {
            "" => out.push_str("--"),
            "data" => out.push_str("\"dataset\""),
            "val" => out.push_str("\"val_dataset\""),
            "target" | "features" => {
                out.push_str(&format!("\"{field}\""));
                // A suggested list after it (`(--features a,b)`, ending the text or the
                // parenthesis), as the request gives it.
                let after_flag = &after[end..];
                // Quoted for a shell (`--features 'sale date,sqft'`): the names inside.
                if let Some(quoted) = after_flag.strip_prefix(" '")
                    && let Some(close) = quoted.find('\'')
                    && (quoted[close + 1..].is_empty() || quoted[close + 1..].starts_with(')'))
                {
                    let names: Vec<&str> = quoted[..close].split(',').collect();
                    out.push_str(&format!(": {}", serde_json::json!(names)));
                    rest = &quoted[close + 1..];
                    continue;
                }
                if let Some(list) = after_flag.strip_prefix(' ') {
                    let len = list
                        .find(|c: char| c.is_whitespace() || c == ')')
                        .unwrap_or(list.len());
                    let ends = list[len..].is_empty() || list[len..].starts_with(')');
                    let names: Vec<&str> =
                        list[..len].split(',').filter(|n| !n.is_empty()).collect();
                    if ends && !names.is_empty() {
                        out.push_str(&format!(": {}", serde_json::json!(names)));
                        rest = &list[len..];
                        continue;
                    }
                }
            }
            f if options.iter().any(|o| o == f) => out.push_str(&format!("options.{f}")),
            _ => {
                out.push_str("--");
                out.push_str(flag);
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Why a job asking for `device` could not run here: only when this process's workers are
/// the only ones (a SQLite store) and this machine has no such adapter.
fn missing_device(app: &App, device: crate::backend::DeviceChoice) -> Option<String> {
    use crate::backend::DeviceChoice;
    if !app.only_local_workers || !matches!(device, DeviceChoice::Gpu | DeviceChoice::Software) {
        return None;
    }
    let (gpu, software) = *app.adapters.get_or_init(|| {
        let adapters = crate::backend::gpu::list_adapters();
        (
            adapters.iter().any(|a| a.device_type != "Cpu"),
            adapters.iter().any(|a| a.device_type == "Cpu"),
        )
    });
    match device {
        DeviceChoice::Gpu if !gpu => Some(
            "options.device: gpu, but the machine that trains this service's jobs has no hardware GPU (`mdn devices` there lists what it has): use auto or cpu".into(),
        ),
        DeviceChoice::Software if !software => Some(
            "options.device: software, but the machine that trains this service's jobs has no software GPU adapter (Debian: mesa-vulkan-drivers): use auto or cpu".into(),
        ),
        _ => None,
    }
}

/// How many parameters a resolved job's model has, all its ensemble members together.
fn model_size(r: &crate::job::ResolvedJob) -> crate::Result<u128> {
    let o = &r.options;
    let arch = crate::layout::Arch::new(
        r.features.len(),
        o.hidden.clone(),
        o.activation,
        o.components,
        r.targets.len(),
    )?
    .with_covariance(o.covariance)?
    .with_family(o.family);
    Ok(arch.param_count() as u128 * r.job.ensemble.max(1) as u128)
}

/// A job's JSON error as the client sent it: `options.NAME: ...`, without the position in
/// the service's own JSON, and for an unknown option the options a client may give.
fn option_error(text: &str) -> String {
    let text = text.trim_start_matches("job: ");
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => text,
    };
    if let Some(rest) = text.split("unknown field `").nth(1) {
        let name = rest.split('`').next().unwrap_or(rest);
        let allowed = client_options();
        return format!(
            "options.{name}: unknown option; the options are {}",
            allowed.join(", ")
        );
    }
    // "hidden: hidden: ..." from a field's own check: one name is enough.
    let mut parts = text.splitn(2, ": ");
    match (parts.next(), parts.next()) {
        (Some(field), Some(rest)) => {
            let rest = rest.strip_prefix(&format!("{field}: ")).unwrap_or(rest);
            if field == "target" || field == "features" {
                format!("{field}: {rest}")
            } else {
                format!("options.{field}: {rest}")
            }
        }
        _ => format!("options: {text}"),
    }
}

/// Jobs a key sees.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<store::JobRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(("status" = Option<String>, Query, description = "Only jobs of this status: queued, running, succeeded, failed or cancelled")),
    responses((status = 200, description = "Jobs, oldest first", body = JobList), Errors),
    security(("key" = [])))]
async fn list_jobs(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    q: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<JobList>> {
    let q = query(q)?;
    if let Some(s) = &q.status
        && !store::STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad(format!(
            "status: expected one of {}, got {s:?}",
            store::STATUSES.join(", ")
        )));
    }
    Ok(axum::Json(JobList {
        jobs: app.shared.store.jobs(who.ws(), q.status.as_deref())?,
    }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "A job's id")),
    responses((status = 200, description = "The job", body = JobRow), Errors),
    security(("key" = [])))]
async fn get_job(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<store::JobRow>> {
    let id = checked_id("job", &id)?;
    match app.shared.store.job(who.ws(), id)? {
        Some(j) => Ok(axum::Json(j)),
        None => Err(ApiError::not_found("job", id)),
    }
}

/// What a cancel did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CancelAnswer {
    pub id: String,
    /// `cancelled` (it was queued) or `running` (it stops after its epoch).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "A job's id")),
    responses((status = 200, description = "Cancelled (queued), or asked to stop after its epoch (running)", body = CancelAnswer), Errors),
    security(("key" = [])))]
async fn cancel_job(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<CancelAnswer>> {
    let id = checked_id("job", &id)?;
    match app.shared.store.cancel(who.ws(), id, who.by())? {
        store::Cancel::Cancelled(posted) => {
            log::info!("job {id} cancelled{}", by_text(&who));
            app.shared.published(posted);
            Ok(axum::Json(CancelAnswer {
                id: id.into(),
                status: store::CANCELLED.into(),
                cancel_requested: None,
            }))
        }
        store::Cancel::Requested(posted) => {
            log::info!("job {id}: asked to stop{}", by_text(&who));
            app.shared.published(posted);
            // Here at once; on another machine at its worker's next epoch.
            app.shared.cancel_running(id);
            Ok(axum::Json(CancelAnswer {
                id: id.into(),
                status: store::RUNNING.into(),
                cancel_requested: Some(true),
            }))
        }
        store::Cancel::Finished(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "finished",
            format!("job {id} has already finished ({status})"),
        )),
        store::Cancel::Missing => Err(ApiError::not_found("job", id)),
    }
}

/// What `DELETE /v1/jobs/{id}` did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct JobDeletedAnswer {
    pub id: String,
    /// The job's model, deleted with it (null: it had none, or it was deleted before).
    pub deleted_model: Option<String>,
    /// The job's model, kept because the registry holds it as a version.
    pub kept_model: Option<String>,
}

/// Deletes a finished job: its record, its events, and its model, unless the registry holds
/// that model as a version (then the model stays).
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "A job's id")),
    responses((status = 200, description = "Deleted, with its model unless the registry holds it", body = JobDeletedAnswer), Errors),
    security(("key" = [])))]
async fn delete_job(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<JobDeletedAnswer>> {
    let id = checked_id("job", &id)?;
    match app.shared.store.delete_job(who.ws(), id)? {
        store::JobDeleted::Removed { model, kept } => {
            let files = app.shared.files.clone();
            let job = id.to_string();
            if let Some(m) = &model {
                app.forget_model(m);
            }
            let gone = model.clone();
            blocking(move || {
                files.remove_dir(&files.job_dir(&job));
                if let Some(m) = &gone {
                    remove_model_files(&files, m);
                }
                Ok(())
            })
            .await?;
            let what = match (&model, &kept) {
                (Some(m), _) => format!(" with its model {m}"),
                (None, Some(m)) => format!(" (its model {m} stays: the registry holds it)"),
                (None, None) => String::new(),
            };
            log::info!("job {id} deleted{what}{}", by_text(&who));
            Ok(axum::Json(JobDeletedAnswer {
                id: id.to_string(),
                deleted_model: model,
                kept_model: kept,
            }))
        }
        store::JobDeleted::Missing => Err(ApiError::not_found("job", id)),
        store::JobDeleted::Unfinished(status) => {
            let stopping = app
                .shared
                .store
                .job(who.ws(), id)?
                .is_some_and(|j| j.cancel_requested);
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "unfinished",
                if stopping {
                    format!("job {id} is stopping (it was cancelled): delete it once it has ended")
                } else {
                    format!(
                        "job {id} is {status}: cancel it first (POST /v1/jobs/{id}/cancel), then delete it once it has ended"
                    )
                },
            ))
        }
    }
}

/// One Server-Sent Event of a stream (the schema of each event, not of the whole body).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SseEvent {
    /// The event's number in its job's history (`Last-Event-ID` resumes after it).
    pub id: String,
    /// Its type: `status`, `started`, `epoch`, `message`, `cancel_requested`, ...
    pub event: String,
    /// The event as JSON text (`type`, `seq`, and what the type carries; `/v1/events` adds
    /// `job`).
    pub data: String,
}

fn is_final(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|v| {
        v["type"] == "status"
            && matches!(
                v["status"].as_str(),
                Some(store::SUCCEEDED | store::FAILED | store::CANCELLED)
            )
    })
}

fn sse_event(seq: u64, data: &str) -> Event {
    let kind = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_string))
        .unwrap_or_else(|| "message".into());
    Event::default().id(seq.to_string()).event(kind).data(data)
}

struct Tail {
    rx: tokio::sync::broadcast::Receiver<runner::Broadcast>,
    shared: Arc<Shared>,
    job: String,
    last: u64,
    pending: VecDeque<(u64, String)>,
    done: bool,
    /// The service is stopping: the stream ends once what the store has is sent.
    closing: bool,
}

/// Server-Sent Events of a job: its history first (after `Last-Event-ID` when a client
/// reconnects), then each new event; the stream ends after the job's final status.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(
        ("id" = String, Path, description = "A job's id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses((status = 200, description = "Server-Sent Events: the job's history, then each new event, until its final status", content_type = "text/event-stream", body = SseEvent), Errors),
    security(("key" = [])))]
async fn job_events(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let id = checked_id("job", &id)?.to_string();
    if app.shared.store.job(who.ws(), &id)?.is_none() {
        return Err(ApiError::not_found("job", &id));
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Listen first, then read the history: nothing falls between the two.
    let rx = app.shared.events.subscribe();
    let history = app.shared.store.events(&id, after)?;
    let tail = Tail {
        rx,
        shared: app.shared.clone(),
        job: id,
        last: after,
        pending: history.into(),
        done: false,
        closing: false,
    };
    let stream = futures::stream::unfold(tail, |mut t| async move {
        loop {
            if t.done {
                return None;
            }
            if let Some((seq, data)) = t.pending.pop_front() {
                if seq <= t.last {
                    continue;
                }
                t.last = seq;
                t.done = is_final(&data);
                return Some((Ok(sse_event(seq, &data)), t));
            }
            if t.closing {
                return None;
            }
            // The service stopping ends the stream, after the events the store has by then.
            let heard = tokio::select! {
                heard = t.rx.recv() => heard,
                () = t.shared.closed() => {
                    t.closing = true;
                    if let Ok(ev) = t.shared.store.events(&t.job, t.last) {
                        t.pending.extend(ev);
                    }
                    continue;
                }
            };
            match heard {
                Ok(b) if b.job == t.job && b.seq > t.last => {
                    let expected = t.pending.back().map_or(t.last, |p| p.0) + 1;
                    if b.seq == expected {
                        t.pending.push_back((b.seq, b.data.to_string()))
                    } else if b.seq > expected {
                        // One went by unheard (another process's notification, a
                        // reconnect to the database): the store has them all.
                        match t.shared.store.events(&t.job, t.last) {
                            Ok(ev) => t.pending.extend(ev),
                            Err(_) => return None,
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: catch up from the store.
                    match t.shared.store.events(&t.job, t.last) {
                        Ok(ev) => t.pending.extend(ev),
                        Err(_) => return None,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// ---- models ----

/// A model as a request names it: its id (`m_...`), or a registered name (`NAME`, its newest
/// version), `NAME:VERSION` or `NAME@ALIAS`, looked up in the caller's workspace.
fn parse_ref(reference: &str) -> Option<(&str, store::Selector<'_>)> {
    if let Some((name, alias)) = reference.split_once('@') {
        return (store::valid_model_name(name) && store::valid_alias(alias))
            .then_some((name, store::Selector::Alias(alias)));
    }
    if let Some((name, version)) = reference.split_once(':') {
        let v = version.parse::<u32>().ok().filter(|v| *v >= 1)?;
        return store::valid_model_name(name).then_some((name, store::Selector::Version(v)));
    }
    store::valid_model_name(reference).then_some((reference, store::Selector::Latest))
}

/// What a model reference resolved to: the model's id, and for a registered name its
/// version.
pub(super) struct Resolved {
    pub(super) id: String,
    pub(super) version: Option<(String, u32)>,
}

impl Resolved {
    /// Tells the client which model answered: `Mdn-Model: ID`, and for a registered name
    /// `Mdn-Model-Version: NAME:VERSION`.
    pub(super) fn tag(&self, mut r: Response) -> Response {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            h.insert("mdn-model", v);
        }
        if let Some((name, version)) = &self.version
            && let Ok(v) = HeaderValue::from_str(&format!("{name}:{version}"))
        {
            h.insert("mdn-model-version", v);
        }
        r
    }
}

/// Why a registered name's reference names no model: the name is unknown, or it has no such
/// version or alias (a deleted one), or no versions left.
fn unresolved(
    app: &App,
    ws: &str,
    name: &str,
    which: store::Selector,
    reference: &str,
) -> ApiResult<ApiError> {
    let versions = app.shared.store.versions(ws, name)?;
    let known = !versions.is_empty()
        || app
            .shared
            .store
            .registry(Some(ws))?
            .iter()
            .any(|m| m.name == name);
    let message = if !known {
        format!("no registered model {reference:?}")
    } else {
        let has = if versions.is_empty() {
            "none left (they were deleted)".to_string()
        } else {
            versions
                .iter()
                .map(|v| v.version.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match which {
            store::Selector::Version(v) => {
                format!("registered model {name:?} has no version {v} (its versions: {has})")
            }
            store::Selector::Alias(a) => format!("registered model {name:?} has no alias {a:?}"),
            store::Selector::Latest => {
                format!("registered model {name:?} has no versions left (they were deleted)")
            }
        }
    };
    Ok(ApiError::new(StatusCode::NOT_FOUND, "not_found", message))
}

/// Finds the model a reference names in a workspace the caller sees: a model elsewhere
/// answers exactly as one that does not exist.
fn resolve_model(app: &App, who: &Caller, reference: &str) -> ApiResult<Resolved> {
    if let Some((name, which)) = parse_ref(reference) {
        return match app.shared.store.resolve(who.home(), name, which)? {
            Some(v) => Ok(Resolved {
                id: v.model,
                version: Some((v.name, v.version)),
            }),
            None => Err(unresolved(app, who.home(), name, which, reference)?),
        };
    }
    let id = checked_id("model", reference)?;
    // Asked of the store every time, not of the models kept in memory: a model deleted
    // through another server of the same store is gone here too.
    match app.shared.store.model_workspace(id)? {
        Some(ws) if who.ws().is_none_or(|w| w == ws) => Ok(Resolved {
            id: id.to_string(),
            version: None,
        }),
        _ => Err(ApiError::not_found("model", id)),
    }
}

/// The model a reference names, loaded (and kept for the next request).
pub(super) fn load_model(
    app: &App,
    who: &Caller,
    reference: &str,
) -> ApiResult<(Arc<Model>, Resolved)> {
    let resolved = resolve_model(app, who, reference)?;
    let id = resolved.id.as_str();
    if let Some(m) = app.models.get(id) {
        return Ok((m, resolved));
    }
    let path = app.shared.files.model_path(id);
    if !app.shared.files.fetch(&path)? {
        // Deleted after it was resolved.
        return Err(ApiError::not_found("model", id));
    }
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let model = Arc::new(Model::load(&path)?);
    app.models.insert(id, model.clone(), bytes);
    Ok((model, resolved))
}

#[utoipa::path(get, path = "/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "A model's id, or a registered NAME, NAME:VERSION or NAME@ALIAS")),
    responses((status = 200, description = "The model file (mdn's JSON model format)", body = Object), Errors),
    security(("key" = [])))]
async fn get_model(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let resolved = resolve_model(&app, &who, &id)?;
    let id = resolved.id.clone();
    let path = app.shared.files.model_path(&id);
    let files = app.shared.files.clone();
    let fetched = path.clone();
    blocking(move || Ok(files.fetch(&fetched)?)).await?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| Error::io(&path, e))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{id}.json\""))
                    .expect("ascii id"),
            ),
        ],
        bytes,
    )
        .into_response())
    .map(|r| resolved.tag(r))
}

/// The models of the key's workspace.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<store::ModelRow>,
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "The models of the key's workspace, oldest first, with the registry versions that hold them", body = ModelList), Errors),
    security(("key" = [])))]
async fn list_models(
    State(app): State<AppState>,
    axum::Extension(who): Who,
) -> ApiResult<axum::Json<ModelList>> {
    Ok(axum::Json(ModelList {
        models: app.shared.store.models(who.ws())?,
    }))
}

/// Deletes a model that no registry version holds (its job stays, naming it).
#[utoipa::path(delete, path = "/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "A model's id")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("key" = [])))]
async fn delete_model(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if parse_ref(&id).is_some() {
        return Err(ApiError::bad(format!(
            "{id:?} names a registered model: delete a model by its id (m_...), after deleting the versions that hold it (DELETE /v1/registry/NAME/versions/N)"
        )));
    }
    let id = checked_id("model", &id)?;
    match app.shared.store.delete_model(who.ws(), id)? {
        store::ModelDeleted::Removed => {
            app.forget_model(id);
            let files = app.shared.files.clone();
            let model = id.to_string();
            blocking(move || {
                remove_model_files(&files, &model);
                Ok(())
            })
            .await?;
            log::info!("model {id} deleted{}", by_text(&who));
            Ok(StatusCode::NO_CONTENT)
        }
        store::ModelDeleted::Missing => Err(ApiError::not_found("model", id)),
        store::ModelDeleted::Registered(versions) => {
            let list = versions
                .iter()
                .map(|(n, v)| format!("{n}:{v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let (n, v) = &versions[0];
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "registered",
                format!(
                    "model {id} is registered as {list}: delete {} first (DELETE /v1/registry/{n}/versions/{v}), then the model",
                    if versions.len() == 1 {
                        "that version"
                    } else {
                        "those versions"
                    }
                ),
            ))
        }
    }
}

/// Rows sent to a model: `rows` (each the features in the model's order, then for `/eval`
/// the targets) or `columns` (name -> values).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rows {
    /// Each row: the model's columns in order (numbers; a categorical column's category as
    /// a string).
    #[schema(value_type = Option<Vec<Vec<Object>>>)]
    rows: Option<Vec<Vec<Value>>>,
    /// Column name -> values.
    #[schema(value_type = Option<Object>)]
    columns: Option<serde_json::Map<String, Value>>,
    /// predict: quantile levels in (0, 1).
    #[serde(default)]
    quantiles: Vec<f64>,
    /// predict: a central interval of this probability (adds its two quantiles).
    interval: Option<f64>,
    /// sample: samples per row (1 to 100,000).
    n: Option<usize>,
    /// sample: the seed.
    #[serde(default)]
    seed: u64,
    /// sample: temperature of the mixture weights.
    temperature: Option<f64>,
    /// sample: scale of the components' standard deviations.
    sigma_scale: Option<f64>,
    /// A category the model was not trained on: "error" (a 400 naming it, the default) or
    /// "ignore" (the row predicted with none of the column's indicators set).
    unknown_category: Option<String>,
}

impl Rows {
    /// How many rows the request carries (in either form).
    fn count(&self) -> usize {
        match (&self.rows, &self.columns) {
            (Some(rows), _) => rows.len(),
            (None, Some(cols)) => cols
                .values()
                .map(|v| v.as_array().map_or(0, Vec::len))
                .max()
                .unwrap_or(0),
            (None, None) => 0,
        }
    }
}

/// Refuses a request whose answer would hold more than `--max-request-rows` rows (`per_row`
/// answer rows for each row sent), before any work.
fn bounded(app: &App, r: &Rows, per_row: usize) -> ApiResult<()> {
    let rows = r.count();
    let answer = rows.saturating_mul(per_row);
    if answer <= app.max_request_rows {
        return Ok(());
    }
    let what = if per_row > 1 {
        format!("{rows} rows x {per_row} samples")
    } else {
        format!("{rows} rows")
    };
    Err(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_rows",
        format!(
            "the request has {what}; this server answers at most {} rows per request (--max-request-rows): send them as several requests, or run `mdn predict` on a file (or a job) for a large batch",
            app.max_request_rows
        ),
    ))
}

/// The rows of a request as a data set in the model's columns (targets too if asked for):
/// numbers, and for a categorical column its category as a string.
fn dataset(model: &Model, r: &Rows, targets: bool) -> ApiResult<Dataset> {
    let columns = model.columns();
    let nt = if targets { model.targets.len() } else { 0 };
    let mut names = columns.clone();
    if targets {
        names.extend(model.targets.iter().cloned());
    }
    let table: Vec<Vec<Value>> = match (&r.rows, &r.columns) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give rows or columns, not both")),
        (None, None) => return Err(ApiError::bad("no rows: give \"rows\" or \"columns\"")),
        (Some(rows), None) => {
            for (i, row) in rows.iter().enumerate() {
                if row.len() != names.len() {
                    return Err(ApiError::bad(format!(
                        "rows[{i}]: {} values, expected {} ({})",
                        row.len(),
                        names.len(),
                        names.join(", ")
                    )));
                }
            }
            rows.clone()
        }
        (None, Some(cols)) => {
            if let Some(k) = cols.keys().find(|k| !names.contains(k)) {
                return Err(ApiError::bad(format!(
                    "columns: {k:?} is not one of the model's columns ({})",
                    names.join(", ")
                )));
            }
            let mut values: Vec<&Vec<Value>> = Vec::new();
            for n in &names {
                let v = cols
                    .get(n)
                    .ok_or_else(|| ApiError::bad(format!("columns: {n:?} is missing")))?
                    .as_array()
                    .ok_or_else(|| ApiError::bad(format!("columns.{n}: expected an array")))?;
                if let Some(first) = values.first()
                    && first.len() != v.len()
                {
                    return Err(ApiError::bad(format!(
                        "columns.{n}: {} values, {} has {}",
                        v.len(),
                        names[0],
                        first.len()
                    )));
                }
                values.push(v);
            }
            let rows = values.first().map_or(0, |v| v.len());
            (0..rows)
                .map(|i| values.iter().map(|c| c[i].clone()).collect())
                .collect()
        }
    };
    if table.is_empty() {
        return Err(ApiError::bad("no rows"));
    }
    let ignore = match r.unknown_category.as_deref() {
        None => false,
        Some(s) => {
            let u: crate::categorical::UnknownCategory = s
                .parse()
                .map_err(|e: String| ApiError::bad(format!("unknown_category: {e}")))?;
            u == crate::categorical::UnknownCategory::Ignore
        }
    };
    let lookups: Vec<Option<crate::categorical::Lookup>> = columns
        .iter()
        .map(|c| {
            model
                .categorical
                .iter()
                .find(|k| &k.column == c)
                .map(crate::categorical::Lookup::new)
        })
        .chain((0..nt).map(|_| None))
        .collect();
    let mut x = Vec::with_capacity(table.len() * model.features.len());
    let mut y = Vec::with_capacity(table.len() * nt);
    for (i, row) in table.iter().enumerate() {
        for (j, (v, lookup)) in row.iter().zip(&lookups).enumerate() {
            let name = &names[j];
            match lookup {
                Some(l) => {
                    let cell = match v {
                        Value::String(s) if !crate::data::is_missing(s) => s.clone(),
                        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        Value::Null | Value::String(_) => {
                            return Err(ApiError::bad(format!(
                                "rows[{i}], {name}: missing value ({v})"
                            )));
                        }
                        _ => {
                            return Err(ApiError::bad(format!(
                                "rows[{i}], {name}: expected a category (a string)"
                            )));
                        }
                    };
                    let at = x.len();
                    x.resize(at + l.width, 0.0);
                    match l.get(&cell) {
                        Some(k) => x[at + k] = 1.0,
                        None if ignore => {}
                        None => {
                            return Err(ApiError::bad(format!(
                                "rows[{i}], {name}: {}; \"unknown_category\": \"ignore\" predicts \
                                 such rows with no category",
                                l.unknown_message(&cell)
                            )));
                        }
                    }
                }
                None => {
                    if v.is_null() {
                        return Err(ApiError::bad(format!(
                            "rows[{i}], {name}: missing value (null)"
                        )));
                    }
                    // A missing value as a CSV file writes one ("NA", "NaN", "", ...).
                    if let Some(s) = v.as_str().filter(|s| crate::data::is_missing(s.trim())) {
                        return Err(ApiError::bad(format!(
                            "rows[{i}], {name}: missing value ({s:?})"
                        )));
                    }
                    let f = v.as_f64().ok_or_else(|| {
                        ApiError::bad(format!(
                            "rows[{i}], {name}: expected a number, got {}",
                            shown_json(v)
                        ))
                    })?;
                    if !f.is_finite() || !(f as f32).is_finite() {
                        return Err(ApiError::bad(format!(
                            "rows[{i}], {name}: not a finite number"
                        )));
                    }
                    if j < columns.len() {
                        x.push(f as f32);
                    } else {
                        y.push(f as f32);
                    }
                }
            }
        }
    }
    Ok(Dataset {
        path: "request".into(),
        features: model.features.clone(),
        targets: if targets {
            model.targets.clone()
        } else {
            vec![]
        },
        x,
        y,
        rows: table.len(),
    })
}

fn json_text(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(v).expect("JSON of numbers"),
    )
        .into_response()
}

#[utoipa::path(post, path = "/v1/models/{model}/predict", tag = "models",
    params(("model" = String, Path, description = "A model's id, or a registered NAME, NAME:VERSION or NAME@ALIAS")),
    request_body = Rows,
    responses((status = 200, description = "What `mdn predict --json` writes for the rows", body = Object), Errors),
    security(("key" = [])))]
async fn predict(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let r: Rows = parse_json(&body)?;
    bounded(&app, &r, 1)?;
    let (model, resolved) = load_model(&app, &who, &id)?;
    let answer = blocking(move || {
        let qs = crate::tables::quantile_levels(&r.quantiles, r.interval).map_err(request_terms)?;
        let data = dataset(&model, &r, false)?;
        let pred = model.predict(&mut CpuBackend::with_threads(1), &data)?;
        Ok(json_text(&crate::tables::predictions_json(
            &model, &pred, &qs, None, None,
        )))
    })
    .await?;
    Ok(resolved.tag(answer))
}

#[utoipa::path(post, path = "/v1/models/{model}/sample", tag = "models",
    params(("model" = String, Path, description = "A model's id, or a registered NAME, NAME:VERSION or NAME@ALIAS")),
    request_body = Rows,
    responses((status = 200, description = "What `mdn sample --json` writes for the rows", body = Object), Errors),
    security(("key" = [])))]
async fn sample(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let r: Rows = parse_json(&body)?;
    let n = r.n.unwrap_or(1);
    if n == 0 || n > 100_000 {
        return Err(ApiError::bad(format!(
            "n: expected 1 to 100000 samples per row, got {n}"
        )));
    }
    bounded(&app, &r, n)?;
    let (model, resolved) = load_model(&app, &who, &id)?;
    let answer = blocking(move || {
        let data = dataset(&model, &r, false)?;
        let samples = model
            .sample(
                &mut CpuBackend::with_threads(1),
                &data,
                n,
                r.seed,
                r.temperature.unwrap_or(1.0),
                r.sigma_scale.unwrap_or(1.0),
            )
            .map_err(request_terms)?;
        Ok(json_text(&crate::tables::samples_json(
            &model, data.rows, n, r.seed, &samples, None, None,
        )))
    })
    .await?;
    Ok(resolved.tag(answer))
}

#[utoipa::path(post, path = "/v1/models/{model}/eval", tag = "models",
    params(("model" = String, Path, description = "A model's id, or a registered NAME, NAME:VERSION or NAME@ALIAS")),
    request_body = Rows,
    responses((status = 200, description = "Mean NLL and proper scores of the rows (features, then targets)", body = Object), Errors),
    security(("key" = [])))]
async fn eval(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let r: Rows = parse_json(&body)?;
    bounded(&app, &r, 1)?;
    let (model, resolved) = load_model(&app, &who, &id)?;
    let answer = blocking(move || {
        let data = dataset(&model, &r, true)?;
        let e = crate::tables::evaluate(&model, &mut CpuBackend::with_threads(1), &data)?;
        Ok(json_text(
            &json!({"rows": e.rows, "mean_nll": e.mean_nll, "scores": e.scores}),
        ))
    })
    .await?;
    Ok(resolved.tag(answer))
}

/// Server-Sent Events of every job, from now on (no history): what the dashboard's job list
/// follows.
#[utoipa::path(get, path = "/v1/events", tag = "jobs",
    responses((status = 200, description = "Server-Sent Events of every job the key sees, from now on", content_type = "text/event-stream", body = SseEvent), Errors),
    security(("key" = [])))]
async fn all_events(
    State(app): State<AppState>,
    axum::Extension(who): Who,
) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>>> {
    let rx = app.shared.events.subscribe();
    // Which jobs this caller sees, learnt as their events come.
    let seen: HashMap<String, bool> = HashMap::new();
    let state = (rx, seen, app.shared.clone(), who);
    let stream = futures::stream::unfold(state, |(mut rx, mut seen, shared, who)| async move {
        loop {
            let heard = tokio::select! {
                heard = rx.recv() => heard,
                () = shared.closed() => return None,
            };
            match heard {
                Ok(b) => {
                    if let Some(ws) = who.ws() {
                        let visible = match seen.get(&b.job) {
                            Some(v) => *v,
                            None => {
                                let v = shared.store.job(Some(ws), &b.job).ok().flatten().is_some();
                                seen.insert(b.job.clone(), v);
                                v
                            }
                        };
                        if !visible {
                            continue;
                        }
                    }
                    let mut data: Value = serde_json::from_str(&b.data).unwrap_or(Value::Null);
                    data["job"] = Value::from(b.job.clone());
                    let event = sse_event(b.seq, &data.to_string());
                    return Some((Ok(event), (rx, seen, shared, who)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---- the model registry ----

fn checked_name(name: &str) -> ApiResult<&str> {
    if store::valid_model_name(name) {
        Ok(name)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no registered model {name:?}"),
        ))
    }
}

fn no_version(name: &str, version: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("registered model {name:?} has no version {version}"),
    )
}

/// Registered names.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RegistryList {
    pub models: Vec<store::RegisteredModel>,
}

#[utoipa::path(get, path = "/v1/registry", tag = "registry",
    responses((status = 200, description = "Registered names", body = RegistryList), Errors),
    security(("key" = [])))]
async fn list_registry(
    State(app): State<AppState>,
    axum::Extension(who): Who,
) -> ApiResult<axum::Json<RegistryList>> {
    Ok(axum::Json(RegistryList {
        models: app.shared.store.registry(who.ws())?,
    }))
}

/// A registered name: its versions and aliases.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub name: String,
    pub workspace: String,
    pub latest: u32,
    /// alias -> version.
    pub aliases: std::collections::BTreeMap<String, u32>,
    pub versions: Vec<store::VersionRow>,
}

#[utoipa::path(get, path = "/v1/registry/{name}", tag = "registry",
    params(("name" = String, Path, description = "A registered name")),
    responses((status = 200, description = "Its versions and aliases", body = Registered), Errors),
    security(("key" = [])))]
async fn get_registered(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Registered>> {
    let name = checked_name(&name)?;
    let versions = app.shared.store.versions(who.home(), name)?;
    // A name whose versions were all deleted stays (its numbers are never given again).
    if versions.is_empty()
        && !app
            .shared
            .store
            .registry(Some(who.home()))?
            .iter()
            .any(|m| m.name == name)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no registered model {name:?}"),
        ));
    }
    let mut aliases = std::collections::BTreeMap::new();
    for v in &versions {
        for a in &v.aliases {
            aliases.insert(a.clone(), v.version);
        }
    }
    Ok(axum::Json(Registered {
        name: name.to_string(),
        workspace: who.home().to_string(),
        latest: versions.last().map_or(0, |v| v.version),
        aliases,
        versions,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    /// The model's id (a finished job's `model`).
    model: String,
    #[serde(default)]
    tags: Vec<String>,
}

fn checked_tags(tags: &[String]) -> ApiResult<()> {
    if tags.len() > 50
        || tags
            .iter()
            .any(|t| t.is_empty() || t.len() > 100 || t.chars().any(|c| c.is_control()))
    {
        return Err(ApiError::bad(
            "tags: at most 50, each 1 to 100 characters without control characters",
        ));
    }
    Ok(())
}

/// Registers a model (by id) as the next version of a name.
#[utoipa::path(post, path = "/v1/registry/{name}/versions", tag = "registry",
    params(("name" = String, Path, description = "The name (made if new)")),
    request_body = NewVersion,
    responses((status = 201, description = "The new version", body = VersionRow), Errors),
    security(("key" = [])))]
async fn add_version(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    if !store::valid_model_name(&name) {
        return Err(ApiError::bad(format!(
            "{name:?} is not a model name (1 to 64 letters, digits, '.', '-' and '_', starting with a letter, not m_...)"
        )));
    }
    let r: NewVersion = parse_json(&body)?;
    checked_tags(&r.tags)?;
    if !valid_id(&r.model) {
        return Err(ApiError::bad(format!(
            "model: no model with id {:?}",
            r.model
        )));
    }
    match app
        .shared
        .store
        .register(who.home(), &name, &r.model, &r.tags, who.by())?
    {
        Some(v) => {
            log::info!(
                "model {} registered as {name}:{} in {}{}",
                r.model,
                v.version,
                who.home(),
                by_text(&who)
            );
            Ok((StatusCode::CREATED, axum::Json(v)).into_response())
        }
        None => Err(ApiError::bad(format!(
            "model: no model with id {:?}",
            r.model
        ))),
    }
}

fn version_number(name: &str, version: &str) -> ApiResult<u32> {
    version
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| no_version(name, version))
}

#[utoipa::path(get, path = "/v1/registry/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "A registered name"), ("version" = String, Path, description = "A version number")),
    responses((status = 200, description = "The version", body = VersionRow), Errors),
    security(("key" = [])))]
async fn get_version(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<store::VersionRow>> {
    let name = checked_name(&name)?;
    let n = version_number(name, &version)?;
    match app
        .shared
        .store
        .resolve(who.home(), name, store::Selector::Version(n))?
    {
        Some(v) => Ok(axum::Json(v)),
        None => Err(no_version(name, &version)),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionChange {
    tags: Vec<String>,
}

/// Sets a version's tags.
#[utoipa::path(put, path = "/v1/registry/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "A registered name"), ("version" = String, Path, description = "A version number")),
    request_body = VersionChange,
    responses((status = 200, description = "The version with its new tags", body = VersionRow), Errors),
    security(("key" = [])))]
async fn put_version(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<store::VersionRow>> {
    let name = checked_name(&name)?;
    let n = version_number(name, &version)?;
    let r: VersionChange = parse_json(&body)?;
    checked_tags(&r.tags)?;
    let store = &app.shared.store;
    if !store.set_tags(who.home(), name, n, &r.tags)? {
        return Err(no_version(name, &version));
    }
    store
        .resolve(who.home(), name, store::Selector::Version(n))?
        .map(axum::Json)
        .ok_or_else(|| no_version(name, &version))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasChange {
    version: u32,
}

/// Deletes a version and the aliases on it; its model stays (`DELETE /v1/models/{id}`
/// deletes it), and its number is never given again.
#[utoipa::path(delete, path = "/v1/registry/{name}/versions/{version}", tag = "registry",
    params(("name" = String, Path, description = "A registered name"), ("version" = String, Path, description = "A version number")),
    responses((status = 204, description = "Deleted"), Errors),
    security(("key" = [])))]
async fn delete_version(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let name = checked_name(&name)?;
    let n = version_number(name, &version)?;
    match app.shared.store.delete_version(who.home(), name, n)? {
        Some(aliases) => {
            let also = if aliases.is_empty() {
                String::new()
            } else {
                format!(" and its aliases {}", aliases.join(", "))
            };
            log::info!(
                "registered model {name} version {n}{also} deleted{}",
                by_text(&who)
            );
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(no_version(name, &version)),
    }
}

/// Points an alias at a version (made, or moved in one statement).
#[utoipa::path(put, path = "/v1/registry/{name}/aliases/{alias}", tag = "registry",
    params(("name" = String, Path, description = "A registered name"), ("alias" = String, Path, description = "An alias: production, staging, ...")),
    request_body = AliasChange,
    responses((status = 200, description = "The alias points at the version", body = AliasAnswer), Errors),
    security(("key" = [])))]
async fn put_alias(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<AliasAnswer>> {
    let name = checked_name(&name)?;
    if !store::valid_alias(&alias) {
        return Err(ApiError::bad(format!(
            "{alias:?} is not an alias (1 to 40 letters, digits, '-' and '_', starting with a letter)"
        )));
    }
    let r: AliasChange = parse_json(&body)?;
    if !app
        .shared
        .store
        .set_alias(who.home(), name, &alias, r.version, who.by())?
    {
        return Err(no_version(name, &r.version.to_string()));
    }
    log::info!(
        "{name}@{alias} -> version {} in {}{}",
        r.version,
        who.home(),
        by_text(&who)
    );
    Ok(axum::Json(AliasAnswer {
        name: name.to_string(),
        alias,
        version: r.version,
    }))
}

/// Where an alias points now.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AliasAnswer {
    pub name: String,
    pub alias: String,
    pub version: u32,
}

#[utoipa::path(delete, path = "/v1/registry/{name}/aliases/{alias}", tag = "registry",
    params(("name" = String, Path, description = "A registered name"), ("alias" = String, Path, description = "An alias")),
    responses((status = 204, description = "Removed"), Errors),
    security(("key" = [])))]
async fn delete_alias(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let name = checked_name(&name)?;
    if store::valid_alias(&alias) && app.shared.store.delete_alias(who.home(), name, &alias)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("registered model {name:?} has no alias {alias:?}"),
        ))
    }
}

// ---- keys and workspaces ----

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Who or what the key is for (`ci`, `alice`).
    name: String,
    scope: String,
    /// The key's workspace (a workspace admin: its own, the default; a server admin: the
    /// `Mdn-Workspace` header's or `default`).
    workspace: Option<String>,
    /// A key that sees every workspace (a server admin's request only).
    #[serde(default)]
    server_admin: bool,
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, description = "The keys of the key's workspace (a server admin: all), never the keys themselves", body = KeyList), Errors),
    security(("key" = [])))]
async fn list_keys(
    State(app): State<AppState>,
    axum::Extension(who): Who,
) -> ApiResult<axum::Json<KeyList>> {
    Ok(axum::Json(KeyList {
        keys: app.shared.store.keys(who.ws())?,
    }))
}

/// Keys (never the keys themselves).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<store::KeyRow>,
}

/// A new key: its row, and the key, shown this once.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct NewKeyAnswer {
    #[serde(flatten)]
    pub row: store::KeyRow,
    /// The bearer token: `mdn_key_<id>_<secret>`.
    pub key: String,
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = KeyRequest,
    responses((status = 201, description = "The new key, in `key`: shown this once", body = NewKeyAnswer, links(
        ("RevokeKey" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))),
    )), Errors),
    security(("key" = [])))]
async fn add_key(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    body: Bytes,
) -> ApiResult<Response> {
    let r: KeyRequest = parse_json(&body)?;
    let scope: store::Scope = r
        .scope
        .parse()
        .map_err(|e: String| ApiError::bad(format!("scope: {e}")))?;
    if r.name.trim().is_empty() || r.name.len() > 100 || r.name.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad(
            "name: 1 to 100 characters, no control characters",
        ));
    }
    let workspace = if r.server_admin {
        if !who.is_server_admin() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "server_admin: only a server admin key makes server admin keys",
            ));
        }
        if scope != store::Scope::Admin || r.workspace.is_some() {
            return Err(ApiError::bad(
                "server_admin: a server admin key has scope admin and no workspace",
            ));
        }
        None
    } else {
        let ws = r.workspace.unwrap_or_else(|| who.home().to_string());
        if !store::valid_workspace(&ws) {
            return Err(ApiError::bad(format!(
                "workspace: {ws:?} is not a workspace name (1 to 40 lowercase letters, digits, - and _)"
            )));
        }
        if let Some(own) = &who.key_workspace
            && *own != ws
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("workspace: this key manages workspace {own:?} only"),
            ));
        }
        Some(ws)
    };
    let made = auth::new_key(workspace.as_deref(), r.name.trim(), scope);
    app.shared.store.insert_key(&made.row)?;
    log::info!(
        "key {} ({}, {} in {}) made{}",
        made.row.id,
        made.row.name,
        scope.as_str(),
        workspace.as_deref().unwrap_or("every workspace"),
        by_text(&who)
    );
    let answer = NewKeyAnswer {
        row: made.row,
        key: made.key,
    };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "A key's id (key_...)")),
    responses((status = 204, description = "Revoked: refused from now on"), Errors),
    security(("key" = [])))]
async fn revoke_key(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = checked_id("key", &id)?;
    if app.shared.store.revoke_key(who.ws(), id)? {
        log::info!("key {id} revoked{}", by_text(&who));
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("key", id))
    }
}

/// Workspaces with what each uses.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<store::Usage>,
}

#[utoipa::path(get, path = "/v1/workspaces", tag = "keys",
    responses((status = 200, description = "Workspaces with what each uses and its quotas", body = WorkspaceList), Errors),
    security(("key" = [])))]
async fn list_workspaces(
    State(app): State<AppState>,
    axum::Extension(who): Who,
) -> ApiResult<axum::Json<WorkspaceList>> {
    Ok(axum::Json(WorkspaceList {
        workspaces: app.shared.store.workspaces(who.ws())?,
    }))
}

#[utoipa::path(get, path = "/v1/workspaces/{name}", tag = "keys",
    params(("name" = String, Path, description = "A workspace")),
    responses((status = 200, description = "What it uses and its quotas", body = Usage), Errors),
    security(("key" = [])))]
async fn get_workspace(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<store::Usage>> {
    if who.ws().is_some_and(|w| w != name) || !store::valid_workspace(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no workspace {name:?}"),
        ));
    }
    match app.shared.store.workspaces(Some(&name))?.into_iter().next() {
        Some(u) => Ok(axum::Json(u)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no workspace {name:?}"),
        )),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Most jobs queued or running at once (null: no limit).
    #[serde(default)]
    max_jobs: Option<u64>,
    /// Most bytes of data sets and models (null: no limit).
    #[serde(default)]
    max_bytes: Option<u64>,
}

/// Creates a workspace or sets its quotas: a server admin's. (A workspace's own admin sees
/// its quotas but does not set them: a limit its holder can lift bounds nothing.)
#[utoipa::path(put, path = "/v1/workspaces/{name}", tag = "keys",
    params(("name" = String, Path, description = "A workspace (made if new)")),
    request_body = Quotas,
    responses((status = 200, description = "Its quotas are set", body = Usage), Errors),
    security(("key" = [])))]
async fn put_workspace(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<store::Usage>> {
    if !who.is_server_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a workspace's quotas are set by a server admin key",
        ));
    }
    if !store::valid_workspace(&name) {
        return Err(ApiError::bad(format!(
            "{name:?} is not a workspace name (1 to 40 lowercase letters, digits, - and _)"
        )));
    }
    let q: Quotas = if body.is_empty() {
        Quotas {
            max_jobs: None,
            max_bytes: None,
        }
    } else {
        parse_json(&body)?
    };
    let store = &app.shared.store;
    let created = store
        .workspaces(Some(&name))?
        .first()
        .map_or_else(store::now, |u| u.workspace.created);
    store.put_workspace(&store::Workspace {
        name: name.clone(),
        max_jobs: q.max_jobs,
        max_bytes: q.max_bytes,
        created,
    })?;
    log::info!(
        "workspace {name}: max_jobs {:?}, max_bytes {:?}{}",
        q.max_jobs,
        q.max_bytes,
        by_text(&who)
    );
    store
        .workspaces(Some(&name))?
        .into_iter()
        .next()
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("workspace", &name))
}

/// A panel of `mdn plot` for a model, as SVG: `density`, `pit`, `reliability`, `history` or
/// `all`, drawn from the data set its job trained on, once (then kept beside the model).
/// Where a model's figure of `panel` is kept once drawn (beside the model, here only).
fn figure_path(files: &store::Files, id: &str, panel: crate::plot::Panel) -> std::path::PathBuf {
    files
        .model_path(id)
        .with_extension(format!("{}.svg", panel.name()))
}

/// Removes a deleted model's file (here and in the object store) and its figures.
fn remove_model_files(files: &store::Files, id: &str) {
    files.remove(&files.model_path(id));
    for panel in <crate::plot::Panel as crate::named::Named>::ALL {
        let _ = std::fs::remove_file(figure_path(files, id, *panel));
    }
}

#[utoipa::path(get, path = "/v1/models/{model}/plot/{panel}", tag = "models",
    params(("model" = String, Path, description = "A model's id, or a registered NAME, NAME:VERSION or NAME@ALIAS"), ("panel" = String, Path, description = "density, pit, reliability, history or all (.svg optional)")),
    responses((status = 200, description = "The figure `mdn plot` draws", content_type = "image/svg+xml", body = String), Errors),
    security(("key" = [])))]
async fn plot(
    State(app): State<AppState>,
    axum::Extension(who): Who,
    Path((id, panel)): Path<(String, String)>,
) -> ApiResult<Response> {
    let panel: crate::plot::Panel =
        panel
            .trim_end_matches(".svg")
            .parse()
            .map_err(|e: String| {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("panel: {e}"))
            })?;
    let (model, resolved) = load_model(&app, &who, &id)?;
    let id = resolved.id.clone();
    let shared = app.shared.clone();
    blocking(move || {
        let store = &shared.store;
        let files = &shared.files;
        let path = figure_path(files, &id, panel);
        if !path.exists() {
            let data = match store.model_dataset(&id)? {
                Some(ds) if panel != crate::plot::Panel::History => {
                    let path = files.dataset_path(&ds.id, &ds.format);
                    let read = fetch_dataset(files, &path).and_then(|()| {
                        crate::data::read_data(&path, &model.choice(true))
                    });
                    Some(read.map_err(|e| rename_in(e, &path, &ds.name))?)
                }
                _ => None,
            };
            if data.is_none() && panel != crate::plot::Panel::History {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "no_data",
                    "the data set this model was trained on (or its job) was deleted: only the history panel can be drawn",
                ));
            }
            crate::plot::Figure {
                model: &model,
                data: data.as_ref(),
                target: 0,
                panel,
                size: None,
            }
            .render(&mut CpuBackend::with_threads(1), &path)?;
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Ok((
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}

#[cfg(test)]
mod option_name_tests {
    use super::option_names;

    #[test]
    fn messages_name_the_jobs_options_not_the_command_lines_flags() {
        assert_eq!(
            option_names("--epochs must be at least 1"),
            "options.epochs must be at least 1"
        );
        assert_eq!(
            option_names("b.csv: --components 9 is more than the 4 rows; use --batch-size 2"),
            "b.csv: options.components 9 is more than the 4 rows; use options.batch_size 2"
        );
        assert_eq!(
            option_names("leave the column out (--features a,b,cat)"),
            "leave the column out (\"features\": [\"a\",\"b\",\"cat\"])"
        );
        assert_eq!(
            option_names("leave the column out (--features 'sale date,b')"),
            "leave the column out (\"features\": [\"sale date\",\"b\"])"
        );
        assert_eq!(
            option_names("epoch 3 went NaN, down to --lr 0.001; see --data"),
            "epoch 3 went NaN, down to options.lr 0.001; see \"dataset\""
        );
        // Regression (a new user): a flag with a digit (--l2) was cut at it and kept its
        // command-line name beside renamed ones ("fewer options.components, some --l2").
        assert_eq!(
            option_names("More epochs, fewer --components, some --l2 or more data may help"),
            "More epochs, fewer options.components, some options.l2 or more data may help"
        );
        // A validation file is the job's validation data set; what the API has no name for
        // stays, and so does a lone `--`.
        assert_eq!(
            option_names("give --val FILE -- or --val x or --valve"),
            "give \"val_dataset\" -- or \"val_dataset\" x or --valve"
        );
    }
}
