//! The trainer: standardisation, initialisation, the validation split, the epoch loop with
//! early stopping. It talks only to the [`Backend`] trait.
//!
//! Two ways in, one epoch loop ([`fit`]): [`train`] hands the backend a data set held in
//! memory; [`train_stream`] reads a [`RowSource`] (a `.npy` file) window by window, so the
//! data set may be larger than memory or than the GPU's buffers.
//!
//! The validation split is by row index: row `r` is held out when a hash of (seed, r) falls
//! below `--val-fraction`. Membership is the same in memory and streamed, the same every epoch,
//! and needs no pass over the data to decide.
//!
//! Randomness comes from one seed through ChaCha8 streams, one per purpose (initialisation,
//! the per-epoch shuffles), so the same seed gives the same run on the same backend, and
//! changing one use of randomness never shifts another.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{Backend, DataRef, EpochStats, StepConfig, TrainRun, TrainState};
use crate::data::{Dataset, RowSource};
use crate::error::{Error, Result};
use crate::layout::{Activation, Arch, Covariance, DEFAULT_SIGMA_FLOOR};
use crate::mixture::softplus_inverse;
use crate::model::{EpochRecord, Model, Recovery, TrainingInfo};
use crate::scaler::{ColumnStats, Scaler};

/// ChaCha8 stream numbers, one per use of the seed.
const STREAM_INIT: u64 = 1;
const STREAM_SHUFFLE: u64 = 3;
/// Salt of the validation-split hash.
const SPLIT_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

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
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            hidden: vec![64],
            activation: Activation::Relu,
            components: 5,
            sigma_floor: DEFAULT_SIGMA_FLOOR,
            covariance: Covariance::Diagonal,
            step: StepConfig::default(),
            stopping: Stopping::Early {
                patience: 10,
                max_epochs: 200,
            },
            seed: 0,
            split_seed: None,
            exact_split: true,
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
    /// Seconds this epoch took.
    pub seconds: f64,
    /// Seconds left at most, at the mean epoch time so far: the epochs left to `max_epochs`
    /// (early stopping may end the run sooner).
    pub eta_seconds: f64,
}

/// What the trainer tells its observer; returning `false` from the observer stops training
/// (after an epoch, the parameters kept so far are used; within a streamed epoch, the epoch
/// is abandoned and the last completed epoch's parameters are kept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent {
    /// Progress within an epoch (streamed training reports it after every window).
    Rows {
        epoch: usize,
        done: usize,
        total: usize,
    },
    /// An epoch has finished.
    Epoch(EpochReport),
    /// An epoch produced NaN or infinite values (first in `batch`, 1-based, when known); the
    /// state before it was restored and the epoch is run again at learning rate `lr`.
    Recovered {
        epoch: usize,
        batch: Option<u64>,
        lr: f32,
    },
}

/// Retries of an epoch after a numerical fault before training gives up.
pub const MAX_RETRIES: usize = 3;

/// splitmix64: a fast, well-mixed hash of a 64-bit value.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which rows (0-based, in file order) are held out for validation. Each row gets a key from
/// a hash of the seed and its index; the `round(fraction * rows)` rows with the smallest keys
/// are held out, so that the count is exact and a streamed run holds out the same rows as one
/// in memory. Above [`ValidationSplit::EXACT_ROWS`] rows each row is held out on its own with
/// probability `fraction` (the count then off by a fraction of a percent), so that the split
/// needs no memory per row.
#[derive(Debug, Clone, Copy)]
pub struct ValidationSplit {
    seed_key: u64,
    rule: SplitRule,
}

#[derive(Debug, Clone, Copy)]
enum SplitRule {
    /// No row held out.
    Nothing,
    /// The rows whose key is at most this.
    UpTo(u64),
    /// Each row with this probability.
    Random(f64),
}

impl ValidationSplit {
    /// Splits up to this many rows exactly (the keys take 8 bytes a row while the split is
    /// chosen).
    pub const EXACT_ROWS: usize = 1 << 22;

    pub fn new(seed: u64, fraction: f64, rows: usize) -> ValidationSplit {
        let k = Self::held_out(fraction, rows);
        if fraction <= 0.0 || rows > Self::EXACT_ROWS {
            return Self::per_row(seed, fraction);
        }
        let seed_key = splitmix64(seed ^ SPLIT_SALT);
        let rule = match k {
            0 => SplitRule::Nothing,
            k => {
                let mut keys: Vec<u64> = (0..rows as u64).map(|r| key(seed_key, r)).collect();
                SplitRule::UpTo(*keys.select_nth_unstable(k - 1).1)
            }
        };
        ValidationSplit { seed_key, rule }
    }

    /// How many of `rows` rows an exact split at `fraction` holds out: round(fraction x rows).
    pub fn held_out(fraction: f64, rows: usize) -> usize {
        ((fraction.max(0.0) * rows as f64).round() as usize).min(rows)
    }

    /// Each row held out on its own with probability `fraction`: the rule before the exact
    /// one, kept for runs resumed from checkpoints that were split so.
    pub fn per_row(seed: u64, fraction: f64) -> ValidationSplit {
        ValidationSplit {
            seed_key: splitmix64(seed ^ SPLIT_SALT),
            rule: if fraction > 0.0 {
                SplitRule::Random(fraction)
            } else {
                SplitRule::Nothing
            },
        }
    }

    /// Whether `row` is held out.
    pub fn contains(&self, row: u64) -> bool {
        match self.rule {
            SplitRule::Nothing => false,
            SplitRule::UpTo(cut) => key(self.seed_key, row) <= cut,
            SplitRule::Random(p) => {
                let h = splitmix64(self.seed_key ^ row);
                ((h >> 11) as f64 / (1u64 << 53) as f64) < p
            }
        }
    }
}

