//! The service's files, in a directory every process that serves the store sees (the
//! SQLite store's own directory by default; a shared filesystem for several machines), or in
//! an S3-compatible object store (`--files s3://bucket/prefix`) with a local cache:
//!
//! ```text
//! FILES/datasets/ID.csv|npy       uploaded data (ID.npy.columns.json beside an .npy)
//! FILES/jobs/ID/attempt-N/        attempt N's checkpoint of a job (and its model, at first)
//! FILES/models/ID.json            trained models, in the format `mdn train` writes
//! FILES/uploads/                  bodies being received (local only; removed when done)
//! ```
//!
//! Names are made only from ids the store generated. Every file appears whole or not at all
//! (written beside and renamed; an object is put whole). Each attempt of a job checkpoints
//! into its own folder and resumes from the newest, so a worker that lost its lease cannot
//! overwrite the checkpoint of the attempt that replaced it.
//!
//! With an object store, the code reads and writes the same paths in the local cache:
//! [`Files::publish`] puts a finished file into the object store, [`Files::fetch`] brings
//! one into the cache if it is not there.

use std::path::{Path, PathBuf};

use super::{new_id, valid_id};
use crate::error::{Error, Result};

/// Uploads untouched this long were left by a process that died mid-body.
const STALE_UPLOAD_SECS: u64 = 3600;

/// Where the service's files are.
#[derive(Debug, Clone)]
pub struct Files {
    /// The files (a directory), or the object store's local cache.
    dir: PathBuf,
    /// The object store, when the files live in one.
    remote: Option<std::sync::Arc<super::objects::Objects>>,
}

impl Files {
    /// Opens (creating if needed) the folders in `dir`, removing uploads a crashed process
    /// left half-received.
    pub fn open(dir: &Path) -> Result<Files> {
        Files::with_remote(dir, None)
    }

    /// Files in an object store (`s3://bucket/prefix`), cached in `cache`.
    pub fn in_object_store(url: &str, cache: &Path) -> Result<Files> {
        let objects = super::objects::Objects::open(url)?;
        Files::with_remote(cache, Some(std::sync::Arc::new(objects)))
    }

    fn with_remote(
        dir: &Path,
        remote: Option<std::sync::Arc<super::objects::Objects>>,
    ) -> Result<Files> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::config(format!(
                "{}: not a directory (the service keeps its data sets, checkpoints and models in one)",
                dir.display()
            )));
        }
        for sub in ["", "datasets", "jobs", "models", "uploads"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("uploads")) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() >= STALE_UPLOAD_SECS);
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Files {
            dir: dir.to_path_buf(),
            remote,
        })
    }

    /// The key of a file under the files' directory.
    fn key(&self, local: &Path) -> Option<String> {
        let rel = local.strip_prefix(&self.dir).ok()?;
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// Puts `local` (a finished file under the files' directory) into the object store.
    pub fn publish(&self, local: &Path) -> Result<()> {
        match (&self.remote, self.key(local)) {
            (Some(r), Some(key)) => r.put_file(&key, local),
            _ => Ok(()),
        }
    }

    /// Brings `local` into the cache from the object store if it is not there; false when
    /// it exists nowhere.
    pub fn fetch(&self, local: &Path) -> Result<bool> {
        if local.exists() {
            return Ok(true);
        }
        match (&self.remote, self.key(local)) {
            (Some(r), Some(key)) => r.get_file(&key, local),
            _ => Ok(false),
        }
    }

    /// Removes a file here and in the object store.
    pub fn remove(&self, local: &Path) {
        let _ = std::fs::remove_file(local);
        if let (Some(r), Some(key)) = (&self.remote, self.key(local))
            && let Err(e) = r.delete(&key)
        {
            log::warn!("{}: not removed from the object store: {e}", key);
        }
    }

    /// Removes a folder here and everything under it in the object store.
    pub fn remove_dir(&self, local: &Path) {
        let _ = std::fs::remove_dir_all(local);
        if let (Some(r), Some(key)) = (&self.remote, self.key(local))
            && let Err(e) = r.delete_prefix(&key)
        {
            log::warn!("{}: not removed from the object store: {e}", key);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, unique file for an upload being received.
    pub fn upload_path(&self) -> PathBuf {
        self.dir.join("uploads").join(new_id("up"))
    }

    /// Where dataset `id` of `format` lives.
    pub fn dataset_path(&self, id: &str, format: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.dir.join("datasets").join(format!("{id}.{format}"))
    }

    pub fn model_path(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.dir.join("models").join(format!("{id}.json"))
    }

    /// The folder of job `id`'s checkpoints (removed when it finishes).
    pub fn job_dir(&self, id: &str) -> PathBuf {
        debug_assert!(valid_id(id));
        self.dir.join("jobs").join(id)
    }

    /// Where attempt `attempt` of job `id` checkpoints.
    pub fn checkpoint_path(&self, id: &str, attempt: u32) -> PathBuf {
        self.job_dir(id)
            .join(format!("attempt-{attempt}"))
            .join("checkpoint.json")
    }

    /// The newest checkpoint of job `id` written by an attempt before `attempt` (brought
    /// into the cache from the object store).
    pub fn latest_checkpoint(&self, id: &str, attempt: u32) -> Result<Option<PathBuf>> {
        for a in (1..attempt).rev() {
            let p = self.checkpoint_path(id, a);
            if self.remote.is_some() {
                // The cache may hold an older copy than the object store.
                let _ = std::fs::remove_file(&p);
            }
            if self.fetch(&p)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_resumes_from_the_newest_earlier_attempt_that_wrote_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let f = Files::open(dir.path()).unwrap();
        assert_eq!(f.latest_checkpoint("job_1", 4).unwrap(), None);
        for a in [1, 2] {
            let p = f.checkpoint_path("job_1", a);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "{}").unwrap();
        }
        assert_eq!(
            f.latest_checkpoint("job_1", 4).unwrap(),
            Some(f.checkpoint_path("job_1", 2))
        );
        assert_eq!(
            f.latest_checkpoint("job_1", 2).unwrap(),
            Some(f.checkpoint_path("job_1", 1))
        );
        assert_eq!(f.latest_checkpoint("job_1", 1).unwrap(), None);
    }
}
