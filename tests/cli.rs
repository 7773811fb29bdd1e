//! Integration tests of the `mdn` binary: every command, its options and outputs, and every
//! input error (exit code 2, a message naming the place, nothing written).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

fn mdn(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(args)
        .current_dir(dir)
        .env_remove("MDN_DEVICE")
        .output()
        .expect("run mdn")
}

fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let out = mdn(dir, args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "mdn {args:?} failed ({:?}):\n{se}",
        out.status.code()
    );
    (so, se)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A small trained model shared by the read-only command tests.
fn trained(dir: &Path) -> PathBuf {
    let model = dir.join("m.json");
    ok(
        dir,
        &[
            "train",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--epochs",
            "3",
            "--out",
            "m.json",
            "--quiet",
        ],
    );
    model
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn train_with_no_arguments_uses_the_shipped_example() {
    let dir = tempfile::tempdir().unwrap();
    let (_, err) = ok(dir.path(), &["train"]);
    assert!(err.contains("assets/bishop.csv"), "{err}");
    assert!(
        err.contains("epoch 1/200"),
        "plain progress lines when stderr is not a terminal: {err}"
    );
    assert!(err.contains("wrote model.json"), "{err}");
    assert!(err.contains("component weights: "), "{err}");
    assert_eq!(files_in(dir.path()), vec!["model.json"]);
    let (out, _) = ok(
        dir.path(),
        &[
            "eval",
            "--data",
            asset("bishop_test.csv").to_str().unwrap(),
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["rows"], 1000);
    assert!(v["mean_nll"].as_f64().unwrap() < -0.7, "{v}");
}

#[test]
fn train_options_and_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--target",
            "t",
            "--features",
            "x",
            "--hidden",
            "16,8",
            "--activation",
            "tanh",
            "--components",
            "3",
            "--lr",
            "0.005",
            "--batch-size",
            "64",
            "--l2",
            "1e-4",
            "--epochs",
            "3",
            "--seed",
            "3",
            "--sigma-floor",
            "0.001",
            "--clip-norm",
            "0.5",
            "--out",
            "m.json",
            "--json",
            "--quiet",
        ],
    );
    assert!(err.is_empty(), "--quiet prints nothing: {err}");
    let v = json(&out);
    assert_eq!(v["epochs"], 3);
    assert_eq!(v["saved_epoch"], 3);
    assert_eq!(v["stop_reason"], "epochs");
    assert_eq!(v["components"]["weights"].as_array().unwrap().len(), 3);
    assert_eq!(v["recoveries"], serde_json::json!([]));
    let m = json(&std::fs::read_to_string(dir.path().join("m.json")).unwrap());
    assert_eq!(m["format"], "mdn-model");
    assert_eq!(m["arch"]["hidden"], serde_json::json!([16, 8]));
    assert_eq!(m["arch"]["activation"], "tanh");
    assert_eq!(m["arch"]["components"], 3);
    assert_eq!(m["arch"]["sigma_floor"].as_f64().unwrap() as f32, 0.001);
    assert_eq!(m["training"]["batch_size"], 64);
    assert_eq!(m["training"]["seed"], 3);
    assert_eq!(m["training"]["lr"].as_f64().unwrap() as f32, 0.005);
    assert_eq!(m["training"]["l2"].as_f64().unwrap() as f32, 1e-4);
    assert_eq!(m["training"]["clip_norm"].as_f64().unwrap() as f32, 0.5);
    assert_eq!(m["features"], serde_json::json!(["x"]));
    assert_eq!(m["targets"], serde_json::json!(["t"]));
}

#[test]
fn train_with_validation_file_and_early_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--val",
            asset("bishop_test.csv").to_str().unwrap(),
            "--patience",
            "2",
            "--max-epochs",
            "6",
            "--json",
            "--quiet",
            "--lr",
            "0.05",
        ],
    );
    let v = json(&out);
    assert_eq!(v["val_rows"], 1000);
    assert_eq!(v["train_rows"], 4000);
    let epochs = v["epochs"].as_u64().unwrap();
    assert!(epochs <= 6);
    assert_eq!(v["saved_epoch"], v["best_epoch"]);
}

#[test]
fn train_on_several_targets_and_extra_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("id,a,b,y0,y1\n");
    for i in 0..300 {
        let a = (i as f64 * 0.37).sin();
        let b = (i as f64 * 0.11).cos();
        csv.push_str(&format!(
            "row{i},{a},{b},{},{}\n",
            a + 0.1 * b,
            a * b + ((i * 7) % 10) as f64 * 0.01
        ));
    }
    std::fs::write(dir.path().join("multi.csv"), csv).unwrap();
    ok(
        dir.path(),
        &[
            "train",
            "--data",
            "multi.csv",
            "--features",
            "a,b",
            "--target",
            "y0,y1",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--quiet",
        ],
    );
    let (out, _) = ok(dir.path(), &["predict", "--data", "multi.csv"]);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("row,pi_0,pi_1,pi_2,pi_3,pi_4,mu_0_y0,mu_0_y1,"),
        "{header}"
    );
    assert!(
        header.ends_with("mean_y0,mean_y1,var_y0,var_y1,mode_y0,mode_y1"),
        "{header}"
    );
    assert_eq!(out.lines().count(), 301);
    let (out, _) = ok(dir.path(), &["eval", "--data", "multi.csv", "--json"]);
    assert!(json(&out)["mean_nll"].as_f64().unwrap().is_finite());
}

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
}

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

/// Runs `mdn train` on a CSV with the given content and expects exit 2, `needle` in the
/// message, and no file written.
fn train_fails(content: Option<&str>, extra: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(c) = content {
        std::fs::write(dir.path().join("d.csv"), c).unwrap();
    }
    let mut args = vec!["train", "--data", "d.csv", "--quiet"];
    if !extra.contains(&"--out") {
        args.extend_from_slice(&["--out", "out.json"]);
    }
    args.extend_from_slice(extra);
    let out = mdn(dir.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {needle:?}: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let expect: Vec<String> = if content.is_some() {
        vec!["d.csv".into()]
    } else {
        vec![]
    };
    assert_eq!(
        files_in(dir.path()),
        expect,
        "nothing written for {needle:?}"
    );
}

fn rows(n: usize) -> String {
    (0..n)
        .map(|i| format!("{},{}\n", i as f64 * 0.1, (i as f64 * 0.7).sin()))
        .collect()
}

#[test]
fn bad_training_input_is_refused_with_its_place() {
    train_fails(None, &[], "d.csv: no such file or directory");
    train_fails(Some(""), &[], "d.csv: the file is empty");
    train_fails(Some("x,y\n"), &[], "d.csv: has a header but no data rows");
    train_fails(
        Some(&format!("x,y\n{}1,2,3\n", rows(5))),
        &[],
        "d.csv:7: row has 3 fields but the header has 2",
    );
    train_fails(
        Some("x,y\n1,2\n3,abc\n"),
        &[],
        "d.csv:3:2 (column 'y'): 'abc' is not a number",
    );
    train_fails(
        Some("x,y\n1,2\nNaN,3\n"),
        &[],
        "d.csv:3:1 (column 'x'): 'NaN' is not a finite number",
    );
    train_fails(
        Some("x,y\n1,2\n3,inf\n"),
        &[],
        "d.csv:3:2 (column 'y'): 'inf' is not a finite number",
    );
    train_fails(
        Some("x,y\n1,2\n3,1e39\n"),
        &[],
        "outside the range of 32-bit floats",
    );
    train_fails(Some("x,y\n1,\n"), &[], "d.csv:2:2 (column 'y'): empty cell");
    train_fails(
        Some("1,2\n3,4\n"),
        &[],
        "d.csv:1: the first line looks like data",
    );
    train_fails(Some("x,x\n1,2\n"), &[], "column name repeated");
    train_fails(
        Some(&format!("x,y\n{}", rows(10))),
        &["--target", "z"],
        "d.csv:1: target column 'z' is not in the header (columns: x, y)",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(10))),
        &["--target", "y", "--features", "x,y"],
        "column 'y' is both a target and a feature",
    );
    // Defaults adapt to small data; only an explicit batch that cannot work is refused.
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--batch-size", "256", "--val-fraction", "0.1"],
        "90 training rows (the validation rows not counted) are fewer than one batch of 256",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--batch-size", "256"],
        "--batch-size 256 is larger than the",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--batch-size", "10", "--val-fraction", "0"],
        "early stopping needs validation data",
    );
    train_fails(
        Some(&format!("x,y\n{}", "1,5\n".repeat(50))),
        &["--batch-size", "10"],
        "target column 'y' is constant",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--batch-size", "10", "--out", "no/such/dir/m.json"],
        "no/such/dir/m.json",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--hidden", "64,0"],
        "'0' is not a layer width",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--batch-size", "10", "--val", "missing.csv"],
        "missing.csv: no such file",
    );
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--batch-size", "10", "--val-fraction", "1.5"],
        "--val-fraction must be in [0, 1)",
    );
}

