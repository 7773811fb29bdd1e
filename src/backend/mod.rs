//! The compute backend trait, the one seam between the trainer and the hardware.
//!
//! A backend does two kinds of work:
//!
//! * **Training runs** ([`Backend::start`], [`Backend::start_stream`]): the trainer hands over
//!   the model and the data once and gets a [`TrainRun`] handle that owns the run's state;
//!   through it, each epoch's shuffled row order and hyperparameters go in and the epoch's
//!   statistics come back. A GPU backend can run a whole epoch without reading anything back
//!   until the end. A run exists only as its handle, so nothing can be asked of a run that
//!   has not started; the backend is borrowed until the handle is dropped.
//! * **Single operations** ([`Backend::forward`], [`Backend::loglik`], [`Backend::loss_grad`],
//!   [`Backend::adam_step`]): stateless functions of their arguments, so one parity suite can
//!   compare every backend with the CPU reference operation by operation. Evaluation,
//!   prediction and sampling use them too.
//!
//! Everything a backend sees is in standardised units (see [`crate::scaler::Scaler`]); the
//! trainer and the model convert to and from the user's units.

pub mod cpu;
pub mod gpu;

pub use cpu::CpuBackend;
pub use gpu::{DeviceChoice, GpuBackend, GpuOptions, GpuPath};

use crate::error::Result;
use crate::layout::Arch;

/// Adam and regularisation settings for a training step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Added to sqrt(v_hat) in the denominator. 1e-7, as in Keras.
    pub eps: f32,
    /// Coefficient of the L2 penalty `l2 * sum(W^2)` over dense kernels (not biases).
    pub l2: f32,
    /// Rows per mini-batch; the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// When positive, each step's gradient (L2 term included) is scaled down to this
    /// Euclidean norm if it is longer. 0 turns clipping off.
    pub clip_norm: f32,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            l2: 0.0,
            batch_size: 256,
            clip_norm: 0.0,
        }
    }
}

/// Adam's state in the flat parameter layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Number of steps taken so far (the next step is `step + 1`).
    pub step: u64,
}

impl AdamState {
    pub fn new(n: usize) -> Self {
        AdamState {
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
        }
    }

    /// Checks that parameters, gradient and both moments have one length.
    pub fn check_lengths(&self, params: &[f32], grad: &[f32]) -> Result<()> {
        let n = params.len();
        if grad.len() != n || self.m.len() != n || self.v.len() != n {
            return Err(crate::Error::config(
                "adam_step: parameter, gradient and moment buffers differ in length",
            ));
        }
        Ok(())
    }
}

/// Everything a backend holds that a training run's continuation depends on: the current
/// and best parameters and Adam's state. What a checkpoint saves.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    pub params: Vec<f32>,
    pub best: Vec<f32>,
    pub adam: AdamState,
}

/// The constants one Adam step needs, computed on the host in f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStepConstants {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1 / (1 - beta1^t)
    pub bias1: f32,
    /// 1 / (1 - beta2^t)
    pub bias2: f32,
}

impl AdamStepConstants {
    /// Constants for step number `t` (1-based).
    pub fn new(cfg: &StepConfig, t: u64) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        AdamStepConstants {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            bias1: (1.0 / (1.0 - (cfg.beta1 as f64).powi(t))) as f32,
            bias2: (1.0 / (1.0 - (cfg.beta2 as f64).powi(t))) as f32,
        }
    }
}

/// The mean loss of a batch and its gradient in the flat layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrad {
    /// Mean negative log-likelihood over the rows (standardised units).
    pub nll: f64,
    /// The L2 penalty `l2 * sum(W^2)` included in the gradient.
    pub penalty: f64,
    /// Gradient of `nll + penalty` with respect to every parameter.
    pub grad: Vec<f32>,
}

