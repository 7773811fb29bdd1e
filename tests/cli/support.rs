//! What the CLI tests share: running the `mdn` binary (`mdn`, `ok`), reading its JSON, the
//! shipped example data (`asset`), a small trained model (`trained`), a directory's listing,
//! whether a software adapter is there, and generated CSV data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

pub(crate) fn mdn(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(args)
        .current_dir(dir)
        .env_remove("MDN_DEVICE")
        .output()
        .expect("run mdn")
}

pub(crate) fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let out = mdn(dir, args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "mdn {args:?} failed ({:?}):\n{se}",
        out.status.code()
    );
    (so, se)
}

pub(crate) fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// A small trained model shared by the read-only command tests.
pub(crate) fn trained(dir: &Path) -> PathBuf {
    let model = dir.join("m.json");
    ok(
        dir,
        &[
            "train",
            "--data",
            asset("bishop.csv").to_str().unwrap(),
            "--epochs",
            "3",
            "--out",
            "m.json",
            "--quiet",
        ],
    );
    model
}

pub(crate) fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// Whether a software adapter is there; panics when `MDN_REQUIRE_GPU=1` and it is not.
pub(crate) fn software_adapter(dir: &Path) -> bool {
    let (out, _) = ok(dir, &["devices", "--json"]);
    let found = json(&out)["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["device_type"] == "Cpu");
    if !found {
        assert!(
            std::env::var("MDN_REQUIRE_GPU").as_deref() != Ok("1"),
            "MDN_REQUIRE_GPU=1 but `mdn devices` lists no software adapter: {out}"
        );
        // Past the harness's capture, so the skip shows in the test output.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the software-adapter part of a CLI test: no software adapter"
        );
    }
    found
}

/// `n` rows of `x,y` with y = sin x plus a deterministic spread of half-width `noise` / 2.
pub(crate) fn sine_csv(n: usize, noise: f64) -> String {
    let mut csv = String::from("x,y\n");
    for i in 0..n {
        let x = (i as f64 * 0.61).fract() * 6.0 - 3.0;
        let e = ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * noise;
        csv.push_str(&format!("{x},{}\n", x.sin() + e));
    }
    csv
}

/// `csv` (columns x,y) with a column c between them that is `value` on every row.
pub(crate) fn with_constant_column(csv: &str, value: &str) -> String {
    csv.lines()
        .enumerate()
        .map(|(i, line)| {
            let (x, y) = line.split_once(',').expect("x,y");
            let c = if i == 0 { "c" } else { value };
            format!("{x},{c},{y}\n")
        })
        .collect()
}

/// `mdn args` run in `dir`, sent `signal` (`-INT`, `-TERM`) after 1.5 s, to its end.
#[cfg(unix)]
pub(crate) fn signalled(dir: &Path, args: &[&str], signal: &str) -> std::process::Output {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mdn"))
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}
