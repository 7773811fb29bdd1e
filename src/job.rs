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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::atomic::{TempNpy, check_writable};
use crate::backend::{self, Backend, DeviceChoice, StepConfig, TrainState};
use crate::checkpoint::{Checkpoint, DataSpec, EnsembleCheckpoint, Loaded, MemberState};
use crate::data::{ColumnChoice, Dataset, NpySource, RowSource, read_csv_from, read_data};
use crate::error::{Error, Result};
use crate::layout::{Activation, Covariance, DEFAULT_SIGMA_FLOOR};
use crate::model::{ComponentsChoice, EpochChoice, Model};
use crate::scaler::Scaler;
use crate::train::{
    Checkpointer, LoopState, Resume, Stopping, StreamOptions, TrainEvent, TrainOptions,
    split_validation_by,
};
use serde_json::Value;

/// The example data set used without `--data` (Bishop's inverse problem, `assets/`).
pub const EXAMPLE_CSV: &[u8] = include_bytes!("../assets/bishop.csv");
/// How the example is named in messages.
pub const EXAMPLE_NAME: &str = "assets/bishop.csv";

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
    /// Validation data instead of holding out `val_fraction` of `data`.
    pub val: Option<PathBuf>,
    /// Fraction of the rows held out for validation (None: 0.1, or with fewer than
    /// [`CROSS_VALIDATE_BELOW`] rows the number of epochs is chosen by cross-validation and
    /// the model refitted on every row).
    pub val_fraction: Option<f64>,
    /// Hidden layer widths (JSON: `[64, 64]` or `"64,64"`; `[]` or `"none"`: no hidden layer).
    #[serde(deserialize_with = "widths")]
    pub hidden: Vec<usize>,
    /// Mixture components K (None: adapts to the training rows, [`adapted_defaults`]).
    pub components: Option<usize>,
    pub covariance: Covariance,
    pub activation: Activation,
    pub l2: f32,
    pub lr: f32,
    /// Rows per mini-batch (None: adapts to the training rows, [`adapted_defaults`]).
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
            val: None,
            val_fraction: None,
            hidden: vec![64],
            components: None,
            covariance: Covariance::Diagonal,
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

/// The defaults that adapt to the data: rows per batch, patience and the epoch limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Adapted {
    pub batch_size: usize,
    pub components: usize,
    pub patience: usize,
    pub max_epochs: usize,
}

/// What the adapted defaults are from 32,768 training rows up (128 batches an epoch), and what
/// `options()` uses before the rows are known.
pub const LARGE: Adapted = Adapted {
    batch_size: 256,
    components: 5,
    patience: 10,
    max_epochs: 200,
};

/// The defaults for `n` training rows (the README's "Small data" states this rule):
/// - batch = the largest power of two at most n/128, kept within 32..=256, and at most n
///   (32 below 8,192 rows: on real tabular data of a few thousand rows, small batches reach
///   a better held-out NLL, and an epoch of them takes milliseconds);
/// - components K = n/20 within 1..=5 (at least 20 rows per component below 100 rows);
/// - with s = ceil(n / batch) steps per epoch: patience = ceil(100 / s) within 10..=50 and
///   the epoch limit ceil(3000 / s) within 200..=2000,
///
/// so that a small data set gets small batches and, epochs being short, more of them before
/// stopping, while from 32,768 rows on (128 batches of 256) they are 256, 10 and 200.
pub fn adapted_defaults(n: usize) -> Adapted {
    let n = n.max(1);
    let pow2 = |m: usize| if m == 0 { 1 } else { 1usize << m.ilog2() };
    let batch_size = pow2(n / 128).clamp(32, 256).min(n);
    let steps = n.div_ceil(batch_size);
    Adapted {
        batch_size,
        components: (n / 20).clamp(1, 5),
        patience: 100usize.div_ceil(steps).clamp(10, 50),
        max_epochs: 3000usize.div_ceil(steps).clamp(200, 2000),
    }
}

/// Below this many rows (a 10% split would hold out fewer than 150), a job that leaves the
/// validation to mdn chooses the number of epochs by [`CV_FOLDS`]-fold cross-validation
/// and refits on every row, rather than trusting a few dozen or a hundred validation rows.
/// (It was 500 until the small-data benchmark measured 630-1,710 training rows: README,
/// "Defaults that adapt to the data".)
pub const CROSS_VALIDATE_BELOW: usize = 1500;
/// Fewer rows than this cannot be cross-validated (each fold needs two rows).
pub const CROSS_VALIDATE_MIN: usize = 10;
/// Folds of the cross-validation that chooses the number of epochs.
pub const CV_FOLDS: usize = 5;
/// ChaCha8 stream of the permutation behind those folds.
const CV_STREAM: u64 = 7;

/// The folds of the cross-validation that chooses the number of epochs: [`CV_FOLDS`] folds
/// of `rows` rows, as equal as the rows allow (sizes differ by at most one), from a
/// permutation by `seed`; each as (held-out rows, training rows), in file order.
pub fn cv_folds(rows: usize, seed: u64) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..rows).collect();
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(CV_STREAM);
        order.shuffle(&mut rng);
    }
    (0..CV_FOLDS)
        .map(|f| {
            let (mut held, mut rest): (Vec<usize>, Vec<usize>) =
                (0..rows).partition(|&i| i % CV_FOLDS == f);
            held.iter_mut().for_each(|i| *i = order[*i]);
            rest.iter_mut().for_each(|i| *i = order[*i]);
            held.sort_unstable();
            rest.sort_unstable();
            (held, rest)
        })
        .collect()
}

/// One fold of [`cross_validate_epochs`], as it ends.
#[derive(Debug, Clone, Copy)]
pub struct FoldReport {
    /// 0-based.
    pub fold: usize,
    pub held_out: usize,
    pub best_epoch: usize,
    /// Epochs it ran before it stopped.
    pub epochs: usize,
    /// Held-out NLL at its best epoch.
    pub nll: f64,
    /// A linear-Gaussian model's on the same rows.
    pub baseline: f64,
}

