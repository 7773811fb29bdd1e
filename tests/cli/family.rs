//! Student's t components (`--family student-t`): on heavy-tailed noise they fit better than
//! Gaussian ones on held-out rows; the model file, `predict`, `sample`, `info` and the
//! refusals say what the model is.

use std::path::Path;

use crate::support::{json, mdn, ok};

/// Deterministic uniform in (0, 1) from a row number.
fn unit(i: usize, salt: f64) -> f64 {
    let v = ((i as f64 + salt) * 12.9898).sin() * 43758.5453;
    (v - v.floor()).clamp(1e-12, 1.0 - 1e-12)
}

/// Standard normal from a row number (Box-Muller).
fn normal(i: usize, salt: f64) -> f64 {
    (-2.0 * unit(i, salt).ln()).sqrt() * (std::f64::consts::TAU * unit(i, salt + 0.5)).cos()
}

/// Student's t with 3 degrees of freedom: a normal over sqrt(chi²(3) / 3).
fn t3(i: usize, salt: f64) -> f64 {
    let chi2: f64 = (1..=3)
        .map(|s| normal(i, salt + 10.0 * s as f64).powi(2))
        .sum();
    normal(i, salt) / (chi2 / 3.0).sqrt()
}

/// Rows of x, y = sin(2x) + 0.3 t3 noise.
fn write_heavy(dir: &Path, name: &str, rows: usize, salt: f64) {
    let mut s = String::from("x,y\n");
    for i in 0..rows {
        let x = 3.0 * unit(i, salt + 3.0);
        let y = (2.0 * x).sin() + 0.3 * t3(i, salt);
        s.push_str(&format!("{x},{y}\n"));
    }
    std::fs::write(dir.join(name), s).unwrap();
}

fn mean_nll(dir: &Path, model: &str) -> f64 {
    let (out, _) = ok(
        dir,
        &[
            "eval", "--model", model, "--data", "test.csv", "--json", "--device", "cpu",
        ],
    );
    json(&out)["mean_nll"].as_f64().unwrap()
}

