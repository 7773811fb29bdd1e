//! `mdn serve`: a long-running training service. It queues training jobs from many
//! clients, runs them as the library's training job (exactly what `mdn train` runs), keeps
//! its state in a store ([`store`]: SQLite in a directory, or PostgreSQL shared by several
//! machines, with the files in a directory they all see), survives being killed (running
//! jobs resume from their checkpoints, on any worker), streams progress as Server-Sent
//! Events and serves the trained models ([`api`]) and a dashboard ([`web`]). Training runs
//! on worker threads ([`runner`]) that hold a lease on their job; the HTTP side (axum on
//! tokio) never waits on a step. A process runs the API, the workers, or both ([`Role`]).

pub mod api;
pub mod auth;
pub mod runner;
pub mod store;
pub mod v2;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::DeviceChoice;
use crate::error::{Error, Result};

/// What a `mdn serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and workers (the default).
    Both,
    /// The HTTP API only: other processes train (`--api`).
    Api,
    /// Workers only, no HTTP (`--worker`).
    Worker,
}

/// How `mdn serve` was asked to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    /// A directory (SQLite) or a `postgres://` URL.
    pub store: String,
    /// Where data sets, checkpoints and models go: a directory or `s3://bucket/prefix`
    /// (default: the SQLite store's directory).
    pub files: Option<String>,
    /// The local cache of files in an object store (default: the SQLite store's `cache`
    /// folder, or one in the system's temporary directory).
    pub cache: Option<PathBuf>,
    pub role: Role,
    /// With `Role::Worker`: stop once the queue is empty.
    pub exit_when_idle: bool,
    /// Device of jobs that name none.
    pub device: DeviceChoice,
    /// Jobs trained at once.
    pub max_running: usize,
    pub max_upload_mb: u64,
    /// Most rows in one predict, sample or eval request.
    pub max_request_rows: usize,
    /// Most parameters of a job's model (all ensemble members together).
    pub max_model_params: u64,
    /// Bearer token (None: no authentication, loopback addresses only).
    pub token: Option<String>,
    /// A running job's checkpoints are at least this many seconds apart.
    pub checkpoint_seconds: f64,
    /// How jobs are leased to workers.
    pub leasing: runner::Leasing,
}

/// `--addr`: an IP address and port, or a host name and port (`localhost:0`), resolved to
/// its first address.
fn resolve_addr(addr: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let bad = |why: String| {
        Error::config(format!(
            "--addr {addr}: {why}; expected an address and port, such as 127.0.0.1:7878 or localhost:7878"
        ))
    };
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    if !addr.contains(':') {
        return Err(bad("no port".into()));
    }
    let mut found = addr
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot be resolved ({e})")))?;
    found
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// Runs the service until `shutdown` completes (Ctrl-C or SIGTERM in the CLI). `ready` is
/// told the address actually bound (with port 0, the one the system chose; None for a
/// worker, which listens nowhere).
pub fn run(
    config: Config,
    ready: impl FnOnce(Option<SocketAddr>),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr: Option<SocketAddr> = if config.role == Role::Worker {
        None
    } else {
        Some(resolve_addr(&config.addr)?)
    };
    if config.exit_when_idle && config.role != Role::Worker {
        return Err(Error::config(
            "--exit-when-idle is for workers: give it with --worker",
        ));
    }
    if !(config.checkpoint_seconds.is_finite() && config.checkpoint_seconds >= 0.0) {
        return Err(Error::config("--checkpoint-seconds must be 0 or more"));
    }
    if !(config.leasing.seconds.is_finite() && config.leasing.seconds >= 1.0) {
        return Err(Error::config("--lease-seconds must be at least 1"));
    }
    if config.leasing.max_attempts == 0 {
        return Err(Error::config("--max-attempts must be at least 1"));
    }
    if config.max_request_rows == 0 {
        return Err(Error::config("--max-request-rows must be at least 1"));
    }
    if config.max_running == 0 {
        return Err(Error::config("--max-running must be at least 1"));
    }
    if let Some(t) = &config.token
        && t.len() < 16
    {
        return Err(Error::config(
            "the token must be at least 16 characters long",
        ));
    }
    let (store, files) = store::open(
        &config.store,
        config.files.as_deref(),
        config.cache.as_deref(),
    )?;
    // Without a token or a key every request is a server admin's: loopback only.
    if let Some(addr) = addr
        && config.token.is_none()
        && !addr.ip().is_loopback()
        && !store.any_keys()?
    {
        return Err(Error::config(format!(
            "--addr {addr}: without keys the service only listens on loopback addresses (127.0.0.1, ::1); make a key first (`mdn serve keys add --server-admin`, or --workspace NAME --scope SCOPE) or give --token-file FILE (or MDN_TOKEN) to listen on {}; and put a TLS proxy in front, so that keys do not cross the network in clear text",
            addr.ip()
        )));
    }
    let shared = Arc::new(runner::Shared::new(store, files, config.leasing));
    shared.listen()?;
    shared
        .exit_when_idle
        .store(config.exit_when_idle, std::sync::atomic::Ordering::Relaxed);
    // A store one process owns: whatever it finds running, a process that died left.
    let single = !shared.shares_store();
    shared.requeue_expired(single);
    if single && config.role == Role::Api {
        log::warn!(
            "--api on a SQLite store: no process trains its jobs (a SQLite store has one process; leave out --api, or use a PostgreSQL store)"
        );
    }
    let mut threads = Vec::new();
    if config.role != Role::Api {
        for i in 0..config.max_running {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("mdn-job-{i}"))
                    .spawn(move || runner::worker(s, i))
                    .map_err(|e| Error::Backend(format!("starting a worker failed: {e}")))?,
            );
        }
    }
    // Any process re-queues the jobs of workers that vanished.
    let reaper = {
        let s = shared.clone();
        let every = Duration::from_secs_f64((config.leasing.seconds / 4.0).clamp(0.2, 5.0));
        std::thread::Builder::new()
            .name("mdn-leases".into())
            .spawn(move || {
                while !s.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(every);
                    s.requeue_expired(false);
                }
            })
            .map_err(|e| Error::Backend(format!("starting the lease keeper failed: {e}")))?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mdn-http")
        .build()
        .map_err(|e| Error::Backend(format!("starting the HTTP runtime failed: {e}")))?;
    let served = match addr {
        Some(addr) => {
            let mut app = api::App::new(
                shared.clone(),
                config.token.clone(),
                config.max_upload_mb << 20,
                config.device,
                config.checkpoint_seconds,
            );
            app.max_request_rows = config.max_request_rows;
            app.max_model_params = config.max_model_params as u128;
            let app = Arc::new(app);
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    Error::config(format!("--addr {addr}: cannot listen there: {e}"))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| Error::Backend(e.to_string()))?;
                ready(Some(bound));
                let stopping = shared.clone();
                axum::serve(listener, api::router(app))
                    .with_graceful_shutdown(async move {
                        shutdown.await;
                        // Running jobs stop after their current epoch; open event streams end.
                        stopping.stop();
                    })
                    .await
                    .map_err(|e| Error::Backend(format!("the HTTP server failed: {e}")))
            })
        }
        None => {
            ready(None);
            // Until a signal, or until the workers stop by themselves (--exit-when-idle).
            let stopping = shared.clone();
            runtime.block_on(async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = async {
                        while !stopping.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    } => {}
                }
            });
            Ok(())
        }
    };
    shared.stop();
    for w in threads {
        let _ = w.join();
    }
    let _ = reaper.join();
    runtime.shutdown_timeout(Duration::from_secs(2));
    served
}
