//! The model registry of `mdn serve`, against the real binary: a job registers its model,
//! versions and aliases through the API and `mdn models`, predictions by name, version and
//! alias, an alias moved while clients predict through it, and names that stay in their
//! workspace.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::serve::{Client, MDN, Server, asset};
use serde_json::{Value, json};

/// `mdn ARGS` against the server: (exit code, stdout, stderr).
fn cli(s: &Client, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(MDN);
    cmd.args(args)
        .args(["--server", &s.base])
        .env_remove("MDN_TOKEN")
        .env_remove("MDN_WORKSPACE");
    if let Some(t) = &s.token {
        cmd.env("MDN_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (status, Mdn-Model-Version header, body) of a prediction.
fn predict(c: &Client, reference: &str) -> (u16, Option<String>, Value) {
    let url = format!("{}/v1/models/{reference}/predict", c.base);
    let mut r = c
        .auth(Client::agent().post(&url))
        .send(r#"{"rows": [[0.25], [0.5]], "quantiles": [0.1, 0.9]}"#)
        .unwrap();
    let version = r
        .headers()
        .get("mdn-model-version")
        .map(|v| v.to_str().unwrap().to_string());
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    (
        status,
        version,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[test]
fn a_job_registers_its_model_and_an_alias_moves_atomically_under_concurrent_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("store"), &[], &[]);
    let ds = s.dataset(&asset("bishop.csv"), "bishop.csv");

    // A job that registers its model: version 1, said in its final event.
    let (st, v) = s.json(
        "POST",
        "/v1/jobs",
        Some(json!({"dataset": ds, "options": {"epochs": 2, "seed": 1}, "register": "bishop"})),
    );
    assert_eq!(st, 202, "{v}");
    let job1 = v["id"].as_str().unwrap().to_string();
    let done1 = s.finished(&job1);
    assert_eq!(done1["register"], "bishop");
    let last = s.events(&job1).pop().unwrap();
    assert_eq!(
        last["registered"],
        json!({"name": "bishop", "version": 1}),
        "{last}"
    );
    // `mdn submit --register`: version 2.
    let (code, out, err) = cli(
        &s,
        &[
            "submit",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--epochs",
            "2",
            "--seed",
            "2",
            "--register",
            "bishop",
            "--wait",
            "--quiet",
            "--out",
            dir.path().join("m2.json").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (_, reg) = s.json("GET", "/v1/registry/bishop", None);
    assert_eq!(reg["latest"], 2, "{reg}");
    let m1 = reg["versions"][0]["model"].as_str().unwrap().to_string();
    let m2 = reg["versions"][1]["model"].as_str().unwrap().to_string();
    assert_eq!(m1, done1["model"].as_str().unwrap());

    // By id, by name (the newest), by name and version; an alias once set.
    let (_, _, by_m1) = predict(&s, &m1);
    let (_, _, by_m2) = predict(&s, &m2);
    assert_ne!(by_m1, by_m2);
    let (st, version, body) = predict(&s, "bishop");
    assert_eq!((st, version.as_deref()), (200, Some("bishop:2")));
    assert_eq!(body, by_m2);
    let (st, version, body) = predict(&s, "bishop:1");
    assert_eq!((st, version.as_deref()), (200, Some("bishop:1")));
    assert_eq!(body, by_m1);
    for missing in ["bishop@production", "bishop:3", "other", "bishop:0"] {
        let (st, _, body) = predict(&s, missing);
        assert_eq!(st, 404, "{missing}: {body}");
    }
    let (code, out, err) = cli(&s, &["models", "bishop", "--alias", "production=1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("production") && out.contains(&m1), "{out}");
    let (st, version, body) = predict(&s, "bishop@production");
    assert_eq!((st, version.as_deref()), (200, Some("bishop:1")));
    assert_eq!(body, by_m1);
    // The model file by alias is the version's file.
    let (st, file) = s.call("GET", "/v1/models/bishop@production", None);
    assert_eq!(st, 200);
    let (_, by_id) = s.call("GET", &format!("/v1/models/{m1}"), None);
    assert_eq!(file, by_id);

    // Clients predict through the alias while it moves back and forth: every answer is one
    // version's whole answer, never an error or a mixture.
    let stop = Arc::new(AtomicBool::new(false));
    let expected = Arc::new([
        (String::from("bishop:1"), by_m1.clone()),
        ("bishop:2".into(), by_m2.clone()),
    ]);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let c = s.client.clone();
            let (stop, expected) = (stop.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut seen = [0usize; 2];
                while !stop.load(Ordering::Relaxed) {
                    let (st, version, body) = predict(&c, "bishop@production");
                    assert_eq!(st, 200, "{body}");
                    let i = expected
                        .iter()
                        .position(|(v, _)| Some(v) == version.as_ref())
                        .expect("a version");
                    assert_eq!(body, expected[i].1, "{version:?}");
                    seen[i] += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..60 {
        let (st, v) = s.json(
            "PUT",
            "/v1/registry/bishop/aliases/production",
            Some(json!({"version": 1 + i % 2})),
        );
        assert_eq!(st, 200, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<[usize; 2]> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let total: [usize; 2] = seen.iter().fold([0, 0], |a, s| [a[0] + s[0], a[1] + s[1]]);
    assert!(
        total[0] > 0 && total[1] > 0,
        "both versions answered: {total:?}"
    );

    // Tags, a registered model by id, and what is refused.
    let (st, v) = s.json(
        "PUT",
        "/v1/registry/bishop/versions/1",
        Some(json!({"tags": ["baseline"]})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tags"], json!(["baseline"]));
    let (st, v) = s.json(
        "POST",
        "/v1/registry/bishop-copy/versions",
        Some(json!({"model": m2, "tags": ["copy"]})),
    );
    assert_eq!((st, &v["version"]), (201, &json!(1)), "{v}");
    for (method, path, body, status) in [
        (
            "POST",
            "/v1/registry/m_0123/versions",
            json!({"model": m1}),
            400,
        ),
        (
            "POST",
            "/v1/registry/x/versions",
            json!({"model": "m_0000000000000000"}),
            400,
        ),
        (
            "PUT",
            "/v1/registry/bishop/aliases/1st",
            json!({"version": 1}),
            400,
        ),
        (
            "PUT",
            "/v1/registry/bishop/aliases/staging",
            json!({"version": 9}),
            404,
        ),
        (
            "PUT",
            "/v1/registry/bishop/versions/0",
            json!({"tags": []}),
            404,
        ),
    ] {
        let (st, v) = s.json(method, path, Some(body));
        assert_eq!(st, status, "{method} {path}: {v}");
    }
    let (st, v) = s.json(
        "POST",
        "/v1/jobs",
        Some(json!({"dataset": ds, "register": "has space"})),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("register:"),
        "{v}"
    );
    let (code, out, _) = cli(&s, &["models"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("bishop ") && out.contains("production=") && out.contains("bishop-copy"),
        "{out}"
    );
    let (code, _, err) = cli(&s, &["models", "bishop", "--alias", "production"]);
    assert_eq!(code, 2);
    assert!(err.contains("ALIAS=VERSION"), "{err}");
    // `mdn fetch` by alias.
    let out_path = dir.path().join("prod.json");
    let (code, _, err) = cli(
        &s,
        &[
            "fetch",
            "bishop@production",
            "--out",
            out_path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");

    // Names stay in their workspace: another workspace's key sees none of them.
    let store = dir.path().join("store");
    let key = |ws: &str| common::serve::add_key(&store, &["--workspace", ws, "--scope", "write"]);
    let other = s.with_key(&key("other"));
    let (st, v) = other.json("GET", "/v1/registry", None);
    assert_eq!((st, &v["models"]), (200, &json!([])));
    for reference in ["bishop", "bishop@production", "bishop:1"] {
        assert_eq!(predict(&other, reference).0, 404, "{reference}");
    }
    assert_eq!(other.call("GET", "/v1/registry/bishop", None).0, 404);
    let (st, _) = other.json(
        "PUT",
        "/v1/registry/bishop/aliases/production",
        Some(json!({"version": 1})),
    );
    assert_eq!(st, 404);
    // The default workspace's own key still sees them.
    let mine = s.with_key(&key("default"));
    assert_eq!(predict(&mine, "bishop@production").0, 200);
}
