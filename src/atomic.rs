//! Files that appear whole or not at all: a synced temporary file beside the destination and
//! a rename ([`write_atomic`], [`temp_beside`]). Every file mdn writes goes through here, so a
//! crash or a full disk never leaves a half-written model, checkpoint or table.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The start of every temporary file's name; the writer's process id follows, then `-`.
const TEMP_PREFIX: &str = ".mdn-";

/// This machine's name (Linux: the kernel's), which [`TempDirectory::new`] writes in its
/// [`LOCK_FILE`]: a temporary directory shared by several machines may have locks each
/// machine sees only its own of.
pub fn this_host() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|n| !n.is_empty())
}

/// Removes, once per process, the directories `mdn-*` in `root` (the system's temporary
/// directory) whose [`LOCK_FILE`] was written on this machine and no process holds: left by
/// a run killed outright. A directory without one (made by an mdn before 2026-12, where the
/// file system could not lock, or not by mdn), or another machine's, is left alone. Linux
/// only; elsewhere nothing is removed.
fn sweep_abandoned(root: &Path) {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Some(host) = this_host() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let mdn = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("mdn-"));
            if !mdn || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Read and write: NFS emulates an exclusive lock with one that needs writing.
            let at = entry.path().join(LOCK_FILE);
            let Ok(lock) = std::fs::OpenOptions::new().read(true).write(true).open(&at) else {
                continue;
            };
            let ours = std::fs::read_to_string(&at)
                .is_ok_and(|text| text.lines().next() == Some(host.as_str()));
            if ours && lock.try_lock().is_ok() {
                log::info!(
                    "removing {}, left by a run that was killed",
                    entry.path().display()
                );
                drop(lock);
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

/// Removes, once per directory and process, the temporary files in `dir` that a process no
/// longer running left (`.mdn-<pid>-*.tmp`: a run killed by SIGKILL or a power cut while it
/// wrote a checkpoint, a model or a directory of models). Linux only (whether a process runs is read from /proc);
/// elsewhere nothing is removed.
pub fn sweep_stale(dir: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    if !cfg!(target_os = "linux") || !Path::new("/proc/self").exists() {
        return;
    }
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
        if swept.iter().any(|d| d == dir) {
            return;
        }
        swept.push(dir.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .filter(|_| name.ends_with(".tmp"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // A file, or a directory of models being written (`TempDirectory::beside`), only
            // a week after its last change: a run on another machine sharing the directory
            // (whose process ids this one cannot see) may be writing it.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let week = std::time::Duration::from_secs(7 * 24 * 3600);
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > week));
                if old {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// A temporary file in `path`'s directory (so it can be renamed over `path`), readable as the
/// umask allows like any new file (tempfile's default would be owner-only). Named
/// `.mdn-<pid>-*.tmp`, so that one a killed process leaves is recognised and removed by the
/// next run writing there ([`sweep_stale`]).
pub fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sweep_stale(dir);
    let mut builder = tempfile::Builder::new();
    let prefix = format!("{TEMP_PREFIX}{}-", std::process::id());
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| Error::io(path, e))
}

/// Where a file written to `path` goes: the file a symbolic link points to (so the link
/// stays a link and its target is updated), else `path` itself. An error when that exists
/// and is not a regular file or a directory: renaming a new file over a device, a FIFO or a
/// socket would replace it (`--out /dev/null` as root replaced the device), and merely
/// opening a FIFO to check it blocks until a reader comes.
pub fn destination(path: &Path) -> Result<PathBuf> {
    let resolved = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    };
    if let Ok(m) = std::fs::metadata(&resolved)
        && !m.is_file()
        && !m.is_dir()
    {
        let kind = special_kind(&m.file_type());
        return Err(Error::config(format!(
            "{}: {kind}, not a regular file; mdn writes a new file and renames it into \
                 place, which would replace it",
            path.display()
        )));
    }
    Ok(resolved)
}

fn special_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = t;
    "a special file"
}

