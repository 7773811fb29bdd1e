//! `mdn serve`: reads the token, starts the service ([`mdn::serve`]) and stops it on Ctrl-C
//! or SIGTERM (running jobs checkpoint and go back to the queue).

use mdn::serve::runner::Leasing;
use mdn::serve::{Config, Role};
use mdn::{Error, Result};

use super::args::ServeArgs;
use super::progress::message;

pub fn serve(a: ServeArgs) -> Result<()> {
    let token = match (&a.token_file, std::env::var("MDN_TOKEN")) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let t = text.trim().to_string();
            if t.is_empty() {
                return Err(Error::config(format!(
                    "--token-file {}: the file is empty",
                    path.display()
                )));
            }
            Some(t)
        }
        (None, Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    let role = match (a.worker, a.api) {
        (true, _) => Role::Worker,
        (false, true) => Role::Api,
        (false, false) => Role::Both,
    };
    let config = Config {
        addr: a.addr,
        store: a.store,
        files: a.files,
        cache: a.cache,
        role,
        exit_when_idle: a.exit_when_idle,
        device: a.device,
        max_running: a.max_running,
        max_upload_mb: a.max_upload_mb,
        max_request_rows: a.max_request_rows,
        model_cache_mb: a.model_cache_mb,
        max_model_params: a.max_model_params,
        tls: a.tls_cert.zip(a.tls_key),
        token,
        checkpoint_seconds: a.checkpoint_seconds,
        leasing: Leasing {
            seconds: a.lease_seconds,
            max_attempts: a.max_attempts,
        },
    };
    let store = redacted(&config.store);
    let jobs = match role {
        Role::Api => "no workers (--api)".to_string(),
        _ => format!(
            "jobs on --device {} ({} at a time)",
            config.device, config.max_running
        ),
    };
    let summary = format!(
        "store {store}, {jobs}, {}",
        if config.token.is_some() {
            "requests need the bearer token or a key"
        } else {
            "requests need a key once the store has any (`mdn serve keys add`)"
        }
    );
    let api_only = role == Role::Api;
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heard = signalled.clone();
    let shutdown = async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        heard.store(true, std::sync::atomic::Ordering::Relaxed);
        message(if api_only {
            "stopping"
        } else {
            "stopping: running jobs stop after their epoch and resume when the service starts again"
        });
    };
    let exit_when_idle = a.exit_when_idle;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    mdn::serve::run(
        config,
        |addr| match addr {
            Some(addr) => message(&format!(
                "mdn serve: listening on {scheme}://{addr} ({summary})"
            )),
            None => message(&format!(
                "mdn serve: working (store {store}, {jobs}{})",
                if a.exit_when_idle {
                    ", until the queue is empty"
                } else {
                    ""
                }
            )),
        },
        shutdown,
    )?;
    if exit_when_idle && !signalled.load(std::sync::atomic::Ordering::Relaxed) {
        message(
            "mdn serve: the queue is empty and this worker's jobs are done; exiting (--exit-when-idle)",
        );
    }
    Ok(())
}

/// A store URL without its password, for messages.
fn redacted(spec: &str) -> String {
    match (spec.find("://"), spec.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &spec[scheme + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &spec[..scheme + 3], &spec[at..]),
                None => spec.to_string(),
            }
        }
        _ => spec.to_string(),
    }
}
