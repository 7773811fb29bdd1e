//! The job's options ([`TrainJob`]): every `mdn train` option by its long name, their JSON
//! (what a client of the service sends; it round-trips, unknown fields refused by name), the
//! trainer's options they make, and the checks each option gets on its own. What the rows make
//! of the options left to the defaults is `small_data`'s; checks against files are
//! `resolve`'s.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::small_data::{CROSS_VALIDATE_BELOW, CROSS_VALIDATE_MIN, LARGE};
use super::{EXAMPLE_CSV, EXAMPLE_NAME};
use crate::backend::{DeviceChoice, StepConfig};
use crate::data::{ColumnChoice, Dataset, read_csv_from, read_data};
use crate::error::{Error, Result};
use crate::layout::{Activation, Covariance, DEFAULT_SIGMA_FLOOR, Family};
use crate::train::{Stopping, TrainOptions};

/// Every option of `mdn train`, by its long name. Missing fields take `mdn train`'s
/// defaults; unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainJob {
    /// CSV with a header row, or `.npy` (None: the shipped example).
    pub data: Option<PathBuf>,
    /// Target columns by name or 0-based index (default: the last column).
    #[serde(deserialize_with = "list_or_string")]
    pub target: Vec<String>,
    /// Feature columns by name or index (default: every column that is not a target).
    #[serde(deserialize_with = "list_or_string")]
    pub features: Vec<String>,
    /// Feature columns read as categories (one-hot inputs) even if their cells are numbers;
    /// a feature column of text is categorical without being named.
    #[serde(deserialize_with = "list_or_string")]
    pub categorical: Vec<String>,
    /// Leave out rows with a missing value (an empty cell, `NA`, ...) in a column used,
    /// instead of refusing the file.
    pub drop_missing: bool,
    /// How each target is transformed before the mixture is fitted (`log`, `logit:LOW,HIGH`
    /// or `none` for every target; or `price=log;share=logit:0,1` per target).
    pub transform: String,
    /// Validation data instead of holding out `val_fraction` of `data`.
    pub val: Option<PathBuf>,
    /// Fraction of the rows held out for validation (None: 0.1, or with fewer than
    /// [`CROSS_VALIDATE_BELOW`] rows the number of epochs is chosen by cross-validation and
    /// the model refitted on every row).
    pub val_fraction: Option<f64>,
    /// Hidden layer widths (JSON: `[64, 64]` or `"64,64"`; `[]` or `"none"`: no hidden layer).
    #[serde(deserialize_with = "widths")]
    pub hidden: Vec<usize>,
    /// Mixture components K (None: adapts to the training rows, [`super::adapted_defaults`]).
    pub components: Option<usize>,
    pub covariance: Covariance,
    /// Gaussian or Student's t components.
    pub family: Family,
    pub activation: Activation,
    pub l2: f32,
    pub lr: f32,
    /// Rows per mini-batch (None: adapts to the training rows, [`super::adapted_defaults`]).
    pub batch_size: Option<usize>,
    pub clip_norm: f32,
    /// Epochs without a better validation NLL before stopping (None: adapts).
    pub patience: Option<usize>,
    /// Most epochs with early stopping (None: adapts).
    pub max_epochs: Option<usize>,
    /// Exactly this many epochs, without early stopping.
    pub epochs: Option<usize>,
    pub seed: u64,
    pub sigma_floor: f32,
    pub device: DeviceChoice,
    /// Threads of the CPU backend (None: every core).
    pub threads: Option<usize>,
    pub memory_mb: usize,
    pub stream: bool,
    pub chunk_rows: Option<usize>,
    pub checkpoint_every: Option<usize>,
    /// Write checkpoints no more often than every this many seconds (0: every
    /// `checkpoint_every` epochs, however short).
    pub checkpoint_seconds: f64,
    pub checkpoint: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// Where the model goes (None: `model.json`, or for a resumed run where that run was
    /// writing it; [`TrainJob::out_path`]).
    pub out: Option<PathBuf>,
    /// Members of a deep ensemble: this many models, each trained with its own seed (seed,
    /// seed + 1, ...), written as one model whose density is their equal-weight mixture.
    pub ensemble: usize,
}

impl Default for TrainJob {
    fn default() -> Self {
        TrainJob {
            data: None,
            target: Vec::new(),
            features: Vec::new(),
            categorical: Vec::new(),
            drop_missing: false,
            transform: "none".into(),
            val: None,
            val_fraction: None,
            hidden: vec![64],
            components: None,
            covariance: Covariance::Diagonal,
            family: Family::Gaussian,
            activation: Activation::Relu,
            l2: 0.0,
            lr: 1e-3,
            batch_size: None,
            clip_norm: 0.0,
            patience: None,
            max_epochs: None,
            epochs: None,
            seed: 0,
            sigma_floor: DEFAULT_SIGMA_FLOOR,
            device: DeviceChoice::Auto,
            threads: None,
            memory_mb: 512,
            stream: false,
            chunk_rows: None,
            checkpoint_every: None,
            checkpoint_seconds: 0.0,
            ensemble: 1,
            checkpoint: None,
            resume: None,
            out: None,
        }
    }
}

