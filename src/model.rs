//! A trained model: architecture, standardisation, flat parameters and training metadata;
//! its JSON file format; and what a model answers (mixture parameters, log-likelihoods,
//! samples) in the user's original units.
//!
//! The file format is documented in `docs/model-format.md`. Files are written to a temporary
//! file in the same directory, synced, then renamed over the target, so a crash never leaves
//! a half-written model.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::backend::Backend;
use crate::categorical::Categorical;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layout::Arch;
use crate::mixture::Mixture;
use crate::scaler::Scaler;
use crate::transform::Transform;

/// The `format` field of every model file.
pub const FORMAT_NAME: &str = "mdn-model";
/// The newest model-file version this build reads.
pub const FORMAT_VERSION: u32 = 5;
/// The version an ensemble without categorical features is written with.
pub const ENSEMBLE_FORMAT_VERSION: u32 = 2;
/// The version a model with categorical features is written with (older readers, which
/// would read their indicator inputs as numeric columns of the data, refuse it).
pub const CATEGORICAL_FORMAT_VERSION: u32 = 3;
/// The version a model with transformed targets (the `transforms` field) is written as.
pub const TRANSFORM_FORMAT_VERSION: u32 = 4;
/// The version a model with Student's t components (`arch.family`) is written as.
pub const FAMILY_FORMAT_VERSION: u32 = 5;
/// The version a single model (no ensemble members) is written with: readers of version 1
/// read it.
pub const SINGLE_FORMAT_VERSION: u32 = 1;

/// One epoch of the training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean training NLL per row during the epoch (original units).
    pub train_nll: f64,
    /// Validation NLL per row after the epoch (original units), if there was validation data.
    pub val_nll: Option<f64>,
}

/// How a trained model uses its mixture components on a data set: mode-collapse diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentUsage {
    /// Average weight pi_k over the rows.
    pub weights: Vec<f64>,
    /// Components whose average weight is below 1% of an even share (0.01 / K).
    pub unused: Vec<usize>,
    /// Pairs of used components that are the same distribution on these rows: on average
    /// their means differ by less than 0.1 of the smaller sigma and their sigmas by less than
    /// 10%, in every target dimension (Student's t components: and their nu - 2 too).
    pub duplicates: Vec<(usize, usize)>,
}

/// A numerical fault the trainer recovered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub epoch: usize,
    /// The first batch (1-based) with a non-finite loss, when known.
    pub batch: Option<u64>,
    /// The learning rate the epoch was retried at.
    pub lr: f32,
}

/// The number of epochs chosen by k-fold cross-validation (small data sets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochChoice {
    pub folds: usize,
    /// Each fold's best epoch (early stopping on the fold, trained on the others).
    pub fold_best_epochs: Vec<usize>,
    /// Each fold's held-out NLL after `epochs` epochs (original units; after its last epoch
    /// when it stopped sooner).
    pub fold_nll: Vec<f64>,
    /// Their mean and its standard error.
    pub cv_nll: f64,
    pub cv_se: f64,
    /// The linear-Gaussian model's mean held-out NLL on the same folds.
    pub baseline_cv_nll: f64,
    /// The epochs the final model was trained for on every row: the median best epoch.
    pub epochs: usize,
    /// With the number of components left to the defaults: each candidate's cross-validation
    /// (the default first), of which the fields above are the chosen one's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentsChoice>,
}

/// One number of components the small-data cross-validation tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentsChoice {
    pub components: usize,
    pub cv_nll: f64,
    pub cv_se: f64,
    pub epochs: usize,
    pub chosen: bool,
}

/// How the model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub mdn_version: String,
    pub backend: String,
    pub seed: u64,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub l2: f32,
    pub batch_size: usize,
    pub train_rows: usize,
    pub val_rows: usize,
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose parameters were saved (1-based).
    pub saved_epoch: usize,
    /// The epoch with the lowest validation NLL, and that NLL (original units), if there was
    /// validation data. With early stopping these are the saved parameters.
    pub best_epoch: Option<usize>,
    pub best_val_nll: Option<f64>,
    /// Why training stopped: "early-stopping", "max-epochs", "epochs" or "interrupted".
    pub stop_reason: String,
    /// The learning rate at the end (lower than `lr` after numerical faults).
    #[serde(default)]
    pub final_lr: f32,
    /// Gradient-norm clipping threshold (0: none).
    #[serde(default)]
    pub clip_norm: f32,
    /// Epochs that produced NaN or infinite values and were rolled back and retried.
    #[serde(default)]
    pub recoveries: Vec<Recovery>,
    /// Average mixture weight of each component over the validation rows (the training rows
    /// without validation data), and the components found unused or duplicated there.
    #[serde(default)]
    pub components: Option<ComponentUsage>,
    /// Validation NLL (original units) of a linear-Gaussian model fitted on the same training
    /// rows (`baseline::LinearGaussian`): what the MDN is compared with. Absent for streamed
    /// runs and runs without validation rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_val_nll: Option<f64>,
    /// On small data, how the number of epochs was chosen by cross-validation before the
    /// model was refitted on every row (then `baseline_val_nll` is the linear model's
    /// cross-validated NLL on the same folds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_choice: Option<EpochChoice>,
    /// A deep ensemble's own validation NLL (original units): of the equal-weight mixture of
    /// its members on the validation rows they share. In the top-level model's record only;
    /// absent for single models and without validation rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_val_nll: Option<f64>,
    /// Feature columns that were constant in the training rows: the model ignores them
    /// (their first-layer weights are zero).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constant_features: Vec<String>,
    /// Data rows the run's reads left out for a missing value (`--drop-missing`): of the
    /// training file and of the validation file, each counted once. Absent when none were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_left_out: usize,
    pub history: Vec<EpochRecord>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The most values (draws x rows x targets) one call of [`Model::sample`] gives: 8 GB of f64.
