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
pub mod models;
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
    /// Models an API process keeps loaded, in MiB of their files.
    pub model_cache_mb: u64,
    /// Most parameters of a job's model (all ensemble members together).
    pub max_model_params: u64,
    /// Bearer token (None: no authentication, loopback addresses only).
    pub token: Option<String>,
    /// HTTPS: the certificate chain and private key, PEM files (None: plain HTTP).
    pub tls: Option<(PathBuf, PathBuf)>,
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

/// The TLS configuration of `--tls-cert` (a PEM certificate chain, the server's first) and
/// `--tls-key` (its PEM private key), with rustls' ring provider; every problem names its
/// file.
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let io = |flag: &str, path: &std::path::Path, e: rustls_pki_types::pem::Error| match e {
        rustls_pki_types::pem::Error::Io(e) => {
            Error::config(format!("{flag} {}: {e}", path.display()))
        }
        other => Error::config(format!(
            "{flag} {}: not a PEM file ({other})",
            path.display()
        )),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| io("--tls-cert", cert, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| io("--tls-cert", cert, e))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "--tls-cert {}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => Error::config(format!(
            "--tls-key {}: no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----)",
            key.display()
        )),
        other => io("--tls-key", key, other),
    })?;
    // ring, already in the tree (no C toolchain to build, unlike aws-lc-rs); rustls marks it
    // deprecated for lacking post-quantum key exchange, which classical TLS 1.3 does without.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            Error::config(format!(
                "--tls-cert {} and --tls-key {}: {e} (is the key the certificate's?)",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_config(cert, key)?),
        None => None,
    };
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
            app.models = models::ModelCache::new(config.model_cache_mb << 20);
            app.max_model_params = config.max_model_params as u128;
            app.only_local_workers = single && config.role != Role::Api;
            let app = Arc::new(app);
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    Error::config(format!("--addr {addr}: cannot listen there: {e}"))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| Error::Backend(e.to_string()))?;
                if tls.is_none() && !bound.ip().is_loopback() {
                    log::warn!(
                        "no TLS on {bound}: keys cross the network in clear text; give --tls-cert and --tls-key, or put a TLS proxy in front"
                    );
                }
                ready(Some(bound));
                let stopping = shared.clone();
                let router = api::router(app);
                let failed = |e: std::io::Error| Error::Backend(format!("the HTTP server failed: {e}"));
                match tls {
                    None => axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            shutdown.await;
                            // Running jobs stop after their current epoch; open event streams end.
                            stopping.stop();
                        })
                        .await
                        .map_err(failed),
                    Some(tls) => {
                        let handle = axum_server::Handle::new();
                        let stopper = handle.clone();
                        tokio::spawn(async move {
                            shutdown.await;
                            stopping.stop();
                            stopper.graceful_shutdown(Some(Duration::from_secs(5)));
                        });
                        let listener = listener.into_std().map_err(failed)?;
                        axum_server::tls_rustls::from_tcp_rustls(
                            listener,
                            axum_server::tls_rustls::RustlsConfig::from_config(tls),
                        )
                        .map_err(failed)?
                        .handle(handle)
                        .serve(router.into_make_service())
                        .await
                        .map_err(failed)
                    }
                }
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
