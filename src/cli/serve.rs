//! `mdn serve`: reads the token, starts the service ([`mdn::serve`]) and stops it on Ctrl-C
//! or SIGTERM (running jobs checkpoint and go back to the queue).

use mdn::serve::Config;
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
    let config = Config {
        addr: a.addr,
        store: a.store,
        device: a.device,
        max_running: a.max_running,
        max_upload_mb: a.max_upload_mb,
        token,
        checkpoint_seconds: a.checkpoint_seconds,
    };
    let summary = format!(
        "store {}, jobs on --device {} ({} at a time), {}",
        config.store.display(),
        config.device,
        config.max_running,
        if config.token.is_some() {
            "requests need the bearer token"
        } else {
            "no token: loopback only"
        }
    );
    let shutdown = async {
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
        message(
            "stopping: running jobs stop after their epoch and resume when the service starts again",
        );
    };
    mdn::serve::run(
        config,
        |addr| {
            message(&format!(
                "mdn serve: listening on http://{addr} ({summary})"
            ))
        },
        shutdown,
    )
}
