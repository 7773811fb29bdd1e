//! Target transforms (`--transform log`, `logit:LOW,HIGH`, per target): a model of y through
//! z = g(y) is exactly the model of z with the Jacobian added to its NLLs; its answers are in
//! units of y and put no mass outside the support; values outside it are refused with their
//! place.

use std::path::Path;

use crate::support::{json, mdn, ok};

/// Deterministic uniform in [0, 1) from a row number.
fn unit(i: usize, salt: f64) -> f64 {
    let v = ((i as f64 + salt) * 12.9898).sin() * 43758.5453;
    v - v.floor()
}

/// Standard normal from a row number (Box-Muller).
fn normal(i: usize, salt: f64) -> f64 {
    let (u1, u2) = (unit(i, salt).max(1e-12), unit(i, salt + 0.5));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Rows of (x, price): ln price ~ N(0.6 x, 0.9^2), strongly right-skewed; each price as the
/// f32 mdn reads.
fn prices(rows: usize, salt: f64) -> Vec<(f32, f32)> {
    (0..rows)
        .map(|i| {
            let x = (3.0 * unit(i, salt + 7.0)) as f32;
            let y = (0.6 * x as f64 + 0.9 * normal(i, salt)).exp() as f32;
            (x, y)
        })
        .collect()
}

fn write(dir: &Path, name: &str, header: &str, rows: impl Iterator<Item = String>) {
    let mut s = format!("{header}\n");
    for r in rows {
        s.push_str(&r);
        s.push('\n');
    }
    std::fs::write(dir.join(name), s).unwrap();
}

fn read_json(path: &Path) -> serde_json::Value {
    json(&std::fs::read_to_string(path).unwrap())
}

/// The mean NLL `mdn eval --json` reports.
fn mean_nll(dir: &Path, model: &str, data: &str) -> f64 {
    let (out, _) = ok(
        dir,
        &[
            "eval", "--model", model, "--data", data, "--json", "--device", "cpu",
        ],
    );
    json(&out)["mean_nll"].as_f64().unwrap()
}

#[test]
fn a_log_transformed_model_is_the_model_of_log_y_with_the_jacobian() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = prices(800, 0.0);
    write(
        d,
        "y.csv",
        "x,price",
        rows.iter().map(|(x, y)| format!("{x},{y}")),
    );
    // ln y as mdn computes it (in f64, then to f32), written so that it reads back exactly.
    let ln = |y: f32| ((y as f64).ln() as f32).to_string();
    write(
        d,
        "lny.csv",
        "x,price",
        rows.iter().map(|(x, y)| format!("{x},{}", ln(*y))),
    );
    let mean_ln_y = rows.iter().map(|(_, y)| (*y as f64).ln()).sum::<f64>() / rows.len() as f64;
    for stream in [false, true] {
        let train = |data: &str, out: &str, extra: &[&str]| {
            let mut args = vec![
                "train", "--data", data, "--epochs", "6", "--out", out, "--quiet", "--device",
                "cpu",
            ];
            if stream {
                args.push("--stream");
            }
            args.extend_from_slice(extra);
            ok(d, &args);
            read_json(&d.join(out))
        };
        let logged = train("y.csv", "log.json", &["--transform", "log"]);
        let of_ln = train("lny.csv", "ln.json", &[]);
        assert_eq!(logged["format_version"], 4);
        assert_eq!(logged["transforms"], serde_json::json!(["log"]));
        assert_eq!(of_ln.get("transforms"), None);
        assert_eq!(logged["params"], of_ln["params"], "stream {stream}");
        assert_eq!(logged["y_scaler"], of_ln["y_scaler"]);
        // The training record's NLLs differ by the mean ln y of their rows: a constant per
        // set of rows (training, validation), the same at every epoch.
        let (a, b) = (
            logged["training"]["history"].as_array().unwrap(),
            of_ln["training"]["history"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for key in ["train_nll", "val_nll"] {
            let diffs: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(p, q)| p[key].as_f64().unwrap() - q[key].as_f64().unwrap())
                .collect();
            let worst = diffs
                .iter()
                .map(|v| (v - diffs[0]).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-9, "{key} offsets {diffs:?} (stream {stream})");
            assert!(
                (diffs[0] - mean_ln_y).abs() < 0.3,
                "{key} offset {} far from the mean ln y {mean_ln_y}",
                diffs[0]
            );
        }
        // mdn eval: NLL of y = NLL of ln y + mean ln y, to f64 rounding.
        let (ny, nz) = (
            mean_nll(d, "log.json", "y.csv"),
            mean_nll(d, "ln.json", "lny.csv"),
        );
        let want = nz + mean_ln_y;
        assert!(
            (ny - want).abs() < 1e-9 * want.abs().max(1.0),
            "eval NLL {ny} vs {nz} + {mean_ln_y} = {want}"
        );
    }
    // The per-row log-likelihoods likewise.
    let per_row = |model: &str, data: &str| -> Vec<f64> {
        let (out, _) = ok(
            d,
            &[
                "eval",
                "--model",
                model,
                "--data",
                data,
                "--per-row",
                "--device",
                "cpu",
            ],
        );
        out.lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (ly, lz) = (per_row("log.json", "y.csv"), per_row("ln.json", "lny.csv"));
    let worst = ly
        .iter()
        .zip(&lz)
        .zip(&rows)
        .map(|((a, b), (_, y))| (a - (b - (*y as f64).ln())).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-9, "per-row log-likelihoods: worst {worst}");
    // mdn info names the transform.
    let (info, _) = ok(d, &["info", "log.json"]);
    assert!(info.contains("-> [price (log)]"), "{info}");
}

#[test]
fn log_transformed_predictions_put_no_mass_below_zero_and_fit_skewed_targets_better() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let line = |(x, y): &(f32, f32)| format!("{x},{y}");
    write(
        d,
        "train.csv",
        "x,price",
        prices(3000, 0.0).iter().map(line),
    );
    write(
        d,
        "test.csv",
        "x,price",
        prices(1000, 99.0).iter().map(line),
    );
    let fit = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            "train.csv",
            "--components",
            "2",
            "--out",
            out,
            "--quiet",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        ok(d, &args);
    };
    fit("log.json", &["--transform", "log"]);
    fit("plain.json", &[]);
    let (log_nll, plain_nll) = (
        mean_nll(d, "log.json", "test.csv"),
        mean_nll(d, "plain.json", "test.csv"),
    );
    assert!(
        log_nll < plain_nll - 0.05,
        "held-out NLL with --transform log {log_nll}, without {plain_nll}"
    );

    // Quantiles, mean and mode are positive; the mean is the log-normal mixture's.
    let (out, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "log.json",
            "--data",
            "test.csv",
            "--quantiles",
            "0.000001,0.5",
            "--json",
            "--device",
            "cpu",
        ],
    );
    let doc = json(&out);
    assert_eq!(doc["transforms"], serde_json::json!(["log"]));
    for row in doc["rows"].as_array().unwrap() {
        let lowest = row["quantiles"]["0.000001"][0].as_f64().unwrap();
        assert!(lowest > 0.0, "a quantile at or below zero: {row}");
        assert!(row["mode"][0].as_f64().unwrap() > 0.0);
        let (pi, mu, sigma) = (&row["pi"], &row["mu"], &row["sigma"]);
        let mean: f64 = (0..2)
            .map(|c| {
                let (m, s) = (mu[c][0].as_f64().unwrap(), sigma[c][0].as_f64().unwrap());
                pi[c].as_f64().unwrap() * (m + 0.5 * s * s).exp()
            })
            .sum();
        let got = row["mean"][0].as_f64().unwrap();
        assert!((got - mean).abs() <= 1e-12 * mean, "mean {got} vs {mean}");
    }
    // Samples are positive.
    let (samples, _) = ok(
        d,
        &[
            "sample", "--model", "log.json", "--data", "test.csv", "-n", "20", "--device", "cpu",
        ],
    );
    for l in samples.lines().skip(1) {
        let v: f64 = l.split(',').nth(2).unwrap().parse().unwrap();
        assert!(v > 0.0 && v.is_finite(), "sample {v}");
    }

    // A value outside the support is refused with its place, by train and by eval.
    std::fs::write(d.join("zero.csv"), "x,price\n1,2.5\n2,0\n").unwrap();
    for args in [
        vec!["train", "--data", "zero.csv", "--transform", "log"],
        vec!["eval", "--model", "log.json", "--data", "zero.csv"],
    ] {
        let out = mdn(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("zero.csv:3:2") && err.contains("positive"),
            "{args:?}: {err}"
        );
    }
    // Far samples stay in the support (e^z past f64's range is the largest or smallest
    // positive f64, never 0 or inf).
    let (samples, _) = ok(
        d,
        &[
            "sample",
            "--model",
            "log.json",
            "--data",
            "test.csv",
            "-n",
            "50",
            "--sigma-scale",
            "300",
            "--device",
            "cpu",
        ],
    );
    for l in samples.lines().skip(1) {
        let v: f64 = l.split(',').nth(2).unwrap().parse().unwrap();
        assert!(v > 0.0 && v.is_finite(), "sample {v}");
    }
    // In a .npy file (no lines), the row in the array, the same for every reader.
    std::fs::write(d.join("zero.csv"), "x,price\n1,2.5\n2,0\n").unwrap();
    ok(d, &["convert", "zero.csv", "zero.npy"]);
    for args in [
        vec!["train", "--data", "zero.npy", "--transform", "log"],
        vec![
            "train",
            "--data",
            "zero.npy",
            "--transform",
            "log",
            "--stream",
        ],
        vec!["eval", "--model", "log.json", "--data", "zero.npy"],
    ] {
        let out = mdn(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(
                "zero.npy: row 1 (counting from 0), target 'price': 0 is outside the support"
            ),
            "{args:?}: {err}"
        );
    }
    // A value that is inside the support as written but not as a 32-bit float says so.
    std::fs::write(d.join("tiny.csv"), "x,price\n1,2.5\n2,1e-50\n").unwrap();
    let out = mdn(d, &["eval", "--model", "log.json", "--data", "tiny.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "tiny.csv:3:2 (column 'price'): '1e-50' (read as the 32-bit float 0) is outside"
        ),
        "{err}"
    );
    // A bad spec is refused before the data is read.
    let out = mdn(
        d,
        &["train", "--data", "missing.csv", "--transform", "log2"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown transform 'log2'"), "{err}");
    // Options that make no sense are named.
    for (spec, says) in [
        ("logit", "logit:LOW,HIGH"),
        ("logit:1,0", "LOW < HIGH"),
        ("sqrt", "unknown transform 'sqrt'"),
        ("cost=log", "'cost' is not a target"),
        ("price=log;price=none", "'price' is named twice"),
        ("", "is empty"),
    ] {
        let out = mdn(
            d,
            &[
                "train",
                "--data",
                "train.csv",
                "--transform",
                spec,
                "--epochs",
                "1",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert!(err.contains(says), "{spec}: {err}");
    }
    // The ONNX export refuses rather than give mixture parameters of ln y as if of y.
    let out = mdn(d, &["export", "log.json", "--out", "m.onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("transforms its targets"));
    assert!(!d.join("m.onnx").exists());
}

#[test]
fn logit_per_target_keeps_each_target_in_its_bounds_for_ensembles_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // share in (0, 1), concentrated near 1 for large x; cost positive.
    write(
        d,
        "t.csv",
        "x,share,cost",
        (0..1200).map(|i| {
            let x = 4.0 * unit(i, 3.0) - 2.0;
            let z = 1.5 * x + 0.5 * normal(i, 1.0);
            let share = 1.0 / (1.0 + (-z).exp());
            let cost = (0.3 * x + 0.5 * normal(i, 2.0)).exp();
            format!("{x},{},{}", share.clamp(1e-6, 1.0 - 1e-6), cost)
        }),
    );
    ok(
        d,
        &[
            "train",
            "--data",
            "t.csv",
            "--target",
            "share,cost",
            "--transform",
            "share=logit:0,1; cost=log",
            "--epochs",
            "8",
            "--ensemble",
            "2",
            "--out",
            "m.json",
            "--quiet",
            "--device",
            "cpu",
        ],
    );
    let model = read_json(&d.join("m.json"));
    assert_eq!(model["transforms"], serde_json::json!(["logit:0,1", "log"]));
    assert_eq!(model["members"][0]["transforms"], model["transforms"]);
    let (out, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "t.csv",
            "--quantiles",
            "0.001,0.999",
            "--json",
            "--device",
            "cpu",
        ],
    );
    for row in json(&out)["rows"].as_array().unwrap() {
        let q = &row["quantiles"];
        for level in ["0.001", "0.999"] {
            let (share, cost) = (q[level][0].as_f64().unwrap(), q[level][1].as_f64().unwrap());
            assert!(share > 0.0 && share < 1.0, "share quantile {share}");
            assert!(cost > 0.0, "cost quantile {cost}");
        }
        let mean = row["mean"][0].as_f64().unwrap();
        assert!(mean > 0.0 && mean < 1.0);
        let mode = row["mode"][0].as_f64().unwrap();
        assert!(mode > 0.0 && mode < 1.0, "mode {mode}");
        // The ensemble's variance still splits into its two parts.
        let (v, a, e) = (
            row["variance"][0].as_f64().unwrap(),
            row["aleatoric_variance"][0].as_f64().unwrap(),
            row["epistemic_variance"][0].as_f64().unwrap(),
        );
        assert!((a + e - v).abs() <= 1e-6 * v, "{a} + {e} vs {v}");
    }
    // Samples far out (sigma-scale 20) stay strictly inside (0, 1).
    let (samples, _) = ok(
        d,
        &[
            "sample",
            "--model",
            "m.json",
            "--data",
            "t.csv",
            "-n",
            "5",
            "--sigma-scale",
            "20",
            "--device",
            "cpu",
        ],
    );
    for l in samples.lines().skip(1) {
        let share: f64 = l.split(',').nth(2).unwrap().parse().unwrap();
        assert!(share > 0.0 && share < 1.0, "sample {share}");
    }
    // mdn info --json names the transforms.
    let (info, _) = ok(d, &["info", "m.json", "--json"]);
    assert_eq!(
        json(&info)["transforms"],
        serde_json::json!(["logit:0,1", "log"])
    );
    // A share of exactly 1 is outside logit:0,1.
    std::fs::write(d.join("one.csv"), "x,share,cost\n0.5,1,2\n").unwrap();
    let out = mdn(d, &["eval", "--model", "m.json", "--data", "one.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("one.csv:2:2") && err.contains("strictly between 0 and 1"),
        "{err}"
    );
}