/// What one epoch produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Mean NLL per training row over the epoch's mini-batches, measured before each step
    /// (standardised units).
    pub train_nll: f64,
    /// Mean NLL per validation row after the epoch (standardised units), when a validation set
    /// was given to [`Backend::start`].
    pub val_nll: Option<f64>,
    /// False when any loss, gradient or parameter became NaN or infinite during the epoch.
    pub finite: bool,
    /// Adam steps taken in this epoch.
    pub steps: u64,
    /// The first batch (0-based, in the epoch) whose loss was NaN or infinite, when known.
    pub first_bad_batch: Option<u64>,
}

/// Training and validation rows, standardised, row-major.
#[derive(Debug, Clone, Copy)]
pub struct DataRef<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub rows: usize,
}

/// A compute backend: the CPU reference or a GPU.
pub trait Backend {
    /// A human-readable name ("cpu", or the GPU adapter's name).
    fn name(&self) -> String;

    /// What a run's bits depend on besides its data and options: the backend and, for the
    /// CPU, its threads (a checkpoint records it, and a run resumed elsewhere says so).
    fn identity(&self) -> String {
        self.name()
    }

    // ---- training runs --------------------------------------------------------------------

    /// Starts a training run on data held in memory: takes the architecture, the initial
    /// parameters and the data; Adam's state starts at zero. Epochs go through
    /// [`TrainRun::train_epoch`].
    fn start<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[f32],
        train: DataRef<'_>,
        val: Option<DataRef<'_>>,
    ) -> Result<Box<dyn TrainRun + 'a>>;

    /// Starts a training run whose training rows arrive in chunks: each epoch is
    /// [`TrainRun::begin_epoch`], [`TrainRun::train_chunk`] calls of at most `chunk_rows`
    /// rows, then [`TrainRun::end_epoch`].
    fn start_stream<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[f32],
        val: Option<DataRef<'_>>,
        chunk_rows: usize,
    ) -> Result<Box<dyn TrainRun + 'a>>;

    /// Starts a run of several networks of one shape on the same data (an ensemble's
    /// members, from their own initial `params`), trained together: each batch of every
    /// member in the same dispatches. `None` where the backend has no such runs (the CPU
    /// backend: its members train side by side on threads of their own).
    fn start_members<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        train: DataRef<'_>,
        val: Option<DataRef<'_>>,
    ) -> Result<Option<Box<dyn MembersRun + 'a>>> {
        let _ = (arch, params, train, val);
        Ok(None)
    }

    /// Starts a packed run: several networks of one shape, each on rows of its own (one model
    /// per group of a table: each member's `train[m]` and, all or none, `val[m]`), trained
    /// together in the same dispatches. Member m's epochs are exactly those of a run of
    /// that network alone on its rows with the same row orders and learning rate: its own
    /// batches (an epoch has as many steps as the member with the most rows needs, the others
    /// sitting the rest out), its own Adam step count, its own validation NLL.
    /// [`MembersRun::train_epoch`] then takes each member's permutation of its own rows, one
    /// member after another. `None` where the backend has no such runs (the CPU backend), or
    /// where this model cannot take them (on a GPU: a model too wide for the looped step).
    fn start_packed<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        train: &[DataRef<'_>],
        val: Option<&[DataRef<'_>]>,
    ) -> Result<Option<Box<dyn MembersRun + 'a>>> {
        let _ = (arch, params, train, val);
        Ok(None)
    }

    /// Whether a network of `arch` taking `step`'s steps alone would train on this backend
    /// exactly as a member of a packed run does ([`Backend::start_packed`]), so that packing it
    /// with others changes none of its bits (on a GPU: a run alone takes the looped step, as
    /// a batch of one tile does by default). False where the backend has no packed runs.
    fn packs_alike(&self, arch: &Arch, step: &StepConfig) -> bool {
        let _ = (arch, step);
        false
    }

    // ---- single operations (stateless) --------------------------------------------------

    /// Head outputs (`rows * P`) for `rows` inputs.
    fn forward(&mut self, arch: &Arch, params: &[f32], x: &[f32], rows: usize) -> Result<Vec<f32>>;

    /// Per-row log-likelihoods of `y` given `x`.
    fn loglik(
        &mut self,
        arch: &Arch,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        rows: usize,
    ) -> Result<Vec<f64>>;

    /// Mean NLL over the rows plus the L2 penalty, and its gradient.
    fn loss_grad(
        &mut self,
        arch: &Arch,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        rows: usize,
        l2: f32,
    ) -> Result<LossGrad>;

    /// One Adam step (number `state.step + 1`) in place.
    fn adam_step(
        &mut self,
        params: &mut [f32],
        grad: &[f32],
        state: &mut AdamState,
        cfg: &StepConfig,
    ) -> Result<()>;
}