#[test]
fn invalid_utf8_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), b"x,y\n1,2\n\xff\xfe,2\n").unwrap();
    let out = mdn(dir.path(), &["train", "--data", "d.csv", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("d.csv:3: not valid UTF-8"), "{err}");
    assert!(!dir.path().join("model.json").exists());
}

/// Runs a model command and expects exit 2 with `needle` in the message.
fn model_command_fails(model: Option<&str>, data: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let good = trained(dir.path());
    let model_path = match model {
        Some(content) => {
            std::fs::write(dir.path().join("bad.json"), content).unwrap();
            "bad.json".to_string()
        }
        None => good.to_string_lossy().to_string(),
    };
    std::fs::write(dir.path().join("data.csv"), data).unwrap();
    for cmd in ["eval", "predict", "sample"] {
        let out = mdn(
            dir.path(),
            &[
                cmd,
                "--model",
                &model_path,
                "--data",
                "data.csv",
                "--out",
                "o.csv",
            ]
            .iter()
            .copied()
            .filter(|a| cmd != "eval" || (*a != "--out" && *a != "o.csv"))
            .collect::<Vec<_>>(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains(needle), "{cmd}: expected {needle:?} in: {err}");
        assert!(!dir.path().join("o.csv").exists());
    }
}

#[test]
fn bad_models_and_mismatched_data_are_refused() {
    let data = "x,t\n0.5,0.2\n";
    model_command_fails(Some(""), data, "bad.json: the file is empty");
    model_command_fails(Some("{not json"), data, "bad.json: not valid JSON");
    model_command_fails(Some("{\"hello\": 1}"), data, "not an mdn model");
    model_command_fails(
        Some("{\"format\": \"mdn-model\", \"format_version\": 99}"),
        data,
        "format version 99 was written by a newer mdn",
    );
    model_command_fails(
        Some("{\"format\": \"mdn-model\", \"format_version\": 1, \"arch\": 3}"),
        data,
        "malformed model",
    );
    // The model expects feature x; this data has none.
    model_command_fails(
        None,
        "a,t\n0.5,0.2\n",
        "data.csv:1: the model needs 1 feature column(s) (x) but the header lacks x",
    );
    // A bad feature cell (a bad target cell fails eval only: predict and sample never read
    // the targets, see predict_refused_data_whose_unused_target_column_was_empty).
    model_command_fails(None, "x,t\nzz,0.2\n", "data.csv:2:1 (column 'x')");
}

#[test]
fn truncated_and_tampered_model_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(trained(dir.path())).unwrap();
    let data = asset("bishop_test.csv");
    let cases = [
        (good[..good.len() / 2].to_string(), "not valid JSON"),
        (
            good.replacen("\"params\":[", "\"params\":[1.0,", 1),
            "params has",
        ),
        (
            good.replacen("\"components\":5", "\"components\":0", 1),
            "--components must be at least 1",
        ),
        (
            good.replacen("\"std\":[", "\"std\":[-1.0,", 1),
            "entries but the architecture needs",
        ),
    ];
    for (content, needle) in cases {
        std::fs::write(dir.path().join("bad.json"), &content).unwrap();
        let out = mdn(
            dir.path(),
            &[
                "eval",
                "--model",
                "bad.json",
                "--data",
                data.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
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
fn model_format_doc_reproduces_mdn_in_plain_python() {
    // The Python example in docs/model-format.md, run on trained models (diagonal, and full
    // covariance with three targets), gives mdn's numbers.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::write(d.join("one.csv"), "x,t\n0.3,0.45\n").unwrap();
    ok(
        d,
        &[
            "generate",
            "--kind",
            "correlated",
            "--rows",
            "2000",
            "--out",
            "corr.csv",
            "--quiet",
        ],
    );
    ok(
        d,
        &[
            "train",
            "--data",
            "corr.csv",
            "--target",
            "y0,y1,y2",
            "--covariance",
            "full",
            "--components",
            "2",
            "--epochs",
            "3",
            "--out",
            "full.json",
            "--quiet",
        ],
    );
    std::fs::write(d.join("one_full.csv"), "x,y0,y1,y2\n0.3,0.2,0.1,-0.05\n").unwrap();
    // And a version-2 file: a deep ensemble of three.
    ok(
        d,
        &[
            "train",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--ensemble",
            "3",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--out",
            "ens.json",
            "--quiet",
        ],
    );
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/model-format.md"))
            .unwrap();
    let start = doc.find("```python\n").expect("a python example") + "```python\n".len();
    let code = &doc[start..start + doc[start..].find("```").unwrap()];
    for (model, data, x, y, members) in [
        ("m.json", "one.csv", "[0.3]", "[0.45]", 1.0),
        (
            "full.json",
            "one_full.csv",
            "[0.3]",
            "[0.2, 0.1, -0.05]",
            1.0,
        ),
        ("ens.json", "one.csv", "[0.3]", "[0.45]", 3.0),
    ] {
        std::fs::copy(d.join(model), d.join("model.json")).unwrap();
        let script =
            format!("{code}\nprint(repr(loglik({x}, {y})))\nprint(repr(mixture({x})[0][0]))\n");
        std::fs::write(d.join("doc.py"), script).unwrap();
        let py = Command::new("python3")
            .arg("doc.py")
            .current_dir(d)
            .output()
            .expect("python3 is installed");
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let py_out = String::from_utf8_lossy(&py.stdout);
        let lines: Vec<&str> = py_out.lines().collect();
        let n = lines.len();
        let (ll, pi0): (f64, f64) = (lines[n - 2].parse().unwrap(), lines[n - 1].parse().unwrap());
        let (e, _) = ok(
            d,
            &[
                "eval",
                "--model",
                model,
                "--data",
                data,
                "--per-row",
                "--json",
            ],
        );
        let mdn_ll = json(&e)["loglik"][0].as_f64().unwrap();
        assert!(
            (ll - mdn_ll).abs() < 1e-4,
            "{model}: python {ll} vs mdn {mdn_ll}"
        );
        let (p, _) = ok(d, &["predict", "--model", model, "--data", data, "--json"]);
        let mdn_pi0 = json(&p)["rows"][0]["pi"][0].as_f64().unwrap();
        assert!(
            (pi0 / members - mdn_pi0).abs() < 1e-5,
            "{model}: python {pi0} vs mdn {mdn_pi0}"
        );
    }
}

/// Whether a software adapter is there; panics when `MDN_REQUIRE_GPU=1` and it is not.
fn software_adapter(dir: &Path) -> bool {
    let (out, _) = ok(dir, &["devices", "--json"]);
    let found = json(&out)["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["device_type"] == "Cpu");
    if !found {
        assert!(
            std::env::var("MDN_REQUIRE_GPU").as_deref() != Ok("1"),
            "MDN_REQUIRE_GPU=1 but `mdn devices` lists no software adapter: {out}"
        );
        // Past the harness's capture, so the skip shows in the test output.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the software-adapter part of a CLI test: no software adapter"
        );
    }
    found
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
            (_, "a") => assert_eq!(d, 2, "{r}"),
            _ => assert!(d.as_u64().unwrap() >= 2, "{r}"),
        }
    }
    assert_eq!(v["ceilings"].as_array().unwrap().len(), backends);
    let out = mdn(dir.path(), &["bench", "--config", "z", "--devices", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn convert_generate_and_train_on_npy() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = ok(
        dir.path(),
        &[
            "convert",
            asset("bishop.csv").to_str().unwrap(),
            "b.npy",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["rows"], 4000);
    assert_eq!(v["columns"], serde_json::json!(["x", "t"]));
    assert_eq!(
        std::fs::metadata(dir.path().join("b.npy")).unwrap().len(),
        128 + 4000 * 2 * 4
    );
    // The same rows through CSV and .npy give the same model, bit for bit.
    let train = |data: &str, out: &str| {
        ok(
            dir.path(),
            &[
                "train", "--data", data, "--epochs", "2", "--device", "cpu", "--quiet", "--out",
                out,
            ],
        )
    };
    train(asset("bishop.csv").to_str().unwrap(), "from_csv.json");
    train("b.npy", "from_npy.json");
    let params =
        |f: &str| json(&std::fs::read_to_string(dir.path().join(f)).unwrap())["params"].clone();
    assert_eq!(params("from_csv.json"), params("from_npy.json"));
    // eval / predict read .npy too, columns matched by name.
    let (e, _) = ok(
        dir.path(),
        &[
            "eval",
            "--model",
            "from_npy.json",
            "--data",
            "b.npy",
            "--json",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(json(&e)["rows"], 4000);
    // Selected columns, in the given order; by index too.
    let (_, err) = ok(
        dir.path(),
        &[
            "convert",
            asset("bishop.csv").to_str().unwrap(),
            "t.npy",
            "--columns",
            "t,0",
        ],
    );
    assert!(err.contains("4000 rows x 2 columns (t, x)"), "{err}");
    // generate: any size, CSV or .npy.
    ok(
        dir.path(),
        &[
            "generate", "--kind", "wide", "--rows", "2000", "--out", "w.npy", "--seed", "3",
        ],
    );
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", "500", "--out", "g.csv",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("g.csv"))
            .unwrap()
            .lines()
            .count(),
        501
    );
    let (t, _) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "w.npy",
            "--target",
            "y0,y1",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--json",
            "--quiet",
            "--out",
            "w.json",
        ],
    );
    // Exactly a tenth held out.
    assert_eq!(json(&t)["train_rows"], 1800);
    let m = json(&std::fs::read_to_string(dir.path().join("w.json")).unwrap());
    assert_eq!(m["features"].as_array().unwrap().len(), 16);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // New files are readable by others as the umask allows, like any file a tool writes.
        let mode = std::fs::metadata(dir.path().join("w.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o044, 0, "model file mode {mode:o}");
    }
    let files = files_in(dir.path());
    assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:?}");
}

#[test]
fn convert_and_generate_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.csv"), "a,b\n1,2\n3,x\n").unwrap();
    for (args, needle) in [
        (
            vec!["convert", "bad.csv", "o.npy"],
            "bad.csv:3:2 (column 'b'): 'x' is not a number",
        ),
        (
            vec!["convert", "missing.csv", "o.npy"],
            "missing.csv: no such file",
        ),
        (
            vec!["convert", "bad.csv", "o.npy", "--columns", "zz"],
            "column 'zz' is not in the header",
        ),
        (
            vec!["generate", "--rows", "0", "--out", "o.npy"],
            "--rows must be at least 1",
        ),
    ] {
        let out = mdn(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
        assert!(!dir.path().join("o.npy").exists());
        assert_eq!(
            files_in(dir.path()),
            vec!["bad.csv"],
            "nothing written for {args:?}"
        );
    }
}

#[test]
fn train_streams_npy_and_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", "6000", "--out", "g.npy",
        ],
    );
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", "6000", "--out", "g.csv",
        ],
    );
    // Forced streaming with small chunks, from .npy and from CSV (converted on the fly).
    for data in ["g.npy", "g.csv"] {
        let (out, err) = ok(
            dir.path(),
            &[
                "train",
                "--data",
                data,
                "--stream",
                "--chunk-rows",
                "500",
                "--epochs",
                "2",
                "--device",
                "cpu",
                "--json",
                "--out",
                "s.json",
            ],
        );
        assert!(
            err.contains("streaming") && err.contains("chunks of 500 rows"),
            "{err}"
        );
        if data.ends_with(".csv") {
            assert!(
                err.contains("converting g.csv to a temporary .npy"),
                "{err}"
            );
        }
        let v = json(&out);
        assert_eq!(v["epochs"], 2);
        assert_eq!(
            v["train_rows"].as_u64().unwrap() + v["val_rows"].as_u64().unwrap(),
            6000
        );
    }
    // A file larger than half of --memory-mb streams by itself.
    ok(
        dir.path(),
        &[
            "generate", "--kind", "wide", "--rows", "8000", "--out", "w.csv",
        ],
    );
    assert!(std::fs::metadata(dir.path().join("w.csv")).unwrap().len() > 1 << 20);
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "w.csv",
            "--target",
            "y0,y1",
            "--memory-mb",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--batch-size",
            "64",
        ],
    );
    assert!(err.contains("streaming"), "{err}");
    // With --val FILE every row of --data is trained on.
    let (out, _) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "g.npy",
            "--stream",
            "--val",
            asset("bishop_test.csv").to_str().unwrap(),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--json",
            "--quiet",
        ],
    );
    assert_eq!(json(&out)["train_rows"], 6000);
    assert_eq!(json(&out)["val_rows"], 1000);
    // No temporary files are left behind.
    assert!(files_in(dir.path()).iter().all(|f| !f.ends_with(".tmp")));
    let out = mdn(dir.path(), &["train", "--stream", "--epochs", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stream needs --data FILE"));
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_training_and_keeps_the_best_model() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args([
            "train",
            "--device",
            "cpu",
            "--max-epochs",
            "1000000",
            "--patience",
            "1000000",
            "--json",
            "--out",
            "m.json",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // An interrupted run writes its best model and exits 130 (as for SIGINT), so a script
    // can tell it from a finished one.
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["stop_reason"], "interrupted");
    assert_eq!(v["saved_epoch"], v["best_epoch"]);
    let m = json(&std::fs::read_to_string(dir.path().join("m.json")).unwrap());
    assert_eq!(m["training"]["stop_reason"], "interrupted");
}

/// Trains once uninterrupted, once killed with SIGKILL after its first checkpoint and resumed:
/// the two models must be the same bits.
#[cfg(unix)]
fn killed_and_resumed_run_matches(device: &str, rows: &str, epochs: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", rows, "--out", "g.npy", "--seed", "4",
        ],
    );
    let mut base = vec![
        "train", "--data", "g.npy", "--epochs", epochs, "--device", device, "--seed", "2",
        "--quiet",
    ];
    base.extend_from_slice(extra);
    let mut full = base.to_vec();
    full.extend(["--out", "full.json"]);
    ok(dir.path(), &full);
    let mut part = base.to_vec();
    part.extend(["--out", "part.json", "--checkpoint-every", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(&part)
        .current_dir(dir.path())
        .env("NODEVICE_SELECT", "1")
        .spawn()
        .unwrap();
    let ckpt = dir.path().join("part.ckpt.json");
    let started = std::time::Instant::now();
    while !ckpt.exists() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A pseudo-random moment after the first checkpoint.
    let wait = (started.elapsed().as_nanos() % 300) as u64;
    std::thread::sleep(std::time::Duration::from_millis(wait));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let c = json(&std::fs::read_to_string(&ckpt).unwrap());
    let done = c["trainer"]["completed"].as_u64().unwrap();
    assert_eq!(c["data"]["stream"], extra.contains(&"--stream"));
    assert!(done >= 1, "the checkpoint is whole and names its epoch");
    eprintln!("{device}: killed after epoch {done} of {epochs}");
    ok(
        dir.path(),
        &[
            "train",
            "--resume",
            "part.ckpt.json",
            "--device",
            device,
            "--out",
            "part.json",
            "--quiet",
        ],
    );
    let (a, b) = (
        json(&std::fs::read_to_string(dir.path().join("full.json")).unwrap()),
        json(&std::fs::read_to_string(dir.path().join("part.json")).unwrap()),
    );
    assert_eq!(
        a["params"], b["params"],
        "{device}: resumed after epoch {done} of {epochs}: parameters differ"
    );
    assert_eq!(a["training"]["history"], b["training"]["history"]);
    assert!(files_in(dir.path()).iter().all(|f| !f.ends_with(".tmp")));
}

#[cfg(unix)]
#[test]
fn sigkill_and_resume_gives_the_same_bits_on_the_cpu() {
    killed_and_resumed_run_matches("cpu", "300000", "10", &[]);
}

#[cfg(unix)]
#[test]
fn sigkill_and_resume_gives_the_same_bits_when_streaming() {
    killed_and_resumed_run_matches(
        "cpu",
        "300000",
        "10",
        &["--stream", "--chunk-rows", "20000"],
    );
}

#[cfg(unix)]
#[test]
fn sigkill_and_resume_gives_the_same_bits_on_the_software_adapter() {
    let dir = tempfile::tempdir().unwrap();
    if software_adapter(dir.path()) {
        killed_and_resumed_run_matches("software", "60000", "8", &[]);
    }
}

#[test]
fn a_requeued_run_repeats_its_command_line_with_resume_and_only_differences_are_refused() {
    // What a scheduler's requeue does: the very same arguments, plus --resume.
    let dir = tempfile::tempdir().unwrap();
    let data = asset("bishop.csv");
    let data = data.to_str().unwrap();
    let args = [
        "train",
        "--data",
        data,
        "--epochs",
        "6",
        "--seed",
        "3",
        "--hidden",
        "8",
        "--device",
        "cpu",
        "--checkpoint",
        "ck.json",
        "--checkpoint-every",
        "1",
        "--out",
        "m.json",
        "--quiet",
    ];
    let out = mdn(dir.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read_to_string(dir.path().join("m.json")).unwrap();
    let again: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--resume", "ck.json"])
        .collect();
    let out = mdn(dir.path(), &again);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = std::fs::read_to_string(dir.path().join("m.json")).unwrap();
    let params = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["params"].clone();
    assert_eq!(params(&first), params(&resumed));
    // Options that differ from the checkpoint's run: refused, each with both values.
    let mut differ = again.clone();
    differ.extend(["--lr", "0.01", "--ensemble", "5"]);
    differ[4] = "7";
    let out = mdn(dir.path(), &differ);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "--epochs 7 (the checkpoint's run has 6)",
        "--ensemble 5 (the checkpoint's run has 1)",
        "--lr 0.01",
    ] {
        assert!(err.contains(needle), "expected {needle:?} in {err}");
    }
    assert!(!err.contains("--seed"), "{err}");
}

#[test]
fn checkpoint_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"format\": \"mdn-model\"}").unwrap();
    std::fs::write(
        dir.path().join("bad2.json"),
        "{\"format\": \"mdn-checkpoint\", \"format_version\": 2}",
    )
    .unwrap();
    for (args, needle) in [
        (
            vec!["train", "--resume", "bad.json"],
            "not an mdn checkpoint",
        ),
        (
            // An ensemble's checkpoint (version 2) missing its fields; named a checkpoint,
            // not a model file.
            vec!["train", "--resume", "bad2.json"],
            "checkpoint bad2.json: malformed checkpoint: missing field",
        ),
        (
            vec!["train", "--resume", "missing.json"],
            "missing.json: no such file",
        ),
        (
            vec!["train", "--checkpoint-every", "0"],
            "--checkpoint-every must be at least 1",
        ),
    ] {
        let out = mdn(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
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

#[test]
fn select_cross_validates_and_trains_the_chosen_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = ok(
        dir.path(),
        &[
            "select",
            "--device",
            "cpu",
            "--components",
            "1,3",
            "--l2",
            "0,1e-3",
            "--hidden",
            "16;32",
            "--folds",
            "3",
            "--max-epochs",
            "30",
            "--json",
            "--out",
            "sel.json",
        ],
    );
    assert!(
        err.contains("fit 1/24") && err.contains("fit 24/24"),
        "{err}"
    );
    let v = json(&out);
    let scores = v["selection"]["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 2 * 2 * 2);
    let mean = |i: usize| scores[i]["mean_nll"].as_f64().unwrap();
    let (best, chosen) = (
        v["selection"]["best"].as_u64().unwrap() as usize,
        v["selection"]["chosen"].as_u64().unwrap() as usize,
    );
    assert!((0..scores.len()).all(|i| mean(i) >= mean(best)));
    // One-standard-error rule: within one SE of the best, and no qualifying setting is smaller.
    let limit = mean(best) + scores[best]["se_nll"].as_f64().unwrap();
    assert!(mean(chosen) <= limit);
    let params = |i: usize| scores[i]["params"].as_u64().unwrap();
    assert!(
        (0..scores.len())
            .filter(|&i| mean(i) <= limit)
            .all(|i| params(i) >= params(chosen))
    );
    for s in scores {
        assert_eq!(s["fold_nll"].as_array().unwrap().len(), 3);
    }
    // Mixtures beat a single Gaussian on the shipped example, and the chosen model is written.
    assert!(scores[chosen]["setting"]["components"] == 3);
    let m = json(&std::fs::read_to_string(dir.path().join("sel.json")).unwrap());
    assert_eq!(m["arch"]["components"], 3);
    assert_eq!(m["arch"]["hidden"], scores[chosen]["setting"]["hidden"]);
    let (text, _) = ok(
        dir.path(),
        &[
            "select",
            "--device",
            "cpu",
            "--components",
            "1,2",
            "--folds",
            "2",
            "--max-epochs",
            "5",
            "--activation",
            "tanh",
            "--clip-norm",
            "1",
            "--quiet",
        ],
    );
    assert!(
        text.contains("<- chosen") && text.contains("2-fold cross-validation"),
        "{text}"
    );
    // The fitting options reach every model, the chosen one included.
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert_eq!(m["arch"]["activation"], "tanh");
    assert_eq!(m["training"]["clip_norm"].as_f64().unwrap(), 1.0);
    let out = mdn(dir.path(), &["select", "--folds", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--folds must be at least 2"));
}

#[test]
fn full_covariance_trains_predicts_samples_and_selects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (rows, seed, out) in [("4000", "1", "train.csv"), ("1000", "2", "test.csv")] {
        ok(
            d,
            &[
                "generate",
                "--kind",
                "correlated",
                "--rows",
                rows,
                "--seed",
                seed,
                "--out",
                out,
                "--quiet",
            ],
        );
    }
    let train = |device: &str, cov: &str, out: &str| -> String {
        let (_, err) = ok(
            d,
            &[
                "train",
                "--data",
                "train.csv",
                "--target",
                "y0,y1,y2",
                "--components",
                "1",
                "--hidden",
                "16",
                "--covariance",
                cov,
                "--device",
                device,
                "--out",
                out,
            ],
        );
        err
    };
    let eval = |model: &str, device: &str| -> f64 {
        let (out, _) = ok(
            d,
            &[
                "eval", "--model", model, "--data", "test.csv", "--device", device, "--json",
            ],
        );
        json(&out)["mean_nll"].as_f64().unwrap()
    };
    let err = train("cpu", "full", "full.json");
    assert!(err.contains("full covariance"), "{err}");
    train("cpu", "diagonal", "diag.json");
    let (full, diag) = (eval("full.json", "cpu"), eval("diag.json", "cpu"));
    assert!(full < diag - 1.0, "full {full} vs diagonal {diag}");
    let m = json(&std::fs::read_to_string(d.join("full.json")).unwrap());
    assert_eq!(m["arch"]["covariance"], "full");
    assert_eq!(
        m["params"].as_array().unwrap().len(),
        (1 + 1) * 16 + (16 + 1) * (1 + 2 * 3 + 3)
    );

    // predict: correlation columns in CSV, covariance matrices in JSON.
    let (csv, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "full.json",
            "--data",
            "test.csv",
            "--device",
            "cpu",
        ],
    );
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    for c in [
        "corr_0_y0_y1",
        "corr_0_y0_y2",
        "corr_0_y1_y2",
        "sigma_0_y1",
        "mean_y2",
    ] {
        assert!(header.contains(&c), "{c} missing from {header:?}");
    }
    let first: Vec<f64> = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let rho = first[header.iter().position(|h| *h == "corr_0_y0_y1").unwrap()];
    assert!(rho > 0.5 && rho < 1.0, "corr(y0, y1) {rho}");
    let (js, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "full.json",
            "--data",
            "test.csv",
            "--device",
            "cpu",
            "--json",
        ],
    );
    let row = &json(&js)["rows"][0];
    let cov = &row["cov"][0];
    let s1 = row["sigma"][0][1].as_f64().unwrap();
    assert!((cov[1][1].as_f64().unwrap() - s1 * s1).abs() < 1e-9);
    assert_eq!(cov[0][1], cov[1][0]);
    let (samples, _) = ok(
        d,
        &[
            "sample",
            "--model",
            "full.json",
            "--data",
            "test.csv",
            "--n",
            "2",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(samples.lines().count(), 1 + 2000);

    // select compares the two covariance shapes and picks full.
    let (out, _) = ok(
        d,
        &[
            "select",
            "--data",
            "train.csv",
            "--target",
            "y0,y1,y2",
            "--components",
            "1",
            "--hidden",
            "16",
            "--covariance",
            "diagonal,full",
            "--folds",
            "2",
            "--max-epochs",
            "20",
            "--device",
            "cpu",
            "--json",
            "--quiet",
            "--out",
            "sel.json",
        ],
    );
    let v = json(&out);
    let chosen = v["selection"]["chosen"].as_u64().unwrap() as usize;
    assert_eq!(
        v["selection"]["scores"][chosen]["setting"]["covariance"],
        "full"
    );

    // On the software adapter: the same kernel family, close to the CPU's result.
    if software_adapter(d) {
        train("software", "full", "full_gpu.json");
        let gpu = eval("full_gpu.json", "software");
        assert!(
            (gpu - full).abs() < 0.05,
            "software adapter {gpu} vs cpu {full}"
        );
        let cross = eval("full_gpu.json", "cpu");
        assert!(
            (cross - gpu).abs() < 1e-4,
            "eval on cpu {cross} vs software {gpu}"
        );
    }

    // Too many targets for full covariance: exit 2 with the limit named.
    let header: Vec<String> = (0..18).map(|i| format!("c{i}")).collect();
    let mut wide = header.join(",") + "\n";
    for r in 0..300 {
        let row: Vec<String> = (0..18)
            .map(|i| ((r * 7 + i * 3) % 11).to_string())
            .collect();
        wide += &(row.join(",") + "\n");
    }
    std::fs::write(d.join("wide.csv"), wide).unwrap();
    let targets: Vec<String> = header[1..].to_vec();
    let out = mdn(
        d,
        &[
            "train",
            "--data",
            "wide.csv",
            "--target",
            &targets.join(","),
            "--covariance",
            "full",
            "--device",
            "cpu",
            "--out",
            "never.json",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 16 target columns"), "{err}");
    assert!(!d.join("never.json").exists());
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
            "one input feature",
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

/// Regression (target leak): a streamed CSV with the target chosen by column index used the
/// target as a feature too (`[b,c,a] -> [a]`), because the streaming path had its own copy
/// of the column rules that matched names only. Both paths, with names and with indexes,
/// must give the same columns.
#[test]
fn target_leak_streamed_csv_with_target_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b,c\n");
    for i in 0..400 {
        let b = (i % 17) as f64 / 17.0;
        let c = (i % 5) as f64;
        csv.push_str(&format!("{},{b},{c}\n", b * 2.0 + c + (i % 3) as f64 * 0.1));
    }
    std::fs::write(dir.path().join("f.csv"), csv).unwrap();
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        (&["--target", "0"], &["b", "c"], &["a"]),
        (&["--target", "a"], &["b", "c"], &["a"]),
        (&["--target", "0", "--features", "2"], &["c"], &["a"]),
        (&["--target", "c", "--features", "0,b"], &["a", "b"], &["c"]),
    ];
    for (cols, features, targets) in cases {
        for stream in [false, true] {
            let mut args = vec![
                "train",
                "--data",
                "f.csv",
                "--epochs",
                "1",
                "--device",
                "cpu",
                "--quiet",
                "--batch-size",
                "32",
                "--out",
                "m.json",
            ];
            args.extend_from_slice(cols);
            if stream {
                args.push("--stream");
            }
            ok(dir.path(), &args);
            let m = json(&std::fs::read_to_string(dir.path().join("m.json")).unwrap());
            assert_eq!(m["features"], serde_json::json!(features), "{args:?}");
            assert_eq!(m["targets"], serde_json::json!(targets), "{args:?}");
        }
    }
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

/// Regression (temp_columns_json_left_behind): a streamed CSV left
/// `mdn-XXXX.npy.columns.json` in the temporary directory. Nothing temporary survives a run,
/// whether it succeeds or fails on bad data halfway through the conversion.
#[test]
fn temp_columns_json_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", "3000", "--out", "g.csv",
        ],
    );
    let mut bad = std::fs::read_to_string(dir.path().join("g.csv")).unwrap();
    bad.push_str("0.5,oops\n");
    std::fs::write(dir.path().join("bad.csv"), bad).unwrap();
    let run = |data: &str| {
        Command::new(env!("CARGO_BIN_EXE_mdn"))
            .args([
                "train", "--data", data, "--stream", "--epochs", "1", "--device", "cpu", "--quiet",
            ])
            .current_dir(dir.path())
            .env("TMPDIR", tmp.path())
            .env_remove("MDN_DEVICE")
            .output()
            .unwrap()
    };
    let out = run("g.csv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files_in(tmp.path()), Vec::<String>::new());
    let out = run("bad.csv");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'oops' is not a number"));
    assert_eq!(files_in(tmp.path()), Vec::<String>::new());
}

/// Options are refused with their own message before any work: a negative number is read
/// as a value (not as an unknown option), `--out` in a place that cannot be written is
/// refused before training, and settings that cannot be meaningful are refused.
#[test]
fn bad_options_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], needle: &str| {
        let out = mdn(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("training on"), "{args:?} started work: {err}");
    };
    refused(
        &["train", "--lr", "-0.001"],
        "--lr must be a positive number, got -0.001",
    );
    refused(
        &["train", "--l2", "-1"],
        "--l2 must be a number >= 0, got -1",
    );
    refused(
        &["train", "--components", "0", "--data", "missing.csv"],
        "--components must be at least 1",
    );
    refused(
        &["train", "--batch-size", "0"],
        "--batch-size must be at least 1",
    );
    refused(
        &["train", "--val-fraction", "0"],
        "early stopping needs validation data",
    );
    refused(
        &["train", "--out", "/proc/model.json"],
        "--out /proc/model.json",
    );
    refused(&["train", "--out", "no/such/dir/m.json"], "does not exist");
    refused(&["train", "--out", "sub/"], "names a directory, not a file");
    refused(
        &["train", "--components", "100000", "--device", "cpu"],
        "--components 100000 is more than the",
    );
    assert!(!dir.path().join("model.json").exists());
    // A likely mistake is trained but warned about.
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--components",
            "200",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--batch-size",
            "64",
        ],
    );
    assert!(err.contains("warning: --components 200"), "{err}");
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

/// `RUST_LOG=info` shows what a training job decided.
#[test]
fn rust_log_info_shows_the_jobs_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(["train", "--epochs", "1", "--device", "cpu", "--quiet"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("job: device cpu") && err.contains("in memory") && err.contains("batch 32"),
        "{err}"
    );
}

/// Regression (npy_repeated_column_names): a `.columns.json` naming two columns alike made
/// a column chosen by index resolve to the first column of that name, silently training on
/// the wrong target. Repeated names are refused, as in a CSV header.
#[test]
fn npy_repeated_column_names() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", "500", "--out", "d.npy", "--quiet",
        ],
    );
    std::fs::write(dir.path().join("d.npy.columns.json"), r#"["t","t"]"#).unwrap();
    let out = mdn(
        dir.path(),
        &[
            "train",
            "--data",
            "d.npy",
            "--target",
            "1",
            "--features",
            "0",
            "--epochs",
            "1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("d.npy.columns.json") && err.contains("'t' is repeated"),
        "{err}"
    );
    assert!(!dir.path().join("model.json").exists());
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

/// Regression (second_ctrl_c_leaves_conversion_files): two Ctrl-C while a CSV is converted to
/// stream it left the converter's unfinished temporary file behind. The converted file lives
/// in a directory of its own, removed whole, also by the second Ctrl-C's immediate exit.
#[cfg(unix)]
#[test]
fn second_ctrl_c_leaves_conversion_files() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate", "--kind", "wide", "--rows", "300000", "--out", "w.csv", "--quiet",
        ],
    );
    for signals in [1, 2] {
        let child = Command::new(env!("CARGO_BIN_EXE_mdn"))
            .args([
                "train", "--data", "w.csv", "--target", "y0,y1", "--stream", "--epochs", "1",
                "--device", "cpu",
            ])
            .current_dir(dir.path())
            .env("TMPDIR", tmp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the conversion has started (its directory exists).
        let started = std::time::Instant::now();
        while files_in(tmp.path()).is_empty() && started.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            !files_in(tmp.path()).is_empty(),
            "the conversion never started"
        );
        for _ in 0..signals {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{signals} Ctrl-C: {err}");
        assert_eq!(
            files_in(tmp.path()),
            Vec::<String>::new(),
            "{signals} Ctrl-C: {err}"
        );
        assert!(!dir.path().join("model.json").exists());
    }
}

