//! The trainer: standardisation, initialisation, the validation split, the epoch loop with
//! early stopping. It talks only to the [`Backend`] trait.
//!
//! Randomness comes from one seed through ChaCha8 streams, one per purpose (initialisation,
//! the validation split, the per-epoch shuffles), so the same seed gives the same run on the
//! same backend, and changing one use of randomness never shifts another.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, DataRef, StepConfig};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layout::{Activation, Arch, DEFAULT_SIGMA_FLOOR};
use crate::mixture::softplus_inverse;
use crate::model::{EpochRecord, Model, Scaler, TrainingInfo};

/// ChaCha8 stream numbers, one per use of the seed.
const STREAM_INIT: u64 = 1;
const STREAM_SPLIT: u64 = 2;
const STREAM_SHUFFLE: u64 = 3;

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// When training stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stopping {
    /// Stop when the validation NLL has not improved for `patience` epochs, or after
    /// `max_epochs`; the best parameters by validation NLL are kept.
    Early { patience: usize, max_epochs: usize },
    /// Run exactly `epochs` epochs and keep the last parameters.
    Fixed { epochs: usize },
}

/// Everything that shapes a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub components: usize,
    pub sigma_floor: f32,
    pub step: StepConfig,
    pub stopping: Stopping,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            hidden: vec![64],
            activation: Activation::Relu,
            components: 5,
            sigma_floor: DEFAULT_SIGMA_FLOOR,
            step: StepConfig::default(),
            stopping: Stopping::Early {
                patience: 10,
                max_epochs: 200,
            },
            seed: 0,
        }
    }
}

/// What the trainer tells its observer after every epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    /// The most epochs this run can take.
    pub max_epochs: usize,
    /// Mean training NLL per row (original units).
    pub train_nll: f64,
    /// Validation NLL per row (original units).
    pub val_nll: Option<f64>,
    pub best_val_nll: Option<f64>,
    pub best_epoch: usize,
    /// Training rows per second in this epoch.
    pub rows_per_sec: f64,
}

/// Splits `data` into training and validation rows: a `fraction` of the rows, chosen by
/// `seed`, is held out. Returns no validation set when `fraction` is 0.
pub fn split_validation(
    data: &Dataset,
    fraction: f64,
    seed: u64,
) -> Result<(Dataset, Option<Dataset>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::config(format!(
            "--val-fraction must be in [0, 1), got {fraction}"
        )));
    }
    if fraction == 0.0 {
        return Ok((data.clone(), None));
    }
    let n_val = ((data.rows as f64) * fraction).round() as usize;
    if n_val == 0 || n_val >= data.rows {
        return Err(Error::config(format!(
            "{}: {} rows are too few to hold out a validation fraction of {fraction}",
            data.path.display(),
            data.rows
        )));
    }
    let mut idx: Vec<usize> = (0..data.rows).collect();
    idx.shuffle(&mut rng_for(seed, STREAM_SPLIT));
    let (val, train) = idx.split_at(n_val);
    let mut train = train.to_vec();
    let mut val = val.to_vec();
    // Keep file order within each part: only membership is random.
    train.sort_unstable();
    val.sort_unstable();
    Ok((data.subset(&train), Some(data.subset(&val))))
}

/// The head kernel starts at this fraction of Glorot-uniform, so that at first the head's
/// outputs are close to its biases (below) for every input. At full Glorot scale the raw sigma
/// of some inputs starts several units below its bias, sigma is tiny there, and the first
/// epochs' NLL runs into the thousands.
const HEAD_KERNEL_SCALE: f64 = 0.1;

/// Initial parameters in the flat layout: He-uniform (relu) or Glorot-uniform (tanh) hidden
/// kernels, a head kernel at [`HEAD_KERNEL_SCALE`] of Glorot-uniform, zero biases, except the
/// head's biases: the means of component k sit at the (k + 1/2)/K quantile of each
/// standardised target, and every sigma starts at max(1/K, 0.05) (standardised units), so
/// components start apart and no sigma starts small.
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
    let (k, d) = (arch.components, arch.targets);
    let rows = y_std.len() / d;
    let mut column = Vec::with_capacity(rows);
    for j in 0..d {
        column.clear();
        column.extend(y_std.iter().skip(j).step_by(d).copied());
        column.sort_unstable_by(f32::total_cmp);
        for c in 0..k {
            let q = (c as f64 + 0.5) / k as f64;
            let pos = ((rows as f64 - 1.0) * q).round() as usize;
            params[head.bias + k + c * d + j] = column.get(pos).copied().unwrap_or(0.0);
        }
    }
    let sigma0 = (1.0 / k as f64).max(0.05);
    let raw0 = softplus_inverse((sigma0 - arch.sigma_floor as f64).max(1e-3)) as f32;
    for i in 0..k * d {
        params[head.bias + k + k * d + i] = raw0;
    }
    params
}