/// A row's key for the split: the high bits of a hash of the seed and its index, the index in
/// the low 22 bits (so that no two rows of an exact split share one).
fn key(seed_key: u64, row: u64) -> u64 {
    const LOW: u64 = (1 << 22) - 1;
    (splitmix64(seed_key ^ row) & !LOW) | (row & LOW)
}

/// Splits `data` into training and validation rows by [`ValidationSplit`]. Returns no
/// validation set when `fraction` is 0.
pub fn split_validation(
    data: &Dataset,
    fraction: f64,
    seed: u64,
) -> Result<(Dataset, Option<Dataset>)> {
    split_validation_by(
        data,
        fraction,
        ValidationSplit::new(seed, fraction, data.rows),
    )
}

/// [`split_validation`] by a given split (a resumed run's may be the old per-row one).
pub fn split_validation_by(
    data: &Dataset,
    fraction: f64,
    split: ValidationSplit,
) -> Result<(Dataset, Option<Dataset>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::config(format!(
            "--val-fraction must be in [0, 1), got {fraction}"
        )));
    }
    if fraction == 0.0 {
        return Ok((data.clone(), None));
    }
    let (val, train): (Vec<usize>, Vec<usize>) =
        (0..data.rows).partition(|&r| split.contains(r as u64));
    if val.is_empty() || train.is_empty() {
        return Err(Error::config(format!(
            "{}: {} rows are too few to hold out a validation fraction of {fraction}",
            data.path.display(),
            data.rows
        )));
    }
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
    params
}

/// Trains a model on `train` held in memory, validating on `val` (needed for early
/// stopping), and returns it with its training history.
pub fn train(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    train_with(backend, train, val, opts, None, None, observer)
}

/// [`train`], continuing from a checkpoint's state (`resume`) and writing checkpoints
/// (`checkpointer`). A resumed run ends with the same bits as an uninterrupted one.
pub fn train_with(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    resume: Option<Resume>,
    checkpointer: Option<Checkpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    check_options(train.rows, train.path.as_path(), val, opts)?;
    check_columns(&train.features, &train.targets, val)?;
    let Standardised {
        setup,
        tx,
        ty,
        val_std,
    } = standardise(train, val, opts)?;
    let params = setup.initial_params(&ty, opts.seed);
    let name = backend.name();
    let mut run = backend.start(
        &setup.arch,
        &params,
        DataRef {
            x: &tx,
            y: &ty,
            rows: train.rows,
        },
        val_ref(&val_std),
    )?;
    let resume = match resume {
        Some(r) => Some(r.apply(run.as_mut(), &setup, train.path.as_path())?),
        None => None,
    };
    let mut order: Vec<u32> = (0..train.rows as u32).collect();
    let counts = (train.rows, val.map_or(0, |v| v.rows));
    let model = fit(
        run.as_mut(),
        name,
        setup,
        counts,
        opts,
        resume,
        checkpointer,
        observer,
        &mut |b, _epoch, step, shuffle_rng, _obs| {
            // A fresh permutation each epoch, drawn as the streamed path draws one per window.
            order
                .iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o = i as u32);
            order.shuffle(shuffle_rng);
            b.train_epoch(&order, step).map(Some)
        },
    )?;
    drop(run);
    with_component_usage(model, backend, val.unwrap_or(train))
}

/// Trains the members of an ensemble together, where the backend can
/// ([`Backend::start_members`]; `Ok(None)` where it cannot): the networks of `seeds` (each
/// seed its own initialisation and row orders, as [`train`] with `opts.seed` = that seed)
/// on the same rows, standardisation and validation rows. Each member stops early on its
/// own validation curve and keeps its own best epoch; a member whose epoch goes NaN or
/// infinite goes back to the epoch's start at half its learning rate, as [`train`] does, and
/// its results are the single run's bits (the other members run that epoch again to the same
/// bits). Members that have stopped are carried along until the last one stops.
///
/// The observer gets one [`TrainEvent::Epoch`] per epoch summed up over the members still
/// training (mean NLLs; rows per second over all of them), `note` a line when a member stops.
#[allow(clippy::too_many_arguments)]
pub fn train_members(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    seeds: &[u64],
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
    note: &mut dyn FnMut(&str),
) -> Result<Option<Vec<Model>>> {
    train_members_with(backend, train, val, opts, seeds, None, None, observer, note)
}

/// Writes an ensemble's checkpoint from every member's run state and trainer state and the
/// standardisation.
pub type MembersCheckpointFn<'a> =
    dyn FnMut(Vec<(TrainState, LoopState)>, &Scaler, &Scaler) -> Result<()> + 'a;

/// [`Checkpointer`] for members trained together.
pub struct MembersCheckpointer<'a> {
    pub every: usize,
    pub min_seconds: f64,
    pub write: &'a mut MembersCheckpointFn<'a>,
}

