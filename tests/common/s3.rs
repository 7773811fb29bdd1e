//! A real S3-compatible server for the tests: `moto_server` (PyPI's `moto[server]`, which
//! `.ci/run` installs into `.venv-py`; `MDN_TEST_MOTO` names another) on a free loopback
//! port, started once per test binary and stopped when the binary exits.
//!
//! Without it: `None` and a note on stderr, or a failure when `MDN_REQUIRE_S3=1` (as on CI).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct S3 {
    pub endpoint: String,
    _lifeline: std::process::ChildStdin,
}

static SERVER: OnceLock<Option<S3>> = OnceLock::new();
static BUCKETS: AtomicUsize = AtomicUsize::new(0);

fn moto() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MDN_TEST_MOTO") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-py/bin/moto_server");
    if venv.exists() {
        return Some(venv);
    }
    super::which("moto_server")
}

/// The server, or None (with a note, or a panic under `MDN_REQUIRE_S3=1`).
pub fn server() -> Option<&'static S3> {
    let s = SERVER.get_or_init(start).as_ref();
    if s.is_none() {
        assert!(
            std::env::var("MDN_REQUIRE_S3").as_deref() != Ok("1"),
            "MDN_REQUIRE_S3=1 but moto_server is not installed (pip install 'moto[server]')"
        );
        eprintln!("SKIPPED: no S3 server for the test (pip install 'moto[server]')");
    }
    s
}

fn start() -> Option<S3> {
    let moto = moto()?;
    let port = super::free_port();
    // The wrapper stops the server when its input closes: when this test process ends.
    let script = format!(
        "'{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid; wait $pid",
        moto.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let lifeline = child.stdin.take()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::mem::forget(child);
    Some(S3 {
        endpoint,
        _lifeline: lifeline,
    })
}

impl S3 {
    /// A new, empty bucket: its name.
    pub fn bucket(&self) -> String {
        let name = format!(
            "mdn-{}-{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed)
        );
        let r = ureq::put(format!("{}/{name}", self.endpoint))
            .send_empty()
            .unwrap();
        assert!(r.status().is_success());
        name
    }

    /// The environment a process needs to reach the server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The keys in `bucket` under `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut r = ureq::get(format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            self.endpoint
        ))
        .call()
        .unwrap();
        let xml = r.body_mut().read_to_string().unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}
