//! Load benchmark of the training service: `cargo bench --bench serve_load [-- CLIENTS SECONDS]`.
//!
//! Starts the real `mdn serve` (CPU device) on a free loopback port, trains a model, then,
//! while a second job trains on the CPU, sends single-row predictions from CLIENTS
//! keep-alive clients for SECONDS seconds and prints the throughput and latency percentiles;
//! then the rate at which jobs are submitted (validated and queued) by 8 clients.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn post(a: &ureq::Agent, url: &str, body: &str) -> (u16, Value) {
    let mut r = a.post(url).send(body.as_bytes()).unwrap();
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--max-running",
            "1",
            "--store",
        ])
        .arg(dir.path().join("store"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("mdn serve ended").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let a = agent();
    let csv = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/bishop.csv")).unwrap();
    let mut r = a
        .post(format!("{base}/v1/datasets?name=bishop.csv"))
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
        let mut r = a.get(format!("{base}/v1/jobs/{first}")).call().unwrap();
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
    let mut r = a
        .get(format!("{base}/v1/jobs/{background}"))
        .call()
        .unwrap();
    let bg: Value = r.body_mut().read_json().unwrap();
    println!(
        "predict, 1 row, {clients} keep-alive clients, {seconds} s, while a job trains on the CPU ({} epochs done, {:.0} rows/s):",
        bg["epoch"],
        bg["rows_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  {:.0} requests/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len() as f64 / wall,
        percentile(&latencies, 0.5) * 1e3,
        percentile(&latencies, 0.9) * 1e3,
        percentile(&latencies, 0.99) * 1e3,
        latencies.last().unwrap() * 1e3
    );
    let _ = a
        .post(format!("{base}/v1/jobs/{background}/cancel"))
        .send_empty();
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
        "job submission (checked and queued), 8 clients: {:.0} jobs/s",
        n as f64 / started.elapsed().as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}