/// [`train_members`], continuing from each member's checkpointed state (all at the same Adam
/// step: as members trained together leave them) and writing checkpoints of all of them.
#[allow(clippy::too_many_arguments)]
pub fn train_members_with(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    seeds: &[u64],
    resume: Option<Vec<Resume>>,
    mut checkpointer: Option<MembersCheckpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
    note: &mut dyn FnMut(&str),
) -> Result<Option<Vec<Model>>> {
    check_options(train.rows, train.path.as_path(), val, opts)?;
    check_columns(&train.features, &train.targets, val)?;
    let m = seeds.len();
    if m == 0 {
        return Err(Error::config("an ensemble needs at least one member"));
    }
    let Standardised {
        setup,
        tx,
        ty,
        val_std,
    } = standardise(train, val, opts)?;
    let params: Vec<Vec<f32>> = seeds
        .iter()
        .map(|&seed| setup.initial_params(&ty, seed))
        .collect();
    let name = backend.name();
    let Some(mut run) = backend.start_members(
        &setup.arch,
        &params,
        DataRef {
            x: &tx,
            y: &ty,
            rows: train.rows,
        },
        val_ref(&val_std),
    )?
    else {
        return Ok(None);
    };
    let jac = setup.y_scaler.log_jacobian();
    let (max_epochs, patience) = match opts.stopping {
        Stopping::Early {
            patience,
            max_epochs,
        } => (max_epochs, Some(patience)),
        Stopping::Fixed { epochs } => (epochs, None),
    };
    let rows = train.rows;
    let mut states: Vec<LoopState> = (0..m).map(|_| LoopState::new(opts)).collect();
    let mut rngs: Vec<ChaCha8Rng> = seeds.iter().map(|&s| rng_for(s, STREAM_SHUFFLE)).collect();
    let mut stop: Vec<Option<&str>> = vec![None; m];
    let mut lrs = vec![opts.step.lr; m];
    let mut first_epoch = 1;
    if let Some(resume) = resume {
        if resume.len() != m {
            return Err(Error::config(format!(
                "{} members' states to resume an ensemble of {m}",
                resume.len()
            )));
        }
        let mut saved = Vec::with_capacity(m);
        for (i, r) in resume.into_iter().enumerate() {
            if setup.x_scaler != r.x_scaler || setup.y_scaler != r.y_scaler {
                return Err(Error::config(format!(
                    "{}: the training data differ from the checkpoint's (their statistics changed); cannot resume",
                    train.path.display()
                )));
            }
            rngs[i].set_word_pos(
                r.trainer
                    .shuffle_position
                    .parse()
                    .map_err(|_| Error::config("checkpoint: malformed shuffle position"))?,
            );
            lrs[i] = r.trainer.lr;
            // A member that had stopped early stays stopped (one that ran out of epochs has
            // none left to run).
            stop[i] = match (patience, r.trainer.best) {
                (Some(p), Some((b, _))) if r.trainer.completed - b >= p => Some("early-stopping"),
                _ => None,
            };
            first_epoch = first_epoch.max(r.trainer.completed + 1);
            states[i] = r.trainer;
            saved.push(r.state);
        }
        run.load_state(&saved)?;
    }
    let mut last_checkpoint = Instant::now();
    let mut orders: Vec<u32> = (0..m).flat_map(|_| 0..rows as u32).collect();
    // A fresh permutation for member i, drawn as `train` draws one.
    let shuffle = |orders: &mut [u32], rng: &mut ChaCha8Rng, i: usize| {
        let o = &mut orders[i * rows..(i + 1) * rows];
        o.iter_mut().enumerate().for_each(|(r, v)| *v = r as u32);
        o.shuffle(rng);
    };
    let (mut run_seconds, mut epochs_run) = (0.0f64, 0usize);
    let mut interrupted = false;
    for epoch in first_epoch..=max_epochs {
        let active: Vec<usize> = (0..m).filter(|&i| stop[i].is_none()).collect();
        if active.is_empty() {
            break;
        }
        let started = Instant::now();
        run.snapshot()?;
        for &i in &active {
            shuffle(&mut orders, &mut rngs[i], i);
        }
        let mut faults = vec![0usize; m];
        let stats = loop {
            let step = StepConfig {
                lr: lrs[0],
                ..opts.step
            };
            let flags: Vec<bool> = (0..m).map(|i| stop[i].is_none()).collect();
            let stats = run.train_epoch(&orders, &step, &lrs, &flags)?;
            let bad: Vec<usize> = active
                .iter()
                .copied()
                .filter(|&i| !stats[i].finite)
                .collect();
            if bad.is_empty() {
                break stats;
            }
            for &i in &bad {
                faults[i] += 1;
                let batch = stats[i]
                    .first_bad_batch
                    .map(|b| format!(" (first at batch {})", b + 1))
                    .unwrap_or_default();
                if faults[i] > MAX_RETRIES {
                    return Err(Error::Numerical(format!(
                        "ensemble member {} (seed {}): epoch {epoch} produced NaN or infinite values{batch} {} times, down to --lr {}; no model was written. \
                         Try a lower --lr (it was {}), a larger --l2, or look for extreme values in the data",
                        i + 1,
                        seeds[i],
                        faults[i],
                        lrs[i],
                        opts.step.lr
                    )));
                }
                lrs[i] /= 2.0;
                let recovery = Recovery {
                    epoch,
                    batch: stats[i].first_bad_batch.map(|b| b + 1),
                    lr: lrs[i],
                };
                states[i].recoveries.push(recovery.clone());
                observer(&TrainEvent::Recovered {
                    epoch,
                    batch: recovery.batch,
                    lr: lrs[i],
                });
                note(&format!(
                    "member {}: epoch {epoch} went NaN or infinite{batch}; running it again at --lr {}",
                    i + 1,
                    lrs[i]
                ));
                // As `train`: the epoch again from its start, with a new permutation.
                shuffle(&mut orders, &mut rngs[i], i);
            }
            // Every member back to the epoch's start; the others repeat it to the same bits.
            run.restore()?;
        };
        let seconds = started.elapsed().as_secs_f64();
        run_seconds += seconds;
        epochs_run += 1;
        let mut keep = vec![false; m];
        let (mut train_sum, mut val_sum, mut val_count) = (0.0, 0.0, 0usize);
        for &i in &active {
            let st = &mut states[i];
            st.completed = epoch;
            let train_nll = stats[i].train_nll - jac;
            let val_nll = stats[i].val_nll.map(|v| v - jac);
            st.history.push(EpochRecord {
                epoch,
                train_nll,
                val_nll,
            });
            train_sum += train_nll;
            if let Some(v) = val_nll {
                val_sum += v;
                val_count += 1;
            }
            let improved = val_nll.is_some_and(|v| st.best.is_none_or(|(_, b)| v < b));
            if improved {
                st.best = Some((epoch, val_nll.expect("improved implies a value")));
            }
            keep[i] = improved || patience.is_none();
            st.lr = lrs[i];
            st.shuffle_position = rngs[i].get_word_pos().to_string();
        }
        if keep.iter().any(|&k| k) {
            run.keep_best(&keep)?;
        }
        let mut written = false;
        let write = |run: &mut Box<dyn crate::backend::MembersRun + '_>,
                     c: &mut MembersCheckpointer<'_>,
                     states: &[LoopState]|
         -> Result<()> {
            let saved = run.save_state()?;
            (c.write)(
                saved.into_iter().zip(states.iter().cloned()).collect(),
                &setup.x_scaler,
                &setup.y_scaler,
            )
        };
        if let Some(c) = checkpointer.as_mut()
            && epoch % c.every.max(1) == 0
            && last_checkpoint.elapsed().as_secs_f64() >= c.min_seconds
        {
            write(&mut run, c, &states)?;
            last_checkpoint = Instant::now();
            written = true;
        }
        let bests: Vec<(usize, f64)> = states.iter().filter_map(|s| s.best).collect();
        let report = EpochReport {
            epoch,
            max_epochs,
            train_nll: train_sum / active.len() as f64,
            val_nll: (val_count > 0).then(|| val_sum / val_count as f64),
            best_val_nll: (bests.len() == m)
                .then(|| bests.iter().map(|b| b.1).sum::<f64>() / m as f64),
            best_epoch: bests.iter().map(|b| b.0).max().unwrap_or(0),
            rows_per_sec: (rows * active.len()) as f64 / seconds.max(1e-9),
            seconds,
            eta_seconds: (max_epochs - epoch) as f64 * run_seconds / epochs_run.max(1) as f64,
        };
        if !observer(&TrainEvent::Epoch(report)) {
            interrupted = true;
            if let Some(c) = checkpointer.as_mut()
                && !written
            {
                write(&mut run, c, &states)?;
            }
            break;
        }
        if let Some(p) = patience {
            for &i in &active {
                if let Some((best_epoch, best_nll)) = states[i].best
                    && epoch - best_epoch >= p
                {
                    stop[i] = Some("early-stopping");
                    note(&format!(
                        "member {} stopped at epoch {epoch}: best epoch {best_epoch}, validation NLL {best_nll:.4}",
                        i + 1
                    ));
                }
            }
        }
    }
    if states.iter().all(|s| s.completed == 0) {
        return Err(Error::Interrupted(
            "interrupted before the first epoch finished; no model was written".into(),
        ));
    }
    let params = run.best_params()?;
    drop(run);
    let fallback = match opts.stopping {
        Stopping::Early { .. } => "max-epochs",
        Stopping::Fixed { .. } => "epochs",
    };
    let counts = (rows, val.map_or(0, |v| v.rows));
    let mut models = Vec::with_capacity(m);
    for (i, (state, params)) in states.into_iter().zip(params).enumerate() {
        let reason = match stop[i] {
            Some(r) => r,
            None if interrupted => "interrupted",
            None => fallback,
        };
        let member_opts = TrainOptions {
            seed: seeds[i],
            ..opts.clone()
        };
        let model = build_model(
            setup.clone(),
            params,
            name.clone(),
            counts,
            &member_opts,
            state,
            reason,
            lrs[i],
        );
        models.push(with_component_usage(model, backend, val.unwrap_or(train))?);
    }
    Ok(Some(models))
}