pub const MAX_SAMPLE_VALUES: usize = 1_000_000_000;

impl TrainingInfo {
    /// Why the run ran the epochs it ran, in words: a fixed number is the cross-validated one
    /// on small data or `--epochs`; other stop reasons as recorded.
    pub fn stop_words(&self) -> &str {
        match self.stop_reason.as_str() {
            "epochs" if self.epoch_choice.is_some() => "the cross-validated number",
            "epochs" => "--epochs",
            other => other,
        }
    }

    /// The validation NLL of the saved parameters (with `--epochs`, the last epoch's, which
    /// need not be the best), if there were validation rows.
    pub fn saved_val_nll(&self) -> Option<f64> {
        self.history
            .iter()
            .find(|e| e.epoch == self.saved_epoch)
            .and_then(|e| e.val_nll)
    }
}

/// A trained mixture density network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    pub format_version: u32,
    pub arch: Arch,
    /// The network's inputs: a numeric feature column's name, or for a categorical
    /// column one `column=category` indicator per category.
    pub features: Vec<String>,
    pub targets: Vec<String>,
    /// The feature columns read as categories (format version 3), each with its categories
    /// in the order of its indicators in `features`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<Categorical>,
    /// Per target, the transform `z = g(y)` the mixture is fitted to (format version 4;
    /// absent or empty: none). The scaler, the network and `params` are in units of z; the
    /// density, scores, quantiles and samples the model answers are in units of y.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    pub x_scaler: Scaler,
    pub y_scaler: Scaler,
    pub param_layout: String,
    pub params: Vec<f32>,
    pub training: Option<TrainingInfo>,
    /// A deep ensemble's other members (format version 2): each a whole model of the same
    /// architecture and columns, trained with its own seed. The ensemble's density is the
    /// equal-weight mixture of its members' mixtures (this model is the first member).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Model>,
}

/// Mixture parameters for a set of rows, in original target units.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub rows: usize,
    pub k: usize,
    pub d: usize,
    /// `rows * K` weights.
    pub pi: Vec<f64>,
    /// `rows * K * D` means, component-major per row.
    pub mu: Vec<f64>,
    /// `rows * K * D` standard deviations of each component's marginals.
    pub sigma: Vec<f64>,
    /// With full covariance, `rows * K * D * D`: each component's Cholesky factor `L`
    /// (row-major, zero above the diagonal, covariance `L L^T`); empty for diagonal models.
    pub scale_tril: Vec<f64>,
    /// Per target, the transform `z = g(y)` that `mu`, `sigma` and `scale_tril` are in units
    /// of (empty: none, they are in units of y). [`Prediction::marginal`] and
    /// [`Prediction::mean`] answer in units of y.
    pub transforms: Vec<Transform>,
    /// With Student's t components, `rows * K` degrees of freedom (each component a
    /// multivariate t with location `mu` and scale `sigma` / `scale_tril`); empty for
    /// Gaussian components.
    pub dof: Vec<f64>,
}

impl Prediction {
    /// Row `r`'s marginal mixture of target `j` (a distribution of y, with the target's
    /// transform).
    pub fn marginal(&self, r: usize, j: usize) -> crate::stats::Marginal {
        let (k, d) = (self.k, self.d);
        crate::stats::Marginal::of(
            &self.pi[r * k..(r + 1) * k],
            &self.mu[r * k * d..(r + 1) * k * d],
            &self.sigma[r * k * d..(r + 1) * k * d],
            d,
            j,
        )
        .with_transform(crate::transform::of(&self.transforms, j))
        .with_dof(if self.dof.is_empty() {
            &[]
        } else {
            &self.dof[r * k..(r + 1) * k]
        })
    }

