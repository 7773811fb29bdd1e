//! `mdn serve --tls-cert --tls-key`: HTTPS with a self-signed certificate (made by the
//! `openssl` command), reached by a client that trusts it (ureq, and `mdn jobs --ca-file`),
//! refused by one that does not, and clear errors for certificate and key files that are
//! wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::serve::{MDN, Server, asset};

/// A self-signed certificate for localhost and 127.0.0.1, and its key: (cert, key).
fn self_signed(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    let Some(openssl) = common::which("openssl") else {
        assert!(
            std::env::var("MDN_REQUIRE_OPENSSL").as_deref() != Ok("1"),
            "MDN_REQUIRE_OPENSSL=1 but there is no openssl command to make a test certificate"
        );
        eprintln!("SKIPPED: no openssl command to make a test certificate");
        return None;
    };
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let st = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        // A server's own certificate, not a CA's (rustls refuses a CA certificate as the
        // server's, which `openssl req -x509` makes by default).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    Some((cert, key))
}

fn trusting(cert: &Path) -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(cert).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(certs)))
                .build(),
        )
        .build()
        .into()
}

#[test]
fn the_service_speaks_https_to_clients_that_trust_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path(), "server") else {
        return;
    };
    let store = dir.path().join("store");
    let s = Server::start(
        &store,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let agent = trusting(&cert);
    let mut r = agent.get(format!("{}/healthz", s.base)).call().unwrap();
    assert_eq!(r.body_mut().read_to_string().unwrap(), "ok\n");
    // By host name too (the certificate names localhost).
    let local = s.base.replace("127.0.0.1", "localhost");
    let r = agent.get(format!("{local}/v1/jobs")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = s.base.replace("https://", "http://");
    assert!(
        Server::agent()
            .get(format!("{plain}/healthz"))
            .call()
            .is_err()
    );

    // The command-line client: with --ca-file it trusts the certificate, without it does not.
    let jobs = |extra: &[&str]| {
        Command::new(MDN)
            .args(["jobs", "--server", &local])
            .args(extra)
            .env_remove("MDN_CA_FILE")
            .env_remove("MDN_TOKEN")
            .output()
            .unwrap()
    };
    let ok = jobs(&["--ca-file", cert.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = jobs(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("cannot reach") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let (other, _) = self_signed(dir.path(), "other").unwrap();
    let wrong = jobs(&["--ca-file", other.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(1));
    let bad = jobs(&["--ca-file", asset("bishop.csv").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no certificate"));

    // A key travels inside TLS: submit a job with one and follow it to the end.
    let k = common::serve::add_key(&store, &["--workspace", "t", "--scope", "write"]);
    let sub = Command::new(MDN)
        .args([
            "submit",
            "--server",
            &local,
            "--ca-file",
            cert.to_str().unwrap(),
            "--epochs",
            "1",
            "--wait",
            "--quiet",
            "--out",
        ])
        .arg(dir.path().join("m.json"))
        .env("MDN_TOKEN", &k)
        .output()
        .unwrap();
    assert!(
        sub.status.success(),
        "{}",
        String::from_utf8_lossy(&sub.stderr)
    );
    assert!(dir.path().join("m.json").exists());
}

#[test]
fn certificate_and_key_files_that_are_wrong_are_told_apart_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path(), "a") else {
        return;
    };
    let (_, other_key) = self_signed(dir.path(), "b").unwrap();
    let store = dir.path().join("store");
    let serve = |c: &Path, k: &Path| {
        let out = Command::new(MDN)
            .args(["serve", "--addr", "127.0.0.1:0", "--store"])
            .arg(&store)
            .arg("--tls-cert")
            .arg(c)
            .arg("--tls-key")
            .arg(k)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (c, k, says) in [
        (key.as_path(), key.as_path(), "--tls-cert"),
        (cert.as_path(), cert.as_path(), "--tls-key"),
        (
            Path::new("missing.pem"),
            key.as_path(),
            "--tls-cert missing.pem",
        ),
        (
            cert.as_path(),
            other_key.as_path(),
            "is the key the certificate's?",
        ),
    ] {
        let (code, err) = serve(c, k);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(says), "{says}: {err}");
    }
    // Nothing was made: the files are checked before the store is opened.
    assert!(!store.exists());
    let out = Command::new(MDN)
        .args(["serve", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}
