//! Several `mdn serve` processes on one PostgreSQL store, as an operator runs them on a
//! handful of machines: API processes (`--api`) and workers (`--worker`) started as the real
//! binary, the store a real PostgreSQL server (a throwaway cluster, skipped with a note where
//! PostgreSQL is not installed, a failure under `MDN_REQUIRE_POSTGRES=1`), the files in one
//! directory they all see. Workers are killed with SIGKILL, paused with SIGSTOP, and raced.

mod common;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{MDN, Server, asset, cli_train};
use serde_json::{Value, json};

/// One store (a fresh PostgreSQL database) and its files directory.
struct Cluster {
    url: String,
    files: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Option<Cluster> {
        Some(Cluster {
            url: common::postgres::server()?.database(),
            files: tempfile::tempdir().unwrap(),
        })
    }

    fn args(&self, role: &str, extra: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            role.into(),
            "--store".into(),
            self.url.clone().into(),
            "--files".into(),
            self.files.path().into(),
        ];
        a.extend(extra.iter().map(OsString::from));
        a
    }

    /// An API process (no workers).
    fn api(&self, extra: &[&str]) -> Server {
        Server::spawn(&self.args("--api", extra), &[])
    }

    /// A worker process (no HTTP).
    fn worker(&self, extra: &[&str]) -> Server {
        Server::spawn(&self.args("--worker", extra), &[])
    }
}

