//! The Open Inference Protocol (KServe's "V2" REST protocol, which Triton, KServe, Seldon
//! MLServer and others speak) under `/v2`, so that clients written for those servers
//! (`tritonclient[http]`, KServe's SDK) predict with mdn's models unchanged.
//!
//! A model is a registered name (versions: its version numbers, or an alias in their place)
//! or a model id (no versions). `infer` takes one FP32 (or FP64) tensor `x` of shape [N, d],
//! the model's features in order, and answers with the mixture, FP32: `pi` [N, K], `mu` and
//! `sigma` [N, K, D] (a full-covariance model also `scale_tril` [N, K, D, D], each
//! component's Cholesky factor; a Student's t model also `dof` [N, K]), `mean` and `variance` [N, D], `mode` [N, D] when asked for
//! by name, and with `parameters: {"quantiles": [0.05, 0.95]}` also `quantiles` [N, Q, D].
//! A deep ensemble answers as its equal-weight mixture (M x K components). Tensors travel
//! as JSON or, with the binary tensor extension (`Inference-Header-Content-Length`), as raw
//! little-endian bytes after the JSON header, as tritonclient sends them by default.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::{self, ApiError, App, Who};
use super::auth::Caller;
use crate::backend::CpuBackend;
use crate::data::Dataset;
use crate::model::{Model, Prediction};

/// The header that says how long the JSON part of a body with binary tensors is.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// An error in the protocol's shape: `{"error": "message"}` with the status.
pub struct V2Error(ApiError);

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> V2Error {
        V2Error(e)
    }
}

impl From<crate::Error> for V2Error {
    fn from(e: crate::Error) -> V2Error {
        V2Error(ApiError::from(e))
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let body = V2ErrorBody {
            error: self.0.message,
        };
        (self.0.status, axum::Json(body)).into_response()
    }
}

/// The protocol's error body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct V2ErrorBody {
    pub error: String,
}

/// The error answers of the protocol's model routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum V2Errors {
    /// The request is not valid: the message says what.
    #[response(status = 400)]
    BadRequest(V2ErrorBody),
    /// No key, a malformed Authorization header, an unknown key or a revoked one.
    #[response(status = 401)]
    Unauthorized(V2ErrorBody),
    /// The key's scope or workspace does not allow this.
    #[response(status = 403)]
    Forbidden(V2ErrorBody),
    /// No such model (or version) in the key's workspace.
    #[response(status = 404)]
    NotFound(V2ErrorBody),
    /// More rows than --max-request-rows.
    #[response(status = 413)]
    TooLarge(V2ErrorBody),
    /// The store cannot be reached just now.
    #[response(status = 503)]
    Unavailable(V2ErrorBody),
}

/// `/v2`: the server.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

/// `/v2/health/live`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Live {
    pub live: bool,
}

/// `/v2/health/ready`, and a model's `ready`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Ready {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ready: bool,
}

/// A tensor's name, type and shape (-1: any length).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// A model's metadata.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    /// A registered name's versions; none for a model id.
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
    /// mdn's own: the model's id and version, feature and target names, components,
    /// ensemble members.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

/// An output tensor: its values in `data` (row-major), or after the JSON header as binary
/// data (`parameters.binary_data_size` bytes).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

/// What `infer` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

type V2Result<T> = std::result::Result<T, V2Error>;

fn bad(message: impl Into<String>) -> V2Error {
    V2Error(ApiError::bad(message))
}

/// The routes under `/v2`: health and server metadata open (as `/healthz` is), models
/// behind the keys of `/v1` (scope read).
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let models = Router::new()
        .route("/models/{name}", get(metadata))
        .route("/models/{name}/ready", get(ready))
        .route("/models/{name}/infer", post(infer))
        .route("/models/{name}/versions/{version}", get(metadata_of))
        .route("/models/{name}/versions/{version}/ready", get(ready_of))
        .route("/models/{name}/versions/{version}/infer", post(infer_of))
        .route_layer(middleware::from_fn_with_state(app, api::authorize));
    Router::new()
        .route("/", get(server))
        .route("/health/live", get(live))
        .route("/health/ready", get(server_ready))
        .merge(models)
}

#[utoipa::path(get, path = "/v2", tag = "inference",
    responses((status = 200, description = "The server", body = ServerMetadata)))]
