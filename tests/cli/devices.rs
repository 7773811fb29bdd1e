//! `mdn devices`, `check` and `bench`; the `--device` option, `MDN_DEVICE` and what
//! `--device auto` picks; probing for a GPU without a desktop session; `--help` and
//! `--version`.

use std::process::Command;

use crate::support::{asset, json, mdn, ok, software_adapter};

#[test]
fn devices_lists_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (text, _) = ok(dir.path(), &["devices"]);
    assert!(text.contains("cpu"));
    let (j, _) = ok(dir.path(), &["devices", "--json"]);
    assert_eq!(json(&j)["cpu"]["kind"], "cpu");
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let (help, _) = ok(dir.path(), &["--help"]);
    for cmd in ["train", "eval", "predict", "sample", "devices", "check"] {
        assert!(help.contains(cmd), "{help}");
    }
    let (v, _) = ok(dir.path(), &["--version"]);
    assert!(v.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn device_option_picks_the_backend_and_results_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (cpu, _) = ok(
        dir.path(),
        &[
            "train", "--device", "cpu", "--epochs", "3", "--json", "--quiet", "--out", "m.json",
        ],
    );
    assert_eq!(json(&cpu)["backend"], "cpu");
    let out = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args([
            "train", "--epochs", "1", "--json", "--quiet", "--out", "e.json",
        ])
        .env("MDN_DEVICE", "cpu")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["backend"],
        "cpu",
        "MDN_DEVICE is honoured"
    );
    if !software_adapter(dir.path()) {
        return;
    }
    let (sw, _) = ok(
        dir.path(),
        &[
            "train", "--device", "software", "--epochs", "3", "--json", "--quiet", "--out",
            "g.json",
        ],
    );
    let backend = json(&sw)["backend"].as_str().unwrap().to_string();
    assert!(backend.contains("Cpu") && backend != "cpu", "{backend}");
    let test = asset("bishop_test.csv");
    let test = test.to_str().unwrap();
    for cmd in [
        &["eval", "--json"][..],
        &["predict", "--json"],
        &["sample", "--json", "--n", "2"],
    ] {
        let mut on_cpu = cmd.to_vec();
        on_cpu.extend_from_slice(&["--model", "m.json", "--data", test, "--device", "cpu"]);
        let mut on_gpu = cmd.to_vec();
        on_gpu.extend_from_slice(&["--model", "m.json", "--data", test, "--device", "software"]);
        let (a, _) = ok(dir.path(), &on_cpu);
        let (b, _) = ok(dir.path(), &on_gpu);
        let (a, b) = (json(&a), json(&b));
        let flat = |v: &serde_json::Value| -> Vec<f64> {
            let mut out = Vec::new();
            fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
                match v {
                    serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
                    serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                    serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
                    _ => {}
                }
            }
            walk(v, &mut out);
            out
        };
        mdn::tolerance::Tolerance::new(1e-4, 1e-4).assert_close(
            &format!("{cmd:?} on GPU vs CPU"),
            &flat(&b),
            &flat(&a),
        );
    }
    // The model trained on the GPU follows the CPU-trained one.
    let (e1, _) = ok(
        dir.path(),
        &[
            "eval", "--model", "g.json", "--data", test, "--json", "--device", "cpu",
        ],
    );
    let (e2, _) = ok(
        dir.path(),
        &[
            "eval", "--model", "m.json", "--data", test, "--json", "--device", "cpu",
        ],
    );
    let (n1, n2) = (
        json(&e1)["mean_nll"].as_f64().unwrap(),
        json(&e2)["mean_nll"].as_f64().unwrap(),
    );
    assert!(
        (n1 - n2).abs() < 1e-3,
        "GPU-trained {n1} vs CPU-trained {n2}"
    );
}

#[test]
fn check_prints_the_parity_table() {
    let dir = tempfile::tempdir().unwrap();
    if !software_adapter(dir.path()) {
        return;
    }
    let (text, _) = ok(dir.path(), &["check", "--device", "software"]);
    assert!(text.contains("against the CPU reference"), "{text}");
    assert!(
        text.contains("max abs err") && text.contains("tolerance"),
        "{text}"
    );
    for kernel in [
        "forward",
        "gradient",
        "mixture head loglik",
        "adam",
        "training, 3 epochs",
    ] {
        assert!(text.contains(kernel), "{kernel} missing from {text}");
    }
    assert!(text.contains(" 0 failed"), "{text}");
    let (j, _) = ok(dir.path(), &["check", "--device", "software", "--json"]);
    let v = json(&j);
    assert_eq!(v["failed"], 0);
    assert!(v["checks"].as_array().unwrap().len() >= 20);
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["pass"] == true)
    );
}

