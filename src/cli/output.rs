//! Results on stdout or in files: JSON, tables, atomic `--out` files.

use std::io::Write;
use std::path::Path;

use mdn::atomic::write_atomic;
use mdn::{Error, Result};

/// Pretty JSON on stdout.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("JSON of plain values") + "\n";
    write_output(None, s.as_bytes())
}

/// Writes to a file (atomically) or to stdout.
pub fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) => write_atomic(p, bytes),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io(Path::new("<stdout>"), e))
        }
    }
}

/// "1.23M rows/s", "45.6k rows/s", "789 rows/s".
pub fn rate(rows_per_sec: f64) -> String {
    if rows_per_sec >= 1e6 {
        format!("{:.2}M rows/s", rows_per_sec / 1e6)
    } else if rows_per_sec >= 1e3 {
        format!("{:.1}k rows/s", rows_per_sec / 1e3)
    } else {
        format!("{rows_per_sec:.0} rows/s")
    }
}