pub(super) async fn server() -> axum::Json<ServerMetadata> {
    axum::Json(ServerMetadata {
        name: "mdn".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["binary_tensor_data".into()],
    })
}

#[utoipa::path(get, path = "/v2/health/live", tag = "inference",
    responses((status = 200, description = "The server is up", body = Live)))]
pub(super) async fn live() -> axum::Json<Live> {
    axum::Json(Live { live: true })
}

#[utoipa::path(get, path = "/v2/health/ready", tag = "inference",
    responses((status = 200, description = "The server answers", body = Ready)))]
pub(super) async fn server_ready() -> axum::Json<Ready> {
    axum::Json(Ready {
        name: None,
        ready: true,
    })
}

/// The `/v1` reference of a V2 model and version: `NAME`, `NAME:3` or `NAME@production`
/// (or a model id, which has no versions).
fn reference(name: &str, version: Option<&str>) -> V2Result<String> {
    match version {
        None => Ok(name.to_string()),
        Some(v) if v.parse::<u32>().is_ok() => Ok(format!("{name}:{v}")),
        Some(v) if crate::serve::store::valid_alias(v) => Ok(format!("{name}@{v}")),
        Some(v) => Err(V2Error(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("model {name:?} has no version {v:?}"),
        ))),
    }
}

/// The shapes of a model's outputs (-1: the rows of the request).
fn outputs(model: &Model, pred_k: usize) -> Vec<(&'static str, Vec<i64>)> {
    let (k, d) = (pred_k as i64, model.targets.len() as i64);
    let mut out = vec![
        ("pi", vec![-1, k]),
        ("mu", vec![-1, k, d]),
        ("sigma", vec![-1, k, d]),
    ];
    if model.arch.covariance == crate::layout::Covariance::Full {
        out.push(("scale_tril", vec![-1, k, d, d]));
    }
    if !model.arch.family.is_gaussian() {
        out.push(("dof", vec![-1, k]));
    }
    out.extend([
        ("mean", vec![-1, d]),
        ("variance", vec![-1, d]),
        ("mode", vec![-1, d]),
        ("quantiles", vec![-1, -1, d]),
    ]);
    out
}

async fn describe(
    app: Arc<App>,
    who: Arc<Caller>,
    name: String,
    version: Option<String>,
) -> V2Result<axum::Json<ModelMetadata>> {
    let r = reference(&name, version.as_deref())?;
    let (model, resolved) = api::load_model(&app, &who, &r)?;
    let versions: Vec<String> = match &resolved.version {
        Some((n, _)) => app
            .shared
            .store
            .versions(who.home(), n)?
            .iter()
            .map(|v| v.version.to_string())
            .collect(),
        None => vec![],
    };
    let k = model.arch.components * model.ensemble_size();
    let tensor = |n: &str, shape: Vec<i64>| TensorMetadata {
        name: n.into(),
        datatype: "FP32".into(),
        shape,
    };
    Ok(axum::Json(ModelMetadata {
        name,
        versions,
        platform: "mdn".into(),
        inputs: vec![tensor("x", vec![-1, model.features.len() as i64])],
        outputs: outputs(&model, k)
            .into_iter()
            .map(|(n, shape)| tensor(n, shape))
            .collect(),
        parameters: json!({
            "model": resolved.id,
            "version": resolved.version.as_ref().map(|v| v.1),
            "features": model.features,
            "targets": model.targets,
            "components": model.arch.components,
            "ensemble": model.ensemble_size(),
        }),
    }))
}

#[utoipa::path(get, path = "/v2/models/{name}", tag = "inference",
    params(("name" = String, Path, description = "A registered name, or a model id")),
    responses((status = 200, description = "The model's inputs and outputs", body = ModelMetadata), V2Errors),
    security(("key" = [])))]
pub(super) async fn metadata(
    State(app): State<Arc<App>>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
) -> V2Result<axum::Json<ModelMetadata>> {
    describe(app, who, name, None).await
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "inference",
    params(("name" = String, Path, description = "A registered name"), ("version" = String, Path, description = "A version number, or an alias")),
    responses((status = 200, description = "The version's inputs and outputs", body = ModelMetadata), V2Errors),
    security(("key" = [])))]
pub(super) async fn metadata_of(
    State(app): State<Arc<App>>,
    axum::Extension(who): Who,
    Path((name, version)): Path<(String, String)>,
) -> V2Result<axum::Json<ModelMetadata>> {
    describe(app, who, name, Some(version)).await
}