fn signal(s: &Server, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Whether job `j` runs on process `s`.
fn runs_on(j: &Value, s: &Server) -> bool {
    j["status"] == "running"
        && j["worker"]
            .as_str()
            .is_some_and(|w| w.split(':').nth(1) == Some(&s.child.id().to_string()))
}

fn model(s: &Server, job: &Value) -> Value {
    let (st, m) = s.json(
        "GET",
        &format!("/v1/models/{}", job["model"].as_str().unwrap()),
        None,
    );
    assert_eq!(st, 200, "{m}");
    m
}

/// After the last `running` status, epochs follow one another with nothing from another
/// attempt in between.
fn assert_one_writer_after_takeover(events: &[Value]) {
    let last_start = events
        .iter()
        .rposition(|e| e["type"] == "status" && e["status"] == "running")
        .expect("a running event");
    let epochs: Vec<u64> = events[last_start..]
        .iter()
        .filter(|e| e["type"] == "epoch")
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert!(
        epochs.windows(2).all(|w| w[1] == w[0] + 1),
        "epochs after the takeover: {epochs:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn four_workers_racing_over_200_jobs_run_each_exactly_once_and_lose_none() {
    let Some(c) = Cluster::new() else { return };
    let api = c.api(&[]);
    let ds = api.upload(&asset("bishop.csv"), "bishop.csv");
    let ds = ds["id"].as_str().unwrap().to_string();
    let workers: Vec<Server> = (0..4).map(|_| c.worker(&["--max-running", "1"])).collect();
    // Submitted while the workers already take them.
    let ids: Vec<String> = (0..200)
        .map(|i| {
            api.submit(
                &ds,
                json!({"epochs": 1, "hidden": "4", "components": 1, "seed": i}),
            )
        })
        .collect();
    let t0 = Instant::now();
    let jobs = loop {
        let (_, v) = api.json("GET", "/v1/jobs", None);
        let jobs = v["jobs"].as_array().unwrap().clone();
        if jobs
            .iter()
            .all(|j| j["status"] != "queued" && j["status"] != "running")
        {
            break jobs;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "jobs stuck");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(jobs.len(), 200);
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        assert_eq!(
            (j["status"].as_str(), j["attempts"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{j}"
        );
        assert!(ids.contains(&j["id"].as_str().unwrap().to_string()));
    }
    for id in &ids {
        let events = api.events(id);
        let running: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "status" && e["status"] == "running")
            .collect();
        assert_eq!(running.len(), 1, "{id} ran more than once: {events:?}");
        *by_worker
            .entry(running[0]["worker"].as_str().unwrap().to_string())
            .or_default() += 1;
        let m = model(&api, &api.job(id));
        assert!(m["params"].is_array());
    }
    assert!(
        by_worker.len() >= 2,
        "the four workers shared the jobs: {by_worker:?}"
    );
    drop(workers);
}

#[test]
fn a_worker_killed_mid_epoch_has_its_job_finished_by_another_with_the_same_bits() {
    let Some(c) = Cluster::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fast = ["--lease-seconds", "2", "--checkpoint-seconds", "0"];
    let api = c.api(&fast);
    let mut a = c.worker(&fast);
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let id = api.submit(
        ds["id"].as_str().unwrap(),
        json!({"epochs": 150, "seed": 11, "hidden": "32"}),
    );
    api.wait(&id, |j| {
        runs_on(j, &a) && j["epoch"].as_u64().unwrap_or(0) >= 20
    });
    a.kill();
    let b = c.worker(&fast);
    let j = api.finished(&id);
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{j}"
    );
    let cli = cli_train(
        dir.path(),
        &asset("bishop.csv"),
        &["--epochs", "150", "--seed", "11", "--hidden", "32"],
    );
    assert_eq!(
        model(&api, &j)["params"],
        cli["params"],
        "the job finished on another worker differs from mdn train"
    );
    let events = api.events(&id);
    assert!(events.iter().any(|e| e["type"] == "resuming"), "{events:?}");
    assert!(
        events.iter().any(|e| e["status"] == "queued"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("worker stopped"))),
        "{events:?}"
    );
    assert_one_writer_after_takeover(&events);
    // Nothing of the finished job's checkpoints is left.
    assert_eq!(
        std::fs::read_dir(c.files.path().join("jobs"))
            .unwrap()
            .count(),
        0
    );
    drop(b);
}

#[test]
fn a_worker_paused_past_its_lease_writes_nothing_when_it_continues() {
    let Some(c) = Cluster::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fast = ["--lease-seconds", "2", "--checkpoint-seconds", "0"];
    let api = c.api(&fast);
    let a = c.worker(&fast);
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let opts = json!({"epochs": 300, "seed": 3, "hidden": "32"});
    let id = api.submit(ds["id"].as_str().unwrap(), opts);
    api.wait(&id, |j| {
        runs_on(j, &a) && j["epoch"].as_u64().unwrap_or(0) >= 10
    });
    signal(&a, "-STOP");
    let b = c.worker(&fast);
    api.wait(&id, |j| {
        runs_on(j, &b) && j["epoch"].as_u64().unwrap_or(0) >= 40
    });
    signal(&a, "-CONT");
    let j = api.finished(&id);
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{j}"
    );
    // The paused worker found out at its first write, and stopped.
    let t0 = Instant::now();
    while !a.log.lock().unwrap().contains("lost its lease") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the paused worker never noticed: {}",
            a.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = api.events(&id);
    assert_one_writer_after_takeover(&events);
    let cli = cli_train(
        dir.path(),
        &asset("bishop.csv"),
        &["--epochs", "300", "--seed", "3", "--hidden", "32"],
    );
    assert_eq!(model(&api, &j)["params"], cli["params"]);
    // And it still takes work.
    let ds2 = api.upload(&asset("bishop.csv"), "b2.csv");
    drop(b);
    let id2 = api.submit(ds2["id"].as_str().unwrap(), json!({"epochs": 2}));
    let j2 = api.finished(&id2);
    assert_eq!(j2["status"], "succeeded", "{j2}");
}

#[test]
fn a_slow_worker_that_keeps_renewing_is_never_rescued() {
    let Some(c) = Cluster::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Epochs of about 2-3 s against a lease of 1 s: the heartbeat keeps it.
    let data = dir.path().join("wide.csv");
    let st = Command::new(MDN)
        .args([
            "generate", "--kind", "wide", "--rows", "30000", "--quiet", "--out",
        ])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    let api = c.api(&["--lease-seconds", "1"]);
    let w = c.worker(&["--lease-seconds", "1"]);
    let ds = api.upload(&data, "wide.csv");
    let id = api.submit(
        ds["id"].as_str().unwrap(),
        json!({"epochs": 3, "hidden": "1024,1024"}),
    );
    let j = api.finished(&id);
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{j}"
    );
    let events = api.events(&id);
    let epochs: Vec<f64> = events
        .iter()
        .filter(|e| e["type"] == "epoch")
        .map(|e| e["seconds"].as_f64().unwrap())
        .collect();
    assert!(
        epochs.iter().any(|&s| s > 1.0),
        "the epochs were not longer than the lease: {epochs:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["status"] == "queued" && e["reason"].is_string())
    );
    drop(w);
}

