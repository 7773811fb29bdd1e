//! Training-speed benchmark: rows per second, time per epoch and achieved GFLOP/s of the
//! training step for each backend on the same generated data, next to the device's own
//! matmul ceiling. `mdn bench` and `cargo bench` both run it.
//!
//! Flops are counted for the dense layers only (2 per multiply-add): the forward pass, the
//! weight gradients, and the input gradients of every layer but the first. The mixture head,
//! Adam and data movement are not counted, so the figure is a lower bound on the work done.

use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, DataRef, StepConfig};
use crate::data::Dataset;
use crate::error::Result;
use crate::layout::{Activation, Arch};
use crate::model::Scaler;

/// One benchmark configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSpec {
    pub name: &'static str,
    /// "bishop" (d=1, D=1) or "wide" (d=16, D=2); see [`crate::synth`].
    pub data: &'static str,
    pub rows: usize,
    pub hidden: Vec<usize>,
    pub components: usize,
    pub batch: usize,
    /// Epochs run; epochs 2.. are timed (epoch 1 when there is only one).
    pub epochs: usize,
}

/// The two configurations of the GPU issue: (a) small model, small batches (dispatch-bound
/// on a GPU), (b) wider model, large batches (compute-bound).
pub fn specs() -> Vec<BenchSpec> {
    vec![
        BenchSpec {
            name: "a",
            data: "bishop",
            rows: 100_000,
            hidden: vec![64],
            components: 5,
            batch: 256,
            epochs: 3,
        },
        BenchSpec {
            name: "b",
            data: "wide",
            rows: 1_000_000,
            hidden: vec![64, 64],
            components: 5,
            batch: 4096,
            epochs: 2,
        },
    ]
}

/// What one backend achieved on one configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub config: String,
    pub backend: String,
    pub rows: usize,
    pub batch: usize,
    /// Median seconds per timed epoch.
    pub epoch_seconds: f64,
    pub rows_per_sec: f64,
    pub steps_per_epoch: usize,
    /// Dense-layer flops per training row (forward + backward).
    pub flops_per_row: f64,
    pub gflops: f64,
    /// Train NLL of the last epoch (standardised units), to show the run was real.
    pub last_train_nll: f64,
}

/// Dense-layer flops of one training row: forward, weight gradients, and input gradients of
/// every layer above the first.
pub fn train_flops_per_row(arch: &Arch) -> f64 {
    let layers = arch.layers();
    let macs: usize = layers.iter().map(|l| l.weight_count()).sum();
    let input_grad: usize = layers.iter().skip(1).map(|l| l.weight_count()).sum();
    2.0 * (2 * macs + input_grad) as f64
}

/// Generates the data of a configuration.
pub fn data_for(spec: &BenchSpec, seed: u64) -> Dataset {
    match spec.data {
        "wide" => crate::synth::wide(spec.rows, seed),
        _ => crate::synth::bishop(spec.rows, seed),
    }
}

/// Trains `spec.epochs` epochs on `data` and times them.
pub fn run(backend: &mut dyn Backend, spec: &BenchSpec, data: &Dataset) -> Result<BenchResult> {
    let arch = Arch::new(
        data.d_in(),
        spec.hidden.clone(),
        Activation::Relu,
        spec.components,
        data.d_out(),
    )?;
    let xs = Scaler::fit(&data.x, data.d_in()).apply(&data.x);
    let ys = Scaler::fit(&data.y, data.d_out()).apply(&data.y);
    let params = crate::train::init_params(&arch, &ys, 0);
    backend.start(
        &arch,
        &params,
        DataRef {
            x: &xs,
            y: &ys,
            rows: data.rows,
        },
        None,
    )?;
    let cfg = StepConfig {
        batch_size: spec.batch,
        ..StepConfig::default()
    };
    let mut order: Vec<u32> = (0..data.rows as u32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut times = Vec::new();
    let mut last = 0.0;
    for _ in 0..spec.epochs.max(1) {
        order.shuffle(&mut rng);
        let started = Instant::now();
        let stats = backend.train_epoch(&order, &cfg)?;
        times.push(started.elapsed().as_secs_f64());
        last = stats.train_nll;
    }
    let timed: Vec<f64> = if times.len() > 1 {
        times[1..].to_vec()
    } else {
        times
    };
    let mut sorted = timed.clone();
    sorted.sort_by(f64::total_cmp);
    let epoch_seconds = sorted[sorted.len() / 2];
    let flops_per_row = train_flops_per_row(&arch);
    Ok(BenchResult {
        config: spec.name.to_string(),
        backend: backend.name(),
        rows: data.rows,
        batch: spec.batch,
        epoch_seconds,
        rows_per_sec: data.rows as f64 / epoch_seconds,
        steps_per_epoch: data.rows.div_ceil(spec.batch),
        flops_per_row,
        gflops: flops_per_row * data.rows as f64 / epoch_seconds / 1e9,
        last_train_nll: last,
    })
}

/// GFLOP/s of a plain single-threaded CPU matmul (`m x k` times `k x n`, the loop order the
/// CPU backend uses), for comparison with the CPU backend's step.
pub fn cpu_matmul_gflops(m: usize, k: usize, n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32) * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let mut run = || {
        for r in 0..m {
            let row = &mut c[r * n..(r + 1) * n];
            row.fill(0.0);
            for i in 0..k {
                let av = a[r * k + i];
                for (o, &bv) in row.iter_mut().zip(&b[i * n..(i + 1) * n]) {
                    *o += av * bv;
                }
            }
        }
    };
    run();
    let started = Instant::now();
    for _ in 0..reps {
        run();
    }
    let s = started.elapsed().as_secs_f64();
    std::hint::black_box(&c);
    2.0 * (m * n * k * reps) as f64 / s / 1e9
}

