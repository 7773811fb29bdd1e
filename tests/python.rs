//! The Python package (`python/`): builds and installs it into a virtual environment, then
//! runs its pytest suite (python/tests) against this build's `mdn` binary. The environment is
//! `MDN_PYTHON` (a python executable) or `.venv-py/bin/python` in the repository, with
//! maturin, numpy, pytest, scikit-learn, pandas and onnxruntime (`.ci/run` makes it). Then
//! the wheel a user without a Rust toolchain installs: `maturin build`, installed into a
//! fresh environment with nothing but numpy (and pytest to run the suite, both from the
//! wheels `.ci/run` downloads into `.venv-py/wheels`), where the suite runs again with the
//! tests that need scikit-learn, pandas or ONNX Runtime skipped. Without the environment the
//! test prints `SKIPPED ...`, and fails when `MDN_REQUIRE_PYTHON=1` (as on CI).

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
            "SKIPPED the Python package's tests: no environment at {} (python3 -m venv .venv-py && .venv-py/bin/pip install maturin numpy pytest scikit-learn pandas onnxruntime)",
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
    // The wheel, built once: installed here, then into a fresh environment below.
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    let build = Command::new(&python)
        .env("PATH", &path)
        .args(["-m", "maturin", "build", "--release", "--quiet", "--out"])
        .arg(&dist)
        .current_dir(root.join("python"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "building the Python package failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let wheel = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("maturin wrote a wheel");
    let install = Command::new(&python)
        .env("PATH", &path)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--force-reinstall",
        ])
        .arg(&wheel)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "installing the Python package failed:\n{}{}",
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
    the_wheel_runs_with_numpy_alone(root, &python, &path, &dist);
}

/// `maturin build`'s wheel in a fresh environment with numpy alone: the install route of a
/// user without a Rust toolchain.
fn the_wheel_runs_with_numpy_alone(
    root: &Path,
    python: &Path,
    path: &std::ffi::OsStr,
    dist: &Path,
) {
    let wheels = python
        .parent()
        .and_then(Path::parent)
        .expect("the environment's folder")
        .join("wheels");
    if !wheels.is_dir() {
        let how = format!(
            "{} -m pip download numpy pytest --only-binary :all: -d {}",
            python.display(),
            wheels.display()
        );
        if std::env::var("MDN_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!("MDN_REQUIRE_PYTHON=1 but there are no wheels to install offline: {how}");
        }
        eprintln!(
            "SKIPPED the wheel in a fresh environment: no wheels at {} ({how})",
            wheels.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = |what: &str, cmd: &mut Command| {
        let out = cmd.env("PATH", path).output().unwrap();
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let venv = tmp.path().join("venv");
    run(
        "python -m venv",
        Command::new(python).arg("-m").arg("venv").arg(&venv),
    );
    let fresh = venv.join("bin").join("python");
    run(
        "pip install of the wheel",
        Command::new(&fresh)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--find-links",
            ])
            .arg(&wheels)
            .arg("--find-links")
            .arg(dist)
            .args(["mdn", "pytest"]),
    );
    let installed = run(
        "pip list",
        Command::new(&fresh).args(["-m", "pip", "list", "--format", "freeze"]),
    );
    for other in ["scikit-learn", "pandas", "onnxruntime"] {
        assert!(
            !installed.contains(other),
            "the fresh environment has {other}:\n{installed}"
        );
    }
    let out = run(
        "pytest in the fresh environment",
        Command::new(&fresh)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(root.join("python").join("tests"))
            .env("MDN_BIN", env!("CARGO_BIN_EXE_mdn"))
            .env_remove("MDN_REQUIRE_PYTHON")
            .current_dir(tmp.path()),
    );
    let summary = out.lines().last().unwrap_or_default().to_string();
    println!("with numpy alone: {summary}");
    assert!(
        summary.contains(" passed") && !summary.contains("failed"),
        "{summary}"
    );
}