#[test]
fn student_t_components_fit_heavy_tailed_noise_better_than_gaussian_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_heavy(d, "train.csv", 3000, 0.0);
    write_heavy(d, "test.csv", 2000, 0.37);
    for (family, out) in [("gaussian", "g.json"), ("student-t", "t.json")] {
        ok(
            d,
            &[
                "train",
                "--data",
                "train.csv",
                "--components",
                "1",
                "--hidden",
                "32",
                "--family",
                family,
                "--out",
                out,
                "--quiet",
                "--device",
                "cpu",
            ],
        );
    }
    let (g, t) = (mean_nll(d, "g.json"), mean_nll(d, "t.json"));
    assert!(t < g - 0.05, "held-out NLL: student-t {t}, gaussian {g}");

    let file = json(&std::fs::read_to_string(d.join("t.json")).unwrap());
    assert_eq!(file["format_version"], 5);
    assert_eq!(file["arch"]["family"], "student-t");
    let gauss = json(&std::fs::read_to_string(d.join("g.json")).unwrap());
    assert_eq!(
        gauss["format_version"], 1,
        "Gaussian models keep their old format"
    );
    assert!(gauss["arch"].get("family").is_none());

    // The learnt degrees of freedom: heavy tails (the noise has 3), all above 2.
    let (out, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "t.json",
            "--data",
            "test.csv",
            "--quantiles",
            "0.05,0.95",
            "--json",
            "--device",
            "cpu",
        ],
    );
    let pred = json(&out);
    assert_eq!(pred["family"], "student-t");
    let rows = pred["rows"].as_array().unwrap();
    let dofs: Vec<f64> = rows.iter().map(|r| r["dof"][0].as_f64().unwrap()).collect();
    let mean_dof = dofs.iter().sum::<f64>() / dofs.len() as f64;
    assert!(dofs.iter().all(|&v| v > 2.0), "dof {dofs:?}");
    assert!(mean_dof < 6.0, "mean dof {mean_dof} on t(3) noise");
    // The 90% interval covers about 90% of held-out rows.
    let ys: Vec<f64> = std::fs::read_to_string(d.join("test.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let inside = rows
        .iter()
        .zip(&ys)
        .filter(|(r, y)| {
            let (lo, hi) = (
                r["quantiles"]["0.05"][0].as_f64().unwrap(),
                r["quantiles"]["0.95"][0].as_f64().unwrap(),
            );
            lo <= **y && **y <= hi
        })
        .count() as f64
        / ys.len() as f64;
    assert!((inside - 0.9).abs() < 0.03, "coverage {inside}");

    // Samples have the heavy tails: some beyond 5 scales, as a t(3) has and a normal not.
    let (samples, _) = ok(
        d,
        &[
            "sample", "--model", "t.json", "--data", "test.csv", "-n", "5", "--seed", "1",
            "--device", "cpu",
        ],
    );
    let draws: Vec<f64> = samples
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(draws.len(), 10_000);
    assert!(draws.iter().all(|v| v.is_finite()));

    let (info, _) = ok(d, &["info", "t.json"]);
    assert!(info.contains("Student's t components"), "{info}");
}

#[test]
fn student_t_refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_heavy(d, "train.csv", 200, 0.0);
    let out = mdn(d, &["train", "--data", "train.csv", "--family", "cauchy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("student-t"), "{err}");
    let out = mdn(
        d,
        &[
            "train",
            "--data",
            "train.csv",
            "--family",
            "student-t",
            "--transform",
            "log",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--transform") && err.contains("not supported"),
        "{err}"
    );
    assert!(!d.join("model.json").exists());
    ok(
        d,
        &[
            "train",
            "--data",
            "train.csv",
            "--family",
            "student-t",
            "--epochs",
            "2",
            "--out",
            "t.json",
            "--quiet",
            "--device",
            "cpu",
        ],
    );
    let out = mdn(d, &["export", "t.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Student's t"), "{err}");
    assert!(!d.join("t.onnx").exists());
    // A model file edited to transform a t model's target is refused on loading.
    let mut v = json(&std::fs::read_to_string(d.join("t.json")).unwrap());
    v["transforms"] = serde_json::json!(["log"]);
    std::fs::write(d.join("edited.json"), v.to_string()).unwrap();
    let out = mdn(d, &["info", "edited.json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("transformed targets are not supported"),
        "{err}"
    );
}

/// `mdn select --family gaussian,student-t` compares the families by cross-validation in one
/// run and, on t(3) noise, chooses Student's t (its NLL lower by far more than a standard
/// error), writing that model.
#[test]
fn select_compares_the_families_and_chooses_student_t_on_heavy_tails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_heavy(d, "train.csv", 2000, 0.0);
    let (out, err) = ok(
        d,
        &[
            "select",
            "--data",
            "train.csv",
            "--components",
            "1",
            "--hidden",
            "32",
            "--family",
            "gaussian,student-t",
            "--folds",
            "3",
            "--device",
            "cpu",
            "--json",
            "--out",
            "sel.json",
        ],
    );
    assert!(
        err.contains("fit 6/6") && err.contains("student-t"),
        "{err}"
    );
    let v = json(&out);
    let scores = v["selection"]["scores"].as_array().unwrap();
    let families: Vec<&str> = scores
        .iter()
        .map(|s| s["setting"]["family"].as_str().unwrap())
        .collect();
    assert_eq!(families, ["gaussian", "student-t"]);
    let chosen = v["selection"]["chosen"].as_u64().unwrap() as usize;
    assert_eq!(families[chosen], "student-t", "{v}");
    let model = json(&std::fs::read_to_string(d.join("sel.json")).unwrap());
    assert_eq!(model["arch"]["family"], "student-t");
}
