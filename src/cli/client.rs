//! Client commands of the training service: `mdn submit`, `jobs`, `status`, `cancel`,
//! `fetch`. They speak the service's HTTP API (docs/service.md) and turn its errors into the
//! CLI's: a 4xx answer exits with 2 and the server's message, an unreachable server with 1.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use mdn::job::{EXAMPLE_CSV, JobEvent, TrainJob};
use mdn::train::{EpochReport, TrainEvent};
use mdn::{Error, Result};

use super::Exit;
use super::args::{
    DeleteArgs, FetchArgs, JobIdArgs, JobsArgs, ListArgs, ModelsArgs, ServerArgs, SubmitArgs,
};
use super::output::{print_json, write_output};
use super::progress::{Progress, interrupt_flag, message};

struct Client {
    base: String,
    token: Option<String>,
    workspace: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(a: &ServerArgs) -> Result<Client> {
        let token = match (&a.token_file, std::env::var("MDN_TOKEN")) {
            (Some(p), _) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| Error::io(p, e))?
                    .trim()
                    .to_string(),
            ),
            (None, Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => None,
        };
        let base = a.server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Error::config(format!(
                "--server {base}: expected a URL such as http://127.0.0.1:7878"
            )));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)));
        if let Some(path) = &a.ca_file {
            use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
            let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(Error::config(format!(
                    "--ca-file {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
                    path.display()
                )));
            }
            config = config.tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::Specific(std::sync::Arc::new(certs)))
                    .build(),
            );
        }
        let agent = config.build().into();
        Ok(Client {
            base,
            token,
            workspace: a.workspace.clone(),
            agent,
        })
    }

    fn unreachable(&self, e: ureq::Error) -> Error {
        Error::Backend(format!(
            "cannot reach the training service at {}: {e} (is `mdn serve` running there?)",
            self.base
        ))
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let r = match &self.workspace {
            Some(w) => r.header("Mdn-Workspace", w),
            None => r,
        };
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn put(&self, path: &str, body: &[u8]) -> Result<Value> {
        let r = self
            .auth(self.agent.put(format!("{}{path}", self.base)))
            .send(body);
        let mut r = self.check(r)?;
        r.body_mut()
            .read_json()
            .map_err(|e| Error::Backend(format!("the service's answer is not JSON: {e}")))
    }

    /// The body of a successful answer; an error answer becomes the server's message.
    fn check(
        &self,
        r: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut r = r.map_err(|e| self.unreachable(e))?;
        let status = r.status().as_u16();
        if status < 400 {
            return Ok(r);
        }
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        let hint = if status == 401 {
            " (give a key with --token-file FILE or MDN_TOKEN; `mdn serve keys add` makes one)"
        } else {
            ""
        };
        let text = format!(
            "the service answered {status}: {}{hint}",
            command_line_terms(&message)
        );
        Err(if status < 500 {
            Error::Config(text)
        } else {
            Error::Backend(text)
        })
    }

    fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .auth(self.agent.get(format!("{}{path}", self.base)))
            .call();
        let mut r = self.check(r)?;
        r.body_mut()
            .read_json()
            .map_err(|e| Error::Backend(format!("the service's answer is not JSON: {e}")))
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<Value> {
        let r = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .send(body);
        let mut r = self.check(r)?;
        r.body_mut()
            .read_json()
            .map_err(|e| Error::Backend(format!("the service's answer is not JSON: {e}")))
    }

    /// A DELETE; the answer's JSON body, if it has one.
    fn delete(&self, path: &str) -> Result<Option<Value>> {
        let r = self
            .auth(self.agent.delete(format!("{}{path}", self.base)))
            .call();
        let mut r = self.check(r)?;
        if r.status().as_u16() == 204 {
            return Ok(None);
        }
        r.body_mut()
            .read_json()
            .map(Some)
            .map_err(|e| Error::Backend(format!("the service's answer is not JSON: {e}")))
    }

    /// Uploads a data set: its row, and whether this upload stored it (false: the service
    /// had the same bytes already, as that data set).
    fn upload(&self, path: &str, body: &[u8]) -> Result<(Value, bool)> {
        let r = self
            .auth(self.agent.post(format!("{}{path}", self.base)))
            .send(body);
        let mut r = self.check(r)?;
        let stored = r.status().as_u16() == 201;
        let v = r
            .body_mut()
            .read_json()
            .map_err(|e| Error::Backend(format!("the service's answer is not JSON: {e}")))?;
        Ok((v, stored))
    }

    fn download(&self, path: &str) -> Result<Vec<u8>> {
        let r = self
            .auth(self.agent.get(format!("{}{path}", self.base)))
            .call();
        let mut r = self.check(r)?;
        r.body_mut()
            .with_config()
            .limit(1 << 32)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))
    }
}

