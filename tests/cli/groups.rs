//! `mdn train --group-by COLUMN`: one model per group, each what `mdn train` gives on a file
//! of that group's rows alone; the directory of models and its `groups.csv`; groups too
//! small, failing or without a name; and the mistakes (`--out` a file, the group column a
//! feature or a target).

use std::path::Path;

#[cfg(unix)]
use crate::support::signalled;
use crate::support::{json, mdn, ok};

/// Rows of Bishop's inverse problem in groups, each group's target shifted by its own
/// amount; `sizes` gives each group's name and rows, the rows interleaved as a real table's
/// are.
fn grouped(sizes: &[(&str, usize)]) -> String {
    let mut s = String::from("store,x,t\n");
    let longest = sizes.iter().map(|g| g.1).max().unwrap_or(0);
    for i in 0..longest {
        for (g, (name, n)) in sizes.iter().enumerate() {
            if i >= *n {
                continue;
            }
            let t = ((i as f64 * 0.618_034 + g as f64 * 0.1) % 1.0).abs();
            let noise = ((i as f64 * 12.9898 + g as f64).sin() * 43758.5453).fract() * 0.2 - 0.1;
            let x = t + 0.3 * (2.0 * std::f64::consts::PI * t).sin() + noise;
            let cell = if name.contains([',', '"']) {
                format!("\"{}\"", name.replace('"', "\"\""))
            } else {
                name.to_string()
            };
            s.push_str(&format!("{cell},{x:.5},{:.5}\n", t + g as f64));
        }
    }
    s
}

/// Sends `signal` (`-INT`, `-KILL`) to `child` once a line of its stderr (piped) passes
/// `at`; then its exit code and its whole stderr.
#[cfg(unix)]
fn signalled_after(
    mut child: std::process::Child,
    signal: &str,
    at: impl Fn(&str) -> bool,
) -> (Option<i32>, String) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let now = at(&line);
        seen.push(line);
        if now {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    seen.extend(lines.map(|l| l.unwrap()));
    let code = child.wait().unwrap().code();
    (code, seen.join("\n"))
}

