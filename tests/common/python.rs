//! Python clients nobody here wrote (`tritonclient[http]`, `schemathesis`), run from the
//! `.venv-py` environment `.ci/run` installs them into.
//!
//! Without one: `None` and a `SKIPPED` note, or a failure when `MDN_REQUIRE_PYTHON=1` (as
//! on CI).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The environment's Python, if it can import `module` (a `SKIPPED` note otherwise, or a
/// panic under `MDN_REQUIRE_PYTHON=1`).
pub fn with(module: &str) -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-py/bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("MDN_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "MDN_REQUIRE_PYTHON=1 but {} cannot import {module} (bash .ci/run installs it)",
        python.display()
    );
    eprintln!("SKIPPED: no Python with {module} in .venv-py (bash .ci/run installs it)");
    None
}

/// A script of `tests/clients/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}