/// In-memory rows standardised with the training rows' statistics, and the run's setup.
struct Standardised {
    setup: Setup,
    tx: Vec<f32>,
    ty: Vec<f32>,
    /// Validation inputs, targets and rows.
    val_std: Option<(Vec<f32>, Vec<f32>, usize)>,
}

/// The standardised validation rows as a backend takes them.
fn val_ref(val_std: &Option<(Vec<f32>, Vec<f32>, usize)>) -> Option<DataRef<'_>> {
    val_std
        .as_ref()
        .map(|(x, y, rows)| DataRef { x, y, rows: *rows })
}

fn standardise(
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
) -> Result<Standardised> {
    let mut x_stats = ColumnStats::new(train.d_in());
    let mut y_stats = ColumnStats::new(train.d_out());
    x_stats.push(&train.x);
    y_stats.push(&train.y);
    let setup = Setup::new(
        train.path.as_path(),
        &train.features,
        &train.targets,
        &x_stats,
        &y_stats,
        opts,
    )?;
    let tx = setup.x_scaler.apply(&train.x);
    let ty = setup.y_scaler.apply(&train.y);
    let val_std = val.map(|v| {
        (
            setup.x_scaler.apply(&v.x),
            setup.y_scaler.apply(&v.y),
            v.rows,
        )
    });
    Ok(Standardised {
        setup,
        tx,
        ty,
        val_std,
    })
}

/// Records how the trained model uses its components on `data` (mode-collapse diagnostics).
fn with_component_usage(
    mut model: Model,
    backend: &mut dyn Backend,
    data: &Dataset,
) -> Result<Model> {
    let usage = model.component_usage(backend, data)?;
    if let Some(info) = model.training.as_mut() {
        info.components = Some(usage);
    }
    Ok(model)
}