async fn is_ready(
    app: Arc<App>,
    who: Arc<Caller>,
    name: String,
    version: Option<String>,
) -> V2Result<axum::Json<Ready>> {
    let r = reference(&name, version.as_deref())?;
    api::load_model(&app, &who, &r)?;
    Ok(axum::Json(Ready {
        name: Some(name),
        ready: true,
    }))
}

#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "inference",
    params(("name" = String, Path, description = "A registered name, or a model id")),
    responses((status = 200, description = "It loads", body = Ready), V2Errors),
    security(("key" = [])))]
pub(super) async fn ready(
    State(app): State<Arc<App>>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
) -> V2Result<axum::Json<Ready>> {
    is_ready(app, who, name, None).await
}

#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "inference",
    params(("name" = String, Path, description = "A registered name"), ("version" = String, Path, description = "A version number, or an alias")),
    responses((status = 200, description = "It loads", body = Ready), V2Errors),
    security(("key" = [])))]
pub(super) async fn ready_of(
    State(app): State<Arc<App>>,
    axum::Extension(who): Who,
    Path((name, version)): Path<(String, String)>,
) -> V2Result<axum::Json<Ready>> {
    is_ready(app, who, name, Some(version)).await
}

/// An inference request.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct InferRequest {
    /// Echoed in the answer.
    id: Option<String>,
    /// `quantiles` (levels, a list or `"0.05,0.95"`), `binary_data_output` (bool).
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
    /// One tensor, `x` [N, d].
    inputs: Vec<InferInput>,
    /// Which outputs (default: pi, mu, sigma, [scale_tril], mean, variance, [quantiles]).
    outputs: Option<Vec<RequestedOutput>>,
}

/// An input tensor: `data` (flat or nested, row-major), or `parameters.binary_data_size`
/// bytes after the JSON header.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct InferInput {
    name: String,
    shape: Vec<i64>,
    /// FP32 or FP64.
    datatype: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// An output asked for; `parameters.binary_data: true` sends it as binary data.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct RequestedOutput {
    name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
}

#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "inference",
    params(("name" = String, Path, description = "A registered name (its newest version), or a model id")),
    request_body(content((InferRequest = "application/json"), ("application/octet-stream")),
        description = "JSON, or (with Inference-Header-Content-Length) a JSON header followed by binary tensors"),
    responses((status = 200, description = "The mixture's tensors", content((InferResponse = "application/json"), ("application/octet-stream"))), V2Errors),
    security(("key" = [])))]
pub(super) async fn infer(
    State(app): State<Arc<App>>,
    axum::Extension(who): Who,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> V2Result<Response> {
    run(app, who, name, None, headers, body).await
}

#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "inference",
    params(("name" = String, Path, description = "A registered name"), ("version" = String, Path, description = "A version number, or an alias")),
    request_body(content((InferRequest = "application/json"), ("application/octet-stream")),
        description = "JSON, or (with Inference-Header-Content-Length) a JSON header followed by binary tensors"),
    responses((status = 200, description = "The mixture's tensors", content((InferResponse = "application/json"), ("application/octet-stream"))), V2Errors),
    security(("key" = [])))]
pub(super) async fn infer_of(
    State(app): State<Arc<App>>,
    axum::Extension(who): Who,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> V2Result<Response> {
    run(app, who, name, Some(version), headers, body).await
}

/// Splits a body into its JSON header and the binary tensor data after it.
fn split_body(headers: &HeaderMap, body: &Bytes) -> V2Result<(InferRequest, Bytes)> {
    let json_len = match headers.get(HEADER_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n <= body.len())
            .ok_or_else(|| {
                bad(format!(
                    "Inference-Header-Content-Length: expected the JSON header's length in bytes, at most the body's {}",
                    body.len()
                ))
            })?,
        None => body.len(),
    };
    let de = &mut serde_json::Deserializer::from_slice(&body[..json_len]);
    let req: InferRequest = serde_path_to_error::deserialize(de)
        .map_err(|e| bad(format!("request body: {}: {}", e.path(), e.inner())))?;
    Ok((req, body.slice(json_len..)))
}