/// Writes `bytes` to `path` through a synced temporary file in the same directory and a
/// rename, so readers see either the old file or the whole new one. Through a symbolic
/// link, the file it points to is replaced ([`destination`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = &destination(path)?;
    let mut tmp = temp_beside(path)?;
    // Known while it is written, so that a process exiting at once (a second Ctrl-C while a
    // checkpoint is written) removes it too.
    let tmp_path = tmp.path().to_path_buf();
    WRITING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(tmp_path.clone());
    let result = (|| {
        tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    })();
    WRITING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != tmp_path);
    result
}

/// The temporary files [`write_atomic`] is writing now.
static WRITING: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Temporary directories that exist only while a run needs them, removed when dropped — also
/// by [`remove_temporary_files`] when the process is about to exit without unwinding (a
/// second Ctrl-C).
static TEMPORARY: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// A temporary directory, removed when dropped, and by [`remove_temporary_files`] when the
/// process exits at once (a second Ctrl-C).
pub struct TempDirectory {
    dir: std::path::PathBuf,
    /// For a directory under the system's temporary directory, its [`LOCK_FILE`], locked
    /// while this process lives.
    lock: Option<std::fs::File>,
}

/// The file in each of mdn's directories under the system's temporary directory
/// (`mdn-XXXXXX`) that the process using it holds locked (an advisory `flock`, which the
/// kernel releases when the process ends, however it ends). A directory whose lock anyone can
/// take was left by a process killed outright (SIGKILL, out of memory, a power cut) and is
/// removed by the next [`TempDirectory::new`].
pub const LOCK_FILE: &str = ".lock";

/// Locks a new temporary directory `dir` ([`LOCK_FILE`], this machine's name in it): under
/// another name, then renamed, so that a sweep never sees the lock file unlocked. Where the
/// file system cannot lock (Lustre without `flock`, NFS without its lock service), the
/// directory has no lock file and no sweep removes it: the lock is a convenience, not a
/// condition of the run.
fn lock_new(dir: &Path) -> Option<std::fs::File> {
    let (new, at) = (dir.join(".lock.new"), dir.join(LOCK_FILE));
    let locked = (|| -> std::io::Result<std::fs::File> {
        let mut lock = std::fs::File::create(&new)?;
        lock.lock()?;
        writeln!(
            lock,
            "{}\n{}",
            this_host().unwrap_or_default(),
            std::process::id()
        )?;
        std::fs::rename(&new, &at)?;
        Ok(lock)
    })();
    match locked {
        Ok(lock) => Some(lock),
        Err(e) => {
            log::info!(
                "{}: not locked ({e}); a run killed outright leaves it",
                dir.display()
            );
            let _ = std::fs::remove_file(&new);
            None
        }
    }
}

impl TempDirectory {
    /// A new directory under the system's temporary directory, locked while this process
    /// lives ([`LOCK_FILE`]). The first call in a process removes the directories that
    /// processes killed outright left there.
    pub fn new() -> Result<TempDirectory> {
        let root = std::env::temp_dir();
        sweep_abandoned(&root);
        let place = Path::new("temporary directory");
        let dir = tempfile::Builder::new()
            .prefix("mdn-")
            .tempdir_in(&root)
            .map_err(|e| Error::io(place, e))?;
        let mut dir = TempDirectory::keeping(dir);
        dir.lock = lock_new(dir.path());
        Ok(dir)
    }

    /// A new hidden directory beside `path` (in its directory), to be renamed to `path` when
    /// whole ([`TempDirectory::persist_as`]).
    pub fn beside(path: &Path) -> Result<TempDirectory> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sweep_stale(parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .suffix(".tmp")
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        Ok(TempDirectory::keeping(dir))
    }