/// A JSON reader's message about a value with Rust's type names said as a person would
/// ("expected usize" is "expected a whole number, 0 or more").
fn in_words(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, words) in [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(rust, words);
    }
    m
}

/// Parses hidden widths: "64,64", or "none" (no hidden layer). An empty value (an unset
/// shell variable, a `;` too many in `mdn select`) is refused, not read as no hidden layer.
pub fn parse_widths(s: &str) -> std::result::Result<Vec<usize>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(
            "an empty value: give layer widths (64,64), or none for no hidden layer".into(),
        );
    }
    if s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("'{w}' is not a layer width (a whole number >= 1)")),
        })
        .collect()
}

fn widths<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum W {
        List(Vec<usize>),
        One(usize),
        Text(String),
    }
    match W::deserialize(d) {
        Ok(W::List(v)) if v.contains(&0) => Err(serde::de::Error::custom(
            "every layer width must be at least 1",
        )),
        Ok(W::List(v)) => Ok(v),
        Ok(W::One(0)) => Err(serde::de::Error::custom(
            "every layer width must be at least 1",
        )),
        Ok(W::One(n)) => Ok(vec![n]),
        Ok(W::Text(s)) => parse_widths(&s).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(
            "expected layer widths: [64, 64], 64, \"64,64\" or \"none\"",
        )),
    }
}

fn list_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    // A column is a name or a 0-based index: "y", 3, ["y0", "y1"], [0, 2] or "y0,y1".
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Col {
        Name(String),
        Index(u64),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        List(Vec<Col>),
        Text(String),
        Index(u64),
    }
    let name = |c: Col| match c {
        Col::Name(s) => s,
        Col::Index(i) => i.to_string(),
    };
    match L::deserialize(d) {
        Ok(L::List(v)) => Ok(v.into_iter().map(name).collect()),
        Ok(L::Text(s)) if s.trim().is_empty() => Ok(Vec::new()),
        Ok(L::Text(s)) => Ok(s.split(',').map(|c| c.trim().to_string()).collect()),
        Ok(L::Index(i)) => Ok(vec![i.to_string()]),
        Err(_) => Err(serde::de::Error::custom(
            "expected column names or 0-based indexes: \"y\", 3, [\"y0\", \"y1\"] or [0, 2]",
        )),
    }
}

