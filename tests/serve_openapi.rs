//! The OpenAPI document of `mdn serve` (`/v1/openapi.json`): valid OpenAPI 3.1 (checked by
//! `openapi-spec-validator`), every operation it lists is a route of the server, and a real
//! API fuzzer, `schemathesis` (PyPI), run against the live server with a trained and
//! registered model finds no 5xx and no answer that differs from the document (status
//! codes, content types, bodies, headers).

mod common;

use std::process::Command;

use common::serve::{Server, asset};
use serde_json::{Value, json};

const TOKEN: &str = "openapi-test-token-0123456789";

#[test]
fn the_document_is_valid_openapi_and_names_only_real_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("store"), &[], &[("MDN_TOKEN", TOKEN)]);
    // The document needs no key.
    let (st, text) = s.with_key("").call("GET", "/v1/openapi.json", None);
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{}", paths.len());
    // Every operation it lists is a route here: none answers the fallback's 404 or 405.
    for (path, ops) in paths {
        // The stream of every job's events never ends by itself (the fuzzer below reads it).
        if path == "/v1/events" {
            continue;
        }
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "x_0")
                .replace("{model}", "m_0")
                .replace("{name}", "n")
                .replace("{version}", "1")
                .replace("{alias}", "a")
                .replace("{panel}", "all");
            let (st, body) = s.call(&method.to_uppercase(), &concrete, Some(b"{}"));
            assert!(
                st != 405 && !body.contains("no such endpoint"),
                "{method} {path}: {st} {body}"
            );
        }
    }
    let Some(python) = common::python::with("openapi_spec_validator") else {
        return;
    };
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(python)
        .arg(common::python::script("validate_openapi.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_that_differs_from_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("store"), &[], &[("MDN_TOKEN", TOKEN)]);
    // A trained, registered model (`bishop`, alias `production`) for the model routes.
    let ds = s.dataset(&asset("bishop.csv"), "bishop.csv");
    s.trained(json!({"dataset": ds, "options": {"epochs": 2}, "register": "bishop"}));
    let (st, _) = s.json(
        "PUT",
        "/v1/registry/bishop/aliases/production",
        Some(json!({"version": 1})),
    );
    assert_eq!(st, 200);

    let Some(python) = common::python::with("schemathesis") else {
        return;
    };
    let schemathesis = python.with_file_name("schemathesis");
    // The model routes get the trained model; the rest get what the fuzzer makes up.
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[parameters]\n\"path.model\" = \"bishop\"\n\"path.name\" = \"bishop\"\n",
    )
    .unwrap();
    let out = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{}/v1/openapi.json", s.base),
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "2",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It did test: every operation, hundreds of cases.
    let cases = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_suffix(" passed")
                .and_then(|l| l.split(" generated, ").nth(1))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no count of cases in the report: {report}"));
    assert!(cases > 500, "{cases} cases: {report}");
    // And the server's own count agrees: no 5xx at all.
    let (_, metrics) = s.call("GET", "/metrics", None);
    let server_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mdn_http_requests_total") && l.contains("status=\"5"))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert_eq!(s.call("GET", "/healthz", None).0, 200);
}
