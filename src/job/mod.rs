//! One training job: what `mdn train` runs, and what `mdn select`, the training service and
//! the Python package run too, so that every front end trains exactly the same way.
//!
//! A [`TrainJob`] is every `mdn train` option under its long name (`batch_size` for
//! `--batch-size`); as JSON it is what a client of the service sends, and it round-trips.
//! [`TrainJob::resolve`] checks everything that can be checked without reading the rows
//! (every option, the output's directory, the data file's header and the columns, the
//! validation file's header, a checkpoint to resume) and decides how to read the data;
//! [`ResolvedJob::run`] then reads the data, opens the device, trains, reporting through an
//! observer ([`JobEvent`]) and honouring a cancel flag (stop after the current epoch or
//! window, keep the best model so far), and writes the model.
//!
//! Columns are decided in one place ([`crate::data::ColumnChoice::names`]) from the header,
//! and every way of reading the data (in memory, streamed from `.npy`, a CSV converted to a
//! temporary `.npy` to stream it) then reads exactly those columns by name.
//!
//! | module | decides | leaves to others |
//! |---|---|---|
//! | `options` | the job's options, their JSON and their checks on their own | what the data make of them |
//! | `resolve` | a job against the files: checkpoint to resume, outputs, header, columns, streaming | reading the rows |
//! | `small_data` | the defaults that adapt to the rows, the epochs (and K) by cross-validation, the row checks | training itself |
//! | `network` | one run: one network, or an ensemble's members together, from reading the rows to the comparison with a linear model | the epochs (`crate::train`) |
//! | `fits` | where a job's networks train: its own backend, or a packer that trains many groups' jobs' networks together | the networks' epochs (`crate::train`) |
//! | `groups` | one model per group of rows (`--group-by`): the split, each group's job, the directory of models | each group's run (the job itself) |
//! | `ensemble` | how an ensemble's members run: together on a GPU, side by side on the CPU, one after another; their checkpoint slots; the ensemble's own validation NLL | each member's run (`network`) |
//! | `save` | writing models and checkpoints so that a full disk or a lost directory loses nothing | what goes in them |

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::backend::{self, Backend};
use crate::categorical::Categorical;
use crate::checkpoint::{Checkpoint, EnsembleCheckpoint};
use crate::data::{ColumnChoice, Dataset, Missing, ReadNotes};
use crate::error::Result;
use crate::layout::{Covariance, Family};
use crate::model::{EpochChoice, Model};
use crate::train::{Stopping, TrainEvent, TrainOptions};
use save::MemberSink;

mod ensemble;
mod fits;
mod groups;
mod network;
mod options;
mod resolve;
mod save;
mod small_data;

pub use groups::{
    GroupBy, GroupEvent, GroupIndex, GroupResult, GroupsOutcome, INDEX as GROUPS_INDEX,
    INDEX_JSON as GROUPS_INDEX_JSON, Packing, Split, split_by_group, train_groups,
};
pub use options::{TrainJob, parse_widths};
pub use save::save_model;
pub use small_data::{
    Adapted, CROSS_VALIDATE_BELOW, CROSS_VALIDATE_MIN, CV_FOLDS, FoldReport, LARGE,
    adapted_defaults, cross_validate_epochs, cv_folds,
};

/// The example data set used without `--data` (Bishop's inverse problem, `assets/`).
pub const EXAMPLE_CSV: &[u8] = include_bytes!("../../assets/bishop.csv");

/// How the example is named in messages.
pub const EXAMPLE_NAME: &str = "assets/bishop.csv";

/// What a job decided before training, told once to the observer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The data file as named (or the example's name).
    pub data: String,
    /// The backend's name (the CPU, or the GPU adapter).
    pub backend: String,
    /// What `--device auto` chose and why.
    pub device_note: Option<String>,
    pub features: Vec<String>,
    pub targets: Vec<String>,
    pub hidden: Vec<usize>,
    pub components: usize,
    pub covariance: Covariance,
    /// Gaussian or Student's t components.
    pub family: Family,
    pub batch_size: usize,
    /// The most epochs the run can take (exactly this many with fixed epochs).
    pub max_epochs: usize,
    /// What the defaults that adapt to the training rows chose, for each option left to them
    /// ("batch 32", "K=2", "patience 12", "at most 334 epochs").
    pub adapted: Vec<String>,
    /// On small data: the number of epochs chosen by cross-validation (the run then trains
    /// on every row for exactly that many).
    pub cross_validated_epochs: Option<usize>,
    /// Rows in the data file.
    pub rows: usize,
    /// Training and validation rows (in memory; a streamed run knows them after its first
    /// pass).
    pub train_rows: Option<usize>,
    pub val_rows: Option<usize>,
    /// The validation file (`--val`), whose rows are not among `rows`.
    pub val_data: Option<String>,
    /// How a streamed run reads its data.
    pub chunk_rows: Option<usize>,
    pub window_chunks: Option<usize>,
}