impl TrainJob {
    /// Where the model goes: `--out`, else `model.json` (a resumed run's `out` is the
    /// checkpoint's once resolved).
    pub fn out_path(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("model.json"))
    }

    /// A job from its JSON description; errors name the field.
    pub fn from_json(text: &str) -> Result<TrainJob> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = in_words(&e.into_inner().to_string());
            if path.is_empty() || path == "." {
                Error::config(format!("job: {inner}"))
            } else {
                Error::config(format!("job: {path}: {inner}"))
            }
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a job is plain data")
    }

    /// The held-out fraction: as given, else 0.1.
    pub fn val_fraction(&self) -> f64 {
        self.val_fraction.unwrap_or(0.1)
    }

    /// Whether `rows` rows are few enough that the number of epochs is chosen by
    /// cross-validation (and the model refitted on every row) instead of by a validation
    /// split: only when the job leaves all of that to mdn (no `--val`, `--val-fraction` or
    /// `--epochs`, not resumed) and the data are in memory.
    pub(super) fn cross_validates(&self, rows: usize) -> bool {
        self.val.is_none()
            && self.val_fraction.is_none()
            && self.epochs.is_none()
            && self.resume.is_none()
            && (CROSS_VALIDATE_MIN..CROSS_VALIDATE_BELOW).contains(&rows)
    }

    /// The trainer's options (without the target transforms, which need the target
    /// columns: [`TrainJob::transforms`]).
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            hidden: self.hidden.clone(),
            activation: self.activation,
            components: self.components.unwrap_or(LARGE.components),
            sigma_floor: self.sigma_floor,
            covariance: self.covariance,
            family: self.family,
            step: StepConfig {
                lr: self.lr,
                l2: self.l2,
                batch_size: self.batch_size.unwrap_or(LARGE.batch_size),
                clip_norm: self.clip_norm,
                ..StepConfig::default()
            },
            stopping: match self.epochs {
                Some(epochs) => Stopping::Fixed { epochs },
                None => Stopping::Early {
                    patience: self.patience.unwrap_or(LARGE.patience),
                    max_epochs: self.max_epochs.unwrap_or(LARGE.max_epochs),
                },
            },
            seed: self.seed,
            split_seed: None,
            exact_split: true,
            transforms: Vec::new(),
        }
    }

    /// Checks every option on its own, with the option's name in the message.
    pub fn check_options(&self) -> Result<()> {
        self.options().validate()?;
        crate::transform::check_spec(&self.transform)
            .map_err(|m| Error::config(format!("--transform: {m}")))?;
        if !self.family.is_gaussian() && !crate::transform::spec_is_none(&self.transform) {
            return Err(Error::config(crate::train::student_with_transform()));
        }
        if !(0.0..1.0).contains(&self.val_fraction()) {
            return Err(Error::config(format!(
                "--val-fraction must be in [0, 1), got {}",
                self.val_fraction()
            )));
        }
        if let (Some(f), Some(val)) = (self.val_fraction, &self.val) {
            return Err(Error::config(format!(
                "--val-fraction {f} and --val {} both given: with --val the validation rows are that \
                 file's and nothing is held out; drop one of them",
                val.display()
            )));
        }
        if self.epochs.is_none() && self.val.is_none() && self.val_fraction() == 0.0 {
            return Err(Error::config(
                "early stopping needs validation data: give --val FILE or --val-fraction > 0, or run a fixed number of --epochs",
            ));
        }
        if self.memory_mb == 0 {
            return Err(Error::config("--memory-mb must be at least 1"));
        }
        if self.chunk_rows == Some(0) {
            return Err(Error::config("--chunk-rows must be at least 1"));
        }
        if self.checkpoint_every == Some(0) {
            return Err(Error::config("--checkpoint-every must be at least 1"));
        }
        if !(1..=100).contains(&self.ensemble) {
            return Err(Error::config(format!(
                "--ensemble must be between 1 and 100 members, got {}",
                self.ensemble
            )));
        }
        if !(self.checkpoint_seconds.is_finite() && self.checkpoint_seconds >= 0.0) {
            return Err(Error::config(format!(
                "--checkpoint-seconds must be 0 or more, got {}",
                self.checkpoint_seconds
            )));
        }
        if self.threads == Some(0) || self.threads.is_some_and(|t| t > 1024) {
            return Err(Error::config("--threads must be between 1 and 1024"));
        }
        if self.stream && self.data.is_none() {
            return Err(Error::config("--stream needs --data FILE"));
        }
        Ok(())
    }

    /// Sets the model and fitting options from trainer options (a checkpoint's).
    pub(super) fn set_options(&mut self, o: &TrainOptions) {
        self.hidden = o.hidden.clone();
        self.activation = o.activation;
        self.components = Some(o.components);
        self.sigma_floor = o.sigma_floor;
        self.covariance = o.covariance;
        self.family = o.family;
        self.lr = o.step.lr;
        self.l2 = o.step.l2;
        self.batch_size = Some(o.step.batch_size);
        self.clip_norm = o.step.clip_norm;
        match o.stopping {
            Stopping::Fixed { epochs } => self.epochs = Some(epochs),
            Stopping::Early {
                patience,
                max_epochs,
            } => {
                self.epochs = None;
                self.patience = Some(patience);
                self.max_epochs = Some(max_epochs);
            }
        }
        self.seed = o.seed;
        self.transform = if o.transforms.is_empty() {
            "none".into()
        } else {
            crate::transform::spec(&o.transforms, &self.target)
        };
    }

    /// The per-target transforms `transform` names for `targets` (empty: none).
    pub(super) fn transforms(
        &self,
        targets: &[String],
    ) -> Result<Vec<crate::transform::Transform>> {
        crate::transform::parse_spec(&self.transform, targets)
            .map_err(|m| Error::config(format!("--transform: {m}")))
    }

    pub(super) fn data_name(&self) -> String {
        self.data
            .as_deref()
            .unwrap_or(Path::new(EXAMPLE_NAME))
            .display()
            .to_string()
    }

    /// Reads the whole data set (the shipped example without `data`), exactly these columns.
    pub(super) fn read_all(&self, choice: &ColumnChoice) -> Result<Dataset> {
        match &self.data {
            Some(path) => read_data(path, choice),
            None => read_csv_from(EXAMPLE_CSV, Path::new(EXAMPLE_NAME), choice),
        }
    }

    /// [`TrainJob::read_all`] and what the read said (rows left out by `--drop-missing`, its
    /// warnings), for the caller to tell.
    pub(super) fn read_all_noting(
        &self,
        choice: &ColumnChoice,
    ) -> Result<(Dataset, crate::data::ReadNotes)> {
        match &self.data {
            Some(path) => crate::data::read_data_noting(path, choice),
            None => Ok((
                read_csv_from(EXAMPLE_CSV, Path::new(EXAMPLE_NAME), choice)?,
                Default::default(),
            )),
        }
    }
}