/// A training run in progress on a backend, from [`Backend::start`] or
/// [`Backend::start_stream`]: the current and best parameters, Adam's state, and the data.
pub trait TrainRun {
    // ---- whole epochs (runs from `start`) ---------------------------------------------

    /// Runs one epoch: mini-batches of `order` (indices of training rows) in sequence, one Adam
    /// step each, then the validation NLL.
    fn train_epoch(&mut self, order: &[u32], cfg: &StepConfig) -> Result<EpochStats>;

    // ---- streamed epochs (runs from `start_stream`) -----------------------------------

    /// Starts a streamed epoch of `train_rows` rows in all.
    fn begin_epoch(&mut self, train_rows: usize, cfg: &StepConfig) -> Result<()>;

    /// Trains on `rows` rows in the order given, in batches of the epoch's batch size (only
    /// the epoch's last call may end on a partial batch).
    fn train_chunk(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<()>;

    /// Ends a streamed epoch: validation, the finite check, the epoch's statistics.
    fn end_epoch(&mut self) -> Result<EpochStats>;

    // ---- the run's state ----------------------------------------------------------------

    /// The run's state, for a checkpoint (reads GPU memory: not for every epoch).
    fn save_state(&mut self) -> Result<TrainState>;

    /// Continues a run from a saved state (of a run with the same model and data).
    fn load_state(&mut self, state: &TrainState) -> Result<()>;

    /// Saves the parameters and Adam's state (moments and step count), to go back to with
    /// [`TrainRun::restore`] when an epoch goes wrong.
    fn snapshot(&mut self) -> Result<()>;

    /// Returns to the last [`TrainRun::snapshot`].
    fn restore(&mut self) -> Result<()>;

    /// Remembers the current parameters as the best so far.
    fn keep_best(&mut self) -> Result<()>;

    /// The parameters last passed to [`TrainRun::keep_best`] (or the initial ones).
    fn best_params(&mut self) -> Result<Vec<f32>>;

    /// The current parameters.
    fn current_params(&mut self) -> Result<Vec<f32>>;

    /// Where one training step's time goes, kernel by kernel, as (kernel, seconds per step)
    /// with the whole step last; `None` where the backend does not break it down. Call it
    /// after an epoch; it changes the parameters.
    fn profile_step(&mut self, reps: usize) -> Result<Option<Vec<(String, f64)>>> {
        let _ = reps;
        Ok(None)
    }

    /// Kernel dispatches per training step of the last epoch (a GPU's structure: the fused
    /// step is 2, 3 with clipping); `None` where the backend has no dispatches.
    fn dispatches_per_step(&self) -> Option<f64> {
        None
    }
}

/// A run of several networks trained together ([`Backend::start_members`]). Member m's
/// epoch is exactly the epoch a [`TrainRun`] of that network alone would run with the same
/// row order and learning rate.
pub trait MembersRun {
    /// Number of members.
    fn members(&self) -> usize;

    /// One epoch of the members flagged in `active` (the others, stopped early, are left
    /// as they are and their statistics are meaningless): `orders` holds each member's
    /// permutation of the training rows, one after another; `lrs` each member's learning
    /// rate (`cfg.lr` is not used).
    fn train_epoch(
        &mut self,
        orders: &[u32],
        cfg: &StepConfig,
        lrs: &[f32],
        active: &[bool],
    ) -> Result<Vec<EpochStats>>;

