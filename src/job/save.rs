//! Writing what a job makes so that nothing trained is lost: the model (rescued to the
//! temporary directory when its place fails) and checkpoints (one network's, an ensemble's
//! members' together, or a member's slot of its ensemble's), a full disk skipping checkpoints
//! with a warning rather than ending the run.

use std::path::{Path, PathBuf};

use crate::backend::TrainState;
use crate::checkpoint::{Checkpoint, DataSpec, EnsembleCheckpoint, MemberState};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::scaler::Scaler;
use crate::train::{LoopState, TrainOptions};

/// A checkpoint that did not fit on a full disk is skipped with a warning (once, until one
/// fits again), not the end of the run: the previous one stays whole (checkpoints are written
/// beside and renamed), and the next checkpoint tries again.
pub(super) fn full_disk_is_not_fatal(r: Result<()>, failing: &mut bool) -> Result<()> {
    match r {
        Err(e) if e.is_disk_full() => {
            if !*failing {
                log::warn!(
                    "{e}: the disk is full, so the checkpoint is not written; training goes on and each checkpoint tries again"
                );
            }
            *failing = true;
            Ok(())
        }
        Ok(()) if *failing => {
            log::warn!("checkpoints are written again: the disk has room");
            *failing = false;
            Ok(())
        }
        other => other,
    }
}

/// Writes `model` to `out`; when that fails after training (the disk filled up, the
/// directory went away), writes it to the temporary directory instead and returns an error
/// that says where, so the trained model is never lost.
pub fn save_model(model: &Model, out: &Path) -> Result<PathBuf> {
    match model.save(out) {
        Ok(()) => Ok(out.to_path_buf()),
        Err(e) => {
            // A new, uniquely named file (two jobs failing at once never share one).
            let rescue = tempfile::Builder::new()
                .prefix("mdn-model-")
                .suffix(".json")
                .tempfile()
                .and_then(|f| f.keep().map_err(|e| e.error))
                .map(|(_, path)| path);
            let Ok(rescue) = rescue else {
                return Err(e);
            };
            match model.save(&rescue) {
                Ok(()) => Err(Error::NotSaved {
                    reason: e.to_string(),
                    saved_to: rescue,
                }),
                Err(_) => {
                    let _ = std::fs::remove_file(&rescue);
                    Err(e)
                }
            }
        }
    }
}

/// Where an ensemble member's checkpoints go: its slot of the ensemble's checkpoint (shared
/// by the members training side by side), written whole after every update.
#[derive(Debug, Clone)]
pub(super) struct MemberSink {
    pub(super) shared: std::sync::Arc<std::sync::Mutex<Option<EnsembleCheckpoint>>>,
    pub(super) member: usize,
    pub(super) members: usize,
}

impl MemberSink {
    /// Member `self.member`'s run state into the ensemble's checkpoint (made from this
    /// member's data, options and standardisation if there is none yet), saved to `path`.
    fn write(&self, path: &Path, single: Checkpoint) -> Result<()> {
        let mut guard = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.get_or_insert_with(|| {
            let base = single.options.split_seed();
            let mut c = EnsembleCheckpoint::new(
                single.data.clone(),
                TrainOptions {
                    seed: base,
                    split_seed: None,
                    ..single.options.clone()
                },
                single.every,
                (single.x_scaler.clone(), single.y_scaler.clone()),
                self.members,
            );
            c.backend = single.backend.clone();
            c
        });
        c.members[self.member] = Some(MemberState {
            state: single.state,
            trainer: single.trainer,
        });
        c.save(path)
    }
}

/// Where a run's checkpoints go and what they record beside the run's state: the data, the
/// options (after the defaults and a small data set's choice were applied), the interval.
pub(super) struct CheckpointFiles<'j> {
    spec: DataSpec,
    opts: TrainOptions,
    every: usize,
    path: &'j Path,
    /// An ensemble member's slot of its ensemble's checkpoint, instead of a file of its own.
    sink: Option<&'j MemberSink>,
    /// A checkpoint was skipped for a full disk (warned once until one fits again).
    disk_full: bool,
    /// The backend the run trains on (`Backend::identity`), recorded in each checkpoint.
    backend: String,
}

impl<'j> CheckpointFiles<'j> {
    pub(super) fn new(
        spec: DataSpec,
        opts: TrainOptions,
        every: usize,
        path: &'j Path,
        sink: Option<&'j MemberSink>,
        backend: String,
    ) -> CheckpointFiles<'j> {
        CheckpointFiles {
            spec,
            opts,
            every,
            path,
            sink,
            disk_full: false,
            backend,
        }
    }

    /// One network's checkpoint (in its slot of the ensemble's, for a member).
    pub(super) fn write_one(
        &mut self,
        state: TrainState,
        trainer: &LoopState,
        xs: &Scaler,
        ys: &Scaler,
    ) -> Result<()> {
        let c = Checkpoint::new(
            self.spec.clone(),
            self.opts.clone(),
            self.every,
            (xs.clone(), ys.clone()),
            state,
            trainer.clone(),
        )
        .with_backend(Some(self.backend.clone()));
        match self.sink {
            Some(sink) => sink.write(self.path, c),
            None => full_disk_is_not_fatal(c.save(self.path), &mut self.disk_full),
        }
    }

    /// The checkpoint of an ensemble's members trained together: every member's state.
    pub(super) fn write_members(
        &mut self,
        states: Vec<(TrainState, LoopState)>,
        xs: &Scaler,
        ys: &Scaler,
    ) -> Result<()> {
        let mut c = EnsembleCheckpoint::new(
            self.spec.clone(),
            TrainOptions {
                seed: self.opts.split_seed(),
                split_seed: None,
                ..self.opts.clone()
            },
            self.every,
            (xs.clone(), ys.clone()),
            states.len(),
        );
        c.backend = Some(self.backend.clone());
        for (slot, (state, trainer)) in c.members.iter_mut().zip(states) {
            *slot = Some(MemberState { state, trainer });
        }
        full_disk_is_not_fatal(c.save(self.path), &mut self.disk_full)
    }
}
