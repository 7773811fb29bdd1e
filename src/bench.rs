//! Training-speed benchmark: rows per second, time per epoch and achieved GFLOP/s of the
//! training step for each backend on the same generated data, next to the device's own
//! matmul ceiling. `mdn bench` and `cargo bench` both run it.
//!
//! With an ensemble size, each configuration is also timed for that many networks trained
//! at once: on a GPU in the same dispatches ([`Backend::start_members`]), on the CPU side by
//! side on threads (the thread count shared out, as `mdn train --ensemble` does); the table
//! then gives each ensemble's time per epoch as a multiple of one network's.
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
use crate::layout::{Activation, Arch, Covariance};
use crate::scaler::Scaler;

/// One benchmark configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSpec {
    pub name: &'static str,
    /// "bishop" (d=1, D=1), "wide" (d=16, D=2) or "correlated" (d=1, D=3); see
    /// [`crate::synth`].
    pub data: &'static str,
    pub rows: usize,
    pub hidden: Vec<usize>,
    pub components: usize,
    pub batch: usize,
    /// Epochs run; epochs 2.. are timed (epoch 1 when there is only one).
    pub epochs: usize,
    pub covariance: Covariance,
}

/// The configurations: `a` and `b` are the GPU issue's (small model with small batches,
/// dispatch-bound on a GPU; wider model with large batches, compute-bound); `a4096` and `b256`
/// complete the grid the reference PyTorch and TensorFlow Probability MDNs were timed on
/// (`shared/reference/peers`: bishop 100k rows 5 epochs, wide 1M rows 2 epochs). `c` and
/// `cdiag` time the full-covariance head against the diagonal one on the same data (three
/// correlated targets), so the cost of `--covariance full` shows side by side. `a32` is `a`
/// at the batch mdn picks for a few thousand training rows (the shipped example's): on a GPU
/// one tile a step, which the looped step trains, many steps a dispatch.
pub fn specs() -> Vec<BenchSpec> {
    let bishop = |name, batch| BenchSpec {
        name,
        data: "bishop",
        rows: 100_000,
        hidden: vec![64],
        components: 5,
        batch,
        epochs: 5,
        covariance: Covariance::Diagonal,
    };
    let wide = |name, batch| BenchSpec {
        name,
        data: "wide",
        rows: 1_000_000,
        hidden: vec![64, 64],
        components: 5,
        batch,
        epochs: 2,
        covariance: Covariance::Diagonal,
    };
    let correlated = |name, covariance| BenchSpec {
        name,
        data: "correlated",
        rows: 200_000,
        hidden: vec![64],
        components: 3,
        batch: 1024,
        epochs: 3,
        covariance,
    };
    vec![
        bishop("a", 256),
        bishop("a4096", 4096),
        bishop("a32", 32),
        wide("b256", 256),
        wide("b", 4096),
        correlated("c", Covariance::Full),
        correlated("cdiag", Covariance::Diagonal),
    ]
}

/// What one backend achieved on one configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub config: String,
    pub backend: String,
    /// Networks trained at once (1, or an ensemble's members); rows per second count every
    /// member's rows.
    pub members: usize,
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
    /// Seconds per training step by kernel, whole step last (GPU backends).
    pub breakdown: Option<Vec<(String, f64)>>,
    /// Kernel dispatches per training step (GPU backends): below 1 for the looped step
    /// (many steps a dispatch), the fused step's 2, or the layered path's one per layer and
    /// pass.
    pub dispatches_per_step: Option<f64>,
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
        "correlated" => crate::synth::generate(crate::synth::Kind::Correlated, spec.rows, seed),
        _ => crate::synth::bishop(spec.rows, seed),
    }
}

/// The architecture of `spec` for `data`, and the data standardised.
fn prepare(spec: &BenchSpec, data: &Dataset) -> Result<(Arch, Vec<f32>, Vec<f32>)> {
    let arch = Arch::new(
        data.d_in(),
        spec.hidden.clone(),
        Activation::Relu,
        spec.components,
        data.d_out(),
    )?
    .with_covariance(spec.covariance)?;
    let xs = Scaler::fit(&data.x, data.d_in()).apply(&data.x);
    let ys = Scaler::fit(&data.y, data.d_out()).apply(&data.y);
    Ok((arch, xs, ys))
}

