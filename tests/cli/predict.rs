//! The commands that read a model: `mdn eval`, `predict`, `sample`, `plot` and `info`, their
//! outputs (CSV, JSON, `--out`, quantiles, kept columns, figures) and the columns they need.

use std::path::Path;

use crate::support::{asset, json, mdn, ok, sine_csv, software_adapter, trained};

#[test]
fn eval_text_json_and_per_row() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let test = asset("bishop_test.csv");
    let test = test.to_str().unwrap();
    let (text, _) = ok(dir.path(), &["eval", "--model", "m.json", "--data", test]);
    assert!(
        text.starts_with("mean NLL ") && text.contains("over 1000 rows"),
        "{text}"
    );
    let (j, _) = ok(
        dir.path(),
        &["eval", "--model", "m.json", "--data", test, "--json"],
    );
    let mean = json(&j)["mean_nll"].as_f64().unwrap();
    let (rows, summary) = ok(
        dir.path(),
        &["eval", "--model", "m.json", "--data", test, "--per-row"],
    );
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines[0], "row,loglik");
    // Regression (eval_per_row_summary_on_stdout): stdout is only the CSV (header and rows,
    // readable by pandas.read_csv); the summary goes to stderr.
    assert_eq!(lines.len(), 1 + 1000);
    assert!(
        summary.starts_with("mean NLL ") && summary.contains("CRPS"),
        "{summary}"
    );
    let sum: f64 = lines[1..1001]
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((-sum / 1000.0 - mean).abs() < 1e-9);
    let (jr, _) = ok(
        dir.path(),
        &[
            "eval",
            "--model",
            "m.json",
            "--data",
            test,
            "--per-row",
            "--json",
        ],
    );
    assert_eq!(json(&jr)["loglik"].as_array().unwrap().len(), 1000);
}

#[test]
fn predict_csv_json_and_out_file() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let test = asset("bishop_test.csv");
    let test = test.to_str().unwrap();
    let (csv, _) = ok(
        dir.path(),
        &["predict", "--model", "m.json", "--data", test],
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1001);
    // row, 5 weights, 5 means, 5 sigmas, then mean, variance and mode of the mixture.
    assert_eq!(lines[0].split(',').count(), 1 + 5 + 5 + 5 + 3);
    let first: Vec<f64> = lines[1].split(',').map(|c| c.parse().unwrap()).collect();
    let pi_sum: f64 = first[1..6].iter().sum();
    assert!((pi_sum - 1.0).abs() < 1e-9);
    let mean: f64 = (0..5).map(|k| first[1 + k] * first[6 + k]).sum();
    assert!((mean - first[16]).abs() < 1e-9, "mixture mean column");
    assert!(
        first[11..16].iter().all(|&s| s > 0.0),
        "sigmas are positive"
    );
    let (j, _) = ok(
        dir.path(),
        &["predict", "--model", "m.json", "--data", test, "--json"],
    );
    let v = json(&j);
    assert_eq!(v["rows"].as_array().unwrap().len(), 1000);
    assert_eq!(v["rows"][0]["mu"].as_array().unwrap().len(), 5);
    assert!((v["rows"][0]["mean"][0].as_f64().unwrap() - first[16]).abs() < 1e-9);
    let (printed, _) = ok(
        dir.path(),
        &[
            "predict", "--model", "m.json", "--data", test, "--out", "p.csv",
        ],
    );
    assert!(printed.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("p.csv")).unwrap(),
        csv
    );
}