    /// Saves every member's parameters and Adam state ([`TrainRun::snapshot`]).
    fn snapshot(&mut self) -> Result<()>;

    /// Returns every member to the last snapshot.
    fn restore(&mut self) -> Result<()>;

    /// Remembers the current parameters of the members flagged in `which` as their best.
    fn keep_best(&mut self, which: &[bool]) -> Result<()>;

    /// Every member's parameters last kept (or its initial ones).
    fn best_params(&mut self) -> Result<Vec<Vec<f32>>>;

    /// Every member's run state, for a checkpoint ([`TrainRun::save_state`]).
    fn save_state(&mut self) -> Result<Vec<TrainState>>;

    /// Continues from saved states, one per member, all at the same Adam step.
    fn load_state(&mut self, states: &[TrainState]) -> Result<()>;

    /// Kernel dispatches per training step of the last epoch (every member's in the same
    /// dispatches); `None` where the backend has no dispatches.
    fn dispatches_per_step(&self) -> Option<f64> {
        None
    }
}

/// What `--device auto` picks on this machine, and why: a hardware GPU if there is one,
/// else the CPU backend. Never the software adapter: lavapipe is for CI and parity checks,
/// several times slower than the CPU backend (`--device software` picks it explicitly).
pub fn auto_device() -> (DeviceChoice, String) {
    let adapters = gpu::list_adapters();
    if let Some(a) = adapters.iter().find(|a| a.is_hardware()) {
        return (
            DeviceChoice::Gpu,
            format!("the hardware GPU {} ({})", a.name, a.backend),
        );
    }
    let why = if adapters.is_empty() {
        "no GPU adapter found".to_string()
    } else {
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| format!("{} ({})", a.name, a.device_type))
            .collect();
        format!(
            "no hardware GPU (only {}; a software adapter is for tests and parity checks: --device software)",
            seen.join(", ")
        )
    };
    (DeviceChoice::Cpu, format!("the CPU backend: {why}"))
}

/// Opens the backend `choice` asks for; the CPU backend uses `threads` threads (all cores when
/// `None`). `Auto` is resolved by [`auto_device`]; the second value says what auto chose and
/// why (`None` for an explicit choice).
pub fn open(
    choice: DeviceChoice,
    threads: Option<usize>,
) -> Result<(Box<dyn Backend>, Option<String>)> {
    let cpu = || -> Box<dyn Backend> {
        Box::new(match threads {
            Some(t) => CpuBackend::with_threads(t),
            None => CpuBackend::new(),
        })
    };
    match choice {
        DeviceChoice::Cpu => Ok((cpu(), None)),
        DeviceChoice::Gpu | DeviceChoice::Software => {
            Ok((Box::new(GpuBackend::new(choice)?), None))
        }
        DeviceChoice::Auto => match auto_device() {
            (DeviceChoice::Gpu, why) => match GpuBackend::new(DeviceChoice::Gpu) {
                Ok(g) => Ok((Box::new(g), Some(format!("--device auto: {why}")))),
                Err(e) => Ok((
                    cpu(),
                    Some(format!(
                        "--device auto: {why} failed to open ({e}); using the CPU backend"
                    )),
                )),
            },
            (_, why) => Ok((cpu(), Some(format!("--device auto: {why}")))),
        },
    }
}

/// What `mdn devices --json` prints (and `mdn.devices()` returns): the CPU backend, every
/// GPU adapter with its limits, and what `--device auto` picks and why.
pub fn devices_report() -> serde_json::Value {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (auto, why) = auto_device();
    serde_json::json!({
        "cpu": { "name": "cpu", "kind": "cpu", "threads": threads, "isa": crate::lanes::isa().name() },
        "adapters": gpu::list_adapters(),
        "auto": { "device": auto.name(), "reason": why },
    })
}
