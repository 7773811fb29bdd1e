//! Who is calling, and what they may do. Every `/v1` request carries an API key (or the
//! `--token-file` token, a server admin key kept outside the store); the key belongs to one
//! workspace and has a scope ([`Scope`]: read, write or admin), or is a server admin key
//! that sees every workspace. A store with no keys at all, on a server with no token,
//! answers everyone as a server admin (loopback addresses only: [`super::run`] refuses
//! others).
//!
//! A key is `mdn_key_<16 hex>_<64 hex>`: its id (`key_<16 hex>`, which finds its row) and a
//! 256-bit random secret, of which the store keeps only the SHA-256. A fast hash is right
//! here: the secret is random, not a password to guess. Keys are looked up on every request,
//! so a revoked key is refused at once by every process serving the store.

use sha2::{Digest, Sha256};

use super::store::{self, DEFAULT_WORKSPACE, KeyRow, Scope, Store, Ws};
use crate::error::Result;

/// The caller of a request, as [`authenticate`] found it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
    /// The workspace the key belongs to; None for a server admin.
    pub key_workspace: Option<String>,
    /// The workspace the request acts in: the key's, or the one a server admin named in
    /// the `Mdn-Workspace` header (None: every workspace when reading, [`DEFAULT_WORKSPACE`]
    /// when making something).
    pub workspace: Option<String>,
    /// Who, for events and logs: `name (key_...)`, `--token-file`, or None (no keys).
    pub by: Option<String>,
}

impl Caller {
    /// A server admin: the `--token-file` token, or anyone when the service has no keys.
    pub fn server_admin(by: Option<String>) -> Caller {
        Caller {
            scope: Scope::Admin,
            key_workspace: None,
            workspace: None,
            by,
        }
    }

    /// Whether the key sees every workspace.
    pub fn is_server_admin(&self) -> bool {
        self.scope == Scope::Admin && self.key_workspace.is_none()
    }

    /// The workspaces the request sees.
    pub fn ws(&self) -> Ws<'_> {
        self.workspace.as_deref()
    }

    /// The workspace what the request makes goes to.
    pub fn home(&self) -> &str {
        self.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE)
    }

    pub fn by(&self) -> Option<&str> {
        self.by.as_deref()
    }
}

/// A key as made: its row, and the whole key, which is shown once and never again.
pub struct NewKey {
    pub row: KeyRow,
    pub key: String,
}

/// SHA-256 of a key's secret, in hex.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a key (not yet stored): 256 random bits from the system's generator.
pub fn new_key(workspace: Option<&str>, name: &str, scope: Scope) -> NewKey {
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex(&secret);
    let id = store::new_id("key");
    NewKey {
        key: format!("mdn_{id}_{secret}"),
        row: KeyRow {
            id,
            workspace: workspace.map(str::to_string),
            name: name.to_string(),
            scope,
            hash: hash_secret(&secret),
            created: store::now(),
            last_used: None,
            revoked: None,
        },
    }
}

/// The (id, secret) of a key's text, if it has a key's shape.
pub fn parse_key(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("mdn_")?;
    let (id, secret) = rest.rsplit_once('_')?;
    (store::valid_id(id) && id.starts_with("key_") && secret.len() == 64).then_some((id, secret))
}

/// Compares in time independent of where the strings differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Why a request was refused before it reached a handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No usable key (401): what was wrong with it.
    Unauthenticated(&'static str),
    /// The key may not do this (403).
    Forbidden(String),
}

/// A key last used less than this long ago is not written again (a write per request
/// would cost more than the request).
const TOUCH_SECONDS: f64 = 60.0;

/// Finds who sent `authorization` (the header's value, if any): the server's `token`, a
/// stored key, or, with neither a token nor any key, anyone.
pub fn authenticate(
    store: &dyn Store,
    token: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<std::result::Result<Caller, Refusal>> {
    // With no token and no key ever made, nothing is needed (and whatever is sent is
    // ignored, as before keys existed).
    let open = || -> Result<bool> { Ok(token.is_none() && !store.any_keys()?) };
    let Some(header) = authorization else {
        if open()? {
            return Ok(Ok(Caller::server_admin(None)));
        }
        return Ok(Err(Refusal::Unauthenticated(
            "this server needs `Authorization: Bearer <key>`; the request has none",
        )));
    };
    let Some(given) = std::str::from_utf8(header)
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        if open()? {
            return Ok(Ok(Caller::server_admin(None)));
        }
        return Ok(Err(Refusal::Unauthenticated(
            "the Authorization header is not `Bearer <key>`",
        )));
    };
    if let Some(t) = token
        && same_secret(given.as_bytes(), t.as_bytes())
    {
        return Ok(Ok(Caller::server_admin(Some("--token-file".into()))));
    }
    let row = match parse_key(given) {
        Some((id, secret)) => store
            .key(id)?
            .filter(|row| same_secret(hash_secret(secret).as_bytes(), row.hash.as_bytes())),
        None => None,
    };
    let Some(row) = row else {
        if open()? {
            return Ok(Ok(Caller::server_admin(None)));
        }
        return Ok(Err(Refusal::Unauthenticated(
            "the bearer key is not one of this server's",
        )));
    };
    if row.revoked.is_some() {
        return Ok(Err(Refusal::Unauthenticated("this key was revoked")));
    }
    let now = store::now();
    if row.last_used.is_none_or(|t| now - t > TOUCH_SECONDS)
        && let Err(e) = store.touch_key(&row.id, now)
    {
        log::warn!("recording that key {} was used failed: {e}", row.id);
    }
    Ok(Ok(Caller {
        scope: row.scope,
        workspace: row.workspace.clone(),
        key_workspace: row.workspace,
        by: Some(format!("{} ({})", row.name, row.id)),
    }))
}