/// Small data sets train with the defaults, which adapt to the number of training rows (and
/// say so); an explicit option keeps its value.
#[test]
fn small_data_trains_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("x,y\n");
    for i in 0..300 {
        let x = (i as f64 * 0.37).sin();
        csv.push_str(&format!(
            "{x},{}\n",
            2.0 * x + 0.1 * ((i * 7 % 11) as f64 - 5.0)
        ));
    }
    std::fs::write(dir.path().join("small.csv"), csv).unwrap();
    // Below 1,500 rows: the number of epochs by 5-fold cross-validation, then every row.
    let (out, err) = ok(
        dir.path(),
        &["train", "--data", "small.csv", "--device", "cpu", "--json"],
    );
    let v = json(&out);
    assert_eq!(v["train_rows"], 300, "{v}");
    assert_eq!(v["val_rows"], 0, "{v}");
    assert!(
        err.contains("choosing the number of epochs by 5-fold cross-validation"),
        "{err}"
    );
    assert!(
        err.contains("fold 5/5 (60 rows held out): best epoch"),
        "{err}"
    );
    assert!(err.contains("epochs (cross-validated)"), "{err}");
    assert!(
        !err.contains("patience"),
        "a fixed-epoch refit has no patience: {err}"
    );
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    let c = &m["training"]["epoch_choice"];
    let mut best: Vec<u64> = c["fold_best_epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_u64().unwrap())
        .collect();
    assert_eq!(best.len(), 5, "{c}");
    best.sort();
    assert_eq!(c["epochs"], best[2], "the median of the folds' best epochs");
    assert_eq!(m["training"]["epochs"], best[2]);
    assert_eq!(m["training"]["batch_size"], 32);
    // A linear trend with noise: the MDN is compared with the linear model on the same folds.
    assert!(c["baseline_cv_nll"].as_f64().is_some());
    // With a split asked for, the defaults adapt to the training rows of the split.
    let (out, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "small.csv",
            "--device",
            "cpu",
            "--json",
            "--val-fraction",
            "0.1",
        ],
    );
    let v = json(&out);
    let n = v["train_rows"].as_u64().unwrap();
    assert!((250..300).contains(&n), "{v}");
    // Batch 32; 9 or 10 batches an epoch: patience 10 or 12, at most 300-334 epochs.
    assert!(
        err.contains(&format!("defaults for {n} training rows: batch 32")),
        "{err}"
    );
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert_eq!(m["training"]["batch_size"], 32);
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "small.csv",
            "--device",
            "cpu",
            "--batch-size",
            "64",
            "--quiet",
        ],
    );
    assert!(err.is_empty(), "{err}");
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert_eq!(m["training"]["batch_size"], 64);
}