/// Numbers of a JSON tensor, flattened row-major.
fn flatten(v: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("not a number")?);
            Ok(())
        }
        other => Err(format!("expected numbers, got {other}")),
    }
}

/// The values of input `x`: from its JSON `data`, or its bytes of the binary part.
fn values(input: &InferInput, binary: &mut Bytes) -> V2Result<Vec<f64>> {
    let width = match input.datatype.as_str() {
        "FP32" => 4,
        "FP64" => 8,
        other => {
            return Err(bad(format!(
                "inputs[x].datatype: {other} is not taken; send FP32 (or FP64)"
            )));
        }
    };
    if let Some(size) = input.parameters.get("binary_data_size") {
        let size = size
            .as_u64()
            .filter(|n| *n as usize <= binary.len())
            .ok_or_else(|| {
                bad(format!(
                    "inputs[x].parameters.binary_data_size: {size} is more than the {} bytes after the header",
                    binary.len()
                ))
            })? as usize;
        if !size.is_multiple_of(width) {
            return Err(bad(format!(
                "inputs[x]: {size} bytes is not a whole number of {} values",
                input.datatype
            )));
        }
        let bytes = binary.split_to(size);
        return Ok(if width == 4 {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
                .collect()
        } else {
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        });
    }
    let data = input
        .data
        .as_ref()
        .ok_or_else(|| bad("inputs[x]: no data (neither \"data\" nor binary_data_size)"))?;
    let mut out = Vec::new();
    flatten(data, &mut out).map_err(|e| bad(format!("inputs[x].data: {e}")))?;
    Ok(out)
}

/// The quantile levels asked for in the request's parameters: a list of numbers, or a
/// comma-separated string (`"0.05,0.95"`, what clients that only pass strings can send).
fn levels(parameters: &Map<String, Value>) -> V2Result<Vec<f64>> {
    let Some(q) = parameters.get("quantiles") else {
        return Ok(vec![]);
    };
    let parsed: Option<Vec<f64>> = match q {
        Value::Array(items) => items.iter().map(Value::as_f64).collect(),
        Value::String(s) => s.split(',').map(|p| p.trim().parse::<f64>().ok()).collect(),
        Value::Number(n) => n.as_f64().map(|v| vec![v]),
        _ => None,
    };
    let qs = parsed.ok_or_else(|| {
        bad("parameters.quantiles: expected levels in (0, 1), as a list or \"0.05,0.95\"")
    })?;
    crate::tables::quantile_levels(&qs, None).map_err(|e| bad(format!("parameters.quantiles: {e}")))
}

/// Whether the parameters ask for binary data (`binary_data: true`).
fn wants_binary(p: &Map<String, Value>, key: &str) -> bool {
    p.get(key).and_then(Value::as_bool).unwrap_or(false)
}