/// Sets the workspace a request acts in from its `Mdn-Workspace` header: a server admin may
/// name any existing workspace; a workspace key only its own.
pub fn choose_workspace(
    store: &dyn Store,
    caller: &mut Caller,
    header: Option<&str>,
) -> Result<std::result::Result<(), Refusal>> {
    let Some(name) = header else {
        return Ok(Ok(()));
    };
    match &caller.key_workspace {
        Some(own) if own == name => Ok(Ok(())),
        Some(own) => Ok(Err(Refusal::Forbidden(format!(
            "this key belongs to workspace {own:?}; it cannot act in another (leave out Mdn-Workspace)"
        )))),
        None => {
            if !store::valid_workspace(name) || store.workspaces(Some(name))?.is_empty() {
                return Ok(Err(Refusal::Forbidden(format!(
                    "Mdn-Workspace: there is no workspace {name:?} (a server admin makes one with PUT /v1/workspaces/NAME or `mdn serve keys add --workspace NAME`)"
                ))));
            }
            caller.workspace = Some(name.to_string());
            Ok(Ok(()))
        }
    }
}

/// The scope a request needs: reading (GET, and the model's predict, sample and eval) needs
/// `read`; keys and workspaces need `admin`; everything else `write`.
pub fn needed(method: &axum::http::Method, route: &str) -> Scope {
    let route = route.strip_prefix("/v1").unwrap_or(route);
    if route.starts_with("/keys") || route.starts_with("/workspaces") {
        return Scope::Admin;
    }
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return Scope::Read;
    }
    if route.starts_with("/models/")
        && ["/predict", "/sample", "/eval"]
            .iter()
            .any(|s| route.ends_with(s))
    {
        return Scope::Read;
    }
    // The Open Inference Protocol's infer.
    if route.starts_with("/v2/models/") && route.ends_with("/infer") {
        return Scope::Read;
    }
    Scope::Write
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_parses_back_into_its_id_and_secret_and_only_its_hash_is_kept() {
        let k = new_key(Some("team"), "ci", Scope::Write);
        let (id, secret) = parse_key(&k.key).expect("a key's shape");
        assert_eq!(id, k.row.id);
        assert_eq!(hash_secret(secret), k.row.hash);
        assert!(!k.row.hash.contains(secret));
        assert_eq!(k.row.hash.len(), 64);
        for bad in [
            "",
            "mdn_",
            "mdn_key_1_abc",
            &k.key[1..],
            &format!("{}0", k.key),
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
        // Known SHA-256 (of "abc").
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn each_route_needs_the_least_scope_that_covers_it() {
        use axum::http::Method;
        assert_eq!(needed(&Method::GET, "/v1/jobs"), Scope::Read);
        assert_eq!(
            needed(&Method::POST, "/v1/models/{id}/predict"),
            Scope::Read
        );
        assert_eq!(needed(&Method::POST, "/v1/jobs"), Scope::Write);
        assert_eq!(
            needed(&Method::POST, "/v2/models/{name}/versions/{version}/infer"),
            Scope::Read
        );
        assert_eq!(needed(&Method::DELETE, "/v1/datasets/{id}"), Scope::Write);
        assert_eq!(needed(&Method::DELETE, "/v1/jobs/{id}"), Scope::Write);
        assert_eq!(needed(&Method::DELETE, "/v1/models/{id}"), Scope::Write);
        assert_eq!(
            needed(&Method::DELETE, "/v1/registry/{name}/versions/{version}"),
            Scope::Write
        );
        assert_eq!(needed(&Method::POST, "/v1/jobs/{id}/cancel"), Scope::Write);
        assert_eq!(needed(&Method::GET, "/v1/keys"), Scope::Admin);
        assert_eq!(needed(&Method::PUT, "/v1/workspaces/{name}"), Scope::Admin);
    }
}