/// `mdn train` compares the model with a linear-Gaussian baseline fitted on the same rows,
/// records the baseline's validation NLL, and warns when the model is no better.
#[test]
fn train_warns_when_a_linear_model_does_as_well() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("x,y\n");
    for i in 0..2000 {
        let x = (i as f64 * 0.618).fract() * 4.0 - 2.0;
        let e = ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 0.2;
        csv.push_str(&format!("{x},{}\n", 1.0 + 2.0 * x + e));
    }
    std::fs::write(dir.path().join("lin.csv"), csv).unwrap();
    // One epoch cannot match the exact least-squares fit.
    let (_, err) = ok(
        dir.path(),
        &[
            "train", "--data", "lin.csv", "--epochs", "1", "--device", "cpu",
        ],
    );
    assert!(
        err.contains("is no better than that of a linear model"),
        "{err}"
    );
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert!(m["training"]["baseline_val_nll"].as_f64().is_some(), "{m}");
    // On Bishop's inverse problem the MDN is far better than any linear model.
    let (_, err) = ok(dir.path(), &["train", "--epochs", "30", "--device", "cpu"]);
    assert!(!err.contains("no better"), "{err}");
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    let t = &m["training"];
    assert!(
        t["best_val_nll"].as_f64().unwrap() < t["baseline_val_nll"].as_f64().unwrap() - 0.3,
        "{t}"
    );
}