/// How streamed training reads its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamOptions {
    /// Rows read from the file at a time.
    pub chunk_rows: usize,
    /// Chunks shuffled together: each epoch visits the chunks in a new random order, and the
    /// training rows of `window_chunks` consecutive chunks of that order are shuffled
    /// together before they are cut into batches.
    pub window_chunks: usize,
    /// Validation rows kept in memory at most (the split holds out fewer rows when
    /// `--val-fraction` would hold out more).
    pub max_val_rows: usize,
    /// Held-out fraction when no separate validation set is given.
    pub val_fraction: f64,
    /// Rows the backend receives per upload (a GPU's chunk buffers hold this many) [default:
    /// a window's rows and a batch].
    pub device_chunk_rows: Option<usize>,
}

impl StreamOptions {
    /// The fraction of `rows` rows held out for validation: `val_fraction`, or less where
    /// that would be more than `max_val_rows` rows.
    pub fn val_fraction_for(&self, rows: usize) -> f64 {
        if self.val_fraction * rows as f64 > self.max_val_rows as f64 {
            self.max_val_rows as f64 / rows as f64
        } else {
            self.val_fraction
        }
    }

    /// Sizes chosen so that streamed training's data stays within `budget_bytes` for rows of
    /// `row_floats` values: the validation set takes a sixteenth (it is held three times: as
    /// read, standardised, and by the backend), and the rest goes to chunks, of which a
    /// window of 4 and one chunk being read are held about three times each (as read,
    /// standardised, shuffled).
    pub fn for_budget(budget_bytes: usize, row_floats: usize, val_fraction: f64) -> StreamOptions {
        let window_chunks = 4;
        let row_bytes = 4 * row_floats.max(1);
        let max_val_rows = (budget_bytes / 16 / row_bytes / 3).max(1000);
        let chunk_bytes = (budget_bytes - budget_bytes / 16) / (3 * window_chunks + 3);
        let chunk_rows = (chunk_bytes / row_bytes).max(256);
        StreamOptions {
            chunk_rows,
            window_chunks,
            max_val_rows,
            val_fraction,
            device_chunk_rows: Some(chunk_rows),
        }
    }
}

/// Trains a model on rows read from `source` window by window (see [`StreamOptions`]), so that
/// memory holds a few chunks, the validation set and the model, whatever the file's size.
///
/// One pass first computes the standardisation (in f64, training rows only), collects the
/// validation rows (held out from `source` by [`ValidationSplit`], or all of `val` when
/// given) and a sample of up to a million targets for the initial component means. Each epoch
/// then reads the chunks in a new random order; the training rows of each window of
/// `window_chunks` chunks are shuffled together and fed to the backend in batches, rows left
/// over carrying into the next window.
pub fn train_stream(
    backend: &mut dyn Backend,
    source: &mut dyn RowSource,
    val: Option<&Dataset>,
    stream: &StreamOptions,
    opts: &TrainOptions,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    train_stream_with(backend, source, val, stream, opts, None, None, observer)
}

