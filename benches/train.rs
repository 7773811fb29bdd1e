//! `cargo bench`: the training-speed benchmark (`mdn bench` with its defaults) on the CPU
//! backend and, when there is one, the GPU adapter `--device auto` would pick. Prints figures;
//! asserts nothing. `MDN_BENCH_ROWS` scales the data down for a quick look;
//! `MDN_BENCH_ENSEMBLE=5` also times five networks trained at once.

use mdn::backend::{DeviceChoice, GpuBackend};

fn main() {
    let rows = std::env::var("MDN_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok());
    let ensemble = std::env::var("MDN_BENCH_ENSEMBLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut devices = vec![DeviceChoice::Cpu];
    if GpuBackend::new(DeviceChoice::Auto).is_ok() {
        devices.push(DeviceChoice::Auto);
    }
    match mdn::bench::run_suite(
        &devices,
        &mdn::bench::default_threads(),
        &[],
        rows,
        None,
        ensemble,
        &mut |line| eprintln!("{line}"),
    ) {
        Ok((results, ceilings)) => print!("{}", mdn::bench::table(&results, &ceilings)),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