/// `n` rows of `x,y` with y = sin x plus a deterministic spread of half-width `noise` / 2.
/// `csv` (columns x,y) with a column c between them that is `value` on every row.
fn with_constant_column(csv: &str, value: &str) -> String {
    csv.lines()
        .enumerate()
        .map(|(i, line)| {
            let (x, y) = line.split_once(',').expect("x,y");
            let c = if i == 0 { "c" } else { value };
            format!("{x},{c},{y}\n")
        })
        .collect()
}

fn sine_csv(n: usize, noise: f64) -> String {
    let mut csv = String::from("x,y\n");
    for i in 0..n {
        let x = (i as f64 * 0.61).fract() * 6.0 - 3.0;
        let e = ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * noise;
        csv.push_str(&format!("{x},{}\n", x.sin() + e));
    }
    csv
}

/// `mdn select` works on 40 rows: each fit's defaults adapt to its own training rows (a
/// batch sized for the average fold did not fit the smallest), and the chosen setting is
/// trained with the small-data rule.
#[test]
fn select_works_on_40_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.csv"), sine_csv(40, 0.5)).unwrap();
    let (out, err) = ok(
        dir.path(),
        &[
            "select",
            "--data",
            "tiny.csv",
            "--components",
            "1,2",
            "--device",
            "cpu",
            "--json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["selection"]["scores"].as_array().unwrap().len(), 2, "{v}");
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert_eq!(m["training"]["train_rows"], 40, "{err}");
    assert!(m["training"]["epoch_choice"].is_object(), "{m}");
}

/// Regression (out_overwrites_data): `--out` naming the training file replaced the data with
/// the model. It is refused, and the data stay.
#[test]
fn out_overwrites_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read_to_string(asset("bishop.csv")).unwrap();
    std::fs::write(dir.path().join("d.csv"), &data).unwrap();
    for extra in [
        &["--out", "d.csv"][..],
        &["--out", "./d.csv"],
        &["--val", "d.csv", "--out", "d.csv"],
    ] {
        let mut args = vec![
            "train", "--data", "d.csv", "--epochs", "1", "--device", "cpu",
        ];
        args.extend_from_slice(extra);
        let out = mdn(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("would overwrite the data"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("d.csv")).unwrap(),
            data
        );
    }
}