/// [`train_stream`], continuing from a checkpoint's state and writing checkpoints, as
/// [`train_with`] does in memory.
#[allow(clippy::too_many_arguments)]
pub fn train_stream_with(
    backend: &mut dyn Backend,
    source: &mut dyn RowSource,
    val: Option<&Dataset>,
    stream: &StreamOptions,
    opts: &TrainOptions,
    resume: Option<Resume>,
    checkpointer: Option<Checkpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    let (rows, d_in, d_out) = (
        source.rows(),
        source.features().len(),
        source.targets().len(),
    );
    let chunk_rows = stream.chunk_rows.max(1);
    let n_chunks = rows.div_ceil(chunk_rows);
    let (features, targets) = (source.features().to_vec(), source.targets().to_vec());
    let path = source.path().to_path_buf();
    check_columns(&features, &targets, val)?;
    // The split: by index, at a fraction small enough that the validation rows fit in memory.
    let mut fraction = if val.is_some() {
        0.0
    } else {
        stream.val_fraction
    };
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::config(format!(
            "--val-fraction must be in [0, 1), got {fraction}"
        )));
    }
    if fraction > 0.0 {
        fraction = stream.val_fraction_for(rows);
    }
    let split = opts.validation_split(fraction, rows);
    let held_out = |r: usize| split.contains(r as u64);

    // Pass 1: statistics, validation rows, a sample of targets.
    const SAMPLE: usize = 1_000_000;
    let mut x_stats = ColumnStats::new(d_in);
    let mut y_stats = ColumnStats::new(d_out);
    let (mut vx, mut vy) = (Vec::new(), Vec::new());
    let mut sample: Vec<f32> = Vec::new();
    let mut sample_rng = rng_for(opts.seed, STREAM_INIT + 100);
    let (mut cx, mut cy) = (Vec::new(), Vec::new());
    let mut train_rows = 0usize;
    for c in 0..n_chunks {
        let start = c * chunk_rows;
        let n = (rows - start).min(chunk_rows);
        cx.clear();
        cy.clear();
        source.read(start, n, &mut cx, &mut cy)?;
        for r in 0..n {
            let (x, y) = (
                &cx[r * d_in..(r + 1) * d_in],
                &cy[r * d_out..(r + 1) * d_out],
            );
            if held_out(start + r) {
                vx.extend_from_slice(x);
                vy.extend_from_slice(y);
                continue;
            }
            x_stats.push(x);
            y_stats.push(y);
            train_rows += 1;
            // Reservoir sample of the targets.
            if sample.len() < SAMPLE * d_out {
                sample.extend_from_slice(y);
            } else {
                let k = sample_rng.random_range(0..train_rows);
                if k < SAMPLE {
                    sample[k * d_out..(k + 1) * d_out].copy_from_slice(y);
                }
            }
        }
        if !observer(&TrainEvent::Rows {
            epoch: 0,
            done: start + n,
            total: rows,
        }) {
            return Err(Error::Interrupted(
                "interrupted while reading the data; no model was written".into(),
            ));
        }
    }
    let held = (!vy.is_empty()).then(|| Dataset {
        path: path.clone(),
        features: features.clone(),
        targets: targets.clone(),
        rows: vy.len() / d_out.max(1),
        x: std::mem::take(&mut vx),
        y: std::mem::take(&mut vy),
    });
    let val = val.or(held.as_ref());
    if fraction > 0.0 && val.is_none() {
        return Err(Error::config(format!(
            "{}: {rows} rows are too few to hold out a validation fraction of {fraction}",
            path.display()
        )));
    }
    check_options(train_rows, &path, val, opts)?;
    let setup = Setup::new(&path, &features, &targets, &x_stats, &y_stats, opts)?;
    let val_std = val.map(|v| {
        (
            setup.x_scaler.apply(&v.x),
            setup.y_scaler.apply(&v.y),
            v.rows,
        )
    });
    let params = setup.initial_params(&setup.y_scaler.apply(&sample), opts.seed);
    let window_rows = chunk_rows * stream.window_chunks.max(1);
    let name = backend.name();
    let mut run = backend.start_stream(
        &setup.arch,
        &params,
        val_std
            .as_ref()
            .map(|(x, y, rows)| DataRef { x, y, rows: *rows }),
        stream
            .device_chunk_rows
            .unwrap_or(window_rows + opts.step.batch_size),
    )?;
    let resume = match resume {
        Some(r) => Some(r.apply(run.as_mut(), &setup, &path)?),
        None => None,
    };

    let (xs, ys) = (setup.x_scaler.clone(), setup.y_scaler.clone());
    let b = opts.step.batch_size;
    let counts = (train_rows, val.map_or(0, |v| v.rows));
    let model = fit(
        run.as_mut(),
        name,
        setup,
        counts,
        opts,
        resume,
        checkpointer,
        observer,
        &mut |be, epoch, step, shuffle_rng, obs| {
            let mut order: Vec<usize> = (0..n_chunks).collect();
            order.shuffle(shuffle_rng);
            be.begin_epoch(train_rows, step)?;
            // Carried rows (fewer than a batch) and the window being assembled, standardised.
            let (mut wx, mut wy) = (Vec::new(), Vec::new());
            let (mut sx, mut sy) = (Vec::new(), Vec::new());
            let mut done = 0;
            for window in order.chunks(stream.window_chunks.max(1)) {
                let (mut rx, mut ry) = (Vec::new(), Vec::new());
                for &c in window {
                    let start = c * chunk_rows;
                    let n = (rows - start).min(chunk_rows);
                    cx.clear();
                    cy.clear();
                    source.read(start, n, &mut cx, &mut cy)?;
                    for r in 0..n {
                        if !held_out(start + r) {
                            rx.extend_from_slice(&cx[r * d_in..(r + 1) * d_in]);
                            ry.extend_from_slice(&cy[r * d_out..(r + 1) * d_out]);
                        }
                    }
                }
                xs.apply_in_place(&mut rx);
                ys.apply_in_place(&mut ry);
                let mut perm: Vec<u32> = (0..(ry.len() / d_out) as u32).collect();
                perm.shuffle(shuffle_rng);
                for &i in &perm {
                    let i = i as usize;
                    wx.extend_from_slice(&rx[i * d_in..(i + 1) * d_in]);
                    wy.extend_from_slice(&ry[i * d_out..(i + 1) * d_out]);
                }
                let full = (wy.len() / d_out) / b * b;
                if full > 0 {
                    be.train_chunk(&wx[..full * d_in], &wy[..full * d_out], full)?;
                    done += full;
                    sx.clear();
                    sy.clear();
                    sx.extend_from_slice(&wx[full * d_in..]);
                    sy.extend_from_slice(&wy[full * d_out..]);
                    std::mem::swap(&mut wx, &mut sx);
                    std::mem::swap(&mut wy, &mut sy);
                }
                if !obs(&TrainEvent::Rows {
                    epoch,
                    done,
                    total: train_rows,
                }) {
                    return Ok(None);
                }
            }
            let rest = wy.len() / d_out.max(1);
            if rest > 0 {
                be.train_chunk(&wx, &wy, rest)?;
            }
            be.end_epoch().map(Some)
        },
    )?;
    drop(run);
    match val {
        Some(v) => with_component_usage(model, backend, v),
        None => {
            // No validation rows: the diagnostics look at the file's first rows.
            let n = rows.min(100_000);
            let (mut x, mut y) = (Vec::new(), Vec::new());
            source.read(0, n, &mut x, &mut y)?;
            let head = Dataset {
                path,
                features,
                targets,
                x,
                y,
                rows: n,
            };
            with_component_usage(model, backend, &head)
        }
    }
}

/// What every training run fixes before its first epoch.
#[derive(Clone)]
struct Setup {
    arch: Arch,
    features: Vec<String>,
    targets: Vec<String>,
    x_scaler: Scaler,
    y_scaler: Scaler,
    /// Feature columns constant in the training rows: they carry nothing to learn from, and
    /// their first-layer weights start (and, their gradient being zero, stay) at zero, so
    /// that the model ignores whatever value they take when it predicts.
    constant_features: Vec<usize>,
}

impl Setup {
    /// A seed's initial parameters ([`init_params`]), with the weights of constant feature
    /// columns at zero.
    fn initial_params(&self, y_std: &[f32], seed: u64) -> Vec<f32> {
        let mut params = init_params(&self.arch, y_std, seed);
        let first = &self.arch.layers()[0];
        for &c in &self.constant_features {
            let row = first.weights + c * first.outputs;
            params[row..row + first.outputs].fill(0.0);
        }
        params
    }