    /// Whether any target is transformed (the components are then in units of z = g(y)).
    pub fn transformed(&self) -> bool {
        !crate::transform::all_none(&self.transforms)
    }

    /// For an ensemble's prediction ([`Model::predict`] of `members` members): per row and
    /// target, the aleatoric variance (the mean of the members' variances: the noise each
    /// member sees) and the epistemic variance (the variance of the members' means: how much
    /// they disagree). They add up to the variance of the whole mixture (the law of total
    /// variance). Each is `rows * D`.
    pub fn variance_split(&self, members: usize) -> (Vec<f64>, Vec<f64>) {
        let (d, m) = (self.d, members.max(1));
        let k = self.k / m;
        let mut aleatoric = vec![0.0; self.rows * d];
        let mut epistemic = vec![0.0; self.rows * d];
        for r in 0..self.rows {
            for j in 0..d {
                let (mut mean_of_vars, mut mean_of_means, mut mean_of_sq) = (0.0, 0.0, 0.0);
                let whole = self.marginal(r, j);
                for e in 0..m {
                    // Member e's own mixture: its components, their weights times M.
                    let member = crate::stats::Marginal {
                        pi: whole.pi[e * k..(e + 1) * k]
                            .iter()
                            .map(|w| w * m as f64)
                            .collect(),
                        mu: whole.mu[e * k..(e + 1) * k].to_vec(),
                        sigma: whole.sigma[e * k..(e + 1) * k].to_vec(),
                        transform: whole.transform,
                        dof: whole.dof.get(e * k..(e + 1) * k).unwrap_or(&[]).to_vec(),
                    };
                    let (mean, var) = (member.mean(), member.variance());
                    mean_of_vars += var / m as f64;
                    mean_of_means += mean / m as f64;
                    mean_of_sq += mean * mean / m as f64;
                }
                aleatoric[r * d + j] = mean_of_vars;
                epistemic[r * d + j] = (mean_of_sq - mean_of_means * mean_of_means).max(0.0);
            }
        }
        (aleatoric, epistemic)
    }

    /// Component `c`'s covariance-shaped scale for row `r` (D x D, row-major, original units):
    /// `L L^T`, the covariance of a Gaussian component; a Student's t component's covariance is
    /// `nu / (nu - 2)` times it.
    pub fn covariance(&self, r: usize, c: usize) -> Vec<f64> {
        let d = self.d;
        let base = (r * self.k + c) * d;
        let mut cov = vec![0.0; d * d];
        if self.scale_tril.is_empty() {
            for j in 0..d {
                cov[j * d + j] = self.sigma[base + j] * self.sigma[base + j];
            }
        } else {
            let l = &self.scale_tril[base * d..(base + d) * d];
            for a in 0..d {
                for b in 0..d {
                    cov[a * d + b] = (0..=a.min(b)).map(|i| l[a * d + i] * l[b * d + i]).sum();
                }
            }
        }
        cov
    }

    /// Mixture mean of row `r`, dimension `j` (sum_k pi_k mu_kj for an untransformed
    /// target), in units of y.
    pub fn mean(&self, r: usize, j: usize) -> f64 {
        if self.transformed() {
            return self.marginal(r, j).mean();
        }
        (0..self.k)
            .map(|c| self.pi[r * self.k + c] * self.mu[(r * self.k + c) * self.d + j])
            .sum()
    }
}

impl Model {
    /// A model with the given parts; no training metadata.
    pub fn new(
        arch: Arch,
        features: Vec<String>,
        targets: Vec<String>,
        x_scaler: Scaler,
        y_scaler: Scaler,
        params: Vec<f32>,
    ) -> Model {
        Model {
            format: FORMAT_NAME.to_string(),
            format_version: if arch.family.is_gaussian() {
                SINGLE_FORMAT_VERSION
            } else {
                FAMILY_FORMAT_VERSION
            },
            arch,
            features,
            targets,
            categorical: Vec::new(),
            transforms: Vec::new(),
            x_scaler,
            y_scaler,
            param_layout: Arch::layout_description().to_string(),
            params,
            training: None,
            members: Vec::new(),
        }
    }

    fn mixture(&self) -> Mixture {
        Mixture::of(&self.arch)
    }