async fn run(
    app: Arc<App>,
    who: Arc<Caller>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> V2Result<Response> {
    let r = reference(&name, version.as_deref())?;
    let (req, mut binary) = split_body(&headers, &body)?;
    let (model, resolved) = api::load_model(&app, &who, &r)?;
    let nf = model.features.len();
    let [input] = req.inputs.as_slice() else {
        return Err(bad(format!(
            "inputs: expected one tensor, x [N, {nf}] ({}), got {}",
            model.features.join(", "),
            req.inputs.len()
        )));
    };
    if input.name != "x" {
        return Err(bad(format!(
            "inputs[0].name: expected x (the features {} in order), got {:?}",
            model.features.join(", "),
            input.name
        )));
    }
    let rows = match input.shape.as_slice() {
        [n, d] if *n >= 1 && *d == nf as i64 => *n as usize,
        _ => {
            return Err(bad(format!(
                "inputs[x].shape: expected [N, {nf}] ({}), got {:?}",
                model.features.join(", "),
                input.shape
            )));
        }
    };
    if rows > app.max_request_rows {
        return Err(V2Error(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rows",
            format!(
                "inputs[x] has {rows} rows; this server answers at most {} rows per request (--max-request-rows): send them as several requests",
                app.max_request_rows
            ),
        )));
    }
    let x = values(input, &mut binary)?;
    if x.len() != rows * nf {
        return Err(bad(format!(
            "inputs[x]: {} values for shape [{rows}, {nf}] ({} expected)",
            x.len(),
            rows * nf
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "inputs[x]: row {}, {}: not a finite number",
            i / nf,
            model.features[i % nf]
        )));
    }
    let qs = levels(&req.parameters)?;
    let all_binary = wants_binary(&req.parameters, "binary_data_output");
    let known = outputs(&model, model.arch.components * model.ensemble_size());
    // The outputs asked for, in order, each with whether it goes as binary data.
    let asked: Vec<(String, bool)> = match &req.outputs {
        Some(list) => {
            let mut asked = Vec::new();
            for o in list {
                if !known.iter().any(|(n, _)| *n == o.name) {
                    return Err(bad(format!(
                        "outputs: {:?} is not an output of this model ({})",
                        o.name,
                        known.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                    )));
                }
                if o.name == "quantiles" && qs.is_empty() {
                    return Err(bad(
                        "outputs: quantiles needs parameters.quantiles, the levels (for example [0.05, 0.95])",
                    ));
                }
                asked.push((
                    o.name.clone(),
                    all_binary || wants_binary(&o.parameters, "binary_data"),
                ));
            }
            asked
        }
        None => known
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n != "mode" && (*n != "quantiles" || !qs.is_empty()))
            .map(|n| (n.to_string(), all_binary))
            .collect(),
    };
    let model_version = resolved
        .version
        .as_ref()
        .map(|v| v.1.to_string())
        .unwrap_or_default();
    let id = req.id.clone();
    let tensors = api::blocking(move || {
        let data = Dataset {
            path: "request".into(),
            features: model.features.clone(),
            targets: vec![],
            x: x.iter().map(|&v| v as f32).collect(),
            y: vec![],
            rows,
        };
        let pred = model.predict(&mut CpuBackend::with_threads(1), &data)?;
        Ok(asked
            .into_iter()
            .map(|(n, bin)| {
                let (shape, values) = tensor(&pred, &n, &qs);
                (n, bin, shape, values)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let mut outs = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for (n, bin, shape, values) in tensors {
        let mut t = OutputTensor {
            name: n,
            datatype: "FP32".into(),
            shape,
            data: None,
            parameters: None,
        };
        if bin {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            t.parameters = Some(json!({"binary_data_size": bytes.len()}));
            tail.extend(bytes);
        } else {
            t.data = Some(values);
        }
        outs.push(t);
    }
    let doc = InferResponse {
        model_name: name,
        model_version,
        id,
        outputs: outs,
    };
    let text = serde_json::to_vec(&doc).expect("JSON of numbers");
    let response = if tail.is_empty() {
        ([(header::CONTENT_TYPE, "application/json")], text).into_response()
    } else {
        let len = text.len();
        let mut all = text;
        all.extend(tail);
        let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], all).into_response();
        r.headers_mut()
            .insert(HEADER_LENGTH, HeaderValue::from(len as u64));
        r
    };
    Ok(resolved.tag(response))
}

/// The shape and FP32 values of output `name`.
fn tensor(pred: &Prediction, name: &str, qs: &[f64]) -> (Vec<usize>, Vec<f32>) {
    let (n, k, d) = (pred.rows, pred.k, pred.d);
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    match name {
        "pi" => (vec![n, k], f32s(&pred.pi)),
        "mu" => (vec![n, k, d], f32s(&pred.mu)),
        "sigma" => (vec![n, k, d], f32s(&pred.sigma)),
        "scale_tril" => (vec![n, k, d, d], f32s(&pred.scale_tril)),
        "dof" => (vec![n, k], f32s(&pred.dof)),
        "mean" | "variance" | "mode" => {
            let mut out = Vec::with_capacity(n * d);
            for r in 0..n {
                for j in 0..d {
                    let s = crate::tables::summary(pred, &[], r, j);
                    out.push(match name {
                        "mean" => s.mean,
                        "variance" => s.variance,
                        _ => s.mode,
                    } as f32);
                }
            }
            (vec![n, d], out)
        }
        "quantiles" => {
            let mut out = Vec::with_capacity(n * qs.len() * d);
            for r in 0..n {
                let per_target: Vec<_> = (0..d)
                    .map(|j| crate::tables::summary(pred, qs, r, j))
                    .collect();
                for i in 0..qs.len() {
                    for s in &per_target {
                        out.push(s.quantiles[i] as f32);
                    }
                }
            }
            (vec![n, qs.len(), d], out)
        }
        _ => unreachable!("outputs are checked against the model's"),
    }
}
