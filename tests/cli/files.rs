//! The files mdn reads and writes, and every input error: CSV and `.npy` data (`convert`,
//! `generate`, streaming, columns by name or index), bad data and bad model files (exit 2, the
//! place named, nothing written), the model format's Python example, options refused before
//! any work, temporary files, and what `--out` may overwrite.

use std::path::Path;
use std::process::Command;

#[cfg(unix)]
use crate::support::sine_csv;
use crate::support::{asset, files_in, json, mdn, ok, trained};

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
fn crlf_files_reported_errors_one_line_too_early() {
    // What Excel and Python's csv module write. The csv crate placed a CRLF file's records
    // on the line before (the header's line for the first data row).
    train_fails(
        Some("x,y\r\n1,2\r\n2,oops\r\n"),
        &[],
        "d.csv:3:2 (column 'y'): 'oops' is not a number",
    );
    train_fails(
        Some("x,y\r\n1,oops\r\n"),
        &[],
        "d.csv:2:2 (column 'y'): 'oops' is not a number",
    );
    // Blank lines are skipped but counted; a quoted cell may span lines.
    train_fails(
        Some("x,note,y\r\n1,,2\r\n\r\n\r\n3,,4\r\n5,\"a\r\nb\",6\r\n7,,oops\r\n"),
        &["--features", "x"],
        "d.csv:8:3 (column 'y'): 'oops' is not a number",
    );
    train_fails(
        Some("x,y\n1,2\n\n3,4\r\n5,oops\n"),
        &[],
        "d.csv:5:2 (column 'y'): 'oops' is not a number",
    );
}

