//! `mdn export --format onnx`, run by tract (a Rust ONNX runtime nobody here wrote) and
//! compared with `mdn predict --json` on the same rows, extremes included, for diagonal and
//! full-covariance models, tanh and deep networks, and ensembles. (ONNX Runtime runs the same
//! files in python/tests/test_onnx.py.)

use std::path::Path;
use std::process::Command;

use mdn::tolerance::Tolerance;
use tract_onnx::prelude::*;

fn mdn(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(args)
        .current_dir(dir)
        .env_remove("MDN_DEVICE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mdn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A CSV of `rows` rows: `d` features in [-1, 1] and `targets` noisy functions of them.
fn write_rows(path: &Path, rows: &[Vec<f32>], d: usize, targets: usize) {
    let mut s: Vec<String> = vec![
        (0..d)
            .map(|i| format!("x{i}"))
            .chain((0..targets).map(|j| format!("y{j}")))
            .collect::<Vec<_>>()
            .join(","),
    ];
    for r in rows {
        s.push(
            r.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    std::fs::write(path, s.join("\n") + "\n").unwrap();
}

fn training_rows(d: usize, targets: usize) -> Vec<Vec<f32>> {
    let mut state = 12345u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    (0..500)
        .map(|_| {
            let x: Vec<f32> = (0..d).map(|_| uniform()).collect();
            let y = (0..targets)
                .map(|j| (3.0 * x[0] + j as f32).sin() + 0.2 * uniform() * (1.0 + x[d - 1]));
            x.iter().copied().chain(y).collect()
        })
        .collect()
}

/// Ordinary rows, the training range's edges, far beyond it, and zeros.
fn extreme_rows(d: usize, targets: usize) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = (0..20)
        .map(|i| {
            (0..d)
                .map(|j| ((i * 7 + j * 3) % 21) as f32 / 10.0 - 1.0)
                .collect()
        })
        .collect();
    for v in [-1.0, 1.0, 25.0, -40.0, 0.0] {
        rows.push(vec![v; d]);
    }
    rows.iter()
        .map(|r| {
            r.iter()
                .copied()
                .chain(std::iter::repeat_n(0.0, targets))
                .collect()
        })
        .collect()
}

/// Every number of a JSON value, depth first.
fn numbers(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|v| numbers(v, out)),
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
        other => panic!("not a number: {other}"),
    }
}

fn check_kind(name: &str, d: usize, targets: usize, flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_rows(&p.join("train.csv"), &training_rows(d, targets), d, targets);
    let target = (0..targets)
        .map(|j| format!("y{j}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec![
        "train",
        "--data",
        "train.csv",
        "--target",
        &target,
        "--epochs",
        "25",
        "--seed",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ];
    args.extend_from_slice(flags);
    mdn(p, &args);
    mdn(p, &["export", "model.json", "--out", "model.onnx"]);
    let rows = extreme_rows(d, targets);
    write_rows(&p.join("rows.csv"), &rows, d, targets);
    let json: serde_json::Value = serde_json::from_str(&mdn(
        p,
        &["predict", "--data", "rows.csv", "--json", "--device", "cpu"],
    ))
    .unwrap();
    let want_rows = json["rows"].as_array().unwrap();

    let n = rows.len();
    let x: Vec<f32> = rows.iter().flat_map(|r| r[..d].to_vec()).collect();
    let plan = tract_onnx::onnx()
        .model_for_path(p.join("model.onnx"))
        .unwrap()
        .with_input_fact(0, f32::fact([n, d]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input: Tensor = tract_ndarray::Array2::from_shape_vec((n, d), x)
        .unwrap()
        .into();
    let outputs = plan.run(tvec!(input.into())).unwrap();
    let full = flags.contains(&"full");
    let names: Vec<&str> = if full {
        vec!["pi", "mu", "sigma", "scale_tril", "mean", "variance"]
    } else {
        vec!["pi", "mu", "sigma", "mean", "variance"]
    };
    assert_eq!(outputs.len(), names.len(), "{name}: outputs");
    // Relative 1e-5, and 1e-5 of the targets' scale for values that cancel to near zero.
    let tol = Tolerance::new(1e-5, 1e-5);
    for (i, out) in outputs.iter().enumerate() {
        let got: Vec<f64> = out
            .to_array_view::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        if names[i] == "scale_tril" {
            // Compared through the covariance L L^T, which mdn predict --json reports.
            let mut want = Vec::new();
            want_rows.iter().for_each(|r| numbers(&r["cov"], &mut want));
            let kk = want.len() / (n * targets * targets);
            let mut cov = vec![0.0; want.len()];
            for b in 0..n * kk {
                let l = &got[b * targets * targets..(b + 1) * targets * targets];
                for a in 0..targets {
                    for c in 0..targets {
                        cov[b * targets * targets + a * targets + c] = (0..targets)
                            .map(|m| l[a * targets + m] * l[c * targets + m])
                            .sum();
                    }
                }
            }
            tol.assert_close(&format!("{name}: covariance"), &cov, &want);
            continue;
        }
        let mut want = Vec::new();
        want_rows
            .iter()
            .for_each(|r| numbers(&r[names[i]], &mut want));
        tol.assert_close(&format!("{name}: {}", names[i]), &got, &want);
    }
}

#[test]
fn tract_runs_the_onnx_graph_to_what_mdn_predict_gives() {
    check_kind("diagonal", 2, 1, &["--components", "3"]);
    check_kind(
        "tanh, deep",
        3,
        2,
        &[
            "--activation",
            "tanh",
            "--hidden",
            "32,32,16",
            "--components",
            "4",
        ],
    );
    check_kind(
        "full covariance",
        2,
        3,
        &["--covariance", "full", "--components", "2"],
    );
    check_kind(
        "full covariance, one target",
        1,
        1,
        &["--covariance", "full"],
    );
    check_kind(
        "an ensemble",
        2,
        2,
        &["--ensemble", "3", "--components", "2"],
    );
}

#[test]
fn a_categorical_model_takes_its_indicator_columns_named_in_the_metadata() {
    use onnx_protobuf::{Message, ModelProto};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let fuels = ["diesel", "petrol", "electric"];
    let mut csv = String::from("age,fuel,price\n");
    for i in 0..300 {
        let age = (i * 7 % 150) as f32 / 10.0;
        let base = [20.0f32, 18.0, 35.0][i % 3] * (-0.08 * age).exp();
        csv.push_str(&format!("{age},{},{base}\n", fuels[i % 3]));
    }
    std::fs::write(p.join("cars.csv"), csv).unwrap();
    mdn(
        p,
        &[
            "train", "--data", "cars.csv", "--epochs", "10", "--seed", "2", "--device", "cpu",
            "--quiet",
        ],
    );
    mdn(p, &["export", "model.json", "--out", "model.onnx"]);
    let proto =
        ModelProto::parse_from_bytes(&std::fs::read(p.join("model.onnx")).unwrap()).unwrap();
    let meta = |key: &str| -> serde_json::Value {
        let prop = proto.metadata_props.iter().find(|m| m.key == key).unwrap();
        serde_json::from_str(&prop.value).unwrap()
    };
    assert_eq!(
        meta("categorical"),
        serde_json::json!([{"column": "fuel", "categories": ["diesel", "electric", "petrol"]}])
    );
    assert_eq!(
        meta("features"),
        serde_json::json!(["age", "fuel=diesel", "fuel=electric", "fuel=petrol"])
    );
    // The graph on the indicator columns gives what mdn predict gives on the text.
    let rows = [
        (1.5f32, "diesel"),
        (7.0, "electric"),
        (12.25, "petrol"),
        (30.0, "electric"),
    ];
    let mut text = String::from("age,fuel\n");
    for (age, fuel) in rows {
        text.push_str(&format!("{age},{fuel}\n"));
    }
    std::fs::write(p.join("rows.csv"), text).unwrap();
    let json: serde_json::Value = serde_json::from_str(&mdn(
        p,
        &["predict", "--data", "rows.csv", "--json", "--device", "cpu"],
    ))
    .unwrap();
    let mut want = Vec::new();
    json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(|r| numbers(&r["mean"], &mut want));
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&(age, fuel)| {
            std::iter::once(age)
                .chain(["diesel", "electric", "petrol"].map(|c| (c == fuel) as u8 as f32))
        })
        .collect();
    let plan = tract_onnx::onnx()
        .model_for_path(p.join("model.onnx"))
        .unwrap()
        .with_input_fact(0, f32::fact([rows.len(), 4]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input: Tensor = tract_ndarray::Array2::from_shape_vec((rows.len(), 4), x)
        .unwrap()
        .into();
    let outputs = plan.run(tvec!(input.into())).unwrap();
    let got: Vec<f64> = outputs[3]
        .to_array_view::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    Tolerance::new(1e-5, 1e-5).assert_close("categorical: mean", &got, &want);
}
