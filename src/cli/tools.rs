//! Commands about the machine and data files: devices, check, bench, convert, generate.

use serde_json::json;

use mdn::backend::{self, DeviceChoice};
use mdn::{Error, Result};

use super::args::{BenchArgs, CheckArgs, ConvertArgs, DevicesArgs, GenerateArgs};
use super::output::{print_json, write_output};
use super::progress::{message, row_counter};

pub fn devices(a: DevicesArgs) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let adapters = backend::gpu::list_adapters();
    let (_, why) = backend::auto_device();
    if a.json {
        return print_json(&backend::devices_report());
    }
    let mut s = format!(
        "cpu       reference backend (plain Rust), {threads} hardware threads, {} kernels\n",
        mdn::lanes::isa().name()
    );
    if adapters.is_empty() {
        s.push_str(&format!(
            "(no GPU adapters: {})\n",
            backend::gpu::NO_ADAPTER_HELP
        ));
    }
    for ad in &adapters {
        let kind = if ad.device_type == "Cpu" {
            "software"
        } else {
            "gpu"
        };
        s.push_str(&format!(
            "{kind:<9} {} ({}, {}), driver {} {}\n          max storage binding {} MiB, max buffer {} MiB, \
             workgroups/dim {}, invocations/workgroup {}, storage buffers/stage {}, subgroup size {}..{}, \
             workgroup memory {} KiB\n          fused training step: {} invocations a workgroup, up to {} rows a tile in {} KiB{}\n          \
             looped training step (a workgroup a network, many steps a dispatch): {}\n",
            ad.name,
            ad.backend,
            ad.device_type,
            ad.driver,
            ad.driver_info,
            ad.max_storage_buffer_binding_size >> 20,
            ad.max_buffer_size >> 20,
            ad.max_compute_workgroups_per_dimension,
            ad.max_compute_invocations_per_workgroup,
            ad.max_storage_buffers_per_shader_stage,
            ad.subgroup_min_size,
            ad.subgroup_max_size,
            ad.max_compute_workgroup_storage_size >> 10,
            ad.fused_workgroup,
            ad.fused_max_tile_rows,
            (ad.fused_tile_floats * 4) >> 10,
            ad.fused_max_step_mflop
                .map(|m| format!(", for steps of at most {m} MFLOP (larger ones: the layered kernels)"))
                .unwrap_or_default(),
            match (ad.looped_step, ad.loop_max_tiles) {
                (false, _) => "unavailable (too few storage buffers a stage)".to_string(),
                (true, 0) => "only with MDN_GPU_PATH=loop".to_string(),
                (true, 1) => "batches of one tile".to_string(),
                (true, n) => format!("batches of up to {n} tiles"),
            } + &ad
                .loop_max_barriers
                .map(|b| format!(", at most {b} barriers a dispatch"))
                .unwrap_or_default(),
        ));
    }
    s.push_str(&format!("--device auto picks {why}\n"));
    write_output(None, s.as_bytes())
}
pub fn check(a: CheckArgs) -> Result<()> {
    let (mut b, note) = backend::open(a.device.device, a.device.threads.map(|t| t as usize))?;
    let name = b.name();
    if name == "cpu" {
        // Comparing the CPU reference with itself would check nothing.
        return Err(Error::config(format!(
            "mdn check compares a GPU with the CPU reference, but --device {} is the CPU backend here{}: \
             use --device gpu for a hardware GPU or --device software for a software adapter",
            a.device.device.name(),
            note.map(|n| format!(" ({n})")).unwrap_or_default()
        )));
    }
    let rows = mdn::check::run(b.as_mut())?;
    let failed = rows.iter().filter(|r| !r.comparison.passed()).count();
    if a.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let c = &r.comparison;
                json!({
                    "kernel": r.kernel, "max_abs_err": c.max_abs, "max_rel_err": c.max_rel,
                    "tol_abs": c.tolerance.abs, "tol_rel": c.tolerance.rel, "pass": c.passed(),
                    "worst": c.worst.map(|(i, got, want)| json!({"index": i, "actual": got, "expected": want})),
                })
            })
            .collect();
        print_json(
            &json!({ "device": name, "reference": "cpu", "checks": items, "failed": failed }),
        )?;
    } else {
        let width = rows
            .iter()
            .map(|r| r.kernel.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut s = format!("{name} against the CPU reference\n");
        s.push_str(&format!(
            "{:<width$}  {:>11}  {:>11}  {:>17}  result\n",
            "kernel", "max abs err", "max rel err", "tolerance abs/rel"
        ));
        for r in &rows {
            let c = &r.comparison;
            s.push_str(&format!(
                "{:<width$}  {:>11.3e}  {:>11.3e}  {:>8.0e}/{:<8.0e}  {}\n",
                r.kernel,
                c.max_abs,
                c.max_rel,
                c.tolerance.abs,
                c.tolerance.rel,
                if c.passed() {
                    "pass".to_string()
                } else {
                    format!("FAIL: {c}")
                }
            ));
        }
        s.push_str(&format!(
            "{} checks, {} passed, {failed} failed\n",
            rows.len(),
            rows.len() - failed
        ));
        write_output(None, s.as_bytes())?;
    }
    if failed > 0 {
        return Err(mdn::Error::Numerical(format!(
            "{failed} parity check(s) failed on {name}"
        )));
    }
    Ok(())
}
pub fn bench(a: BenchArgs) -> Result<()> {
    if !(1..=100).contains(&a.ensemble) {
        return Err(mdn::Error::config(format!(
            "--ensemble must be between 1 and 100 networks, got {}",
            a.ensemble
        )));
    }
    let mut devices = a.devices.clone();
    // `auto` resolving to the CPU would time the CPU twice.
    if devices.contains(&DeviceChoice::Auto) && backend::auto_device().0 != DeviceChoice::Gpu {
        message(&format!(
            "note: --device auto picks {}; timing the CPU backend only",
            backend::auto_device().1
        ));
        devices.retain(|d| *d != DeviceChoice::Auto);
    }
    let quiet = a.json;
    let threads = if a.threads.is_empty() {
        mdn::bench::default_threads()
    } else {
        a.threads.clone()
    };
    let (results, ceilings) = mdn::bench::run_suite(
        &devices,
        &threads,
        &a.config,
        a.rows,
        a.epochs,
        a.ensemble,
        &mut |line| {
            if !quiet {
                message(line);
            }
        },
    )?;
    if a.json {
        let ceilings: Vec<serde_json::Value> = ceilings
            .iter()
            .map(|(b, g)| json!({"backend": b, "matmul_gflops": g}))
            .collect();
        return print_json(&json!({
            "results": results,
            "ceilings": ceilings,
            "cpu_isa": mdn::lanes::isa().name(),
        }));
    }
    write_output(None, mdn::bench::table(&results, &ceilings).as_bytes())
}
pub fn convert(a: ConvertArgs) -> Result<()> {
    mdn::atomic::check_not_input(&a.output, "the output", &[("input", &a.input)])?;
    let bar = row_counter(a.quiet, "converting");
    let columns = (!a.columns.is_empty()).then_some(a.columns.as_slice());
    let (rows, names) = mdn::data::convert(&a.input, &a.output, columns, &mut |n| {
        if let Some(b) = &bar {
            b.set_position(n as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        return print_json(
            &json!({ "input": a.input, "output": a.output, "rows": rows, "columns": names }),
        );
    }
    if !a.quiet {
        message(&format!(
            "wrote {}: {rows} rows x {} columns ({})",
            a.output.display(),
            names.len(),
            names.join(", ")
        ));
    }
    Ok(())
}
pub fn generate(a: GenerateArgs) -> Result<()> {
    if a.rows == 0 {
        return Err(Error::config("--rows must be at least 1"));
    }
    let mut g = mdn::synth::Generator::new(a.kind, a.seed);
    let (features, targets) = g.columns();
    let names: Vec<String> = features.iter().chain(&targets).cloned().collect();
    let mut out = mdn::data::TableWriter::create(&a.out, &names)?;
    let bar = row_counter(a.quiet, "generating");
    let (mut x, mut y, mut block) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while done < a.rows {
        let n = (a.rows - done).min(65536);
        block.clear();
        for _ in 0..n {
            x.clear();
            y.clear();
            g.row(&mut x, &mut y);
            block.extend_from_slice(&x);
            block.extend_from_slice(&y);
        }
        out.write_rows(&block)?;
        done += n;
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    }
    let rows = out.finish()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if !a.quiet {
        let kind = a.kind.name();
        message(&format!(
            "wrote {}: {rows} rows of {kind} ({} features, {} targets)",
            a.out.display(),
            features.len(),
            targets.len()
        ));
    }
    Ok(())
}