/// Runs mdn expecting exit 2 and `says` on stderr.
fn refused_keeping(d: &Path, args: &[&str], says: &str) {
    let out = mdn(d, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
}

/// The index's rows: each group's cells by column name.
fn index(dir: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join("groups.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// The group's rows alone, as a CSV without the group column.
fn rows_of(csv: &str, group: &str) -> String {
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let mut out = String::from("x,t\n");
    for rec in r.records() {
        let rec = rec.unwrap();
        if &rec[0] == group {
            out.push_str(&format!("{},{}\n", &rec[1], &rec[2]));
        }
    }
    out
}

#[test]
fn each_groups_model_is_what_training_on_its_rows_alone_gives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = grouped(&[("north", 120), ("south", 90), ("c d,\"e\"", 60)]);
    std::fs::write(d.join("sales.csv"), &csv).unwrap();
    let (out, err) = ok(
        d,
        &[
            "train",
            "--data",
            "sales.csv",
            "--group-by",
            "store",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--json",
        ],
    );
    assert!(
        err.contains("270 rows in 3 groups of column 'store'"),
        "{err}"
    );
    assert!(
        err.contains("wrote models: 3 models and groups.csv"),
        "{err}"
    );
    let report = json(&out);
    assert_eq!(report["groups"].as_array().unwrap().len(), 3);
    let rows = index(&d.join("models"));
    let names: Vec<&str> = rows.iter().map(|r| r["group"].as_str()).collect();
    assert_eq!(
        names,
        ["north", "south", "c d,\"e\""],
        "in the order of first rows"
    );
    for r in &rows {
        assert_eq!(r["status"], "trained", "{r:?}");
        let group = &r["group"];
        // Each model is, to the bit, the one trained on the group's rows alone.
        let alone = d.join(format!("{}.csv", r["model"]));
        std::fs::write(&alone, rows_of(&csv, group)).unwrap();
        let single = d.join("single.json");
        ok(
            d,
            &[
                "train",
                "--data",
                alone.to_str().unwrap(),
                "--device",
                "cpu",
                "--threads",
                "1",
                "--out",
                single.to_str().unwrap(),
                "-q",
            ],
        );
        let a = json(&std::fs::read_to_string(&single).unwrap());
        let b = json(&std::fs::read_to_string(d.join("models").join(&r["model"])).unwrap());
        assert_eq!(a["params"], b["params"], "group {group}");
        assert_eq!(a["features"], json("[\"x\"]"));
        assert_eq!(
            b["features"],
            json("[\"x\"]"),
            "the group column is no feature"
        );
        assert_eq!(a["y_scaler"], b["y_scaler"], "group {group}");
        // Small data: epochs by cross-validation, its NLL in the index.
        assert!(r["cv_nll"].parse::<f64>().is_ok(), "{r:?}");
        assert_eq!(
            r["rows"],
            rows_of(&csv, group)
                .lines()
                .count()
                .saturating_sub(1)
                .to_string()
        );
    }
    assert_eq!(rows[2]["model"], "c_d__e_.json");
    // Side by side on 2 threads (one each), every group's model is the same bits.
    let (_, err) = ok(
        d,
        &[
            "train",
            "--data",
            "sales.csv",
            "--group-by",
            "store",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--out",
            "two",
        ],
    );
    assert!(err.contains("wrote two: 3 models"), "{err}");
    for r in &rows {
        let a = json(&std::fs::read_to_string(d.join("models").join(&r["model"])).unwrap());
        let b = json(&std::fs::read_to_string(d.join("two").join(&r["model"])).unwrap());
        assert_eq!(
            a["params"], b["params"],
            "group {} side by side",
            r["group"]
        );
    }
    assert_eq!(
        index(&d.join("two")),
        rows,
        "the same index, in the file's order"
    );
    // The models predict as any model does.
    ok(
        d,
        &[
            "predict",
            "--model",
            "models/north.json",
            "--data",
            "north.json.csv",
        ],
    );
    // Nothing left beside the directory or in it.
    let beside: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
}

#[test]
fn group_by_mistakes_and_small_or_failing_groups() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = grouped(&[("a", 80), ("tiny", 4), ("b", 60)]);
    std::fs::write(d.join("g.csv"), &csv).unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = mdn(d, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!d.join("models").exists(), "{args:?} wrote models/");
    };
    let base = ["train", "--data", "g.csv", "--device", "cpu", "--group-by"];
    let with = |more: &[&'static str]| -> Vec<&str> { base.iter().chain(more).copied().collect() };
    // A group too small for the defaults is refused up front, naming it.
    refused(
        &with(&["store"]),
        "1 of the 3 groups in column 'store' has fewer than 10 rows, too few for the defaults \
         to hold out validation rows from: 'tiny' (4); leave them out with --min-group-rows 10",
    );
    refused(
        &with(&["shop"]),
        "--group-by column 'shop' is not in the header (columns: store, x, t)",
    );
    refused(
        &with(&["store", "--features", "store,x"]),
        "is also in --features",
    );
    refused(
        &with(&["t"]),
        "--group-by column 't' is also a target (the last column is the target unless --target names others)",
    );
    refused(
        &with(&["store", "--val", "g.csv"]),
        "--val cannot be used with --group-by",
    );
    refused(
        &with(&["store", "--min-group-rows", "0"]),
        "--min-group-rows must be at least 1",
    );
    std::fs::write(d.join("file"), "x").unwrap();
    refused(
        &with(&["store", "--out", "file", "--min-group-rows", "10"]),
        "this is a file",
    );
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), "keep").unwrap();
    refused(
        &with(&["store", "--out", "mine", "--min-group-rows", "10"]),
        "the directory holds mine/notes.txt, which no groups.csv of an earlier --group-by run lists",
    );
    assert!(d.join("mine/notes.txt").exists());
    // A directory replaced whole is never the working directory, one above it, or the
    // data's (review findings: `--out .` failed its rename after training and lost every
    // model; `--out` holding the data file would have deleted it).
    refused(
        &with(&["store", "--out", ".", "--min-group-rows", "10"]),
        "name a directory of its own",
    );
    refused(
        &with(&["store", "--out", "..", "--min-group-rows", "10"]),
        "name a directory of its own",
    );
    std::fs::create_dir(d.join("exp")).unwrap();
    std::fs::write(d.join("exp/groups.csv"), &csv).unwrap();
    refused(
        &[
            "train",
            "--data",
            "exp/groups.csv",
            "--group-by",
            "store",
            "--out",
            "exp",
            "--min-group-rows",
            "10",
        ],
        "--out exp holds the --data file",
    );
    assert!(d.join("exp/groups.csv").exists());
    // --min-group-rows leaves it out, and says so in the index.
    let (_, err) = ok(
        d,
        &with(&["store", "--min-group-rows", "10", "--epochs", "3"]),
    );
    assert!(
        err.contains("(1 left out: fewer than --min-group-rows 10)"),
        "{err}"
    );
    let rows = index(&d.join("models"));
    assert_eq!(rows[1]["group"], "tiny");
    assert_eq!(rows[1]["status"], "left out");
    assert_eq!(rows[1]["model"], "");
    assert!(!d.join("models/tiny.json").exists());
    // A rerun replaces the directory whole: a group gone from the data leaves no model.
    std::fs::write(d.join("g.csv"), grouped(&[("a", 80), ("c", 50)])).unwrap();
    ok(d, &with(&["store", "--epochs", "3"]));
    let mut files: Vec<String> = std::fs::read_dir(d.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["a.json", "c.json", "groups.csv", "groups.json"]);
    // A run that trains no group leaves the earlier directory as it was.
    std::fs::write(d.join("few.csv"), grouped(&[("a", 5), ("c", 6)])).unwrap();
    refused_keeping(
        d,
        &[
            "train",
            "--data",
            "few.csv",
            "--group-by",
            "store",
            "--min-group-rows",
            "10",
        ],
        "no group of column 'store' has --min-group-rows 10 rows: nothing to train",
    );
    assert!(d.join("models/c.json").exists());
    // `NA` is a group's name (North America), not a missing value; a trailing separator's
    // unnamed column stays out; a target by its index is the same column in every group.
    let mut t = String::from("region,x,t,\n");
    for line in grouped(&[("NA", 40), ("EU", 40)]).lines().skip(1) {
        t.push_str(line);
        t.push_str(",\n");
    }
    std::fs::write(d.join("t.csv"), &t).unwrap();
    let (out, _) = ok(
        d,
        &[
            "train",
            "--data",
            "t.csv",
            "--group-by",
            "region",
            "--target",
            "2",
            "--out",
            "r",
            "--epochs",
            "2",
            "--json",
        ],
    );
    let groups = json(&out)["groups"].clone();
    assert_eq!(groups[0]["group"], "NA", "{groups}");
    assert_eq!(groups[0]["status"], "trained", "{groups}");
    let model = json(&std::fs::read_to_string(d.join("r/NA.json")).unwrap());
    assert_eq!(model["features"], json("[\"x\"]"));
    assert_eq!(model["targets"], json("[\"t\"]"));
    // A row without a group names its line; --drop-missing leaves it out.
    let mut holed = grouped(&[("a", 40), ("b", 40)]);
    holed.push_str(",0.5,0.5\n");
    std::fs::write(d.join("holed.csv"), &holed).unwrap();
    let out = mdn(
        d,
        &[
            "train",
            "--data",
            "holed.csv",
            "--group-by",
            "store",
            "--out",
            "h",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holed.csv:82:1 (column 'store')"), "{err}");
    assert!(
        err.contains("the row has no group (its --group-by cell is empty)"),
        "{err}"
    );
    ok(
        d,
        &[
            "train",
            "--data",
            "holed.csv",
            "--group-by",
            "store",
            "--out",
            "h",
            "--drop-missing",
            "--epochs",
            "2",
        ],
    );
    assert_eq!(index(&d.join("h")).len(), 2);
    // A group that cannot be trained (a constant target) fails alone: the others are
    // written, the index says why, and the run exits 2 naming it by the data file.
    let mut flat = grouped(&[("a", 40)]);
    for i in 0..30 {
        flat.push_str(&format!("flat,{},2.5\n", i as f64 / 30.0));
    }
    std::fs::write(d.join("flat.csv"), &flat).unwrap();
    let out = mdn(
        d,
        &[
            "train",
            "--data",
            "flat.csv",
            "--group-by",
            "store",
            "--out",
            "f",
            "--epochs",
            "2",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1 of 2 groups could not be trained; the first, 'flat'"),
        "{err}"
    );
    let rows = index(&d.join("f"));
    assert_eq!(rows[0]["status"], "trained");
    assert_eq!(rows[1]["status"], "failed");
    assert!(
        rows[1]["reason"].contains("flat.csv (group 'flat')"),
        "{:?}",
        rows[1]
    );
    assert!(!rows[1]["reason"].contains("group-1.csv"), "{:?}", rows[1]);
    assert!(d.join("f/a.json").exists());
}

/// Ctrl-C stops the group under way after its epoch, keeps its best epoch, trains no other
/// group, and writes the directory: exit 130, the index saying what became of each. (On one
/// thread, one group at a time: side by side, every group under way stops so.)
#[cfg(unix)]
#[test]
fn ctrl_c_keeps_the_groups_done_and_trains_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("big.csv"), grouped(&[("a", 1600), ("b", 1600)])).unwrap();
    let out = signalled(
        d,
        &[
            "train",
            "--data",
            "big.csv",
            "--group-by",
            "store",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--max-epochs",
            "1000000",
            "--patience",
            "1000000",
            "--json",
        ],
        "-INT",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["interrupted"], true);
    let rows = index(&d.join("models"));
    assert_eq!(rows[0]["status"], "interrupted", "{rows:?}");
    assert_eq!(rows[1]["status"], "not trained", "{rows:?}");
    assert_eq!(rows[1]["model"], "");
    let m = json(&std::fs::read_to_string(d.join("models/a.json")).unwrap());
    assert_eq!(m["training"]["stop_reason"], "interrupted");
    assert!(!d.join("models/b.json").exists());
    let hidden: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .collect();
    assert!(hidden.is_empty(), "left beside: {hidden:?}");
    // Stopped again, the run does not replace the earlier directory with its part (a new
    // user's trial lost 41 models so): it goes beside it.
    let before = std::fs::read(d.join("models/groups.json")).unwrap();
    let out = signalled(
        d,
        &[
            "train",
            "--data",
            "big.csv",
            "--group-by",
            "store",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--max-epochs",
            "1000000",
            "--patience",
            "1000000",
        ],
        "-INT",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("the earlier run's models in models are kept as they were"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("models/groups.json")).unwrap(), before);
    assert!(d.join("models.interrupted/a.json").exists());
}

