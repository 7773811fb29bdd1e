//! A job against the files it names, before any row is read: a checkpoint to resume (whose
//! data and options then replace the job's), the outputs (writable, never the data), the data
//! file's header and the columns, the validation file's header, the model's shape, and whether
//! to stream. Rows given in memory (the Python package's arrays) are resolved the same way.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::options::TrainJob;
use super::small_data::LARGE;
use super::{EXAMPLE_CSV, EXAMPLE_NAME, ResolvedJob};
use crate::atomic::check_writable;
use crate::categorical::Categorical;
use crate::checkpoint::{Checkpoint, DataSpec, EnsembleCheckpoint, Loaded};
use crate::data::{ColumnChoice, Dataset};
use crate::error::{Error, Result};
use crate::train::TrainOptions;

impl TrainJob {
    /// Takes a checkpoint's data, options and checkpoint settings (a resumed run continues
    /// exactly as it started).
    fn resume_from(&mut self, path: &Path, data: &DataSpec, options: &TrainOptions, every: usize) {
        self.data = data.data.clone();
        self.target = data.target.clone();
        self.features = data.features.clone();
        self.categorical = data.categorical.clone();
        self.drop_missing = data.drop_missing;
        self.val = data.val.clone();
        self.val_fraction = Some(data.val_fraction);
        self.stream = data.stream;
        self.chunk_rows = data.chunk_rows;
        if data.memory_mb > 0 {
            self.memory_mb = data.memory_mb;
        }
        self.set_options(options);
        if self.out.is_none() {
            self.out = data.out.clone();
        }
        self.checkpoint = Some(self.checkpoint.clone().unwrap_or(path.to_path_buf()));
        self.checkpoint_every = Some(self.checkpoint_every.unwrap_or(every));
    }

