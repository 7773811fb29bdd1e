//! Files that appear whole or not at all: a synced temporary file beside the destination and
//! a rename ([`write_atomic`], [`temp_beside`]). Every file mdn writes goes through here, so a
//! crash or a full disk never leaves a half-written model, checkpoint or table.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// A temporary file in `path`'s directory (so it can be renamed over `path`), readable as the
/// umask allows like any new file (tempfile's default would be owner-only).
pub fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".mdn-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` through a synced temporary file in the same directory and a
/// rename, so readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
