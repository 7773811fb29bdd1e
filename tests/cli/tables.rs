//! Tables as people have them: categorical columns of text (learnt, one-hot inside mdn, kept
//! in the model, read from their text by every command), unknown categories, too many
//! categories, missing values (counted, `--drop-missing`), ids and text columns left out.

use std::path::Path;

use crate::support::{files_in, json, mdn, ok};

/// A priced-goods table: an id, a number, two text columns, a positive target.
fn cars(rows: usize) -> String {
    let fuels = ["diesel", "petrol", "electric"];
    let regions = ["north", "south", "east", "west"];
    let mut s = String::from("id,age,fuel,region,price\n");
    for i in 0..rows {
        let age = (i * 7 % 150) as f64 / 10.0;
        let fuel = fuels[(i * 5 + i / 7) % 3];
        let region = regions[(i * 3 + i / 11) % 4];
        let base = match fuel {
            "diesel" => 20.0,
            "petrol" => 18.0,
            _ => 35.0,
        } * (-0.08 * age).exp()
            * if region == "north" { 1.2 } else { 1.0 };
        let noise = ((i as f64 * 12.9898).sin() * 43758.5453).fract() - 0.5;
        s.push_str(&format!(
            "c{i},{age},{fuel},{region},{:.4}\n",
            base * (0.4 * noise).exp()
        ));
    }
    s
}

