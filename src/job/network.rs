//! One run of the job: one network, or an ensemble's members trained together, from reading
//! the rows (in memory, or streamed from `.npy`, a CSV converted first) through the options
//! adapted to them, a small data set's cross-validated epochs, the plan told to the observer
//! and the checkpoints, to the comparison with a linear model. The epochs are the trainer's
//! (`crate::train`); how an ensemble's members are shared out is `ensemble`'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::fits::{Fit, Fitter};
use super::save::CheckpointFiles;
use super::small_data::{CROSS_VALIDATE_BELOW, CROSS_VALIDATE_MIN};
use super::{JobEvent, Plan, ResolvedJob};
use crate::atomic::TempNpy;
use crate::checkpoint::DataSpec;
use crate::data::{ColumnChoice, Dataset, NpySource, RowSource};
use crate::error::{Error, Result};
use crate::model::{EpochChoice, Model};
use crate::train::{
    Resume, Stopping, StreamOptions, TrainEvent, TrainOptions, split_validation_by,
};

impl ResolvedJob {
    /// The job's columns of the CSV `path` converted to a temporary `.npy` to stream (removed
    /// when the returned file is dropped, also on error or interruption).
    pub(super) fn convert_to_stream(
        &self,
        path: &Path,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<TempNpy> {
        let tmp = TempNpy::new()?;
        observer(&JobEvent::Converting {
            from: path,
            to: tmp.path(),
        });
        let (_, _, notes) =
            crate::data::convert_choice(path, tmp.path(), &self.choice(), &mut |_| {
                !cancel.load(Ordering::Relaxed)
            })?;
        self.tell_read(path, &notes, observer);
        Ok(tmp)
    }

    /// Trains the networks of `seeds` (one, or an ensemble's members together where the
    /// backend can: in memory on a GPU): the whole job for each, from reading the data to
    /// the comparison with a linear model.
    pub(super) fn train_members(
        &self,
        seeds: &[u64],
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        // A CSV to stream is converted first, to a temporary .npy removed when the run ends
        // (also on error or interruption).
        let (stream_path, converted) = self.stream_path(observer, cancel)?;
        let resume = self.resume.clone().map(|c| {
            observer(&JobEvent::Resuming {
                epoch: c.trainer.completed,
                from: &self.checkpoint_path,
            });
            Resume {
                trainer: c.trainer,
                state: c.state,
                x_scaler: c.x_scaler,
                y_scaler: c.y_scaler,
            }
        });
        // The data first: the defaults that adapt to the rows need their number.
        let input = match stream_path {
            Some(path) => self.open_stream(&path, &mut *observer)?,
            None => self.read_rows(&mut *observer)?,
        };
        for k in self.categorical.iter().filter(|k| k.dates()) {
            observer(&JobEvent::Warning(&format!(
                "column '{}' is read as {} categories, but {}; as categories, a date the \
                 training rows lack cannot be predicted",
                k.column,
                k.categories.len(),
                crate::categorical::DATE_ADVICE
            )));
        }
        let (mut opts, mut adapted) = self.options_for_rows(input.train_rows);
        match input.all_rows {
            Some(rows) => self.check_rows(&opts, rows, true, &mut *observer)?,
            None => self.check_rows(&opts, input.train_rows, false, &mut *observer)?,
        }
        let (mut fitter, device_note) = self.open_fitter()?;
        let identity = fitter.identity();
        let resumed_on = match (&self.resume, &self.ensemble_resume) {
            (Some(c), _) => c.backend.as_deref(),
            (None, Some(c)) => c.backend.as_deref(),
            (None, None) => None,
        };
        if let Some(was) = resumed_on.filter(|&was| was != identity) {
            observer(&JobEvent::Warning(&format!(
                "the checkpoint's run trained on {was}, this one trains on {identity}: it \
                 continues the run, but not to the bits the uninterrupted run would have \
                 (resume with the run's --device and --threads for those)"
            )));
        }
        let epoch_choice = self.small_data_epochs(
            &input,
            &mut opts,
            &mut adapted,
            &mut fitter,
            observer,
            cancel,
        )?;
        let files = CheckpointFiles::new(
            self.data_spec(epoch_choice.is_some()),
            opts.clone(),
            self.job.checkpoint_every.unwrap_or(0),
            &self.checkpoint_path,
            self.sink.as_ref(),
            identity,
        );
        let ready = Ready {
            opts,
            adapted,
            fitter,
            device_note,
            train_rows: input.train_rows,
            epoch_choice,
            files,
            resume,
        };
        let models = match input.rows {
            Rows::Stream { source, val, sopts } => {
                self.run_streamed(ready, source, val, sopts, seeds, observer, cancel)
            }
            Rows::Memory { train, val, .. } => {
                self.run_in_memory(ready, train, val, seeds, observer, cancel)
            }
        };
        drop(converted);
        models
    }

    /// The `.npy` file a streamed run reads: the data file, or a CSV converted to a temporary
    /// one (returned too: removed when dropped). None for a run in memory.
    fn stream_path(
        &self,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<(Option<PathBuf>, Option<TempNpy>)> {
        Ok(match &self.job.data {
            Some(_) if self.streamed && self.converted.is_some() => (self.converted.clone(), None),
            Some(p) if self.streamed && !crate::data::is_npy(p) => {
                let tmp = self.convert_to_stream(p, observer, cancel)?;
                (Some(tmp.path().to_path_buf()), Some(tmp))
            }
            Some(p) if self.streamed => (Some(p.clone()), None),
            _ => (None, None),
        })
    }

    /// The rows of the validation file `path` (`--val`): read once already for an ensemble's
    /// members, or read now, its warnings told.
    pub(super) fn read_val_file(
        &self,
        path: &Path,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<Dataset> {
        if let Some(v) = &self.val_file {
            return Ok(Dataset::clone(v));
        }
        let (val, notes) = crate::data::read_data_noting(path, &self.val_choice())?;
        self.tell_read(path, &notes, observer);
        Ok(val)
    }

    /// The validation file's columns: the training columns, targets included.
    fn val_choice(&self) -> ColumnChoice {
        self.choice()
    }

    /// A streamed run's source and validation rows, and how it reads them.
    fn open_stream(&self, path: &Path, observer: &mut dyn FnMut(&JobEvent)) -> Result<Input> {
        let job = &self.job;
        let choice = ColumnChoice::exactly(self.features.clone(), self.targets.clone());
        let source = NpySource::open(path, &choice)?;
        let val = match &job.val {
            Some(v) => Some(self.read_val_file(v, observer)?),
            None => None,
        };
        let row_floats = source.features().len() + source.targets().len();
        let mut sopts =
            StreamOptions::for_budget(job.memory_mb << 20, row_floats, job.val_fraction());
        if let Some(c) = job.chunk_rows {
            sopts.chunk_rows = c;
        }
        // The exact number of training rows is known after the first pass (the trainer
        // checks it again then); until then, the file's rows bound it.
        let rows = source.rows();
        // As the trainer splits (exactly up to `ValidationSplit::EXACT_ROWS` rows).
        let held_out = if val.is_some() {
            0
        } else {
            crate::train::ValidationSplit::held_out(sopts.val_fraction_for(rows), rows)
        };
        Ok(Input {
            rows: Rows::Stream { source, val, sopts },
            train_rows: rows - held_out,
            all_rows: Some(rows),
        })
    }

    /// The rows in memory, split into training and validation rows (none on small data, which
    /// is cross-validated and then trained on whole).
    fn read_rows(&self, observer: &mut dyn FnMut(&JobEvent)) -> Result<Input> {
        let job = &self.job;
        let data = match &self.arrays {
            Some(a) => a.0.clone(),
            None => self.read_data_telling(observer)?,
        };
        let val_arrays = self.arrays.as_ref().and_then(|a| a.1.clone());
        let has_val = job.val.is_some() || val_arrays.is_some();
        self.check_row_count(data.rows)?;
        // Features float32 cannot tell apart are warned about; such targets are refused, in
        // their own units (before a transform), as training refuses them where it reads its
        // rows from a stream.
        let mut stats = crate::scaler::ColumnStats::new(data.d_in());
        stats.push(&data.x);
        for (c, name) in data.features.iter().enumerate() {
            if let Some(coarse) = stats.coarse(c) {
                observer(&JobEvent::Warning(&format!(
                    "feature {}",
                    coarse.message(name)
                )));
            }
        }
        let mut stats = crate::scaler::ColumnStats::new(data.targets.len());
        stats.push(&data.y);
        for (j, name) in data.targets.iter().enumerate() {
            if let Some(coarse) = stats.coarse(j) {
                return Err(Error::data(
                    crate::error::Location::file(&data.path),
                    format!("target {}", coarse.message(name)),
                ));
            }
        }
        if job.cross_validates(data.rows) && !has_val {
            // Every row is trained on in the end; no validation split.
            return Ok(Input {
                train_rows: data.rows,
                rows: Rows::Memory {
                    train: data,
                    val: None,
                    cross_validate: true,
                },
                all_rows: None,
            });
        }
        let (train, val) = match (&job.val, val_arrays) {
            (Some(path), _) => {
                let val = self.read_val_file(path, observer)?;
                (data, Some(val))
            }
            (None, Some(v)) => (data, Some(v)),
            (None, None) => {
                let fraction = job.val_fraction();
                let split = self.options.validation_split(fraction, data.rows);
                split_validation_by(&data, fraction, split)?
            }
        };
        Ok(Input {
            train_rows: train.rows,
            rows: Rows::Memory {
                train,
                val,
                cross_validate: false,
            },
            all_rows: None,
        })
    }

    /// Refuses `rows` (a data set's, known before it is read: the service's at submission)
    /// when they are fewer than the defaults can split and nothing else validates.
    pub fn check_row_count(&self, rows: usize) -> Result<()> {
        let has_val = self.job.val.is_some() || self.arrays.as_ref().is_some_and(|a| a.1.is_some());
        if rows < CROSS_VALIDATE_MIN && !has_val && self.job.val_fraction.is_none() {
            return Err(self.too_few_rows(rows));
        }
        Ok(())
    }

    /// The refusal of fewer rows than the defaults can split, with the way to train anyway.
    fn too_few_rows(&self, rows: usize) -> Error {
        let job = &self.job;
        Error::config(match job.epochs {
            Some(_) => format!(
                "{}: {} rows are too few to hold out validation rows from (the default \
                 --val-fraction needs at least {CROSS_VALIDATE_MIN}): add --val-fraction 0 to \
                 train on every row, or give --val FILE",
                job.data_name(),
                rows
            ),
            None => format!(
                "{}: {} rows are too few for the defaults, which hold out rows to choose when to \
                 stop (they need at least {CROSS_VALIDATE_MIN}): give --val FILE, or train on every \
                 row with --val-fraction 0 --epochs N",
                job.data_name(),
                rows
            ),
        })
    }

    /// Small data: the number of epochs by cross-validation (the ensemble's, when it chose
    /// them once for all its members), which makes the run a fixed-epoch refit on every row
    /// (and K the one chosen, where it was). Otherwise None, and a note on why there is a
    /// split where a few rows fewer would have been cross-validated.
    fn small_data_epochs(
        &self,
        input: &Input,
        opts: &mut TrainOptions,
        adapted: &mut Vec<String>,
        fitter: &mut Fitter,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Option<EpochChoice>> {
        let job = &self.job;
        let Rows::Memory {
            train,
            cross_validate: true,
            ..
        } = &input.rows
        else {
            // Say why there is a split, where a few rows fewer would cross-validate (on
            // large data it would be noise).
            if job.val.is_none()
                && job.val_fraction.is_none()
                && job.epochs.is_none()
                && input.train_rows < 2 * CROSS_VALIDATE_BELOW
            {
                adapted.push(format!(
                    "early stopping on a 10% split (the epochs are cross-validated only below \
                     {CROSS_VALIDATE_BELOW} rows)"
                ));
            }
            return Ok(None);
        };
        let choice = match &self.epoch_choice {
            Some(c) => c.clone(),
            None => self.choose_epochs(train, fitter, observer, cancel)?,
        };
        opts.stopping = Stopping::Fixed {
            epochs: choice.epochs,
        };
        // The number of components, when the cross-validation chose it.
        if let Some(k) = choice.components.iter().find(|c| c.chosen) {
            opts.components = k.components;
            for s in adapted.iter_mut().filter(|s| s.starts_with("K=")) {
                *s = format!("K={}", k.components);
            }
        }
        // A fixed-epoch refit has no patience or epoch limit.
        adapted.retain(|s| !s.starts_with("patience") && !s.starts_with("at most"));
        Ok(Some(choice))
    }

    /// What a checkpoint records of the data, with absolute paths (so that a run resumes
    /// from any directory).
    fn data_spec(&self, refit: bool) -> DataSpec {
        let job = &self.job;
        let absolute = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        };
        DataSpec {
            data: absolute(&job.data),
            target: job.target.clone(),
            features: job.features.clone(),
            categorical: job.categorical.clone(),
            drop_missing: job.drop_missing,
            val: absolute(&job.val),
            // A refit after cross-validation trains on every row (and resumes so).
            val_fraction: if refit { 0.0 } else { job.val_fraction() },
            stream: self.streamed,
            chunk_rows: job.chunk_rows,
            memory_mb: job.memory_mb,
            out: absolute(&Some(job.out_path())),
        }
    }

    /// A streamed run: one network, its rows read window by window.
    #[allow(clippy::too_many_arguments)]
    fn run_streamed(
        &self,
        ready: Ready<'_>,
        mut source: NpySource,
        val: Option<Dataset>,
        sopts: StreamOptions,
        seeds: &[u64],
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        let Ready {
            opts,
            adapted,
            mut fitter,
            device_note,
            train_rows,
            mut files,
            resume,
            ..
        } = ready;
        let rows = source.rows();
        // The split is known before the first pass where it is exact.
        let split = (rows <= crate::train::ValidationSplit::EXACT_ROWS).then(|| {
            let val_rows = val.as_ref().map_or(rows - train_rows, |v| v.rows);
            (train_rows, val_rows)
        });
        let plan = Plan {
            chunk_rows: Some(sopts.chunk_rows),
            window_chunks: Some(sopts.window_chunks),
            ..self.plan(
                &opts,
                adapted,
                fitter.name(),
                device_note,
                rows,
                split.map(|s| s.0),
                split.map(|s| s.1),
            )
        };
        log::info!(
            "job: streaming {} rows in chunks of {} rows, {} per shuffle window, {} device chunk rows, batch {}",
            rows,
            sopts.chunk_rows,
            sopts.window_chunks,
            sopts.device_chunk_rows.unwrap_or(0),
            opts.step.batch_size
        );
        observer(&JobEvent::Started(&plan));
        let mut on_train = |e: &TrainEvent| {
            observer(&JobEvent::Train(e));
            !cancel.load(Ordering::Relaxed)
        };
        if seeds.len() > 1 {
            return Err(Error::config(
                "streamed ensemble members train one at a time, not together",
            ));
        }
        let mut write =
            |state, trainer: &_, xs: &_, ys: &_| files.write_one(state, trainer, xs, ys);
        let checkpointer = files_checkpointer(&self.job, &mut write);
        crate::train::train_stream_with(
            fitter.backend()?,
            &mut source,
            val.as_ref(),
            &sopts,
            &opts,
            resume,
            checkpointer,
            &mut on_train,
        )
        .map(|m| vec![m])
    }

    /// A run in memory: one network, or an ensemble's members together; then each model
    /// compared with a linear model.
    #[allow(clippy::too_many_arguments)]
    fn run_in_memory(
        &self,
        mut ready: Ready<'_>,
        train: Dataset,
        val: Option<Dataset>,
        seeds: &[u64],
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        let val_rows = val.as_ref().map_or(0, |v| v.rows);
        let plan = Plan {
            cross_validated_epochs: ready.epoch_choice.as_ref().map(|c| c.epochs),
            ..self.plan(
                &ready.opts,
                std::mem::take(&mut ready.adapted),
                ready.fitter.name(),
                ready.device_note.take(),
                // The data file's rows: a validation file's are its own.
                if self.job.val.is_some() {
                    train.rows
                } else {
                    train.rows + val_rows
                },
                Some(train.rows),
                Some(val_rows),
            )
        };
        log::info!(
            "job: {} training rows, {} validation rows in memory, batch {}",
            train.rows,
            val_rows,
            ready.opts.step.batch_size
        );
        observer(&JobEvent::Started(&plan));
        let models = if seeds.len() > 1 {
            self.train_together(&mut ready, &train, val.as_ref(), seeds, observer, cancel)?
        } else {
            let mut on_train = |e: &TrainEvent| {
                observer(&JobEvent::Train(e));
                !cancel.load(Ordering::Relaxed)
            };
            match &mut ready.fitter {
                // With the other jobs' networks (never resumed, never checkpointed).
                Fitter::Shared(_) => {
                    let fit = Fit {
                        train: train.clone(),
                        val: val.clone(),
                        opts: ready.opts.clone(),
                        model: true,
                    };
                    ready
                        .fitter
                        .fit_all(vec![fit], &mut |_, _| {}, &mut on_train)?
                        .models
                }
                Fitter::Own(backend) => {
                    let files = &mut ready.files;
                    let mut write = |state, trainer: &_, xs: &_, ys: &_| {
                        files.write_one(state, trainer, xs, ys)
                    };
                    let checkpointer = files_checkpointer(&self.job, &mut write);
                    vec![crate::train::train_with(
                        backend.as_mut(),
                        &train,
                        val.as_ref(),
                        &ready.opts,
                        ready.resume.take(),
                        checkpointer,
                        &mut on_train,
                    )?]
                }
            }
        };
        Ok(self.judge(
            models,
            &train,
            val.as_ref(),
            ready.epoch_choice.as_ref(),
            observer,
        ))
    }

    /// An ensemble's members trained together (`crate::train::train_members_with`), resumed
    /// together from the ensemble's checkpoint where there is one.
    fn train_together(
        &self,
        ready: &mut Ready<'_>,
        train: &Dataset,
        val: Option<&Dataset>,
        seeds: &[u64],
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        // Epochs and notes both go to the observer, one at a time.
        let shared = std::cell::RefCell::new(&mut *observer);
        let mut on_train = |e: &TrainEvent| {
            (shared.borrow_mut())(&JobEvent::Train(e));
            !cancel.load(Ordering::Relaxed)
        };
        let resume = self.members_resume(seeds.len(), &mut |e| (shared.borrow_mut())(e))?;
        let files = &mut ready.files;
        let mut write_all = |states: Vec<_>, xs: &_, ys: &_| files.write_members(states, xs, ys);
        let checkpointer = (self.job.checkpoint_every.unwrap_or(0) > 0).then_some(
            crate::train::MembersCheckpointer {
                every: self.job.checkpoint_every.unwrap_or(0),
                min_seconds: self.job.checkpoint_seconds,
                write: &mut write_all,
            },
        );
        let name = ready.fitter.name();
        let models = crate::train::train_members_with(
            ready.fitter.backend()?,
            train,
            val,
            &ready.opts,
            seeds,
            resume,
            checkpointer,
            &mut on_train,
            &mut |n| (shared.borrow_mut())(&JobEvent::Note(n)),
        );
        models?
            .ok_or_else(|| Error::Backend(format!("{name} cannot train ensemble members together")))
    }

    /// The members' states to resume together (every one must have one), told to the
    /// observer; None when the run does not resume.
    fn members_resume(
        &self,
        m: usize,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<Option<Vec<Resume>>> {
        let Some(c) = &self.ensemble_resume else {
            return Ok(None);
        };
        let resume = c
            .members
            .iter()
            .map(|s| {
                let s = s.clone().ok_or_else(|| {
                    Error::Backend(
                        "an ensemble member without a checkpointed state cannot resume together with the others".into(),
                    )
                })?;
                Ok(Resume {
                    trainer: s.trainer,
                    state: s.state,
                    x_scaler: c.x_scaler.clone(),
                    y_scaler: c.y_scaler.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let done: Vec<String> = c
            .members
            .iter()
            .flatten()
            .map(|s| s.trainer.completed.to_string())
            .collect();
        observer(&JobEvent::Note(&format!(
            "the {m} members resume together after epochs {}",
            done.join(", ")
        )));
        let epoch = c
            .members
            .iter()
            .flatten()
            .map(|s| s.trainer.completed)
            .max();
        observer(&JobEvent::Resuming {
            epoch: epoch.unwrap_or(0),
            from: &self.checkpoint_path,
        });
        Ok(Some(resume))
    }

    /// Each model compared with a linear model (on the validation rows, or on a small data
    /// set's folds), the verdict recorded and, where the model is no better, a warning:
    /// per member, named when there are several; a cross-validated choice made for a whole
    /// ensemble was judged when it was made.
    fn judge(
        &self,
        models: Vec<Model>,
        train: &Dataset,
        val: Option<&Dataset>,
        epoch_choice: Option<&EpochChoice>,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Vec<Model> {
        let several = models.len() > 1;
        let judged = self.epoch_choice.is_some();
        models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let mut warn = |e: &JobEvent| match e {
                    JobEvent::Warning(w) if several => {
                        observer(&JobEvent::Warning(&format!("member {}: {w}", i + 1)))
                    }
                    _ if judged => {}
                    e => observer(e),
                };
                match (val, epoch_choice) {
                    (Some(val), _) => compare_with_baseline(model, train, val, &mut warn),
                    (None, Some(choice)) => {
                        let mut model = model;
                        warn_if_no_better(
                            "cross-validated",
                            choice.cv_nll,
                            choice.baseline_cv_nll,
                            "on the same folds",
                            &advice(model.arch.components),
                            &mut warn,
                        );
                        if let Some(info) = model.training.as_mut() {
                            info.baseline_val_nll = Some(choice.baseline_cv_nll);
                            info.epoch_choice = Some(choice.clone());
                        }
                        model
                    }
                    (None, None) => model,
                }
            })
            .collect()
    }
}

/// The rows a run trains on, as read.
enum Rows {
    Stream {
        source: NpySource,
        val: Option<Dataset>,
        sopts: StreamOptions,
    },
    Memory {
        train: Dataset,
        val: Option<Dataset>,
        /// Small data: the epochs by cross-validation, then every row.
        cross_validate: bool,
    },
}

/// The rows, and how many: the training rows (for a streamed run, before its first pass,
/// the file's rows less those the split will hold out), and a streamed file's rows.
struct Input {
    rows: Rows,
    train_rows: usize,
    all_rows: Option<usize>,
}

/// What a run has decided before its first epoch.
struct Ready<'j> {
    opts: TrainOptions,
    /// What the defaults that adapt to the rows chose.
    adapted: Vec<String>,
    fitter: Fitter,
    device_note: Option<String>,
    train_rows: usize,
    epoch_choice: Option<EpochChoice>,
    files: CheckpointFiles<'j>,
    resume: Option<Resume>,
}

/// The trainer's [`crate::train::Checkpointer`] for a job that checkpoints (`write` saving
/// one network's), none for one that does not.
fn files_checkpointer<'a>(
    job: &super::TrainJob,
    write: &'a mut crate::train::CheckpointFn<'a>,
) -> Option<crate::train::Checkpointer<'a>> {
    let every = job.checkpoint_every.unwrap_or(0);
    (every > 0).then_some(crate::train::Checkpointer {
        every,
        min_seconds: job.checkpoint_seconds,
        write,
    })
}

/// Records the validation NLL of a linear-Gaussian model fitted on the same training rows,
/// and warns when the MDN is no better: it has found nothing beyond a linear trend with
/// constant noise.
fn compare_with_baseline(
    mut model: Model,
    train: &Dataset,
    val: &Dataset,
    observer: &mut dyn FnMut(&JobEvent),
) -> Model {
    let baseline = crate::baseline::LinearGaussian::fit(train).mean_nll(val);
    let Some(info) = model.training.as_mut() else {
        return model;
    };
    info.baseline_val_nll = Some(baseline);
    // The saved parameters' validation NLL.
    let saved = info
        .history
        .iter()
        .find(|e| e.epoch == info.saved_epoch)
        .and_then(|e| e.val_nll);
    match saved {
        Some(v) => log::info!("job: validation NLL {v:.4}, linear-Gaussian baseline {baseline:.4}"),
        None => log::info!("job: linear-Gaussian baseline {baseline:.4}"),
    }
    let overfit = overfits(info);
    if let Some(words) = &overfit {
        observer(&JobEvent::Warning(words));
    }
    if let Some(nll) = saved {
        let advice = if overfit.is_some() {
            "Fewer epochs (early stopping), some --l2 or more data may help".to_string()
        } else {
            advice(model.arch.components)
        };
        warn_if_no_better(
            "validation",
            nll,
            baseline,
            "fitted on the same rows",
            &advice,
            observer,
        );
    }
    model
}

/// A model saved well after its best validation epoch (a fixed number of epochs), said so:
/// it overfits. None when it does not.
fn overfits(info: &crate::model::TrainingInfo) -> Option<String> {
    let (best, best_nll, saved_nll) = (info.best_epoch?, info.best_val_nll?, info.saved_val_nll()?);
    // Far past the best epoch, clearly worse than it (not noise), and fitting the training
    // rows better than the validation rows (a model still underfitting both, whose
    // validation NLL wanders, is not overfitting).
    let far = info.saved_epoch >= best + 3 && info.saved_epoch as f64 >= 1.5 * best as f64;
    let worse = saved_nll - best_nll > 0.02 + 0.005 * best_nll.abs();
    let train_nll = |epoch: usize| {
        info.history
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.train_nll)
    };
    let gap_grew = match (train_nll(info.saved_epoch), train_nll(best)) {
        (Some(saved_train), Some(best_train)) => {
            saved_train < saved_nll && saved_nll - saved_train > best_nll - best_train
        }
        _ => false,
    };
    (far && worse && gap_grew).then(|| {
        format!(
            "the model overfits: its validation NLL was lowest at epoch {best} ({best_nll:.4}) and rose \
             to {saved_nll:.4} by epoch {} (the saved parameters, the last of --epochs {}); leave \
             --epochs out to stop early and keep the best epoch, or add some --l2",
            info.saved_epoch, info.epochs
        )
    })
}

/// What may make a model beat the linear one, given its number of components.
pub(super) fn advice(components: usize) -> String {
    if components > 1 {
        "More epochs, fewer --components, some --l2 or more data may help".into()
    } else {
        "More epochs, a wider --hidden, some --l2 or more data may help".into()
    }
}

/// Warns when the model's NLL is no better than the linear-Gaussian baseline's.
pub(super) fn warn_if_no_better(
    what: &str,
    nll: f64,
    baseline: f64,
    how: &str,
    advice: &str,
    observer: &mut dyn FnMut(&JobEvent),
) {
    if nll >= baseline {
        observer(&JobEvent::Warning(&format!(
            "the model's {what} NLL ({nll:.4}) is no better than that of a linear model with constant \
             Gaussian noise ({baseline:.4}, {how}): it has found nothing beyond a linear trend. {advice}"
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::advice;

    #[test]
    fn a_one_component_model_was_told_fewer_components_may_help() {
        assert!(!advice(1).contains("fewer --components"), "{}", advice(1));
        assert!(advice(5).contains("fewer --components"), "{}", advice(5));
    }
}