/// Trains a model on `train`, validating on `val` (needed for early stopping), and returns
/// it with its training history. `observer` is called after every epoch; returning `false`
/// stops training (the parameters kept so far are returned).
pub fn train(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    observer: &mut dyn FnMut(&EpochReport) -> bool,
) -> Result<Model> {
    let mut arch = Arch::new(
        train.d_in(),
        opts.hidden.clone(),
        opts.activation,
        opts.components,
        train.d_out(),
    )?;
    arch.sigma_floor = opts.sigma_floor;
    arch.validate()?;
    check_options(train, val, opts)?;

    let x_scaler = Scaler::fit(&train.x, train.d_in());
    let y_scaler = Scaler::fit(&train.y, train.d_out());
    for j in 0..train.d_out() {
        if Scaler::is_constant(&train.y, train.d_out(), j) {
            return Err(Error::data(
                crate::error::Location::file(&train.path),
                format!(
                    "target column '{}' is constant in the training rows: there is no distribution to learn",
                    train.targets[j]
                ),
            ));
        }
    }
    let tx = x_scaler.apply(&train.x);
    let ty = y_scaler.apply(&train.y);
    let val_std = val.map(|v| (x_scaler.apply(&v.x), y_scaler.apply(&v.y), v.rows));
    let jac = y_scaler.log_jacobian();

    let params = init_params(&arch, &ty, opts.seed);
    backend.start(
        &arch,
        &params,
        DataRef {
            x: &tx,
            y: &ty,
            rows: train.rows,
        },
        val_std
            .as_ref()
            .map(|(x, y, rows)| DataRef { x, y, rows: *rows }),
    )?;

    let (max_epochs, patience) = match opts.stopping {
        Stopping::Early {
            patience,
            max_epochs,
        } => (max_epochs, Some(patience)),
        Stopping::Fixed { epochs } => (epochs, None),
    };
    let mut order: Vec<u32> = (0..train.rows as u32).collect();
    let mut shuffle_rng = rng_for(opts.seed, STREAM_SHUFFLE);
    let mut history = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    let mut stop_reason = match opts.stopping {
        Stopping::Early { .. } => "max-epochs",
        Stopping::Fixed { .. } => "epochs",
    };
    let mut epochs_run = 0;
    for epoch in 1..=max_epochs {
        order.shuffle(&mut shuffle_rng);
        let started = Instant::now();
        let stats = backend.train_epoch(&order, &opts.step)?;
        let seconds = started.elapsed().as_secs_f64();
        epochs_run = epoch;
        if !stats.finite {
            return Err(Error::Numerical(format!(
                "epoch {epoch} produced NaN or infinite values (train NLL {:.4}); no model was written. \
                 Try a lower --lr (now {}) or a larger --l2",
                stats.train_nll - jac,
                opts.step.lr
            )));
        }
        let train_nll = stats.train_nll - jac;
        let val_nll = stats.val_nll.map(|v| v - jac);
        history.push(EpochRecord {
            epoch,
            train_nll,
            val_nll,
        });
        if let Some(v) = val_nll {
            if best.is_none_or(|(_, b)| v < b) {
                best = Some((epoch, v));
                if patience.is_some() {
                    backend.keep_best()?;
                }
            }
        }
        let report = EpochReport {
            epoch,
            max_epochs,
            train_nll,
            val_nll,
            best_val_nll: best.map(|b| b.1),
            best_epoch: best.map(|b| b.0).unwrap_or(0),
            rows_per_sec: train.rows as f64 / seconds.max(1e-9),
        };
        if !observer(&report) {
            stop_reason = "interrupted";
            break;
        }
        if let (Some(p), Some((best_epoch, _))) = (patience, best) {
            if epoch - best_epoch >= p {
                stop_reason = "early-stopping";
                break;
            }
        }
    }

    let (params, saved_epoch) = match opts.stopping {
        Stopping::Early { .. } => (
            backend.best_params()?,
            best.map(|b| b.0).unwrap_or(epochs_run),
        ),
        Stopping::Fixed { .. } => (backend.current_params()?, epochs_run),
    };
    let mut model = Model::new(
        arch,
        train.features.clone(),
        train.targets.clone(),
        x_scaler,
        y_scaler,
        params,
    );
    model.training = Some(TrainingInfo {
        mdn_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend.name(),
        seed: opts.seed,
        lr: opts.step.lr,
        beta1: opts.step.beta1,
        beta2: opts.step.beta2,
        eps: opts.step.eps,
        l2: opts.step.l2,
        batch_size: opts.step.batch_size,
        train_rows: train.rows,
        val_rows: val.map(|v| v.rows).unwrap_or(0),
        epochs: epochs_run,
        saved_epoch,
        best_epoch: best.map(|b| b.0),
        best_val_nll: best.map(|b| b.1),
        stop_reason: stop_reason.to_string(),
        history,
    });
    Ok(model)
}

fn check_options(train: &Dataset, val: Option<&Dataset>, opts: &TrainOptions) -> Result<()> {
    let s = &opts.step;
    if s.batch_size == 0 {
        return Err(Error::config("--batch-size must be at least 1"));
    }
    if !(s.lr.is_finite() && s.lr > 0.0) {
        return Err(Error::config(format!(
            "--lr must be a positive number, got {}",
            s.lr
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
    match opts.stopping {
        Stopping::Early {
            patience,
            max_epochs,
        } => {
            if val.is_none() {
                return Err(Error::config(
                    "early stopping needs validation data: give --val FILE or --val-fraction > 0, or run a fixed number of --epochs",
                ));
            }
            if patience == 0 || max_epochs == 0 {
                return Err(Error::config(
                    "--patience and --max-epochs must be at least 1",
                ));
            }
        }
        Stopping::Fixed { epochs } => {
            if epochs == 0 {
                return Err(Error::config("--epochs must be at least 1"));
            }
        }
    }
    if train.rows < s.batch_size {
        return Err(Error::config(format!(
            "{}: {} training rows{} are fewer than one batch of {}: use --batch-size {} or less, or more data",
            train.path.display(),
            train.rows,
            if val.is_some() {
                " (after holding out validation rows)"
            } else {
                ""
            },
            s.batch_size,
            train.rows
        )));
    }
    if let Some(v) = val {
        if v.features != train.features || v.targets != train.targets {
            return Err(Error::config(format!(
                "{}: validation columns [{}] -> [{}] differ from training columns [{}] -> [{}]",
                v.path.display(),
                v.features.join(", "),
                v.targets.join(", "),
                train.features.join(", "),
                train.targets.join(", ")
            )));
        }
    }
    Ok(())
}
