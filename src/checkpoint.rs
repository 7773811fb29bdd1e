//! Checkpoints: the full state of a training run, written every few epochs so that a run
//! killed at any moment can continue and end with exactly the bits an uninterrupted run
//! would have produced (same data, seed, backend, device and threads).
//!
//! A checkpoint is JSON: what data and options the run was started with, the standardisation
//! (to check the data has not changed), the backend's state (current and best parameters,
//! Adam's moments and step) and the trainer's (epochs done, history, best epoch, learning
//! rate, position of the shuffling random stream). It is written like a model file: to a
//! synced temporary file renamed into place, so the last checkpoint is always whole.
//!
//! A deep ensemble's checkpoint (format version 2, [`EnsembleCheckpoint`]) holds the same for
//! each member that has written one (member m is trained with seed `options.seed + m`, on the
//! split and standardisation of `options.seed`); a member without one starts over.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::backend::TrainState;
use crate::error::{Error, Result};
use crate::scaler::Scaler;
use crate::train::{LoopState, TrainOptions};

pub const FORMAT_NAME: &str = "mdn-checkpoint";
pub const FORMAT_VERSION: u32 = 1;
/// The format version of an ensemble's checkpoint.
pub const ENSEMBLE_FORMAT_VERSION: u32 = 2;

/// Where a run's data came from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// The training file (None: the shipped example).
    pub data: Option<PathBuf>,
    pub target: Vec<String>,
    pub features: Vec<String>,
    /// `--categorical` and `--drop-missing` (absent in checkpoints from before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_missing: bool,
    pub val: Option<PathBuf>,
    pub val_fraction: f64,
    /// Whether the run streamed its data, and how (so a resumed run reads it the same way).
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub chunk_rows: Option<usize>,
    #[serde(default)]
    pub memory_mb: usize,
    /// Where the run writes its model (absolute), so that a resumed run writes it there too
    /// (absent in checkpoints from before it was recorded: `model.json`).
    #[serde(default)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub format_version: u32,
    pub data: DataSpec,
    pub options: TrainOptions,
    /// Epochs between checkpoints.
    pub every: usize,
    pub x_scaler: Scaler,
    pub y_scaler: Scaler,
    pub state: TrainState,
    pub trainer: LoopState,
    /// The backend the run trained on (`Backend::identity`: the adapter, or the CPU and its
    /// threads); absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

impl Checkpoint {
    pub fn new(
        data: DataSpec,
        options: TrainOptions,
        every: usize,
        (x_scaler, y_scaler): (Scaler, Scaler),
        state: TrainState,
        trainer: LoopState,
    ) -> Self {
        Checkpoint {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            data,
            options,
            every,
            x_scaler,
            y_scaler,
            state,
            trainer,
            backend: None,
        }
    }

    /// The checkpoint with its run's backend recorded.
    pub fn with_backend(self, backend: Option<String>) -> Self {
        Checkpoint { backend, ..self }
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| Error::checkpoint(path, e.to_string()))?;
        write_atomic(path, &json)
    }

    /// A single run's checkpoint (an ensemble's is refused with a message).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        match Loaded::load(path)? {
            Loaded::Single(c) => Ok(c),
            Loaded::Ensemble(_) => Err(Error::checkpoint(
                path,
                "this is a deep ensemble's checkpoint, not a single run's",
            )),
        }
    }

    /// The default checkpoint path for a model written to `out`: `model.json` ->
    /// `model.ckpt.json`.
    pub fn default_path(out: &Path) -> PathBuf {
        let stem = out
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        out.with_file_name(format!("{stem}.ckpt.json"))
    }
}

/// One member's run in an ensemble's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub state: TrainState,
    pub trainer: LoopState,
}

/// A deep ensemble's checkpoint (format version 2): what a single run's holds, with a run
/// state per member (None for a member that has not written one yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleCheckpoint {
    pub format: String,
    pub format_version: u32,
    pub data: DataSpec,
    /// The ensemble's options: member m's seed is `seed + m`.
    pub options: TrainOptions,
    pub every: usize,
    pub x_scaler: Scaler,
    pub y_scaler: Scaler,
    pub members: Vec<Option<MemberState>>,
    /// The backend the members trained on (as [`Checkpoint::backend`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

impl EnsembleCheckpoint {
    /// An ensemble of `members` with no member's state yet.
    pub fn new(
        data: DataSpec,
        options: TrainOptions,
        every: usize,
        (x_scaler, y_scaler): (Scaler, Scaler),
        members: usize,
    ) -> Self {
        EnsembleCheckpoint {
            format: FORMAT_NAME.into(),
            format_version: ENSEMBLE_FORMAT_VERSION,
            data,
            options,
            every,
            x_scaler,
            y_scaler,
            members: vec![None; members],
            backend: None,
        }
    }

    /// Member `m`'s run as a single run's checkpoint, when it has written one.
    pub fn member(&self, m: usize) -> Option<Checkpoint> {
        let s = self.members.get(m)?.as_ref()?;
        Some(
            Checkpoint::new(
                self.data.clone(),
                TrainOptions {
                    seed: self.options.seed + m as u64,
                    split_seed: Some(self.options.seed),
                    ..self.options.clone()
                },
                self.every,
                (self.x_scaler.clone(), self.y_scaler.clone()),
                s.state.clone(),
                s.trainer.clone(),
            )
            .with_backend(self.backend.clone()),
        )
    }

    /// Writes the checkpoint atomically, as [`Checkpoint::save`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| Error::checkpoint(path, e.to_string()))?;
        write_atomic(path, &json)
    }
}

/// A checkpoint file of either kind.
#[derive(Debug, Clone)]
pub enum Loaded {
    Single(Checkpoint),
    Ensemble(EnsembleCheckpoint),
}

impl Loaded {
    /// Reads a checkpoint of either version, with a message naming the file for anything
    /// else.
    pub fn load(path: &Path) -> Result<Loaded> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::checkpoint(path, format!("not a valid checkpoint ({e})")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(Error::checkpoint(
                path,
                format!("not an mdn checkpoint (no \"format\": \"{FORMAT_NAME}\")"),
            ));
        }
        let malformed =
            |e: serde_json::Error| Error::checkpoint(path, format!("malformed checkpoint: {e}"));
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 => serde_json::from_value(value)
                .map(Loaded::Single)
                .map_err(malformed),
            Some(v) if v == ENSEMBLE_FORMAT_VERSION as u64 => {
                let c: EnsembleCheckpoint = serde_json::from_value(value).map_err(malformed)?;
                if !(2..=100).contains(&c.members.len()) {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "malformed checkpoint: an ensemble's checkpoint has 2 to 100 member slots, this one {}",
                            c.members.len()
                        ),
                    ));
                }
                Ok(Loaded::Ensemble(c))
            }
            Some(v) => Err(Error::checkpoint(
                path,
                format!(
                    "checkpoint format version {v} is not supported (this build reads {FORMAT_VERSION} and {ENSEMBLE_FORMAT_VERSION})"
                ),
            )),
            None => Err(Error::checkpoint(path, "missing checkpoint format_version")),
        }
    }
}