/// The same rows with the categorical columns written as the model's indicator inputs
/// (`fuel=diesel`, ...), as numbers.
fn one_hot(csv: &str, model: &serde_json::Value) -> String {
    let features: Vec<String> = model["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut out = features.join(",");
    let has_target = header.contains(&"price");
    if has_target {
        out.push_str(",price");
    }
    out.push('\n');
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let cell = |name: &str| cells[header.iter().position(|h| *h == name).unwrap()];
        let mut row: Vec<String> = features
            .iter()
            .map(|f| match f.split_once('=') {
                Some((col, cat)) => if cell(col) == cat { "1" } else { "0" }.to_string(),
                None => cell(f).to_string(),
            })
            .collect();
        if has_target {
            row.push(cell("price").to_string());
        }
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

fn read_json(path: &Path) -> serde_json::Value {
    json(&std::fs::read_to_string(path).unwrap())
}

fn params(model: &serde_json::Value) -> &Vec<serde_json::Value> {
    model["params"].as_array().unwrap()
}

#[test]
fn text_columns_are_categories_learnt_one_hot_and_read_from_text_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = cars(600);
    std::fs::write(d.join("cars.csv"), &text).unwrap();
    let train = |data: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "train", "--data", data, "--epochs", "4", "--out", out, "--quiet", "--device", "cpu",
        ];
        args.extend_from_slice(extra);
        ok(d, &args);
        read_json(&d.join(out))
    };
    let model = train("cars.csv", "m.json", &["--features", "age,fuel,region"]);
    assert_eq!(model["format_version"], 3);
    assert_eq!(
        model["features"],
        serde_json::json!([
            "age",
            "fuel=diesel",
            "fuel=electric",
            "fuel=petrol",
            "region=east",
            "region=north",
            "region=south",
            "region=west"
        ])
    );
    assert_eq!(
        model["categorical"],
        serde_json::json!([
            {"column": "fuel", "categories": ["diesel", "electric", "petrol"]},
            {"column": "region", "categories": ["east", "north", "south", "west"]}
        ])
    );
    // Exactly one-hot: the same rows written as indicator columns train the same bits.
    std::fs::write(d.join("hot.csv"), one_hot(&text, &model)).unwrap();
    let hot = train("hot.csv", "hot.json", &[]);
    assert_eq!(
        params(&model),
        params(&hot),
        "text and one-hot columns trained differently"
    );
    // Streamed (the CSV converted with its indicators) likewise.
    let streamed = train(
        "cars.csv",
        "s.json",
        &["--features", "age,fuel,region", "--stream"],
    );
    let streamed_hot = train("hot.csv", "sh.json", &["--stream"]);
    assert_eq!(
        params(&streamed),
        params(&streamed_hot),
        "streamed text and one-hot differ"
    );
    assert_eq!(streamed["categorical"], model["categorical"]);

    // Every command reads the text; predicting from the indicator columns agrees exactly.
    let (from_text, _) = ok(
        d,
        &[
            "predict", "--model", "m.json", "--data", "cars.csv", "--device", "cpu",
        ],
    );
    let (from_hot, _) = ok(
        d,
        &[
            "predict", "--model", "m.json", "--data", "hot.csv", "--device", "cpu",
        ],
    );
    assert_eq!(from_text, from_hot);
    for cmd in [
        vec![
            "eval", "--model", "m.json", "--data", "cars.csv", "--device", "cpu",
        ],
        vec![
            "sample", "--model", "m.json", "--data", "cars.csv", "--device", "cpu",
        ],
        vec![
            "plot", "--model", "m.json", "--data", "cars.csv", "--out", "p.svg",
        ],
        vec!["info", "m.json"],
    ] {
        let (out, _) = ok(d, &cmd);
        if cmd[0] == "info" {
            assert!(out.contains("fuel (3 categories)"), "{out}");
            assert!(
                out.contains(
                    "inputs        [age, fuel=diesel, fuel=electric, fuel=petrol, region=east"
                ),
                "{out}"
            );
        }
    }
    // A model file for categories is refused by a reader of version 2 only by its version;
    // an indicator run out of its place is refused on loading.
    let mut bad = model.clone();
    bad["categorical"][0]["categories"] = serde_json::json!(["diesel", "petrol"]);
    std::fs::write(d.join("bad.json"), bad.to_string()).unwrap();
    let out = mdn(d, &["info", "bad.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("categorical column 'fuel'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_category_is_refused_with_its_place_or_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cars.csv"), cars(300)).unwrap();
    ok(
        d,
        &[
            "train",
            "--data",
            "cars.csv",
            "--features",
            "age,fuel,region",
            "--epochs",
            "2",
            "--out",
            "m.json",
            "--quiet",
            "--device",
            "cpu",
        ],
    );
    let model = read_json(&d.join("m.json"));
    let new = "id,age,fuel,region\nn1,3,diesel,north\nn2,4,hydrogen,west\n";
    std::fs::write(d.join("new.csv"), new).unwrap();
    let out = mdn(
        d,
        &[
            "predict", "--model", "m.json", "--data", "new.csv", "--device", "cpu",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "new.csv:3:3 (column 'fuel'): 'hydrogen' is not a category the model was trained on \
             (it knows 'diesel', 'electric', 'petrol')"
        ),
        "{err}"
    );
    // A category that differs only in case is still unknown (they are matched exactly), but
    // the message names the one it probably is.
    std::fs::write(
        d.join("case.csv"),
        "id,age,fuel,region\nn1,3,Diesel,north\n",
    )
    .unwrap();
    let out = mdn(
        d,
        &[
            "predict", "--model", "m.json", "--data", "case.csv", "--device", "cpu",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'Diesel' is not a category the model was trained on (categories are matched exactly: did you mean 'diesel'?"),
        "{err}"
    );
    // The density map's refusal counts the columns as the data has them.
    let out = mdn(
        d,
        &[
            "plot", "--model", "m.json", "--data", "cars.csv", "--panel", "density", "--out",
            "x.png",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("reads 3 (age, fuel (3 categories), region (4 categories))"),
        "{err}"
    );
    // Ignored: the row is predicted with all of fuel's indicators zero.
    let (ignored, warn) = ok(
        d,
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "new.csv",
            "--device",
            "cpu",
            "--unknown-category",
            "ignore",
        ],
    );
    assert!(
        warn.contains("warning: new.csv: 1 row(s) have a category the model was not trained on"),
        "{warn}"
    );
    let mut zeros = one_hot(
        "id,age,fuel,region\nn1,3,diesel,north\nn2,4,diesel,west\n",
        &model,
    );
    zeros = zeros.replacen("\n4,1,0,0,", "\n4,0,0,0,", 1);
    std::fs::write(d.join("zeros.csv"), zeros).unwrap();
    let (expected, _) = ok(
        d,
        &[
            "predict",
            "--model",
            "m.json",
            "--data",
            "zeros.csv",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(ignored, expected);
}

#[test]
fn columns_that_are_not_categories_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("cars.csv"), cars(1200)).unwrap();
    let fails = |args: &[&str], needle: &str| {
        let mut all = vec!["train", "--out", "m.json", "--quiet"];
        if !args.contains(&"--data") {
            all.extend_from_slice(&["--data", "cars.csv"]);
        }
        all.extend_from_slice(args);
        let out = mdn(d, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err}");
        assert!(!d.join("m.json").exists());
    };
    // An id column: 1,200 values.
    fails(
        &[],
        "cars.csv (column 'id'): 1200 different values: too many for a categorical feature (at most 1000); \
         an id or free text tells the model nothing, leave the column out (--features age,fuel,region)",
    );
    fails(
        &["--categorical", "colour"],
        "--categorical 'colour' is not a feature column",
    );
    // Regression (a new user): the id as the only feature suggested "(--features )".
    fails(
        &["--features", "id"],
        "an id or free text tells the model nothing, leave the column out\n",
    );
    // An id column in a small table: every value its own (it was learnt as 150 categories).
    std::fs::write(d.join("cars.csv"), cars(150)).unwrap();
    fails(
        &[],
        "cars.csv (column 'id'): 150 different values: in 150 rows most values never repeat, so it \
         is no categorical feature (name it with --categorical if it is one); an id or free text \
         tells the model nothing, leave the column out (--features age,fuel,region)",
    );
    // A numeric column with a typo is a typo, not categories.
    let mut typo = cars(50);
    typo = typo.replacen(",1.4,", ",1.4x,", 1);
    std::fs::write(d.join("cars.csv"), typo).unwrap();
    fails(
        &["--features", "age,fuel"],
        "cars.csv:4:2 (column 'age'): '1.4x' is not a number (the column has 49 numbers and 1 text cell: \
         probably a typo to fix; if the column does hold categories, --categorical age reads every \
         value as one)",
    );
    // Numeric codes named with --categorical are categories.
    std::fs::write(
        d.join("codes.csv"),
        cars(200)
            .replace(",diesel,", ",1,")
            .replace(",petrol,", ",2,")
            .replace(",electric,", ",3,"),
    )
    .unwrap();
    ok(
        d,
        &[
            "train",
            "--data",
            "codes.csv",
            "--features",
            "age,fuel",
            "--categorical",
            "fuel",
            "--epochs",
            "1",
            "--out",
            "c.json",
            "--quiet",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(
        read_json(&d.join("c.json"))["categorical"],
        serde_json::json!([{"column": "fuel", "categories": ["1", "2", "3"]}])
    );
    // A .npy file holds numbers only.
    ok(
        d,
        &[
            "convert",
            "codes.csv",
            "codes.npy",
            "--columns",
            "age,fuel,price",
            "--quiet",
        ],
    );
    fails(
        &["--data", "codes.npy", "--categorical", "fuel"],
        "--categorical fuel: codes.npy is a .npy file, whose columns are numbers; give the CSV file",
    );
}

#[test]
fn missing_values_are_counted_and_drop_missing_leaves_their_rows_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let full = cars(400);
    let mut gaps = String::new();
    let mut kept = String::new();
    for (i, line) in full.lines().enumerate() {
        let line = match i {
            5 => line
                .replacen(",diesel,", ",,", 1)
                .replacen(",petrol,", ",,", 1)
                .replacen(",electric,", ",,", 1),
            9 => {
                let mut cells: Vec<&str> = line.split(',').collect();
                cells[1] = "NA";
                cells.join(",")
            }
            _ => line.to_string(),
        };
        gaps.push_str(&line);
        gaps.push('\n');
        if i != 5 && i != 9 {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    std::fs::write(d.join("gaps.csv"), &gaps).unwrap();
    std::fs::write(d.join("kept.csv"), &kept).unwrap();
    let args = |data: &'static str, out: &'static str| {
        vec![
            "train",
            "--data",
            data,
            "--features",
            "age,fuel,region",
            "--epochs",
            "3",
            "--out",
            out,
            "--quiet",
            "--device",
            "cpu",
        ]
    };
    let out = mdn(d, &args("gaps.csv", "g.json"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "gaps.csv:6:3 (column 'fuel'): missing value (an empty cell); 2 of 400 rows have a missing \
             value in the columns used (--drop-missing leaves them out)"
        ),
        "{err}"
    );
    let mut dropped = args("gaps.csv", "g.json");
    dropped.retain(|a| *a != "--quiet");
    dropped.push("--drop-missing");
    let (_, warn) = ok(d, &dropped);
    assert!(
        warn.contains(
            "2 of 400 rows have a missing value in the columns used (the first at line 6)"
        ),
        "{warn}"
    );
    ok(d, &args("kept.csv", "k.json"));
    assert_eq!(
        params(&read_json(&d.join("g.json"))),
        params(&read_json(&d.join("k.json"))),
        "--drop-missing is not the same as the rows left out"
    );
    // A missing value in a column nobody reads is no problem (the id column here).
    std::fs::write(d.join("ids.csv"), full.replacen("\nc3,", "\n,", 1)).unwrap();
    ok(d, &args("ids.csv", "i.json"));
}

/// `mdn train` of the cars' columns on `data` for two epochs, `--drop-missing`, `--json`.
fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--features",
        "age,fuel,region",
        "--epochs",
        "2",
        "--drop-missing",
        "--device",
        "cpu",
        "--json",
        "--out",
        out,
    ]
}

/// The rows `--drop-missing` left out are in the model's record (`training.rows_left_out`,
/// the training and validation files together), `mdn info` and `train --json`, whose
/// `warnings` list what the run said. Regression: an ensemble's members each read the
/// validation file and each warned of its missing values ("member 1: ...", "member 2: ...").
#[test]
fn an_ensembles_validation_file_warned_of_its_missing_values_once_per_member() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let with_gaps = |rows: usize, every: usize| {
        let mut s = String::new();
        for (i, line) in cars(rows).lines().enumerate() {
            if i > 0 && i % every == 0 {
                let mut cells: Vec<&str> = line.split(',').collect();
                cells[1] = "NA";
                s.push_str(&cells.join(","));
            } else {
                s.push_str(line);
            }
            s.push('\n');
        }
        s
    };
    // 400 rows, 13 with no age; 120 validation rows, 4 with none.
    std::fs::write(d.join("gaps.csv"), with_gaps(400, 30)).unwrap();
    std::fs::write(d.join("val.csv"), with_gaps(120, 30)).unwrap();
    for (extra, out) in [
        (&["--ensemble", "2"][..], "e.json"),
        (&["--ensemble", "2", "--stream"][..], "s.json"),
        (&[][..], "one.json"),
    ] {
        let mut args = train_args("gaps.csv", out);
        args.extend_from_slice(&["--val", "val.csv"]);
        args.extend_from_slice(extra);
        let (stdout, err) = ok(d, &args);
        let v = json(&stdout);
        assert_eq!(v["rows_left_out"], 17, "{extra:?}: {v}");
        assert_eq!(v["train_rows"], 387, "{extra:?}: {v}");
        assert_eq!(v["val_rows"], 116, "{extra:?}: {v}");
        let warnings: Vec<&str> = v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        for (file, said) in [
            ("gaps.csv: 13 of 400 rows", "gaps"),
            ("val.csv: 4 of 120 rows", "val"),
        ] {
            let n = warnings.iter().filter(|w| w.contains(file)).count();
            assert_eq!(
                n, 1,
                "{extra:?}: the {said} file's warning once: {warnings:?}"
            );
            assert_eq!(err.matches(file).count(), 1, "{extra:?}: {err}");
        }
        let model = read_json(&d.join(out));
        assert_eq!(model["training"]["rows_left_out"], 17, "{extra:?}");
        for m in model["members"].as_array().into_iter().flatten() {
            assert_eq!(m["training"]["rows_left_out"], 17, "{extra:?}");
        }
        let (info, _) = ok(d, &["info", out]);
        assert!(
            info.contains(
                "387 training rows, 116 validation rows (17 left out for a missing value)"
            ),
            "{info}"
        );
    }
    // Without missing values the field is absent from the file and 0 in the summary.
    std::fs::write(d.join("full.csv"), cars(200)).unwrap();
    let mut args = train_args("full.csv", "f.json");
    args.push("--quiet");
    let (stdout, _) = ok(d, &args);
    assert_eq!(json(&stdout)["rows_left_out"], 0);
    assert!(
        read_json(&d.join("f.json"))["training"]
            .get("rows_left_out")
            .is_none()
    );
}

/// Regression (a new user): a `;`-separated file with decimal commas in a feature column
/// (`0,5`) was read as a categorical column (`dose=0,5`, `dose=1,5`, ...) where the values
/// repeat, and refused as "an id or free text" where they do not; a target column said
/// "decimal comma" all along. Both feature cases now say so too, at the first such cell;
/// `--categorical` still reads such a column as categories.
#[test]
fn a_feature_column_with_decimal_commas_was_read_as_categories() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut few, mut many) = (String::from("dose;age;y\n"), String::from("x;y\n"));
    for i in 0..300 {
        few.push_str(&format!(
            "{},5;{};{}.{}\n",
            i % 4,
            20 + i % 37,
            i % 7,
            i % 10
        ));
        many.push_str(&format!("{},{:03};{}.5\n", i / 10, i, i % 9));
    }
    std::fs::write(d.join("few.csv"), &few).unwrap();
    std::fs::write(d.join("many.csv"), &many).unwrap();
    for (file, cell, point) in [("few.csv", "0,5", "0.5"), ("many.csv", "0,000", "0.000")] {
        let out = mdn(
            d,
            &["train", "--data", file, "--epochs", "1", "--device", "cpu"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "{file}:2:1 (column '{}'): '{cell}' is not a number: mdn reads a decimal point \
                 ({point}), not a decimal comma (so are the column's 299 other such cells",
                if file == "few.csv" { "dose" } else { "x" }
            )),
            "{err}"
        );
        assert_eq!(files_in(d), vec!["few.csv", "many.csv"]);
    }
    let (_, err) = ok(
        d,
        &[
            "train",
            "--data",
            "few.csv",
            "--categorical",
            "dose",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            "c.json",
        ],
    );
    assert!(err.contains("dose=0,5"), "{err}");
}