/// A plain-text table of results with the matmul ceilings.
pub fn table(results: &[BenchResult], ceilings: &[(String, f64)]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<6} {:<44} {:>9} {:>6} {:>12} {:>10} {:>8} {:>9}\n",
        "config", "backend", "rows", "batch", "rows/s", "s/epoch", "GFLOP/s", "% ceiling"
    ));
    for r in results {
        let ceiling = ceilings.iter().find(|(b, _)| *b == r.backend).map(|c| c.1);
        let pct = ceiling
            .map(|c| format!("{:.0}%", 100.0 * r.gflops / c))
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "{:<6} {:<44} {:>9} {:>6} {:>12.0} {:>10.3} {:>8.2} {:>9}\n",
            r.config,
            truncate(&r.backend, 44),
            r.rows,
            r.batch,
            r.rows_per_sec,
            r.epoch_seconds,
            r.gflops,
            pct
        ));
    }
    for (b, g) in ceilings {
        s.push_str(&format!("matmul ceiling on {b}: {g:.2} GFLOP/s\n"));
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// Runs `configs` (by name, see [`specs`]) on each device, with optional overrides of the row
/// count and epochs; `note` receives a line before each run. Returns the results and each
/// device's matmul ceiling.
pub fn run_suite(
    devices: &[crate::backend::DeviceChoice],
    configs: &[String],
    rows: Option<usize>,
    epochs: Option<usize>,
    note: &mut dyn FnMut(&str),
) -> Result<(Vec<BenchResult>, Vec<(String, f64)>)> {
    use crate::backend::{CpuBackend, DeviceChoice, GpuBackend};
    let mut chosen: Vec<BenchSpec> = specs()
        .into_iter()
        .filter(|s| configs.is_empty() || configs.iter().any(|c| c == s.name))
        .collect();
    if chosen.is_empty() {
        return Err(crate::Error::config(format!(
            "unknown benchmark config {configs:?}: choose from a, b"
        )));
    }
    for s in &mut chosen {
        if let Some(r) = rows {
            s.rows = r;
        }
        if let Some(e) = epochs {
            s.epochs = e;
        }
    }
    let data: Vec<Dataset> = chosen.iter().map(|s| data_for(s, 0)).collect();
    let mut results = Vec::new();
    let mut ceilings = Vec::new();
    for &device in devices {
        let mut backend: Box<dyn Backend> = match device {
            DeviceChoice::Cpu => {
                note("timing the CPU matmul ceiling");
                let g =
                    cpu_matmul_gflops(4096, 64, 64, 10).max(cpu_matmul_gflops(512, 512, 512, 2));
                ceilings.push(("cpu".to_string(), g));
                Box::new(CpuBackend::new())
            }
            other => {
                let gpu = GpuBackend::new(other)?;
                note(&format!("timing the matmul ceiling of {}", gpu.name()));
                let g = gpu
                    .matmul_gflops(4096, 64, 64, 20)?
                    .max(gpu.matmul_gflops(1024, 1024, 1024, 3)?);
                ceilings.push((gpu.name(), g));
                Box::new(gpu)
            }
        };
        for (spec, d) in chosen.iter().zip(&data) {
            note(&format!(
                "config {} on {}: {} rows, {} epochs",
                spec.name,
                backend.name(),
                spec.rows,
                spec.epochs
            ));
            results.push(run(backend.as_mut(), spec, d)?);
        }
    }
    Ok((results, ceilings))
}
