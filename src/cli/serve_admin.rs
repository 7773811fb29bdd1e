//! `mdn serve keys add|list|revoke` and `mdn serve workspaces`: keys and quotas, changed in
//! the store directly (beside any process serving it), for the operator who holds the
//! store. The same changes go through the API with an admin key (`/v1/keys`,
//! `/v1/workspaces`).

use mdn::serve::auth;
use mdn::serve::store::{self, Scope, Store};
use mdn::{Error, Result};

use super::args::{KeysCommand, ServeAdmin, WorkspacesArgs};
use super::output::print_json;
use super::progress::message;

pub fn run(admin: ServeAdmin) -> Result<()> {
    match admin {
        ServeAdmin::Keys(KeysCommand::Add(a)) => {
            let workspace = match &a.workspace {
                Some(w) => Some(checked_workspace(w)?),
                None => None,
            };
            let scope: Scope = match &a.scope {
                Some(s) => s
                    .parse()
                    .map_err(|e: String| Error::config(format!("--scope: {e}")))?,
                None => Scope::Admin,
            };
            let name = a.name.trim();
            if name.is_empty() || name.len() > 100 || name.chars().any(|c| c.is_control()) {
                return Err(Error::config(
                    "--name: 1 to 100 characters, no control characters",
                ));
            }
            let store = store::open_beside(&a.store.store)?;
            let made = auth::new_key(workspace.as_deref(), name, scope);
            store.insert_key(&made.row)?;
            message(&format!(
                "key {} ({name}): {}; keep it now, it is not shown again",
                made.row.id,
                match &workspace {
                    Some(w) => format!("{} in workspace {w}", scope.as_str()),
                    None => "server admin, every workspace".into(),
                }
            ));
            println!("{}", made.key);
            Ok(())
        }
        ServeAdmin::Keys(KeysCommand::List(a)) => {
            let store = store::open_beside(&a.store.store)?;
            let keys = store.keys(a.workspace.as_deref())?;
            if a.json {
                return print_json(&serde_json::json!({"keys": keys}));
            }
            println!(
                "{:<21} {:<16} {:<6} {:<20} {:<21} {:<21} revoked",
                "id", "workspace", "scope", "name", "created", "last used"
            );
            for k in keys {
                println!(
                    "{:<21} {:<16} {:<6} {:<20} {:<21} {:<21} {}",
                    k.id,
                    k.workspace.as_deref().unwrap_or("(every)"),
                    k.scope.as_str(),
                    k.name,
                    when(Some(k.created)),
                    when(k.last_used),
                    when(k.revoked)
                );
            }
            Ok(())
        }
        ServeAdmin::Keys(KeysCommand::Revoke(a)) => {
            let id = auth::parse_key(&a.id).map_or(a.id.as_str(), |(id, _)| id);
            if !store::valid_id(id) || !id.starts_with("key_") {
                return Err(Error::config(format!(
                    "{:?} is not a key id (key_ and 16 hex digits, as `mdn serve keys list` shows)",
                    a.id
                )));
            }
            let store = store::open_beside(&a.store.store)?;
            if !store.revoke_key(None, id)? {
                return Err(Error::config(match store.key(id)? {
                    Some(_) => format!("key {id} was already revoked"),
                    None => format!("no key {id} in this store"),
                }));
            }
            message(&format!("key {id} revoked"));
            Ok(())
        }
        ServeAdmin::Workspaces(a) => workspaces(a),
    }
}

fn checked_workspace(name: &str) -> Result<String> {
    if store::valid_workspace(name) {
        Ok(name.to_string())
    } else {
        Err(Error::config(format!(
            "--workspace {name:?}: 1 to 40 lowercase letters, digits, - and _"
        )))
    }
}

/// `--max-jobs` or `--max-mb`: a number, or `none` (no limit).
fn limit(flag: &str, text: &str, unit: u64) -> Result<Option<u64>> {
    if text == "none" {
        return Ok(None);
    }
    text.parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(unit))
        .map(Some)
        .ok_or_else(|| {
            Error::config(format!(
                "{flag}: expected a whole number (0 or more) or none, got {text:?}"
            ))
        })
}

fn workspaces(a: WorkspacesArgs) -> Result<()> {
    let store = store::open_beside(&a.store.store)?;
    if let Some(name) = &a.name {
        let name = checked_workspace(name)?;
        let now = store.workspaces(Some(&name))?.into_iter().next();
        if a.max_jobs.is_none() && a.max_mb.is_none() && now.is_none() {
            return Err(Error::config(format!(
                "no workspace {name:?} in this store"
            )));
        }
        if a.max_jobs.is_some() || a.max_mb.is_some() {
            let mut w = now.map(|u| u.workspace).unwrap_or(store::Workspace {
                name: name.clone(),
                max_jobs: None,
                max_bytes: None,
                created: store::now(),
            });
            if let Some(j) = &a.max_jobs {
                w.max_jobs = limit("--max-jobs", j, 1)?;
            }
            if let Some(m) = &a.max_mb {
                w.max_bytes = limit("--max-mb", m, 1 << 20)?;
            }
            store.put_workspace(&w)?;
        }
    }
    show(&*store, a.name.as_deref(), a.json)
}

fn show(store: &dyn Store, name: Option<&str>, json: bool) -> Result<()> {
    let all = store.workspaces(name)?;
    if json {
        return print_json(&serde_json::json!({"workspaces": all}));
    }
    println!(
        "{:<20} {:>5} {:>9} {:>12} {:>12} keys",
        "workspace", "jobs", "max jobs", "stored MB", "max MB"
    );
    for u in all {
        let mb = |b: u64| format!("{:.1}", b as f64 / (1u64 << 20) as f64);
        println!(
            "{:<20} {:>5} {:>9} {:>12} {:>12} {}",
            u.workspace.name,
            u.jobs,
            u.workspace
                .max_jobs
                .map_or("-".to_string(), |v| v.to_string()),
            mb(u.bytes),
            u.workspace.max_bytes.map_or("-".to_string(), mb),
            u.keys
        );
    }
    Ok(())
}

/// A time as `2026-12-06T09:41:07Z`, or `-`.
fn when(t: Option<f64>) -> String {
    match t {
        Some(t) if t >= 0.0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t),
        )
        .to_string(),
        _ => "-".into(),
    }
}