/// Regression (a new user): `mdn train --val` with a category the training rows lack
/// suggested `--unknown-category ignore`, an option `train` does not have. It says what to do
/// in training instead.
#[test]
fn a_validation_files_unknown_category_suggested_an_option_train_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let all = cars(300);
    let no_electric: String =
        all.lines()
            .filter(|l| !l.contains(",electric,"))
            .fold(String::new(), |mut s, l| {
                s.push_str(l);
                s.push('\n');
                s
            });
    std::fs::write(d.join("train.csv"), no_electric).unwrap();
    std::fs::write(d.join("val.csv"), &all).unwrap();
    let out = mdn(
        d,
        &[
            "train",
            "--data",
            "train.csv",
            "--val",
            "val.csv",
            "--features",
            "age,fuel,region",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = 2 + all
        .lines()
        .skip(1)
        .position(|l| l.contains(",electric,"))
        .unwrap();
    assert!(
        err.contains(&format!(
            "val.csv:{line}:3 (column 'fuel'): 'electric' is not a category the model was trained \
             on (it knows 'diesel', 'petrol'); the model has no input for a category its training \
             rows lack: add rows of it to the training data, or leave those rows out of this file"
        )),
        "{err}"
    );
    assert!(!err.contains("--unknown-category"), "{err}");
    assert_eq!(files_in(d), vec!["train.csv", "val.csv"]);
}

#[test]
fn a_category_only_among_the_validation_rows_was_called_a_constant_column() {
    // Regression (a new user): a category in no training row (one-row levels that the
    // validation split took) warned "feature column 'nb=Tiny2' is constant in the training
    // rows", naming a column the file does not have.
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("x,nb,y\n");
    for i in 0..400 {
        let nb = ["a", "b", "c"][i % 3];
        text.push_str(&format!(
            "{},{nb},{}\n",
            i as f64 * 0.01,
            (i as f64 * 0.3).sin()
        ));
    }
    // The last row's category alone: validation takes it with --val-fraction's split, or
    // training does; both ways are checked by the warning's form.
    text.push_str("0.5,solo,0.1\n");
    std::fs::write(dir.path().join("s.csv"), text).unwrap();
    let mut warned = false;
    for seed in 0..8 {
        let seed = seed.to_string();
        let (_, err) = ok(
            dir.path(),
            &[
                "train",
                "--data",
                "s.csv",
                "--epochs",
                "1",
                "--val-fraction",
                "0.5",
                "--seed",
                &seed,
                "--out",
                "m.json",
            ],
        );
        assert!(!err.contains("'nb=solo' is constant"), "{err}");
        warned |= err.contains(
            "warning: category 'solo' of column 'nb' is in no training row (only among the validation rows)",
        );
    }
    assert!(
        warned,
        "in 8 seeds of a half split, the row was never held out"
    );
    // Regression (a review): a column whose training rows all have one category (its
    // indicator 1 everywhere) was said to be "in no training row".
    let mut text = String::from("x,country,y\n");
    for i in 0..300 {
        text.push_str(&format!(
            "{},US,{}\n",
            i as f64 * 0.01,
            (i as f64 * 0.3).sin()
        ));
    }
    std::fs::write(dir.path().join("one.csv"), text).unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train", "--data", "one.csv", "--epochs", "1", "--out", "o.json",
        ],
    );
    assert!(
        err.contains("warning: every training row of column 'country' is 'US': the column tells the model nothing"),
        "{err}"
    );
    assert!(!err.contains("in no training row"), "{err}");
}