    /// For a job given with `resume`: which of `keys` (field names, as in the job's JSON)
    /// differ from the values the checkpoint's run has, as (key, given, the checkpoint's),
    /// each value as JSON. A scheduler that requeues a run repeats its whole command line
    /// with `--resume`: options that agree are fine, and only those that differ are refused.
    pub fn resume_disagreements(&self, keys: &[&str]) -> Result<Vec<(String, String, String)>> {
        let Some(path) = &self.resume else {
            return Ok(Vec::new());
        };
        let mut from = TrainJob::default();
        match Loaded::load(path)? {
            Loaded::Ensemble(c) => {
                from.resume_from(path, &c.data, &c.options, c.every);
                from.ensemble = c.members.len();
            }
            Loaded::Single(c) => {
                from.resume_from(path, &c.data, &c.options, c.every);
                from.ensemble = 1;
            }
        }
        let given = serde_json::to_value(self).expect("a job is plain data");
        let checkpoint = serde_json::to_value(&from).expect("a job is plain data");
        let same_file = |a: &Value, b: &Value| match (a.as_str(), b.as_str()) {
            (Some(a), Some(b)) => match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            },
            _ => a == b,
        };
        Ok(keys
            .iter()
            .filter_map(|&k| {
                let (g, c) = (&given[k], &checkpoint[k]);
                let agree = match k {
                    "data" | "val" => same_file(g, c),
                    _ => g == c,
                };
                (!agree).then(|| (k.to_string(), shown(g), shown(c)))
            })
            .collect())
    }

    /// Checks the job before any work: the options, a checkpoint to resume (whose data and
    /// options then replace the job's), the output, the data's header and columns, and the
    /// validation file's header; decides whether to stream.
    pub fn resolve(mut self) -> Result<ResolvedJob> {
        let out_given = self.out.is_some();
        let (resume, ensemble_resume) = self.take_checkpoint()?;
        self.check_options()?;
        let checkpoint_path = self.check_outputs(out_given)?;
        let (features, targets, categorical) = self.columns()?;
        let streamed = self.streams(&features, &targets);
        // A resumed run continues with exactly the checkpoint's options (Adam's constants
        // included, which have no option of their own).
        let options = match (&resume, &ensemble_resume) {
            (Some(c), _) => c.options.clone(),
            (_, Some(c)) => c.options.clone(),
            _ => TrainOptions {
                transforms: self.transforms(&targets)?,
                ..self.options()
            },
        };
        Ok(ResolvedJob {
            options,
            job: self,
            features,
            targets,
            categorical,
            streamed,
            resume,
            ensemble_resume,
            sink: None,
            converted: None,
            left_out: Default::default(),
            val_file: None,
            checkpoint_path,
            arrays: None,
            epoch_choice: None,
            packer: None,
        })
    }

    /// The checkpoint to resume, loaded, its data and options taken into the job: one
    /// network's or an ensemble's.
    fn take_checkpoint(&mut self) -> Result<(Option<Checkpoint>, Option<EnsembleCheckpoint>)> {
        let loaded = self.resume.as_deref().map(Loaded::load).transpose()?;
        Ok(match loaded {
            Some(Loaded::Ensemble(c)) => {
                let path = self.resume.clone().expect("loaded from it");
                self.resume_from(&path, &c.data, &c.options, c.every);
                self.ensemble = c.members.len();
                (None, Some(c))
            }
            Some(Loaded::Single(c)) => {
                let path = self.resume.clone().expect("loaded from it");
                self.resume_from(&path, &c.data, &c.options, c.every);
                self.ensemble = 1;
                (Some(c), None)
            }
            None => (None, None),
        })
    }

    /// Checks that the model and the checkpoints can be written, and never over the data;
    /// returns where checkpoints go.
    fn check_outputs(&self, out_given: bool) -> Result<PathBuf> {
        let out = self.out_path();
        let out_label = if self.resume.is_some() && !out_given {
            "the resumed run's --out (give --out to write elsewhere)"
        } else {
            "--out"
        };
        check_writable(&out, out_label)?;
        let checkpoint_path = self
            .checkpoint
            .clone()
            .unwrap_or_else(|| Checkpoint::default_path(&out));
        if self.checkpoint_every.is_some() {
            check_writable(&checkpoint_path, "--checkpoint")?;
        }
        if self.checkpoint.is_some() && crate::atomic::same_file(&checkpoint_path, &out) {
            return Err(Error::config(format!(
                "--checkpoint {} is the --out file: the checkpoint and the model would overwrite \
                 each other; choose another name",
                checkpoint_path.display()
            )));
        }
        // Never write over the data.
        for (what, path) in [
            ("--out", Some(&out)),
            ("--checkpoint", Some(&checkpoint_path)),
        ] {
            for (role, input) in [("--data", self.data.as_ref()), ("--val", self.val.as_ref())] {
                if let (Some(p), Some(input)) = (path, input)
                    && crate::atomic::same_file(p, input)
                {
                    return Err(Error::config(format!(
                        "{what} {} is the {role} file: the model would overwrite the data; choose another name",
                        p.display()
                    )));
                }
            }
        }
        Ok(checkpoint_path)
    }

    /// The network's inputs and targets, from the data file's header (the validation file
    /// must have them too) and, where a feature column is categorical, its categories learnt
    /// from the training rows ([`crate::categorical::learn_categories`]: the file's first rows
    /// are read to see whether any feature column is text, and the whole file when one is).
    /// The model's shape is checked on them: too many parameters, or full covariance over
    /// too many targets, is refused before training.
    fn columns(&self) -> Result<(Vec<String>, Vec<String>, Vec<Categorical>)> {
        let choice = ColumnChoice::Train {
            targets: (!self.target.is_empty()).then(|| self.target.clone()),
            features: (!self.features.is_empty()).then(|| self.features.clone()),
        };
        let (columns, targets) = match &self.data {
            Some(path) => choice.names(&crate::data::header(path)?, path)?,
            None => {
                let header = crate::data::CsvRows::new(EXAMPLE_CSV, Path::new(EXAMPLE_NAME))?;
                choice.names(&header.header, Path::new(EXAMPLE_NAME))?
            }
        };
        let categorical = match &self.data {
            Some(path) => {
                // `--categorical` split at a comma a column's name has, joined again.
                let named =
                    crate::data::rejoin_names(&self.categorical, &crate::data::header(path)?);
                crate::categorical::learn_categories(path, &columns, &named)?
            }
            None if !self.categorical.is_empty() => {
                return Err(Error::config(
                    "--categorical names columns of a data file: give it with --data",
                ));
            }
            None => Vec::new(),
        };
        // The network's inputs: a categorical column's indicators in its place.
        let features: Vec<String> = columns
            .iter()
            .flat_map(|c| match categorical.iter().find(|k| &k.column == c) {
                Some(k) => k.input_names(),
                None => vec![c.clone()],
            })
            .collect();
        if let Some(v) = &self.val {
            // The validation file must have the training columns (by name).
            ColumnChoice::model(&features, &targets, &categorical, true)
                .names(&crate::data::header(v)?, v)?;
        }
        self.check_shape(features.len(), targets.len())?;
        Ok((features, targets, categorical))
    }

    /// The model's shape for `d_in` features and `d_out` targets, checked.
    fn check_shape(&self, d_in: usize, d_out: usize) -> Result<()> {
        crate::layout::Arch::new(
            d_in,
            self.hidden.clone(),
            self.activation,
            self.components.unwrap_or(LARGE.components),
            d_out,
        )?
        .with_covariance(self.covariance)?
        .with_family(self.family)
        .validate()?;
        Ok(())
    }

    /// Whether the data are streamed: asked for, or the file is larger than half of
    /// `--memory-mb`. Logged with the columns.
    fn streams(&self, features: &[String], targets: &[String]) -> bool {
        let budget = self.memory_mb << 20;
        let big = self
            .data
            .as_deref()
            .is_some_and(|p| std::fs::metadata(p).is_ok_and(|m| m.len() as usize > budget / 2));
        let streamed = self.stream || self.chunk_rows.is_some() || big;
        log::info!(
            "job: data {}, [{}] -> [{}], {}",
            self.data_name(),
            features.join(", "),
            targets.join(", "),
            if streamed {
                if big && !self.stream && self.chunk_rows.is_none() {
                    "streamed (the file is larger than half of --memory-mb)"
                } else {
                    "streamed (--stream or --chunk-rows)"
                }
            } else {
                "in memory"
            }
        );
        streamed
    }

    /// Checks the job for rows already in memory (the Python package's arrays) instead of
    /// files: every option as [`TrainJob::resolve`] checks it, the columns from the data
    /// sets. `data`, `val`, `stream` and `resume` must be unset; the data set's `path` names
    /// it in messages. Training then runs exactly as for the same rows read from a file.
    pub fn resolve_arrays(mut self, train: Dataset, val: Option<Dataset>) -> Result<ResolvedJob> {
        for (what, set) in [
            ("data", self.data.is_some()),
            ("categorical", !self.categorical.is_empty()),
            ("drop_missing", self.drop_missing),
            ("val", self.val.is_some()),
            ("stream", self.stream || self.chunk_rows.is_some()),
            ("resume", self.resume.is_some()),
        ] {
            if set {
                return Err(Error::config(format!(
                    "{what} does not apply to rows given in memory"
                )));
            }
        }
        self.check_options()?;
        if let (Some(f), Some(_)) = (self.val_fraction, &val) {
            return Err(Error::config(format!(
                "--val-fraction {f} and validation rows both given: with validation rows nothing is \
                 held out; drop one of them"
            )));
        }
        if let Some(v) = &val
            && (v.features != train.features || v.targets != train.targets)
        {
            return Err(Error::config(format!(
                "the validation rows have columns [{}] -> [{}], the training rows [{}] -> [{}]",
                v.features.join(", "),
                v.targets.join(", "),
                train.features.join(", "),
                train.targets.join(", ")
            )));
        }
        self.check_shape(train.features.len(), train.targets.len())?;
        // Names the rows in messages and in the model's training record.
        self.data = Some(train.path.clone());
        let checkpoint_path = self
            .checkpoint
            .clone()
            .unwrap_or_else(|| Checkpoint::default_path(&self.out_path()));
        let transforms = self.transforms(&train.targets)?;
        // A target outside its transform's support, by its row in the array given.
        for d in std::iter::once(&train).chain(val.as_ref()) {
            crate::model::transformed_targets(&d.path, &d.targets, &transforms, &d.y)?;
        }
        Ok(ResolvedJob {
            options: TrainOptions {
                transforms,
                ..self.options()
            },
            job: self,
            features: train.features.clone(),
            targets: train.targets.clone(),
            categorical: Vec::new(),
            streamed: false,
            resume: None,
            ensemble_resume: None,
            sink: None,
            converted: None,
            left_out: Default::default(),
            val_file: None,
            checkpoint_path,
            arrays: Some(std::sync::Arc::new((train, val))),
            epoch_choice: None,
            packer: None,
        })
    }
}

/// A job's option as a person writes it: `0.01`, not the f32's `0.009999999776482582`;
/// lists and names without JSON's quotes where plain.
fn shown(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (x as f32) as f64 == x {
                (x as f32).to_string()
            } else {
                x.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(","),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}
