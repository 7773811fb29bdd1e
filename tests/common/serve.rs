//! The training service as its tests drive it: the real `mdn serve` binary (the API on a
//! free loopback port, or a worker with no HTTP), called over HTTP with ureq.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const MDN: &str = env!("CARGO_BIN_EXE_mdn");

pub fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

/// A running `mdn serve`; killed when dropped. Its requests ([`Client`]) carry the token
/// it was started with.
pub struct Server {
    pub child: Child,
    pub client: Client,
    /// Everything the process wrote to standard error so far.
    pub log: Arc<Mutex<String>>,
}

/// Requests to a server with one key (or none).
#[derive(Clone)]
pub struct Client {
    /// `http://127.0.0.1:PORT` (empty for a worker).
    pub base: String,
    pub token: Option<String>,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Server {
    /// `mdn serve --store STORE ARGS` on the CPU, on a free loopback port.
    pub fn start(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all: Vec<OsString> = vec!["--store".into(), store.into()];
        all.extend(args.iter().map(OsString::from));
        Server::spawn(&all, env)
    }

    /// `mdn serve ARGS` on the CPU (on a free loopback port unless ARGS say `--worker`),
    /// once it is listening or working.
    pub fn spawn(args: &[OsString], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(MDN);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--device", "cpu"])
            .args(args)
            .env_remove("MDN_TOKEN")
            .env_remove("MDN_DEVICE")
            .env_remove("MDN_THREADS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let base = loop {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => panic!("mdn serve ended before listening: {}", log.lock().unwrap()),
            };
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
            if line.contains("mdn serve: working (") {
                break String::new();
            }
        };
        // Keep draining the server's messages so that it never blocks on a full pipe.
        let keep = log.clone();
        std::thread::spawn(move || {
            for l in lines.by_ref().map_while(|l| l.ok()) {
                keep.lock().unwrap().push_str(&format!("{l}\n"));
            }
        });
        let token = env
            .iter()
            .find(|(k, _)| *k == "MDN_TOKEN")
            .map(|(_, v)| v.to_string());
        Server {
            child,
            client: Client { base, token },
            log,
        }
    }

    pub fn agent() -> ureq::Agent {
        Client::agent()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Client {
    /// The same server, with `key` as the bearer token.
    pub fn with_key(&self, key: &str) -> Client {
        Client {
            base: self.base.clone(),
            token: Some(key.to_string()),
        }
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    }

    pub fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// (status, body) of a request.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        self.call_with(method, path, body, &[])
    }

    /// (status, body) of a request with more headers.
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let a = Client::agent();
        let with = |mut r: ureq::RequestBuilder<_>| {
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            self.auth(r)
        };
        let r = match (method, body) {
            ("GET", _) => with(a.get(&url)).call(),
            ("DELETE", _) => with(a.delete(&url)).call(),
            ("POST", Some(b)) => {
                let mut r = a.post(&url);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                self.auth(r).send(b)
            }
            ("POST", None) => {
                let mut r = a.post(&url);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                self.auth(r).send_empty()
            }
            ("PUT", Some(b)) => {
                let mut r = a.put(&url);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                self.auth(r).send(b)
            }
            _ => panic!("{method}"),
        };
        let mut r = r.unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    pub fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (s, out) = self.call(method, path, text.as_deref().map(str::as_bytes));
        (s, serde_json::from_str(&out).unwrap_or(Value::String(out)))
    }

    /// The data set of `file`, uploaded (or the store's own, when it has the file).
    pub fn upload(&self, file: &Path, name: &str) -> Value {
        let bytes = std::fs::read(file).unwrap();
        let (s, v) = self.call("POST", &format!("/v1/datasets?name={name}"), Some(&bytes));
        // 200: the store has this file already (one data set per file), as that data set.
        assert!(s == 201 || s == 200, "{s}: {v}");
        serde_json::from_str(&v).unwrap()
    }

    /// The id of a data set uploaded from `file`.
    pub fn dataset(&self, file: &Path, name: &str) -> String {
        self.upload(file, name)["id"].as_str().unwrap().to_string()
    }

    /// Queues the job `body` (the whole request: dataset, options, register, ...) and
    /// waits until it ends: its final row.
    pub fn trained(&self, body: Value) -> Value {
        let (s, v) = self.json("POST", "/v1/jobs", Some(body));
        assert_eq!(s, 202, "{v}");
        self.finished(v["id"].as_str().unwrap())
    }

    pub fn submit(&self, dataset: &str, options: Value) -> String {
        let (s, v) = self.json(
            "POST",
            "/v1/jobs",
            Some(json!({"dataset": dataset, "options": options})),
        );
        assert_eq!(s, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        let (s, v) = self.json("GET", &format!("/v1/jobs/{id}"), None);
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Waits until `until` holds for the job (at most 120 s).
    pub fn wait(&self, id: &str, until: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.job(id);
            if until(&j) {
                return j;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "job {id} stuck: {j}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn finished(&self, id: &str) -> Value {
        self.wait(id, |j| {
            matches!(
                j["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
    }

    /// A job's whole event stream (it ends after the final status).
    pub fn events(&self, id: &str) -> Vec<Value> {
        let url = format!("{}/v1/jobs/{id}/events", self.base);
        let mut r = self.auth(Client::agent().get(&url)).call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut text = String::new();
        r.body_mut().as_reader().read_to_string(&mut text).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn params(model: &Value) -> &Value {
    &model["params"]
}

/// `mdn train` on the same data and options, on the CPU: the model the service must match.
pub fn cli_train(dir: &Path, data: &Path, args: &[&str]) -> Value {
    let out = dir.join("cli.json");
    let st = Command::new(MDN)
        .args(["train", "--device", "cpu", "--quiet", "--data"])
        .env_remove("MDN_THREADS")
        .arg(data)
        .arg("--out")
        .arg(&out)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success());
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// A new API key from `mdn serve keys add --store STORE ARGS` (the last line of its standard
/// output); STORE is a directory or a PostgreSQL URL.
pub fn add_key(store: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let out = Command::new(MDN)
        .args(["serve", "keys", "add", "--store"])
        .arg(store)
        .args(args)
        .env_remove("MDN_STORE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(key.starts_with("mdn_key_"), "{key}");
    key
}
