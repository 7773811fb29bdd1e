//! What shapes a training run ([`TrainOptions`], [`Stopping`]) and the checks made before
//! any work: those of the options alone ([`TrainOptions::validate`], what a job runs before
//! it reads data) and those that need the data's size and columns. How the options are
//! chosen for a data set (adapted defaults, cross-validated epochs) is the job's business
//! (`crate::job`), not the trainer's.

use crate::backend::StepConfig;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layout::{Activation, Covariance, DEFAULT_SIGMA_FLOOR, Family};

use super::split::ValidationSplit;

/// When training stops.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Stopping {
    /// Stop when the validation NLL has not improved for `patience` epochs, or after
    /// `max_epochs`; the best parameters by validation NLL are kept.
    Early { patience: usize, max_epochs: usize },
    /// Run exactly `epochs` epochs and keep the last parameters.
    Fixed { epochs: usize },
}

/// Everything that shapes a training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub components: usize,
    pub sigma_floor: f32,
    /// Diagonal or full covariance per component.
    #[serde(default)]
    pub covariance: Covariance,
    /// Gaussian or Student's t components.
    #[serde(default, skip_serializing_if = "Family::is_gaussian")]
    pub family: Family,
    pub step: StepConfig,
    pub stopping: Stopping,
    /// Seeds the initial weights and the row orders (and, unless `split_seed` is given, the
    /// validation split).
    pub seed: u64,
    /// Seeds the validation split (and a small data set's cross-validation folds) when it
    /// differs from `seed`: an ensemble's members share their ensemble's split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// The validation split holds out exactly round(fraction x rows) rows
    /// ([`ValidationSplit::new`]). False only for runs resumed from checkpoints written before
    /// that rule (each row then held out with probability `fraction`,
    /// [`ValidationSplit::per_row`]), so that they go on with the rows they started with.
    #[serde(default)]
    pub exact_split: bool,
    /// Per target, the transform `z = g(y)` the mixture is fitted to (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<crate::transform::Transform>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            hidden: vec![64],
            activation: Activation::Relu,
            components: 5,
            sigma_floor: DEFAULT_SIGMA_FLOOR,
            covariance: Covariance::Diagonal,
            family: Family::Gaussian,
            step: StepConfig::default(),
            stopping: Stopping::Early {
                patience: 10,
                max_epochs: 200,
            },
            seed: 0,
            split_seed: None,
            exact_split: true,
            transforms: Vec::new(),
        }
    }
}

impl TrainOptions {
    /// The seed of the validation split and cross-validation folds.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }

    /// The validation split of `rows` rows at `fraction` these options train with.
    pub fn validation_split(&self, fraction: f64, rows: usize) -> ValidationSplit {
        if self.exact_split {
            ValidationSplit::new(self.split_seed(), fraction, rows)
        } else {
            ValidationSplit::per_row(self.split_seed(), fraction)
        }
    }
}

pub(super) fn check_columns(
    features: &[String],
    targets: &[String],
    val: Option<&Dataset>,
) -> Result<()> {
    if let Some(v) = val
        && (v.features != features || v.targets != targets)
    {
        return Err(Error::config(format!(
            "{}: validation columns [{}] -> [{}] differ from training columns [{}] -> [{}]",
            v.path.display(),
            v.features.join(", "),
            v.targets.join(", "),
            features.join(", "),
            targets.join(", ")
        )));
    }
    Ok(())
}

impl TrainOptions {
    /// Checks every option that does not depend on the data, with the option's own message:
    /// what a job does before any work starts.
    pub fn validate(&self) -> Result<()> {
        let s = &self.step;
        if self.components == 0 {
            return Err(Error::config("--components must be at least 1"));
        }
        if self.hidden.contains(&0) {
            return Err(Error::config(
                "--hidden: every layer width must be at least 1",
            ));
        }
        if !(self.sigma_floor.is_finite() && self.sigma_floor >= 0.0) {
            return Err(Error::config(format!(
                "--sigma-floor must be a number >= 0, got {}",
                self.sigma_floor
            )));
        }
        if s.batch_size == 0 {
            return Err(Error::config("--batch-size must be at least 1"));
        }
        if !(s.lr.is_finite() && s.lr > 0.0) {
            return Err(Error::config(format!(
                "--lr must be a positive number, got {}",
                s.lr
            )));
        }
        if !(s.clip_norm.is_finite() && s.clip_norm >= 0.0) {
            return Err(Error::config(format!(
                "--clip-norm must be a number >= 0, got {}",
                s.clip_norm
            )));
        }
        if !(s.l2.is_finite() && s.l2 >= 0.0) {
            return Err(Error::config(format!(
                "--l2 must be a number >= 0, got {}",
                s.l2
            )));
        }
        if !(0.0..1.0).contains(&s.beta1)
            || !(0.0..1.0).contains(&s.beta2)
            || s.eps.is_nan()
            || s.eps <= 0.0
        {
            return Err(Error::config(
                "Adam needs 0 <= beta1, beta2 < 1 and eps > 0",
            ));
        }
        match self.stopping {
            Stopping::Early {
                patience,
                max_epochs,
            } => {
                if patience == 0 {
                    return Err(Error::config("--patience must be at least 1"));
                }
                if max_epochs == 0 {
                    return Err(Error::config("--max-epochs must be at least 1"));
                }
            }
            Stopping::Fixed { epochs } => {
                if epochs == 0 {
                    return Err(Error::config("--epochs must be at least 1"));
                }
            }
        }
        Ok(())
    }
}

/// The options' own checks ([`TrainOptions::validate`]) and those that need the data.
pub(super) fn check_options(
    train_rows: usize,
    path: &std::path::Path,
    val: Option<&Dataset>,
    opts: &TrainOptions,
) -> Result<()> {
    opts.validate()?;
    let s = &opts.step;
    if matches!(opts.stopping, Stopping::Early { .. }) && val.is_none() {
        return Err(Error::config(
            "early stopping needs validation data: give --val FILE or --val-fraction > 0, or run a fixed number of --epochs",
        ));
    }
    if opts.components > train_rows {
        return Err(Error::config(format!(
            "{}: --components {} is more than the {} training rows: each component needs rows to describe",
            path.display(),
            opts.components,
            train_rows
        )));
    }
    if train_rows < s.batch_size {
        return Err(Error::config(format!(
            "{}: {} training rows{} are fewer than one batch of {}: use --batch-size {} or less, or more data",
            path.display(),
            train_rows,
            if val.is_some() {
                " (the validation rows not counted)"
            } else {
                ""
            },
            s.batch_size,
            train_rows
        )));
    }
    Ok(())
}