/// Trains `spec.epochs` epochs on `data` and times them.
pub fn run(backend: &mut dyn Backend, spec: &BenchSpec, data: &Dataset) -> Result<BenchResult> {
    let (arch, xs, ys) = prepare(spec, data)?;
    let params = crate::train::init_params(&arch, &ys, 0);
    let name = backend.name();
    let mut run = backend.start(
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
        let stats = run.train_epoch(&order, &cfg)?;
        times.push(started.elapsed().as_secs_f64());
        last = stats.train_nll;
    }
    let dispatches_per_step = run.dispatches_per_step();
    let breakdown = run.profile_step(10)?;
    Ok(BenchResult {
        breakdown,
        dispatches_per_step,
        ..result_of(spec, name, 1, data.rows, &arch, times, last)
    })
}

/// Times `members` networks of `spec` trained at once on a GPU backend (in the same
/// dispatches). `None` where the backend cannot train members together.
pub fn run_members(
    backend: &mut dyn Backend,
    spec: &BenchSpec,
    data: &Dataset,
    members: usize,
) -> Result<Option<BenchResult>> {
    let (arch, xs, ys) = prepare(spec, data)?;
    let params: Vec<Vec<f32>> = (0..members as u64)
        .map(|s| crate::train::init_params(&arch, &ys, s))
        .collect();
    let name = backend.name();
    let Some(mut run) = backend.start_members(
        &arch,
        &params,
        DataRef {
            x: &xs,
            y: &ys,
            rows: data.rows,
        },
        None,
    )?
    else {
        return Ok(None);
    };
    let cfg = StepConfig {
        batch_size: spec.batch,
        ..StepConfig::default()
    };
    let lrs = vec![cfg.lr; members];
    let mut orders: Vec<u32> = (0..members).flat_map(|_| 0..data.rows as u32).collect();
    let mut rngs: Vec<ChaCha8Rng> = (0..members as u64)
        .map(|s| ChaCha8Rng::seed_from_u64(1 + s))
        .collect();
    let mut times = Vec::new();
    let mut last = 0.0;
    for _ in 0..spec.epochs.max(1) {
        for (o, rng) in orders.chunks_mut(data.rows).zip(&mut rngs) {
            o.shuffle(rng);
        }
        let started = Instant::now();
        let stats = run.train_epoch(&orders, &cfg, &lrs, &vec![true; members])?;
        times.push(started.elapsed().as_secs_f64());
        last = stats[0].train_nll;
    }
    Ok(Some(BenchResult {
        dispatches_per_step: run.dispatches_per_step(),
        ..result_of(spec, name, members, data.rows, &arch, times, last)
    }))
}