#[test]
fn a_job_that_kills_its_worker_every_time_ends_failed_with_the_reason() {
    let Some(c) = Cluster::new() else { return };
    let opts = ["--lease-seconds", "1", "--max-attempts", "2"];
    let api = c.api(&opts);
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let id = api.submit(ds["id"].as_str().unwrap(), json!({"epochs": 100000}));
    for attempt in 1..=2 {
        let mut w = c.worker(&opts);
        api.wait(&id, |j| runs_on(j, &w) && j["attempts"] == attempt);
        w.kill();
    }
    let j = api.finished(&id);
    assert_eq!(j["status"], "failed", "{j}");
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains("stopped without a word 2 times") && error.contains("--max-attempts 2"),
        "{error}"
    );
    let events = api.events(&id);
    assert_eq!(events.last().unwrap()["error"], error);
}

/// Reads a job's event stream from `s` (after `after`), at most `limit` events; returns their
/// (id, data).
fn read_stream(s: &Server, id: &str, after: Option<u64>, limit: usize) -> Vec<(u64, Value)> {
    let url = format!("{}/v1/jobs/{id}/events", s.base);
    let mut req = Server::agent().get(&url);
    if let Some(a) = after {
        req = req.header("Last-Event-ID", a.to_string());
    }
    let mut r = req.call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut lines = BufReader::new(r.body_mut().as_reader()).lines();
    let mut out = Vec::new();
    let mut seq = None;
    while out.len() < limit {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(v) = line.strip_prefix("id: ") {
            seq = Some(v.parse::<u64>().unwrap());
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((seq.take().unwrap(), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[test]
fn an_event_stream_on_one_api_process_follows_a_job_trained_elsewhere_across_a_reconnect() {
    let Some(c) = Cluster::new() else { return };
    let p1 = c.api(&[]);
    let p2 = c.api(&[]);
    let ds = p1.upload(&asset("bishop.csv"), "b.csv");
    let id = p1.submit(
        ds["id"].as_str().unwrap(),
        json!({"epochs": 80, "hidden": "32"}),
    );
    // The stream opens before any worker exists: everything it shows comes through the
    // store from another process.
    let w = c.worker(&[]);
    let first = read_stream(&p1, &id, None, 12);
    assert_eq!(first.len(), 12);
    let last = first.last().unwrap().0;
    let rest = read_stream(&p2, &id, Some(last), usize::MAX);
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gaps or repeats"
    );
    let (_, final_event) = rest.last().unwrap();
    assert_eq!(final_event["status"], "succeeded", "{final_event}");
    // The same, in the same order, as the store's record read from scratch.
    let all: Vec<Value> = first.into_iter().chain(rest).map(|e| e.1).collect();
    assert_eq!(all, p2.events(&id));
    let epochs = all.iter().filter(|e| e["type"] == "epoch").count();
    assert_eq!(epochs, 80);
    drop(w);
}

#[test]
fn cancel_on_one_api_process_reaches_a_job_running_on_a_worker_elsewhere() {
    let Some(c) = Cluster::new() else { return };
    let api = c.api(&[]);
    let w = c.worker(&[]);
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let id = api.submit(ds["id"].as_str().unwrap(), json!({"epochs": 100000}));
    api.wait(&id, |j| {
        runs_on(j, &w) && j["epoch"].as_u64().unwrap_or(0) >= 3
    });
    // `mdn status` and `mdn jobs` name the worker.
    for args in [vec!["status", id.as_str()], vec!["jobs"]] {
        let out = Command::new(MDN)
            .args(&args)
            .args(["--server", &api.base])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("worker") && text.contains(&format!(":{}:0", w.child.id())),
            "{args:?}: {text}"
        );
    }
    let t0 = Instant::now();
    let (st, v) = api.json("POST", &format!("/v1/jobs/{id}/cancel"), None);
    assert_eq!((st, &v["cancel_requested"]), (200, &json!(true)), "{v}");
    let j = api.finished(&id);
    assert_eq!(j["status"], "cancelled", "{j}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        t0.elapsed()
    );
    // A cancelled running job keeps its best model so far.
    assert!(model(&api, &j)["params"].is_array());
}

#[test]
fn workers_that_exit_when_idle_drain_the_queue_and_stop() {
    let Some(c) = Cluster::new() else { return };
    let api = c.api(&[]);
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let ids: Vec<String> = (0..6)
        .map(|i| api.submit(ds["id"].as_str().unwrap(), json!({"epochs": 2, "seed": i})))
        .collect();
    let mut workers: Vec<Server> = (0..2)
        .map(|_| c.worker(&["--exit-when-idle", "--max-running", "2"]))
        .collect();
    for w in &mut workers {
        let t0 = Instant::now();
        let st = loop {
            if let Some(st) = w.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "a worker did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(st.success(), "{}", w.log.lock().unwrap());
        // Its last words may still be in the pipe.
        let t0 = Instant::now();
        while !w.log.lock().unwrap().contains("exiting (--exit-when-idle)") {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{}",
                w.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let done: HashSet<String> = ids
        .iter()
        .filter(|id| api.job(id)["status"] == "succeeded")
        .cloned()
        .collect();
    assert_eq!(done.len(), 6);
}

#[test]
fn with_files_in_an_object_store_a_worker_with_no_shared_disk_resumes_a_killed_job() {
    let Some(s3) = common::s3::server() else {
        return;
    };
    let Some(pg) = common::postgres::server() else {
        return;
    };
    let url = pg.database();
    let bucket = s3.bucket();
    let files = format!("s3://{bucket}/team");
    let env_owned = s3.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Each process its own cache: nothing on disk is shared.
    let dir = tempfile::tempdir().unwrap();
    let process = |role: &str, cache: &str| -> Server {
        let args: Vec<OsString> = vec![
            role.into(),
            "--store".into(),
            url.clone().into(),
            "--files".into(),
            files.clone().into(),
            "--cache".into(),
            dir.path().join(cache).into(),
            "--lease-seconds".into(),
            "2".into(),
            "--checkpoint-seconds".into(),
            "0".into(),
        ];
        Server::spawn(&args, &env)
    };
    let api = process("--api", "api");
    let mut a = process("--worker", "a");
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let id = api.submit(
        ds["id"].as_str().unwrap(),
        json!({"epochs": 150, "seed": 11, "hidden": "32"}),
    );
    api.wait(&id, |j| {
        runs_on(j, &a) && j["epoch"].as_u64().unwrap_or(0) >= 20
    });
    assert!(
        s3.keys(&bucket, "team/jobs/")
            .iter()
            .any(|k| k.ends_with("attempt-1/checkpoint.json")),
        "the checkpoint is in the object store"
    );
    a.kill();
    let b = process("--worker", "b");
    let j = api.finished(&id);
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{j}"
    );
    let events = api.events(&id);
    let resumed = events.iter().find(|e| e["type"] == "resuming");
    assert!(
        resumed.is_some_and(|e| e["epoch"].as_u64().unwrap() >= 20),
        "{events:?}"
    );
    let cli = cli_train(
        dir.path(),
        &asset("bishop.csv"),
        &["--epochs", "150", "--seed", "11", "--hidden", "32"],
    );
    // The API process has never seen the model: it comes from the object store.
    assert_eq!(model(&api, &j)["params"], cli["params"]);
    let keys = s3.keys(&bucket, "team/");
    let model_key = format!("team/models/{}.json", j["model"].as_str().unwrap());
    assert!(keys.contains(&model_key), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("team/datasets/")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("team/jobs/")),
        "a finished job's checkpoints are removed: {keys:?}"
    );
    // Deleting the data set removes its object.
    let (st, _) = api.call(
        "DELETE",
        &format!("/v1/datasets/{}", ds["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(st, 204);
    assert!(s3.keys(&bucket, "team/datasets/").is_empty());
    drop(b);
    // A bucket that does not exist said "cannot be reached" with the server's XML.
    let out = Command::new(MDN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--files",
            "s3://no-such-bucket/x",
            "--store",
        ])
        .arg(dir.path().join("other"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the bucket no-such-bucket does not exist there (create it first)"),
        "{err}"
    );
}

#[test]
fn an_object_store_that_cannot_be_reached_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(MDN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--files",
            "s3://nowhere/x",
            "--store",
        ])
        .arg(dir.path().join("store"))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "secret-never-shown")
        .env("AWS_REGION", "us-east-1")
        // Nothing listens on port 1.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the object store s3://nowhere/x cannot be reached"),
        "{err}"
    );
    assert!(!err.contains("secret-never-shown"), "{err}");
    let out = Command::new(MDN)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--files",
            "ftp://x",
            "--store",
        ])
        .arg(dir.path().join("store2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("expected a directory or s3://BUCKET/PREFIX"),
        "{err}"
    );
}

/// Regression: with the database gone, the API process panicked ("Cannot start a runtime
/// from within a runtime") as it dropped a closed connection on an HTTP thread. Now the API
/// answers 503 while the database is away, the worker keeps training, and the job finishes
/// with the bits of an uninterrupted run once the database is back.
#[test]
fn the_api_crashed_when_the_database_went_away_mid_job() {
    let Some(db) = common::postgres::Dedicated::start() else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = |role: &str| -> Vec<OsString> {
        vec![
            role.into(),
            "--store".into(),
            db.url.clone().into(),
            "--files".into(),
            files.path().into(),
        ]
    };
    let api = Server::spawn(&args("--api"), &[]);
    let w = Server::spawn(&args("--worker"), &[]);
    let ds = api.upload(&asset("bishop.csv"), "b.csv");
    let id = api.submit(
        ds["id"].as_str().unwrap(),
        json!({"epochs": 1500, "seed": 8, "hidden": "16"}),
    );
    api.wait(&id, |j| {
        runs_on(j, &w) && j["epoch"].as_u64().unwrap_or(0) >= 10
    });
    db.down();
    // Meanwhile the API says the store is away, and stays up.
    let answer = Server::agent()
        .get(format!("{}/v1/jobs/{id}", api.base))
        .call();
    let Ok(mut answer) = answer else {
        panic!("{answer:?}: {}", api.log.lock().unwrap());
    };
    let (st, body) = (
        answer.status().as_u16(),
        answer.body_mut().read_to_string().unwrap(),
    );
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    db.up();
    let j = api.finished(&id);
    assert_eq!(
        (j["status"].as_str(), j["attempts"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{j}"
    );
    let cli = cli_train(
        dir.path(),
        &asset("bishop.csv"),
        &["--epochs", "1500", "--seed", "8", "--hidden", "16"],
    );
    assert_eq!(model(&api, &j)["params"], cli["params"]);
    // The worker said so once, not once per epoch.
    let log = w.log.lock().unwrap().clone();
    let complaints = log
        .lines()
        .filter(|l| l.contains("does not take its progress"))
        .count();
    assert!(complaints <= 2, "{complaints} lines:\n{log}");
    // And the next job runs.
    let id2 = api.submit(ds["id"].as_str().unwrap(), json!({"epochs": 2}));
    assert_eq!(api.finished(&id2)["status"], "succeeded");
}

#[test]
fn a_key_revoked_on_one_api_process_is_refused_by_another_at_once() {
    let Some(c) = Cluster::new() else { return };
    let one = c.api(&[]);
    let two = c.api(&[]);
    // Keys made beside the running processes, in the shared database.
    let add = |args: &[&str]| common::serve::add_key(&c.url, args);
    let admin = add(&["--workspace", "team", "--scope", "admin", "--name", "lead"]);
    let reader = add(&["--workspace", "team", "--scope", "read", "--name", "dash"]);
    let other = add(&[
        "--workspace",
        "elsewhere",
        "--scope",
        "write",
        "--name",
        "x",
    ]);
    let (r1, r2) = (one.with_key(&reader), two.with_key(&reader));
    assert_eq!(r1.call("GET", "/v1/jobs", None).0, 200);
    assert_eq!(r2.call("GET", "/v1/jobs", None).0, 200);
    // A data set uploaded through one process is invisible to another workspace on the other.
    let up = one.with_key(&other).upload(&asset("bishop.csv"), "b.csv");
    let ds = up["id"].as_str().unwrap();
    assert_eq!(r2.call("GET", &format!("/v1/datasets/{ds}"), None).0, 404);
    let id = reader
        .strip_prefix("mdn_")
        .unwrap()
        .rsplit_once('_')
        .unwrap()
        .0;
    assert_eq!(
        one.with_key(&admin)
            .call("DELETE", &format!("/v1/keys/{id}"), None)
            .0,
        204
    );
    let (st, text) = r2.call("GET", "/v1/jobs", None);
    assert_eq!(st, 401, "{text}");
    assert!(text.contains("revoked"), "{text}");
}