/// `mdn predict` and `mdn eval` take the directory: each row by its group's model, in the
/// data file's order, the same numbers as each group's model on its rows alone; a group with
/// fewer components leaves the others' cells empty; a group without a model, or a file
/// without the group column, is refused before anything is written.
#[test]
fn predict_and_eval_on_a_directory_of_group_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = grouped(&[("a", 60), ("b", 50)]);
    std::fs::write(d.join("g.csv"), &csv).unwrap();
    let common = [
        "--device",
        "cpu",
        "--epochs",
        "3",
        "--val-fraction",
        "0",
        "-q",
    ];
    let mut args = vec![
        "train",
        "--data",
        "g.csv",
        "--group-by",
        "store",
        "--components",
        "3",
    ];
    args.extend(common);
    ok(d, &args);
    // Group b's model with 2 components, from another run.
    let mut args = vec![
        "train",
        "--data",
        "g.csv",
        "--group-by",
        "store",
        "--components",
        "2",
        "--out",
        "k2",
    ];
    args.extend(common);
    ok(d, &args);
    std::fs::copy(d.join("k2/b.json"), d.join("models/b.json")).unwrap();
    for (g, file) in [("a", "a.csv"), ("b", "b.csv")] {
        std::fs::write(d.join(file), rows_of(&csv, g)).unwrap();
    }
    let (out, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "models",
            "--data",
            "g.csv",
            "--quantiles",
            "0.5",
        ],
    );
    let mut r = csv::Reader::from_reader(out.as_bytes());
    let head: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&head[..5], ["row", "store", "pi_0", "pi_1", "pi_2"]);
    let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 110);
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], i.to_string(), "rows in the file's order");
    }
    // Alone, each group's model gives the same numbers for its rows.
    for (g, file) in [("a", "a.csv"), ("b", "b.csv")] {
        let (alone, _) = ok(
            d,
            &[
                "predict",
                "--model",
                &format!("models/{g}.json"),
                "--data",
                file,
                "--quantiles",
                "0.5",
            ],
        );
        let mut ra = csv::Reader::from_reader(alone.as_bytes());
        let ah: Vec<String> = ra.headers().unwrap().iter().map(String::from).collect();
        let mine: Vec<&csv::StringRecord> = rows.iter().filter(|r| &r[1] == g).collect();
        for (j, rec) in ra.records().enumerate() {
            let rec = rec.unwrap();
            for name in ["mean_t", "var_t", "q0.5_t", "pi_0", "pi_1"] {
                let at = ah.iter().position(|h| h == name).unwrap();
                assert_eq!(rec[at], mine[j][col(name)], "group {g} row {j} {name}");
            }
        }
        if g == "b" {
            assert!(
                mine.iter().all(|r| r[col("pi_2")].is_empty()),
                "b has 2 components"
            );
        }
    }
    // eval: each group's NLL is its model's on its rows; the whole is their row-weighted mean.
    let (out, _) = ok(
        d,
        &["eval", "--model", "models", "--data", "g.csv", "--json"],
    );
    let e = json(&out);
    assert_eq!(e["rows"], 110);
    let mut total = 0.0;
    let mut scores = Vec::new();
    for (i, (g, file, n)) in [("a", "a.csv", 60.0), ("b", "b.csv", 50.0)]
        .iter()
        .enumerate()
    {
        let (alone, _) = ok(
            d,
            &[
                "eval",
                "--model",
                &format!("models/{g}.json"),
                "--data",
                file,
                "--json",
            ],
        );
        let alone = json(&alone);
        assert_eq!(alone["scores"], e["groups"][i]["scores"], "group {g}");
        scores.push((n, alone["scores"][0].clone()));
        let alone = alone["mean_nll"].as_f64().unwrap();
        let mine = e["groups"][i]["mean_nll"].as_f64().unwrap();
        assert!((alone - mine).abs() < 1e-12, "group {g}: {alone} vs {mine}");
        total += alone * n;
    }
    let whole = e["mean_nll"].as_f64().unwrap();
    assert!(
        (whole - total / 110.0).abs() < 1e-9,
        "{whole} vs {}",
        total / 110.0
    );
    // The scores over every row (regression: a directory's eval gave only the NLL): means
    // weighted by rows, the PIT histograms added, the calibration error of their sum.
    let pooled = &e["scores"][0];
    assert_eq!(pooled["target"], "t");
    for key in ["crps", "coverage_50", "coverage_90"] {
        let want: f64 = scores
            .iter()
            .map(|(n, s)| *n * s[key].as_f64().unwrap())
            .sum::<f64>()
            / 110.0;
        let got = pooled[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} vs {want}");
    }
    let want: f64 = scores
        .iter()
        .map(|(n, s)| *n * s["rmse"].as_f64().unwrap().powi(2))
        .sum::<f64>()
        / 110.0;
    let got = pooled["rmse"].as_f64().unwrap();
    assert!(
        (got - want.sqrt()).abs() < 1e-12,
        "rmse: {got} vs {}",
        want.sqrt()
    );
    let hist: Vec<u64> = (0..10)
        .map(|b| {
            scores
                .iter()
                .map(|(_, s)| s["pit_histogram"][b].as_u64().unwrap())
                .sum()
        })
        .collect();
    assert_eq!(pooled["pit_histogram"], serde_json::json!(hist));
    let error: f64 = hist
        .iter()
        .map(|&c| (c as f64 / 110.0 - 0.1).abs())
        .sum::<f64>()
        / 10.0;
    let got = pooled["calibration_error"].as_f64().unwrap();
    assert!((got - error).abs() < 1e-15, "{got} vs {error}");
    let (text, _) = ok(d, &["eval", "--model", "models", "--data", "g.csv"]);
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("t: CRPS ")),
        "{text}"
    );
    assert!(text.contains("'a': 60 rows, mean NLL "), "{text}");
    // Mistakes.
    let refused = |args: &[&str], says: &str| {
        let out = mdn(d, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    let mut new = csv.clone();
    new.push_str("c,0.5,0.5\n");
    std::fs::write(d.join("new.csv"), &new).unwrap();
    refused(
        &["predict", "--model", "models", "--data", "new.csv"],
        "new.csv:112:1 (column 'store'): group 'c' (1 row; the first here) has no model in \
         models: the training data (g.csv) had no such group; --skip-unknown-groups leaves its \
         rows out",
    );
    // --skip-unknown-groups leaves the new group's rows out, saying so; the others keep
    // their places.
    let (out, err) = ok(
        d,
        &[
            "predict",
            "--model",
            "models",
            "--data",
            "new.csv",
            "--skip-unknown-groups",
        ],
    );
    assert!(
        err.contains(
            "1 row(s) of 1 group(s) without a model in models left out (--skip-unknown-groups): 'c'"
        ),
        "{err}"
    );
    let mut r = csv::Reader::from_reader(out.as_bytes());
    let labels: Vec<String> = r.records().map(|r| r.unwrap()[0].to_string()).collect();
    assert_eq!(labels.len(), 110);
    assert_eq!(labels.last().unwrap(), "109");
    let (out, _) = ok(
        d,
        &[
            "eval",
            "--model",
            "models",
            "--data",
            "new.csv",
            "--skip-unknown-groups",
            "--json",
        ],
    );
    assert_eq!(json(&out)["rows"], 110);
    std::fs::write(d.join("empty.csv"), "store,x,t\n").unwrap();
    refused(
        &["predict", "--model", "models", "--data", "empty.csv"],
        "no data rows to predict for",
    );
    refused(
        &["predict", "--model", "models", "--data", "a.csv"],
        "the models in models are one per group of column 'store', which is not in the header",
    );
    refused(
        &[
            "predict", "--model", "models", "--data", "g.csv", "--keep", "store",
        ],
        "--keep store: the group column is in the output already",
    );
    refused(
        &["sample", "--model", "models", "--data", "g.csv"],
        "models is a directory of models, one per group",
    );
}

/// A new user's trial: a text column that repeats across the file (a day of a few rows a
/// day) but not within a small store was read as categories in one group and refused as an
/// id in another, after the first groups had trained. Which columns are categories is now
/// decided once, on the whole file.
#[test]
fn a_column_was_categorical_in_one_group_and_an_id_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("store,day,x,t\n");
    for i in 0..200 {
        csv.push_str(&format!(
            "big,d{},{},{}\n",
            i % 5,
            i as f64 / 200.0,
            (i % 7) as f64
        ));
    }
    for i in 0..30 {
        csv.push_str(&format!(
            "small,e{i},{},{}\n",
            i as f64 / 30.0,
            (i % 5) as f64
        ));
    }
    // Rows without a group, left out with --drop-missing, are counted.
    csv.push_str(",d1,0.5,1\n");
    std::fs::write(d.join("days.csv"), &csv).unwrap();
    let (out, err) = ok(
        d,
        &[
            "train",
            "--data",
            "days.csv",
            "--group-by",
            "store",
            "--device",
            "cpu",
            "--epochs",
            "2",
            "--val-fraction",
            "0.2",
            "--drop-missing",
            "--json",
        ],
    );
    let report = json(&out);
    assert_eq!(report["groups"][1]["status"], "trained", "{out}\n{err}");
    assert!(
        err.contains(
            "1 row(s) have no group (an empty 'store' cell; the first at line 232): left out"
        ),
        "{err}"
    );
    let small = json(&std::fs::read_to_string(d.join("models/small.json")).unwrap());
    assert!(
        small["features"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "day=e0"),
        "{}",
        small["features"]
    );
    // --min-group-rows below what the defaults can split is refused up front; an --out
    // named as a model file is not taken for a directory.
    for (args, says) in [
        (
            vec!["--min-group-rows", "2"],
            "--min-group-rows 2 keeps groups of fewer than 10 rows",
        ),
        (vec!["--out", "model.json"], "not one model file"),
    ] {
        let mut all = vec![
            "train",
            "--data",
            "days.csv",
            "--group-by",
            "store",
            "--drop-missing",
        ];
        all.extend(args);
        let out = mdn(d, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
    assert!(!d.join("model.json").exists());
}

#[test]
fn groups_no_better_than_a_linear_model_are_counted() {
    // Thousands of small groups fold their per-group warnings into "N warnings were the same";
    // the count of groups whose model does not beat the linear-Gaussian baseline is said
    // at the end, and it is the count groups.csv gives. Linear data with Gaussian noise, 40
    // rows a group: the baseline is the true model, which few small MDNs beat.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("g,x,y\n");
    for g in 0..4 {
        for i in 0..40 {
            let x = (i as f64 * 0.37 + g as f64).sin() * 2.0;
            // A deterministic standard-normal-ish draw (sum of 4 uniforms, centred).
            let u = |k: f64| {
                ((i as f64 * 12.9898 + g as f64 * 78.233 + k).sin() * 43758.5453)
                    .fract()
                    .abs()
            };
            let e = (u(1.0) + u(2.0) + u(3.0) + u(4.0) - 2.0) * 1.7;
            csv.push_str(&format!("g{g},{x:.5},{:.5}\n", 1.5 * x + e));
        }
    }
    std::fs::write(d.join("lin.csv"), &csv).unwrap();
    let (_, err) = ok(
        d,
        &[
            "train",
            "--data",
            "lin.csv",
            "--group-by",
            "g",
            "--device",
            "cpu",
        ],
    );
    let rows = index(&d.join("models"));
    let worse = rows
        .iter()
        .filter(|r| {
            let nll: f64 = r["cv_nll"].parse().unwrap();
            nll >= r["baseline_nll"].parse::<f64>().unwrap()
        })
        .count();
    assert!(worse > 0, "{rows:?}");
    assert!(
        err.contains(&format!(
            "warning: {worse} of 4 groups' models are no better than a linear model with \
             constant Gaussian noise on the same rows"
        )),
        "{err}"
    );
}

/// `mdn` with `MDN_GPU_PATH` set to `path` (or left to the adapter).
fn mdn_on_path(d: &Path, args: &[&str], path: Option<&str>) -> (String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"));
    c.args(args).current_dir(d).env_remove("MDN_DEVICE");
    match path {
        Some(p) => c.env("MDN_GPU_PATH", p),
        None => c.env_remove("MDN_GPU_PATH"),
    };
    let out = c.output().expect("run mdn");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "mdn {args:?} failed: {err}");
    (String::from_utf8_lossy(&out.stdout).to_string(), err)
}

/// The numbers of the packed line: networks, packed, runs, alone.
fn packed_counts(err: &str) -> [usize; 4] {
    let line = err
        .lines()
        .find(|l| l.contains("networks trained for the groups (final fits, and small groups' cross-validation folds)"))
        .unwrap_or_else(|| panic!("no line on the networks trained: {err}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // The adapter's name has numbers of its own: the last four are the counts.
    numbers[numbers.len() - 4..].try_into().unwrap()
}

#[test]
fn groups_on_a_gpu_train_together_each_to_the_bits_of_its_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !crate::support::software_adapter(d) {
        return;
    }
    // Three groups small enough for cross-validated epochs (K=5, 4 and 3 by the defaults,
    // fewer tried too), one with a validation split.
    let csv = grouped(&[("north", 120), ("south", 90), ("east", 60), ("west", 1600)]);
    std::fs::write(d.join("sales.csv"), &csv).unwrap();
    let settings = [
        "--device",
        "software",
        "--hidden",
        "16",
        "--max-epochs",
        "40",
    ];
    // lavapipe takes the looped step (the one packed runs take) only when asked for.
    for (path, out) in [(Some("loop"), "packed"), (None, "default")] {
        let mut args = vec![
            "train",
            "--data",
            "sales.csv",
            "--group-by",
            "store",
            "--out",
            out,
        ];
        args.extend(settings);
        let (_, err) = mdn_on_path(d, &args, path);
        assert!(
            err.contains(&format!("wrote {out}: 4 models and groups.csv")),
            "{err}"
        );
        let [networks, packed, runs, alone] = packed_counts(&err);
        // 15 folds for each of north and south (three K), 10 for east (two), a final fit
        // each.
        assert_eq!(networks, 44, "{err}");
        assert_eq!(packed + alone, networks, "{err}");
        match path {
            Some(_) => {
                assert!(packed >= 40 && (3..=8).contains(&runs), "{err}");
            }
            None => assert_eq!((packed, runs), (0, 0), "{err}"),
        }
        for r in index(&d.join(out)) {
            assert_eq!(r["status"], "trained", "{r:?}");
            let group = &r["group"];
            let alone = d.join(format!("{group}.csv"));
            std::fs::write(&alone, rows_of(&csv, group)).unwrap();
            let single = d.join(format!("{out}-{group}.json"));
            let mut args = vec![
                "train",
                "--data",
                alone.to_str().unwrap(),
                "--out",
                single.to_str().unwrap(),
                "-q",
            ];
            args.extend(settings);
            mdn_on_path(d, &args, path);
            let a = json(&std::fs::read_to_string(&single).unwrap());
            let b = json(&std::fs::read_to_string(d.join(out).join(&r["model"])).unwrap());
            assert_eq!(a["params"], b["params"], "group {group}, {out}");
            assert_eq!(
                a["training"]["epochs"], b["training"]["epochs"],
                "group {group}, {out}"
            );
            assert_eq!(
                a["training"]["epoch_choice"], b["training"]["epoch_choice"],
                "group {group}, {out}"
            );
        }
    }
}

/// Ctrl-C while the groups' networks train packed on a GPU: the groups whose own models were
/// under way are kept at their best epochs, a group still choosing its epochs by
/// cross-validation is `not trained`, and nothing is left beside the directory.
#[cfg(unix)]
#[test]
fn ctrl_c_on_a_gpu_keeps_the_groups_whose_models_were_training_packed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !crate::support::software_adapter(d) {
        return;
    }
    std::fs::write(
        d.join("big.csv"),
        grouped(&[("a", 1600), ("b", 1600), ("c", 200)]),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args([
            "train",
            "--data",
            "big.csv",
            "--group-by",
            "store",
            "--device",
            "software",
            "--max-epochs",
            "1000000",
            "--patience",
            "1000000",
        ])
        .current_dir(d)
        .env_remove("MDN_DEVICE")
        .env("MDN_GPU_PATH", "loop")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first packed run (a's and b's models, with c's folds of their shape) has started
    // when the GPU says which step it takes.
    let (code, err) = signalled_after(child, "-INT", |l| l.contains("GPU: looped training step"));
    assert_eq!(code, Some(130), "{err}");
    let rows = index(&d.join("models"));
    let status: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["group"].as_str(), r["status"].as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("a", "interrupted"),
            ("b", "interrupted"),
            ("c", "not trained")
        ],
        "{err}"
    );
    for g in ["a", "b"] {
        let m = json(&std::fs::read_to_string(d.join(format!("models/{g}.json"))).unwrap());
        assert_eq!(m["training"]["stop_reason"], "interrupted", "{g}");
    }
    assert!(!d.join("models/c.json").exists());
    assert!(
        err.contains("together in 1 packed run, 0 alone"),
        "only the run under way trained: {err}"
    );
    let hidden: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left beside: {hidden:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn split_files_a_killed_run_left_are_removed_by_the_next_run() {
    // Regression: a `--group-by` run killed outright (SIGKILL, out of memory) left its
    // directory of split group files in the system's temporary directory for good. The
    // directory is now locked while its run lives: a run that starts while another is
    // paused leaves the other's alone, and the first run after the kill removes it. A
    // directory without a lock (not mdn's, or an older mdn's) is left alone.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir(tmp.join("mdn-unlocked")).unwrap();
    std::fs::write(d.join("big.csv"), grouped(&[("a", 400), ("b", 400)])).unwrap();
    std::fs::write(d.join("small.csv"), grouped(&[("a", 30), ("b", 30)])).unwrap();
    let ours = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "mdn-unlocked")
            .collect();
        names.sort();
        names
    };
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"));
        c.args(["train", "--group-by", "store", "--device", "cpu"])
            .args(args)
            .current_dir(d)
            .env_remove("MDN_DEVICE")
            .env("TMPDIR", &tmp)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let quick = || {
        let out = run(&["--data", "small.csv", "--out", "quick", "--max-epochs", "2"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
    };
    let kill = |signal: &str, pid: u32| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    /// Killed however the test ends.
    struct Long(std::process::Child);
    impl Drop for Long {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut long = Long(
        run(&[
            "--data",
            "big.csv",
            "--max-epochs",
            "1000000",
            "--patience",
            "1000000",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    // Its directory, once the split is written (the second group's file is written last).
    let mut waited = 0;
    let split = loop {
        let names = ours();
        if let [name] = &names[..] {
            let split = tmp.join(name);
            if split.join(".lock").exists() && split.join("group-1.csv").exists() {
                break split;
            }
        }
        assert!(
            long.0.try_wait().unwrap().is_none(),
            "the long run ended: {names:?}"
        );
        waited += 1;
        assert!(
            waited < 1200,
            "no split directory after 2 minutes: {names:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let name = split.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("mdn-"), "{name}");
    // Paused, it still holds its lock: another run leaves its files alone.
    kill("-STOP", long.0.id());
    quick();
    assert_eq!(ours(), std::slice::from_ref(&name));
    assert!(split.join("group-0.csv").exists());
    // Killed outright, it leaves them; the next run removes them, and leaves nothing itself.
    kill("-KILL", long.0.id());
    long.0.wait().unwrap();
    assert_eq!(ours(), [name]);
    quick();
    assert_eq!(ours(), Vec::<String>::new());
    assert!(tmp.join("mdn-unlocked").exists());
}

#[cfg(unix)]
#[test]
fn keep_trained_trains_only_the_groups_whose_rows_or_options_changed() {
    // `--keep-trained` keeps an earlier run's model of each group whose rows and options are
    // unchanged (its fingerprint in groups.json) and trains the rest. Changed rows, a new
    // group and changed options train; a stopped run's `models.interrupted` is kept from too
    // and removed once `models` holds its groups; a directory beside it that mdn did not
    // write, or that holds models not in `models`, is left alone. Every model is then the
    // bits of a fresh run on the same data: on two threads, each group's share is 1 thread
    // however few groups are left to train (regression: it was the share of those left).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let common = ["--group-by", "store", "--device", "cpu", "--threads", "2"];
    let quick = ["--hidden", "8", "--epochs", "40"];
    let train = |data: &str, out: &str, more: &[&str]| -> String {
        let mut args = vec!["train", "--data", data, "--out", out];
        args.extend(common);
        args.extend(more);
        ok(d, &args).1
    };
    let files = |out: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d.join(out))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let model = |out: &str, g: &str| std::fs::read(d.join(out).join(format!("{g}.json"))).unwrap();
    // Two directories of the same files, each the same bytes (named where one differs).
    let same = |a: &str, b: &str, what: &str| {
        let (a, b) = (files(a), files(b));
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b), "{what}");
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y, "{what}: {name} differs");
        }
    };
    // A first run, then: b's rows changed, d new.
    let first = grouped(&[("a", 40), ("b", 60), ("c", 50)]);
    std::fs::write(d.join("v1.csv"), &first).unwrap();
    train("v1.csv", "models", &quick);
    let (a1, b1, c1) = (
        model("models", "a"),
        model("models", "b"),
        model("models", "c"),
    );
    let mut second = first.clone();
    let at = second.find("\nb,").unwrap() + 3;
    second.replace_range(at..at + 1, "9");
    second.push_str(&grouped(&[("d", 30)])["store,x,t\n".len()..]);
    std::fs::write(d.join("v2.csv"), &second).unwrap();
    let mut with_keep = quick.to_vec();
    with_keep.push("--keep-trained");
    let err = train("v2.csv", "models", &with_keep);
    assert!(
        err.contains("--keep-trained: 2 of 4 groups' models kept, their rows and options unchanged (2 from models); 2 to train"),
        "{err}"
    );
    assert!(err.contains("/2] 'b'") && err.contains("/2] 'd'"), "{err}");
    assert!(
        err.contains("4 models (2 kept from an earlier run)"),
        "{err}"
    );
    assert_eq!((model("models", "a"), model("models", "c")), (a1, c1));
    assert_ne!(model("models", "b"), b1, "b's rows changed");
    train("v2.csv", "fresh", &quick);
    same("models", "fresh", "kept and trained: a fresh run's bits");
    // Other options: nothing is kept.
    let err = train(
        "v2.csv",
        "models",
        &["--hidden", "8", "--epochs", "41", "--keep-trained"],
    );
    assert!(
        err.contains("no group's rows and options are as an earlier run's: all 4 train"),
        "{err}"
    );
    // No earlier run: said, and everything trains.
    let err = train("v2.csv", "elsewhere", &with_keep);
    assert!(
        err.contains("no earlier run's models in elsewhere"),
        "{err}"
    );
    // Stopped while training b (many rows), with models there: the run goes beside it, c's
    // new model in it; not to models.interrupted, which holds a file of the user's. Then a
    // and c are kept, b trains.
    train("v2.csv", "models", &quick);
    std::fs::create_dir(d.join("models.interrupted")).unwrap();
    std::fs::write(d.join("models.interrupted/notes.txt"), "mine").unwrap();
    let third = grouped(&[("a", 40), ("c", 45), ("b", 100_000)]);
    std::fs::write(d.join("v3.csv"), &third).unwrap();
    let mut args = vec!["train", "--data", "v3.csv", "--out", "models"];
    args.extend(common);
    args.extend(&with_keep);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(&args)
        .current_dir(d)
        .env_remove("MDN_DEVICE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = signalled_after(child, "-INT", |l| l.starts_with("[1/2] 'c'"));
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(
            "warning: --keep-trained: keeping no model from models.interrupted: it has no \
             groups.json, so no --group-by run wrote it"
        ),
        "{err}"
    );
    assert!(err.contains("wrote models.interrupted-2"), "{err}");
    let rows = index(&d.join("models.interrupted-2"));
    let status: Vec<&str> = rows.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(&status[..2], ["trained", "trained"], "{err}");
    assert!(
        ["interrupted", "not trained"].contains(&status[2]),
        "{status:?}: {err}"
    );
    // A run's directory whose models are not all in the next one (b's rows differ) stays.
    train("v2.csv", "models.interrupted-3", &quick);
    let err = train("v3.csv", "models", &with_keep);
    assert!(
        err.contains("2 of 3 groups' models kept, their rows and options unchanged (1 from models.interrupted-3, 1 from models.interrupted-2); 1 to train"),
        "{err}"
    );
    assert!(
        err.contains("removed models.interrupted-2, an unfinished run's"),
        "{err}"
    );
    assert!(!err.contains("removed models.interrupted-3"), "{err}");
    assert!(!d.join("models.interrupted-2").exists());
    assert!(d.join("models.interrupted-3/d.json").exists());
    assert!(d.join("models.interrupted/notes.txt").exists());
    train("v3.csv", "fresh", &quick);
    same("models", "fresh", "after a stop: a fresh run's bits");
}

#[cfg(target_os = "linux")]
#[test]
fn keep_trained_keeps_the_groups_a_run_killed_outright_had_written() {
    // A run killed with SIGKILL (Slurm's kill after its grace period, the out of memory
    // killer) writes no index; its staging directory beside --out keeps the models done and
    // a journal of them. The next --keep-trained run keeps those, trains the rest, removes
    // the killed run's directory, and writes what an uninterrupted run writes.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("g.csv"),
        grouped(&[("a", 40), ("c", 45), ("b", 100_000)]),
    )
    .unwrap();
    let args = |out: &str| -> Vec<String> {
        [
            "train",
            "--data",
            "g.csv",
            "--out",
            out,
            "--group-by",
            "store",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--hidden",
            "8",
            "--epochs",
            "40",
            "--keep-trained",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(args("models"))
        .current_dir(d)
        .env_remove("MDN_DEVICE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once a and c are done, while b trains.
    let (_, err) = signalled_after(child, "-KILL", |l| l.starts_with("[2/3]"));
    assert!(!err.contains("'b'"), "b finished first: {err}");
    let hidden = || -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".mdn-"))
            .collect()
    };
    let left = hidden();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!d.join("models").exists());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(args("models"))
        .current_dir(d)
        .env_remove("MDN_DEVICE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "2 of 3 groups' models kept, their rows and options unchanged (2 from {}, a run \
             killed outright); 1 to train",
            left[0]
        )),
        "{err}"
    );
    assert!(err.contains(&format!("removed {}", left[0])), "{err}");
    assert_eq!(hidden(), Vec::<String>::new());
    let (_, _) = ok(
        d,
        &args("fresh").iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    for f in ["a.json", "b.json", "c.json", "groups.csv", "groups.json"] {
        let (x, y) = (
            std::fs::read(d.join("models").join(f)).unwrap(),
            std::fs::read(d.join("fresh").join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs from an uninterrupted run's");
    }
}