/// Tiny data sets: five even folds from 10 rows up, K adapted to the rows, a K no fold can
/// fit refused before any fit, and fewer than 10 rows told how to train anyway.
#[test]
fn tiny_data_sets_are_handled_with_care() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, n: usize| {
        std::fs::write(dir.path().join(name), sine_csv(n, 0.5)).unwrap();
    };
    write("r12.csv", 12);
    write("r40.csv", 40);
    write("r8.csv", 8);
    let (_, err) = ok(
        dir.path(),
        &["train", "--data", "r12.csv", "--device", "cpu"],
    );
    assert!(err.contains("fold 5/5 (2 rows held out)"), "{err}");
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert_eq!(m["training"]["epoch_choice"]["folds"], 5);
    assert_eq!(m["arch"]["components"], 1);
    let (_, err) = ok(
        dir.path(),
        &["train", "--data", "r40.csv", "--device", "cpu"],
    );
    assert!(err.contains("K=2"), "{err}");
    assert!(!err.contains("warning: --components"), "{err}");
    let m = json(&std::fs::read_to_string(dir.path().join("model.json")).unwrap());
    assert_eq!(m["arch"]["components"], 2);
    let out = mdn(
        dir.path(),
        &[
            "train",
            "--data",
            "r40.csv",
            "--components",
            "33",
            "--device",
            "cpu",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rows a cross-validation fold trains on") && !err.contains("fold 1/5"),
        "{err}"
    );
    let out = mdn(
        dir.path(),
        &["train", "--data", "r8.csv", "--device", "cpu"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--val-fraction 0 --epochs N"), "{err}");
    ok(
        dir.path(),
        &[
            "train",
            "--data",
            "r8.csv",
            "--device",
            "cpu",
            "--val-fraction",
            "0",
            "--epochs",
            "5",
        ],
    );
}

#[test]
fn checkpoint_with_a_relative_data_path_resumes_from_another_directory() {
    // Regression: the checkpoint kept `--data` as given, so resuming from elsewhere failed
    // with "no such file".
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("run");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(asset("bishop.csv"), sub.join("b.csv")).unwrap();
    ok(
        &sub,
        &[
            "train",
            "--data",
            "b.csv",
            "--epochs",
            "2",
            "--checkpoint-every",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ],
    );
    ok(
        dir.path(),
        &[
            "train",
            "--resume",
            "run/model.ckpt.json",
            "--out",
            "again.json",
            "--device",
            "cpu",
            "--quiet",
        ],
    );
    assert!(dir.path().join("again.json").exists());
}

#[test]
fn resume_without_out_wrote_model_json_in_the_current_directory() {
    // Regression: the checkpoint did not record --out, so `mdn train --resume` without --out
    // wrote model.json wherever it was run instead of where the interrupted run was writing.
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("run");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(asset("bishop.csv"), sub.join("b.csv")).unwrap();
    let train = |cwd: &Path, extra: &[&str]| {
        let mut a = vec!["train", "--device", "cpu", "--quiet"];
        a.extend_from_slice(extra);
        ok(cwd, &a);
    };
    let first = [
        "--data",
        "b.csv",
        "--out",
        "m.json",
        "--epochs",
        "2",
        "--checkpoint-every",
        "1",
    ];
    train(&sub, &first);
    let written = std::fs::read(sub.join("m.json")).unwrap();
    std::fs::remove_file(sub.join("m.json")).unwrap();
    train(dir.path(), &["--resume", "run/m.ckpt.json"]);
    assert!(
        !dir.path().join("model.json").exists(),
        "the resumed run wrote model.json in the current directory"
    );
    assert_eq!(
        std::fs::read(sub.join("m.json")).unwrap(),
        written,
        "the resumed run's model differs from the run's own"
    );
    // --out still decides where it goes when given.
    train(
        dir.path(),
        &["--resume", "run/m.ckpt.json", "--out", "x.json"],
    );
    assert!(dir.path().join("x.json").exists());
}

#[test]
fn train_panicked_when_its_stderr_was_closed() {
    // Regression: `mdn train ... 2>&1 | head` panicked (exit 101) at the first progress line
    // after the reader went away, and the model was lost. Progress is best effort.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args([
            "train", "--device", "cpu", "--epochs", "30", "--out", "m.json",
        ])
        .current_dir(dir.path())
        .env_remove("MDN_DEVICE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mdn");
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "mdn train with a closed stderr");
    assert!(dir.path().join("m.json").exists(), "no model was written");
}

