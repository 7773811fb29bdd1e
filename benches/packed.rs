//! `cargo bench --bench packed`: many small networks, each on rows of its own (one model per
//! group), trained on one GPU adapter two ways in the same run: one run a group after
//! another (what `mdn train --group-by` does on a GPU today), and one packed run
//! (`Backend::start_packed`: every group in the same dispatches). Prints seconds and epochs
//! a second for each, and whether each group's parameters are the same bits both ways.
//! Asserts nothing.
//!
//! `MDN_BENCH_DEVICE=software|gpu` (default `gpu`), `MDN_BENCH_GROUPS` (default 64),
//! `MDN_BENCH_EPOCHS` (default 20). On a CPU adapter (lavapipe) the looped step, which packed
//! runs take, is compiled only with `MDN_GPU_PATH=loop` (the one-after-another runs then loop
//! too). Groups have 40 to 400 training rows and a fifth as many
//! validation rows; the network is mdn's default (hidden 64, K = 3 here), batches of 32.

use std::time::Instant;

use mdn::backend::{Backend, DataRef, DeviceChoice, GpuBackend, StepConfig, TrainState};
use mdn::check::{Case, random_case};
use mdn::layout::Activation;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data(c: &Case) -> DataRef<'_> {
    DataRef {
        x: &c.x,
        y: &c.y,
        rows: c.rows,
    }
}

/// Epoch e's order of `rows` rows: a rotation.
fn order(rows: usize, e: usize) -> Vec<u32> {
    (0..rows as u32)
        .map(|i| (i + 7 * e as u32) % rows as u32)
        .collect()
}

fn main() {
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // As `mdn` does: Mesa's device-select layer prints errors without a desktop session.
        // SAFETY: set before any other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    let device = match std::env::var("MDN_BENCH_DEVICE").as_deref() {
        Ok("software") => DeviceChoice::Software,
        _ => DeviceChoice::Gpu,
    };
    let (groups, epochs) = (env("MDN_BENCH_GROUPS", 64), env("MDN_BENCH_EPOCHS", 20));
    let mut gpu = match GpuBackend::new(device) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("no GPU backend: {e}");
            std::process::exit(1);
        }
    };
    let cases: Vec<(Case, Case)> = (0..groups)
        .map(|g| {
            let rows = 40 + (g * 97) % 361;
            let case = |rows, seed| random_case(1, &[64], Activation::Tanh, 3, 1, rows, seed);
            (
                case(rows, g as u64),
                case((rows / 5).max(5), 1000 + g as u64),
            )
        })
        .collect();
    let arch = cases[0].0.arch.clone();
    let cfg = StepConfig {
        batch_size: 32,
        ..StepConfig::default()
    };
    let rows: usize = cases.iter().map(|(t, _)| t.rows).sum();
    println!(
        "{groups} groups ({rows} training rows in all), {epochs} epochs each, batch 32, on {}",
        gpu.name()
    );
    // A warm-up run compiles what the first timed run would.
    {
        let (t, v) = &cases[0];
        let mut run = gpu.start(&arch, &t.params, data(t), Some(data(v))).unwrap();
        run.train_epoch(&order(t.rows, 0), &cfg).unwrap();
    }
    let started = Instant::now();
    let mut alone: Vec<TrainState> = Vec::new();
    for (t, v) in &cases {
        let mut run = gpu.start(&arch, &t.params, data(t), Some(data(v))).unwrap();
        for e in 0..epochs {
            run.train_epoch(&order(t.rows, e), &cfg).unwrap();
        }
        alone.push(run.save_state().unwrap());
    }
    let one_by_one = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let params: Vec<Vec<f32>> = cases.iter().map(|(t, _)| t.params.clone()).collect();
    let train: Vec<DataRef> = cases.iter().map(|(t, _)| data(t)).collect();
    let val: Vec<DataRef> = cases.iter().map(|(_, v)| data(v)).collect();
    let mut together: Vec<TrainState> = Vec::new();
    // At most 128 members a packed run.
    for part in (0..groups).collect::<Vec<_>>().chunks(128) {
        let (p, t, v) = (
            &params[part[0]..=part[part.len() - 1]],
            &train[part[0]..=part[part.len() - 1]],
            &val[part[0]..=part[part.len() - 1]],
        );
        let Some(mut run) = gpu.start_packed(&arch, p, t, Some(v)).unwrap() else {
            eprintln!("{} takes no packed runs of this model", gpu.name());
            std::process::exit(1);
        };
        let lrs = vec![cfg.lr; part.len()];
        let active = vec![true; part.len()];
        for e in 0..epochs {
            let orders: Vec<u32> = t.iter().flat_map(|d| order(d.rows, e)).collect();
            run.train_epoch(&orders, &cfg, &lrs, &active).unwrap();
        }
        together.extend(run.save_state().unwrap());
    }
    let packed = started.elapsed().as_secs_f64();
    let same = alone
        .iter()
        .zip(&together)
        .filter(|(a, b)| a.params == b.params)
        .count();
    let per = |s: f64| (groups * epochs) as f64 / s;
    println!(
        "one group after another: {one_by_one:.3} s ({:.0} group-epochs/s)",
        per(one_by_one)
    );
    println!(
        "packed:                  {packed:.3} s ({:.0} group-epochs/s)",
        per(packed)
    );
    println!(
        "packed / one after another: {:.2}x; groups with the same bits both ways: {same} of {groups}",
        one_by_one / packed
    );
}