#[test]
fn sample_csv_json_seeded() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let test = asset("bishop_test.csv");
    let test = test.to_str().unwrap();
    let (a, _) = ok(
        dir.path(),
        &[
            "sample", "--model", "m.json", "--data", test, "--n", "3", "--seed", "5",
        ],
    );
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines[0], "row,sample,t");
    assert_eq!(lines.len(), 1 + 3000);
    assert!(lines[3000].starts_with("999,2,"));
    let (b, _) = ok(
        dir.path(),
        &[
            "sample", "--model", "m.json", "--data", test, "--n", "3", "--seed", "5",
        ],
    );
    assert_eq!(a, b, "same seed, same samples");
    let (c, _) = ok(
        dir.path(),
        &[
            "sample", "--model", "m.json", "--data", test, "--n", "3", "--seed", "6",
        ],
    );
    assert_ne!(a, c);
    let (j, _) = ok(
        dir.path(),
        &[
            "sample", "--model", "m.json", "--data", test, "--n", "2", "--json",
        ],
    );
    let v = json(&j);
    assert_eq!(v["rows"][999]["samples"].as_array().unwrap().len(), 2);
    ok(
        dir.path(),
        &[
            "sample", "--model", "m.json", "--data", test, "--out", "s.csv",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("s.csv"))
            .unwrap()
            .lines()
            .count(),
        1001
    );
    // Regression (a new user): draws beyond memory aborted (a failed allocation, exit 134)
    // or panicked (capacity overflow). They are refused before any work, nothing written.
    for n in ["1000000000000", "4611686018427387904"] {
        let out = mdn(
            dir.path(),
            &[
                "sample", "--model", "m.json", "--data", test, "--n", n, "--out", "big.csv",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "--n {n}: {n} draws of 1000 row(s) of 1 target(s) are more than"
            )),
            "{err}"
        );
        assert!(!dir.path().join("big.csv").exists());
    }
}

#[test]
fn eval_needs_the_target_columns_but_predict_does_not() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    std::fs::write(dir.path().join("x.csv"), "x\n0.1\n0.5\n").unwrap();
    let out = mdn(
        dir.path(),
        &["eval", "--model", "m.json", "--data", "x.csv"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("target column 't' is not in the header")
    );
    let (p, _) = ok(
        dir.path(),
        &["predict", "--model", "m.json", "--data", "x.csv"],
    );
    assert_eq!(p.lines().count(), 3);
    let (s, _) = ok(
        dir.path(),
        &["sample", "--model", "m.json", "--data", "x.csv", "--n", "4"],
    );
    assert_eq!(s.lines().count(), 9);
}

#[test]
fn predict_quantiles_eval_scores_and_sampling_controls() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let test = asset("bishop_test.csv");
    let test = test.to_str().unwrap();
    let (csv, _) = ok(
        dir.path(),
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            test,
            "--quantiles",
            "0.5",
            "--interval",
            "0.9",
        ],
    );
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    // Quantile columns in ascending order of level, whatever the order asked.
    assert_eq!(
        &header[header.len() - 3..],
        &["q0.05_t", "q0.5_t", "q0.95_t"]
    );
    for line in csv.lines().skip(1).take(50) {
        let v: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        let n = v.len();
        assert!(
            v[n - 3] < v[n - 2] && v[n - 2] < v[n - 1],
            "quantiles ordered: {line}"
        );
        assert!(v[n - 5] >= 0.0, "variance");
    }
    let (j, _) = ok(
        dir.path(),
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            test,
            "--interval",
            "0.5",
            "--json",
        ],
    );
    let v = json(&j);
    assert!(
        v["rows"][0]["quantiles"]["0.25"][0].as_f64().is_some(),
        "{}",
        v["rows"][0]
    );
    assert!(v["rows"][0]["mode"][0].as_f64().is_some());
    let (e, _) = ok(
        dir.path(),
        &["eval", "--model", "m.json", "--data", test, "--json"],
    );
    let s = &json(&e)["scores"][0];
    assert_eq!(s["target"], "t");
    assert!(s["crps"].as_f64().unwrap() > 0.0 && s["rmse"].as_f64().unwrap() > 0.0);
    assert_eq!(
        s["pit_histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum::<u64>(),
        1000
    );
    let (text, _) = ok(dir.path(), &["eval", "--model", "m.json", "--data", test]);
    assert!(
        text.contains("CRPS") && text.contains("coverage 50%"),
        "{text}"
    );
    // Temperature towards 0 always samples the heaviest component; sigma-scale shrinks spread.
    std::fs::write(dir.path().join("one.csv"), "x\n0.5\n").unwrap();
    let (p, _) = ok(
        dir.path(),
        &[
            "predict", "--model", "m.json", "--data", "one.csv", "--json",
        ],
    );
    let p = json(&p);
    let pis: Vec<f64> = p["rows"][0]["pi"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let heaviest = (0..pis.len())
        .max_by(|&a, &b| pis[a].total_cmp(&pis[b]))
        .unwrap();
    let mu = p["rows"][0]["mu"][heaviest][0].as_f64().unwrap();
    let (sj, _) = ok(
        dir.path(),
        &[
            "sample",
            "--model",
            "m.json",
            "--data",
            "one.csv",
            "--n",
            "500",
            "--temperature",
            "0.001",
            "--sigma-scale",
            "0.001",
            "--json",
        ],
    );
    let samples: Vec<f64> = json(&sj)["rows"][0]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_f64().unwrap())
        .collect();
    assert!(
        samples.iter().all(|s| (s - mu).abs() < 0.01),
        "all samples at the heaviest component's mean {mu}"
    );
    for (args, needle) in [
        (
            vec![
                "predict",
                "--model",
                "m.json",
                "--data",
                "one.csv",
                "--quantiles",
                "1.5",
            ],
            "quantiles must be between 0 and 1",
        ),
        (
            vec![
                "predict",
                "--model",
                "m.json",
                "--data",
                "one.csv",
                "--interval",
                "0",
            ],
            "--interval must be between 0 and 1",
        ),
        (
            vec![
                "sample",
                "--model",
                "m.json",
                "--data",
                "one.csv",
                "--temperature",
                "0",
            ],
            "--temperature must be a positive number",
        ),
        (
            vec![
                "sample",
                "--model",
                "m.json",
                "--data",
                "one.csv",
                "--sigma-scale=-1",
            ],
            "--sigma-scale must be a positive number",
        ),
    ] {
        let out = mdn(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}"
        );
    }
}

