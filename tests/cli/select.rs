//! `mdn select`: the cross-validated grid and its one-standard-error choice, small data, and
//! the warnings about the model it writes.

use crate::support::{json, mdn, ok, sine_csv, with_constant_column};

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
fn select_warned_twice_of_the_rows_drop_missing_left_out() {
    // Regression: the cross-validation's read and the final fit's each warned of the rows
    // left out; the same warning is now given once.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = sine_csv(40, 0.5);
    csv.push_str("NA,0.5\n");
    std::fs::write(dir.path().join("d.csv"), csv).unwrap();
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
            "--drop-missing",
        ],
    );
    assert_eq!(err.matches("left out (--drop-missing)").count(), 1, "{err}");
}

/// A value listed twice would fit the same setting twice: refused before any data is read,
/// naming the option and the value (a trial ran `--family gaussian,gaussian` unwarned).
#[test]
fn select_refuses_a_value_listed_twice() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["--family", "gaussian,student-t,gaussian"][..],
            "--family lists gaussian twice",
        ),
        (&["--components", "1,3,1"][..], "--components lists 1 twice"),
        (&["--hidden", "32;64;32"][..], "--hidden lists 32 twice"),
        // Regression (empty_hidden_was_no_hidden_layer): a trailing ';' added a setting
        // with no hidden layer to the comparison.
        (&["--hidden", "64;32;"][..], "--hidden: an empty value"),
        (&["--l2", "0,0.0"][..], "--l2 lists 0 twice"),
    ] {
        let mut all = vec!["select", "--data", "missing.csv"];
        all.extend_from_slice(args);
        let out = mdn(dir.path(), &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
