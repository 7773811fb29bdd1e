//! Load benchmark of the training service: `cargo bench --bench serve_load [-- CLIENTS SECONDS]`.
//!
//! Starts the real `mdn serve` (CPU device) on a free loopback port, trains a model, then,
//! while a second job trains on the CPU, sends single-row predictions from CLIENTS
//! keep-alive clients for SECONDS seconds and prints the throughput and latency percentiles;
//! then the rate at which jobs are submitted (validated and queued) by 8 clients.
//!
//! Every request carries a workspace API key (made with `mdn serve keys add` before the
//! server starts), as a team's service would: the figures include looking the key up.
//!
//! Then the same on a PostgreSQL store (a throwaway cluster where PostgreSQL is installed, or
//! the database `MDN_BENCH_POSTGRES` names), with the API in one process and 4 worker
//! processes: the same figures, the claim latency of idle workers (queued to running, one job
//! at a time), and 200 one-epoch jobs through the 4 workers.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "../tests/common/mod.rs"]
mod common;
use common::postgres as postgres_server;

/// `mdn serve ARGS` on the CPU; its address (None for a worker) once ready.
fn spawn(args: &[OsString]) -> (Child, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(["serve", "--addr", "127.0.0.1:0", "--device", "cpu"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("mdn serve ended").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break Some(rest.split_whitespace().next().unwrap().to_string());
        }
        if line.contains("mdn serve: working") {
            break None;
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, base)
}

/// The key every request carries.
static KEY: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn auth<B>(r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    match KEY.lock().unwrap().as_deref() {
        Some(k) => r.header("Authorization", format!("Bearer {k}")),
        None => r,
    }
}

/// A workspace write key made in `store` (a directory or a PostgreSQL URL), for every request.
fn make_key(store: &std::ffi::OsStr) {
    let key = common::serve::add_key(store, &["--workspace", "bench", "--scope", "write"]);
    *KEY.lock().unwrap() = Some(key);
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(a: &ureq::Agent, url: &str, body: &str) -> (u16, Value) {
    let mut r = auth(a.post(url)).send(body.as_bytes()).unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let clients: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let dir = tempfile::tempdir().unwrap();
    println!("SQLite store, one process (API and 1 worker); every request with a workspace key:");
    let store: OsString = dir.path().join("store").into();
    make_key(&store);
    let (mut child, base) = spawn(&["--max-running".into(), "1".into(), "--store".into(), store]);
    load(&base.unwrap(), clients, seconds, child.id(), None);
    let _ = child.kill();
    let _ = child.wait();

    let url = match std::env::var("MDN_BENCH_POSTGRES") {
        Ok(url) => url,
        Err(_) => match postgres_server::server() {
            Some(s) => s.database(),
            None => return,
        },
    };
    let files = tempfile::tempdir().unwrap();
    let common = |role: &str| -> Vec<OsString> {
        vec![
            role.into(),
            "--store".into(),
            url.clone().into(),
            "--files".into(),
            files.path().into(),
        ]
    };
    println!("\nPostgreSQL store: 1 API process, 4 worker processes (1 job each at a time):");
    make_key(std::ffi::OsStr::new(&url));
    let (mut api, base) = spawn(&common("--api"));
    let mut workers: Vec<Child> = (0..4).map(|_| spawn(&common("--worker")).0).collect();
    load(
        &base.unwrap(),
        clients,
        seconds,
        api.id(),
        Some(&mut workers),
    );
    for c in workers.iter_mut().chain([&mut api]) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The figures against the API at `base`; with `workers` (other processes), also the claim
/// latency and the jobs they get through.
fn load(base: &str, clients: usize, seconds: f64, pid: u32, workers: Option<&mut Vec<Child>>) {
    let a = agent();
    let csv = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/bishop.csv")).unwrap();
    let mut r = auth(a.post(format!("{base}/v1/datasets?name=bishop.csv")))
        .send(&csv[..])
        .unwrap();
    let ds: Value = r.body_mut().read_json().unwrap();
    let ds = ds["id"].as_str().unwrap().to_string();
    let submit = |a: &ureq::Agent, epochs: usize| {
        let (s, v) = post(
            a,
            &format!("{base}/v1/jobs"),
            &json!({"dataset": ds, "options": {"epochs": epochs}}).to_string(),
        );
        assert_eq!(s, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let first = submit(&a, 30);
    let model = loop {
        let mut r = auth(a.get(format!("{base}/v1/jobs/{first}")))
            .call()
            .unwrap();
        let j: Value = r.body_mut().read_json().unwrap();
        if j["status"] == "succeeded" {
            break j["model"].as_str().unwrap().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let background = submit(&a, 1_000_000);
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("{base}/v1/models/{model}/predict");
    let started = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = &url;
                s.spawn(move || {
                    let a = agent();
                    let mut out = Vec::new();
                    let mut i = 0u64;
                    while started.elapsed().as_secs_f64() < seconds {
                        let x = ((c as u64 * 7919 + i) % 1000) as f64 / 1000.0;
                        let t = Instant::now();
                        let (st, _) = post(&a, url, &format!("{{\"rows\": [[{x}]]}}"));
                        assert_eq!(st, 200);
                        out.push(t.elapsed().as_secs_f64());
                        i += 1;
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let mut r = auth(a.get(format!("{base}/v1/jobs/{background}")))
        .call()
        .unwrap();
    let bg: Value = r.body_mut().read_json().unwrap();
    println!(
        "  predict, 1 row, {clients} keep-alive clients, {seconds} s, while a job trains on the CPU ({} epochs done, {:.0} rows/s):",
        bg["epoch"],
        bg["rows_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "    {:.0} requests/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len() as f64 / wall,
        percentile(&latencies, 0.5) * 1e3,
        percentile(&latencies, 0.9) * 1e3,
        percentile(&latencies, 0.99) * 1e3,
        latencies.last().unwrap() * 1e3
    );
    // The largest request the server accepts by default (--max-request-rows).
    let peak = || -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    let before = peak();
    let rows: Vec<[f64; 1]> = (0..10_000).map(|i| [(i % 1000) as f64 / 1000.0]).collect();
    let body = json!({"rows": rows, "quantiles": [0.05, 0.5, 0.95]}).to_string();
    let t = Instant::now();
    let (st, v) = post(&a, &url, &body);
    assert_eq!(st, 200, "{v}");
    println!(
        "  the largest accepted predict request (10,000 rows, 3 quantiles, {:.1} MB of JSON): {:.2} s; the server's peak memory {before:.0} MB before, {:.0} MB after",
        body.len() as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        peak()
    );
    let _ = auth(a.post(format!("{base}/v1/jobs/{background}/cancel"))).send_empty();
    let n = 200;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let a = agent();
                for _ in 0..n / 8 {
                    submit(&a, 1);
                }
            });
        }
    });
    println!(
        "  job submission (checked and queued), 8 clients: {:.0} jobs/s",
        n as f64 / started.elapsed().as_secs_f64()
    );
    if let Some(workers) = workers {
        // Idle workers (once the jobs submitted above are done): from queued to running,
        // one job at a time.
        for status in ["queued", "running"] {
            loop {
                let mut r = auth(a.get(format!("{base}/v1/jobs?status={status}")))
                    .call()
                    .unwrap();
                let v: Value = r.body_mut().read_json().unwrap();
                if v["jobs"].as_array().is_none_or(|j| j.is_empty()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut waits = Vec::new();
        for _ in 0..50 {
            let id = submit(&a, 1);
            loop {
                let mut r = auth(a.get(format!("{base}/v1/jobs/{id}"))).call().unwrap();
                let j: Value = r.body_mut().read_json().unwrap();
                if j["status"] == "succeeded" {
                    waits.push(j["started"].as_f64().unwrap() - j["created"].as_f64().unwrap());
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        waits.sort_by(f64::total_cmp);
        println!(
            "  claim latency ({} idle worker processes, queued to running, 50 jobs one at a time): p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            workers.len(),
            percentile(&waits, 0.5) * 1e3,
            percentile(&waits, 0.9) * 1e3,
            waits.last().unwrap() * 1e3
        );
        let started = Instant::now();
        let ids: Vec<String> = (0..200).map(|_| submit(&a, 1)).collect();
        for id in &ids {
            loop {
                let mut r = auth(a.get(format!("{base}/v1/jobs/{id}"))).call().unwrap();
                let j: Value = r.body_mut().read_json().unwrap();
                if j["status"] == "succeeded" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        println!(
            "  200 one-epoch jobs through {} worker processes: {:.0} jobs/s from the first submission to the last success",
            workers.len(),
            200.0 / started.elapsed().as_secs_f64()
        );
    }
}