/// Decodes a PNG file: (width, height, number of distinct colours).
fn png_info(path: &Path) -> (u32, u32, usize) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()))
        .to_rgb8();
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    (img.width(), img.height(), colours.len())
}

/// Parses an SVG file as XML: (width, height, all its text).
fn svg_info(path: &Path) -> (String, String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let words: Vec<&str> = doc
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect();
    (
        root.attribute("width").unwrap_or("").to_string(),
        root.attribute("height").unwrap_or("").to_string(),
        words.join(" "),
    )
}

#[test]
fn plot_writes_png_and_svg_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // After `mdn train` on the shipped example, `mdn plot` needs no arguments.
    ok(d, &["train", "--device", "cpu", "--epochs", "5", "--quiet"]);
    let (_, err) = ok(d, &["plot", "--device", "cpu"]);
    assert!(err.contains("wrote model.png"), "{err}");
    let (w, h, colours) = png_info(&d.join("model.png"));
    assert_eq!((w, h), (1400, 1100), "four panels");
    assert!(
        colours > 200,
        "a heat map has many colours, found {colours}"
    );
    ok(
        d,
        &["plot", "--device", "cpu", "--out", "fig.svg", "--quiet"],
    );
    let (w, h, text) = svg_info(&d.join("fig.svg"));
    assert_eq!((w.as_str(), h.as_str()), ("1400", "1100"));
    for needle in [
        "p(t | x)",
        "PIT histogram",
        "Reliability",
        "Training curve",
        "validation",
    ] {
        assert!(
            text.contains(needle),
            "'{needle}' not in the SVG's text: {text}"
        );
    }
    // One panel at a chosen size, on any backend.
    let mut devices = vec!["cpu"];
    if software_adapter(d) {
        devices.push("software");
    }
    for device in devices {
        let out = format!("density_{device}.png");
        ok(
            d,
            &[
                "plot", "--panel", "density", "--size", "640x480", "--device", device, "--out",
                &out, "--quiet",
            ],
        );
        assert_eq!(png_info(&d.join(&out)).0, 640);
    }
    // Regression (a new user): the history panel, which draws the model's record only,
    // refused a --data file without the target column. It reads no data, and says so.
    std::fs::write(d.join("x_only.csv"), "x\n0.1\n0.5\n").unwrap();
    let (_, err) = ok(
        d,
        &[
            "plot",
            "--panel",
            "history",
            "--data",
            "x_only.csv",
            "--device",
            "cpu",
            "--out",
            "h.png",
        ],
    );
    assert!(
        err.contains("--panel history draws the training history only: --data is not read")
            && err.contains("wrote h.png\n"),
        "{err}"
    );
    // A size out of range is refused naming --size.
    let out = mdn(d, &["plot", "--size", "10x10", "--out", "s.png"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--size <SIZE>': 10x10 is out of range"),
        "{err}"
    );

    // A model with several inputs and targets: no density map; PIT for a chosen target.
    ok(
        d,
        &[
            "generate", "--kind", "wide", "--rows", "3000", "--out", "wide.csv", "--quiet",
        ],
    );
    ok(
        d,
        &[
            "train",
            "--data",
            "wide.csv",
            "--target",
            "y0,y1",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--out",
            "wide.json",
            "--quiet",
        ],
    );
    ok(
        d,
        &[
            "plot",
            "--model",
            "wide.json",
            "--data",
            "wide.csv",
            "--target",
            "y1",
            "--out",
            "wide.svg",
            "--device",
            "cpu",
            "--quiet",
        ],
    );
    let (w, _, text) = svg_info(&d.join("wide.svg"));
    assert_eq!(w, "1800", "three panels side by side");
    assert!(
        text.contains("PIT histogram (y1") && text.contains("y0"),
        "{text}"
    );
    assert!(
        !text.contains("p(y"),
        "no density map for 16 inputs: {text}"
    );
    // The training curve needs no data.
    ok(
        d,
        &[
            "plot",
            "--model",
            "wide.json",
            "--panel",
            "history",
            "--out",
            "h.png",
            "--quiet",
        ],
    );
    assert_eq!(png_info(&d.join("h.png")).0, 800);

    // Errors: exit 2, a message, nothing written.
    for (args, needle) in [
        (vec!["plot", "--out", "fig.pdf"], "must end in .png or .svg"),
        (
            vec!["plot", "--model", "wide.json", "--out", "x.png"],
            "--data is needed",
        ),
        (
            vec![
                "plot",
                "--model",
                "wide.json",
                "--data",
                "wide.csv",
                "--panel",
                "density",
                "--out",
                "x.png",
            ],
            "one numeric feature column",
        ),
        (
            vec!["plot", "--target", "nope", "--out", "x.png"],
            "--target nope",
        ),
        (
            vec!["plot", "--size", "10x10", "--out", "x.png"],
            "out of range",
        ),
        (
            vec!["plot", "--size", "big", "--out", "x.png"],
            "not a size",
        ),
        (
            vec!["plot", "--model", "missing.json", "--out", "x.png"],
            "missing.json",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--device", "cpu"]);
        let out = mdn(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
        assert!(!d.join("x.png").exists() && !d.join("fig.pdf").exists());
    }
}

#[test]
fn predict_keeps_columns_and_info_summarises_a_model() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    std::fs::write(
        dir.path().join("new.csv"),
        "id,x,when\nA-1,0.2,\"2024-01-01, noon\"\nB-2,0.7,2024-01-02\n",
    )
    .unwrap();
    let (csv, _) = ok(
        dir.path(),
        &[
            "predict",
            "--data",
            "new.csv",
            "--model",
            "m.json",
            "--keep",
            "id,when",
            "--quantiles",
            "0.9,0.1",
        ],
    );
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[..3], &["row", "id", "when"]);
    assert_eq!(&header[header.len() - 2..], &["q0.1_t", "q0.9_t"]);
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(&rows[0][1], "A-1");
    assert_eq!(&rows[0][2], "2024-01-01, noon");
    assert_eq!(&rows[1][1], "B-2");
    let (j, _) = ok(
        dir.path(),
        &[
            "predict", "--data", "new.csv", "--model", "m.json", "--keep", "id", "--json",
        ],
    );
    assert_eq!(json(&j)["rows"][1]["kept"]["id"], "B-2");
    // Columns by index are labelled with their names.
    let (csv, _) = ok(
        dir.path(),
        &[
            "predict", "--data", "new.csv", "--model", "m.json", "--keep", "0",
        ],
    );
    assert!(csv.starts_with("row,id,pi_0"), "{csv}");
    let out = mdn(
        dir.path(),
        &[
            "predict", "--data", "new.csv", "--model", "m.json", "--keep", "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'nope'"));

    let (text, _) = ok(dir.path(), &["info", "m.json"]);
    assert!(
        text.contains("[x] -> [t]") && text.contains("K=5") && text.contains("epochs"),
        "{text}"
    );
    assert!(
        text.contains("vs linear     a linear-Gaussian model reaches"),
        "{text}"
    );
    let (j, _) = ok(dir.path(), &["info", "m.json", "--json"]);
    let v = json(&j);
    assert_eq!(v["architecture"]["components"], 5);
    assert_eq!(v["training"]["epochs"], 3);
    assert_eq!(v["features"], serde_json::json!(["x"]));
    assert!(
        v["training"]["components"]["weights"]
            .as_array()
            .unwrap()
            .len()
            == 5
    );
    let out = mdn(dir.path(), &["info", "missing.json"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn predict_refused_data_whose_unused_target_column_was_empty() {
    // Regression (a new user): `mdn predict` on new rows whose y column was empty or "NA"
    // failed with "empty cell" in column 'y', a column prediction never reads. Predict and
    // sample read only the model's features; eval still needs the targets.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), sine_csv(60, 0.2)).unwrap();
    ok(
        dir.path(),
        &[
            "train", "--data", "d.csv", "--device", "cpu", "--epochs", "3", "--quiet",
        ],
    );
    std::fs::write(dir.path().join("new.csv"), "x,y\n0.5,\n-1.0,NA\n2.0,\n").unwrap();
    let (with_blanks, _) = ok(
        dir.path(),
        &[
            "predict",
            "--model",
            "model.json",
            "--data",
            "new.csv",
            "--device",
            "cpu",
        ],
    );
    std::fs::write(dir.path().join("x.csv"), "x\n0.5\n-1.0\n2.0\n").unwrap();
    let (features_only, _) = ok(
        dir.path(),
        &[
            "predict",
            "--model",
            "model.json",
            "--data",
            "x.csv",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(with_blanks, features_only);
    assert_eq!(with_blanks.lines().count(), 4, "{with_blanks}");
    ok(
        dir.path(),
        &[
            "sample",
            "--model",
            "model.json",
            "--data",
            "new.csv",
            "--device",
            "cpu",
        ],
    );
    let out = mdn(
        dir.path(),
        &[
            "eval",
            "--model",
            "model.json",
            "--data",
            "new.csv",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("new.csv:2:2 (column 'y'): missing value (an empty cell)"),
        "{err}"
    );
}

/// The CPU backend gives the same bits on every instruction set with a fused multiply-add
/// (`MDN_CPU_ISA` narrows the one it picks): per-row log-likelihoods and a training run's
/// model, in full. Its mixture head uses no fused multiply-adds and is the same bits
/// everywhere; on an x86-64 baseline without FMA the dense layers multiply, then add, so
/// there the results agree to a few units in the last place of an f32.
#[test]
fn the_same_bits_on_every_instruction_set_with_fma() {
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let test = asset("bishop_test.csv");
    let run = |isa: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"))
            .args(args)
            .current_dir(dir.path())
            .env("MDN_CPU_ISA", isa)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let eval = [
        "eval",
        "--model",
        "m.json",
        "--data",
        test.to_str().unwrap(),
        "--per-row",
        "--device",
        "cpu",
    ];
    let widest = run("", &eval);
    assert_eq!(
        run("avx2", &eval),
        widest,
        "per-row log-likelihoods on avx2"
    );
    let per_row = |csv: &str| -> Vec<f64> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let baseline = run("baseline", &eval);
    if mdn::backend::cpu::PORTABLE_FUSED {
        assert_eq!(baseline, widest, "per-row log-likelihoods on baseline");
    } else {
        mdn::tolerance::Tolerance::new(1e-5, 1e-5).assert_close(
            "per-row log-likelihoods on baseline",
            &per_row(&baseline),
            &per_row(&widest),
        );
    }
    // Training: the head's gradients and the dense layers' backward pass too.
    let train = |isa: &str, out: &str| {
        run(
            isa,
            &[
                "train",
                "--device",
                "cpu",
                "--threads",
                "2",
                "--epochs",
                "4",
                "--out",
                out,
                "--quiet",
            ],
        );
        let m = json(&std::fs::read_to_string(dir.path().join(out)).unwrap());
        assert!(
            m["params"].as_array().is_some_and(|p| !p.is_empty()),
            "{out} has parameters"
        );
        m["params"].clone()
    };
    assert_eq!(train("", "wide.json"), train("avx2", "narrow.json"));
}

/// `--drop-missing` on predict, sample and eval: rows with a missing value in a column the
/// model reads are left out with a warning, and every output's `row` (and a kept column)
/// stays that of the row in the file, so results join back to it.
#[test]
fn predict_sample_and_eval_drop_missing_rows_keeping_their_row_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    // Data rows 1 and 3 have no x (NA, empty); row 4 has no target, which predict and
    // sample do not read.
    std::fs::write(
        d.join("gaps.csv"),
        "id,x,t\na,0.1,0.3\nb,NA,0.4\nc,0.5,0.5\nd,,0.6\ne,0.9,\n",
    )
    .unwrap();
    let out = mdn(d, &["predict", "--model", "m.json", "--data", "gaps.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("gaps.csv:3:2")
            && err.contains("2 of 5 rows")
            && err.contains("--drop-missing"),
        "{err}"
    );
    let (csv, err) = ok(
        d,
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "gaps.csv",
            "--drop-missing",
            "--keep",
            "id",
        ],
    );
    assert!(err.contains("2 of 5 rows have a missing value"), "{err}");
    let rows: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let mut c = l.split(',');
            (c.next().unwrap().to_string(), c.next().unwrap().to_string())
        })
        .collect();
    let want = [("0", "a"), ("2", "c"), ("4", "e")].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(rows, want);
    let (js, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "gaps.csv",
            "--drop-missing",
            "--json",
        ],
    );
    let labels: Vec<u64> = json(&js)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(labels, [0, 2, 4]);
    let (samples, _) = ok(
        d,
        &[
            "sample",
            "--model",
            "m.json",
            "--data",
            "gaps.csv",
            "--drop-missing",
            "-n",
            "2",
        ],
    );
    let labels: Vec<&str> = samples
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(labels, ["0", "0", "2", "2", "4", "4"]);
    // eval reads the target too: row 4 (no target) is left out as well.
    let (per_row, err) = ok(
        d,
        &[
            "eval",
            "--model",
            "m.json",
            "--data",
            "gaps.csv",
            "--drop-missing",
            "--per-row",
        ],
    );
    assert!(err.contains("3 of 5 rows have a missing value"), "{err}");
    let labels: Vec<&str> = per_row
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(labels, ["0", "2"]);
    let (js, _) = ok(
        d,
        &[
            "eval",
            "--model",
            "m.json",
            "--data",
            "gaps.csv",
            "--drop-missing",
            "--per-row",
            "--json",
        ],
    );
    let v = json(&js);
    assert_eq!(v["row"], serde_json::json!([0, 2]));
    assert_eq!(v["loglik"].as_array().unwrap().len(), 2);
    // With nothing to leave out, the rows are still labelled (the same schema for any file).
    std::fs::write(d.join("full.csv"), "x,t\n0.1,0.3\n0.5,0.5\n").unwrap();
    let (js, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "full.csv",
            "--drop-missing",
            "--json",
        ],
    );
    let labels: Vec<u64> = json(&js)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(labels, [0, 1]);
}

#[test]
fn sample_and_eval_keep_columns_and_plot_drops_missing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::write(
        d.join("gaps.csv"),
        "id,x,t\na,0.1,0.3\nb,NA,0.4\n\"c,1\",0.5,0.5\nd,,0.6\ne,0.9,0.7\n",
    )
    .unwrap();
    let args = |extra: &[&'static str]| {
        let mut v = vec!["--model", "m.json", "--data", "gaps.csv", "--drop-missing"];
        v.extend_from_slice(extra);
        v
    };
    // sample: row, the kept columns, sample, the targets (a kept cell quoted as in the file).
    let (csv, _) = ok(
        d,
        &[&["sample"][..], &args(&["--keep", "id", "-n", "2"])].concat(),
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "row,id,sample,t");
    let firsts: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string())
        .collect();
    assert_eq!(
        firsts,
        ["0,a", "0,a", "2,\"c,1\"", "2,\"c,1\"", "4,e", "4,e"]
    );
    let (js, _) = ok(
        d,
        &[&["sample"][..], &args(&["--keep", "id", "--json"])].concat(),
    );
    let kept: Vec<String> = json(&js)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kept"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, ["a", "c,1", "e"]);
    // eval --per-row: row, the kept columns, loglik; JSON: the kept columns as columns.
    let (csv, _) = ok(
        d,
        &[&["eval"][..], &args(&["--keep", "id", "--per-row"])].concat(),
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "row,id,loglik");
    assert!(lines[2].starts_with("2,\"c,1\","), "{csv}");
    let (js, _) = ok(
        d,
        &[
            &["eval"][..],
            &args(&["--keep", "id", "--per-row", "--json"]),
        ]
        .concat(),
    );
    let v = json(&js);
    assert_eq!(v["kept"]["id"], serde_json::json!(["a", "c,1", "e"]));
    assert_eq!(v["row"], serde_json::json!([0, 2, 4]));
    // --keep without --per-row has no rows to go with.
    let out = mdn(d, &[&["eval"][..], &args(&["--keep", "id"])].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--per-row"));
    // A --keep column not in the file is refused before any row is left out (no warning).
    let out = mdn(
        d,
        &[&["predict"][..], &args(&["--keep", "nosuch"])].concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'nosuch'") && !err.contains("warning"),
        "{err}"
    );
    // plot: refused with the flag named, then drawn from the rows kept.
    let plot = |extra: &[&'static str]| {
        let mut v = vec![
            "plot", "--model", "m.json", "--data", "gaps.csv", "--out", "p.png",
        ];
        v.extend_from_slice(extra);
        mdn(d, &v)
    };
    let out = plot(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--drop-missing"), "{err}");
    assert!(!d.join("p.png").exists());
    let out = plot(&["--drop-missing"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("2 of 5 rows") && err.contains("3 rows of gaps.csv"),
        "{err}"
    );
    assert!(d.join("p.png").exists());
}

/// Regression (a new user): `--keep` of a column named as one of the output's own (`row`,
/// `sample`, a target) wrote a CSV with two columns of that name (`row,row,pi_0,...`), which
/// pandas renames silently. It is refused, as is a column kept twice, with nothing written.
#[test]
fn kept_columns_named_as_the_outputs_own_made_duplicate_csv_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::write(d.join("new.csv"), "row,x,sample,t\n7,0.5,a,1\n8,0.1,b,2\n").unwrap();
    let base = ["--model", "m.json", "--data", "new.csv", "--out", "o.csv"];
    for (cmd, keep, want) in [
        (
            "predict",
            "row",
            "--keep row: the output has a column named 'row' of its own",
        ),
        (
            "sample",
            "sample",
            "--keep sample: the output has a column named 'sample'",
        ),
        ("sample", "t", "--keep t: the output has a column named 't'"),
        (
            "eval",
            "row",
            "--keep row: the output has a column named 'row'",
        ),
        ("predict", "x,x", "--keep lists x twice"),
    ] {
        let mut args = vec![cmd];
        args.extend_from_slice(&base);
        args.extend(["--keep", keep]);
        if cmd == "eval" {
            args.retain(|a| *a != "--out" && *a != "o.csv");
            args.push("--per-row");
        }
        let out = mdn(d, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!d.join("o.csv").exists(), "{args:?}");
    }
    // Kept under a name of its own, the same column is fine.
    let (csv, _) = ok(
        d,
        &[
            "predict", "--model", "m.json", "--data", "new.csv", "--keep", "sample",
        ],
    );
    assert!(csv.starts_with("row,sample,pi_0,"), "{csv}");
}