/// Chooses the number of epochs for a data set too small to spare a validation split: on
/// each of the [`cv_folds`], a model with `opts(training rows)` trained on the other folds
/// early-stops on the held-out one; the choice is the median of their best epochs, and each
/// fold is scored at that epoch (not at its own best, which would flatter it). `observer`
/// hears every fit's events (false stops the fit: an [`Error::Interrupted`]).
pub fn cross_validate_epochs(
    backend: &mut dyn Backend,
    data: &Dataset,
    seed: u64,
    opts: &dyn Fn(usize) -> TrainOptions,
    fold_done: &mut dyn FnMut(FoldReport),
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<EpochChoice> {
    let (mut best_epochs, mut curves, mut baseline_nll) = (Vec::new(), Vec::new(), Vec::new());
    for (f, (held, rest)) in cv_folds(data.rows, seed).iter().enumerate() {
        let (train, test) = (data.subset(rest), data.subset(held));
        let mut stopped = false;
        let model =
            crate::train::train(backend, &train, Some(&test), &opts(train.rows), &mut |e| {
                let go = observer(e);
                stopped |= !go;
                go
            })?;
        if stopped {
            return Err(Error::Interrupted(
                "interrupted while choosing the number of epochs".into(),
            ));
        }
        let info = model
            .training
            .as_ref()
            .expect("the trainer records its run");
        let (epoch, nll) = (
            info.best_epoch.unwrap_or(info.epochs),
            info.best_val_nll.unwrap_or(f64::NAN),
        );
        let baseline = crate::baseline::LinearGaussian::fit(&train).mean_nll(&test);
        fold_done(FoldReport {
            fold: f,
            held_out: test.rows,
            best_epoch: epoch,
            epochs: info.epochs,
            nll,
            baseline,
        });
        best_epochs.push(epoch);
        curves.push(info.history.iter().map(|e| e.val_nll).collect::<Vec<_>>());
        baseline_nll.push(baseline);
    }
    let mut sorted = best_epochs.clone();
    sorted.sort_unstable();
    let epochs = sorted[sorted.len() / 2].max(1);
    // Each fold scored at the chosen number of epochs (not at its own best, which would
    // flatter it): the last epoch it ran when it stopped sooner.
    let fold_nll: Vec<f64> = curves
        .iter()
        .map(|c| {
            c.get(epochs.min(c.len()).saturating_sub(1))
                .copied()
                .flatten()
                .unwrap_or(f64::NAN)
        })
        .collect();
    let k = fold_nll.len() as f64;
    let (cv_nll, var) = crate::stats::mean_var(&fold_nll);
    Ok(EpochChoice {
        folds: fold_nll.len(),
        fold_best_epochs: best_epochs,
        fold_nll,
        cv_nll,
        cv_se: (var / k).sqrt(),
        baseline_cv_nll: baseline_nll.iter().sum::<f64>() / k,
        epochs,
        components: Vec::new(),
    })
}

/// Whether two paths name the same file (by their canonical paths; a file that does not exist
/// yet is compared by its directory's canonical path and its name).
fn same_file(a: &Path, b: &Path) -> bool {
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

/// Parses hidden widths: "64,64", "none" or "" (no hidden layer).
pub fn parse_widths(s: &str) -> std::result::Result<Vec<usize>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
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
            let inner = e.into_inner();
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
    fn cross_validates(&self, rows: usize) -> bool {
        self.val.is_none()
            && self.val_fraction.is_none()
            && self.epochs.is_none()
            && self.resume.is_none()
            && (CROSS_VALIDATE_MIN..CROSS_VALIDATE_BELOW).contains(&rows)
    }

    /// The trainer's options.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            hidden: self.hidden.clone(),
            activation: self.activation,
            components: self.components.unwrap_or(LARGE.components),
            sigma_floor: self.sigma_floor,
            covariance: self.covariance,
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
        }
    }

    /// Checks every option on its own, with the option's name in the message.
    pub fn check_options(&self) -> Result<()> {
        self.options().validate()?;
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

    /// Checks the job before any work: the options, a checkpoint to resume (whose data and
    /// options then replace the job's), the output, the data's header and columns, and the
    /// validation file's header; decides whether to stream.
    /// Takes a checkpoint's data, options and checkpoint settings (a resumed run continues
    /// exactly as it started).
    fn resume_from(&mut self, path: &Path, data: &DataSpec, options: &TrainOptions, every: usize) {
        self.data = data.data.clone();
        self.target = data.target.clone();
        self.features = data.features.clone();
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

    pub fn resolve(mut self) -> Result<ResolvedJob> {
        let out_given = self.out.is_some();
        let loaded = self.resume.as_deref().map(Loaded::load).transpose()?;
        let (resume, ensemble_resume) = match loaded {
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
        };
        self.check_options()?;
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
        // Never write over the data.
        for (what, path) in [
            ("--out", Some(&out)),
            ("--checkpoint", Some(&checkpoint_path)),
        ] {
            for (role, input) in [("--data", self.data.as_ref()), ("--val", self.val.as_ref())] {
                if let (Some(p), Some(input)) = (path, input)
                    && same_file(p, input)
                {
                    return Err(Error::config(format!(
                        "{what} {} is the {role} file: the model would overwrite the data; choose another name",
                        p.display()
                    )));
                }
            }
        }
        let choice = ColumnChoice::Train {
            targets: (!self.target.is_empty()).then(|| self.target.clone()),
            features: (!self.features.is_empty()).then(|| self.features.clone()),
        };
        let (features, targets) = match &self.data {
            Some(path) => choice.names(&crate::data::header(path)?, path)?,
            None => {
                let header = crate::data::CsvRows::new(EXAMPLE_CSV, Path::new(EXAMPLE_NAME))?;
                choice.names(&header.header, Path::new(EXAMPLE_NAME))?
            }
        };
        if let Some(v) = &self.val {
            // The validation file must have the training columns (by name).
            ColumnChoice::Model {
                features: features.clone(),
                targets: targets.clone(),
                need_targets: true,
            }
            .names(&crate::data::header(v)?, v)?;
        }
        // The model's shape, from the columns: too many parameters, or full covariance over
        // too many targets, is refused before any data is read.
        crate::layout::Arch::new(
            features.len(),
            self.hidden.clone(),
            self.activation,
            self.components.unwrap_or(LARGE.components),
            targets.len(),
        )?
        .with_covariance(self.covariance)?;
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
        // A resumed run continues with exactly the checkpoint's options (Adam's constants
        // included, which have no option of their own).
        let options = match (&resume, &ensemble_resume) {
            (Some(c), _) => c.options.clone(),
            (_, Some(c)) => c.options.clone(),
            _ => self.options(),
        };
        Ok(ResolvedJob {
            options,
            job: self,
            features,
            targets,
            streamed,
            resume,
            ensemble_resume,
            sink: None,
            converted: None,
            checkpoint_path,
            arrays: None,
            epoch_choice: None,
        })
    }

    /// Checks the job for rows already in memory (the Python package's arrays) instead of
    /// files: every option as [`TrainJob::resolve`] checks it, the columns from the data
    /// sets. `data`, `val`, `stream` and `resume` must be unset; the data set's `path` names
    /// it in messages. Training then runs exactly as for the same rows read from a file.
    pub fn resolve_arrays(mut self, train: Dataset, val: Option<Dataset>) -> Result<ResolvedJob> {
        for (what, set) in [
            ("data", self.data.is_some()),
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
        crate::layout::Arch::new(
            train.features.len(),
            self.hidden.clone(),
            self.activation,
            self.components.unwrap_or(LARGE.components),
            train.targets.len(),
        )?
        .with_covariance(self.covariance)?;
        // Names the rows in messages and in the model's training record.
        self.data = Some(train.path.clone());
        let checkpoint_path = self
            .checkpoint
            .clone()
            .unwrap_or_else(|| Checkpoint::default_path(&self.out_path()));
        Ok(ResolvedJob {
            options: self.options(),
            job: self,
            features: train.features.clone(),
            targets: train.targets.clone(),
            streamed: false,
            resume: None,
            ensemble_resume: None,
            sink: None,
            converted: None,
            checkpoint_path,
            arrays: Some(std::sync::Arc::new((train, val))),
            epoch_choice: None,
        })
    }

    /// Sets the model and fitting options from trainer options (a checkpoint's).
    fn set_options(&mut self, o: &TrainOptions) {
        self.hidden = o.hidden.clone();
        self.activation = o.activation;
        self.components = Some(o.components);
        self.sigma_floor = o.sigma_floor;
        self.covariance = o.covariance;
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
    }

    fn data_name(&self) -> String {
        self.data
            .as_deref()
            .unwrap_or(Path::new(EXAMPLE_NAME))
            .display()
            .to_string()
    }

    /// Reads the whole data set (the shipped example without `data`), exactly these columns.
    fn read_all(&self, choice: &ColumnChoice) -> Result<Dataset> {
        match &self.data {
            Some(path) => read_data(path, choice),
            None => read_csv_from(EXAMPLE_CSV, Path::new(EXAMPLE_NAME), choice),
        }
    }
}

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
}

/// Where an ensemble member's checkpoints go: its slot of the ensemble's checkpoint (shared
/// by the members training side by side), written whole after every update.
#[derive(Debug, Clone)]
struct MemberSink {
    shared: std::sync::Arc<std::sync::Mutex<Option<EnsembleCheckpoint>>>,
    member: usize,
    members: usize,
}

impl MemberSink {
    /// Member `self.member`'s run state into the ensemble's checkpoint (made from this
    /// member's data, options and standardisation if there is none yet), saved to `path`.
    fn write(&self, path: &Path, single: Checkpoint) -> Result<()> {
        let mut guard = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.get_or_insert_with(|| {
            let base = single.options.split_seed();
            EnsembleCheckpoint::new(
                single.data.clone(),
                TrainOptions {
                    seed: base,
                    split_seed: None,
                    ..single.options.clone()
                },
                single.every,
                (single.x_scaler.clone(), single.y_scaler.clone()),
                self.members,
            )
        });
        c.members[self.member] = Some(MemberState {
            state: single.state,
            trainer: single.trainer,
        });
        c.save(path)
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

/// A checkpoint that did not fit on a full disk is skipped with a warning (once, until one
/// fits again), not the end of the run: the previous one stays whole (checkpoints are written
/// beside and renamed), and the next checkpoint tries again.
fn full_disk_is_not_fatal(r: Result<()>, failing: &mut bool) -> Result<()> {
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
    /// [`Error::Interrupted`] and nothing is written.
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
        self.job.read_all(&ColumnChoice::exactly(
            self.features.clone(),
            self.targets.clone(),
        ))
    }

    /// Trains and returns the model without writing it. With `ensemble` M > 1: M members,
    /// each the whole job with seed `seed + m` for its initial weights and row orders, on the
    /// same rows, standardisation and validation split (those from `seed`), each with its own
    /// early stopping; a small data set's number of epochs is cross-validated once, for all
    /// of them. On a GPU the members train together, in the same dispatches; on the CPU side
    /// by side, the threads shared out. A cancel keeps the members finished so far (and those
    /// it stopped, at their best epochs).
    pub fn train(&self, observer: &mut dyn FnMut(&JobEvent), cancel: &AtomicBool) -> Result<Model> {
        let model = self.train_all(observer, cancel)?;
        if let Some(t) = model.training.as_ref() {
            for name in &t.constant_features {
                observer(&JobEvent::Warning(&format!(
                    "feature column '{name}' is constant in the training rows: it tells the model nothing, \
                     so the model ignores it (whatever value it takes when predicting)"
                )));
            }
        }
        Ok(model)
    }

    /// [`ResolvedJob::train`] but for the warnings on the finished model.
    fn train_all(&self, observer: &mut dyn FnMut(&JobEvent), cancel: &AtomicBool) -> Result<Model> {
        let m = self.job.ensemble.max(1);
        if m == 1 {
            return Ok(self
                .train_members(&[self.job.seed], observer, cancel)?
                .remove(0));
        }
        let mut shared = self.clone();
        if !self.streamed && self.ensemble_resume.is_none() {
            // The rows once, for every member.
            if shared.arrays.is_none() {
                let data = self.read_data()?;
                shared.arrays = Some(std::sync::Arc::new((data, None)));
            }
            let data = &shared.arrays.as_ref().expect("just set").0;
            let has_val =
                self.job.val.is_some() || shared.arrays.as_ref().is_some_and(|a| a.1.is_some());
            if self.job.cross_validates(data.rows) && !has_val {
                let (mut backend, _) = self.open_backend()?;
                let choice = self.choose_epochs(data, backend.as_mut(), observer, cancel)?;
                // Judged once for the whole ensemble (its members stay quiet about it).
                warn_if_no_better(
                    "cross-validated",
                    choice.cv_nll,
                    choice.baseline_cv_nll,
                    "on the same folds",
                    observer,
                );
                shared.epoch_choice = Some(choice);
            }
        }
        // A streamed CSV is converted once for all the members (the file is removed when the
        // run ends, held until then by `_converted`).
        let _converted = match self
            .job
            .data
            .as_ref()
            .filter(|p| self.streamed && !crate::data::is_npy(p))
        {
            Some(p) => {
                let tmp = self.convert_to_stream(p, observer, cancel)?;
                shared.converted = Some(tmp.path().to_path_buf());
                Some(tmp)
            }
            None => None,
        };
        let seeds: Vec<u64> = (0..m as u64).map(|i| self.job.seed + i).collect();
        // Checkpoints: one file for the ensemble, a slot per member (kept from the checkpoint
        // resumed, so that members already done stay done).
        let sink = self
            .job
            .checkpoint_every
            .is_some()
            .then(|| std::sync::Arc::new(std::sync::Mutex::new(self.ensemble_resume.clone())));
        let member = |i: usize, threads: Option<usize>| {
            let mut one = shared.clone();
            one.options.seed = seeds[i];
            one.options.split_seed = Some(self.job.seed);
            one.job.seed = seeds[i];
            one.job.ensemble = 1;
            one.job.threads = threads;
            one.ensemble_resume = None;
            one.resume = self.ensemble_resume.as_ref().and_then(|c| c.member(i));
            one.sink = sink.as_ref().map(|shared| MemberSink {
                shared: shared.clone(),
                member: i,
                members: m,
            });
            one
        };
        let on_cpu = match self.job.device {
            DeviceChoice::Cpu => true,
            DeviceChoice::Auto => backend::auto_device().0 == DeviceChoice::Cpu,
            _ => false,
        };
        let mut models: Vec<Model> = Vec::with_capacity(m);
        // Members resumed together must be at one Adam step (as training together leaves
        // them); otherwise (a checkpoint of members trained side by side) one after another.
        let together = match &self.ensemble_resume {
            None => true,
            Some(c) => {
                let steps: Vec<Option<u64>> = c
                    .members
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.state.adam.step))
                    .collect();
                steps.iter().all(|s| s.is_some() && *s == steps[0])
            }
        };
        if !on_cpu && !self.streamed && together {
            // On a GPU: every member in the same dispatches.
            observer(&JobEvent::Note(&format!(
                "ensemble of {m}: trained together on the GPU (seeds {} to {})",
                seeds[0],
                seeds[m - 1]
            )));
            let mut all = member(0, self.job.threads);
            all.job.ensemble = m;
            all.resume = None;
            all.sink = None;
            all.ensemble_resume = self.ensemble_resume.clone();
            models = all.train_members(&seeds, observer, cancel)?;
            if cancel.load(Ordering::Relaxed) {
                observer(&JobEvent::Warning(&format!(
                    "interrupted: the {m} members keep their best epochs so far"
                )));
            }
            return shared.finish_ensemble(models, observer);
        }
        // On the CPU the members train side by side, the threads shared out among them
        // (each member's bits depend only on its seed and its share, so a run is
        // reproducible for the same --threads).
        let threads = self.job.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let side_by_side = threads.min(m);
        if on_cpu && side_by_side > 1 {
            let share = (threads / side_by_side).max(1);
            observer(&JobEvent::Note(&format!(
                "ensemble of {m}: {side_by_side} members at a time, {share} thread(s) each (seeds {} to {})",
                seeds[0],
                seeds[m - 1]
            )));
            let results = self.train_side_by_side(
                m,
                side_by_side,
                &|i| member(i, Some(share)),
                observer,
                cancel,
            );
            // A member that failed fails the run; after a cancel, the members that finished
            // (or stopped at their best epoch) before the first missing one are kept.
            let mut kept = true;
            for r in results {
                match r {
                    Some(Ok(model)) if kept => models.push(model),
                    Some(Ok(_)) | Some(Err(Error::Interrupted(_))) | None => kept = false,
                    Some(Err(e)) => return Err(e),
                }
            }
            if models.is_empty() {
                return Err(Error::Interrupted(
                    "interrupted before the first ensemble member finished an epoch; no model was written".into(),
                ));
            }
        } else {
            for i in 0..m {
                let one = member(i, self.job.threads);
                observer(&JobEvent::Note(&format!(
                    "ensemble member {} of {m} (seed {})",
                    i + 1,
                    seeds[i]
                )));
                match one.train_members(&seeds[i..=i], observer, cancel) {
                    Ok(mut model) => {
                        let stopped = cancel.load(Ordering::Relaxed);
                        models.push(model.remove(0));
                        if stopped {
                            break;
                        }
                    }
                    Err(Error::Interrupted(_)) if !models.is_empty() => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let cut: Vec<String> = models
            .iter()
            .enumerate()
            .filter_map(|(i, model)| {
                let t = model.training.as_ref()?;
                (t.stop_reason == "interrupted")
                    .then(|| format!("{} (at epoch {})", i + 1, t.epochs))
            })
            .collect();
        if !cut.is_empty() && models.len() == m {
            observer(&JobEvent::Warning(&format!(
                "interrupted: member{} {} kept at {} best epoch so far",
                if cut.len() > 1 { "s" } else { "" },
                cut.join(", "),
                if cut.len() > 1 { "their" } else { "its" }
            )));
        }
        if models.len() < m {
            observer(&JobEvent::Warning(&format!(
                "stopped after {} of {m} ensemble members: the model holds those",
                models.len()
            )));
            // The run as a whole was interrupted, whichever member it stopped in.
            if let Some(t) = models[0].training.as_mut() {
                t.stop_reason = "interrupted".into();
            }
        }
        shared.finish_ensemble(models, observer)
    }

    /// The job's columns of the CSV `path` converted to a temporary `.npy` to stream (removed
    /// when the returned file is dropped, also on error or interruption).
    fn convert_to_stream(
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
        let columns: Vec<String> = self.features.iter().chain(&self.targets).cloned().collect();
        crate::data::convert_while(path, tmp.path(), Some(&columns), &mut |_| {
            !cancel.load(Ordering::Relaxed)
        })?;
        Ok(tmp)
    }

    /// The ensemble of `models`, with its own validation NLL (on the validation rows its
    /// members share, where there are any) recorded and reported beside its members'.
    fn finish_ensemble(
        &self,
        models: Vec<Model>,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<Model> {
        let mut model = Model::ensemble(models).map_err(Error::Backend)?;
        let Some(val) = self.ensemble_validation()? else {
            return Ok(model);
        };
        let mut cpu = crate::backend::CpuBackend::new();
        let ll = model.loglik(&mut cpu, &val)?;
        let nll = -ll.iter().sum::<f64>() / val.rows.max(1) as f64;
        let members: Vec<f64> = model
            .member_models()
            .filter_map(|m| {
                let info = m.training.as_ref()?;
                info.history
                    .iter()
                    .find(|e| e.epoch == info.saved_epoch)
                    .and_then(|e| e.val_nll)
            })
            .collect();
        let listed: Vec<String> = members.iter().map(|v| format!("{v:.4}")).collect();
        observer(&JobEvent::Note(&format!(
            "ensemble of {}: validation NLL {nll:.4}; its members' {} (mean {:.4})",
            model.ensemble_size(),
            listed.join(", "),
            members.iter().sum::<f64>() / members.len().max(1) as f64
        )));
        if let Some(info) = model.training.as_mut() {
            info.ensemble_val_nll = Some(nll);
        }
        Ok(model)
    }

    /// The validation rows an ensemble's members share: `--val`, the arrays' validation set,
    /// or the split of the ensemble's seed. None for streamed runs and when every row was
    /// trained on (small data refitted after cross-validation, `--val-fraction 0`).
    fn ensemble_validation(&self) -> Result<Option<Dataset>> {
        if self.streamed {
            return Ok(None);
        }
        if let Some(path) = &self.job.val {
            let choice = ColumnChoice::Model {
                features: self.features.clone(),
                targets: self.targets.clone(),
                need_targets: true,
            };
            return read_data(path, &choice).map(Some);
        }
        if let Some(v) = self.arrays.as_ref().and_then(|a| a.1.clone()) {
            return Ok(Some(v));
        }
        if self.epoch_choice.is_some() || self.job.val_fraction() == 0.0 {
            return Ok(None);
        }
        let data = self.read_data()?;
        let fraction = self.job.val_fraction();
        let split = self.options.validation_split(fraction, data.rows);
        Ok(split_validation_by(&data, fraction, split)?.1)
    }

    /// Trains members `0..m` on `workers` threads; their events reach `observer` (on this
    /// thread): notes and warnings tagged with the member, the plan once, and the epochs of
    /// one member at a time (the lowest-numbered one still training), so that a progress
    /// display follows one run; a line when each member ends. A member not started because
    /// of a cancel is None.
    fn train_side_by_side(
        &self,
        m: usize,
        workers: usize,
        member: &(dyn Fn(usize) -> ResolvedJob + Sync),
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Vec<Option<Result<Model>>> {
        enum Owned {
            Resuming(usize, PathBuf),
            Started(Box<Plan>),
            Train(TrainEvent),
            Warning(String),
            Note(String),
            Finished(String),
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Owned)>();
        let results: std::sync::Mutex<Vec<Option<Result<Model>>>> =
            std::sync::Mutex::new((0..m).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, results) = (&next, &results);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= m || cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let one = member(i);
                        let mut send = |e: &JobEvent| {
                            let owned = match e {
                                JobEvent::Resuming { epoch, from } => {
                                    Owned::Resuming(*epoch, from.to_path_buf())
                                }
                                JobEvent::Started(p) => Owned::Started(Box::new((*p).clone())),
                                JobEvent::Train(t) => Owned::Train(**t),
                                JobEvent::Warning(w) => Owned::Warning(w.to_string()),
                                JobEvent::Note(n) => Owned::Note(n.to_string()),
                                _ => return,
                            };
                            let _ = tx.send((i, owned));
                        };
                        let r = one
                            .train_members(&[one.options.seed], &mut send, cancel)
                            .map(|mut v| v.remove(0));
                        let end = match &r {
                            Ok(model) => match model.training.as_ref() {
                                Some(t) => match (t.stop_reason.as_str(), t.best_val_nll) {
                                    ("early-stopping", Some(v)) => format!(
                                        "stopped at epoch {}: best epoch {}, validation NLL {v:.4}",
                                        t.epochs, t.saved_epoch
                                    ),
                                    ("interrupted", _) => {
                                        format!("interrupted at epoch {}", t.epochs)
                                    }
                                    _ => format!("ran its {} epochs", t.epochs),
                                },
                                None => "finished".into(),
                            },
                            Err(e) => format!("failed: {e}"),
                        };
                        let _ = tx.send((i, Owned::Finished(end)));
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    }
                });
            }
            drop(tx);
            // The members' events, in the order they happen.
            let (mut started, mut finished, mut planned) = (vec![false; m], vec![false; m], false);
            // The member whose epochs are shown: the first one running. When it ends, the
            // next takes over mid-run, and a note says whose epochs follow.
            let mut shown: Option<usize> = None;
            for (i, e) in rx {
                let lead = (0..m).find(|&j| started[j] && !finished[j]);
                match e {
                    Owned::Resuming(epoch, from) => {
                        observer(&JobEvent::Note(&format!(
                            "ensemble member {} of {m} resumes",
                            i + 1
                        )));
                        observer(&JobEvent::Resuming { epoch, from: &from });
                    }
                    Owned::Started(p) => {
                        started[i] = true;
                        if !planned {
                            planned = true;
                            observer(&JobEvent::Started(&p));
                        }
                        observer(&JobEvent::Note(&format!(
                            "ensemble member {} of {m} started",
                            i + 1
                        )));
                    }
                    Owned::Train(t) if lead == Some(i) => {
                        if shown.is_some_and(|s| s != i) {
                            observer(&JobEvent::Note(&format!(
                                "the epochs below are member {}'s (of {m})",
                                i + 1
                            )));
                        }
                        shown = Some(i);
                        observer(&JobEvent::Train(&t))
                    }
                    Owned::Train(_) => {}
                    Owned::Finished(end) => {
                        finished[i] = true;
                        observer(&JobEvent::Note(&format!("member {} {end}", i + 1)));
                    }
                    Owned::Warning(w) => {
                        observer(&JobEvent::Warning(&format!("member {}: {w}", i + 1)))
                    }
                    Owned::Note(n) => observer(&JobEvent::Note(&format!("member {}: {n}", i + 1))),
                }
            }
        });
        results.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Trains the networks of `seeds` (one, or an ensemble's members together where the
    /// backend can: in memory on a GPU): the whole job for each, from reading the data to
    /// the comparison with a linear model.
    fn train_members(
        &self,
        seeds: &[u64],
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        let job = &self.job;
        let choice = ColumnChoice::exactly(self.features.clone(), self.targets.clone());
        // A CSV to stream is converted first, to a temporary .npy removed when the run ends
        // (also on error or interruption).
        let mut converted = None;
        let stream_path = match &job.data {
            Some(_) if self.streamed && self.converted.is_some() => self.converted.clone(),
            Some(p) if self.streamed && !crate::data::is_npy(p) => {
                let tmp = self.convert_to_stream(p, observer, cancel)?;
                let path = tmp.path().to_path_buf();
                converted = Some(tmp);
                Some(path)
            }
            Some(p) if self.streamed => Some(p.clone()),
            _ => None,
        };
        let val_choice = ColumnChoice::Model {
            features: self.features.clone(),
            targets: self.targets.clone(),
            need_targets: true,
        };
        let resume_state = self.resume.clone().map(|c| {
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
        enum Input {
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
        let (input, train_rows, all_rows) = match stream_path {
            Some(path) => {
                let source = NpySource::open(&path, &choice)?;
                let val = job
                    .val
                    .as_ref()
                    .map(|v| read_data(v, &val_choice))
                    .transpose()?;
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
                let expected = rows - held_out;
                (Input::Stream { source, val, sopts }, expected, Some(rows))
            }
            None => {
                let data = match &self.arrays {
                    Some(a) => a.0.clone(),
                    None => job.read_all(&choice)?,
                };
                let val_arrays = self.arrays.as_ref().and_then(|a| a.1.clone());
                let has_val = job.val.is_some() || val_arrays.is_some();
                if data.rows < CROSS_VALIDATE_MIN && !has_val && job.val_fraction.is_none() {
                    return Err(Error::config(match job.epochs {
                        Some(_) => format!(
                            "{}: {} rows are too few to hold out validation rows from (the default \
                             --val-fraction needs at least {CROSS_VALIDATE_MIN}): add --val-fraction 0 to \
                             train on every row, or give --val FILE",
                            job.data_name(),
                            data.rows
                        ),
                        None => format!(
                            "{}: {} rows are too few for the defaults, which hold out rows to choose when to \
                             stop (they need at least {CROSS_VALIDATE_MIN}): give --val FILE, or train on every \
                             row with --val-fraction 0 --epochs N",
                            job.data_name(),
                            data.rows
                        ),
                    }));
                }
                if job.cross_validates(data.rows) && !has_val {
                    // Every row is trained on in the end; no validation split.
                    let n = data.rows;
                    let input = Input::Memory {
                        train: data,
                        val: None,
                        cross_validate: true,
                    };
                    (input, n, None)
                } else {
                    let (train, val) = match (&job.val, val_arrays) {
                        (Some(path), _) => (data, Some(read_data(path, &val_choice)?)),
                        (None, Some(v)) => (data, Some(v)),
                        (None, None) => {
                            let fraction = job.val_fraction();
                            let split = self.options.validation_split(fraction, data.rows);
                            split_validation_by(&data, fraction, split)?
                        }
                    };
                    let n = train.rows;
                    let input = Input::Memory {
                        train,
                        val,
                        cross_validate: false,
                    };
                    (input, n, None)
                }
            }
        };
        let (mut opts, mut adapted) = self.options_for_rows(train_rows);
        match all_rows {
            Some(rows) => self.check_rows(&opts, rows, true, &mut *observer)?,
            None => self.check_rows(&opts, train_rows, false, &mut *observer)?,
        }
        let (mut backend, note) = self.open_backend()?;
        // Small data: the number of epochs by cross-validation, then a fixed-epoch refit.
        let epoch_choice = match &input {
            Input::Memory {
                train,
                cross_validate: true,
                ..
            } => {
                let choice = match &self.epoch_choice {
                    Some(c) => c.clone(),
                    None => self.choose_epochs(train, backend.as_mut(), observer, cancel)?,
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
                Some(choice)
            }
            _ => {
                // Say why there is a split, where a few rows fewer would cross-validate (on
                // large data it would be noise).
                if job.val.is_none()
                    && job.val_fraction.is_none()
                    && job.epochs.is_none()
                    && train_rows < 2 * CROSS_VALIDATE_BELOW
                {
                    adapted.push(format!(
                        "early stopping on a 10% split (the epochs are cross-validated only below \
                         {CROSS_VALIDATE_BELOW} rows)"
                    ));
                }
                None
            }
        };
        // Absolute paths, so that a run resumes from any directory.
        let absolute = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        };
        let spec = DataSpec {
            data: absolute(&job.data),
            target: job.target.clone(),
            features: job.features.clone(),
            val: absolute(&job.val),
            // A refit after cross-validation trains on every row (and resumes so).
            val_fraction: if epoch_choice.is_some() {
                0.0
            } else {
                job.val_fraction()
            },
            stream: self.streamed,
            chunk_rows: job.chunk_rows,
            memory_mb: job.memory_mb,
            out: absolute(&Some(job.out_path())),
        };
        let every = job.checkpoint_every.unwrap_or(0);
        let mut disk_full = false;
        let mut write =
            |state: TrainState, st: &LoopState, xs: &Scaler, ys: &Scaler| -> Result<()> {
                let c = Checkpoint::new(
                    spec.clone(),
                    opts.clone(),
                    every,
                    (xs.clone(), ys.clone()),
                    state,
                    st.clone(),
                );
                match &self.sink {
                    Some(sink) => sink.write(&self.checkpoint_path, c),
                    None => full_disk_is_not_fatal(c.save(&self.checkpoint_path), &mut disk_full),
                }
            };
        let checkpointer = (every > 0).then_some(Checkpointer {
            every,
            min_seconds: job.checkpoint_seconds,
            write: &mut write,
        });
        let model = match input {
            Input::Stream {
                mut source,
                val,
                sopts,
            } => {
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
                        backend.name(),
                        note,
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
                crate::train::train_stream_with(
                    backend.as_mut(),
                    &mut source,
                    val.as_ref(),
                    &sopts,
                    &opts,
                    resume_state,
                    checkpointer,
                    &mut on_train,
                )
                .map(|m| vec![m])
            }
            Input::Memory { train, val, .. } => {
                let val_rows = val.as_ref().map_or(0, |v| v.rows);
                let plan = Plan {
                    cross_validated_epochs: epoch_choice.as_ref().map(|c| c.epochs),
                    ..self.plan(
                        &opts,
                        adapted,
                        backend.name(),
                        note,
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
                    opts.step.batch_size
                );
                observer(&JobEvent::Started(&plan));
                let models = if seeds.len() > 1 {
                    // Epochs and notes both go to the observer, one at a time.
                    let shared = std::cell::RefCell::new(&mut *observer);
                    let mut on_train = |e: &TrainEvent| {
                        (shared.borrow_mut())(&JobEvent::Train(e));
                        !cancel.load(Ordering::Relaxed)
                    };
                    // Members resumed together: every one has a state (checked in `train`).
                    let resume = self
                        .ensemble_resume
                        .as_ref()
                        .map(|c| {
                            c.members
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
                                .collect::<Result<Vec<_>>>()
                        })
                        .transpose()?;
                    if let Some(c) = &self.ensemble_resume {
                        let done: Vec<String> = c
                            .members
                            .iter()
                            .flatten()
                            .map(|s| s.trainer.completed.to_string())
                            .collect();
                        (shared.borrow_mut())(&JobEvent::Note(&format!(
                            "the {} members resume together after epochs {}",
                            seeds.len(),
                            done.join(", ")
                        )));
                        let epoch = c
                            .members
                            .iter()
                            .flatten()
                            .map(|s| s.trainer.completed)
                            .max();
                        (shared.borrow_mut())(&JobEvent::Resuming {
                            epoch: epoch.unwrap_or(0),
                            from: &self.checkpoint_path,
                        });
                    }
                    let mut write_all = |states: Vec<(TrainState, LoopState)>,
                                         xs: &Scaler,
                                         ys: &Scaler|
                     -> Result<()> {
                        let mut c = EnsembleCheckpoint::new(
                            spec.clone(),
                            TrainOptions {
                                seed: opts.split_seed(),
                                split_seed: None,
                                ..opts.clone()
                            },
                            every,
                            (xs.clone(), ys.clone()),
                            states.len(),
                        );
                        for (slot, (state, trainer)) in c.members.iter_mut().zip(states) {
                            *slot = Some(MemberState { state, trainer });
                        }
                        full_disk_is_not_fatal(c.save(&self.checkpoint_path), &mut disk_full)
                    };
                    let checkpointer = (every > 0).then_some(crate::train::MembersCheckpointer {
                        every,
                        min_seconds: job.checkpoint_seconds,
                        write: &mut write_all,
                    });
                    let models = crate::train::train_members_with(
                        backend.as_mut(),
                        &train,
                        val.as_ref(),
                        &opts,
                        seeds,
                        resume,
                        checkpointer,
                        &mut on_train,
                        &mut |n| (shared.borrow_mut())(&JobEvent::Note(n)),
                    );
                    models?.ok_or_else(|| {
                        Error::Backend(format!(
                            "{} cannot train ensemble members together",
                            backend.name()
                        ))
                    })?
                } else {
                    let mut on_train = |e: &TrainEvent| {
                        observer(&JobEvent::Train(e));
                        !cancel.load(Ordering::Relaxed)
                    };
                    vec![crate::train::train_with(
                        backend.as_mut(),
                        &train,
                        val.as_ref(),
                        &opts,
                        resume_state,
                        checkpointer,
                        &mut on_train,
                    )?]
                };
                // The comparison with a linear model: per member, named when there are
                // several; a cross-validated choice made for a whole ensemble was judged
                // when it was made.
                let several = seeds.len() > 1;
                let judged = self.epoch_choice.is_some();
                let models = models
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
                        match (&val, &epoch_choice) {
                            (Some(val), _) => compare_with_baseline(model, &train, val, &mut warn),
                            (None, Some(choice)) => {
                                let mut model = model;
                                warn_if_no_better(
                                    "cross-validated",
                                    choice.cv_nll,
                                    choice.baseline_cv_nll,
                                    "on the same folds",
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
                    .collect();
                Ok(models)
            }
        };
        drop(converted);
        model
    }

    /// Chooses the number of epochs for a small data set by [`CV_FOLDS`]-fold
    /// cross-validation: on each fold, a model trained on the other folds with early stopping
    /// on this one (the defaults adapted to those rows); the choice is the median of the
    /// folds' best epochs. The folds' held-out NLLs, and a linear-Gaussian model's on the same
    /// folds, are what the refitted model is judged by.
    fn choose_epochs(
        &self,
        data: &Dataset,
        backend: &mut dyn Backend,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<EpochChoice> {
        let seed = self.options.split_seed();
        let interrupted = || {
            Error::Interrupted(
                "interrupted while choosing the number of epochs; no model was written".into(),
            )
        };
        observer(&JobEvent::Note(&format!(
            "small data ({} rows; a 10% split would hold out {}): choosing the number of epochs by \
             {CV_FOLDS}-fold cross-validation, then training on every row",
            data.rows,
            data.rows / 10
        )));
        let folds = cv_folds(data.rows, seed);
        let smallest = folds.iter().map(|(_, rest)| rest.len()).min().unwrap_or(0);
        // Every fold fits the model the refit will be (the components adapted to all the
        // rows); what cannot work on a fold is refused before any fit.
        let k = self.options_for_rows(data.rows).0.components;
        if k > smallest {
            return Err(Error::config(format!(
                "{}: --components {k} is more than the {smallest} rows a cross-validation fold trains on \
                 ({} rows in all): each component needs rows to describe",
                self.job.data_name(),
                data.rows
            )));
        }
        if let Some(b) = self.job.batch_size.filter(|&b| b > smallest) {
            return Err(Error::config(format!(
                "{}: --batch-size {b} is larger than the {smallest} rows a cross-validation fold trains on \
                 ({} rows in all): use --batch-size {smallest} or less, or --val-fraction to validate on a split",
                self.job.data_name(),
                data.rows
            )));
        }
        // With K left to the defaults, fewer components are tried too, and taken only when
        // their folds beat the default's by more than the standard error of the paired
        // differences: on small data fewer components often generalise better, but a
        // heavy-tailed target needs the default's.
        let candidates: Vec<usize> = if self.job.components.is_none() {
            std::iter::once(k)
                .chain([3, 2].into_iter().filter(|&c| c < k))
                .collect()
        } else {
            vec![k]
        };
        let say = std::cell::RefCell::new(&mut *observer);
        let mut tried: Vec<EpochChoice> = Vec::new();
        for &kc in &candidates {
            let opts = |rows: usize| {
                let (mut opts, _) = self.options_for_rows(rows);
                opts.components = kc;
                opts
            };
            // Each fold's line for the default K only.
            let mut fold_done = |f: FoldReport| {
                if kc == k {
                    (say.borrow_mut())(&JobEvent::Note(&format!(
                        "fold {}/{CV_FOLDS} ({} rows held out): best epoch {} of {}, held-out NLL {:.4} \
                         (linear model {:.4})",
                        f.fold + 1,
                        f.held_out,
                        f.best_epoch,
                        f.epochs,
                        f.nll,
                        f.baseline
                    )));
                }
            };
            let choice =
                match cross_validate_epochs(backend, data, seed, &opts, &mut fold_done, &mut |_| {
                    !cancel.load(Ordering::Relaxed)
                }) {
                    Err(Error::Interrupted(_)) => return Err(interrupted()),
                    other => other?,
                };
            if candidates.len() > 1 {
                (say.borrow_mut())(&JobEvent::Note(&format!(
                    "K={kc}: {} epoch{}, cross-validated NLL {:.4} ± {:.4}",
                    choice.epochs,
                    if choice.epochs == 1 { "" } else { "s" },
                    choice.cv_nll,
                    choice.cv_se
                )));
            }
            tried.push(choice);
        }
        let mut pick = 0;
        for i in 1..tried.len() {
            let d: Vec<f64> = tried[i]
                .fold_nll
                .iter()
                .zip(&tried[0].fold_nll)
                .map(|(a, b)| a - b)
                .collect();
            let (mean, var) = crate::stats::mean_var(&d);
            if mean + (var / d.len() as f64).sqrt() < 0.0 && tried[i].cv_nll < tried[pick].cv_nll {
                pick = i;
            }
        }
        let components: Vec<ComponentsChoice> = if candidates.len() > 1 {
            tried
                .iter()
                .zip(&candidates)
                .enumerate()
                .map(|(i, (c, &kc))| ComponentsChoice {
                    components: kc,
                    cv_nll: c.cv_nll,
                    cv_se: c.cv_se,
                    epochs: c.epochs,
                    chosen: i == pick,
                })
                .collect()
        } else {
            Vec::new()
        };
        if pick > 0 {
            (say.borrow_mut())(&JobEvent::Note(&format!(
                "K={} rather than {k}: its folds beat K={k}'s by more than the standard error of their differences",
                candidates[pick]
            )));
        } else if candidates.len() > 1 {
            (say.borrow_mut())(&JobEvent::Note(&format!(
                "keeping K={k}: no smaller K beat its folds by more than the standard error of their differences"
            )));
        }
        let choice = EpochChoice {
            components,
            ..tried.swap_remove(pick)
        };
        let epochs = choice.epochs;
        observer(&JobEvent::Note(&format!(
            "{epochs} epoch{s} (the median of the folds' best): cross-validated NLL {:.4} ± {:.4} there \
             (linear model {:.4}); training on all {} rows for {epochs} epoch{s}",
            choice.cv_nll,
            choice.cv_se,
            choice.baseline_cv_nll,
            data.rows,
            s = if epochs == 1 { "" } else { "s" }
        )));
        Ok(choice)
    }

    /// Checks that need the number of rows, and warnings about likely mistakes.
    /// `rows` are the training rows, or with `all_rows` every row of the file (a streamed run
    /// before its first pass).
    fn check_rows(
        &self,
        opts: &TrainOptions,
        rows: usize,
        all_rows: bool,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<()> {
        let k = opts.components;
        let path = self.job.data_name();
        let what = if all_rows { "rows" } else { "training rows" };
        if k > rows {
            return Err(Error::config(format!(
                "{path}: --components {k} is more than the {rows} {what}: each component needs rows to describe"
            )));
        }
        if !all_rows && rows < CROSS_VALIDATE_MIN {
            let why = match (self.job.val.is_some(), self.job.val_fraction) {
                (false, Some(f)) if f > 0.0 => {
                    format!(" (--val-fraction {f} holds out the others)")
                }
                _ => String::new(),
            };
            observer(&JobEvent::Warning(&format!(
                "{path}: only {rows} training row{}{why}: too few to learn a distribution from \
                 (the defaults refuse fewer than {CROSS_VALIDATE_MIN})",
                if rows == 1 { "" } else { "s" }
            )));
        }
        if k > 1 && rows < 10 * k {
            observer(&JobEvent::Warning(&format!(
                "--components {k} with {rows} {what} leaves fewer than 10 rows per component: \
                 a smaller --components (or `mdn select`) is likely better"
            )));
        }
        if k > 100 {
            observer(&JobEvent::Warning(&format!(
                "--components {k} is far more than a mixture usually needs (every row's density has {k} terms, \
                 so training is slow); `mdn select` compares a few values"
            )));
        }
        Ok(())
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

    /// The options for `train_rows` training rows: the job's, with every option it leaves
    /// to the data set by [`adapted_defaults`] (a resumed run keeps its checkpoint's). The
    /// second value is what was adapted, if anything.
    pub fn options_for_rows(&self, train_rows: usize) -> (TrainOptions, Vec<String>) {
        let mut opts = self.options.clone();
        let job = &self.job;
        let mut chosen = Vec::new();
        if self.resume.is_some() {
            return (opts, chosen);
        }
        let a = adapted_defaults(train_rows);
        if job.batch_size.is_none() {
            opts.step.batch_size = a.batch_size;
            chosen.push(format!("batch {}", a.batch_size));
        }
        if job.components.is_none() {
            opts.components = a.components;
            chosen.push(format!("K={}", a.components));
        }
        if let Stopping::Early {
            patience,
            max_epochs,
        } = &mut opts.stopping
        {
            if job.patience.is_none() {
                *patience = a.patience;
                chosen.push(format!("patience {}", a.patience));
            }
            if job.max_epochs.is_none() {
                *max_epochs = a.max_epochs;
                chosen.push(format!("at most {} epochs", a.max_epochs));
            }
        }
        log::info!("job: defaults for {train_rows} training rows: {chosen:?}");
        (opts, chosen)
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
    if let Some(nll) = saved {
        warn_if_no_better(
            "validation",
            nll,
            baseline,
            "fitted on the same rows",
            observer,
        );
    }
    model
}

/// Warns when the model's NLL is no better than the linear-Gaussian baseline's.
fn warn_if_no_better(
    what: &str,
    nll: f64,
    baseline: f64,
    how: &str,
    observer: &mut dyn FnMut(&JobEvent),
) {
    if nll >= baseline {
        observer(&JobEvent::Warning(&format!(
            "the model's {what} NLL ({nll:.4}) is no better than that of a linear model with constant \
             Gaussian noise ({baseline:.4}, {how}): it has found nothing beyond a linear trend. More \
             epochs, fewer --components, some --l2 or more data may help"
        )));
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
