//! The Python package (`python/`): builds and installs it into a virtual environment, then
//! runs its pytest suite (python/tests) against this build's `mdn` binary. The environment is
//! `MDN_PYTHON` (a python executable) or `.venv-py/bin/python` in the repository, with
//! maturin, numpy, pytest, scikit-learn and pandas (`.ci/run` makes it). Without one the test
//! prints `SKIPPED ...`, and fails when `MDN_REQUIRE_PYTHON=1` (as on CI).

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn the_python_package_passes_its_test_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("MDN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-py").join("bin").join("python"));
    if !python.exists() {
        if std::env::var("MDN_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!(
                "MDN_REQUIRE_PYTHON=1 but there is no Python environment at {}",
                python.display()
            );
        }
        eprintln!(
            "SKIPPED the Python package's tests: no environment at {} (python3 -m venv .venv-py && .venv-py/bin/pip install maturin numpy pytest scikit-learn pandas)",
            python.display()
        );
        return;
    }
    // The environment's own tools (maturin) first on the PATH, as in an activated venv.
    let bin = python.parent().expect("python's folder").to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let install = Command::new(&python)
        .env("PATH", &path)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-build-isolation",
            "--no-deps",
            "--force-reinstall",
        ])
        .arg(root.join("python"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "building the Python package failed:\n{}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    let run = Command::new(&python)
        .env("PATH", &path)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("python").join("tests"))
        .env("MDN_BIN", env!("CARGO_BIN_EXE_mdn"))
        .current_dir(root)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "pytest failed:\n{out}");
    // The summary line, visible with --nocapture.
    println!("{}", out.lines().last().unwrap_or_default());
}