    fn new(
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
        arch.validate()?;
        for (j, name) in targets.iter().enumerate() {
            if y.is_constant(j) {
                return Err(Error::data(
                    crate::error::Location::file(path),
                    format!(
                        "target column '{name}' is constant in the training rows: there is no distribution to learn"
                    ),
                ));
            }
        }
        Ok(Setup {
            arch,
            features: features.to_vec(),
            targets: targets.to_vec(),
            x_scaler: x.scaler(),
            y_scaler: y.scaler(),
            constant_features: (0..features.len()).filter(|&c| x.is_constant(c)).collect(),
        })
    }
}

/// One epoch of a run: `Some` statistics, or `None` when the observer stopped it midway.
type EpochFn<'a> = dyn FnMut(
        &mut dyn TrainRun,
        usize,
        &StepConfig,
        &mut ChaCha8Rng,
        &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Option<EpochStats>>
    + 'a;

/// Where a resumed run continues from: the trainer's and the backend's state, and the
/// standardisation the run had (the data must still give the same).
#[derive(Debug, Clone)]
pub struct Resume {
    pub trainer: LoopState,
    pub state: TrainState,
    pub x_scaler: Scaler,
    pub y_scaler: Scaler,
}

impl Resume {
    /// Loads the run's state, after checking that `setup`'s data are the checkpoint's.
    fn apply(
        self,
        run: &mut dyn TrainRun,
        setup: &Setup,
        path: &std::path::Path,
    ) -> Result<LoopState> {
        if setup.x_scaler != self.x_scaler || setup.y_scaler != self.y_scaler {
            return Err(Error::config(format!(
                "{}: the training data differ from the checkpoint's (their statistics changed); cannot resume",
                path.display()
            )));
        }
        run.load_state(&self.state)?;
        Ok(self.trainer)
    }
}

/// Writes a checkpoint from the run's state, the trainer's state and the standardisation.
pub type CheckpointFn<'a> = dyn FnMut(TrainState, &LoopState, &Scaler, &Scaler) -> Result<()> + 'a;

/// Called after every `every`-th completed epoch with the run's and the trainer's state, to
/// write a checkpoint, but no sooner than `min_seconds` after the last one (so that runs of
/// many short epochs do not spend their time writing checkpoints). A run stopped by its
/// observer (Ctrl-C, a cancel, a service shutting down) writes one for its last epoch.
pub struct Checkpointer<'a> {
    pub every: usize,
    pub min_seconds: f64,
    /// Receives the run's state, the trainer's state and the x and y standardisation.
    pub write: &'a mut CheckpointFn<'a>,
}

/// The trainer's own state between epochs: with the backend's [`TrainState`] it is all a
/// checkpoint needs to continue a run exactly where it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoopState {
    /// Epochs completed.
    pub completed: usize,
    pub history: Vec<EpochRecord>,
    /// The best epoch and its validation NLL (original units).
    pub best: Option<(usize, f64)>,
    /// The learning rate now (halved by numerical faults).
    pub lr: f32,
    pub recoveries: Vec<Recovery>,
    /// Position of the shuffling random stream (ChaCha8 word position, decimal).
    pub shuffle_position: String,
}

impl LoopState {
    fn new(opts: &TrainOptions) -> LoopState {
        LoopState {
            completed: 0,
            history: Vec::new(),
            best: None,
            lr: opts.step.lr,
            recoveries: Vec::new(),
            shuffle_position: "0".into(),
        }
    }
}