    fn keeping(dir: tempfile::TempDir) -> TempDirectory {
        let dir = dir.keep();
        TEMPORARY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(dir.clone());
        TempDirectory { dir, lock: None }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Renames the directory to `to`, which then holds it whole: a directory already there
    /// is moved aside first and removed after, so that `to` is never half-written. On an
    /// error the directory is kept where it is (no longer temporary: the caller says where),
    /// and so is the old one, in `to` or, where it could not be put back, beside it.
    pub fn persist_as(self, to: &Path) -> Result<()> {
        let this = self.keep();
        let aside = match std::fs::symlink_metadata(to) {
            Ok(_) => {
                let aside = TempDirectory::beside(to)?;
                let old = aside.path().join("old");
                std::fs::rename(to, &old).map_err(|e| Error::io(to, e))?;
                Some((aside, old))
            }
            Err(_) => None,
        };
        if let Err(e) = std::fs::rename(&this, to) {
            if let Some((aside, old)) = aside {
                // The old directory back in its place, or kept where it is.
                let back = std::fs::rename(&old, to);
                if back.is_err() {
                    aside.keep();
                }
            }
            return Err(Error::io(to, e));
        }
        drop(aside);
        Ok(())
    }

    /// No longer temporary: not removed when dropped. Its path.
    fn keep(mut self) -> PathBuf {
        drop(self.lock.take());
        TEMPORARY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| *p != self.dir);
        let dir = self.dir.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for TempDirectory {
    fn drop(&mut self) {
        // Removed while still locked, so that no sweep takes it for a killed run's; where
        // no open file can be removed (Windows), closed first.
        if cfg!(windows) {
            drop(self.lock.take());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(self.lock.take());
        TEMPORARY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| *p != self.dir);
    }
}

/// A temporary `.npy` file in a directory of its own under the system's temporary directory,
/// so that everything written beside it (its `.columns.json`, the writer's unfinished
/// temporary file) goes when it is dropped.
pub struct TempNpy {
    /// Removed with everything in it when dropped.
    _dir: TempDirectory,
    path: std::path::PathBuf,
}

impl TempNpy {
    pub fn new() -> Result<TempNpy> {
        let dir = TempDirectory::new()?;
        Ok(TempNpy {
            path: dir.path().join("data.npy"),
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes every temporary directory still alive: for a process that exits at once (the
/// second Ctrl-C) and so runs no destructors.
pub fn remove_temporary_files() {
    let list = TEMPORARY.lock().unwrap_or_else(|p| p.into_inner());
    for p in list.iter() {
        let _ = std::fs::remove_dir_all(p);
    }
    // The process exits right after this, so none of them is renamed into place any more.
    let writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    for p in writing.iter() {
        let _ = std::fs::remove_file(p);
    }
}

/// Whether two paths name the same file (by their canonical paths; a file that does not exist
/// yet is compared by its directory's canonical path and its name).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| {
        std::fs::canonicalize(p).ok().or_else(|| {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
        })
    };
    matches!((canonical(a), canonical(b)), (Some(x), Some(y)) if x == y)
}

/// Fails when the output `out` (given by the option `what`, "--out") names one of the
/// command's `inputs` (each with the option that gave it, "--data"): writing it would destroy
/// what is being read.
pub fn check_not_input(out: &Path, what: &str, inputs: &[(&str, &Path)]) -> Result<()> {
    for (role, input) in inputs {
        if same_file(out, input) {
            return Err(Error::config(format!(
                "{what} {} is the {role} file: writing it would overwrite it; choose another name",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Fails early, before any work, when `path` cannot be written: its directory is missing,
/// read-only or not a place for files (`/proc`), or `path` is a directory. `what` names the
/// option in messages ("--out").
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    let text = path.as_os_str().to_string_lossy();
    let path = &match destination(path) {
        Ok(p) => p,
        Err(Error::Config(m)) => return Err(Error::config(format!("{what} {m}"))),
        Err(e) => return Err(e),
    };
    if path.file_name().is_none()
        || text.ends_with('/')
        || text.ends_with(std::path::MAIN_SEPARATOR)
    {
        return Err(Error::config(format!(
            "{what} {}: names a directory, not a file",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::config(format!(
            "{what} {}: the directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(Error::config(format!(
            "{what} {} is a directory",
            path.display()
        )));
    }
    // The real test: a file can be created beside it (and is removed at once).
    let probe = temp_beside(path).map_err(|e| match e {
        Error::Io { source, .. } => Error::config(format!(
            "{what} {}: cannot write into {} ({source})",
            path.display(),
            dir.display()
        )),
        other => other,
    })?;
    drop(probe);
    if path.exists() && std::fs::OpenOptions::new().append(true).open(path).is_err() {
        // Replacing is a rename, which works even over a read-only file; only say so.
        log::info!(
            "{what} {} is read-only; it will be replaced",
            path.display()
        );
    }
    Ok(())
}
