//! The Open Inference Protocol (KServe V2) of `mdn serve`, tested with a client nobody here
//! wrote: Triton's `tritonclient[http]` from PyPI (binary and JSON tensors, by name, version
//! and alias), its answers compared with `mdn predict --json`; and the protocol's details
//! over plain HTTP: metadata, errors, bounds, full covariance.

mod common;

use std::process::Command;

use common::serve::{Client, MDN, Server, add_key, asset};
use serde_json::{Value, json};

/// The worst relative difference between two arrays of numbers (nested alike).
fn worst(a: &Value, b: &Value) -> f64 {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{a} vs {b}");
            x.iter()
                .zip(y)
                .map(|(p, q)| worst(p, q))
                .fold(0.0, f64::max)
        }
        _ => {
            let (p, q) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            (p - q).abs() / q.abs().max(1e-6)
        }
    }
}

#[test]
fn tritonclient_predicts_what_mdn_predict_does_by_name_version_and_alias() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = Server::start(&store, &[], &[]);
    let key = add_key(
        &store,
        &[
            "--workspace",
            "default",
            "--scope",
            "write",
            "--name",
            "triton",
        ],
    );
    let c = s.with_key(&key);
    let ds = c.dataset(&asset("bishop.csv"), "bishop.csv");
    let done = c.trained(json!({"dataset": ds, "options": {"epochs": 3}, "register": "bishop"}));
    let model = done["model"].as_str().unwrap();
    let (st, _) = c.json(
        "PUT",
        "/v1/registry/bishop/aliases/production",
        Some(json!({"version": 1})),
    );
    assert_eq!(st, 200);

    // What `mdn predict --json` says for rows at the edges and the middle.
    let xs = [-0.2, 0.0, 0.1, 0.5, 0.9, 1.0, 1.3];
    let (_, file) = c.call("GET", &format!("/v1/models/{model}"), None);
    std::fs::write(dir.path().join("m.json"), file).unwrap();
    let rows: String = std::iter::once("x".to_string())
        .chain(xs.iter().map(|x| x.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("rows.csv"), rows + "\n").unwrap();
    let out = Command::new(MDN)
        .args([
            "predict",
            "--device",
            "cpu",
            "--json",
            "--quantiles",
            "0.05,0.95",
            "--model",
        ])
        .arg(dir.path().join("m.json"))
        .arg("--data")
        .arg(dir.path().join("rows.csv"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli_rows = cli["rows"].as_array().unwrap();
    let col = |k: &str| Value::Array(cli_rows.iter().map(|r| r[k].clone()).collect());
    let quantiles = Value::Array(
        cli_rows
            .iter()
            .map(|r| json!([r["quantiles"]["0.05"], r["quantiles"]["0.95"]]))
            .collect(),
    );

    let Some(python) = common::python::with("tritonclient.http") else {
        return;
    };
    let host = s.base.trim_start_matches("http://");
    let x_json = json!(xs.iter().map(|x| [x]).collect::<Vec<_>>()).to_string();
    let run = Command::new(python)
        .arg(common::python::script("triton_infer.py"))
        .args([host, &key, "bishop", &x_json])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let t: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        (
            &t["live"],
            &t["ready"],
            &t["model_ready"],
            &t["missing_ready"]
        ),
        (&json!(true), &json!(true), &json!(true), &json!(false))
    );
    let meta = &t["metadata"];
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "x", "datatype": "FP32", "shape": [-1, 1]}])
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "pi", "datatype": "FP32", "shape": [-1, 5]})
    );
    // Binary and JSON tensors carry the same numbers; both equal the CLI's to float32.
    for form in ["binary", "json"] {
        let got = &t[form];
        assert_eq!(got["version"], "1");
        for (name, want) in [
            ("pi", col("pi")),
            ("mu", col("mu")),
            ("sigma", col("sigma")),
            ("mean", col("mean")),
            ("variance", col("variance")),
            ("quantiles", quantiles.clone()),
        ] {
            let w = worst(&got[name], &want);
            assert!(w < 1e-5, "{form} {name}: worst relative difference {w:e}");
        }
    }
    assert_eq!(t["binary"], t["json"]);
    assert_eq!(t["version_1"]["mean"], t["json"]["mean"]);
    assert_eq!(t["alias"]["mean"], t["json"]["mean"]);
    assert_eq!(t["missing"][0], "404");
    assert_eq!(t["bad_shape"][0], "400");
    assert!(
        t["bad_shape"][1].as_str().unwrap().contains("[N, 1]"),
        "{}",
        t["bad_shape"]
    );
    // Without the key: refused (tritonclient raises on the 401).
    assert_eq!(t["no_key"][0], "401", "{}", t["no_key"]);
}

/// POST a V2 body: (status, JSON answer).
fn infer(c: &Client, path: &str, body: Value) -> (u16, Value) {
    c.json("POST", path, Some(body))
}