/// Times `members` networks of `spec` trained side by side on the CPU, `threads` threads
/// shared out among them: each epoch is timed from when every member starts it to when the
/// last one ends it.
pub fn run_cpu_members(
    spec: &BenchSpec,
    data: &Dataset,
    members: usize,
    threads: usize,
) -> Result<BenchResult> {
    use crate::backend::CpuBackend;
    use std::sync::{Barrier, Mutex};
    let side_by_side = threads.clamp(1, members);
    let share = (threads / side_by_side).max(1);
    let (arch, xs, ys) = prepare(spec, data)?;
    let cfg = StepConfig {
        batch_size: spec.batch,
        ..StepConfig::default()
    };
    let epochs = spec.epochs.max(1);
    // Members run in waves of `side_by_side`; every epoch of a wave is timed between
    // barriers, and a wave's epoch time adds to the ensemble's.
    let mut times = vec![0.0f64; epochs];
    let last = Mutex::new(0.0);
    let errors: Mutex<Vec<crate::Error>> = Mutex::new(Vec::new());
    for wave in (0..members).collect::<Vec<_>>().chunks(side_by_side) {
        let barrier = Barrier::new(wave.len() + 1);
        std::thread::scope(|scope| {
            for &member in wave {
                let (barrier, xs, ys, arch, last, errors) =
                    (&barrier, &xs, &ys, &arch, &last, &errors);
                scope.spawn(move || {
                    let mut backend = CpuBackend::with_threads(share);
                    let params = crate::train::init_params(arch, ys, member as u64);
                    let mut run = match backend.start(
                        arch,
                        &params,
                        DataRef {
                            x: xs,
                            y: ys,
                            rows: data.rows,
                        },
                        None,
                    ) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            None
                        }
                    };
                    let mut order: Vec<u32> = (0..data.rows as u32).collect();
                    let mut rng = ChaCha8Rng::seed_from_u64(1 + member as u64);
                    for _ in 0..epochs {
                        order.shuffle(&mut rng);
                        barrier.wait();
                        if let Some(r) = run.as_mut() {
                            match r.train_epoch(&order, &cfg) {
                                Ok(s) if member == 0 => *last.lock().unwrap() = s.train_nll,
                                Ok(_) => {}
                                Err(e) => errors.lock().unwrap().push(e),
                            }
                        }
                        barrier.wait();
                    }
                });
            }
            for t in times.iter_mut() {
                barrier.wait();
                let started = Instant::now();
                barrier.wait();
                *t += started.elapsed().as_secs_f64();
            }
        });
    }
    if let Some(e) = errors.into_inner().unwrap().pop() {
        return Err(e);
    }
    let label = format!(
        "cpu, {threads} thread{}",
        if threads == 1 { "" } else { "s" }
    );
    let last = *last.lock().unwrap();
    Ok(result_of(
        spec, label, members, data.rows, &arch, times, last,
    ))
}

/// A result from per-epoch times (epochs 2.. timed when there are several; the median).
fn result_of(
    spec: &BenchSpec,
    backend: String,
    members: usize,
    rows: usize,
    arch: &Arch,
    times: Vec<f64>,
    last: f64,
) -> BenchResult {
    let mut timed: Vec<f64> = if times.len() > 1 {
        times[1..].to_vec()
    } else {
        times
    };
    timed.sort_by(f64::total_cmp);
    let epoch_seconds = timed[timed.len() / 2];
    let flops_per_row = train_flops_per_row(arch);
    let all_rows = (rows * members) as f64;
    BenchResult {
        config: spec.name.to_string(),
        backend,
        members,
        rows,
        batch: spec.batch,
        epoch_seconds,
        rows_per_sec: all_rows / epoch_seconds,
        steps_per_epoch: rows.div_ceil(spec.batch),
        flops_per_row,
        gflops: flops_per_row * all_rows / epoch_seconds / 1e9,
        last_train_nll: last,
        breakdown: None,
        dispatches_per_step: None,
    }
}

