//! Keys, workspaces and quotas of `mdn serve`, against the real binary on a loopback port:
//! keys made with `mdn serve keys add` beside the running server, two workspaces that see
//! nothing of each other, each scope refused what it may not do, revocation at once, quotas,
//! and who did what in the events.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{Client, MDN, Server, add_key, asset};
use serde_json::{Value, json};

/// `mdn serve ARGS --store STORE`: (exit code, stdout, stderr).
fn admin(store: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(MDN)
        .arg("serve")
        .args(args)
        .arg("--store")
        .arg(store)
        .env_remove("MDN_STORE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn key_id(key: &str) -> String {
    key.strip_prefix("mdn_")
        .unwrap()
        .rsplit_once('_')
        .unwrap()
        .0
        .to_string()
}

/// The answer's status and error code.
fn refused(c: &Client, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let (status, text) = c.call(method, path, body.map(str::as_bytes));
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// The events of every job a client sees (`/v1/events`), read in the background.
fn follow_all(c: &Client) -> std::sync::mpsc::Receiver<Value> {
    let url = format!("{}/v1/events", c.base);
    let r = c.auth(Client::agent().get(&url)).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(r.into_body().into_reader());
        for line in reader.lines().map_while(|l| l.ok()) {
            if let Some(d) = line.strip_prefix("data: ")
                && tx.send(serde_json::from_str(d).unwrap()).is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn two_workspaces_see_nothing_of_each_other_and_each_scope_does_only_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let s = Server::start(&store, &[], &[]);
    // No keys yet: loopback requests need none.
    assert_eq!(s.call("GET", "/v1/datasets", None).0, 200);

    // Keys made beside the running server, each shown once as the last line of stdout.
    let a_admin = add_key(
        &store,
        &[
            "--workspace",
            "team-a",
            "--scope",
            "admin",
            "--name",
            "lead",
        ],
    );
    let a_write = add_key(
        &store,
        &["--workspace", "team-a", "--scope", "write", "--name", "ci"],
    );
    let a_read = add_key(
        &store,
        &["--workspace", "team-a", "--scope", "read", "--name", "dash"],
    );
    let b_write = add_key(
        &store,
        &["--workspace", "team-b", "--scope", "write", "--name", "bob"],
    );
    let root = add_key(&store, &["--server-admin", "--name", "ops"]);
    let (code, _, err) = admin(
        &store,
        &["keys", "add", "--workspace", "Team A", "--scope", "read"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--workspace \"Team A\""), "{err}");

    // Now every request needs a key; the command-line client says how to give one.
    let (st, code) = refused(&s, "GET", "/v1/datasets", None);
    assert_eq!((st, code.as_str()), (401, "unauthorized"));
    let out = Command::new(MDN)
        .args(["jobs", "--server", &s.base])
        .env_remove("MDN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("MDN_TOKEN"), "{err}");

    let a = s.with_key(&a_write);
    let b = s.with_key(&b_write);
    let ar = s.with_key(&a_read);
    let aa = s.with_key(&a_admin);
    let op = s.with_key(&root);
    let b_events = follow_all(&b);

    let ds = a.upload(&asset("bishop.csv"), "a.csv");
    assert_eq!(ds["workspace"], "team-a");
    let ds = ds["id"].as_str().unwrap().to_string();
    let job = a.submit(&ds, json!({"epochs": 1}));
    let done = a.finished(&job);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["workspace"], "team-a");
    let model = done["model"].as_str().unwrap().to_string();
    // Who queued it: in its row and its first event.
    let ci = format!("ci ({})", key_id(&a_write));
    assert_eq!(done["created_by"], ci.as_str());
    assert_eq!(a.events(&job)[0]["by"], ci.as_str());

    // B sees none of it: every id of A's answers as an id that does not exist.
    for (what, list) in [("datasets", "/v1/datasets"), ("jobs", "/v1/jobs")] {
        let (st, v) = b.json("GET", list, None);
        assert_eq!(st, 200);
        assert_eq!(v[what], json!([]), "{v}");
    }
    let ghost = |id: &str| format!("{}_{}", id.split('_').next().unwrap(), "0123456789abcdef");
    let rows = r#"{"rows": [[0.5]]}"#;
    for (method, path, body) in [
        ("GET", format!("/v1/datasets/{ds}"), None),
        ("DELETE", format!("/v1/datasets/{ds}"), None),
        ("GET", format!("/v1/jobs/{job}"), None),
        ("GET", format!("/v1/jobs/{job}/events"), None),
        ("POST", format!("/v1/jobs/{job}/cancel"), None),
        ("GET", format!("/v1/models/{model}"), None),
        ("POST", format!("/v1/models/{model}/predict"), Some(rows)),
        ("POST", format!("/v1/models/{model}/sample"), Some(rows)),
        ("GET", format!("/v1/models/{model}/plot/history.svg"), None),
    ] {
        let theirs = b.call(method, &path, body.map(str::as_bytes));
        let id = path.split('/').nth(3).unwrap();
        let none = b.call(
            method,
            &path.replace(id, &ghost(id)),
            body.map(str::as_bytes),
        );
        assert_eq!(theirs.0, 404, "{method} {path}: {}", theirs.1);
        assert_eq!(
            theirs.1.replace(id, "ID"),
            none.1.replace(&ghost(id), "ID"),
            "{method} {path}"
        );
    }
    let (st, v) = b.json("POST", "/v1/jobs", Some(json!({"dataset": ds})));
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no dataset with id"),
        "{v}"
    );
    // A's data set and model are still there, for A.
    assert_eq!(a.call("GET", &format!("/v1/datasets/{ds}"), None).0, 200);
    let (st, p) = ar.json(
        "POST",
        &format!("/v1/models/{model}/predict"),
        Some(json!({"rows": [[0.5]]})),
    );
    assert_eq!(st, 200, "{p}");

    // B's own job: B's event stream has its events and none of A's.
    let b_ds = b.dataset(&asset("bishop.csv"), "b.csv");
    let b_job = b.submit(&b_ds, json!({"epochs": 1}));
    assert_eq!(b.finished(&b_job)["status"], "succeeded");
    let t0 = Instant::now();
    loop {
        let ev = b_events
            .recv_timeout(Duration::from_secs(30))
            .expect("B's events");
        assert_eq!(
            ev["job"],
            b_job.as_str(),
            "B heard another workspace's job: {ev}"
        );
        if ev["status"] == "succeeded" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
    }

    // Scopes: read reads; write also writes; admin also manages keys. 403 says which.
    for (c, method, path, body) in [
        (
            &ar,
            "POST",
            "/v1/jobs".to_string(),
            Some(r#"{"dataset": "x"}"#),
        ),
        (&ar, "POST", "/v1/datasets".to_string(), Some("x,y\n1,2\n")),
        (&ar, "DELETE", format!("/v1/datasets/{ds}"), None),
        (&ar, "POST", format!("/v1/jobs/{job}/cancel"), None),
        (&ar, "GET", "/v1/keys".to_string(), None),
        (&a, "GET", "/v1/keys".to_string(), None),
        (
            &a,
            "POST",
            "/v1/keys".to_string(),
            Some(r#"{"name": "x", "scope": "read"}"#),
        ),
        (&a, "GET", "/v1/workspaces".to_string(), None),
    ] {
        let (st, text) = c.call(method, &path, body.map(str::as_bytes));
        assert_eq!(st, 403, "{method} {path}: {text}");
        assert!(text.contains("this key's scope is"), "{text}");
    }
    for path in [
        format!("/v1/datasets/{ds}"),
        format!("/v1/jobs/{job}"),
        "/v1/jobs".into(),
    ] {
        assert_eq!(ar.call("GET", &path, None).0, 200, "{path}");
    }

    // A workspace admin manages its own workspace's keys, and only those.
    let (st, v) = aa.json("GET", "/v1/keys", None);
    assert_eq!(st, 200);
    let names: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lead", "ci", "dash"]);
    assert!(
        !v.to_string().contains("hash") && !v.to_string().contains(&a_write[20..]),
        "{v}"
    );
    let (st, made) = aa.json(
        "POST",
        "/v1/keys",
        Some(json!({"name": "robot", "scope": "read"})),
    );
    assert_eq!(st, 201, "{made}");
    assert_eq!(made["workspace"], "team-a");
    let robot = s.with_key(made["key"].as_str().unwrap());
    assert_eq!(robot.call("GET", "/v1/jobs", None).0, 200);
    for body in [
        json!({"name": "x", "scope": "read", "workspace": "team-b"}),
        json!({"name": "x", "scope": "admin", "server_admin": true}),
    ] {
        let (st, v) = aa.json("POST", "/v1/keys", Some(body.clone()));
        assert_eq!(st, 403, "{body}: {v}");
    }
    let (st, v) = aa.json(
        "POST",
        "/v1/keys",
        Some(json!({"name": "x", "scope": "owner"})),
    );
    assert_eq!(st, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("scope"),
        "{v}"
    );
    assert_eq!(
        aa.call("DELETE", &format!("/v1/keys/{}", key_id(&b_write)), None)
            .0,
        404
    );
    let (st, _) = aa.json(
        "PUT",
        "/v1/workspaces/team-a",
        Some(json!({"max_jobs": 100})),
    );
    assert_eq!(st, 403, "a workspace does not set its own quotas");

    // Revoked: refused at once.
    assert_eq!(
        aa.call("DELETE", &format!("/v1/keys/{}", key_id(&a_read)), None)
            .0,
        204
    );
    let (st, text) = ar.call("GET", "/v1/jobs", None);
    assert_eq!(st, 401);
    assert!(text.contains("revoked"), "{text}");
    let (code, _, _) = admin(&store, &["keys", "revoke", &robot.token.clone().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(robot.call("GET", "/v1/jobs", None).0, 401);
    let (code, _, err) = admin(&store, &["keys", "revoke", &key_id(&a_read)]);
    assert_eq!(code, 2);
    assert!(err.contains("already revoked"), "{err}");

    // The server admin sees every workspace, or one it names.
    let (_, v) = op.json("GET", "/v1/datasets", None);
    assert_eq!(v["datasets"].as_array().unwrap().len(), 2);
    let (st, text) = op.call_with("GET", "/v1/datasets", None, &[("Mdn-Workspace", "team-b")]);
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["datasets"][0]["id"], b_ds.as_str());
    assert_eq!(v["datasets"].as_array().unwrap().len(), 1);
    let (st, text) = op.call_with("GET", "/v1/datasets", None, &[("Mdn-Workspace", "team-c")]);
    assert_eq!(st, 403, "{text}");
    let (st, _) = a.call_with("GET", "/v1/datasets", None, &[("Mdn-Workspace", "team-b")]);
    assert_eq!(st, 403, "a workspace key names no other workspace");
    // Regression (a review): a server admin's job could validate on another workspace's
    // data set; a workspace key does not see it at all.
    for (who, says) in [
        (&op, "val_dataset: ds_"),
        (&a, "val_dataset: no dataset with id"),
    ] {
        let body = json!({"dataset": ds, "val_dataset": b_ds, "options": {"epochs": 1}});
        let (st, v) = who.json("POST", "/v1/jobs", Some(body));
        assert_eq!(st, 400, "{v}");
        let text = v["error"]["message"].as_str().unwrap();
        assert!(text.starts_with(says), "{text}");
    }
    let (_, v) = op.json(
        "POST",
        "/v1/jobs",
        Some(json!({"dataset": ds, "val_dataset": b_ds})),
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a job's data sets are of one workspace"),
        "{v}"
    );

    // Quotas, set by the server admin: jobs at once (429) and bytes stored (413).
    let (st, v) = op.json("PUT", "/v1/workspaces/team-a", Some(json!({"max_jobs": 1})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["max_jobs"], 1);
    let long = a.submit(&ds, json!({"epochs": 100000}));
    let (st, v) = a.json("POST", "/v1/jobs", Some(json!({"dataset": ds})));
    assert_eq!(st, 429, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("max_jobs") && msg.contains("team-a"), "{msg}");
    // Another workspace is not held back by it.
    let other = b.submit(&b_ds, json!({"epochs": 1}));
    assert_eq!(
        a.call("POST", &format!("/v1/jobs/{long}/cancel"), None).0,
        200
    );
    a.finished(&long);
    let cancel_events = a.events(&long);
    assert!(
        cancel_events
            .iter()
            .any(|e| e["type"] == "cancel_requested" && e["by"] == ci.as_str())
            || cancel_events
                .iter()
                .any(|e| e["status"] == "cancelled" && e["by"] == ci.as_str()),
        "{cancel_events:?}"
    );
    b.finished(&other);
    let (st, v) = op.json(
        "PUT",
        "/v1/workspaces/team-b",
        Some(json!({"max_bytes": 1000})),
    );
    assert_eq!(st, 200, "{v}");
    // Bytes the workspace does not have (the same file again is its data set: a 200).
    let mut big = std::fs::read(asset("bishop.csv")).unwrap();
    big.extend_from_slice(b"0.5,0.5\n");
    let (st, text) = b.call("POST", "/v1/datasets?name=big.csv", Some(&big));
    assert_eq!(st, 413, "{text}");
    assert!(
        text.contains("max_bytes") && text.contains("team-b"),
        "{text}"
    );
    // Regression (a new user): the message gave decimal MB against quotas set and listed in
    // MiB: binary units throughout (a quota of 1000 bytes is that).
    assert!(
        text.contains("stores 107.6 KiB of data sets") && text.contains("of 1000 bytes:"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(store.join("uploads")).unwrap().count(), 0);
    let (code, out, _) = admin(&store, &["workspaces"]);
    assert_eq!(code, 0);
    assert!(out.contains("team-a") && out.contains("team-b"), "{out}");
    // Keys are listed by id, never themselves.
    let (code, out, _) = admin(&store, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&key_id(&a_write)) && !out.contains(&a_write),
        "{out}"
    );
}

#[test]
fn a_store_with_keys_may_listen_beyond_loopback_and_one_without_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let start = |store: &Path| {
        let mut child = Command::new(MDN)
            .args(["serve", "--addr", "0.0.0.0:0", "--device", "cpu", "--store"])
            .arg(store)
            .env_remove("MDN_TOKEN")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Its messages up to the one that says it listens (or all of them, if it ends).
        let mut said = String::new();
        for line in std::io::BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map_while(|l| l.ok())
        {
            said.push_str(&line);
            said.push('\n');
            if line.contains("listening on") {
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait().unwrap();
        (said, status)
    };
    let (said, status) = start(&store);
    assert_eq!(status.code(), Some(2), "{said}");
    assert!(
        said.contains("mdn serve keys add") && said.contains("TLS"),
        "{said}"
    );
    add_key(&store, &["--workspace", "w", "--scope", "read"]);
    let (said, _) = start(&store);
    assert!(said.contains("listening on http://0.0.0.0:"), "{said}");
    // Without TLS, it says that keys cross the network in clear text.
    assert!(said.contains("no TLS on 0.0.0.0:"), "{said}");
}