#[test]
fn a_date_column_was_read_as_a_thousand_categories_without_a_word() {
    // Regression (a new user): a sale date with 1,000 values was taken as 1,000 categories:
    // no hint that a later date cannot be predicted, and the banner listed every indicator
    // (a 30 KB line). With more values, the refusal called it an id or free text.
    let dir = tempfile::tempdir().unwrap();
    let date = |i: usize| format!("2020-{:02}-{:02}", 1 + (i / 28) % 12, 1 + i % 28);
    let mut few = String::from("x,sale date,y\n");
    for i in 0..600 {
        let (x, y) = (i as f64 * 0.01, (i as f64 * 0.3).sin());
        few.push_str(&format!("{x},{},{y}\n", date(i % 40)));
    }
    std::fs::write(dir.path().join("few.csv"), few).unwrap();
    let (_, err) = ok(
        dir.path(),
        &[
            "train", "--data", "few.csv", "--epochs", "1", "--out", "m.json",
        ],
    );
    assert!(
        err.contains("warning: column 'sale date' is read as 40 categories, but its values look like dates: give it as a number instead"),
        "{err}"
    );
    assert!(
        err.contains("[x, sale date=<40 categories>] -> [y]"),
        "{err}"
    );
    let mut uniq = String::from("x,sale date,y\n");
    for i in 0..600 {
        uniq.push_str(&format!(
            "{},{}T{:02}:{:02},{}\n",
            i as f64 * 0.01,
            date(i),
            i % 24,
            i % 60,
            (i as f64 * 0.3).sin()
        ));
    }
    std::fs::write(dir.path().join("uniq.csv"), uniq).unwrap();
    let out = mdn(
        dir.path(),
        &["train", "--data", "uniq.csv", "--out", "u.json"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("its values look like dates"), "{err}");
    assert!(!err.contains("an id or free text"), "{err}");
}
