//! `mdn serve`: a long-running training service. One process owns the device, queues
//! training jobs from many clients, runs them as the library's training job (exactly what
//! `mdn train` runs), keeps everything in a store directory (SQLite and files, [`store`]),
//! survives being killed (running jobs resume from their checkpoints), streams progress as
//! Server-Sent Events and serves the trained models ([`api`]) and a dashboard ([`web`]). Training runs on worker
//! threads of its own ([`runner`]); the HTTP side (axum on tokio) never waits on a step.

pub mod api;
pub mod runner;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::DeviceChoice;
use crate::error::{Error, Result};

/// How `mdn serve` was asked to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: String,
    pub store: PathBuf,
    /// Device of jobs that name none.
    pub device: DeviceChoice,
    /// Jobs trained at once.
    pub max_running: usize,
    pub max_upload_mb: u64,
    /// Bearer token (None: no authentication, loopback addresses only).
    pub token: Option<String>,
    /// A running job's checkpoints are at least this many seconds apart.
    pub checkpoint_seconds: f64,
}

/// Runs the service until `shutdown` completes (Ctrl-C or SIGTERM in the CLI). `ready` is
/// told the address actually bound (with port 0, the one the system chose).
pub fn run(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr: SocketAddr = config.addr.parse().map_err(|_| {
        Error::config(format!(
            "--addr {}: expected an IP address and port, such as 127.0.0.1:7878",
            config.addr
        ))
    })?;
    if config.token.is_none() && !addr.ip().is_loopback() {
        return Err(Error::config(format!(
            "--addr {addr}: without a token the service only listens on loopback addresses (127.0.0.1, ::1); give --token-file FILE (or MDN_TOKEN) to listen on {}",
            addr.ip()
        )));
    }
    if !(config.checkpoint_seconds.is_finite() && config.checkpoint_seconds >= 0.0) {
        return Err(Error::config("--checkpoint-seconds must be 0 or more"));
    }
    if config.max_running == 0 {
        return Err(Error::config("--max-running must be at least 1"));
    }
    if let Some(t) = &config.token {
        if t.len() < 16 {
            return Err(Error::config(
                "the token must be at least 16 characters long",
            ));
        }
    }
    let store = store::Store::open(&config.store)?;
    let requeued = store.requeue_running()?;
    for id in &requeued {
        log::info!(
            "job {id}: was running when the service stopped; queued again, resumes from its checkpoint"
        );
    }
    let shared = Arc::new(runner::Shared::new(store));
    for id in &requeued {
        let reason = if runner::checkpoint_path(&shared.store, id).exists() {
            "the service restarted; the job resumes from its checkpoint"
        } else {
            "the service restarted before the job's first checkpoint; it starts again from the beginning"
        };
        shared.event(
            id,
            serde_json::json!({"type": "status", "status": store::QUEUED, "reason": reason}),
        );
    }
    let workers: Vec<_> = (0..config.max_running)
        .map(|i| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("mdn-job-{i}"))
                .spawn(move || runner::worker(s))
                .expect("spawning a worker thread")
        })
        .collect();
    let app = Arc::new(api::App::new(
        shared.clone(),
        config.token.clone(),
        config.max_upload_mb << 20,
        config.device,
        config.checkpoint_seconds,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mdn-http")
        .build()
        .map_err(|e| Error::Backend(format!("starting the HTTP runtime failed: {e}")))?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::config(format!("--addr {addr}: cannot listen there: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Backend(e.to_string()))?;
        ready(bound);
        let stopping = shared.clone();
        axum::serve(listener, api::router(app))
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Running jobs stop after their current epoch; open event streams end.
                stopping.stop();
            })
            .await
            .map_err(|e| Error::Backend(format!("the HTTP server failed: {e}")))
    });
    shared.stop();
    for w in workers {
        let _ = w.join();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}