    /// Checks that every part agrees with the architecture and that all numbers are finite.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, m) in self.members.iter().enumerate() {
            if m.arch != self.arch
                || m.features != self.features
                || m.targets != self.targets
                || m.categorical != self.categorical
                || m.transforms != self.transforms
            {
                return Err(format!(
                    "ensemble member {} has another architecture or other columns than the first",
                    i + 2
                ));
            }
            if !m.members.is_empty() {
                return Err(format!("ensemble member {} has members of its own", i + 2));
            }
            m.validate()
                .map_err(|e| format!("ensemble member {}: {e}", i + 2))?;
        }
        if !self.members.is_empty() && self.format_version < ENSEMBLE_FORMAT_VERSION {
            return Err("ensemble members need format version 2".into());
        }
        if !self.categorical.is_empty() && self.format_version < CATEGORICAL_FORMAT_VERSION {
            return Err("categorical features need format version 3".into());
        }
        crate::categorical::validate(&self.features, &self.categorical)?;
        if !self.arch.family.is_gaussian() && self.format_version < FAMILY_FORMAT_VERSION {
            return Err(format!(
                "{} components need format version {FAMILY_FORMAT_VERSION}",
                self.arch.family
            ));
        }
        if !self.arch.family.is_gaussian() && !crate::transform::all_none(&self.transforms) {
            return Err(
                "Student's t components with transformed targets are not supported (a log-t \
                 target has no mean or variance; logit with t components is not built)"
                    .into(),
            );
        }
        if !self.transforms.is_empty() {
            if self.format_version < TRANSFORM_FORMAT_VERSION {
                return Err("target transforms need format version 4".into());
            }
            if self.transforms.len() != self.targets.len() {
                return Err(format!(
                    "transforms has {} entries but there are {} targets",
                    self.transforms.len(),
                    self.targets.len()
                ));
            }
        }
        self.arch.validate().map_err(|e| e.to_string())?;
        let a = &self.arch;
        let checks = [
            (self.features.len(), a.inputs, "feature names"),
            (self.targets.len(), a.targets, "target names"),
            (self.x_scaler.mean.len(), a.inputs, "x_scaler.mean"),
            (self.x_scaler.std.len(), a.inputs, "x_scaler.std"),
            (self.y_scaler.mean.len(), a.targets, "y_scaler.mean"),
            (self.y_scaler.std.len(), a.targets, "y_scaler.std"),
            (self.params.len(), a.param_count(), "params"),
        ];
        for (have, want, what) in checks {
            if have != want {
                return Err(format!(
                    "{what} has {have} entries but the architecture needs {want}"
                ));
            }
        }
        if let Some(i) = self.params.iter().position(|v| !v.is_finite()) {
            return Err(format!("params[{i}] is not finite"));
        }
        for (name, v) in [
            ("x_scaler.mean", &self.x_scaler.mean),
            ("y_scaler.mean", &self.y_scaler.mean),
        ] {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("{name} has a value that is not finite"));
            }
        }
        for (name, v) in [
            ("x_scaler.std", &self.x_scaler.std),
            ("y_scaler.std", &self.y_scaler.std),
        ] {
            if v.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(format!(
                    "{name} has a value that is not a finite positive number"
                ));
            }
        }
        Ok(())
    }

    /// Writes the model as JSON, atomically: a temporary file beside `path`, synced, renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Err(m) = self.validate() {
            return Err(Error::Numerical(format!(
                "refusing to save an invalid model: {m}"
            )));
        }
        let json = serde_json::to_vec(self).map_err(|e| Error::model_file(path, e.to_string()))?;
        write_atomic(path, &json)
    }

    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<Model> {
        if path.join(crate::job::GROUPS_INDEX_JSON).is_file() {
            return Err(Error::config(format!(
                "{} is a directory of models, one per group (mdn train --group-by): mdn predict \
                 and mdn eval take it; give this command one group's model file, {}",
                path.display(),
                path.join("<group>.json").display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Model::from_json(&bytes).map_err(|m| Error::model_file(path, m))
    }

    /// Parses and checks a model from JSON bytes; the error is a message without the path.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Model, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                "the file is empty".to_string()
            } else {
                format!("not valid JSON ({e})")
            }
        })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT_NAME) => {}
            Some(other) => return Err(format!("format is '{other}', not '{FORMAT_NAME}'")),
            None => {
                return Err(format!(
                    "not an mdn model (no \"format\": \"{FORMAT_NAME}\" field)"
                ));
            }
        }
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if (1..=FORMAT_VERSION as u64).contains(&v) => {}
            Some(v) if v > FORMAT_VERSION as u64 => {
                return Err(format!(
                    "format version {v} was written by a newer mdn; this build ({}) reads version {FORMAT_VERSION}",
                    env!("CARGO_PKG_VERSION")
                ));
            }
            Some(v) => return Err(format!("unsupported format version {v}")),
            None => return Err("missing or invalid format_version".to_string()),
        }
        let model: Model =
            serde_json::from_value(value).map_err(|e| format!("malformed model: {e}"))?;
        model.validate()?;
        Ok(model)
    }

    /// Checks that a data set's columns are the model's.
    fn check_columns(&self, data: &Dataset, need_targets: bool) -> Result<()> {
        if data.features != self.features {
            return Err(Error::config(format!(
                "{}: the model was trained on features [{}] but the data provides [{}]",
                data.path.display(),
                self.features.join(", "),
                data.features.join(", ")
            )));
        }
        if need_targets && data.targets != self.targets {
            return Err(Error::config(format!(
                "{}: the model predicts targets [{}] but the data provides [{}]",
                data.path.display(),
                self.targets.join(", "),
                data.targets.join(", ")
            )));
        }
        Ok(())
    }

    /// Raw head outputs (standardised units) for every row of `data`.
    pub fn head_outputs(&self, backend: &mut dyn Backend, data: &Dataset) -> Result<Vec<f32>> {
        self.check_columns(data, false)?;
        let x = self.x_scaler.apply(&data.x);
        backend.forward(&self.arch, &self.params, &x, data.rows)
    }

    /// Per-row log-likelihoods log p(y | x) in the original units of y (for an ensemble, of
    /// the equal-weight mixture of its members: log mean_m p_m(y | x)).
    pub fn loglik(&self, backend: &mut dyn Backend, data: &Dataset) -> Result<Vec<f64>> {
        if self.members.is_empty() {
            return self.loglik_one(backend, data);
        }
        let each = self
            .member_models()
            .map(|m| m.loglik_one(backend, data))
            .collect::<Result<Vec<_>>>()?;
        let ln_m = (each.len() as f64).ln();
        Ok((0..data.rows)
            .map(|r| {
                let top = each.iter().map(|l| l[r]).fold(f64::NEG_INFINITY, f64::max);
                top + each.iter().map(|l| (l[r] - top).exp()).sum::<f64>().ln() - ln_m
            })
            .collect())
    }

    fn loglik_one(&self, backend: &mut dyn Backend, data: &Dataset) -> Result<Vec<f64>> {
        self.check_columns(data, true)?;
        let x = self.x_scaler.apply(&data.x);
        let d = self.targets.len();
        let z = transformed_targets(&data.path, &self.targets, &self.transforms, &data.y)?;
        let y = self.y_scaler.apply(&z);
        let jac = self.y_scaler.log_jacobian();
        let mut ll = backend.loglik(&self.arch, &self.params, &x, &y, data.rows)?;
        // ln |dz/dy| from y itself (z is rounded to f32).
        for (r, v) in ll.iter_mut().enumerate() {
            let ys = &data.y[r * d..(r + 1) * d];
            *v += jac
                + self
                    .transforms
                    .iter()
                    .zip(ys)
                    .map(|(t, &y)| t.log_jacobian_at(y as f64))
                    .sum::<f64>();
        }
        Ok(ll)
    }

    /// The members of a deep ensemble (this model first); a single model is an ensemble of
    /// one.
    pub fn member_models(&self) -> impl Iterator<Item = &Model> {
        std::iter::once(self).chain(self.members.iter())
    }

    /// Members of the ensemble (1 for a single model).
    pub fn ensemble_size(&self) -> usize {
        1 + self.members.len()
    }

    /// A deep ensemble of `models` (the same architecture and columns; each trained with
    /// its own seed): written as format version 2, the first model with the others as its
    /// `members`.
    pub fn ensemble(mut models: Vec<Model>) -> std::result::Result<Model, String> {
        if models.is_empty() {
            return Err("an ensemble needs at least one model".into());
        }
        let mut first = models.remove(0);
        if models.is_empty() {
            return Ok(first);
        }
        for m in &mut models {
            m.members.clear();
            m.format_version = if !m.arch.family.is_gaussian() {
                FAMILY_FORMAT_VERSION
            } else if m.transforms.is_empty() {
                SINGLE_FORMAT_VERSION
            } else {
                TRANSFORM_FORMAT_VERSION
            };
        }
        first.members = models;
        first.format_version = first.format_version.max(ENSEMBLE_FORMAT_VERSION);
        first.validate()?;
        Ok(first)
    }

    /// This model (and its members) reading `categorical` columns as categories: written
    /// as format version 3 when there are any.
    pub fn with_categorical(mut self, categorical: &[Categorical]) -> Model {
        if categorical.is_empty() {
            return self;
        }
        self.categorical = categorical.to_vec();
        self.format_version = self.format_version.max(CATEGORICAL_FORMAT_VERSION);
        for m in &mut self.members {
            m.categorical = categorical.to_vec();
            m.format_version = m.format_version.max(CATEGORICAL_FORMAT_VERSION);
        }
        self
    }

    /// This model's run (and its members') having left out `rows` data rows for a missing
    /// value (`--drop-missing`).
    pub fn with_rows_left_out(mut self, rows: usize) -> Model {
        let records = self.members.iter_mut().map(|m| &mut m.training);
        for t in std::iter::once(&mut self.training).chain(records).flatten() {
            t.rows_left_out = rows;
        }
        self
    }

    /// This model (and its members) fitted to targets transformed by `transforms` (one per
    /// target; all none or empty: untransformed): format version 4 when any is not none.
    pub fn with_transforms(mut self, transforms: &[Transform]) -> Model {
        if crate::transform::all_none(transforms) {
            return self;
        }
        self.transforms = transforms.to_vec();
        self.format_version = self.format_version.max(TRANSFORM_FORMAT_VERSION);
        for m in &mut self.members {
            m.transforms = transforms.to_vec();
            m.format_version = m.format_version.max(TRANSFORM_FORMAT_VERSION);
        }
        self
    }

    /// [`Model::columns`] as people read them: a categorical column with its number of
    /// categories (`fuel (3 categories)`).
    pub fn column_labels(&self) -> Vec<String> {
        self.columns()
            .into_iter()
            .map(|c| match self.categorical.iter().find(|k| k.column == c) {
                Some(k) => format!("{c} ({} categories)", k.categories.len()),
                None => c,
            })
            .collect()
    }

    /// The data columns this model reads, in order (a categorical column once, by its own
    /// name): what a file to predict for must have.
    pub fn columns(&self) -> Vec<String> {
        crate::categorical::raw_columns(&self.features, &self.categorical)
    }

    /// The choice of this model's columns in a data file (`need_targets`: the targets too).
    pub fn choice(&self, need_targets: bool) -> crate::data::ColumnChoice {
        crate::data::ColumnChoice::model(
            &self.features,
            &self.targets,
            &self.categorical,
            need_targets,
        )
        .with_transforms(&self.transforms)
    }

    /// pi, mu and sigma for every row, in original target units. For an ensemble of M
    /// members: the M·K components of all members, each weight divided by M (member m's
    /// components are m·K..(m+1)·K).
    pub fn predict(&self, backend: &mut dyn Backend, data: &Dataset) -> Result<Prediction> {
        if self.members.is_empty() {
            return self.predict_one(backend, data);
        }
        let parts = self
            .member_models()
            .map(|m| m.predict_one(backend, data))
            .collect::<Result<Vec<_>>>()?;
        let (rows, k, d, m) = (data.rows, parts[0].k, parts[0].d, parts.len());
        let full = !parts[0].scale_tril.is_empty();
        let kk = k * m;
        let mut out = Prediction {
            rows,
            k: kk,
            d,
            pi: Vec::with_capacity(rows * kk),
            mu: Vec::with_capacity(rows * kk * d),
            sigma: Vec::with_capacity(rows * kk * d),
            scale_tril: Vec::with_capacity(if full { rows * kk * d * d } else { 0 }),
            transforms: parts[0].transforms.clone(),
            dof: Vec::new(),
        };
        for r in 0..rows {
            for p in &parts {
                out.pi
                    .extend(p.pi[r * k..(r + 1) * k].iter().map(|w| w / m as f64));
                if !p.dof.is_empty() {
                    out.dof.extend_from_slice(&p.dof[r * k..(r + 1) * k]);
                }
                out.mu.extend_from_slice(&p.mu[r * k * d..(r + 1) * k * d]);
                out.sigma
                    .extend_from_slice(&p.sigma[r * k * d..(r + 1) * k * d]);
                if full {
                    out.scale_tril
                        .extend_from_slice(&p.scale_tril[r * k * d * d..(r + 1) * k * d * d]);
                }
            }
        }
        Ok(out)
    }

    /// The mixture of this model alone (without its ensemble members).
    fn predict_one(&self, backend: &mut dyn Backend, data: &Dataset) -> Result<Prediction> {
        let h = self.head_outputs(backend, data)?;
        let mix = self.mixture();
        let (k, d, p) = (mix.k, mix.d, mix.width());
        let rows = data.rows;
        let mut pred = Prediction {
            rows,
            k,
            d,
            pi: vec![0.0; rows * k],
            mu: vec![0.0; rows * k * d],
            sigma: vec![0.0; rows * k * d],
            scale_tril: if mix.full {
                vec![0.0; rows * k * d * d]
            } else {
                Vec::new()
            },
            transforms: self.transforms.clone(),
            dof: if mix.student {
                vec![0.0; rows * k]
            } else {
                Vec::new()
            },
        };
        for r in 0..rows {
            if mix.student {
                for c in 0..k {
                    pred.dof[r * k + c] = mix.dof(&h[r * p..(r + 1) * p], c);
                }
            }
            let (pi, mu, sigma) = (
                &mut pred.pi[r * k..(r + 1) * k],
                &mut pred.mu[r * k * d..(r + 1) * k * d],
                &mut pred.sigma[r * k * d..(r + 1) * k * d],
            );
            mix.params(&h[r * p..(r + 1) * p], pi, mu, sigma);
            for c in 0..k {
                for j in 0..d {
                    let (m, s) = (self.y_scaler.mean[j] as f64, self.y_scaler.std[j] as f64);
                    mu[c * d + j] = mu[c * d + j] * s + m;
                    sigma[c * d + j] *= s;
                }
            }
            if mix.full {
                let hr = &h[r * p..(r + 1) * p];
                for c in 0..k {
                    let l = &mut pred.scale_tril[((r * k + c) * d) * d..((r * k + c + 1) * d) * d];
                    mix.cholesky(hr, c, l);
                    for j in 0..d {
                        let s = self.y_scaler.std[j] as f64;
                        let mut var = 0.0;
                        for i in 0..=j {
                            l[j * d + i] *= s;
                            var += l[j * d + i] * l[j * d + i];
                        }
                        pred.sigma[(r * k + c) * d + j] = var.sqrt();
                    }
                }
            }
        }
        Ok(pred)
    }

    /// Average component weights on `data`, and which components are unused or duplicates
    /// (see [`ComponentUsage`]).
    pub fn component_usage(
        &self,
        backend: &mut dyn Backend,
        data: &Dataset,
    ) -> Result<ComponentUsage> {
        let pred = self.predict(backend, data)?;
        let (k, d, rows) = (pred.k, pred.d, pred.rows.max(1));
        let mut weights = vec![0.0; k];
        for r in 0..pred.rows {
            for (c, w) in weights.iter_mut().enumerate() {
                *w += pred.pi[r * k + c] / rows as f64;
            }
        }
        let unused: Vec<usize> = (0..k).filter(|&c| weights[c] < 0.01 / k as f64).collect();
        // Pairs are compared on evenly spaced rows, as many as keep the comparison within
        // about the cost of the evaluation pass above (all rows for K <= 8), so that the
        // diagnostics stay cheap for any K.
        let compared = (8 * rows).div_ceil(k.max(1)).clamp(1, pred.rows.max(1));
        let sample: Vec<usize> = (0..compared)
            .map(|i| i * pred.rows / compared)
            .filter(|&r| r < pred.rows)
            .collect();
        let n = sample.len().max(1) as f64;
        let mut duplicates = Vec::new();
        for a in 0..k {
            for b in a + 1..k {
                if unused.contains(&a) || unused.contains(&b) {
                    continue;
                }
                let (mut dmu, mut dsig) = (0.0, 0.0);
                for &r in &sample {
                    let (mut m, mut s) = (0.0f64, 0.0f64);
                    for j in 0..d {
                        let (ia, ib) = ((r * k + a) * d + j, (r * k + b) * d + j);
                        let (sa, sb) = (pred.sigma[ia], pred.sigma[ib]);
                        m = m.max((pred.mu[ia] - pred.mu[ib]).abs() / sa.min(sb));
                        s = s.max((sa.ln() - sb.ln()).abs());
                    }
                    if !pred.dof.is_empty() {
                        // Student's t: the tails count too (a core and an outlier component
                        // at one place are not duplicates): ln(nu - 2), as it is learnt.
                        let (na, nb) = (pred.dof[r * k + a], pred.dof[r * k + b]);
                        s = s.max(((na - 2.0).ln() - (nb - 2.0).ln()).abs());
                    }
                    dmu += m / n;
                    dsig += s / n;
                }
                if dmu < 0.1 && dsig < 0.1 {
                    duplicates.push((a, b));
                }
            }
        }
        Ok(ComponentUsage {
            weights,
            unused,
            duplicates,
        })
    }

    /// `n` samples per row from the predicted mixture, in original units: `rows * n * D`
    /// values, row-major (row, then sample, then dimension). Deterministic for a seed.
    /// `temperature` T sharpens (T < 1) or flattens (T > 1) the mixture weights as
    /// pi_k^(1/T), renormalised — as dividing the logits by T; T -> 0 picks the heaviest
    /// component. `sigma_scale` S multiplies every standard deviation.
    pub fn sample(
        &self,
        backend: &mut dyn Backend,
        data: &Dataset,
        n: usize,
        seed: u64,
        temperature: f64,
        sigma_scale: f64,
    ) -> Result<Vec<f64>> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::config(format!(
                "--temperature must be a positive number, got {temperature}"
            )));
        }
        if !(sigma_scale.is_finite() && sigma_scale > 0.0) {
            return Err(Error::config(format!(
                "--sigma-scale must be a positive number, got {sigma_scale}"
            )));
        }
        // Refused before any work where the draws could not be held (it aborted the process
        // on a failed allocation, or overflowed the count).
        let values = data
            .rows
            .checked_mul(n)
            .and_then(|v| v.checked_mul(self.arch.targets))
            .filter(|&v| v <= MAX_SAMPLE_VALUES);
        let Some(values) = values else {
            return Err(Error::config(format!(
                "--n {n}: {n} draws of {} row(s) of {} target(s) are more than the {MAX_SAMPLE_VALUES} \
                 values (8 GB) a sample may hold; draw fewer, or fewer rows at a time",
                data.rows, self.arch.targets
            )));
        };
        let mut out: Vec<f64> = Vec::new();
        out.try_reserve_exact(values).map_err(|_| {
            Error::config(format!(
                "--n {n}: no memory for {values} sampled values ({} GB); draw fewer",
                values * 8 / 1_000_000_000
            ))
        })?;
        let pred = self.predict(backend, data)?;
        let (k, d) = (pred.k, pred.d);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut weights = vec![0.0f64; k];
        let mut e: Vec<f64> = Vec::with_capacity(d);
        for r in 0..pred.rows {
            let pi = &pred.pi[r * k..(r + 1) * k];
            // pi^(1/T) in the log domain, so that small T does not underflow.
            let logs: Vec<f64> = pi
                .iter()
                .map(|p| p.max(f64::MIN_POSITIVE).ln() / temperature)
                .collect();
            let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            for (w, l) in weights.iter_mut().zip(&logs) {
                *w = (l - top).exp();
            }
            let total: f64 = weights.iter().sum();
            for _ in 0..n {
                let u: f64 = rng.random::<f64>() * total;
                let mut acc = 0.0;
                let mut c = k - 1;
                for (i, &w) in weights.iter().enumerate() {
                    acc += w;
                    if u < acc {
                        c = i;
                        break;
                    }
                }
                let start = out.len();
                // A multivariate t is a Gaussian whose scale is divided by sqrt(W),
                // W ~ chi²(nu) / nu, one W per draw.
                let stretch = if pred.dof.is_empty() {
                    1.0
                } else {
                    let nu = pred.dof[r * k + c];
                    let w: f64 = rand_distr::Gamma::new(0.5 * nu, 2.0 / nu)
                        .expect("nu > 2")
                        .sample(&mut rng);
                    1.0 / w.sqrt()
                };
                let sigma_scale = sigma_scale * stretch;
                if pred.scale_tril.is_empty() {
                    for j in 0..d {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        let i = (r * k + c) * d + j;
                        out.push(pred.mu[i] + sigma_scale * pred.sigma[i] * z);
                    }
                } else {
                    // y = mu + S L e, e standard normal in D dimensions.
                    e.clear();
                    e.extend((0..d).map(|_| -> f64 { StandardNormal.sample(&mut rng) }));
                    let l = &pred.scale_tril[((r * k + c) * d) * d..((r * k + c + 1) * d) * d];
                    for j in 0..d {
                        let le: f64 = (0..=j).map(|i| l[j * d + i] * e[i]).sum();
                        out.push(pred.mu[(r * k + c) * d + j] + sigma_scale * le);
                    }
                }
                // A sample of z = g(y) taken back to y.
                for (j, v) in out[start..].iter_mut().enumerate() {
                    *v = crate::transform::of(&pred.transforms, j).inverse(*v);
                }
            }
        }
        Ok(out)
    }
}