#[test]
fn semicolon_and_tab_separated_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    for (name, sep) in [("semi.csv", ";"), ("tabs.csv", "\t")] {
        let text: String = std::iter::once(format!("x{sep}y\n"))
            .chain(
                rows(200)
                    .lines()
                    .map(|l| format!("{}\n", l.replace(',', sep))),
            )
            .collect();
        std::fs::write(dir.path().join(name), text).unwrap();
        let out = mdn(
            dir.path(),
            &[
                "train", "--data", name, "--epochs", "2", "--out", "m.json", "--quiet",
            ],
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
        assert_eq!(model["features"], serde_json::json!(["x"]), "{name}");
        assert_eq!(model["targets"], serde_json::json!(["y"]), "{name}");
    }
    // A quoted name with a comma in a `;` file: the comma inside quotes does not count (it
    // was read as a comma-separated file with one column).
    let text: String = std::iter::once("\"x, cm\";y\n".to_string())
        .chain(
            rows(200)
                .lines()
                .map(|l| format!("{}\n", l.replace(',', ";"))),
        )
        .collect();
    std::fs::write(dir.path().join("quoted.csv"), text).unwrap();
    ok(
        dir.path(),
        &[
            "train",
            "--data",
            "quoted.csv",
            "--epochs",
            "2",
            "--out",
            "q.json",
            "--quiet",
        ],
    );
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("q.json")).unwrap()).unwrap();
    assert_eq!(model["features"], serde_json::json!(["x, cm"]));
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
        "d.csv:3:1 (column 'x'): missing value ('NaN')",
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
    train_fails(
        Some("x,y\n1,\n"),
        &[],
        "d.csv:2:2 (column 'y'): missing value (an empty cell)",
    );
    // One wording for every spelling of a missing value.
    train_fails(
        Some("x,y\n1,2\n3,NA\n"),
        &[],
        "d.csv:3:2 (column 'y'): missing value ('NA')",
    );
    train_fails(
        Some("x;y\n1;2\n3;1,5\n"),
        &[],
        "d.csv:3:2 (column 'y'): '1,5' is not a number: mdn reads a decimal point (1.5), not a decimal comma",
    );
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
    // Regression (empty_hidden_was_no_hidden_layer): an empty --hidden (an unset shell
    // variable) trained a model with no hidden layer; `none` says so on purpose.
    train_fails(
        Some(&format!("x,y\n{}", rows(100))),
        &["--hidden", ""],
        "an empty value: give layer widths (64,64), or none for no hidden layer",
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
    // And a version-4 file: a logit-transformed target.
    ok(
        d,
        &[
            "train",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--transform",
            "logit:-0.1,1.1",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--out",
            "logit.json",
            "--quiet",
        ],
    );
    // And a version-5 file: Student's t components with full covariance.
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
            "--family",
            "student-t",
            "--components",
            "2",
            "--epochs",
            "3",
            "--out",
            "student.json",
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
        ("logit.json", "one.csv", "[0.3]", "[0.45]", 1.0),
        (
            "student.json",
            "one_full.csv",
            "[0.3]",
            "[0.2, 0.1, -0.05]",
            1.0,
        ),
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
    // Regression (a new user): a column not in a .npy file was "not in the header" at
    // "b.npy:1", a line of a binary file, and the file naming its columns went unmentioned.
    let d = dir.path();
    std::fs::copy(d.join("b.npy"), d.join("bare.npy")).unwrap();
    for (file, want) in [
        (
            "b.npy",
            "b.npy: target column 'y' is not one of its columns (x, t, named in b.npy.columns.json)",
        ),
        (
            "bare.npy",
            "bare.npy: target column 'y' is not one of its columns (0, 1, numbered from 0: no \
             bare.npy.columns.json names them, as mdn convert writes one)",
        ),
    ] {
        let out = mdn(
            d,
            &["train", "--data", file, "--target", "y", "--epochs", "1"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
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

/// Regression (a new user): `mdn predict --out` naming its `--data` file replaced the data
/// with the predictions, and `mdn sample --out` naming its `--model` replaced the model, both
/// exiting 0; `--checkpoint` naming `--out` left a model where the checkpoint should be (the
/// resume then refused it). Every command that writes a file refuses to write over what it
/// reads, and the files stay as they were.
#[test]
fn predict_and_sample_wrote_over_their_own_data_or_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    trained(d);
    std::fs::copy(asset("bishop_test.csv"), d.join("d.csv")).unwrap();
    let before = |f: &str| std::fs::read(d.join(f)).unwrap();
    let (data, model) = (before("d.csv"), before("m.json"));
    let cases: [(&[&str], &str); 9] = [
        (
            &[
                "predict", "--model", "m.json", "--data", "d.csv", "--out", "d.csv",
            ],
            "--data",
        ),
        (
            &[
                "predict", "--model", "m.json", "--data", "d.csv", "--out", "./m.json",
            ],
            "--model",
        ),
        (
            &[
                "sample", "--model", "m.json", "--data", "d.csv", "--out", "m.json",
            ],
            "--model",
        ),
        (
            &[
                "sample", "--model", "m.json", "--data", "./d.csv", "--out", "d.csv",
            ],
            "--data",
        ),
        (
            &[
                "plot", "--model", "m.json", "--data", "d.csv", "--out", "m.json",
            ],
            "",
        ),
        (&["export", "m.json", "--out", "./m.json"], "--model"),
        (&["convert", "d.csv", "./d.csv"], "input"),
        (
            &[
                "train",
                "--data",
                "d.csv",
                "--out",
                "n.json",
                "--checkpoint",
                "./n.json",
                "--checkpoint-every",
                "1",
                "--epochs",
                "2",
            ],
            "--out",
        ),
        (
            &[
                "train",
                "--data",
                "d.csv",
                "--out",
                "x.json",
                "--checkpoint",
                "x.json",
            ],
            "--out",
        ),
    ];
    for (args, role) in cases {
        let out = mdn(d, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("is the {role} file")) || role.is_empty(),
            "{args:?}: {err}"
        );
        assert_eq!(before("d.csv"), data, "{args:?}");
        assert_eq!(before("m.json"), model, "{args:?}");
        assert_eq!(files_in(d), vec!["d.csv", "m.json"], "{args:?}");
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
fn a_large_offset_column_was_rounded_to_a_few_values_without_a_word() {
    // Regression (a new user): Unix times in seconds spanning 10 minutes became 6 distinct
    // float32 values, silently; a target of 5e7 plus noise was learnt as a lattice, and one
    // of 1e9 plus noise was called constant. (Whole numbers to 2^24 are exact in float32 and
    // never said: a large target rounded to whole numbers there goes unsaid.)
    let offset = |base: f64, spread: f64| -> String {
        let mut s = String::from("x,y\n");
        for i in 0..400 {
            let u = (i as f64 * 0.618_034).fract();
            s.push_str(&format!(
                "{},{}\n",
                base + spread * u,
                (i as f64 * 0.7).sin()
            ));
        }
        s
    };
    let target = |base: f64| -> String {
        let mut s = String::from("x,y\n");
        for i in 0..400 {
            let u = (i as f64 * 0.618_034).fract();
            s.push_str(&format!("{u},{}\n", base + 10.0 * (i as f64 * 0.7).sin()));
        }
        s
    };
    train_fails(
        Some(&target(5e7)),
        &["--epochs", "1"],
        "d.csv: target column 'y' has values about 5.0000e7 that differ by at most 16: float32, in which mdn computes, has steps of 4 at that size",
    );
    train_fails(
        Some(&target(1e9)),
        &["--epochs", "1"],
        "or its values differ only past the 7th significant digit",
    );
    // A feature: trained, with a warning naming it and the offset to subtract.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), offset(1.7e9, 600.0)).unwrap();
    let (_, err) = ok(dir.path(), &["train", "--data", "t.csv", "--epochs", "1"]);
    assert!(
        err.contains("warning: feature column 'x' has values about 1.7000e9 that differ by at most 640: float32, in which mdn computes, has steps of 128 at that size, so it keeps only about 6 distinct values of it; subtract an offset"),
        "{err}"
    );
    // The same spread at a small offset: no warning.
    std::fs::write(dir.path().join("s.csv"), offset(1000.0, 600.0)).unwrap();
    let (_, err) = ok(dir.path(), &["train", "--data", "s.csv", "--epochs", "1"]);
    assert!(!err.contains("float32"), "{err}");
    // Regression (a review): whole numbers below 2^24 are exact in float32 (counts from 16
    // million on, spanning 400) and were refused as few steps.
    let mut counts = String::from("x,y\n");
    for i in 0..400 {
        counts.push_str(&format!("{},{}\n", (i as f64 * 0.37).sin(), 16_000_000 + i));
    }
    std::fs::write(dir.path().join("c.csv"), counts).unwrap();
    let (_, err) = ok(dir.path(), &["train", "--data", "c.csv", "--epochs", "1"]);
    assert!(!err.contains("float32"), "{err}");
    // Regression (a review): a log-transformed target was judged in log units ("values
    // about 1.84e1 ... subtract 18"); it is in its own.
    train_fails(
        Some(&target(5e7)),
        &["--epochs", "1", "--transform", "log"],
        "d.csv: target column 'y' has values about 5.0000e7",
    );
}

#[test]
fn a_pandas_index_column_or_a_trailing_comma_was_refused() {
    // Regression (a new user): `df.to_csv()` writes its index as a column with an empty
    // name, and spreadsheets a separator at the end of every line; both were refused with
    // "empty column name in the header", whatever --features said.
    let dir = tempfile::tempdir().unwrap();
    let mut index = String::from(",x,t\n");
    let mut trailing = String::from("x,t,\n");
    let mut reread = String::from("Unnamed: 0,x,t\n");
    for i in 0..300 {
        let (x, t) = (i as f64 * 0.01, (i as f64 * 0.07).sin());
        index.push_str(&format!("{i},{x},{t}\n"));
        trailing.push_str(&format!("{x},{t},\n"));
        reread.push_str(&format!("{i},{x},{t}\n"));
    }
    for (name, text) in [
        ("index.csv", &index),
        ("trailing.csv", &trailing),
        ("reread.csv", &reread),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
        let out = format!("{name}.json");
        let (_, err) = ok(
            dir.path(),
            &["train", "--data", name, "--epochs", "1", "--out", &out],
        );
        // The unnamed column is neither a feature nor the target.
        assert!(err.contains("[x] -> [t]"), "{name}: {err}");
        let m = json(&std::fs::read_to_string(dir.path().join(&out)).unwrap());
        assert_eq!(m["features"], serde_json::json!(["x"]), "{name}");
        // And predicting on the same file reads it.
        ok(dir.path(), &["predict", "--model", &out, "--data", name]);
    }
    // Named as pandas names it, it can be chosen.
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "index.csv",
            "--features",
            "Unnamed: 0,x",
            "--epochs",
            "1",
            "--out",
            "both.json",
        ],
    );
    assert!(err.contains("[Unnamed: 0, x] -> [t]"), "{err}");
    train_fails(
        Some(",,\n1,2,3\n"),
        &[],
        "d.csv:1: the header names no column",
    );
    // Regression (a review): a headerless file whose first line ends with a separator, or
    // lacks its first cell, was taken for a header of numbers.
    for first in ["1.5,2.3,\n", ",1.5,2.3\n"] {
        train_fails(
            Some(&format!("{first}1,2,\n")),
            &[],
            "d.csv:1: the first line looks like data, not a header",
        );
    }
}

#[test]
fn a_spreadsheet_or_json_file_was_read_as_a_broken_csv() {
    // Regression (a new user): an .xlsx, a .csv.gz and a UTF-16 file each said "not valid
    // UTF-8 text" at line 1; a JSON array of records "column name repeated in the header".
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 8] = [
        (
            "book.xlsx",
            b"PK\x03\x04\x14\x00rest",
            "book.xlsx: a zip archive (an Excel .xlsx workbook is one), not CSV text: save it as CSV",
        ),
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1",
            "old.xls: an old Excel .xls workbook",
        ),
        (
            "d.csv.gz",
            b"\x1f\x8b\x08\x00",
            "d.csv.gz: gzip-compressed: decompress it first",
        ),
        (
            "u16.csv",
            b"\xff\xfex\x00,\x00t\x00\n\x00",
            "u16.csv: UTF-16 text",
        ),
        (
            "records.json",
            b"[{\"x\": 1, \"t\": 2}]",
            "records.json: JSON, not CSV text",
        ),
        (
            "lines.json",
            b"{\"x\": 1, \"t\": 2}\n{\"x\": 2, \"t\": 3}\n",
            "lines.json: JSON, not CSV text",
        ),
        (
            "arr.dat",
            b"\x93NUMPY\x01\x00",
            "arr.dat: a .npy array: give it a .npy name",
        ),
        (
            "w.csv",
            b"x,caf\xe9\n1,2\n",
            "w.csv:1: not valid UTF-8 text (save the file as UTF-8",
        ),
    ];
    for (name, bytes, needle) in cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let out = mdn(dir.path(), &["train", "--data", name, "--out", "m.json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
    }
    // Headers that begin as such files do are headers (a review: `PAR1,...` was called
    // Parquet, `[1/s] rate,...` JSON).
    for header in ["[m] x,t", "[1/s] rate,t", "PAR1,t", "{x},t"] {
        let mut text = format!("{header}\n");
        for i in 0..200 {
            text.push_str(&format!("{},{}\n", i as f64 * 0.01, (i as f64 * 0.1).sin()));
        }
        std::fs::write(dir.path().join("b.csv"), text).unwrap();
        ok(
            dir.path(),
            &[
                "train", "--data", "b.csv", "--epochs", "1", "--out", "m.json",
            ],
        );
    }
}

#[test]
fn a_column_name_with_a_comma_could_not_be_chosen() {
    // Regression (a new user): `--target 'dur, "days"'` was split at its comma ("target
    // column 'dur' is not in the header"), the header's list showed the name as two, and
    // the hint to leave an id column out gave `--features sale date,sqft`, which a shell
    // splits; and a kept column of that name broke the output CSV's header.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,sale date,\"dur, \"\"days\"\"\",y\n");
    for i in 0..300 {
        let u = (i as f64 * 0.618_034).fract();
        text.push_str(&format!("id{i},{},{u},{}\n", i % 7, (u * 5.0).sin()));
    }
    std::fs::write(dir.path().join("c.csv"), text).unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "c.csv",
            "--target",
            "y",
            "--features",
            "sale date,dur, \"days\"",
            "--epochs",
            "1",
            "--out",
            "m.json",
        ],
    );
    assert!(err.contains("[sale date, dur, \"days\"] -> [y]"), "{err}");
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "c.csv",
            "--target",
            "dur, \"days\"",
            "--features",
            "y",
            "--epochs",
            "1",
            "--out",
            "t.json",
        ],
    );
    assert!(err.contains("[y] -> [dur, \"days\"]"), "{err}");
    let (out, _) = ok(
        dir.path(),
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "c.csv",
            "--keep",
            "id,dur, \"days\"",
        ],
    );
    assert!(out.starts_with("row,id,\"dur, \"\"days\"\"\","), "{out}");
    let out = mdn(
        dir.path(),
        &["train", "--data", "c.csv", "--target", "nope"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(columns: id, sale date, 'dur, \"days\"', y)"),
        "{err}"
    );
    // The hint to leave the id column out, as a shell takes it.
    let out = mdn(dir.path(), &["train", "--data", "c.csv", "--target", "y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("leave the column out (--features 'sale date,dur, \"days\"')"),
        "{err}"
    );
}

#[test]
fn a_line_of_spaces_was_a_ragged_row() {
    // Regression (a new user): blank lines are skipped, but a line of spaces said "row has
    // 1 fields but the header has 2".
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("x,t\n");
    for i in 0..40 {
        text.push_str(&format!("{},{}\n", i, (i as f64 * 0.3).sin()));
        if i % 10 == 0 {
            text.push_str("   \n\t\n");
        }
    }
    std::fs::write(dir.path().join("w.csv"), text).unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train",
            "--data",
            "w.csv",
            "--epochs",
            "1",
            "--val-fraction",
            "0",
            "--out",
            "m.json",
        ],
    );
    assert!(err.contains("training on w.csv (40 rows"), "{err}");
}

#[test]
fn a_text_target_was_only_not_a_number() {
    // Regression (a new user): a target column of text said "'Downtown' is not a number",
    // not that a target holds numbers.
    train_fails(
        Some("x,area\n1,Downtown\n2,Uptown\n"),
        &[],
        "d.csv:2:2 (column 'area'): 'Downtown' is not a number: a target column holds numbers",
    );
}

#[test]
fn info_and_export_refused_model_as_an_option() {
    // Regression (a new user): predict, eval, sample and plot take --model; info and export
    // took the model only as an argument and refused --model.
    let dir = tempfile::tempdir().unwrap();
    trained(dir.path());
    let (by_flag, _) = ok(dir.path(), &["info", "--model", "m.json", "--json"]);
    let (by_arg, _) = ok(dir.path(), &["info", "m.json", "--json"]);
    assert_eq!(by_flag, by_arg);
    ok(
        dir.path(),
        &["export", "--model", "m.json", "--out", "m.onnx"],
    );
    assert!(dir.path().join("m.onnx").exists());
    let out = mdn(dir.path(), &["info", "m.json", "--model", "m.json"]);
    assert_eq!(out.status.code(), Some(2));
}