#[test]
fn missing_adapters_give_clear_errors_and_auto_falls_back() {
    // WGPU_BACKEND=metal leaves no usable adapter on Linux: what a machine without drivers sees.
    if !cfg!(target_os = "linux") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mdn"))
            .args(args)
            .env("WGPU_BACKEND", "metal")
            .env_remove("MDN_DEVICE")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    for device in ["gpu", "software"] {
        let out = run(&["train", "--device", device, "--epochs", "1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("mesa-vulkan-drivers") && err.contains("--device cpu"),
            "{err}"
        );
        assert!(!dir.path().join("model.json").exists());
    }
    let out = run(&["train", "--epochs", "1", "--json"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device auto: the CPU backend: no GPU adapter found"),
        "{err}"
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["backend"],
        "cpu"
    );
    let out = run(&["devices"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no GPU adapters"));
}

#[test]
fn devices_lists_the_software_adapter_with_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    if !software_adapter(dir.path()) {
        return;
    }
    let (text, _) = ok(dir.path(), &["devices"]);
    assert!(
        text.contains("software")
            && text.contains("max storage binding")
            && text.contains("subgroup size"),
        "{text}"
    );
    let (j, _) = ok(dir.path(), &["devices", "--json"]);
    let a = &json(&j)["adapters"][0];
    assert!(a["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
}

#[test]
fn bench_prints_figures_for_each_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (text, err) = ok(
        dir.path(),
        &[
            "bench",
            "--rows",
            "3000",
            "--epochs",
            "1",
            "--devices",
            "cpu",
        ],
    );
    assert!(
        text.contains("rows/s") && text.contains("matmul ceiling on cpu"),
        "{text}"
    );
    assert!(err.contains("config a on cpu"), "{err}");
    let mut devices = "cpu".to_string();
    if software_adapter(dir.path()) {
        devices.push_str(",software");
    }
    let (j, _) = ok(
        dir.path(),
        &[
            "bench",
            "--rows",
            "3000",
            "--epochs",
            "2",
            "--devices",
            &devices,
            "--config",
            "a,b,c",
            "--threads",
            "1,2",
            "--json",
        ],
    );
    let v = json(&j);
    let results = v["results"].as_array().unwrap();
    // Three configs (c: full covariance) on the CPU at 1 and 2 threads, and on the software
    // adapter.
    let backends = devices.split(',').count() + 1;
    assert_eq!(results.len(), 3 * backends);
    assert_eq!(results[0]["backend"], "cpu, 1 thread");
    assert_eq!(results[3]["backend"], "cpu, 2 threads");
    assert_eq!(results[2]["config"], "c");
    for r in results {
        assert!(r["rows_per_sec"].as_f64().unwrap() > 0.0);
        assert!(r["gflops"].as_f64().unwrap() > 0.0);
        assert!(r["last_train_nll"].as_f64().unwrap().is_finite());
        // The GPU's structure: config a is the fused step's 2 dispatches; on a software
        // adapter the larger steps of b and c take the layered path (many); the CPU has none.
        let d = &r["dispatches_per_step"];
        match (
            r["backend"].as_str().unwrap(),
            r["config"].as_str().unwrap(),
        ) {
            (b, _) if b.starts_with("cpu") => assert!(d.is_null(), "{r}"),
            (_, "a") => assert_eq!(d.as_f64(), Some(2.0), "{r}"),
            _ => assert!(d.as_f64().unwrap() >= 2.0, "{r}"),
        }
    }
    assert_eq!(v["ceilings"].as_array().unwrap().len(), backends);
    let out = mdn(dir.path(), &["bench", "--config", "z", "--devices", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `--device auto` picks a hardware GPU or the CPU backend, never a software adapter (which
/// is several times slower than the CPU backend): on a machine with only lavapipe, auto
/// trains on the CPU, and `mdn devices` says what auto picks and why.
#[test]
fn auto_never_picks_a_software_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = ok(dir.path(), &["devices", "--json"]);
    let v = json(&j);
    let hardware = v["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["hardware"] == true);
    let want = if hardware { "gpu" } else { "cpu" };
    assert_eq!(v["auto"]["device"], want, "{v}");
    let (text, _) = ok(dir.path(), &["devices"]);
    assert!(text.contains("--device auto picks"), "{text}");
    let (out, err) = ok(dir.path(), &["train", "--epochs", "1", "--json"]);
    let backend = json(&out)["backend"].as_str().unwrap().to_string();
    if !hardware {
        assert_eq!(backend, "cpu", "{err}");
        assert!(err.contains("--device auto: the CPU backend"), "{err}");
    }
    for a in v["adapters"].as_array().unwrap() {
        if a["hardware"] == false {
            assert_ne!(backend, a["name"].as_str().unwrap(), "{err}");
        }
    }
}

/// `mdn check` compares a GPU with the CPU; on the CPU backend it would compare the reference
/// with itself, so it refuses (`--device auto` is the CPU on a machine without a GPU).
#[test]
fn check_refuses_to_compare_the_cpu_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = mdn(dir.path(), &["check", "--device", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--device software"), "{err}");
}

#[test]
fn probing_for_a_gpu_printed_mesa_xdg_runtime_dir_errors() {
    // Without a desktop session, Mesa's device-select layer printed "error: XDG_RUNTIME_DIR
    // is invalid or not set in the environment." twice on every command that probed for a
    // GPU (train, eval, predict, sample, plot with --device auto), which read as mdn's own
    // error. mdn now turns that layer off unless NODEVICE_SELECT is set, and plot with
    // --device auto computes on the CPU without probing.
    let dir = tempfile::tempdir().unwrap();
    let quiet = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mdn"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("MDN_DEVICE")
            .env_remove("NODEVICE_SELECT")
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .expect("run mdn");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "mdn {args:?}: {err}");
        assert!(
            !err.contains("XDG_RUNTIME_DIR"),
            "mdn {args:?} printed: {err}"
        );
    };
    let data = asset("bishop.csv");
    let data = data.to_str().unwrap();
    quiet(&["train", "--data", data, "--epochs", "1", "--quiet"]);
    quiet(&["eval", "--data", data]);
    quiet(&["predict", "--data", data, "--out", "p.csv"]);
    quiet(&["sample", "--data", data, "--out", "s.csv"]);
    quiet(&["plot", "--out", "f.png", "--quiet"]);
    quiet(&["info"]);
    quiet(&["devices"]);
}