/// GFLOP/s of the CPU's matmul, `m x k` times `k x n` with rows split over `threads` threads
/// the way the backend splits a batch: through the CPU backend's own kernel (`own`, the one
/// its dense layers use) or `matrixmultiply`'s sgemm.
pub fn cpu_matmul_gflops(
    m: usize,
    k: usize,
    n: usize,
    reps: usize,
    threads: usize,
    own: bool,
) -> f64 {
    use rayon::prelude::*;
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32) * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let rows_per = m.div_ceil(threads.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .expect("thread pool");
    let mut run = || {
        pool.install(|| {
            c.par_chunks_mut(rows_per * n)
                .zip(a.par_chunks(rows_per * k))
                .for_each(|(c, a)| {
                    let rows = a.len() / k;
                    if own {
                        crate::backend::cpu::dense::affine(a, k, &b, None, rows, k, n, c);
                    } else {
                        crate::backend::cpu::sgemm(rows, k, n, (a, k, 1), (&b, n, 1), c, false);
                    }
                })
        })
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

/// The CPU's matmul ceiling for the training step: the best of the backend's own kernel on a
/// layer-sized product (4096 x 64 times 64 x 64), the same with each thread's rows in its L1
/// cache (the most its multiply-add units do), and a general sgemm on a large square product.
pub fn cpu_ceiling_gflops(threads: usize) -> f64 {
    cpu_matmul_gflops(4096, 64, 64, 20, threads, true)
        .max(cpu_matmul_gflops(192 * threads, 64, 64, 400, threads, true))
        .max(cpu_matmul_gflops(1024, 1024, 1024, 2, threads, false))
}

/// CPU thread counts `mdn bench` times by default: 1 and every core.
pub fn default_threads() -> Vec<usize> {
    let all = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if all > 1 { vec![1, all] } else { vec![1] }
}

/// A share of the ceiling: whole percents, one decimal below 10% (a GPU's small batches
/// use a fraction of a percent, which "0%" would hide).
fn percent(p: f64) -> String {
    if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// Seconds to three significant figures (0.00456, 0.0489, 0.637, 2.14), so that epochs of a
/// few milliseconds on a GPU can still be compared.
fn three_figures(x: f64) -> String {
    if !(x.is_finite() && x > 0.0) {
        return format!("{x}");
    }
    let decimals = (2 - x.log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// A plain-text table of results with the matmul ceilings.
pub fn table(results: &[BenchResult], ceilings: &[(String, f64)]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<8} {:<44} {:>9} {:>6} {:>12} {:>10} {:>8} {:>9}\n",
        "config", "backend", "rows", "batch", "rows/s", "s/epoch", "GFLOP/s", "% ceiling"
    ));
    for r in results {
        let ceiling = ceilings.iter().find(|(b, _)| *b == r.backend).map(|c| c.1);
        let pct = ceiling
            .map(|c| percent(100.0 * r.gflops / c))
            .unwrap_or_else(|| "-".into());
        let config = if r.members > 1 {
            format!("{} x{}", r.config, r.members)
        } else {
            r.config.clone()
        };
        s.push_str(&format!(
            "{:<8} {:<44} {:>9} {:>6} {:>12.0} {:>10} {:>8.2} {:>9}\n",
            config,
            truncate(&r.backend, 44),
            r.rows,
            r.batch,
            r.rows_per_sec,
            three_figures(r.epoch_seconds),
            r.gflops,
            pct
        ));
    }
    for (b, g) in ceilings {
        s.push_str(&format!("matmul ceiling on {b}: {g:.2} GFLOP/s\n"));
    }
    if results.iter().any(|r| r.backend.starts_with("cpu")) {
        s.push_str(&format!(
            "the CPU backend's kernels ran on {}\n",
            crate::lanes::isa().name()
        ));
    }
    if results.iter().any(|r| r.members > 1) {
        s.push_str("rows/s of several networks (x M) counts every network's rows\n");
    }
    for e in results.iter().filter(|r| r.members > 1) {
        if let Some(one) = results
            .iter()
            .find(|r| r.members == 1 && r.config == e.config && r.backend == e.backend)
        {
            s.push_str(&format!(
                "config {} on {}: {} networks at once take {:.2}x the time of one per epoch\n",
                e.config,
                truncate(&e.backend, 30),
                e.members,
                e.epoch_seconds / one.epoch_seconds
            ));
        }
    }
    for r in results {
        if let Some(d) = r.dispatches_per_step {
            let members = if r.members > 1 {
                format!(" x{}", r.members)
            } else {
                String::new()
            };
            // The looped step runs many steps a dispatch; the fused step is 2 dispatches (3
            // with clipping); the layered path one per layer and pass.
            let what = if d < 1.0 {
                format!("1 dispatch per {:.0} training steps (looped)", 1.0 / d)
            } else if d == 1.0 {
                // Only the looped step is one dispatch a step (one step a dispatch).
                "1 dispatch per training step (looped)".to_string()
            } else {
                let path = if d <= 3.0 { "fused" } else { "layered" };
                format!("{d} dispatches per training step ({path})")
            };
            s.push_str(&format!(
                "config {}{members} on {}: {what}\n",
                r.config,
                truncate(&r.backend, 30),
            ));
        }
    }
    for r in results {
        if let Some(parts) = &r.breakdown {
            let cells: Vec<String> = parts
                .iter()
                .map(|(k, t)| format!("{k} {:.3}", t * 1e3))
                .collect();
            s.push_str(&format!(
                "config {} on {}, ms per step by kernel: {}\n",
                r.config,
                truncate(&r.backend, 30),
                cells.join(", ")
            ));
        }
    }
    s
}

/// `s` cut to at most `n` characters, the last an ellipsis where it was cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// Each timed device's matmul ceiling in GFLOP/s, by backend label.
pub type Ceilings = Vec<(String, f64)>;

/// Runs `configs` (by name, see [`specs`]) on each device, with optional overrides of the row
/// count and epochs; `note` receives a line before each run. Returns the results and each
/// device's matmul ceiling.
pub fn run_suite(
    devices: &[crate::backend::DeviceChoice],
    cpu_threads: &[usize],
    configs: &[String],
    rows: Option<usize>,
    epochs: Option<usize>,
    ensemble: usize,
    note: &mut dyn FnMut(&str),
) -> Result<(Vec<BenchResult>, Ceilings)> {
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
    // The label, the backend, and the CPU threads (None for a GPU).
    let mut backends: Vec<(String, Box<dyn Backend>, Option<usize>)> = Vec::new();
    for &device in devices {
        match device {
            DeviceChoice::Cpu => {
                for &t in cpu_threads {
                    let label = format!("cpu, {t} thread{}", if t == 1 { "" } else { "s" });
                    note(&format!("timing the matmul ceiling of {label}"));
                    let g = cpu_ceiling_gflops(t);
                    ceilings.push((label.clone(), g));
                    backends.push((label, Box::new(CpuBackend::with_threads(t)), Some(t)));
                }
            }
            other => {
                let gpu = GpuBackend::new(other)?;
                note(&format!("timing the matmul ceiling of {}", gpu.name()));
                let g = gpu
                    .matmul_gflops(4096, 64, 64, 20)?
                    .max(gpu.matmul_gflops(1024, 1024, 1024, 3)?);
                ceilings.push((gpu.name(), g));
                backends.push((gpu.name(), Box::new(gpu), None));
            }
        }
    }
    for (label, backend, threads) in &mut backends {
        for (spec, d) in chosen.iter().zip(&data) {
            note(&format!(
                "config {} on {label}: {} rows, batch {}, {} epochs",
                spec.name, spec.rows, spec.batch, spec.epochs
            ));
            let mut r = run(backend.as_mut(), spec, d)?;
            r.backend = label.clone();
            results.push(r);
            if ensemble > 1 {
                note(&format!(
                    "config {} on {label}: {ensemble} networks at once",
                    spec.name
                ));
                let mut r = match threads {
                    Some(t) => run_cpu_members(spec, d, ensemble, *t)?,
                    None => run_members(backend.as_mut(), spec, d, ensemble)?
                        .expect("a GPU backend trains members together"),
                };
                r.backend = label.clone();
                results.push(r);
            }
        }
    }
    Ok((results, ceilings))
}

#[cfg(test)]
mod tests {
    use super::{percent, three_figures};

    #[test]
    fn bench_printed_gpu_epochs_of_a_few_milliseconds_as_0_004_and_their_share_as_0_percent() {
        // On an H200, config a4096 took 0.0044 and 0.0061 s an epoch, both printed as 0.004
        // or 0.006, and config a's 0.19% of the ceiling as "0%".
        assert_eq!(three_figures(0.004_412), "0.00441");
        assert_eq!(three_figures(0.048_93), "0.0489");
        assert_eq!(three_figures(0.637_2), "0.637");
        assert_eq!(three_figures(2.142), "2.14");
        assert_eq!(three_figures(17.74), "17.7");
        assert_eq!(three_figures(1234.5), "1234");
        assert_eq!(three_figures(0.0), "0");
        assert_eq!(percent(0.19), "0.2%");
        assert_eq!(percent(7.96), "8.0%");
        assert_eq!(percent(28.4), "28%");
    }
}