#[test]
fn a_constant_feature_column_changed_the_predictions() {
    // Regression: a feature constant in the training rows was only centred, its first-layer
    // weights stayed at their random initial values, and a different value of it at
    // prediction time moved the prediction. Now it is named in a warning and ignored.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.csv"),
        with_constant_column(&sine_csv(200, 0.3), "1.5"),
    )
    .unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train", "--data", "d.csv", "--device", "cpu", "--out", "m.json",
        ],
    );
    assert!(
        err.contains("feature column 'c' is constant in the training rows"),
        "no warning about the constant column:\n{err}"
    );
    let m = json(&std::fs::read_to_string(dir.path().join("m.json")).unwrap());
    assert_eq!(m["training"]["constant_features"], serde_json::json!(["c"]));
    let (info, _) = ok(dir.path(), &["info", "m.json"]);
    assert!(
        info.contains("ignored       c: constant in the training rows"),
        "{info}"
    );
    let predict = |c: &str| {
        std::fs::write(dir.path().join("q.csv"), format!("x,c\n0.5,{c}\n-2,{c}\n")).unwrap();
        ok(
            dir.path(),
            &["predict", "--model", "m.json", "--data", "q.csv", "--json"],
        )
        .0
    };
    assert_eq!(
        predict("1.5"),
        predict("40"),
        "the constant column moved the prediction"
    );
}

#[test]
fn with_fixed_epochs_the_reported_validation_nll_was_the_best_epochs_not_the_saved_ones() {
    // Regression: with --epochs the last epoch's parameters are kept, but `mdn train` and
    // `mdn info` reported the best epoch's validation NLL as the model's.
    let dir = tempfile::tempdir().unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train", "--device", "cpu", "--epochs", "25", "--lr", "0.01", "--out", "m.json",
        ],
    );
    let m = json(&std::fs::read_to_string(dir.path().join("m.json")).unwrap());
    let t = &m["training"];
    assert_eq!(t["saved_epoch"], 25);
    let history = t["history"].as_array().unwrap();
    let last = history[24]["val_nll"].as_f64().unwrap();
    let wrote = err.lines().find(|l| l.starts_with("wrote ")).unwrap();
    assert!(
        wrote.contains(&format!(
            "parameters of epoch 25 of 25 (--epochs), validation NLL {last:.4}"
        )),
        "{wrote}"
    );
    let best = t["best_epoch"].as_u64().unwrap();
    if best != 25 {
        assert!(wrote.contains(&format!("was at epoch {best}")), "{wrote}");
    }
    let (info, _) = ok(dir.path(), &["info", "m.json"]);
    assert!(
        info.contains(&format!("(this model {last:.4}:")),
        "mdn info compares another epoch's NLL with the linear model:\n{info}"
    );
}

#[test]
fn val_fraction_left_too_few_training_rows_without_a_word() {
    // Regression: 9 rows are refused by the defaults, but --val-fraction 0.9 on 40 rows
    // trained on 4 rows silently.
    let dir = tempfile::tempdir().unwrap();
    let csv = sine_csv(40, 0.5);
    std::fs::write(dir.path().join("d.csv"), csv).unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "d.csv",
            "--val-fraction",
            "0.9",
            "--device",
            "cpu",
        ],
    );
    assert!(
        err.contains("only 4 training rows (--val-fraction 0.9 holds out the others)"),
        "{err}"
    );
}