/// The options of a job as the service takes them: what differs from `mdn train`'s
/// defaults, without what the service sets itself.
fn options(job: &TrainJob) -> serde_json::Map<String, Value> {
    let given = serde_json::to_value(job).expect("job");
    let default = serde_json::to_value(TrainJob::default()).expect("job");
    let mut out = serde_json::Map::new();
    for (k, v) in given.as_object().expect("object") {
        let set_by_service = mdn::serve::api::SERVICE_OPTIONS.iter().any(|(s, _)| s == k);
        if !set_by_service && default.get(k) != Some(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

pub fn submit(a: SubmitArgs) -> Result<Exit> {
    let c = Client::new(&a.server)?;
    let job = a.train.job();
    for (what, given) in [
        ("--checkpoint", job.checkpoint.is_some()),
        ("--checkpoint-every", job.checkpoint_every.is_some()),
        ("--resume", job.resume.is_some()),
    ] {
        if given {
            return Err(Error::config(format!(
                "{what} is not for `mdn submit`: the service checkpoints running jobs and resumes them by itself"
            )));
        }
    }
    // Options, columns and where the model goes are checked here first: a mistake costs no
    // upload.
    job.check_options()?;
    if a.wait {
        let out = a.train.out.clone().unwrap_or_else(|| "model.json".into());
        mdn::atomic::check_writable(&out, "--out")?;
    }
    let choice = mdn::data::ColumnChoice::Train {
        targets: (!job.target.is_empty()).then(|| job.target.clone()),
        features: (!job.features.is_empty()).then(|| job.features.clone()),
    };
    let (features, targets) = match &job.data {
        Some(p) => choice.names(&mdn::data::header(p)?, p)?,
        None => {
            let text = String::from_utf8_lossy(EXAMPLE_CSV);
            let header = text.lines().next().unwrap_or_default();
            let header: Vec<String> = header.split(',').map(str::to_string).collect();
            choice.names(&header, Path::new("bishop.csv"))?
        }
    };
    // The validation file has the training columns, targets included.
    if let Some(v) = &job.val {
        mdn::data::ColumnChoice::exactly(features, targets).names(&mdn::data::header(v)?, v)?;
    }
    let ds_id = upload_dataset(&c, job.data.as_deref(), a.train.quiet)?;
    let val_id = match &job.val {
        Some(v) => Some(upload_dataset(&c, Some(v), a.train.quiet)?),
        None => None,
    };
    if let Some(v) = &job.val
        && val_id.as_deref() == Some(ds_id.as_str())
    {
        return Err(Error::config(format!(
            "--val {}: the same data as --data, whose rows would be trained on and validated on: give other rows, or leave --val out to hold out --val-fraction of --data",
            v.display()
        )));
    }
    let mut req = json!({"dataset": ds_id, "options": options(&job)});
    if !job.target.is_empty() {
        req["target"] = json!(job.target);
    }
    if !job.features.is_empty() {
        req["features"] = json!(job.features);
    }
    if let Some(name) = &a.register {
        req["register"] = json!(name);
    }
    if let Some(v) = val_id {
        req["val_dataset"] = json!(v);
    }
    // A job the service refuses leaves its data set there: another client may have uploaded
    // the same file meanwhile (it is one data set), and the next submission of this file, its
    // options corrected, uses it without uploading.
    let sub = c.post("/v1/jobs", req.to_string().as_bytes())?;
    let id = sub["id"].as_str().unwrap_or_default().to_string();
    if !a.wait {
        if a.train.json {
            return print_json(&sub).map(|_| Exit::Success);
        }
        write_output(None, format!("{id}\n").as_bytes())?;
        return Ok(Exit::Success);
    }
    if !a.train.quiet {
        message(&format!("job {id} queued on {}", c.base));
    }
    follow(&c, &id, &a)
}

/// Uploads `data` (the shipped example when None) as a data set, unless the service has the
/// same bytes already; returns the data set's id.
fn upload_dataset(c: &Client, data: Option<&Path>, quiet: bool) -> Result<String> {
    let (bytes, name) = match data {
        Some(p) => (
            std::fs::read(p).map_err(|e| Error::io(p, e))?,
            p.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "data".into()),
        ),
        None => (EXAMPLE_CSV.to_vec(), "bishop.csv".to_string()),
    };
    let mut query = format!("?name={}", urlencode(&name));
    let npy = data.is_some_and(mdn::data::is_npy);
    let mut npy_names: Option<Vec<String>> = None;
    if let Some(p) = data
        && npy
    {
        let names = mdn::npy::columns_path(p);
        if let Ok(text) = std::fs::read_to_string(&names) {
            let cols: Vec<String> = serde_json::from_str(&text).map_err(|e| {
                Error::config(format!(
                    "{}: not a JSON array of names ({e})",
                    names.display()
                ))
            })?;
            query.push_str(&format!("&columns={}", urlencode(&cols.join(","))));
            npy_names = Some(cols);
        }
    }
    // The service may have these bytes already (an earlier submission of the file): then
    // nothing is uploaded.
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let known = c
        .get(&format!("/v1/datasets?sha256={sha}"))
        .ok()
        .and_then(|v| {
            v["datasets"]
                .as_array()?
                .iter()
                .find(|d| {
                    let columns = strings(&d["columns"]);
                    let same_names = match (&npy_names, npy) {
                        (Some(names), _) => columns == *names,
                        // Without a names file the service numbers an .npy's columns.
                        (None, true) => {
                            columns.iter().enumerate().all(|(i, c)| *c == i.to_string())
                        }
                        (None, false) => true,
                    };
                    d["sha256"] == sha.as_str()
                        && d["format"] == if npy { "npy" } else { "csv" }
                        && same_names
                })
                .cloned()
        });
    let (ds, stored) = match known {
        Some(ds) => (ds, false),
        None => c.upload(&format!("/v1/datasets{query}"), &bytes)?,
    };
    let ds_id = ds["id"].as_str().unwrap_or_default().to_string();
    if !quiet {
        message(&if stored {
            format!(
                "uploaded {name}: dataset {ds_id}, {} rows, columns {}",
                ds["rows"], ds["columns"]
            )
        } else {
            // Its messages name it as it was first uploaded.
            let first = ds["name"].as_str().filter(|n| *n != name);
            format!(
                "{name} is on the service already: dataset {ds_id}{}, {} rows, columns {}",
                first
                    .map(|n| format!(" (uploaded as {n})"))
                    .unwrap_or_default(),
                ds["rows"],
                ds["columns"]
            )
        });
    }
    Ok(ds_id)
}

/// How long a followed job waits in the queue before `mdn submit --wait` says so.
const QUEUED_NOTE_SECS: u64 = 30;

/// Follows a job's events with `mdn train`'s progress; Ctrl-C cancels the job (its best
/// model is kept) and goes on following it to the end.
fn follow(c: &Client, id: &str, a: &SubmitArgs) -> Result<Exit> {
    let stop = interrupt_flag();
    let mut cancelled = false;
    let mut progress = Progress::new(a.train.quiet);
    let r = c
        .auth(c.agent.get(format!("{}/v1/jobs/{id}/events", c.base)))
        .call();
    let mut r = c.check(r)?;
    let reader = BufReader::new(r.body_mut().as_reader());
    let mut last = json!({});
    // A job no worker takes (none running, or others first) says so once, not silence: the
    // stream's keep-alive lines come every 15 s.
    let queued_at = std::time::Instant::now();
    let (mut started, mut told) = (false, false);
    for line in reader.lines() {
        let line = line.map_err(|e| Error::Backend(format!("the event stream broke off: {e}")))?;
        if !started && !told && queued_at.elapsed() >= Duration::from_secs(QUEUED_NOTE_SECS) {
            told = true;
            progress.job(&JobEvent::Note(&format!(
                "job {id} is still queued after {QUEUED_NOTE_SECS} s: no worker has taken it (jobs \
                 before it run first, or no `mdn serve` with workers is running; `mdn jobs` shows \
                 the queue). Waiting; Ctrl-C cancels it"
            )));
        }
        if stop.load(std::sync::atomic::Ordering::Relaxed) && !cancelled {
            cancelled = true;
            progress.job(&JobEvent::Note(if a.train.epochs.is_some() {
                "cancelling the job (it keeps the model of its last finished epoch: --epochs \
                 keeps the last, not the best)"
            } else {
                "cancelling the job (it keeps its best model so far)"
            }));
            c.post(&format!("/v1/jobs/{id}/cancel"), b"")?;
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(e) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match e["type"].as_str() {
            Some("epoch") => {
                let f = |k: &str| e[k].as_f64();
                let report = EpochReport {
                    epoch: e["epoch"].as_u64().unwrap_or(0) as usize,
                    max_epochs: e["max_epochs"].as_u64().unwrap_or(0) as usize,
                    train_nll: f("train_nll").unwrap_or(f64::NAN),
                    val_nll: f("val_nll"),
                    best_val_nll: f("best_val_nll"),
                    best_epoch: e["best_epoch"].as_u64().unwrap_or(0) as usize,
                    rows_per_sec: f("rows_per_sec").unwrap_or(0.0),
                    seconds: f("seconds").unwrap_or(0.0),
                    eta_seconds: f("eta_seconds").unwrap_or(0.0),
                };
                progress.job(&JobEvent::Train(&TrainEvent::Epoch(report)));
            }
            Some("started") => {
                let p = &e["plan"];
                progress.job(&JobEvent::Note(&format!(
                    "training on the service's {} backend: {} -> {}, hidden {}, K={}, batch {}",
                    p["backend"].as_str().unwrap_or("?"),
                    p["features"],
                    p["targets"],
                    p["hidden"],
                    p["components"],
                    p["batch_size"]
                )));
            }
            Some("warning") => {
                progress.job(&JobEvent::Warning(e["message"].as_str().unwrap_or("")))
            }
            Some("note") => progress.job(&JobEvent::Note(e["message"].as_str().unwrap_or(""))),
            Some("resuming") => progress.job(&JobEvent::Note(&format!(
                "resuming after epoch {} (the service restarted)",
                e["epoch"]
            ))),
            Some("status") => {
                started |= e["status"] != "queued";
                last = e
            }
            _ => {}
        }
    }
    progress.finish();
    let status = last["status"].as_str().unwrap_or("unknown").to_string();
    match status.as_str() {
        "succeeded" | "cancelled" if last["model"].is_string() => {
            let model = last["model"].as_str().unwrap_or_default();
            let bytes = c.download(&format!("/v1/models/{model}"))?;
            let out = a.train.out.clone().unwrap_or_else(|| "model.json".into());
            write_output(Some(&out), &bytes)?;
            if !a.train.quiet {
                let registered = match (
                    last["registered"]["name"].as_str(),
                    last["registered"]["version"].as_u64(),
                ) {
                    (Some(n), Some(v)) => format!(", registered as {n}:{v}"),
                    _ => String::new(),
                };
                message(&format!(
                    "job {id} {status}: wrote {} (model {model}{registered})",
                    out.display()
                ));
            }
            if a.train.json {
                print_json(&c.get(&format!("/v1/jobs/{id}"))?)?;
            }
            Ok(if status == "cancelled" {
                Exit::Interrupted
            } else {
                Exit::Success
            })
        }
        "cancelled" => Err(Error::Interrupted(format!(
            "job {id} was cancelled before its first epoch: no model"
        ))),
        "failed" => {
            let text = format!(
                "job {id} failed: {}",
                command_line_terms(last["error"].as_str().unwrap_or("no reason given"))
            );
            // The job's data or options: exit 2, as `mdn train` would.
            Err(if last["cause"] == "input" {
                Error::Config(text)
            } else {
                Error::Backend(text)
            })
        }
        other => Err(Error::Backend(format!(
            "the event stream of job {id} ended with the job {other}: the service stopped or the \
             connection broke; the job goes on when the service runs (`mdn status {id}` shows it, \
             `mdn fetch {id}` downloads its model once it has one)"
        ))),
    }
}

/// The service's words for a job's options (`options.batch_size`) as `mdn submit`'s user
/// gives them (`--batch-size`).
fn command_line_terms(message: &str) -> String {
    let message = &routes_as_commands(message);
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(at) = rest.find("options.") {
        let (before, after) = rest.split_at(at);
        let name = &after["options.".len()..];
        let len = name
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(name.len());
        out.push_str(before);
        if len == 0 {
            out.push_str("options.");
        } else {
            out.push_str("--");
            out.push_str(&name[..len].replace('_', "-"));
        }
        rest = &name[len..];
    }
    out.push_str(rest);
    out
}

/// The API calls a service message suggests, as the commands that make them:
/// `POST /v1/jobs/ID/cancel` is `mdn cancel ID`, `DELETE /v1/registry/NAME/versions/N` is
/// `mdn delete NAME:N`.
fn routes_as_commands(message: &str) -> String {
    // An id or name, not a route's template (`{id}`: a message about the route itself).
    let concrete = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    let mut s = message.to_string();
    let mut from = 0;
    const CANCEL: (&str, &str) = ("POST /v1/jobs/", "/cancel");
    while let Some(at) = s[from..].find(CANCEL.0) {
        let i = from + at;
        let rest = &s[i + CANCEL.0.len()..];
        let Some(end) = rest.find(CANCEL.1).filter(|&e| concrete(&rest[..e])) else {
            from = i + CANCEL.0.len();
            continue;
        };
        let command = format!("mdn cancel {}", &rest[..end]);
        s.replace_range(i..i + CANCEL.0.len() + end + CANCEL.1.len(), &command);
        from = i + command.len();
    }
    let mut from = 0;
    const VERSION: (&str, &str) = ("DELETE /v1/registry/", "/versions/");
    while let Some(at) = s[from..].find(VERSION.0) {
        let i = from + at;
        let rest = &s[i + VERSION.0.len()..];
        let Some(mid) = rest.find(VERSION.1).filter(|&m| concrete(&rest[..m])) else {
            from = i + VERSION.0.len();
            continue;
        };
        let after = &rest[mid + VERSION.1.len()..];
        let len = after
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(after.len());
        if len == 0 {
            from = i + VERSION.0.len();
            continue;
        }
        let version = match &after[..len] {
            "N" => "VERSION",
            v => v,
        };
        let command = format!("mdn delete {}:{version}", &rest[..mid]);
        s.replace_range(
            i..i + VERSION.0.len() + mid + VERSION.1.len() + len,
            &command,
        );
        from = i + command.len();
    }
    s
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a job keeps its last epoch's model (a fixed number of epochs) rather than its
/// best epoch's.
fn keeps_last(j: &Value) -> bool {
    j["request"]["options"]["epochs"].is_u64()
}

/// The validation NLL of the model a job keeps and which epoch's it is: the last epoch's
/// with a fixed number of epochs (`2.7012 last`), otherwise the best one's (`2.6194 @7`).
fn kept_nll(j: &Value) -> String {
    if keeps_last(j) {
        match j["val_nll"].as_f64() {
            Some(v) => format!("{v:.4} last"),
            None => "-".into(),
        }
    } else {
        match (j["best_val_nll"].as_f64(), j["best_epoch"].as_u64()) {
            (Some(v), Some(e)) => format!("{v:.4} @{e}"),
            _ => "-".into(),
        }
    }
}

fn cell(v: &Value, digits: usize) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.digits$}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn jobs(a: JobsArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    let path = match &a.status {
        Some(s) => format!("/v1/jobs?status={}", urlencode(s)),
        None => "/v1/jobs".into(),
    };
    let v = c.get(&path)?;
    if a.json {
        return print_json(&v);
    }
    // "val NLL": the validation NLL of the model the job keeps (the best epoch's, or with
    // --epochs the last one's), and which epoch that is.
    let mut out = format!(
        "{:<22} {:<10} {:>13} {:>15} {:>10}  {:<8} {}\n",
        "job", "status", "epoch", "val NLL", "rows/s", "device", "worker"
    );
    for j in v["jobs"].as_array().into_iter().flatten() {
        let epoch = match (j["epoch"].as_u64(), j["max_epochs"].as_u64()) {
            (Some(e), Some(m)) => format!("{e}/{m}"),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<22} {:<10} {:>13} {:>15} {:>10}  {:<8} {}\n",
            cell(&j["id"], 0),
            cell(&j["status"], 0),
            epoch,
            kept_nll(j),
            j["rows_per_sec"]
                .as_f64()
                .map(|r| format!("{:.0}", r))
                .unwrap_or_else(|| "-".into()),
            cell(&j["device"], 0),
            cell(&j["worker"], 0)
        ));
    }
    write_output(None, out.as_bytes())
}

pub fn status(a: JobIdArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    let j = c.get(&format!("/v1/jobs/{}", urlencode(&a.id)))?;
    if a.json {
        return print_json(&j);
    }
    let mut out = String::new();
    for k in [
        "id",
        "status",
        "dataset",
        "device",
        "worker",
        "epoch",
        "max_epochs",
        "train_nll",
        "val_nll",
        "best_epoch",
        "best_val_nll",
        "rows_per_sec",
        "eta_seconds",
        "attempts",
        "model",
        "error",
    ] {
        if !j[k].is_null() {
            out.push_str(&format!("{k:<13} {}\n", cell(&j[k], 4)));
        }
    }
    write_output(None, out.as_bytes())
}

pub fn cancel(a: JobIdArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    let v = c.post(&format!("/v1/jobs/{}/cancel", urlencode(&a.id)), b"")?;
    if a.json {
        return print_json(&v);
    }
    let text = if v["status"] == "cancelled" {
        format!("job {} cancelled before it started\n", a.id)
    } else if c
        .get(&format!("/v1/jobs/{}", urlencode(&a.id)))
        .is_ok_and(|j| keeps_last(&j))
    {
        format!(
            "job {} stops after its current epoch and keeps that epoch's model (with --epochs the \
             last epoch's, not the best one's)\n",
            a.id
        )
    } else {
        format!(
            "job {} stops after its current epoch and keeps its best model so far\n",
            a.id
        )
    };
    write_output(None, text.as_bytes())
}

/// What an id given to `mdn delete` names, and its path in the API.
fn deletion(id: &str) -> Result<(&'static str, String)> {
    let path = |kind: &str| format!("/v1/{kind}/{}", urlencode(id));
    if id.starts_with("job_") {
        Ok(("job", path("jobs")))
    } else if id.starts_with("m_") {
        Ok(("model", path("models")))
    } else if id.starts_with("ds_") {
        Ok(("data set", path("datasets")))
    } else if let Some((name, version)) = id.rsplit_once(':')
        && !name.is_empty()
        && version.parse::<u32>().is_ok_and(|v| v >= 1)
    {
        Ok((
            "version",
            format!("/v1/registry/{}/versions/{version}", urlencode(name)),
        ))
    } else {
        let hint = if id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            format!(" (a registered name's versions: {id}:VERSION; `mdn models {id}` lists them)")
        } else {
            String::new()
        };
        Err(Error::config(format!(
            "{id:?}: expected a job id (job_...), a model id (m_...), a data set id (ds_...) or a registered version (NAME:VERSION){hint}"
        )))
    }
}