/// The error for a target value outside its transform's support (row `r` of `data`).
pub(crate) fn outside_support(
    path: &Path,
    targets: &[String],
    transforms: &[Transform],
    (r, j, v): (usize, usize, f32),
) -> Error {
    let t = crate::transform::of(transforms, j);
    // 0.99999999999 is 1 as a 32-bit float, outside logit:0,1.
    let on_edge = match t {
        crate::transform::Transform::Log => v == 0.0,
        crate::transform::Transform::Logit { low, high } => {
            v as f64 == low as f32 as f64 || v as f64 == high as f32 as f64
        }
        crate::transform::Transform::None => false,
    };
    let rounded = if on_edge {
        " (values are kept as 32-bit floats, which round one within about 1e-7 of an edge, \
         relatively, onto it: clip such values inside first)"
    } else {
        ""
    };
    Error::data(
        crate::error::Location::file(path),
        format!(
            "row {r} (counting from 0), target '{}': {v} is outside the support of --transform {t}: the target must be {}{rounded}",
            targets.get(j).map_or("?", |s| s.as_str()),
            t.support()
        ),
    )
}

/// Row-major targets `y` of `data`'s file mapped by `transforms` (a copy; `y` itself when
/// there are none); a value outside its support is an error naming its row.
pub(crate) fn transformed_targets<'a>(
    path: &Path,
    targets: &[String],
    transforms: &[Transform],
    y: &'a [f32],
) -> Result<std::borrow::Cow<'a, [f32]>> {
    if crate::transform::all_none(transforms) {
        return Ok(std::borrow::Cow::Borrowed(y));
    }
    let mut z = y.to_vec();
    crate::transform::forward_rows(transforms, &mut z, targets.len())
        .map_err(|bad| outside_support(path, targets, transforms, bad))?;
    Ok(std::borrow::Cow::Owned(z))
}