/// What a running job reports.
#[derive(Debug, Clone, Copy)]
pub enum JobEvent<'a> {
    /// A CSV file is being converted to a temporary `.npy` to stream it.
    Converting { from: &'a Path, to: &'a Path },
    /// The run continues from a checkpoint after `epoch` epochs.
    Resuming { epoch: usize, from: &'a Path },
    /// The data are read and the device is open: training starts.
    Started(&'a Plan),
    /// The trainer's progress: rows within an epoch, epochs, recoveries.
    Train(&'a TrainEvent),
    /// Something the user should know (a setting that is likely a mistake).
    Warning(&'a str),
    /// What the job is doing or decided (for example the steps of choosing the number of
    /// epochs on small data).
    Note(&'a str),
    /// A deep ensemble trained one member at a time (or several side by side, one shown): the
    /// epochs that follow are member `index`'s (from 0) of `of`.
    Member { index: usize, of: usize },
}

/// A job checked and ready to run.
#[derive(Debug, Clone)]
pub struct ResolvedJob {
    /// The job as it runs (for a resumed run: with the checkpoint's data and options).
    pub job: TrainJob,
    pub options: TrainOptions,
    /// The columns, by name, as decided from the header.
    pub features: Vec<String>,
    pub targets: Vec<String>,
    /// The feature columns read as categories, with the categories learnt from the rows.
    pub categorical: Vec<Categorical>,
    /// Whether the data are streamed from disk.
    pub streamed: bool,
    resume: Option<Checkpoint>,
    checkpoint_path: PathBuf,
    /// Training (and validation) rows given in memory instead of files
    /// ([`TrainJob::resolve_arrays`]).
    arrays: Option<std::sync::Arc<(Dataset, Option<Dataset>)>>,
    /// A small data set's number of epochs, already chosen by cross-validation (an ensemble
    /// chooses it once for all its members).
    epoch_choice: Option<EpochChoice>,
    /// An ensemble's checkpoint to resume from.
    ensemble_resume: Option<EnsembleCheckpoint>,
    /// An ensemble member's checkpoints go to its slot of the ensemble's.
    sink: Option<MemberSink>,
    /// A streamed CSV already converted to `.npy` (once, for all of an ensemble's members).
    converted: Option<PathBuf>,
    /// The validation file's rows, read once for all of an ensemble's members.
    val_file: Option<std::sync::Arc<Dataset>>,
    /// The rows the job's reads left out for a missing value (shared by an ensemble's
    /// members): what the model's record says.
    left_out: LeftOut,
    /// Where its networks train when not on a backend of its own: a packer shared with other
    /// jobs (each group's of `--group-by` on a GPU).
    packer: Option<std::sync::Arc<fits::Packer>>,
}

/// The rows a job's reads left out for a missing value (`--drop-missing`), per file: a file
/// read again (by each of an ensemble's members, or for the ensemble's validation) counts
/// once.
#[derive(Debug, Clone, Default)]
struct LeftOut(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<PathBuf, usize>>>);

impl LeftOut {
    fn note(&self, path: &Path, rows: usize) {
        let mut files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(path.to_path_buf(), rows);
    }

    fn total(&self) -> usize {
        let files = self.0.lock().unwrap_or_else(|e| e.into_inner());
        files.values().sum()
    }
}

/// What a finished job gives back.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub model: Model,
    /// Where the model was written.
    pub path: PathBuf,
    /// The run was stopped by the cancel flag (the best model so far was kept).
    pub interrupted: bool,
}

impl ResolvedJob {
    /// Trains and writes the model. `cancel` stops the run after the current epoch (or
    /// streamed window) and keeps the best model so far; before the first epoch it is an
    /// [`crate::error::Error::Interrupted`] and nothing is written.
    pub fn run(self, observer: &mut dyn FnMut(&JobEvent), cancel: &AtomicBool) -> Result<Outcome> {
        let model = self.train(observer, cancel)?;
        // Interrupted when any member was (an ensemble's last member may be the one).
        let interrupted = model.member_models().any(|m| {
            m.training
                .as_ref()
                .is_some_and(|t| t.stop_reason == "interrupted")
        });
        let path = save_model(&model, &self.job.out_path())?;
        Ok(Outcome {
            model,
            path,
            interrupted,
        })
    }

    /// The whole data set in memory, exactly the job's columns (`mdn select` cross-validates
    /// on it).
    pub fn read_data(&self) -> Result<Dataset> {
        if let Some(a) = &self.arrays {
            return Ok(a.0.clone());
        }
        self.job.read_all(&self.choice())
    }

    /// [`ResolvedJob::read_data`], its warnings (rows left out by `--drop-missing`) told to
    /// `observer` instead of the log.
    pub fn read_data_telling(&self, observer: &mut dyn FnMut(&JobEvent)) -> Result<Dataset> {
        if let Some(a) = &self.arrays {
            return Ok(a.0.clone());
        }
        let (data, notes) = self.job.read_all_noting(&self.choice())?;
        self.tell_read(&data.path, &notes, observer);
        Ok(data)
    }

    /// Tells `observer` a read's warnings and keeps the number of rows it left out, for the
    /// model's record.
    pub(super) fn tell_read(
        &self,
        path: &Path,
        notes: &ReadNotes,
        observer: &mut dyn FnMut(&JobEvent),
    ) {
        self.left_out.note(path, notes.left_out);
        for n in &notes.warnings {
            observer(&JobEvent::Warning(n));
        }
    }

    /// How the job reads its rows (training and validation): the inputs, categorical
    /// columns from their text, the targets; rows with a missing value refused, saying
    /// `--drop-missing` would leave them out, or left out with it.
    pub fn choice(&self) -> ColumnChoice {
        ColumnChoice::model(&self.features, &self.targets, &self.categorical, true)
            .for_training()
            .with_missing(if self.job.drop_missing {
                Missing::Drop
            } else {
                Missing::RefuseSayingDrop
            })
            .with_transforms(&self.options.transforms)
    }

    /// Trains and returns the model without writing it. With `ensemble` M > 1: M members,
    /// each the whole job with seed `seed + m` for its initial weights and row orders, on the
    /// same rows, standardisation and validation split (those from `seed`), each with its own
    /// early stopping; a small data set's number of epochs is cross-validated once, for all
    /// of them. On a GPU the members train together, in the same dispatches; on the CPU side
    /// by side, the threads shared out. A cancel keeps the members finished so far (and those
    /// it stopped, at their best epochs).
    pub fn train(&self, observer: &mut dyn FnMut(&JobEvent), cancel: &AtomicBool) -> Result<Model> {
        let model = self
            .train_all(observer, cancel)?
            .with_categorical(&self.categorical)
            .with_rows_left_out(self.left_out.total());
        if let Some(t) = model.training.as_ref() {
            for name in &t.constant_features {
                // A category's indicator: 0 in every training row, the category is in none
                // (only among the held-out validation rows, from which the categories were
                // learnt too); 1 in every one, it is the only one there.
                let category = self.categorical.iter().find_map(|k| {
                    k.categories
                        .iter()
                        .find(|c| format!("{}={c}", k.column) == *name)
                        .map(|c| (&k.column, c))
                });
                let value = model
                    .features
                    .iter()
                    .position(|f| f == name)
                    .and_then(|i| model.x_scaler.mean.get(i).copied());
                observer(&JobEvent::Warning(&match (category, value) {
                    (Some((column, c)), Some(0.0)) => format!(
                        "category '{c}' of column '{column}' is in no training row (only among the \
                         validation rows): the model learns nothing for it, and predicts its rows \
                         as if they had no category"
                    ),
                    (Some((column, c)), _) => format!(
                        "every training row of column '{column}' is '{c}': the column tells the \
                         model nothing, so the model ignores it"
                    ),
                    (None, _) => format!(
                        "feature column '{name}' is constant in the training rows: it tells the model nothing, \
                         so the model ignores it (whatever value it takes when predicting)"
                    ),
                }));
            }
        }
        Ok(model)
    }

    /// Where the job's networks train: its packer's, or a backend of its own; with what
    /// `--device auto` chose and why.
    fn open_fitter(&self) -> Result<(fits::Fitter, Option<String>)> {
        if let Some(p) = &self.packer {
            return Ok((fits::Fitter::Shared(p.clone()), p.device_note.clone()));
        }
        let (b, note) = self.open_backend()?;
        Ok((fits::Fitter::Own(b), note))
    }

    fn open_backend(&self) -> Result<(Box<dyn Backend>, Option<String>)> {
        let (b, note) = backend::open(self.job.device, self.job.threads)?;
        log::info!(
            "job: device {} ({})",
            b.name(),
            note.as_deref().unwrap_or("chosen with --device")
        );
        Ok((b, note))
    }

    fn plan(
        &self,
        opts: &TrainOptions,
        adapted: Vec<String>,
        backend: String,
        device_note: Option<String>,
        rows: usize,
        train_rows: Option<usize>,
        val_rows: Option<usize>,
    ) -> Plan {
        Plan {
            data: self.job.data_name(),
            backend,
            device_note,
            features: self.features.clone(),
            targets: self.targets.clone(),
            hidden: opts.hidden.clone(),
            components: opts.components,
            covariance: opts.covariance,
            family: opts.family,
            batch_size: opts.step.batch_size,
            max_epochs: match opts.stopping {
                Stopping::Early { max_epochs, .. } => max_epochs,
                Stopping::Fixed { epochs } => epochs,
            },
            adapted,
            cross_validated_epochs: None,
            rows,
            train_rows,
            val_rows,
            val_data: self.job.val.as_ref().map(|p| p.display().to_string()),
            chunk_rows: None,
            window_chunks: None,
        }
    }
}