/// `mdn delete`: every id understood and found before anything is deleted, then each in
/// turn; one that fails then is reported and the rest still go.
pub fn delete(a: DeleteArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    let mut ids: Vec<&String> = Vec::new();
    for id in &a.ids {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let targets = ids
        .iter()
        .map(|id| deletion(id))
        .collect::<Result<Vec<_>>>()?;
    for (id, (what, path)) in ids.iter().zip(&targets) {
        let found = if *what == "model" {
            // Its headers only: the model file is not needed.
            let r = c.auth(c.agent.head(format!("{}{path}", c.base))).call();
            c.check(r).map(|_| ())
        } else {
            c.get(path).map(|_| ())
        };
        match found {
            Err(Error::Config(m)) if m.starts_with("the service answered 404") => {
                return Err(Error::config(format!(
                    "{what} {id} does not exist: nothing was deleted"
                )));
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
    }
    let mut failed: Option<Error> = None;
    // Models deleted with their jobs: (model, job).
    let mut with_job: Vec<(String, String)> = Vec::new();
    for (id, (what, path)) in ids.iter().zip(targets) {
        if let Some((_, job)) = with_job.iter().find(|(m, _)| m == *id) {
            write_output(
                None,
                format!("model {id} was deleted with job {job}\n").as_bytes(),
            )?;
            continue;
        }
        match c.delete(&path) {
            Ok(answer) => {
                let answer = answer.unwrap_or(Value::Null);
                if let Some(m) = answer["deleted_model"].as_str() {
                    with_job.push((m.to_string(), id.to_string()));
                }
                let line = match (
                    answer["deleted_model"].as_str(),
                    answer["kept_model"].as_str(),
                ) {
                    (Some(m), _) => format!("deleted {what} {id} and its model {m}\n"),
                    (None, Some(m)) => format!(
                        "deleted {what} {id}; its model {m} stays, registered (delete its versions, then the model)\n"
                    ),
                    (None, None) => format!("deleted {what} {id}\n"),
                };
                write_output(None, line.as_bytes())?;
            }
            Err(e) => {
                if let Some(earlier) = failed.replace(e) {
                    message(&format!("error: {earlier}"));
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

pub fn fetch(a: FetchArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    let model = if a.id.starts_with("job_") {
        let j = c.get(&format!("/v1/jobs/{}", urlencode(&a.id)))?;
        match j["model"].as_str() {
            Some(m) => m.to_string(),
            None => {
                return Err(Error::config(format!(
                    "job {} has no model (it is {})",
                    a.id,
                    j["status"].as_str().unwrap_or("?")
                )));
            }
        }
    } else {
        a.id.clone()
    };
    let bytes = match c.download(&format!("/v1/models/{}", urlencode(&model))) {
        Err(Error::Config(m)) if m.starts_with("the service answered 404") && model != a.id => {
            return Err(Error::config(format!(
                "job {}'s model {model} was deleted (`mdn delete`)",
                a.id
            )));
        }
        r => r?,
    };
    write_output(Some(&a.out), &bytes)?;
    message(&format!("wrote {} (model {model})", a.out.display()));
    Ok(())
}

/// The strings of a JSON array (none for anything else).
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// A size in binary units, as quotas are set.
fn size(bytes: &Value) -> String {
    let b = bytes.as_f64().unwrap_or(0.0);
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{:.1} GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.1} MiB", b / (1u64 << 20) as f64),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

/// `mdn datasets`.
pub fn datasets(a: ListArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    let v = c.get("/v1/datasets")?;
    if a.json {
        return print_json(&v);
    }
    let mut out = format!(
        "{:<22} {:<24} {:>9} {:>10}  {}\n",
        "dataset", "name", "rows", "size", "columns"
    );
    for d in v["datasets"].as_array().into_iter().flatten() {
        let columns = strings(&d["columns"]);
        out.push_str(&format!(
            "{:<22} {:<24} {:>9} {:>10}  {}\n",
            cell(&d["id"], 0),
            mdn::bench::truncate(d["name"].as_str().unwrap_or("-"), 24),
            cell(&d["rows"], 0),
            size(&d["bytes"]),
            mdn::bench::truncate(&columns.join(","), 60)
        ));
    }
    write_output(None, out.as_bytes())
}

pub fn models(a: ModelsArgs) -> Result<()> {
    let c = Client::new(&a.server)?;
    if a.all {
        let v = c.get("/v1/models")?;
        if a.json {
            return print_json(&v);
        }
        let mut out = format!(
            "{:<22} {:<24} {:>10}  {}\n",
            "model", "job", "size", "versions"
        );
        for m in v["models"].as_array().into_iter().flatten() {
            let versions = strings(&m["versions"]);
            out.push_str(&format!(
                "{:<22} {:<24} {:>10}  {}\n",
                cell(&m["id"], 0),
                cell(&m["job"], 0),
                size(&m["bytes"]),
                if versions.is_empty() {
                    "-".to_string()
                } else {
                    versions.join(" ")
                }
            ));
        }
        return write_output(None, out.as_bytes());
    }
    let Some(name) = &a.name else {
        let v = c.get("/v1/registry")?;
        if a.json {
            return print_json(&v);
        }
        let mut out = format!(
            "{:<24} {:>7} {:>8}  {}\n",
            "name", "latest", "versions", "aliases"
        );
        for m in v["models"].as_array().into_iter().flatten() {
            let aliases: Vec<String> = m["aliases"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(a, v)| format!("{a}={v}"))
                .collect();
            out.push_str(&format!(
                "{:<24} {:>7} {:>8}  {}\n",
                cell(&m["name"], 0),
                // A name whose versions were all deleted has none to call latest.
                if m["versions"] == 0 {
                    "-".into()
                } else {
                    cell(&m["latest"], 0)
                },
                cell(&m["versions"], 0),
                if aliases.is_empty() {
                    "-".into()
                } else {
                    aliases.join(" ")
                }
            ));
        }
        return write_output(None, out.as_bytes());
    };
    let path = format!("/v1/registry/{}", urlencode(name));
    if let Some(spec) = &a.alias {
        let (alias, version) = spec
            .split_once('=')
            .and_then(|(a, v)| Some((a, v.parse::<u32>().ok()?)))
            .ok_or_else(|| {
                Error::config(format!(
                    "--alias {spec}: expected ALIAS=VERSION, such as production=3"
                ))
            })?;
        c.put(
            &format!("{path}/aliases/{}", urlencode(alias)),
            json!({"version": version}).to_string().as_bytes(),
        )?;
        message(&format!("{name}@{alias} is version {version}"));
    }
    let v = c.get(&path)?;
    if a.json {
        return print_json(&v);
    }
    let mut out = format!(
        "{:>7}  {:<22} {:<22} {:<20} {}\n",
        "version", "model", "job", "aliases", "tags"
    );
    for r in v["versions"].as_array().into_iter().flatten() {
        let list = |k: &str| {
            let items = strings(&r[k]);
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(",")
            }
        };
        out.push_str(&format!(
            "{:>7}  {:<22} {:<22} {:<20} {}\n",
            cell(&r["version"], 0),
            cell(&r["model"], 0),
            cell(&r["job"], 0),
            list("aliases"),
            list("tags")
        ));
    }
    write_output(None, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::command_line_terms;

    #[test]
    fn the_services_option_names_came_back_to_submit_in_the_services_words() {
        assert_eq!(
            command_line_terms(
                "b.csv:3:2: missing value; 1 of 9 rows (options.drop_missing leaves them out)"
            ),
            "b.csv:3:2: missing value; 1 of 9 rows (--drop-missing leaves them out)"
        );
        assert_eq!(
            command_line_terms("options.batch_size 9 is more than options.l2 and options."),
            "--batch-size 9 is more than --l2 and options."
        );
    }

    #[test]
    fn the_services_hints_named_api_calls_to_a_command_line_user() {
        assert_eq!(
            command_line_terms(
                "job job_1 is running: cancel it first (POST /v1/jobs/job_1/cancel), then delete it"
            ),
            "job job_1 is running: cancel it first (mdn cancel job_1), then delete it"
        );
        assert_eq!(
            command_line_terms(
                "model m_1 is registered as a:1, b.c:2: delete those versions first (DELETE /v1/registry/a/versions/1), then the model"
            ),
            "model m_1 is registered as a:1, b.c:2: delete those versions first (mdn delete a:1), then the model"
        );
        assert_eq!(
            command_line_terms(
                "by its id, after its versions (DELETE /v1/registry/NAME/versions/N)"
            ),
            "by its id, after its versions (mdn delete NAME:VERSION)"
        );
        assert_eq!(
            command_line_terms("POST /v1/jobs/ alone"),
            "POST /v1/jobs/ alone"
        );
        // A route's template stays: the message is about the route (a key's scope).
        assert_eq!(
            command_line_terms("this key's scope is read; POST /v1/jobs/{id}/cancel needs write"),
            "this key's scope is read; POST /v1/jobs/{id}/cancel needs write"
        );
        assert_eq!(
            command_line_terms("DELETE /v1/registry/{name}/versions/{version} needs write"),
            "DELETE /v1/registry/{name}/versions/{version} needs write"
        );
    }
}