#[test]
fn streaming_chose_its_batch_size_from_the_wrong_number_of_training_rows() {
    // Regression: a streamed run estimated its training rows as floor(0.9 n) (8,191 of 9,102)
    // where the split holds out round(0.1 n) (8,192 train), so at the 8,192-row step of the
    // batch rule it trained in batches of 32 where the same file in memory used 64.
    let dir = tempfile::tempdir().unwrap();
    ok(
        dir.path(),
        &[
            "generate", "--kind", "bishop", "--rows", "9102", "--out", "g.csv", "--quiet",
        ],
    );
    let batch = |extra: &[&str]| {
        let mut args = vec![
            "train", "--data", "g.csv", "--epochs", "1", "--device", "cpu", "--out", "m.json",
        ];
        args.extend_from_slice(extra);
        let (_, err) = ok(dir.path(), &args);
        assert!(
            err.contains("9102 rows: 8192 train, 910 validation"),
            "{err}"
        );
        let m = json(&std::fs::read_to_string(dir.path().join("m.json")).unwrap());
        m["training"]["batch_size"].as_u64().unwrap()
    };
    assert_eq!(batch(&[]), 64);
    assert_eq!(batch(&["--stream", "--chunk-rows", "1000"]), 64);
}

#[test]
fn val_fraction_beside_val_was_ignored_without_a_word() {
    // Regression: --val-fraction with --val was silently ignored; and with --epochs, too few
    // rows for the default split were refused with advice about early stopping that does not
    // apply ("add --epochs N" to a command that had it).
    let dir = tempfile::tempdir().unwrap();
    let csv = sine_csv(40, 0.5);
    std::fs::write(dir.path().join("d.csv"), &csv).unwrap();
    std::fs::write(
        dir.path().join("d9.csv"),
        csv.lines().take(10).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = mdn(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!dir.path().join("model.json").exists());
    };
    refused(
        &[
            "train",
            "--data",
            "d.csv",
            "--val",
            "d.csv",
            "--val-fraction",
            "0.3",
            "--device",
            "cpu",
        ],
        "--val-fraction 0.3 and --val d.csv both given",
    );
    refused(
        &[
            "train", "--data", "d9.csv", "--epochs", "3", "--device", "cpu",
        ],
        "add --val-fraction 0 to train on every row",
    );
    let (_, err) = ok(
        dir.path(),
        &[
            "train", "--data", "d.csv", "--val", "d.csv", "--epochs", "2", "--device", "cpu",
        ],
    );
    assert!(
        err.contains("training on d.csv (40 rows; validation rows from d.csv: 40)"),
        "{err}"
    );
}

#[test]
fn select_kept_its_final_models_warnings_to_itself() {
    // Regression: `mdn select` trained the chosen setting quietly, so a warning about the
    // model it wrote (no better than a linear model, a constant column ignored) never showed.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("d.csv"),
        with_constant_column(&sine_csv(40, 0.5), "1"),
    )
    .unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "select",
            "--data",
            "d.csv",
            "--components",
            "1,2",
            "--device",
            "cpu",
        ],
    );
    assert!(
        err.contains("warning: feature column 'c' is constant"),
        "{err}"
    );
}

#[test]
fn small_data_tries_fewer_components_when_k_is_left_to_the_defaults() {
    // Below 1,500 rows the cross-validation that chooses the epochs also tries K=3 and K=2
    // beside the default 5 (taken only when their folds beat K=5's by more than the standard
    // error of the differences); an explicit --components is kept as given.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), sine_csv(150, 0.5)).unwrap();
    ok(
        dir.path(),
        &[
            "train", "--data", "d.csv", "--device", "cpu", "--out", "a.json",
        ],
    );
    let m = json(&std::fs::read_to_string(dir.path().join("a.json")).unwrap());
    let tried = m["training"]["epoch_choice"]["components"]
        .as_array()
        .unwrap();
    let ks: Vec<u64> = tried
        .iter()
        .map(|c| c["components"].as_u64().unwrap())
        .collect();
    assert_eq!(ks, [5, 3, 2]);
    let chosen: Vec<&serde_json::Value> = tried.iter().filter(|c| c["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1, "{tried:?}");
    assert_eq!(m["arch"]["components"], chosen[0]["components"]);
    assert_eq!(m["training"]["epochs"], chosen[0]["epochs"]);
    let (info, _) = ok(dir.path(), &["info", "a.json"]);
    assert!(
        info.contains("K choice      cross-validated: K=5 ") && info.contains("(chosen)"),
        "{info}"
    );
    ok(
        dir.path(),
        &[
            "train",
            "--data",
            "d.csv",
            "--device",
            "cpu",
            "--components",
            "5",
            "--out",
            "b.json",
        ],
    );
    let m = json(&std::fs::read_to_string(dir.path().join("b.json")).unwrap());
    assert!(
        m["training"]["epoch_choice"].get("components").is_none(),
        "{m}"
    );
    assert_eq!(m["arch"]["components"], 5);
}

#[test]
fn below_1500_rows_the_epochs_are_cross_validated_and_from_1500_a_split_steers() {
    // The threshold was 500 rows; the small-data benchmark measured better held-out NLLs with
    // the cross-validation up to 1,325 training rows and none at 1,710 (README). 1,499 rows
    // cross-validate, 1,500 hold out exactly 150 rows to early-stop on.
    let dir = tempfile::tempdir().unwrap();
    for (rows, cross_validated) in [(1499, true), (1500, false)] {
        std::fs::write(dir.path().join("d.csv"), sine_csv(rows, 0.4)).unwrap();
        let (out, err) = ok(
            dir.path(),
            &[
                "train",
                "--data",
                "d.csv",
                "--device",
                "cpu",
                "--json",
                "--max-epochs",
                "12",
            ],
        );
        let v = json(&out);
        if cross_validated {
            assert_eq!(v["train_rows"], 1499, "{v}");
            assert_eq!(v["val_rows"], 0, "{v}");
            assert!(err.contains("5-fold cross-validation"), "{err}");
        } else {
            assert_eq!(v["train_rows"], 1350, "{v}");
            assert_eq!(v["val_rows"], 150, "{v}");
            assert!(!err.contains("cross-validation"), "{err}");
            // Why, since a row fewer would cross-validate.
            assert!(
                err.contains("early stopping on a 10% split (the epochs are cross-validated only below 1500 rows)"),
                "{err}"
            );
        }
    }
}

#[test]
#[cfg(unix)]
fn out_to_a_device_or_fifo_replaced_it_or_hung_and_through_a_link_replaced_the_link() {
    // Regression (a new user, as root): `mdn train --out /dev/null` exited 0 and renamed the
    // model over the device, leaving /dev/null a regular file; `--out` naming a FIFO hung
    // before training; `--out` naming a symbolic link replaced the link and left its target
    // alone. Devices and FIFOs are refused before any work (a FIFO stands in for /dev/null
    // here), and a link's target is written.
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.csv"), sine_csv(60, 0.2)).unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let base = ["--data", "d.csv", "--device", "cpu", "--epochs", "2"];
    let out = mdn(
        dir.path(),
        &[&["train", "--out", "pipe"][..], &base].concat(),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--out pipe: a named pipe (FIFO), not a regular file"),
        "{err}"
    );
    assert!(!err.contains("epoch"), "refused before training: {err}");
    ok(
        dir.path(),
        &[&["train", "--out", "m.json", "--quiet"][..], &base].concat(),
    );
    let out = mdn(
        dir.path(),
        &[
            "predict", "--model", "m.json", "--data", "d.csv", "--out", "pipe", "--device", "cpu",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--out pipe: a named pipe (FIFO)"), "{err}");
    let meta = std::fs::metadata(dir.path().join("pipe")).unwrap();
    assert!(meta.file_type().is_fifo(), "the FIFO is still a FIFO");
    // Through a link: the link stays, the file it points to is the model.
    std::os::unix::fs::symlink("target.json", dir.path().join("link.json")).unwrap();
    std::fs::write(dir.path().join("target.json"), "old").unwrap();
    ok(
        dir.path(),
        &[&["train", "--out", "link.json", "--quiet"][..], &base].concat(),
    );
    let link = std::fs::symlink_metadata(dir.path().join("link.json")).unwrap();
    assert!(link.file_type().is_symlink(), "the link is still a link");
    let written = std::fs::read_to_string(dir.path().join("target.json")).unwrap();
    assert!(written.contains("\"params\""), "the target holds the model");
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
        err.contains("new.csv:2:2 (column 'y'): empty cell"),
        "{err}"
    );
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
