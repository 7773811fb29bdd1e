//! What every run fixes before its first epoch: the standardisation (from the training rows
//! only), the architecture, the feature columns that are constant, and each seed's initial
//! parameters. The epoch loop (`epochs`) starts from what this gives.

use rand::Rng;

use super::options::TrainOptions;
use super::{STREAM_INIT, rng_for};
use crate::backend::DataRef;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layout::{Activation, Arch};
use crate::mixture::softplus_inverse;
use crate::model::transformed_targets;
use crate::scaler::{ColumnStats, Scaler};
use crate::transform::{Transform, mean_log_jacobian};

/// The head kernel starts at this fraction of Glorot-uniform, so that at first the head's
/// outputs are close to its biases (below) for every input. At full Glorot scale the raw sigma
/// of some inputs starts several units below its bias, sigma is tiny there, and the first
/// epochs' NLL runs into the thousands.
const HEAD_KERNEL_SCALE: f64 = 0.1;

/// The degrees of freedom Student's t components start from: tails clearly heavier than the
/// Gaussian's, so that outliers do not drag the first epochs' means, and a short way (in
/// raw units, ln(nu - 2)) from both nu near 2 and nu in the hundreds.
const INITIAL_DOF: f64 = 5.0;

/// Initial parameters in the flat layout: He-uniform (relu) or Glorot-uniform (tanh) hidden
/// kernels, a head kernel at [`HEAD_KERNEL_SCALE`] of Glorot-uniform, zero biases, except the
/// head's biases: the means of component k sit at the (k + 1/2)/K quantile of each
/// standardised target, and every sigma starts at max(1/K, 0.05) (standardised units), so
/// components start apart and no sigma starts small; Student's t components start at
/// [`INITIAL_DOF`] degrees of freedom.
pub fn init_params(arch: &Arch, y_std: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = rng_for(seed, STREAM_INIT);
    let mut params = vec![0.0f32; arch.param_count()];
    let layers = arch.layers();
    for layer in &layers {
        let limit = if !layer.activated {
            HEAD_KERNEL_SCALE * (6.0 / (layer.inputs + layer.outputs) as f64).sqrt()
        } else if arch.activation == Activation::Relu {
            (6.0 / layer.inputs as f64).sqrt()
        } else {
            (6.0 / (layer.inputs + layer.outputs) as f64).sqrt()
        };
        for w in &mut params[layer.weights..layer.weights + layer.weight_count()] {
            *w = rng.random_range(-limit..limit) as f32;
        }
    }
    let head = layers.last().expect("an architecture has a head");
    let (k, d, at) = (arch.components, arch.targets, arch.head());
    let rows = y_std.len() / d;
    let mut column = Vec::with_capacity(rows);
    for j in 0..d {
        column.clear();
        column.extend(y_std.iter().skip(j).step_by(d).copied());
        column.sort_unstable_by(f32::total_cmp);
        for c in 0..k {
            let q = (c as f64 + 0.5) / k as f64;
            let pos = ((rows as f64 - 1.0) * q).round() as usize;
            params[head.bias + at.mu(c, j)] = column.get(pos).copied().unwrap_or(0.0);
        }
    }
    let sigma0 = (1.0 / k as f64).max(0.05);
    let raw0 = softplus_inverse((sigma0 - arch.sigma_floor as f64).max(1e-3)) as f32;
    for i in at.raw_scales() {
        params[head.bias + i] = raw0;
    }
    if at.dof {
        for c in 0..k {
            params[head.bias + at.raw_dof(c)] = crate::student::raw_dof(INITIAL_DOF) as f32;
        }
    }
    params
}

#[derive(Clone)]
/// What every training run fixes before its first epoch: the architecture, the columns, the
/// standardisation (from the training rows only) and the constant feature columns.
pub(super) struct Setup {
    pub(super) arch: Arch,
    pub(super) features: Vec<String>,
    pub(super) targets: Vec<String>,
    pub(super) x_scaler: Scaler,
    pub(super) y_scaler: Scaler,
    /// Per target, the transform `z = g(y)` (empty: none): every row the run sees has its
    /// targets in units of z.
    pub(super) transforms: Vec<Transform>,
    /// The mean ln |dz/dy| of the training rows and of the validation rows: what the NLLs
    /// in units of z are corrected by to be NLLs of y (0 without transforms).
    pub(super) log_jacobian: (f64, f64),
    /// Feature columns constant in the training rows: they carry nothing to learn from, and
    /// their first-layer weights start (and, their gradient being zero, stay) at zero, so
    /// that the model ignores whatever value they take when it predicts.
    pub(super) constant_features: Vec<usize>,
}

impl Setup {
    /// A seed's initial parameters ([`init_params`]), with the weights of constant feature
    /// columns at zero.
    pub(super) fn initial_params(&self, y_std: &[f32], seed: u64) -> Vec<f32> {
        let mut params = init_params(&self.arch, y_std, seed);
        let first = &self.arch.layers()[0];
        for &c in &self.constant_features {
            let row = first.weights + c * first.outputs;
            params[row..row + first.outputs].fill(0.0);
        }
        params
    }

