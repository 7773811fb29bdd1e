//! The service's files, in a directory every process that serves the store sees (the
//! SQLite store's own directory by default; a shared filesystem for several machines):
//!
//! ```text
//! FILES/datasets/ID.csv|npy       uploaded data (ID.columns.json beside an .npy)
//! FILES/jobs/ID/attempt-N/        attempt N's checkpoint of a job
//! FILES/models/ID.json            trained models, in the format `mdn train` writes
//! FILES/uploads/                  bodies being received (removed when done or refused)
//! ```
//!
//! Names are made only from ids the store generated. Every file appears whole or not at
//! all (written beside, then renamed). Each attempt of a job checkpoints into its own
//! folder and resumes from the newest attempt's, so a worker that lost its lease cannot
//! overwrite the checkpoint of the attempt that replaced it.

use std::path::{Path, PathBuf};

use super::{new_id, valid_id};
use crate::error::{Error, Result};

/// Uploads untouched this long were left by a process that died mid-body.
const STALE_UPLOAD_SECS: u64 = 3600;

/// Where the service's files are.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// Opens (creating if needed) the folders in `dir`, removing uploads a crashed process
    /// left half-received.
    pub fn open(dir: &Path) -> Result<Files> {
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
        })
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

    /// The newest checkpoint of job `id` written by an attempt before `attempt`.
    pub fn latest_checkpoint(&self, id: &str, attempt: u32) -> Option<PathBuf> {
        (1..attempt)
            .rev()
            .map(|a| self.checkpoint_path(id, a))
            .find(|p| p.exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_resumes_from_the_newest_earlier_attempt_that_wrote_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let f = Files::open(dir.path()).unwrap();
        assert_eq!(f.latest_checkpoint("job_1", 4), None);
        for a in [1, 2] {
            let p = f.checkpoint_path("job_1", a);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "{}").unwrap();
        }
        assert_eq!(
            f.latest_checkpoint("job_1", 4),
            Some(f.checkpoint_path("job_1", 2))
        );
        assert_eq!(
            f.latest_checkpoint("job_1", 2),
            Some(f.checkpoint_path("job_1", 1))
        );
        assert_eq!(f.latest_checkpoint("job_1", 1), None);
    }
}
