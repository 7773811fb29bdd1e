//! A real PostgreSQL server for the tests: a throwaway cluster (`initdb` in a temporary
//! directory, `postgres` on a free loopback port), started once per test binary and removed
//! when the binary exits, with a fresh database for each test. `MDN_TEST_POSTGRES=URL`
//! names a server to use instead (its user must be allowed to create databases).
//!
//! Without PostgreSQL installed: `None` and a note on stderr, or a failure when
//! `MDN_REQUIRE_POSTGRES=1` (as on CI).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Postgres {
    /// `postgres://USER@HOST:PORT`, without a database.
    base: String,
    /// The wrapper's standard input: when this process exits it closes, and the wrapper
    /// stops the server and removes its directory.
    _lifeline: Option<std::process::ChildStdin>,
}

static SERVER: OnceLock<Option<Postgres>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The server, or None (with a note, or a panic under `MDN_REQUIRE_POSTGRES=1`).
pub fn server() -> Option<&'static Postgres> {
    let s = SERVER
        .get_or_init(|| match std::env::var("MDN_TEST_POSTGRES") {
            Ok(url) => Some(Postgres {
                base: url
                    .trim_end_matches('/')
                    .rsplit_once('/')
                    .map_or(url.clone(), |(b, _)| b.to_string()),
                _lifeline: None,
            }),
            Err(_) => start(),
        })
        .as_ref();
    if s.is_none() {
        assert!(
            std::env::var("MDN_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "MDN_REQUIRE_POSTGRES=1 but PostgreSQL could not be started (install Debian's postgresql package)"
        );
        eprintln!("SKIPPED: PostgreSQL is not installed (Debian: apt install postgresql)");
    }
    s
}

impl Postgres {
    /// A new, empty database: its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = postgres::Client::connect(&format!("{}/postgres", self.base), postgres::NoTls)
            .expect("connecting to the test server");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("{}/{name}", self.base)
    }
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn start() -> Option<Postgres> {
    let bin = bin_dir()?;
    let root = super::is_root();
    let dir = tempfile::Builder::new()
        .prefix("mdn-test-pg")
        .tempdir()
        .unwrap()
        .keep();
    let data = dir.join("data");
    // As root, the server runs as the `postgres` user (it refuses to run as root).
    let as_user = |cmd: &str| -> Command {
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", cmd]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", cmd]);
            c
        }
    };
    if root {
        let st = Command::new("chown")
            .args(["postgres:"])
            .arg(&dir)
            .status()
            .ok()?;
        assert!(st.success(), "chown of the test cluster's directory failed");
    }
    let out = as_user(&format!(
        "{} -D {} -A trust -U mdn -E UTF8 --no-sync",
        bin.join("initdb").display(),
        data.display()
    ))
    .output()
    .ok()?;
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = super::free_port();
    // The wrapper stops the server (fast shutdown) and removes the directory when its input
    // closes, that is when this test process ends, however it ends.
    let script = format!(
        "{pg} -D {data} -k {dir} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 >{dir}/log 2>&1 & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf {dir}",
        pg = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let mut child = as_user(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let lifeline = child.stdin.take();
    let base = format!("postgres://mdn@127.0.0.1:{port}");
    let t0 = Instant::now();
    loop {
        if postgres::Client::connect(&format!("{base}/postgres"), postgres::NoTls).is_ok() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the test PostgreSQL server did not start: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Reaped by nobody: the wrapper ends with this process.
    std::mem::forget(child);
    let _ = std::io::stderr().flush();
    Some(Postgres {
        base,
        _lifeline: lifeline,
    })
}

/// A PostgreSQL server of its own for one test, which the test can stop and start again
/// (the database going away and coming back); removed when dropped.
pub struct Dedicated {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    root: bool,
    pub url: String,
}

impl Dedicated {
    /// None where PostgreSQL is not installed (with the same note or failure as [`server`]).
    pub fn start() -> Option<Dedicated> {
        server()?;
        let bin = bin_dir()?;
        let root = super::is_root();
        let dir = tempfile::Builder::new()
            .prefix("mdn-test-pg-own")
            .tempdir()
            .unwrap()
            .keep();
        if root {
            assert!(
                Command::new("chown")
                    .arg("postgres:")
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let port = super::free_port();
        let d = Dedicated {
            bin,
            url: format!("postgres://mdn@127.0.0.1:{port}/postgres"),
            dir,
            port,
            root,
        };
        let out = d
            .run(&format!(
                "{} -D {}/data -A trust -U mdn -E UTF8 --no-sync",
                d.bin.join("initdb").display(),
                d.dir.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.up();
        Some(d)
    }

    fn run(&self, cmd: &str) -> Command {
        let mut c = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", cmd]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", cmd]);
            c
        };
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    /// Starts the server and waits until it answers.
    pub fn up(&self) {
        let st = self
            .run(&format!(
                "{} -D {dir}/data -l {dir}/log -w -o '-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off' start",
                self.bin.join("pg_ctl").display(),
                dir = self.dir.display(),
                port = self.port
            ))
            .status()
            .unwrap();
        assert!(st.success(), "pg_ctl start failed");
        let t0 = Instant::now();
        while postgres::Client::connect(&self.url, postgres::NoTls).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the server did not come back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (its connections are cut).
    pub fn down(&self) {
        let st = self
            .run(&format!(
                "{} -D {}/data -m fast -w stop",
                self.bin.join("pg_ctl").display(),
                self.dir.display()
            ))
            .status()
            .unwrap();
        assert!(st.success(), "pg_ctl stop failed");
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        let _ = self
            .run(&format!(
                "{} -D {}/data -m immediate stop",
                self.bin.join("pg_ctl").display(),
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