    /// The setup of a run on `features` -> `targets` whose training rows have the statistics
    /// `x` and `y`: an error when a target is constant (nothing to learn).
    pub(super) fn new(
        path: &std::path::Path,
        features: &[String],
        targets: &[String],
        x: &ColumnStats,
        y: &ColumnStats,
        opts: &TrainOptions,
    ) -> Result<Setup> {
        let mut arch = Arch::new(
            features.len(),
            opts.hidden.clone(),
            opts.activation,
            opts.components,
            targets.len(),
        )?;
        arch.sigma_floor = opts.sigma_floor;
        arch.covariance = opts.covariance;
        arch.family = opts.family;
        arch.validate()?;
        if !opts.family.is_gaussian() && !crate::transform::all_none(&opts.transforms) {
            return Err(Error::config(student_with_transform()));
        }
        if !opts.transforms.is_empty() && opts.transforms.len() != targets.len() {
            return Err(Error::config(format!(
                "{} target transform(s) for {} target(s)",
                opts.transforms.len(),
                targets.len()
            )));
        }
        for (j, name) in targets.iter().enumerate() {
            if y.is_constant(j) {
                // One float32 value may stand for many: large values that differ little.
                let rounded = if y.scaler().mean[j].abs() >= 1e6 {
                    " (or its values differ only past the 7th significant digit, which float32, \
                     in which mdn computes, does not keep: then subtract an offset from it first)"
                } else {
                    ""
                };
                return Err(Error::data(
                    crate::error::Location::file(path),
                    format!(
                        "target column '{name}' is constant in the training rows: there is no distribution to learn{rounded}"
                    ),
                ));
            }
            // A transformed target's are checked on its own values where the rows are read
            // (these are of z = g(y): the advice would be about z).
            let transformed = !matches!(
                crate::transform::of(&opts.transforms, j),
                crate::transform::Transform::None
            );
            if let Some(c) = y.coarse(j).filter(|_| !transformed) {
                return Err(Error::data(
                    crate::error::Location::file(path),
                    format!("target {}", c.message(name)),
                ));
            }
        }
        Ok(Setup {
            arch,
            features: features.to_vec(),
            targets: targets.to_vec(),
            x_scaler: x.scaler(),
            y_scaler: y.scaler(),
            transforms: if crate::transform::all_none(&opts.transforms) {
                Vec::new()
            } else {
                opts.transforms.clone()
            },
            log_jacobian: (0.0, 0.0),
            constant_features: (0..features.len()).filter(|&c| x.is_constant(c)).collect(),
        })
    }
}

/// The targets of `d` mapped by `transforms` (`d.y` itself when there are none).
fn transformed<'a>(
    d: &'a Dataset,
    transforms: &[Transform],
) -> Result<std::borrow::Cow<'a, [f32]>> {
    transformed_targets(&d.path, &d.targets, transforms, &d.y)
}

/// In-memory rows standardised with the training rows' statistics, and the run's setup.
pub(super) struct Standardised {
    pub(super) setup: Setup,
    pub(super) tx: Vec<f32>,
    pub(super) ty: Vec<f32>,
    /// Validation inputs, targets and rows.
    pub(super) val_std: Option<(Vec<f32>, Vec<f32>, usize)>,
}

/// The standardised validation rows as a backend takes them.
pub(super) fn val_ref(val_std: &Option<(Vec<f32>, Vec<f32>, usize)>) -> Option<DataRef<'_>> {
    val_std
        .as_ref()
        .map(|(x, y, rows)| DataRef { x, y, rows: *rows })
}

/// The setup of a run on rows held in memory, and those rows (and the validation rows)
/// standardised with the training rows' statistics.
pub(super) fn standardise(
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
) -> Result<Standardised> {
    let mut x_stats = ColumnStats::new(train.d_in());
    let mut y_stats = ColumnStats::new(train.d_out());
    let zs = |d| transformed(d, &opts.transforms);
    let train_z = zs(train)?;
    let val_z = val.map(zs).transpose()?;
    x_stats.push(&train.x);
    y_stats.push(&train_z);
    let mut setup = Setup::new(
        train.path.as_path(),
        &train.features,
        &train.targets,
        &x_stats,
        &y_stats,
        opts,
    )?;
    let d = train.d_out();
    setup.log_jacobian = (
        mean_log_jacobian(&setup.transforms, &train_z, d),
        val_z
            .as_ref()
            .map_or(0.0, |z| mean_log_jacobian(&setup.transforms, z, d)),
    );
    let tx = setup.x_scaler.apply(&train.x);
    let ty = setup.y_scaler.apply(&train_z);
    let val_std = val
        .zip(val_z.as_ref())
        .map(|(v, z)| (setup.x_scaler.apply(&v.x), setup.y_scaler.apply(z), v.rows));
    Ok(Standardised {
        setup,
        tx,
        ty,
        val_std,
    })
}

/// Why `--family student-t` is refused together with a target transform.
pub(crate) fn student_with_transform() -> String {
    "--family student-t with a target transform (--transform) is not supported (a log-t \
     target has no mean or variance; logit with t components is not built): fit one or the \
     other and compare their held-out NLLs"
        .to_string()
}