/// The epoch loop both ways in share: runs epochs, converts NLLs to original units, keeps the
/// best parameters (early stopping) or the last completed epoch's (fixed epochs), reports to
/// the observer, and builds the model.
#[allow(clippy::too_many_arguments)]
fn fit(
    run: &mut dyn TrainRun,
    backend_name: String,
    setup: Setup,
    (train_rows, val_rows): (usize, usize),
    opts: &TrainOptions,
    resume: Option<LoopState>,
    mut checkpointer: Option<Checkpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
    run_epoch: &mut EpochFn<'_>,
) -> Result<Model> {
    let jac = setup.y_scaler.log_jacobian();
    let (max_epochs, patience) = match opts.stopping {
        Stopping::Early {
            patience,
            max_epochs,
        } => (max_epochs, Some(patience)),
        Stopping::Fixed { epochs } => (epochs, None),
    };
    let mut state = resume.unwrap_or_else(|| LoopState::new(opts));
    let mut last_checkpoint = std::time::Instant::now();
    let mut rng = rng_for(opts.seed, STREAM_SHUFFLE);
    rng.set_word_pos(
        state
            .shuffle_position
            .parse()
            .map_err(|_| Error::config("checkpoint: malformed shuffle position"))?,
    );
    let mut stop_reason = match opts.stopping {
        Stopping::Early { .. } => "max-epochs",
        Stopping::Fixed { .. } => "epochs",
    };
    let mut step = StepConfig {
        lr: state.lr,
        ..opts.step
    };
    // A resumed run may already be done (its checkpoint written at the stopping epoch).
    let already_stopped = match (patience, state.best) {
        (Some(p), Some((b, _))) => state.completed >= max_epochs || state.completed - b >= p,
        _ => state.completed >= max_epochs,
    };
    if already_stopped && state.completed > 0 {
        stop_reason = if state.completed >= max_epochs {
            stop_reason
        } else {
            "early-stopping"
        };
    }
    let (mut run_seconds, mut epochs_run) = (0.0f64, 0usize);
    for epoch in state.completed + 1..=if already_stopped { 0 } else { max_epochs } {
        let started = Instant::now();
        // A numerical fault rolls back to the state before the epoch and retries it at half
        // the learning rate, a few times; the halved rate stays for the rest of the run.
        run.snapshot()?;
        let mut faults = 0;
        let stats = loop {
            let Some(stats) = run_epoch(run, epoch, &step, &mut rng, observer)? else {
                break None;
            };
            if stats.finite {
                break Some(stats);
            }
            faults += 1;
            let batch = stats
                .first_bad_batch
                .map(|b| format!(" (first at batch {})", b + 1))
                .unwrap_or_default();
            if faults > MAX_RETRIES {
                return Err(Error::Numerical(format!(
                    "epoch {epoch} produced NaN or infinite values{batch} {faults} times, down to --lr {}; no model was written. \
                     Try a lower --lr (it was {}), a larger --l2, or look for extreme values in the data",
                    step.lr, opts.step.lr
                )));
            }
            run.restore()?;
            step.lr /= 2.0;
            state.recoveries.push(Recovery {
                epoch,
                batch: stats.first_bad_batch.map(|b| b + 1),
                lr: step.lr,
            });
            observer(&TrainEvent::Recovered {
                epoch,
                batch: stats.first_bad_batch.map(|b| b + 1),
                lr: step.lr,
            });
        };
        let Some(stats) = stats else {
            stop_reason = "interrupted";
            break;
        };
        let seconds = started.elapsed().as_secs_f64();
        run_seconds += seconds;
        epochs_run += 1;
        state.completed = epoch;
        let train_nll = stats.train_nll - jac;
        let val_nll = stats.val_nll.map(|v| v - jac);
        state.history.push(EpochRecord {
            epoch,
            train_nll,
            val_nll,
        });
        let improved = val_nll.is_some_and(|v| state.best.is_none_or(|(_, b)| v < b));
        if improved {
            state.best = Some((epoch, val_nll.expect("improved implies a value")));
        }
        // Early stopping keeps the best epoch; fixed epochs keep the last completed one.
        if improved || patience.is_none() {
            run.keep_best()?;
        }
        state.lr = step.lr;
        state.shuffle_position = rng.get_word_pos().to_string();
        let mut written = false;
        if let Some(c) = checkpointer.as_mut()
            && epoch % c.every.max(1) == 0
            && last_checkpoint.elapsed().as_secs_f64() >= c.min_seconds
        {
            (c.write)(run.save_state()?, &state, &setup.x_scaler, &setup.y_scaler)?;
            last_checkpoint = std::time::Instant::now();
            written = true;
        }
        let best = state.best;
        let report = EpochReport {
            epoch,
            max_epochs,
            train_nll,
            val_nll,
            best_val_nll: best.map(|b| b.1),
            best_epoch: best.map(|b| b.0).unwrap_or(0),
            rows_per_sec: train_rows as f64 / seconds.max(1e-9),
            seconds,
            eta_seconds: (max_epochs - epoch) as f64 * run_seconds / epochs_run.max(1) as f64,
        };
        if !observer(&TrainEvent::Epoch(report)) {
            stop_reason = "interrupted";
            if let Some(c) = checkpointer.as_mut()
                && !written
            {
                (c.write)(run.save_state()?, &state, &setup.x_scaler, &setup.y_scaler)?;
            }
            break;
        }
        if let (Some(p), Some((best_epoch, _))) = (patience, best)
            && epoch - best_epoch >= p
        {
            stop_reason = "early-stopping";
            break;
        }
    }
    if state.completed == 0 {
        return Err(Error::Interrupted(
            "interrupted before the first epoch finished; no model was written".into(),
        ));
    }
    let params = run.best_params()?;
    Ok(build_model(
        setup,
        params,
        backend_name,
        (train_rows, val_rows),
        opts,
        state,
        stop_reason,
        step.lr,
    ))
}

/// The model a run ends with: its kept parameters and the record of its training.
#[allow(clippy::too_many_arguments)]
fn build_model(
    setup: Setup,
    params: Vec<f32>,
    backend_name: String,
    (train_rows, val_rows): (usize, usize),
    opts: &TrainOptions,
    state: LoopState,
    stop_reason: &str,
    final_lr: f32,
) -> Model {
    let LoopState {
        completed,
        history,
        best,
        recoveries,
        ..
    } = state;
    let constant_features = setup
        .constant_features
        .iter()
        .map(|&c| setup.features[c].clone())
        .collect();
    let saved_epoch = match opts.stopping {
        Stopping::Early { .. } => best.map(|b| b.0).unwrap_or(completed),
        Stopping::Fixed { .. } => completed,
    };
    let mut model = Model::new(
        setup.arch,
        setup.features,
        setup.targets,
        setup.x_scaler,
        setup.y_scaler,
        params,
    );
    model.training = Some(TrainingInfo {
        mdn_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend_name,
        seed: opts.seed,
        lr: opts.step.lr,
        beta1: opts.step.beta1,
        beta2: opts.step.beta2,
        eps: opts.step.eps,
        l2: opts.step.l2,
        batch_size: opts.step.batch_size,
        train_rows,
        val_rows,
        epochs: completed,
        saved_epoch,
        best_epoch: best.map(|b| b.0),
        best_val_nll: best.map(|b| b.1),
        stop_reason: stop_reason.to_string(),
        final_lr,
        components: None,
        baseline_val_nll: None,
        epoch_choice: None,
        ensemble_val_nll: None,
        constant_features,
        clip_norm: opts.step.clip_norm,
        recoveries,
        history,
    });
    model
}

fn check_columns(features: &[String], targets: &[String], val: Option<&Dataset>) -> Result<()> {
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
fn check_options(
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