#[test]
fn the_protocols_errors_bounds_and_a_full_covariance_model_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("store"),
        &["--max-request-rows", "50"],
        &[],
    );
    // Health and server metadata.
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(s.call("GET", path, None).0, 200, "{path}");
    }
    let (_, server) = s.json("GET", "/v2", None);
    assert_eq!(server["name"], "mdn");
    assert!(
        server["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );

    // A three-target model with full covariance, by its id (no versions).
    let csv = dir.path().join("c.csv");
    let st = Command::new(MDN)
        .args([
            "generate",
            "--kind",
            "correlated",
            "--rows",
            "400",
            "--quiet",
            "--out",
        ])
        .arg(&csv)
        .status()
        .unwrap();
    assert!(st.success());
    let header = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let cols: Vec<&str> = header.split(',').collect();
    let ds = s.upload(&csv, "c.csv")["id"].as_str().unwrap().to_string();
    let m = s.trained(json!({"dataset": ds, "target": cols[1..], "options": {"epochs": 2, "covariance": "full", "components": 2}}))["model"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v2/models/{m}/infer");
    let x = |rows: usize| json!({"inputs": [{"name": "x", "shape": [rows, 1], "datatype": "FP32", "data": vec![[0.5]; rows]}]});
    let (st, a) = infer(&s, &path, x(3));
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["model_name"], m.as_str());
    let out = |name: &str| {
        a["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(out("scale_tril")["shape"], json!([3, 2, 3, 3]));
    assert_eq!(out("mu")["shape"], json!([3, 2, 3]));
    assert_eq!(out("mean")["shape"], json!([3, 3]));
    // Zero above each Cholesky factor's diagonal.
    let l: Vec<f64> = out("scale_tril")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (i, v) in l.iter().enumerate() {
        let (row, colm) = ((i / 3) % 3, i % 3);
        if colm > row {
            assert_eq!(*v, 0.0, "entry {i}");
        }
    }
    // Only what is asked for, with the request's id; flat data is taken as well as nested.
    let (st, a) = infer(
        &s,
        &path,
        json!({"id": "r-1", "inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [0.1, 0.2]}], "outputs": [{"name": "mode"}]}),
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["id"], "r-1");
    assert_eq!(a["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(a["outputs"][0]["shape"], json!([2, 3]));

    // Errors are {"error": "..."} with a 4xx, and say what is wrong.
    for (body, status, says) in [
        (json!({"inputs": []}), 400, "expected one tensor"),
        (
            json!({"inputs": [{"name": "z", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}),
            400,
            "expected x",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}),
            400,
            "[N, 1]",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1]}]}),
            400,
            "1 values for shape [2, 1]",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}),
            400,
            "FP32",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": ["a"]}]}),
            400,
            "expected numbers",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "logits"}]}),
            400,
            "not an output",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "quantiles"}]}),
            400,
            "parameters.quantiles",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}], "parameters": {"quantiles": [1.5]}}),
            400,
            "quantiles",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}], "parameters": {"binary_data_output": true}, "outputs": [{"name": "mean"}]}),
            200,
            "",
        ),
        (x(51), 413, "--max-request-rows"),
        (json!({"nothing": 1}), 400, "inputs"),
    ] {
        let (st, text) = s.call("POST", &path, Some(body.to_string().as_bytes()));
        assert_eq!(st, status, "{body}: {text}");
        if status != 200 {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert!(
                v["error"].as_str().unwrap().contains(says),
                "{body}: {text}"
            );
        }
    }
    for missing in [
        "/v2/models/no-such/infer",
        "/v2/models/m_0123456789abcdef/infer",
        &format!("/v2/models/{m}/versions/1/infer"),
    ] {
        let (st, v) = infer(&s, missing, x(1));
        assert_eq!(st, 404, "{missing}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    // A deep ensemble answers as its equal-weight mixture: M x K components, the same mean
    // as /v1's predict.
    let bishop = s.dataset(&asset("bishop.csv"), "b.csv");
    s.trained(json!({"dataset": bishop, "options": {"epochs": 1, "ensemble": 2, "components": 3}, "register": "ens"}));
    let (st, a) = infer(
        &s,
        "/v2/models/ens/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.5]}], "outputs": [{"name": "pi"}, {"name": "mean"}]}),
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["outputs"][0]["shape"], json!([1, 6]));
    let pi: f64 = a["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((pi - 1.0).abs() < 1e-5, "{pi}");
    let (_, v1) = s.json(
        "POST",
        "/v1/models/ens/predict",
        Some(json!({"rows": [[0.5]]})),
    );
    let w = worst(&a["outputs"][1]["data"], &v1["rows"][0]["mean"]);
    assert!(w < 1e-6, "ensemble mean: worst relative difference {w:e}");
    // A binary body whose header length is wrong.
    let url = format!("{}{path}", s.base);
    let mut r = Client::agent()
        .post(&url)
        .header("Inference-Header-Content-Length", "100000")
        .send("{}")
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(
        r.body_mut()
            .read_to_string()
            .unwrap()
            .contains("Inference-Header-Content-Length")
    );
}
