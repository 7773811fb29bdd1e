//! The GPU backend: WGSL compute kernels driven through wgpu (Vulkan, Metal, DX12, or Mesa's
//! lavapipe software adapter).
//!
//! Parameters, gradients, Adam's moments, the best parameters and the epoch's data live in
//! GPU buffers for a whole run. An epoch is encoded as one stream of dispatches, followed by
//! the validation pass and a finite check; the host reads back once per epoch (the per-batch
//! loss sums, the validation sums and the finite flag). Per-batch values (row count, offsets,
//! Adam's bias corrections) are 128-byte `Step` records in one uniform buffer, selected with a
//! dynamic offset.
//!
//! A training step takes one of three paths, side by side here:
//! - **Looped** (`shaders/fused_loop.wgsl`): on a GPU for batches of one tile (any batch with
//!   `GpuPath::Loop`), where the adapter has the 11 storage buffers a stage it binds. One
//!   workgroup trains one network (each ensemble member its own) through many steps in one
//!   dispatch: the fused step's tile arithmetic (`shaders/fused_tile.wgsl`) for each tile,
//!   then the tiles' sum and Adam in the same workgroup, so no step waits on a dispatch. It
//!   reads each step's values from the step records bound as storage. As many steps a
//!   dispatch as make about `LOOP_FLOPS_PER_DISPATCH` (and, on lavapipe, at most 1,024
//!   barriers: see `fused::CPU_LOOP_MAX_BARRIERS`).
//! - **Fused** (`fused.rs`, `shaders/fused_step.wgsl`, `shaders/fused_grad.wgsl`): wherever
//!   the model's activations fit a tile of rows in workgroup memory. `fused_step` takes each
//!   tile through gather, forward, head and backward in one workgroup and writes the tile's
//!   partial gradient; `fused_grad` sums the tiles in order, adds L2 and applies Adam. Two
//!   dispatches a step, three with gradient-norm clipping (`adam` then applies the step from
//!   `fused_grad`'s per-workgroup sums of squares). The validation pass is, per chunk of
//!   up to (work rows x tile rows) rows, a `fused_step` dispatch without the backward pass
//!   and a `reduce_sum` of its tiles' sums.
//! - **Layered** (every other kernel): for models too wide for a tile (or `GpuPath::Layered`):
//!   per batch gather, dense forward per layer, the mixture head, a loss reduction, then per
//!   layer from the head down weight gradients over row slices and their ordered sum (with
//!   L2), and for layers above the first the gradient to the inputs (transpose the weights,
//!   run `dense_forward` on them, multiply by the activation's derivative); then Adam. The
//!   single operations (`forward`, `loglik`) and evaluation use its kernels too.
//!
//! A run of several members (`Core::members`) holds ensemble members on the same rows
//! (`start_members`) or, packed (`start_packed`, `Packed`), networks each on rows of its own:
//! one model per group of a table. A packed run always takes the looped step, each member
//! reading its own rows, 1 / rows and Adam bias corrections a step from a member table the
//! host writes after the epoch's step records, and its validation rows through a row order
//! of its own that ends in `NO_ROW` where another member has more.
//!
//! Reductions over the batch are sequential per output element, ordered sums of row slices or
//! tiles, or tree reductions in workgroup memory, never float atomics, so the same seed on the
//! same device gives the same bits (the fused tile size depends on the adapter: a different
//! adapter may sum in a different order).
//!
//! Why the layered gradient to the inputs reuses `dense_forward`: a dedicated kernel with the
//! same 4x4-tile structure ran 3 to 5 times slower on lavapipe for reasons we could not pin
//! down (see `mdn bench`'s per-kernel profile); transposing the weights (a few thousand values
//! per step) and reusing the forward kernel made config (b) 1.7x faster there.

mod context;
mod fused;
mod kernels;

use crate::backend::TrainState;
pub use context::{AdapterSummary, DeviceChoice, Gpu, NO_ADAPTER_HELP, list_adapters};

use bytemuck::{Pod, Zeroable};

use crate::backend::{
    AdamState, AdamStepConstants, Backend, DataRef, EpochStats, LossGrad, MembersRun, StepConfig,
    TrainRun,
};
use crate::error::{Error, Result};
use crate::layout::{Activation, Arch, Covariance, LayerShape};
pub use fused::{FusedPlan, Tiling};
use kernels::{Kernel, Kernels, STEP_BYTES};

/// Rows per dispatch for forward-only passes (validation, evaluation, prediction).
const EVAL_CHUNK: usize = 4096;

/// Most row slices of a layer's weight-gradient pass.
const MAX_WEIGHT_SLICES: usize = 256;

/// Partial sums (floats) a layer's slices may take before its slice count is cut below
/// `MAX_WEIGHT_SLICES`; every layer may use 16 slices whatever its size.
const PARTIAL_BUDGET: usize = 1 << 22;

/// The most slices a layer with `elems` = (inputs + 1) * outputs gradient entries uses.
fn max_weight_slices(elems: usize) -> usize {
    (PARTIAL_BUDGET / elems.max(1)).clamp(16, MAX_WEIGHT_SLICES)
}

/// Row slices the weight gradient of a batch of `rows` rows is split into before a layer's
/// cap (`max_weight_slices`): about the square root of the rows, so that the first pass
/// (rows per slice, summed in row order by each invocation) and the second (slices, summed
/// in slice order) are equally long; each is a chain of dependent loads, which is what
/// their time is on a large GPU. At least 16 rows a slice. Written into each batch's
/// `Step` record (`slices`): the shaders take the count from there, never recompute it.
fn weight_grad_slices(rows: usize) -> usize {
    let root = rows.isqrt();
    let root = if root * root < rows { root + 1 } else { root };
    root.min(rows.div_ceil(16)).max(1)
}

/// Submit the epoch's work in pieces of this many batches (bounds command-buffer size; no
/// readback between pieces).
const BATCHES_PER_SUBMIT: usize = 512;

/// About how many dense-layer flops (per member) one dispatch of the looped step runs.
pub const LOOP_FLOPS_PER_DISPATCH: f64 = 2e8;

/// Steps a dispatch of the looped step runs for batches of `batch` rows of `arch`: about
/// [`LOOP_FLOPS_PER_DISPATCH`] of work, from 1 to [`BATCHES_PER_SUBMIT`] steps.
fn loop_steps_per_dispatch(arch: &Arch, batch: usize) -> usize {
    let step = crate::bench::train_flops_per_row(arch) * batch.max(1) as f64;
    ((LOOP_FLOPS_PER_DISPATCH / step) as usize).clamp(1, BATCHES_PER_SUBMIT)
}

/// The per-dispatch record of `shaders/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct StepUniform {
    rows: u32,
    start: u32,
    slot: u32,
    flags: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias1: f32,
    bias2: f32,
    l2: f32,
    inv_rows: f32,
    count: u32,
    clip_norm: f32,
    /// Row slices of the weight gradient, before each layer's cap (`weight_grad_slices`).
    slices: u32,
    /// Per-member strides (see `shaders/common.wgsl`): row-order entries, work rows,
    /// statistics slots, partial weight-gradient floats and transposed-weight floats.
    order_stride: u32,
    row_stride: u32,
    stats_stride: u32,
    partial_stride: u32,
    wt_stride: u32,
    /// Bit m: member m trains (`shaders/common.wgsl`'s `member_active`).
    active: [u32; 4],
    /// Where adam.wgsl finds the gradient's sum of squares: `norm_parts` sums at
    /// `norm_first + member * norm_stride + j`.
    norm_parts: u32,
    norm_first: u32,
    norm_stride: u32,
    /// `fused_loop`: the steps one dispatch runs, this record's and the next ones'.
    steps: u32,
    /// A packed run's per-member step values, at this word of the step records
    /// (`shaders/common.wgsl`); 0 in any other run.
    member_table: u32,
    table_members: u32,
    pad: [u32; 2],
}
const _: () = assert!(std::mem::size_of::<StepUniform>() as u64 == STEP_BYTES);

/// `Layer`, `Gather`, `Head` and `Dims` uniforms of the kernels: eight 32-bit words.
type Words = [u32; 8];
const _: () = assert!(std::mem::size_of::<Words>() == 32);

const FLAG_GRAD: u32 = 1;
/// fused_grad.wgsl applies Adam itself (no clipping).
const FLAG_ADAM: u32 = 2;

fn act_code(a: Activation) -> u32 {
    match a {
        Activation::Relu => 1,
        Activation::Tanh => 2,
    }
}

/// The `active` words of a step record: bit m set when member m trains.
fn active_mask(active: &[bool]) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (m, _) in active.iter().enumerate().filter(|(_, a)| **a) {
        words[m / 32] |= 1 << (m % 32);
    }
    words
}

fn div_ceil(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// The GPU backend.
///
/// Dropped, its device and kernels go back to the process's idle ones (see [`IDLE`]) for the
/// next backend of the same adapter and options, unless the device has failed.
pub struct GpuBackend {
    // Taken out only in `Drop`: kept idle, or dropped there in order, the pipelines before
    // the device they belong to, so that the device is the last of its resources and is
    // destroyed inside `Gpu`'s drop, one at a time in the process (see
    // `context::DEVICE_LIFECYCLE`).
    kernels: std::mem::ManuallyDrop<Kernels>,
    options: GpuOptions,
    gpu: std::mem::ManuallyDrop<Gpu>,
    /// The adapter asked for: what the device is kept idle under.
    choice: DeviceChoice,
}

/// A device with its kernels, opened before in this process and free for the next
/// [`GpuBackend`] of the same adapter choice and options.
struct Idle {
    choice: DeviceChoice,
    options: GpuOptions,
    // In drop order: the pipelines before their device.
    kernels: Kernels,
    gpu: Gpu,
}

/// The process's idle devices. Opening a device and compiling the kernels takes 1-1.5 s on
/// lavapipe (LLVM compiles every pipeline) and tens to hundreds of milliseconds on a GPU;
/// a process that trains many models one after another (`mdn train --group-by`, `mdn
/// select`, the Python package's fits, a service worker's jobs) pays it once. A backend
/// takes an idle device of its adapter and options, or opens one, and has it to itself
/// until it is dropped; at most [`MOST_IDLE`] are kept.
static IDLE: std::sync::Mutex<Vec<Idle>> = std::sync::Mutex::new(Vec::new());

/// Most idle devices kept ([`IDLE`]); beyond it the oldest idle one is closed.
const MOST_IDLE: usize = 4;

impl Drop for GpuBackend {
    fn drop(&mut self) {
        // SAFETY: taken once, here; `self` is not used after.
        let (kernels, gpu) = unsafe {
            (
                std::mem::ManuallyDrop::take(&mut self.kernels),
                std::mem::ManuallyDrop::take(&mut self.gpu),
            )
        };
        let idle = Idle {
            choice: self.choice,
            options: self.options,
            kernels,
            gpu,
        };
        // A device that failed (lost, or an error outside a scope) or does not finish its
        // work within a few seconds is closed, never reused.
        let finished = idle.gpu.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(std::time::Duration::from_secs(5)),
        });
        if finished.is_err() || idle.gpu.check().is_err() {
            return;
        }
        let mut all = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        // The newest kept: the oldest idle one closed to make room.
        if all.len() == MOST_IDLE {
            let oldest = all.remove(0);
            drop(all);
            drop(oldest);
            all = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        }
        if all.len() < MOST_IDLE {
            all.push(idle);
        }
    }
}

/// Which kernels train a model on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuPath {
    /// The fused step wherever the model fits a tile (`FusedPlan`) and the adapter favours
    /// it for the batch (`GpuBackend::fuses_steps_of`), else the layered kernels.
    #[default]
    Auto,
    /// The fused step wherever the model fits a tile, whatever the adapter: two dispatches a
    /// step, never the looped step.
    Fused,
    /// The looped step wherever the model fits a tile and the adapter has the kernel: one
    /// workgroup a network, many steps a dispatch, whatever the batch.
    Loop,
    /// The layered kernels always: a dispatch per layer and pass (the fallback, kept
    /// selectable to compare the two and to test both).
    Layered,
}

/// How the GPU backend trains: the path, and the fused step's tiling where it should not be
/// the adapter's default (`Tiling::for_adapter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    pub path: GpuPath,
    /// Rows per tile at most (up to `fused::MAX_TILE_ROWS`).
    pub tile_rows: Option<usize>,
    /// Invocations per workgroup of the fused step.
    pub workgroup: Option<usize>,
    /// Steps a dispatch of the looped step runs at most (else about
    /// [`LOOP_FLOPS_PER_DISPATCH`] of work a dispatch).
    pub loop_steps: Option<usize>,
    /// Barriers a dispatch of the looped step may pass at most, 0 for no bound (else the
    /// adapter's: `Tiling::loop_max_barriers`): to check whether an adapter still loses
    /// steps past a bound, as Mesa 22.3.6's lavapipe does.
    pub loop_barriers: Option<usize>,
    /// No packed runs for `train_packed` (`Backend::packs_alike` says no): many groups'
    /// networks train one after another, to compare with packing, or should a driver
    /// misbehave with it.
    pub no_packing: bool,
}

impl GpuOptions {
    /// The options `MDN_GPU_PATH` (`auto`, `fused`, `loop` or `layered`), `MDN_GPU_TILE_ROWS` (1 to 64)
    /// and `MDN_GPU_WORKGROUP` (32, 64, 128 or 256) set, for comparing paths and tilings in
    /// `mdn bench` without rebuilding, and `MDN_GPU_PACK=0` (no packed runs); the defaults
    /// when unset. A bad value is an error naming the variable.
    pub fn from_env() -> Result<GpuOptions> {
        let path = match std::env::var("MDN_GPU_PATH").as_deref() {
            Err(_) | Ok("") | Ok("auto") => GpuPath::Auto,
            Ok("fused") => GpuPath::Fused,
            Ok("loop") => GpuPath::Loop,
            Ok("layered") => GpuPath::Layered,
            Ok(other) => {
                return Err(Error::config(format!(
                    "MDN_GPU_PATH={other}: expected auto, fused, loop or layered"
                )));
            }
        };
        Ok(GpuOptions {
            path,
            tile_rows: count_from_env(
                "MDN_GPU_TILE_ROWS",
                |n| (1..=fused::MAX_TILE_ROWS).contains(&n),
                &format!("a number of rows from 1 to {}", fused::MAX_TILE_ROWS),
            )?,
            workgroup: count_from_env(
                "MDN_GPU_WORKGROUP",
                |n| [32, 64, 128, 256].contains(&n),
                "32, 64, 128 or 256",
            )?,
            loop_steps: count_from_env(
                "MDN_GPU_LOOP_STEPS",
                |n| (1..=BATCHES_PER_SUBMIT).contains(&n),
                &format!("a number of steps from 1 to {BATCHES_PER_SUBMIT}"),
            )?,
            loop_barriers: count_from_env(
                "MDN_GPU_LOOP_BARRIERS",
                |_| true,
                "a number of barriers (0: no bound)",
            )?,
            no_packing: match std::env::var("MDN_GPU_PACK").as_deref() {
                Err(_) | Ok("") | Ok("1") => false,
                Ok("0") => true,
                Ok(other) => {
                    return Err(Error::config(format!(
                        "MDN_GPU_PACK={other}: expected 1 (pack many groups' networks in the \
                         same dispatches, the default) or 0 (one after another)"
                    )));
                }
            },
        })
    }
}

/// The number environment variable `name` holds, when set and not empty; an error naming the
/// variable and what it takes (`expected`) when it is not a number `ok` accepts.
fn count_from_env(name: &str, ok: impl Fn(usize) -> bool, expected: &str) -> Result<Option<usize>> {
    match std::env::var(name).as_deref() {
        Err(_) | Ok("") => Ok(None),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if ok(n) => Ok(Some(n)),
            _ => Err(Error::config(format!("{name}={v}: expected {expected}"))),
        },
    }
}

/// A training run on the GPU: the run's buffers and bind groups, and the backend (device and
/// kernels) they belong to.
pub struct GpuRun<'a> {
    backend: &'a GpuBackend,
    run: Run,
    /// Rows in the first batch of the last epoch (what `profile_step` times).
    first_batch_rows: usize,
    /// Whether the last epoch clipped the gradient's norm (so does `profile_step`).
    clip: bool,
}

/// Training and validation rows on the device.
struct DeviceData {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    order: wgpu::Buffer,
    rows: usize,
}

/// One model on one data set on the device: its buffers, and what is bound over them.
struct Run {
    core: Core,
    bound: Bound,
}

impl std::ops::Deref for Run {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl Run {
    /// A step record with the run's per-member strides and active members filled in.
    fn record(&self) -> StepUniform {
        StepUniform {
            active: self.active,
            row_stride: self.work.cap as u32,
            stats_stride: self.bound.stats.1 as u32,
            partial_stride: partial_len(&self.arch) as u32,
            wt_stride: wt_len(&self.arch) as u32,
            norm_parts: 1,
            norm_stride: 1,
            ..Default::default()
        }
    }

    /// The fused plan, when this run's batches take the fused path (the model fits a tile
    /// and the work buffers were sized for it).
    fn fused(&self) -> Option<&FusedPlan> {
        self.work.fused.as_ref().and(self.plan.as_ref())
    }

    /// A training step record on the fused path for a batch of `rows` rows: tiles, partial
    /// strides, and where the sums of squares go when clipping.
    fn fused_record(&self, plan: &FusedPlan, rows: usize, clip: bool) -> StepUniform {
        StepUniform {
            slices: plan.tiles(rows) as u32,
            partial_stride: plan.partial_stride(self.work.fused_rows) as u32,
            flags: FLAG_GRAD | if clip { 0 } else { FLAG_ADAM },
            norm_parts: plan.grad_groups() as u32,
            norm_first: (self.members * plan.partial_stride(self.work.fused_rows)) as u32,
            norm_stride: plan.grad_groups() as u32,
            ..self.record()
        }
    }
}

/// The statistics and step-record buffers, sized for the largest epoch or evaluation so far,
/// and the bind groups over them and the core's buffers: created with the run, rebuilt when
/// the buffers grow.
struct Bound {
    /// Per-batch loss sums, validation sums, finite flag; and their capacity.
    stats: (wgpu::Buffer, usize),
    steps: (wgpu::Buffer, usize),
    groups: Groups,
}

/// The buffers of a run: of one network, or of `members` networks of one shape trained
/// together on the same data (an ensemble), each with its own region of every buffer.
struct Core {
    arch: Arch,
    layers: Vec<LayerShape>,
    /// Parameters of one member.
    n_params: usize,
    members: usize,
    /// Bit m: member m trains (every member unless `MembersRun::train_epoch` says otherwise).
    active: [u32; 4],
    /// Each member's learning rate (the adam kernel's `lrs`).
    lrs: wgpu::Buffer,
    /// How the model runs on the fused path, if it fits a tile, and its descriptor words
    /// on the device (one placeholder word without a plan).
    plan: Option<FusedPlan>,
    desc: wgpu::Buffer,
    params: wgpu::Buffer,
    grad: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    best: wgpu::Buffer,
    /// Parameters and Adam moments saved by `snapshot`, with the step count (all members).
    saved: [wgpu::Buffer; 3],
    saved_step: Option<u64>,
    train: DeviceData,
    val: Option<DeviceData>,
    adam_step: u64,
    /// A packed run's members, each with rows of its own (`start_packed`); `None` otherwise.
    packed: Option<Packed>,
    work: Work,
    layer_uniforms: Vec<wgpu::Buffer>,
    /// Per layer, the shape of its transposed weights as dense_forward reads them: n_out
    /// inputs, n_in outputs, weights at 0 and the zero bias after them, no activation.
    transposed_uniforms: Vec<wgpu::Buffer>,
    head_uniform: wgpu::Buffer,
    gather_uniform: wgpu::Buffer,
    /// The epoch in progress.
    epoch: Option<GpuEpoch>,
    /// Streamed runs: two chunk buffers (identity row order), filled alternately, and the
    /// rows each holds.
    chunks: Option<([DeviceData; 2], usize)>,
    /// The chunk buffer the next streamed rows go to.
    next_chunk: usize,
    /// Dispatches per training step of the last batches encoded (`mdn bench` reports it;
    /// below 1 where the looped step runs many steps a dispatch).
    dispatches_per_step: Option<f64>,
    /// Steps the looped step's first dispatch of the epoch runs (from step record 0), when
    /// the epoch's batches took the looped step.
    looped: Option<usize>,
    /// The last submission reading each chunk buffer.
    chunk_busy: [Option<wgpu::SubmissionIndex>; 2],
}

/// An epoch in progress on the GPU.
struct GpuEpoch {
    cfg: StepConfig,
    train_rows: usize,
    batches: usize,
    /// Step records of the validation pass (one per chunk on the layered path, two on the
    /// fused path: `fused_step` and `reduce_sum`), and its statistics slots (one per chunk).
    val_records: usize,
    val_slots: usize,
    /// Rows of each validation chunk (the last one may hold fewer).
    val_chunk: usize,
    /// Rows trained on so far in this epoch.
    done_rows: usize,
}

/// The members of a packed run ([`Backend::start_packed`]): each trains on rows of its own,
/// which sit one member after another in the run's training (and validation) buffers. Each
/// member's row order is its own region of `order_stride` entries, past its rows `NO_ROW`;
/// an epoch has as many steps as the member with the most rows needs, and a member whose
/// rows have run out sits the rest out (`shaders/fused_loop.wgsl` reads each member's rows,
/// 1 / rows and Adam bias corrections a step from the member table the host writes after
/// the epoch's step records). Packed runs always take the looped step.
struct Packed {
    /// Training rows of each member, and where they start in the training buffers.
    rows: Vec<usize>,
    first: Vec<usize>,
    /// Validation rows of each member (none without validation), and where they start.
    val_rows: Vec<usize>,
    /// Each member's Adam step count, and the counts `snapshot` saved.
    steps: Vec<u64>,
    saved_steps: Option<Vec<u64>>,
}

impl Packed {
    fn most_rows(&self) -> usize {
        self.rows.iter().copied().max().unwrap_or(1)
    }
    fn most_val_rows(&self) -> usize {
        self.val_rows.iter().copied().max().unwrap_or(0)
    }
}

/// A row-order entry past a packed member's validation rows (`shaders/common.wgsl`).
const NO_ROW: u32 = u32::MAX;

/// Floats per member of the transposed-weights buffer: the largest layer's weights and the
/// zero bias after them.
fn wt_len(arch: &Arch) -> usize {
    arch.layers()
        .iter()
        .map(|l| l.weight_count() + l.inputs)
        .max()
        .unwrap_or(1)
}

/// Floats per member of the partial weight-gradient buffer: the largest layer's slices.
fn partial_len(arch: &Arch) -> usize {
    arch.layers()
        .iter()
        .map(|l| {
            let elems = (l.inputs + 1) * l.outputs;
            max_weight_slices(elems) * elems
        })
        .max()
        .unwrap_or(1)
}

/// Per-batch work buffers for up to `cap` rows of each of `members` networks (member m's
/// rows start at row m * cap of every buffer).
struct Work {
    cap: usize,
    bx: wgpu::Buffer,
    by: wgpu::Buffer,
    /// Output of every layer (head last), `cap * width`.
    acts: Vec<wgpu::Buffer>,
    rowll: wgpu::Buffer,
    /// Gradients at layer outputs, ping-ponged between layers, `cap * max width`.
    delta: [wgpu::Buffer; 2],
    /// One layer's weights transposed, for the backward pass.
    wt: wgpu::Buffer,
    /// Per-slice partial weight gradients of one layer.
    partial: wgpu::Buffer,
    /// The gradient's sum of squares, for clipping.
    sumsq: wgpu::Buffer,
    /// The fused path's per-tile partial gradients and sums of squares
    /// (`FusedPlan::partial_len`); `None` on the layered path.
    fused: Option<wgpu::Buffer>,
    /// Whether these buffers were made for the fused path (`fused` is `None` all the same
    /// when the partial gradients would not fit).
    fused_wanted: bool,
    /// Rows of a batch the fused partial gradients hold.
    fused_rows: usize,
}

impl Work {
    /// Work buffers for `cap` rows (a batch, or a chunk of evaluation rows); with a fused
    /// plan and a batch size (`fused`), partial gradients for batches of that many rows where
    /// they fit (the storage binding limit and `fused::PARTIAL_BUDGET_BYTES`), and then the
    /// layered path's partial and transposed-weight buffers are placeholders.
    fn new(
        g: &Gpu,
        arch: &Arch,
        cap: usize,
        members: usize,
        fused: Option<(&FusedPlan, usize)>,
    ) -> Result<Work> {
        let plan = fused.map(|f| f.0);
        let fused_rows = fused.map_or(0, |f| f.1);
        let maxw = arch.max_width();
        let rows = cap * members;
        let limit = g
            .limits
            .max_storage_buffer_binding_size
            .min(g.limits.max_buffer_size) as usize;
        let fused_len = plan
            .map(|p| p.partial_len(fused_rows, members))
            .filter(|&n| 4 * n <= limit.min(fused::PARTIAL_BUDGET_BYTES));
        let layered = |n: usize| if fused_len.is_some() { 1 } else { n };
        Ok(Work {
            fused_wanted: plan.is_some(),
            fused_rows,
            fused: fused_len
                .map(|n| g.storage("fused partial gradients", n))
                .transpose()?,
            cap,
            bx: g.storage("batch inputs", rows * arch.inputs)?,
            by: g.storage("batch targets", rows * arch.targets)?,
            acts: arch
                .layers()
                .iter()
                .enumerate()
                .map(|(l, s)| g.storage(&format!("layer {l} outputs"), rows * s.outputs))
                .collect::<Result<_>>()?,
            rowll: g.storage("row log-likelihoods", rows)?,
            delta: [
                g.storage("delta a", rows * maxw)?,
                g.storage("delta b", rows * maxw)?,
            ],
            wt: g.storage("transposed weights", layered(members * wt_len(arch)))?,
            sumsq: g.storage("gradient sums of squares", members)?,
            partial: g.storage(
                "partial weight gradients",
                layered(members * partial_len(arch)),
            )?,
        })
    }
}

/// Bind groups of a run, rebuilt when the stats or step buffers grow.
struct Groups {
    gather_train: wgpu::BindGroup,
    gather_val: Option<wgpu::BindGroup>,
    /// Gathers from each streamed chunk buffer.
    gather_chunk: [Option<wgpu::BindGroup>; 2],
    forward: Vec<wgpu::BindGroup>,
    /// Whether `head` is bound for the full-covariance head kernel.
    full_covariance: bool,
    head: wgpu::BindGroup,
    reduce: wgpu::BindGroup,
    back_weights: Vec<wgpu::BindGroup>,
    weight_sum: Vec<wgpu::BindGroup>,
    /// dA = dZ W^T through dense_forward on the transposed weights, per layer above the first.
    back_input: Vec<Option<wgpu::BindGroup>>,
    /// dA *= act'(A), per layer above the first.
    back_activation: Vec<Option<wgpu::BindGroup>>,
    transpose: Vec<wgpu::BindGroup>,
    adam: wgpu::BindGroup,
    grad_norm: wgpu::BindGroup,
    finite: wgpu::BindGroup,
    step: wgpu::BindGroup,
    /// The fused path's bind groups, when the work buffers are sized for it.
    fused: Option<FusedGroups>,
}

/// Bind groups of the fused path: `fused_step` over each source of rows, `fused_grad`, and
/// `adam` reading the fused sums of squares; `fused_loop` over each source of training rows
/// where the adapter has it.
struct FusedGroups {
    train: wgpu::BindGroup,
    val: Option<wgpu::BindGroup>,
    chunk: [Option<wgpu::BindGroup>; 2],
    grad: wgpu::BindGroup,
    adam: wgpu::BindGroup,
    looped: Option<LoopGroups>,
}

/// `fused_loop`'s bind groups: over the resident training rows and each streamed chunk.
struct LoopGroups {
    train: wgpu::BindGroup,
    chunk: [Option<wgpu::BindGroup>; 2],
}

impl GpuBackend {
    /// Opens the adapter `choice` asks for (not `DeviceChoice::Cpu`) and builds the kernels,
    /// with the options the environment sets (`GpuOptions::from_env`).
    pub fn new(choice: DeviceChoice) -> Result<GpuBackend> {
        GpuBackend::with_options(choice, GpuOptions::from_env()?)
    }

    /// Opens the adapter `choice` asks for with explicit options.
    pub fn with_options(choice: DeviceChoice, options: GpuOptions) -> Result<GpuBackend> {
        let idle = {
            let mut all = IDLE.lock().unwrap_or_else(|p| p.into_inner());
            all.iter()
                .position(|i| i.choice == choice && i.options == options)
                .map(|at| all.swap_remove(at))
        };
        if let Some(idle) = idle.filter(|i| i.gpu.check().is_ok()) {
            log::debug!(
                "GPU: {} reused, its kernels compiled already",
                idle.gpu.describe()
            );
            return Ok(GpuBackend {
                kernels: std::mem::ManuallyDrop::new(idle.kernels),
                options,
                gpu: std::mem::ManuallyDrop::new(idle.gpu),
                choice,
            });
        }
        let gpu = Gpu::open(choice)?;
        let mut tiling = Tiling::for_adapter(
            gpu.info.device_type,
            &gpu.limits,
            options.workgroup,
            options.tile_rows,
        );
        if let Some(most) = options.loop_barriers {
            tiling.loop_max_barriers = (most > 0).then_some(most);
        }
        // The looped step's pipelines only where a run may take it: on a CPU adapter only
        // when asked for (they would be compiled for nothing at every device open).
        let looped = tiling.loop_max_tiles > 0 || options.path == GpuPath::Loop;
        let kernels = Kernels::new(&gpu, &tiling, looped)?;
        Ok(GpuBackend {
            kernels: std::mem::ManuallyDrop::new(kernels),
            options,
            gpu: std::mem::ManuallyDrop::new(gpu),
            choice,
        })
    }

    /// How `arch` fits the fused step on this device (its plan), or `None` when it does not
    /// (or the layered path was asked for).
    pub fn fused_plan(&self, arch: &Arch) -> Option<FusedPlan> {
        match self.options.path {
            _ if self.kernels.fused.is_none() => None,
            GpuPath::Layered => None,
            GpuPath::Auto | GpuPath::Fused | GpuPath::Loop => {
                FusedPlan::new(arch, &self.kernels.tiling)
            }
        }
    }

    /// Says in the log which path batches of `batch` rows take, and why (at `info`; a
    /// `warn` where `MDN_GPU_PATH=fused` asked for a path the model cannot take).
    fn log_path(&self, run: &Run, batch: usize, clip: bool) {
        let tiling = &self.kernels.tiling;
        if let (Some(plan), Some(per)) = (run.fused(), self.loops_steps_of(run, batch, clip)) {
            log::info!(
                "GPU: looped training step, one workgroup of {} invocations a network running up to {per} steps a dispatch, tiles of up to {} rows ({} a batch of {batch})",
                tiling.workgroup,
                plan.tile_rows,
                plan.tiles(batch),
            );
            return;
        }
        if let (GpuPath::Loop, Some(plan)) = (self.options.path, run.fused()) {
            let why = match self.kernels.looped(false) {
                None => format!(
                    "the adapter cannot run the looped step (it needs {} storage buffers a stage)",
                    kernels::LOOP_STORAGE_BUFFERS
                ),
                Some(_)
                    if run
                        .bound
                        .groups
                        .fused
                        .as_ref()
                        .is_some_and(|f| f.looped.is_none()) =>
                {
                    "an epoch's step records are larger than a storage binding".to_string()
                }
                Some(_) => format!(
                    "a step passes {} barriers, more than the {} a dispatch this adapter is given",
                    plan.loop_barriers_per_step(batch, clip, tiling.workgroup),
                    tiling.loop_max_barriers.unwrap_or(0)
                ),
            };
            log::warn!("MDN_GPU_PATH=loop, but {why}; using the fused step");
        }
        if let Some(plan) = run.fused() {
            log::info!(
                "GPU: fused training step, tiles of up to {} rows ({} workgroup{} a batch of {batch}), {} invocations each",
                plan.tile_rows,
                plan.tiles(batch),
                if plan.tiles(batch) == 1 { "" } else { "s" },
                tiling.workgroup
            );
            return;
        }
        let mflop = crate::bench::train_flops_per_row(&run.arch) * batch as f64 / 1e6;
        let why = match (&run.plan, self.options.path) {
            (_, GpuPath::Layered) => "MDN_GPU_PATH=layered".to_string(),
            (None, _) if self.kernels.fused.is_none() => {
                "the adapter cannot run the fused kernels".to_string()
            }
            (None, _) => format!(
                "the model's layers are too wide for a tile of {} rows in {} KiB of workgroup memory",
                fused::MIN_TILE_ROWS,
                tiling.floats * 4 / 1024
            ),
            (Some(_), _) if !self.fuses_steps_of(&run.arch, batch) => format!(
                "on a CPU adapter only steps of at most {} MFLOP are fused, and this one is {mflop:.1}",
                tiling.fused_max_step_flops.unwrap_or(0.0) / 1e6
            ),
            (Some(_), _) => format!(
                "the partial gradients of a batch would pass {} MiB",
                fused::PARTIAL_BUDGET_BYTES >> 20
            ),
        };
        if matches!(self.options.path, GpuPath::Fused | GpuPath::Loop) {
            log::warn!(
                "MDN_GPU_PATH={}, but the layered kernels train this model: {why}",
                if self.options.path == GpuPath::Fused {
                    "fused"
                } else {
                    "loop"
                }
            );
        } else {
            log::info!("GPU: layered kernels (a dispatch per layer and pass): {why}");
        }
    }

    /// Whether this adapter fuses steps of `batch` rows of `arch`, for a model that fits a
    /// tile: always, except that on an adapter with `Tiling::fused_max_step_flops` (a CPU
    /// adapter) larger steps take the layered path, unless `GpuPath::Fused` asks.
    fn fuses_steps_of(&self, arch: &Arch, batch: usize) -> bool {
        let flops = crate::bench::train_flops_per_row(arch) * batch as f64;
        matches!(self.options.path, GpuPath::Fused | GpuPath::Loop)
            || self
                .kernels
                .tiling
                .fused_max_step_flops
                .is_none_or(|most| flops <= most)
    }

    /// Whether this run's steps of `batch` rows take the looped step, and if so how many
    /// steps a dispatch runs: where the run is on the fused path and the adapter has the
    /// looped kernel, always with `MDN_GPU_PATH=loop`, never with `fused`, and by default
    /// where a batch is at most `Tiling::loop_max_tiles` tiles (on a GPU one: the fused step
    /// is then one workgroup and a gradient dispatch a step, and the looped step the same
    /// work without the dispatches; never on a CPU adapter). A dispatch
    /// runs as many steps as make about [`LOOP_FLOPS_PER_DISPATCH`], so that no dispatch runs
    /// long enough for a display driver's watchdog, and on a CPU adapter no more than
    /// `Tiling::loop_max_barriers` barriers (where one step passes more, the fused step
    /// trains it).
    fn loops_steps_of(&self, run: &Run, batch: usize, clip: bool) -> Option<usize> {
        let plan = run.fused()?;
        // The looped step's bind groups exist where the adapter has its kernel and can bind
        // the step records as storage.
        run.bound.groups.fused.as_ref()?.looped.as_ref()?;
        let wanted = match self.options.path {
            _ if run.packed.is_some() => true,
            GpuPath::Loop => true,
            GpuPath::Auto => plan.tiles(batch) <= self.kernels.tiling.loop_max_tiles,
            GpuPath::Fused | GpuPath::Layered => false,
        };
        let tiling = &self.kernels.tiling;
        let by_barriers = match tiling.loop_max_barriers {
            Some(most) => most / plan.loop_barriers_per_step(batch, clip, tiling.workgroup),
            None => usize::MAX,
        };
        let per = loop_steps_per_dispatch(&run.arch, batch)
            .min(by_barriers)
            .min(self.options.loop_steps.unwrap_or(usize::MAX));
        (wanted && per > 0).then_some(per)
    }

    /// How the fused and looped steps are laid out on this adapter.
    pub fn tiling(&self) -> &Tiling {
        &self.kernels.tiling
    }

    /// The open device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn stride(&self) -> u64 {
        kernels::step_stride(&self.gpu.limits)
    }

    /// A run of `arch` from `params` on `train` (and `val`), with work buffers for `cap` rows
    /// per batch (for the fused path too when `fused`; training runs size theirs per epoch);
    /// with `chunk_rows`, two chunk buffers of that many rows for streamed training.
    /// `params` holds `members` networks' parameters one after another.
    #[allow(clippy::too_many_arguments)]
    fn new_run(
        &self,
        arch: &Arch,
        params: &[f32],
        members: usize,
        train: DataRef<'_>,
        val: Option<DataRef<'_>>,
        cap: usize,
        chunk_rows: Option<usize>,
        fused: bool,
    ) -> Result<Run> {
        arch.validate()?;
        let n = arch.param_count();
        if members > 128 {
            return Err(Error::config(format!(
                "{members} networks in one run: at most 128 train together"
            )));
        }
        if members == 0 || params.len() != n * members {
            return Err(Error::config(format!(
                "parameter buffer has {} values but {members} member(s) of the architecture need {}",
                params.len(),
                n * members
            )));
        }
        for (what, d) in
            std::iter::once(("training", &train)).chain(val.as_ref().map(|v| ("validation", v)))
        {
            if d.x.len() != d.rows * arch.inputs || d.y.len() != d.rows * arch.targets {
                return Err(Error::config(format!(
                    "{what} buffers do not hold {} rows of the model's width",
                    d.rows
                )));
            }
        }
        let g = &self.gpu;
        // The training rows' order has one permutation per member; the validation rows are
        // read in file order by every member.
        let upload_data = |label: &str, d: &DataRef<'_>, orders: usize| -> Result<DeviceData> {
            let order: Vec<u32> = (0..orders).flat_map(|_| 0..d.rows as u32).collect();
            Ok(DeviceData {
                x: g.upload(&format!("{label} inputs"), d.x, wgpu::BufferUsages::empty())?,
                y: g.upload(
                    &format!("{label} targets"),
                    d.y,
                    wgpu::BufferUsages::empty(),
                )?,
                order: g.upload(
                    &format!("{label} row order"),
                    bytemuck::cast_slice(&order),
                    wgpu::BufferUsages::empty(),
                )?,
                rows: d.rows,
            })
        };
        let layers = arch.layers();
        let cap = cap.max(1);
        let chunks = chunk_rows.map(|rows| {
            let row_bytes = 4 * arch.inputs.max(arch.targets);
            let limit = g
                .limits
                .max_storage_buffer_binding_size
                .min(g.limits.max_buffer_size) as usize;
            rows.clamp(1, (limit / row_bytes).max(1))
        });
        let plan = self.fused_plan(arch);
        let core = g.scoped("allocating GPU buffers", || -> Result<Core> {
            let zeros = vec![0.0f32; n * members];
            let transposed_uniforms = layers
                .iter()
                .enumerate()
                .map(|(l, s)| {
                    let w: Words = [
                        s.outputs as u32,
                        s.inputs as u32,
                        0,
                        s.weight_count() as u32,
                        0,
                        0,
                        0,
                        wt_len(arch) as u32,
                    ];
                    g.uniform(
                        &format!("layer {l} transposed uniform"),
                        bytemuck::bytes_of(&w),
                    )
                })
                .collect();
            let layer_uniforms = layers
                .iter()
                .enumerate()
                .map(|(l, s)| {
                    let act = if s.activated {
                        act_code(arch.activation)
                    } else {
                        0
                    };
                    let below = if l > 0 { act_code(arch.activation) } else { 0 };
                    let w: Words = [
                        s.inputs as u32,
                        s.outputs as u32,
                        s.weights as u32,
                        s.bias as u32,
                        act,
                        below,
                        max_weight_slices((s.inputs + 1) * s.outputs) as u32,
                        n as u32,
                    ];
                    g.uniform(&format!("layer {l} uniform"), bytemuck::bytes_of(&w))
                })
                .collect();
            let k = arch.components as u32;
            let d = arch.targets as u32;
            let head: Words = [
                k,
                d,
                arch.head_width() as u32,
                arch.sigma_floor.to_bits(),
                u32::from(!arch.family.is_gaussian()),
                0,
                0,
                0,
            ];
            let gather: Words = [arch.inputs as u32, d, 0, 0, 0, 0, 0, 0];
            let chunk = |c: usize, rows: usize| -> Result<DeviceData> {
                let order: Vec<u32> = (0..rows as u32).collect();
                Ok(DeviceData {
                    x: g.storage(&format!("chunk {c} inputs"), rows * arch.inputs)?,
                    y: g.storage(&format!("chunk {c} targets"), rows * arch.targets)?,
                    order: g.upload(
                        &format!("chunk {c} row order"),
                        bytemuck::cast_slice(&order),
                        wgpu::BufferUsages::empty(),
                    )?,
                    rows,
                })
            };
            Ok(Core {
                params: g.upload("parameters", params, wgpu::BufferUsages::empty())?,
                grad: g.upload("gradient", &zeros, wgpu::BufferUsages::empty())?,
                m: g.upload("adam m", &zeros, wgpu::BufferUsages::empty())?,
                v: g.upload("adam v", &zeros, wgpu::BufferUsages::empty())?,
                best: g.upload("best parameters", params, wgpu::BufferUsages::empty())?,
                saved: [
                    g.storage("saved parameters", n * members)?,
                    g.storage("saved adam m", n * members)?,
                    g.storage("saved adam v", n * members)?,
                ],
                saved_step: None,
                train: upload_data("training", &train, members)?,
                val: val
                    .as_ref()
                    .map(|v| upload_data("validation", v, 1))
                    .transpose()?,
                adam_step: 0,
                packed: None,
                work: Work::new(
                    g,
                    arch,
                    cap,
                    members,
                    plan.as_ref().filter(|_| fused).map(|p| (p, cap)),
                )?,
                desc: g.upload(
                    "fused step descriptor",
                    bytemuck::cast_slice(plan.as_ref().map_or(&[0u32][..], |p| &p.desc)),
                    wgpu::BufferUsages::empty(),
                )?,
                plan,
                lrs: g.upload(
                    "learning rates",
                    &vec![StepConfig::default().lr; members],
                    wgpu::BufferUsages::empty(),
                )?,
                members,
                active: active_mask(&vec![true; members]),
                layer_uniforms,
                transposed_uniforms,
                head_uniform: g.uniform("head uniform", bytemuck::bytes_of(&head)),
                gather_uniform: g.uniform("gather uniform", bytemuck::bytes_of(&gather)),
                epoch: None,
                chunks: match chunks {
                    Some(rows) => Some(([chunk(0, rows)?, chunk(1, rows)?], rows)),
                    None => None,
                },
                next_chunk: 0,
                dispatches_per_step: None,
                looped: None,
                chunk_busy: [None, None],
                n_params: n,
                layers,
                arch: arch.clone(),
            })
        })??;
        let bound = self.bind(&core, 1, 1)?;
        Ok(Run { core, bound })
    }

    /// Makes sure the run's stats and step buffers hold `stats` and `steps` entries (growing
    /// them and rebuilding the bind groups if they do not).
    fn prepare(&self, run: &mut Run, stats: usize, steps: usize) -> Result<()> {
        let (have_stats, have_steps) = (run.bound.stats.1, run.bound.steps.1);
        if have_stats < stats || have_steps < steps {
            run.bound = self.bind(&run.core, stats.max(have_stats), steps.max(have_steps))?;
        }
        Ok(())
    }

    /// Statistics and step buffers of these sizes, and the bind groups of `core` over them.
    fn bind(&self, core: &Core, stats: usize, steps: usize) -> Result<Bound> {
        let g = &self.gpu;
        // `stats` slots for each member.
        let stats = (g.storage("epoch statistics", stats * core.members)?, stats);
        let steps = (
            g.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step records"),
                size: steps as u64 * self.stride(),
                // Also read as words by `fused_loop`, which runs many steps a dispatch.
                usage: wgpu::BufferUsages::UNIFORM
                    | wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            steps,
        );
        let groups = g.scoped("creating bind groups", || {
            self.groups(core, &stats.0, &steps.0)
        })?;
        Ok(Bound {
            stats,
            steps,
            groups,
        })
    }

    fn groups(&self, r: &Core, stats: &wgpu::Buffer, steps: &wgpu::Buffer) -> Groups {
        let (g, k) = (&self.gpu, &self.kernels);
        let last = r.layers.len() - 1;
        let dbuf = |l: usize| &r.work.delta[(last - l) % 2];
        let input = |l: usize| {
            if l == 0 {
                &r.work.bx
            } else {
                &r.work.acts[l - 1]
            }
        };
        let full = r.arch.covariance == Covariance::Full;
        Groups {
            gather_train: k.gather.bind(
                g,
                "gather train",
                &[
                    &r.gather_uniform,
                    &r.train.order,
                    &r.train.x,
                    &r.train.y,
                    &r.work.bx,
                    &r.work.by,
                ],
            ),
            gather_chunk: [0, 1].map(|c| {
                r.chunks.as_ref().map(|(bufs, _)| {
                    let d = &bufs[c];
                    k.gather.bind(
                        g,
                        "gather chunk",
                        &[
                            &r.gather_uniform,
                            &d.order,
                            &d.x,
                            &d.y,
                            &r.work.bx,
                            &r.work.by,
                        ],
                    )
                })
            }),
            gather_val: r.val.as_ref().map(|v| {
                k.gather.bind(
                    g,
                    "gather val",
                    &[
                        &r.gather_uniform,
                        &v.order,
                        &v.x,
                        &v.y,
                        &r.work.bx,
                        &r.work.by,
                    ],
                )
            }),
            forward: (0..r.layers.len())
                .map(|l| {
                    k.dense_forward.bind(
                        g,
                        "forward",
                        &[&r.layer_uniforms[l], &r.params, input(l), &r.work.acts[l]],
                    )
                })
                .collect(),
            full_covariance: full,
            head: k.head(full).bind(
                g,
                "head",
                &[
                    &r.head_uniform,
                    &r.work.acts[last],
                    &r.work.by,
                    &r.work.rowll,
                    &r.work.delta[0],
                ],
            ),
            reduce: k.reduce_sum.bind(g, "reduce", &[&r.work.rowll, stats]),
            back_weights: (0..r.layers.len())
                .map(|l| {
                    k.dense_backward_weights.bind(
                        g,
                        "backward weights",
                        &[&r.layer_uniforms[l], input(l), dbuf(l), &r.work.partial],
                    )
                })
                .collect(),
            weight_sum: (0..r.layers.len())
                .map(|l| {
                    k.weight_grad_sum.bind(
                        g,
                        "weight gradient sum",
                        &[&r.layer_uniforms[l], &r.params, &r.work.partial, &r.grad],
                    )
                })
                .collect(),
            back_activation: (0..r.layers.len())
                .map(|l| {
                    (l > 0).then(|| {
                        k.activation_backward.bind(
                            g,
                            "backward activation",
                            &[&r.layer_uniforms[l], &r.work.acts[l - 1], dbuf(l - 1)],
                        )
                    })
                })
                .collect(),
            transpose: (0..r.layers.len())
                .map(|l| {
                    k.transpose.bind(
                        g,
                        "transpose",
                        &[&r.layer_uniforms[l], &r.params, &r.work.wt],
                    )
                })
                .collect(),
            back_input: (0..r.layers.len())
                .map(|l| {
                    (l > 0).then(|| {
                        k.dense_forward.bind(
                            g,
                            "backward input",
                            &[&r.transposed_uniforms[l], &r.work.wt, dbuf(l), dbuf(l - 1)],
                        )
                    })
                })
                .collect(),
            adam: k.adam.bind(
                g,
                "adam",
                &[&r.params, &r.grad, &r.m, &r.v, &r.work.sumsq, &r.lrs],
            ),
            grad_norm: k
                .grad_norm
                .bind(g, "gradient norm", &[&r.grad, &r.work.sumsq]),
            finite: k.finite_check.bind(g, "finite check", &[&r.params, stats]),
            fused: r.work.fused.as_ref().map(|partial| {
                let step = |label: &str, d: &DeviceData, sums: &wgpu::Buffer| {
                    k.fused(full).bind(
                        g,
                        label,
                        &[&r.desc, &r.params, &d.order, &d.x, &d.y, partial, sums],
                    )
                };
                FusedGroups {
                    train: step("fused step train", &r.train, stats),
                    // Validation tiles' sums go to `rowll`, which `reduce` sums per chunk.
                    val: r
                        .val
                        .as_ref()
                        .map(|v| step("fused step val", v, &r.work.rowll)),
                    chunk: [0, 1].map(|c| {
                        r.chunks
                            .as_ref()
                            .map(|(bufs, _)| step("fused step chunk", &bufs[c], stats))
                    }),
                    grad: k.fused_grad().bind(
                        g,
                        "fused gradient",
                        &[
                            &r.desc, &r.params, partial, &r.grad, &r.m, &r.v, &r.lrs, stats,
                        ],
                    ),
                    adam: k.adam.bind(
                        g,
                        "fused adam",
                        &[&r.params, &r.grad, &r.m, &r.v, partial, &r.lrs],
                    ),
                    // The step records bound whole as storage: where they fit a binding.
                    looped: k
                        .looped(full)
                        .filter(|_| steps.size() <= g.limits.max_storage_buffer_binding_size)
                        .map(|kernel| {
                            let bind = |label: &str, d: &DeviceData| {
                                kernel.bind(
                                    g,
                                    label,
                                    &[
                                        &r.desc, &r.params, &d.order, &d.x, &d.y, partial, stats,
                                        &r.m, &r.v, &r.lrs, steps,
                                    ],
                                )
                            };
                            LoopGroups {
                                train: bind("looped step train", &r.train),
                                chunk: [0, 1].map(|c| {
                                    r.chunks
                                        .as_ref()
                                        .map(|(bufs, _)| bind("looped step chunk", &bufs[c]))
                                }),
                            }
                        }),
                }
            }),
            step: g.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("step records"),
                layout: &k.step_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: steps,
                        offset: 0,
                        size: wgpu::BufferSize::new(STEP_BYTES),
                    }),
                }],
            }),
        }
    }

    /// Uploads step records `first..first + records.len()`, each at its aligned stride.
    fn write_steps(&self, run: &Run, first: usize, records: &[StepUniform]) {
        let stride = self.stride() as usize;
        let mut bytes = vec![0u8; records.len() * stride];
        for (i, r) in records.iter().enumerate() {
            bytes[i * stride..i * stride + STEP_BYTES as usize]
                .copy_from_slice(bytemuck::bytes_of(r));
        }
        self.gpu
            .queue
            .write_buffer(&run.bound.steps.0, (first * stride) as u64, &bytes);
    }
}

/// Records dispatches into one compute pass.
struct Encoder<'a> {
    pass: wgpu::ComputePass<'a>,
    max_groups: u32,
    /// Every dispatch covers this many members (the z dimension, times its own z).
    members: u32,
    /// When set, only dispatches of this kernel are recorded (for profiling).
    only: Option<&'static str>,
    /// Dispatches recorded so far.
    dispatches: usize,
}

impl Encoder<'_> {
    fn dispatch(&mut self, kernel: &Kernel, group: &wgpu::BindGroup, x: u32, y: u32) {
        self.dispatch3(kernel, group, x, y, 1);
    }

    fn dispatch3(&mut self, kernel: &Kernel, group: &wgpu::BindGroup, x: u32, y: u32, z: u32) {
        if self.only.is_some_and(|name| name != kernel.name) {
            return;
        }
        self.dispatches += 1;
        self.pass.set_pipeline(&kernel.pipeline);
        self.pass.set_bind_group(0, group, &[]);
        self.pass
            .dispatch_workgroups(x.max(1), y.max(1), z.max(1) * self.members.max(1));
    }

    /// A 1-D dispatch of `groups` workgroups, folded into 2-D past the per-dimension limit.
    fn dispatch_1d(&mut self, kernel: &Kernel, group: &wgpu::BindGroup, groups: u32) {
        let x = groups.clamp(1, self.max_groups);
        let y = groups.div_ceil(x);
        self.dispatch(kernel, group, x, y);
    }

    fn step(&mut self, groups: &Groups, index: usize, stride: u64) {
        self.pass
            .set_bind_group(1, &groups.step, &[(index as u64 * stride) as u32]);
    }

    /// Gather, then forward through every layer, for `rows` rows.
    fn forward(
        &mut self,
        k: &Kernels,
        run: &Run,
        g: &Groups,
        gather: &wgpu::BindGroup,
        rows: usize,
    ) {
        self.dispatch_1d(&k.gather, gather, div_ceil(rows, 64));
        for (l, s) in run.layers.iter().enumerate() {
            self.dispatch(
                &k.dense_forward,
                &g.forward[l],
                div_ceil(s.outputs.div_ceil(4), 8),
                div_ceil(rows.div_ceil(4), 8),
            );
        }
    }

    /// Mixture head (with or without gradient) and the loss reduction into its stats slot.
    fn head(&mut self, k: &Kernels, g: &Groups, rows: usize) {
        self.dispatch_1d(k.head(g.full_covariance), &g.head, div_ceil(rows, 64));
        self.dispatch(&k.reduce_sum, &g.reduce, 1, 1);
    }

    /// One training step of `rows` rows from the step record in place, gathered from the
    /// resident training rows (`chunk` None) or a streamed chunk buffer: on the fused path
    /// `fused_step`, `fused_grad` (with Adam unless clipping) and, when clipping, `adam`; on
    /// the layered path gather, forward, head, backward, the gradient norm when clipping, and
    /// Adam.
    fn train_step(
        &mut self,
        k: &Kernels,
        run: &Run,
        g: &Groups,
        chunk: Option<usize>,
        rows: usize,
        clip: bool,
    ) {
        match (run.fused(), &g.fused) {
            (Some(plan), Some(f)) => {
                let source = match chunk {
                    Some(c) => f.chunk[c].as_ref().expect("a streamed run"),
                    None => &f.train,
                };
                self.dispatch_1d(k.fused(g.full_covariance), source, plan.tiles(rows) as u32);
                self.dispatch_1d(k.fused_grad(), &f.grad, plan.grad_groups() as u32);
                if clip {
                    self.dispatch_1d(&k.adam, &f.adam, div_ceil(run.n_params, 64));
                }
            }
            _ => {
                let gather = match chunk {
                    Some(c) => g.gather_chunk[c].as_ref().expect("a streamed run"),
                    None => &g.gather_train,
                };
                self.forward(k, run, g, gather, rows);
                self.head(k, g, rows);
                self.backward(k, run, g, rows);
                if clip {
                    self.dispatch(&k.grad_norm, &g.grad_norm, 1, 1);
                }
                self.dispatch_1d(&k.adam, &g.adam, div_ceil(run.n_params, 64));
            }
        }
    }

    /// The looped step: one dispatch, one workgroup a member, running the steps the record in
    /// place says (`steps`), from the resident training rows (`chunk` None) or a streamed
    /// chunk buffer.
    fn loop_steps(&mut self, k: &Kernels, g: &Groups, chunk: Option<usize>) {
        let kernel = k
            .looped(g.full_covariance)
            .expect("the looped path only where its kernel exists");
        let groups = g
            .fused
            .as_ref()
            .and_then(|f| f.looped.as_ref())
            .expect("the looped path only with fused work buffers");
        let source = match chunk {
            Some(c) => groups.chunk[c].as_ref().expect("a streamed run"),
            None => &groups.train,
        };
        self.dispatch(kernel, source, 1, 1);
    }

    /// Backward through every layer into the gradient buffer.
    fn backward(&mut self, k: &Kernels, run: &Run, g: &Groups, rows: usize) {
        for l in (0..run.layers.len()).rev() {
            let s = run.layers[l];
            self.dispatch3(
                &k.dense_backward_weights,
                &g.back_weights[l],
                div_ceil(s.outputs.div_ceil(4), 8),
                div_ceil((s.inputs + 1).div_ceil(4), 8),
                weight_grad_slices(rows).min(max_weight_slices((s.inputs + 1) * s.outputs)) as u32,
            );
            self.dispatch_1d(
                &k.weight_grad_sum,
                &g.weight_sum[l],
                div_ceil((s.inputs + 1) * s.outputs, 64),
            );
            if let (Some(bi), Some(ba)) = (&g.back_input[l], &g.back_activation[l]) {
                self.dispatch_1d(
                    &k.transpose,
                    &g.transpose[l],
                    div_ceil(s.weight_count() + s.inputs, 64),
                );
                self.dispatch(
                    &k.dense_forward,
                    bi,
                    div_ceil(s.inputs.div_ceil(4), 8),
                    div_ceil(rows.div_ceil(4), 8),
                );
                self.dispatch_1d(&k.activation_backward, ba, div_ceil(rows * s.inputs, 64));
            }
        }
    }
}

impl GpuBackend {
    fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    fn pass<'a>(&self, enc: &'a mut wgpu::CommandEncoder, label: &str) -> Encoder<'a> {
        Encoder {
            pass: enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: None,
                })
                .forget_lifetime(),
            max_groups: self.gpu.limits.max_compute_workgroups_per_dimension.max(1),
            members: 1,
            only: None,
            dispatches: 0,
        }
    }

    /// Runs forward (and optionally the head) over `rows` rows of `data` in chunks, copying
    /// `what(run)` of each chunk to a readback buffer; one submission, one readback.
    fn eval_chunks(
        &self,
        run: &mut Run,
        rows: usize,
        head: bool,
        per_row: usize,
        out_of: impl Fn(&Run) -> &wgpu::Buffer,
    ) -> Result<Vec<f32>> {
        let chunks = rows.div_ceil(run.work.cap).max(1);
        self.prepare(run, 1, chunks)?;
        let records: Vec<StepUniform> = (0..chunks)
            .map(|c| {
                let n = (rows - c * run.work.cap).min(run.work.cap);
                StepUniform {
                    rows: n as u32,
                    start: (c * run.work.cap) as u32,
                    slot: 0,
                    inv_rows: 1.0 / n as f32,
                    ..run.record()
                }
            })
            .collect();
        self.write_steps(run, 0, &records);
        let readback = self
            .gpu
            .readback("evaluation readback", (rows * per_row * 4) as u64);
        self.gpu.scoped("evaluation", || {
            let groups = &run.bound.groups;
            let mut enc = self.encoder("evaluation");
            for (c, rec) in records.iter().enumerate() {
                let n = rec.rows as usize;
                {
                    let mut p = self.pass(&mut enc, "evaluation chunk");
                    p.step(groups, c, self.stride());
                    p.forward(&self.kernels, run, groups, &groups.gather_train, n);
                    if head {
                        p.head(&self.kernels, groups, n);
                    }
                }
                let bytes = (n * per_row * 4) as u64;
                enc.copy_buffer_to_buffer(
                    out_of(run),
                    0,
                    &readback,
                    (c * run.work.cap * per_row * 4) as u64,
                    bytes,
                );
            }
            self.gpu.queue.submit([enc.finish()]);
        })?;
        self.gpu.read_f32(&readback, rows * per_row)
    }

    fn read_params(&self, buffer: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
        let readback = self.gpu.readback("parameter readback", (n * 4) as u64);
        self.gpu.scoped("reading parameters", || {
            let mut enc = self.encoder("read parameters");
            enc.copy_buffer_to_buffer(buffer, 0, &readback, 0, (n * 4) as u64);
            self.gpu.queue.submit([enc.finish()]);
        })?;
        self.gpu.read_f32(&readback, n)
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        self.gpu.describe()
    }

    fn start<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[f32],
        train: DataRef<'_>,
        val: Option<DataRef<'_>>,
    ) -> Result<Box<dyn TrainRun + 'a>> {
        let run = self.new_run(arch, params, 1, train, val, 1, None, true)?;
        Ok(Box::new(GpuRun {
            backend: self,
            run,
            first_batch_rows: 0,
            clip: false,
        }))
    }

    fn start_stream<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[f32],
        val: Option<DataRef<'_>>,
        chunk_rows: usize,
    ) -> Result<Box<dyn TrainRun + 'a>> {
        // The resident training set is a placeholder row; rows arrive in two chunk buffers.
        let x = vec![0.0f32; arch.inputs];
        let y = vec![0.0f32; arch.targets];
        let run = self.new_run(
            arch,
            params,
            1,
            DataRef {
                x: &x,
                y: &y,
                rows: 1,
            },
            val,
            1,
            Some(chunk_rows),
            true,
        )?;
        Ok(Box::new(GpuRun {
            backend: self,
            run,
            first_batch_rows: 0,
            clip: false,
        }))
    }

    fn packs_alike(&self, arch: &Arch, step: &StepConfig) -> bool {
        // As `loops_steps_of` decides for a run alone, before there is one.
        let full = arch.covariance == Covariance::Full;
        let Some(plan) = self.fused_plan(arch).filter(|_| !self.options.no_packing) else {
            return false;
        };
        if self.kernels.looped(full).is_none() {
            return false;
        }
        let batch = step.batch_size;
        let tiling = &self.kernels.tiling;
        let alone_loops = match self.options.path {
            GpuPath::Loop => true,
            GpuPath::Auto => plan.tiles(batch) <= tiling.loop_max_tiles,
            GpuPath::Fused | GpuPath::Layered => false,
        };
        let barriers = plan.loop_barriers_per_step(batch, step.clip_norm > 0.0, tiling.workgroup);
        alone_loops
            && self.fuses_steps_of(arch, batch)
            && tiling.loop_max_barriers.is_none_or(|most| most >= barriers)
    }

    fn start_members<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        train: DataRef<'_>,
        val: Option<DataRef<'_>>,
    ) -> Result<Option<Box<dyn MembersRun + 'a>>> {
        let all: Vec<f32> = params.concat();
        let run = self.new_run(arch, &all, params.len(), train, val, 1, None, true)?;
        Ok(Some(Box::new(GpuMembers(GpuRun {
            backend: self,
            run,
            first_batch_rows: 0,
            clip: false,
        }))))
    }

    fn start_packed<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[Vec<f32>],
        train: &[DataRef<'_>],
        val: Option<&[DataRef<'_>]>,
    ) -> Result<Option<Box<dyn MembersRun + 'a>>> {
        let members = params.len();
        if train.len() != members || val.is_some_and(|v| v.len() != members) {
            return Err(Error::config(format!(
                "a packed run of {members} members needs each member's training{} rows",
                if val.is_some() { " and validation" } else { "" }
            )));
        }
        let n = arch.param_count();
        if let Some(m) = params.iter().position(|p| p.len() != n) {
            return Err(Error::config(format!(
                "member {m} of a packed run has {} parameters; the architecture has {n}",
                params[m].len()
            )));
        }
        // Each member's rows: some, and of the model's width.
        for (m, d) in train.iter().chain(val.into_iter().flatten()).enumerate() {
            let what = if m < members {
                "training"
            } else {
                "validation"
            };
            if d.rows == 0 {
                return Err(Error::config(format!(
                    "member {} of a packed run has no {what} rows",
                    m % members
                )));
            }
            if d.x.len() != d.rows * arch.inputs || d.y.len() != d.rows * arch.targets {
                return Err(Error::config(format!(
                    "member {}'s {what} buffers of a packed run do not hold {} rows of the \
                     model's width",
                    m % members,
                    d.rows
                )));
            }
        }
        // Packed runs take the looped step: where this adapter has none, or the model does not
        // fit a tile, the caller trains the members one after another.
        let full = arch.covariance == Covariance::Full;
        if self.kernels.looped(full).is_none() || self.fused_plan(arch).is_none() {
            return Ok(None);
        }
        let join = |parts: &[DataRef<'_>]| -> (Vec<f32>, Vec<f32>, usize) {
            let x = parts.iter().flat_map(|d| d.x.iter().copied()).collect();
            let y = parts.iter().flat_map(|d| d.y.iter().copied()).collect();
            (x, y, parts.iter().map(|d| d.rows).sum())
        };
        let (tx, ty, t_rows) = join(train);
        let joined_val = val.map(join);
        let all: Vec<f32> = params.concat();
        let mut run = self.new_run(
            arch,
            &all,
            members,
            DataRef {
                x: &tx,
                y: &ty,
                rows: t_rows,
            },
            joined_val
                .as_ref()
                .map(|(x, y, rows)| DataRef { x, y, rows: *rows }),
            1,
            None,
            true,
        )?;
        let starts = |parts: &[DataRef<'_>]| -> Vec<usize> {
            parts
                .iter()
                .scan(0, |at, d| {
                    let first = *at;
                    *at += d.rows;
                    Some(first)
                })
                .collect()
        };
        let packed = Packed {
            rows: train.iter().map(|d| d.rows).collect(),
            first: starts(train),
            val_rows: val.map_or(vec![0; members], |v| v.iter().map(|d| d.rows).collect()),
            steps: vec![0; members],
            saved_steps: None,
        };
        // Row orders of each member's own region: training ones are written every epoch;
        // the validation ones are each member's rows in order, then NO_ROW.
        let g = &self.gpu;
        run.core.train.order = g.storage("training row order", packed.most_rows() * members)?;
        if let (Some(v), Some(parts)) = (&mut run.core.val, val) {
            let most = packed.most_val_rows();
            let mut order = vec![NO_ROW; most * members];
            for (m, (d, first)) in parts.iter().zip(starts(parts)).enumerate() {
                for (r, to) in order[m * most..m * most + d.rows].iter_mut().enumerate() {
                    *to = (first + r) as u32;
                }
            }
            v.order = g.upload(
                "validation row order",
                bytemuck::cast_slice(&order),
                wgpu::BufferUsages::empty(),
            )?;
        }
        run.core.packed = Some(packed);
        // The bind groups point at the old row orders.
        run.bound = self.bind(&run.core, 1, 1)?;
        Ok(Some(Box::new(GpuMembers(GpuRun {
            backend: self,
            run,
            first_batch_rows: 0,
            clip: false,
        }))))
    }

    fn forward(&mut self, arch: &Arch, params: &[f32], x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let y = vec![0.0f32; rows * arch.targets];
        let mut run = self.new_run(
            arch,
            params,
            1,
            DataRef { x, y: &y, rows },
            None,
            rows.clamp(1, EVAL_CHUNK),
            None,
            false,
        )?;
        let last = run.layers.len() - 1;
        self.eval_chunks(&mut run, rows, false, arch.head_width(), |r| {
            &r.work.acts[last]
        })
    }

    fn loglik(
        &mut self,
        arch: &Arch,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        rows: usize,
    ) -> Result<Vec<f64>> {
        let mut run = self.new_run(
            arch,
            params,
            1,
            DataRef { x, y, rows },
            None,
            rows.clamp(1, EVAL_CHUNK),
            None,
            false,
        )?;
        let ll = self.eval_chunks(&mut run, rows, true, 1, |r| &r.work.rowll)?;
        Ok(ll.into_iter().map(|v| v as f64).collect())
    }

    fn loss_grad(
        &mut self,
        arch: &Arch,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        rows: usize,
        l2: f32,
    ) -> Result<LossGrad> {
        if rows == 0 {
            return Err(Error::config("loss_grad needs at least one row"));
        }
        let mut run = self.new_run(
            arch,
            params,
            1,
            DataRef { x, y, rows },
            None,
            rows,
            None,
            true,
        )?;
        self.prepare(&mut run, 1, 1)?;
        // The gradient without an Adam step: on the fused path `fused_grad` applies none
        // when told it clips (and with clip_norm 0 it leaves no sums of squares either).
        let base = match run.fused() {
            Some(plan) => run.fused_record(plan, rows, true),
            None => StepUniform {
                slices: weight_grad_slices(rows) as u32,
                flags: FLAG_GRAD,
                ..run.record()
            },
        };
        let rec = StepUniform {
            rows: rows as u32,
            l2,
            inv_rows: 1.0 / rows as f32,
            count: arch.param_count() as u32,
            ..base
        };
        self.write_steps(&run, 0, &[rec]);
        let n = run.n_params;
        let readback = self.gpu.readback("gradient readback", ((n + 1) * 4) as u64);
        self.gpu.scoped("loss and gradient", || {
            let groups = &run.bound.groups;
            let mut enc = self.encoder("loss and gradient");
            {
                let mut p = self.pass(&mut enc, "loss and gradient");
                p.step(groups, 0, self.stride());
                let k = &self.kernels;
                match (run.fused(), &groups.fused) {
                    (Some(plan), Some(f)) => {
                        p.dispatch_1d(
                            k.fused(groups.full_covariance),
                            &f.train,
                            plan.tiles(rows) as u32,
                        );
                        p.dispatch_1d(k.fused_grad(), &f.grad, plan.grad_groups() as u32);
                    }
                    _ => {
                        p.forward(k, &run, groups, &groups.gather_train, rows);
                        p.head(k, groups, rows);
                        p.backward(k, &run, groups, rows);
                    }
                }
            }
            enc.copy_buffer_to_buffer(&run.grad, 0, &readback, 0, (n * 4) as u64);
            enc.copy_buffer_to_buffer(&run.bound.stats.0, 0, &readback, (n * 4) as u64, 4);
            self.gpu.queue.submit([enc.finish()]);
        })?;
        let mut out = self.gpu.read_f32(&readback, n + 1)?;
        let sum_ll = out.pop().expect("n + 1 values") as f64;
        let penalty = l2 as f64
            * run
                .layers
                .iter()
                .flat_map(|s| &params[s.weights..s.weights + s.weight_count()])
                .map(|&w| (w as f64) * (w as f64))
                .sum::<f64>();
        Ok(LossGrad {
            nll: -sum_ll / rows as f64,
            penalty,
            grad: out,
        })
    }

    fn adam_step(
        &mut self,
        params: &mut [f32],
        grad: &[f32],
        state: &mut AdamState,
        cfg: &StepConfig,
    ) -> Result<()> {
        state.check_lengths(params, grad)?;
        let n = params.len();
        let g = &self.gpu;
        let bufs = g.scoped("adam buffers", || -> Result<_> {
            Ok([
                g.upload("adam params", params, wgpu::BufferUsages::empty())?,
                g.upload("adam grad", grad, wgpu::BufferUsages::empty())?,
                g.upload("adam m", &state.m, wgpu::BufferUsages::empty())?,
                g.upload("adam v", &state.v, wgpu::BufferUsages::empty())?,
            ])
        })??;
        let c = AdamStepConstants::new(cfg, state.step + 1);
        let rec = StepUniform {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            bias1: c.bias1,
            bias2: c.bias2,
            count: n as u32,
            active: active_mask(&[true]),
            ..Default::default()
        };
        let step_buf = g.uniform("adam step", bytemuck::bytes_of(&rec));
        let readback = g.readback("adam readback", (3 * n * 4) as u64);
        // A single step clips nothing (clip_norm 0): the sum-of-squares binding is a placeholder.
        let sumsq = g.storage("unused gradient sum of squares", 1)?;
        let lrs = g.upload("adam learning rate", &[c.lr], wgpu::BufferUsages::empty())?;
        g.scoped("adam step", || {
            let group = self.kernels.adam.bind(
                g,
                "adam",
                &[&bufs[0], &bufs[1], &bufs[2], &bufs[3], &sumsq, &lrs],
            );
            let step_group = g.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("adam step"),
                layout: &self.kernels.step_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: step_buf.as_entire_binding(),
                }],
            });
            let mut enc = self.encoder("adam step");
            {
                let mut p = self.pass(&mut enc, "adam");
                p.pass.set_bind_group(1, &step_group, &[0]);
                p.dispatch_1d(&self.kernels.adam, &group, div_ceil(n, 64));
            }
            for (i, b) in [&bufs[0], &bufs[2], &bufs[3]].into_iter().enumerate() {
                enc.copy_buffer_to_buffer(b, 0, &readback, (i * n * 4) as u64, (n * 4) as u64);
            }
            g.queue.submit([enc.finish()]);
        })?;
        let out = g.read_f32(&readback, 3 * n)?;
        params.copy_from_slice(&out[..n]);
        state.m.copy_from_slice(&out[n..2 * n]);
        state.v.copy_from_slice(&out[2 * n..]);
        state.step += 1;
        Ok(())
    }
}

impl TrainRun for GpuRun<'_> {
    fn train_epoch(&mut self, order: &[u32], cfg: &StepConfig) -> Result<EpochStats> {
        self.first_batch_rows = cfg.batch_size.min(order.len());
        self.clip = cfg.clip_norm > 0.0;
        self.backend.epoch(&mut self.run, order, cfg)
    }

    fn begin_epoch(&mut self, train_rows: usize, cfg: &StepConfig) -> Result<()> {
        match &self.run.chunks {
            Some((_, rows)) if *rows < cfg.batch_size => Err(Error::config(format!(
                "a batch of {} rows does not fit the GPU's chunk buffers ({rows} rows)",
                cfg.batch_size
            ))),
            _ => {
                self.first_batch_rows = cfg.batch_size.min(train_rows);
                self.clip = cfg.clip_norm > 0.0;
                self.backend
                    .begin(&mut self.run, train_rows, cfg, &[cfg.lr])
            }
        }
    }

    fn train_chunk(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<()> {
        self.backend.stream_rows(&mut self.run, x, y, rows)
    }

    fn end_epoch(&mut self) -> Result<EpochStats> {
        Ok(self.backend.end(&mut self.run)?.remove(0))
    }

    fn save_state(&mut self) -> Result<TrainState> {
        let (b, run) = (self.backend, &self.run);
        let n = run.n_params * run.members;
        let g = &b.gpu;
        let readback = g.readback("state readback", (4 * n * 4) as u64);
        g.scoped("reading the training state", || {
            let mut enc = b.encoder("save state");
            for (i, b) in [&run.params, &run.best, &run.m, &run.v]
                .into_iter()
                .enumerate()
            {
                enc.copy_buffer_to_buffer(b, 0, &readback, (i * n * 4) as u64, (n * 4) as u64);
            }
            g.queue.submit([enc.finish()]);
        })?;
        let all = g.read_f32(&readback, 4 * n)?;
        Ok(TrainState {
            params: all[..n].to_vec(),
            best: all[n..2 * n].to_vec(),
            adam: AdamState {
                m: all[2 * n..3 * n].to_vec(),
                v: all[3 * n..].to_vec(),
                step: run.adam_step,
            },
        })
    }

    fn load_state(&mut self, state: &TrainState) -> Result<()> {
        let (b, run) = (self.backend, &mut self.run);
        let n = run.n_params * run.members;
        if state.params.len() != n || state.best.len() != n {
            return Err(Error::config(
                "checkpoint state does not match the model's parameter count",
            ));
        }
        state.adam.check_lengths(&state.params, &state.best)?;
        let q = &b.gpu.queue;
        q.write_buffer(&run.params, 0, bytemuck::cast_slice(&state.params));
        q.write_buffer(&run.best, 0, bytemuck::cast_slice(&state.best));
        q.write_buffer(&run.m, 0, bytemuck::cast_slice(&state.adam.m));
        q.write_buffer(&run.v, 0, bytemuck::cast_slice(&state.adam.v));
        run.adam_step = state.adam.step;
        Ok(())
    }

    fn snapshot(&mut self) -> Result<()> {
        let (b, run) = (self.backend, &mut self.run);
        let bytes = (run.n_params * run.members * 4) as u64;
        let g = &b.gpu;
        g.scoped("saving the training state", || {
            let mut enc = g
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("snapshot"),
                });
            for (from, to) in [&run.params, &run.m, &run.v].into_iter().zip(&run.saved) {
                enc.copy_buffer_to_buffer(from, 0, to, 0, bytes);
            }
            g.queue.submit([enc.finish()]);
        })?;
        run.saved_step = Some(run.adam_step);
        if let Some(p) = &mut run.core.packed {
            p.saved_steps = Some(p.steps.clone());
        }
        Ok(())
    }

    fn restore(&mut self) -> Result<()> {
        let (b, run) = (self.backend, &mut self.run);
        let step = run
            .saved_step
            .ok_or_else(|| Error::Backend("restore called before snapshot".into()))?;
        let bytes = (run.n_params * run.members * 4) as u64;
        let g = &b.gpu;
        g.scoped("restoring the training state", || {
            let mut enc = g
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("restore"),
                });
            for (from, to) in run.saved.iter().zip([&run.params, &run.m, &run.v]) {
                enc.copy_buffer_to_buffer(from, 0, to, 0, bytes);
            }
            g.queue.submit([enc.finish()]);
        })?;
        run.adam_step = step;
        if let Some(p) = &mut run.core.packed {
            p.steps = p.saved_steps.clone().unwrap_or_else(|| p.steps.clone());
        }
        run.epoch = None;
        Ok(())
    }

    fn keep_best(&mut self) -> Result<()> {
        let (b, run) = (self.backend, &self.run);
        b.gpu.scoped("keeping the best parameters", || {
            let mut enc = b.encoder("keep best");
            enc.copy_buffer_to_buffer(&run.params, 0, &run.best, 0, (run.n_params * 4) as u64);
            b.gpu.queue.submit([enc.finish()]);
        })
    }

    fn best_params(&mut self) -> Result<Vec<f32>> {
        let (b, run) = (self.backend, &self.run);
        b.read_params(&run.best, run.n_params)
    }

    fn current_params(&mut self) -> Result<Vec<f32>> {
        let (b, run) = (self.backend, &self.run);
        b.read_params(&run.params, run.n_params)
    }

    fn profile_step(&mut self, reps: usize) -> Result<Option<Vec<(String, f64)>>> {
        self.profile_kernels(reps).map(Some)
    }

    fn dispatches_per_step(&self) -> Option<f64> {
        self.run.dispatches_per_step
    }
}

/// Ensemble members trained together on the GPU: a run whose buffers hold every member.
struct GpuMembers<'a>(GpuRun<'a>);

impl MembersRun for GpuMembers<'_> {
    fn members(&self) -> usize {
        self.0.run.members
    }

    fn dispatches_per_step(&self) -> Option<f64> {
        self.0.run.dispatches_per_step
    }

    fn train_epoch(
        &mut self,
        orders: &[u32],
        cfg: &StepConfig,
        lrs: &[f32],
        active: &[bool],
    ) -> Result<Vec<EpochStats>> {
        if self.0.run.packed.is_some() {
            return self.train_packed_epoch(orders, cfg, lrs, active);
        }
        let (b, run) = (self.0.backend, &mut self.0.run);
        let rows = run.train.rows;
        if active.len() != run.members {
            return Err(Error::Backend(format!(
                "{} active flags for {} members",
                active.len(),
                run.members
            )));
        }
        run.active = active_mask(active);
        if orders.len() != rows * run.members {
            return Err(Error::Backend(format!(
                "the GPU backend needs a permutation of the {rows} training rows for each of {} members",
                run.members
            )));
        }
        if let Some(&bad) = orders.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::Backend(format!(
                "row index {bad} out of range ({rows} training rows)"
            )));
        }
        self.0.first_batch_rows = cfg.batch_size.min(rows);
        self.0.clip = cfg.clip_norm > 0.0;
        b.begin(run, rows, cfg, lrs)?;
        b.gpu
            .queue
            .write_buffer(&run.train.order, 0, bytemuck::cast_slice(orders));
        b.batches(run, None, rows)?;
        b.end(run)
    }

    fn snapshot(&mut self) -> Result<()> {
        TrainRun::snapshot(&mut self.0)
    }

    fn restore(&mut self) -> Result<()> {
        TrainRun::restore(&mut self.0)
    }

    fn keep_best(&mut self, which: &[bool]) -> Result<()> {
        let (b, run) = (self.0.backend, &self.0.run);
        let bytes = (run.n_params * 4) as u64;
        b.gpu.scoped("keeping the best parameters", || {
            let mut enc = b.encoder("keep best");
            for (m, _) in which.iter().enumerate().filter(|(_, keep)| **keep) {
                let at = m as u64 * bytes;
                enc.copy_buffer_to_buffer(&run.params, at, &run.best, at, bytes);
            }
            b.gpu.queue.submit([enc.finish()]);
        })
    }

    fn best_params(&mut self) -> Result<Vec<Vec<f32>>> {
        let (b, run) = (self.0.backend, &self.0.run);
        let all = b.read_params(&run.best, run.n_params * run.members)?;
        Ok(all.chunks(run.n_params).map(|c| c.to_vec()).collect())
    }

    fn save_state(&mut self) -> Result<Vec<TrainState>> {
        // The whole run's buffers hold every member's: split them.
        let all = TrainRun::save_state(&mut self.0)?;
        let n = self.0.run.n_params;
        let part = |v: &[f32], m: usize| v[m * n..(m + 1) * n].to_vec();
        Ok((0..self.0.run.members)
            .map(|m| TrainState {
                params: part(&all.params, m),
                best: part(&all.best, m),
                adam: AdamState {
                    m: part(&all.adam.m, m),
                    v: part(&all.adam.v, m),
                    step: self
                        .0
                        .run
                        .packed
                        .as_ref()
                        .map_or(all.adam.step, |p| p.steps[m]),
                },
            })
            .collect())
    }

    fn load_state(&mut self, states: &[TrainState]) -> Result<()> {
        let members = self.0.run.members;
        if states.len() != members {
            return Err(Error::config(format!(
                "{} saved states for an ensemble of {members}",
                states.len()
            )));
        }
        let step = states[0].adam.step;
        if self.0.run.packed.is_none() && states.iter().any(|s| s.adam.step != step) {
            return Err(Error::config(
                "the members' saved states are at different Adam steps: they cannot train together",
            ));
        }
        let cat = |f: &dyn Fn(&TrainState) -> &[f32]| -> Vec<f32> {
            states.iter().flat_map(|s| f(s).iter().copied()).collect()
        };
        TrainRun::load_state(
            &mut self.0,
            &TrainState {
                params: cat(&|s| &s.params),
                best: cat(&|s| &s.best),
                adam: AdamState {
                    m: cat(&|s| &s.adam.m),
                    v: cat(&|s| &s.adam.v),
                    step,
                },
            },
        )?;
        if let Some(p) = &mut self.0.run.core.packed {
            // A packed run's members keep their own step counts.
            p.steps = states.iter().map(|s| s.adam.step).collect();
        }
        Ok(())
    }
}

impl GpuMembers<'_> {
    /// [`MembersRun::train_epoch`] of a packed run: `orders` holds each member's permutation
    /// of its own rows (0-based), one member after another.
    fn train_packed_epoch(
        &mut self,
        orders: &[u32],
        cfg: &StepConfig,
        lrs: &[f32],
        active: &[bool],
    ) -> Result<Vec<EpochStats>> {
        let (b, run) = (self.0.backend, &mut self.0.run);
        let p = run.packed.as_ref().expect("a packed run");
        if active.len() != run.members {
            return Err(Error::Backend(format!(
                "{} active flags for {} members",
                active.len(),
                run.members
            )));
        }
        let total: usize = p.rows.iter().sum();
        if orders.len() != total {
            return Err(Error::Backend(format!(
                "a packed run needs each member's permutation of its own rows ({total} entries \
                 in all), not {}",
                orders.len()
            )));
        }
        // Each member's order, moved to its rows in the shared buffers, in its own region.
        let most = p.most_rows();
        let mut order = vec![NO_ROW; most * run.members];
        let mut at = 0;
        for (m, (&n, &first)) in p.rows.iter().zip(&p.first).enumerate() {
            let own = &orders[at..at + n];
            if let Some(&bad) = own.iter().find(|&&i| i as usize >= n) {
                return Err(Error::Backend(format!(
                    "row index {bad} out of range (member {m} has {n} training rows)"
                )));
            }
            for (to, &i) in order[m * most..].iter_mut().zip(own) {
                *to = first as u32 + i;
            }
            at += n;
        }
        run.active = active_mask(active);
        self.0.first_batch_rows = cfg.batch_size.min(most);
        self.0.clip = cfg.clip_norm > 0.0;
        b.begin(run, most, cfg, lrs)?;
        b.gpu
            .queue
            .write_buffer(&run.train.order, 0, bytemuck::cast_slice(&order));
        b.batches(run, None, most)?;
        b.end(run)
    }
}

impl GpuRun<'_> {
    /// Times one training step's kernels on the current run (after at least one epoch, with
    /// the data the last epoch left in the buffers): for each kernel, `reps` steps with only
    /// that kernel's dispatches, then the whole step. Returns (kernel, seconds per step).
    /// The parameters are updated by the Adam and whole-step runs: use it only at the end.
    fn profile_kernels(&self, reps: usize) -> Result<Vec<(String, f64)>> {
        if self.first_batch_rows == 0 {
            return Err(Error::Backend("profile_step needs a trained epoch".into()));
        }
        let (b, run) = (self.backend, &self.run);
        let groups = &run.bound.groups;
        let k = &b.kernels;
        let clip = self.clip;
        let looped = run
            .looped
            .filter(|_| groups.fused.as_ref().is_some_and(|f| f.looped.is_some()))
            .and_then(|steps| {
                k.looped(groups.full_covariance)
                    .map(|kernel| (kernel, steps.max(1)))
            });
        let kernels: Vec<&Kernel> = if let Some((kernel, _)) = looped {
            vec![kernel]
        } else if run.fused().is_some() {
            let mut v = vec![k.fused(groups.full_covariance), k.fused_grad()];
            if clip {
                v.push(&k.adam);
            }
            v
        } else {
            let mut v = vec![
                &k.gather,
                &k.dense_forward,
                k.head(groups.full_covariance),
                &k.reduce_sum,
                &k.dense_backward_weights,
                &k.weight_grad_sum,
                &k.transpose,
                &k.activation_backward,
            ];
            if clip {
                v.push(&k.grad_norm);
            }
            v.push(&k.adam);
            v
        };
        let names: Vec<Option<&'static str>> =
            kernels.iter().map(|k| Some(k.name)).chain([None]).collect();
        // Step record 0 is the epoch's first batch: a full one. A dispatch of the looped step
        // runs `steps` steps: as many dispatches as make at least `reps` steps.
        let rows = self.first_batch_rows;
        let steps = looped.map_or(1, |(_, steps)| steps);
        let reps = reps.div_ceil(steps);
        let mut out = Vec::new();
        for only in names {
            let started = std::time::Instant::now();
            b.gpu.scoped("profiling", || {
                let mut enc = b.encoder("profile");
                {
                    let mut p = b.pass(&mut enc, "profile");
                    p.only = only;
                    for _ in 0..reps {
                        p.step(groups, 0, b.stride());
                        match looped {
                            Some(_) => p.loop_steps(k, groups, None),
                            None => p.train_step(k, run, groups, None, rows, clip),
                        }
                    }
                }
                b.gpu.queue.submit([enc.finish()]);
            })?;
            b.gpu
                .device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| {
                    Error::Backend(format!("waiting for {} failed: {e}", b.gpu.info.name))
                })?;
            out.push((
                only.unwrap_or("whole step").to_string(),
                started.elapsed().as_secs_f64() / (reps * steps) as f64,
            ));
        }
        Ok(out)
    }
}

impl GpuBackend {
    /// One epoch over the resident training rows in `order`: every batch's dispatches,
    /// validation and the finite check, then one readback of the statistics.
    fn epoch(&self, run: &mut Run, order: &[u32], cfg: &StepConfig) -> Result<EpochStats> {
        if order.len() != run.train.rows {
            return Err(Error::Backend(format!(
                "the GPU backend needs a full permutation of the {} training rows",
                run.train.rows
            )));
        }
        if let Some(&bad) = order.iter().find(|&&i| i as usize >= run.train.rows) {
            return Err(Error::Backend(format!(
                "row index {bad} out of range ({} training rows)",
                run.train.rows
            )));
        }
        self.begin(run, order.len(), cfg, &[cfg.lr])?;
        self.gpu
            .queue
            .write_buffer(&run.train.order, 0, bytemuck::cast_slice(order));
        self.batches(run, None, order.len())?;
        Ok(self.end(run)?.remove(0))
    }

    /// Uploads streamed rows into the chunk buffers, alternating between the two so that the
    /// host fills one while the GPU works on the other, and trains on them in whole batches.
    fn stream_rows(&self, run: &mut Run, x: &[f32], y: &[f32], rows: usize) -> Result<()> {
        let (d_in, d_out) = (run.arch.inputs, run.arch.targets);
        if x.len() != rows * d_in || y.len() != rows * d_out {
            return Err(Error::config(format!(
                "streamed buffers do not hold {rows} rows of the model's width"
            )));
        }
        let b = run
            .epoch
            .as_ref()
            .ok_or_else(|| Error::Backend("train_chunk before begin_epoch".into()))?
            .cfg
            .batch_size;
        let cap = run
            .chunks
            .as_ref()
            .ok_or_else(|| Error::Backend("train_chunk needs start_stream".into()))?
            .1;
        let piece = (cap / b).max(1) * b;
        let mut start = 0;
        while start < rows {
            let n = (rows - start).min(piece);
            let c = run.next_chunk;
            run.next_chunk = 1 - c;
            // Double buffering with back-pressure: buffer c is refilled only once the GPU has
            // finished the batches that read it, so at most two chunks are in flight.
            if let Some(busy) = run.chunk_busy[c].take() {
                self.gpu
                    .device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(busy),
                        timeout: None,
                    })
                    .map_err(|e| {
                        Error::Backend(format!("waiting for {} failed: {e}", self.gpu.info.name))
                    })?;
                self.gpu.check()?;
            }
            {
                let bufs = &run.chunks.as_ref().expect("checked").0;
                self.gpu.queue.write_buffer(
                    &bufs[c].x,
                    0,
                    bytemuck::cast_slice(&x[start * d_in..(start + n) * d_in]),
                );
                self.gpu.queue.write_buffer(
                    &bufs[c].y,
                    0,
                    bytemuck::cast_slice(&y[start * d_out..(start + n) * d_out]),
                );
            }
            run.chunk_busy[c] = self.batches(run, Some(c), n)?;
            start += n;
        }
        Ok(())
    }

    /// Starts an epoch of `train_rows` rows: sizes the work, stats and step buffers and writes
    /// the validation and finite-check records (after the batches' records) and each member's
    /// learning rate (`lrs`; `cfg.lr` is not used).
    fn begin(&self, run: &mut Run, train_rows: usize, cfg: &StepConfig, lrs: &[f32]) -> Result<()> {
        if lrs.len() != run.members {
            return Err(Error::Backend(format!(
                "{} learning rates for {} members",
                lrs.len(),
                run.members
            )));
        }
        self.gpu
            .queue
            .write_buffer(&run.lrs, 0, bytemuck::cast_slice(lrs));
        let b = cfg.batch_size;
        if b == 0 {
            return Err(Error::config("batch size must be at least 1"));
        }
        let max_rows = 32 * self.gpu.limits.max_compute_workgroups_per_dimension as usize;
        if b > max_rows {
            return Err(Error::config(format!(
                "--batch-size {b} is larger than {} can dispatch at once ({max_rows} rows)",
                self.gpu.info.name
            )));
        }
        let cap = b.max(run.val.as_ref().map_or(1, |_| EVAL_CHUNK.min(b.max(1024))));
        // The path of this epoch's steps: the fused one where this adapter favours it for a
        // batch of this size (and the model fits a tile).
        let plan = run
            .plan
            .as_ref()
            .filter(|_| run.packed.is_some() || self.fuses_steps_of(&run.arch, b));
        let regrown = run.work.cap < cap
            || plan.is_some() != run.work.fused_wanted
            || (plan.is_some() && run.work.fused_rows < b);
        if regrown {
            // Regrow the work buffers for this batch size and path; the state buffers stay.
            let cap = cap.max(run.work.cap);
            let fused = plan.map(|p| (p, b));
            run.work = Work::new(&self.gpu, &run.arch, cap, run.members, fused)?;
        }
        let batches = train_rows.div_ceil(b);
        let val_rows = match &run.packed {
            Some(p) => p.most_val_rows(),
            None => run.val.as_ref().map_or(0, |v| v.rows),
        };
        // The validation pass goes chunk by chunk, a statistics slot each: on the layered
        // path a chunk is the work buffers' rows; on the fused path it is as many tiles as
        // `rowll` holds tile sums for (the work rows), a `fused_step` dispatch writing each
        // tile's sum there and a `reduce_sum` adding them in order.
        let val_chunk = match run.fused() {
            Some(plan) => run.work.cap * plan.tile_rows,
            None => run.work.cap,
        };
        let val_slots = val_rows.div_ceil(val_chunk);
        let val_records = if run.fused().is_some() {
            2 * val_slots
        } else {
            val_slots
        };
        let (n_stats, mut n_steps) = (batches + val_slots + 1, batches + val_records + 1);
        if run.packed.is_some() {
            // The member table after the records: 4 words a member a training step.
            let words = batches * run.members * 4;
            n_steps += (words * 4).div_ceil(self.stride() as usize);
        }
        if regrown {
            // The bind groups point at the old work buffers.
            let stats = run.bound.stats.1.max(n_stats);
            let steps = run.bound.steps.1.max(n_steps);
            run.bound = self.bind(&run.core, stats, steps)?;
            self.log_path(run, b, cfg.clip_norm > 0.0);
        } else {
            self.prepare(run, n_stats, n_steps)?;
        }
        let mut records = Vec::with_capacity(val_records + 1);
        for c in 0..val_slots {
            let rows = (val_rows - c * val_chunk).min(val_chunk);
            let chunk = StepUniform {
                rows: rows as u32,
                start: (c * val_chunk) as u32,
                slot: (batches + c) as u32,
                inv_rows: 1.0 / rows as f32,
                // A packed run's members read their own validation rows' order.
                order_stride: run.packed.as_ref().map_or(0, |_| val_rows as u32),
                ..run.record()
            };
            match run.fused() {
                Some(plan) => {
                    // Tile sums at rowll[member * cap + tile], then their sum into the slot.
                    records.push(StepUniform {
                        slot: 0,
                        stats_stride: run.work.cap as u32,
                        ..chunk
                    });
                    records.push(StepUniform {
                        rows: plan.tiles(rows) as u32,
                        ..chunk
                    });
                }
                None => records.push(chunk),
            }
        }
        records.push(StepUniform {
            slot: (batches + val_slots) as u32,
            count: run.n_params as u32,
            ..run.record()
        });
        self.write_steps(run, batches, &records);
        // Where the epoch's steps loop, every slot starts at 0, so a batch whose loss sum was
        // never written shows (see `end`: an adapter that drops a workgroup's late steps).
        if self.loops_steps_of(run, b, cfg.clip_norm > 0.0).is_some() {
            let slots = run.bound.stats.1 * run.members;
            self.gpu
                .queue
                .write_buffer(&run.bound.stats.0, 0, &vec![0u8; slots * 4]);
        }
        run.epoch = Some(GpuEpoch {
            cfg: *cfg,
            train_rows,
            batches,
            val_records,
            val_slots,
            val_chunk,
            done_rows: 0,
        });
        Ok(())
    }

    /// Encodes and submits the next batches of the epoch: `rows` rows read through the row
    /// order of the resident training data (`chunk` None, continuing where the epoch is) or
    /// of streamed chunk buffer `chunk` (from its row 0). No readback.
    fn batches(
        &self,
        run: &mut Run,
        chunk: Option<usize>,
        rows: usize,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        let ep = run
            .epoch
            .as_ref()
            .ok_or_else(|| Error::Backend("batches before begin_epoch".into()))?;
        let (b, cfg) = (ep.cfg.batch_size, ep.cfg);
        if ep.done_rows % b != 0 || ep.done_rows + rows > ep.train_rows {
            return Err(Error::Backend(format!(
                "streamed chunks must hold whole batches of {b} rows and add up to the epoch's {} rows",
                ep.train_rows
            )));
        }
        let first = ep.done_rows / b;
        let count = rows.div_ceil(b);
        let origin = if chunk.is_some() { 0 } else { ep.done_rows };
        let records: Vec<StepUniform> = (0..count)
            .map(|i| {
                let n = (rows - i * b).min(b);
                let c = AdamStepConstants::new(&cfg, run.adam_step + (first + i) as u64 + 1);
                let base = match run.fused() {
                    Some(plan) => run.fused_record(plan, n, cfg.clip_norm > 0.0),
                    None => StepUniform {
                        flags: FLAG_GRAD,
                        slices: weight_grad_slices(n) as u32,
                        ..run.record()
                    },
                };
                StepUniform {
                    rows: n as u32,
                    start: (origin + i * b) as u32,
                    slot: (first + i) as u32,
                    lr: c.lr,
                    beta1: c.beta1,
                    beta2: c.beta2,
                    eps: c.eps,
                    bias1: c.bias1,
                    bias2: c.bias2,
                    l2: cfg.l2,
                    inv_rows: 1.0 / n as f32,
                    count: run.n_params as u32,
                    clip_norm: cfg.clip_norm,
                    // Resident rows: each member reads its own permutation.
                    order_stride: if chunk.is_some() {
                        0
                    } else {
                        ep.train_rows as u32
                    },
                    ..base
                }
            })
            .collect();
        // The looped step: `per` steps a dispatch, the first record of each dispatch saying
        // how many.
        let looped = self.loops_steps_of(run, b, cfg.clip_norm > 0.0);
        let mut records = records;
        if let Some(per) = looped {
            for i in (0..count).step_by(per) {
                records[i].steps = per.min(count - i) as u32;
            }
        }
        if let Some(packed) = &run.packed {
            if looped.is_none() {
                return Err(Error::Backend(format!(
                    "a packed run takes the looped step, which batches of {b} rows of this \
                     model cannot take on {} (train the groups one after another)",
                    self.gpu.info.name
                )));
            }
            let table = ep.batches + ep.val_records + 1;
            let word = table * self.stride() as usize / 4;
            let words = self.member_table(run, packed, &cfg, first, count);
            for r in &mut records {
                r.member_table = word as u32;
                r.table_members = run.members as u32;
            }
            self.gpu.queue.write_buffer(
                &run.bound.steps.0,
                ((word + first * run.members * 4) * 4) as u64,
                bytemuck::cast_slice(&words),
            );
        }
        self.write_steps(run, first, &records);
        let stride = self.stride();
        let k = &self.kernels;
        let mut dispatches = 0;
        let last = self.gpu.scoped("training batches", || {
            let mut last = None;
            let groups = &run.bound.groups;
            for piece in (0..count).collect::<Vec<_>>().chunks(BATCHES_PER_SUBMIT) {
                let mut enc = self.encoder("training batches");
                {
                    let mut p = self.pass(&mut enc, "training batches");
                    p.members = run.members as u32;
                    for &i in piece {
                        let n = records[i].rows as usize;
                        match looped {
                            Some(_) if records[i].steps == 0 => {}
                            Some(_) => {
                                p.step(groups, first + i, stride);
                                p.loop_steps(k, groups, chunk);
                            }
                            None => {
                                p.step(groups, first + i, stride);
                                p.train_step(k, run, groups, chunk, n, cfg.clip_norm > 0.0);
                            }
                        }
                    }
                    dispatches += p.dispatches;
                }
                last = Some(self.gpu.queue.submit([enc.finish()]));
            }
            last
        })?;
        if first == 0 {
            run.looped = looped.map(|per| per.min(count));
        }
        run.dispatches_per_step = Some(dispatches as f64 / count.max(1) as f64);
        run.epoch.as_mut().expect("checked").done_rows += rows;
        Ok(last)
    }

    /// A packed run's member table for training steps `first..first + count` of the epoch:
    /// for each step and member, the member's rows in it (0 where its rows have run out or it
    /// has stopped), 1 / rows, and its Adam bias corrections at its own step count.
    fn member_table(
        &self,
        run: &Run,
        packed: &Packed,
        cfg: &StepConfig,
        first: usize,
        count: usize,
    ) -> Vec<u32> {
        let b = cfg.batch_size;
        let mut words = Vec::with_capacity(count * run.members * 4);
        for s in first..first + count {
            for m in 0..run.members {
                let active = run.active[m / 32] & (1 << (m % 32)) != 0;
                let rows = packed.rows[m].saturating_sub(s * b).min(b);
                if !active || rows == 0 {
                    words.extend([0; 4]);
                    continue;
                }
                let c = AdamStepConstants::new(cfg, packed.steps[m] + s as u64 + 1);
                words.extend([
                    rows as u32,
                    (1.0 / rows as f32).to_bits(),
                    c.bias1.to_bits(),
                    c.bias2.to_bits(),
                ]);
            }
        }
        words
    }

    /// Ends the epoch: validation, the finite check, one readback of the statistics; each
    /// member's.
    fn end(&self, run: &mut Run) -> Result<Vec<EpochStats>> {
        let ep = run
            .epoch
            .take()
            .ok_or_else(|| Error::Backend("end_epoch before begin_epoch".into()))?;
        if ep.done_rows != ep.train_rows {
            return Err(Error::Backend(format!(
                "the epoch ended after {} of its {} rows",
                ep.done_rows, ep.train_rows
            )));
        }
        let (batches, val_records, val_slots) = (ep.batches, ep.val_records, ep.val_slots);
        let n_stats = batches + val_slots + 1;
        let stride = self.stride();
        // Member m's statistics start at slot m * stats_stride.
        let stats_stride = run.bound.stats.1;
        let read = (run.members - 1) * stats_stride + n_stats;
        let readback = self
            .gpu
            .readback("epoch statistics readback", (read * 4) as u64);
        let k = &self.kernels;
        let all_val_rows = match &run.packed {
            Some(p) => p.most_val_rows(),
            None => run.val.as_ref().map_or(0, |v| v.rows),
        };
        let val_rows: Vec<usize> = (0..val_slots)
            .map(|c| (all_val_rows - c * ep.val_chunk).min(ep.val_chunk))
            .collect();
        self.gpu.scoped("validation", || {
            let groups = &run.bound.groups;
            let mut enc = self.encoder("validation and statistics");
            {
                let mut p = self.pass(&mut enc, "validation");
                p.members = run.members as u32;
                match (run.fused(), &groups.fused) {
                    (Some(plan), Some(f)) => {
                        if let Some(gv) = &f.val {
                            for (c, &rows) in val_rows.iter().enumerate() {
                                p.step(groups, batches + 2 * c, stride);
                                p.dispatch_1d(
                                    k.fused(groups.full_covariance),
                                    gv,
                                    plan.tiles(rows) as u32,
                                );
                                p.step(groups, batches + 2 * c + 1, stride);
                                p.dispatch(&k.reduce_sum, &groups.reduce, 1, 1);
                            }
                        }
                    }
                    _ => {
                        if let Some(gv) = &groups.gather_val {
                            for (c, &rows) in val_rows.iter().enumerate() {
                                p.step(groups, batches + c, stride);
                                p.forward(k, run, groups, gv, rows);
                                p.head(k, groups, rows);
                            }
                        }
                    }
                }
                p.step(groups, batches + val_records, stride);
                p.dispatch(&k.finite_check, &groups.finite, 1, 1);
            }
            enc.copy_buffer_to_buffer(&run.bound.stats.0, 0, &readback, 0, (read * 4) as u64);
            self.gpu.queue.submit([enc.finish()]);
        })?;
        let all = self.gpu.read_f32(&readback, read)?;
        // Each member's steps this epoch, training rows and validation rows: a packed run's
        // own, else the run's.
        let b = ep.cfg.batch_size;
        let own = |m: usize| -> (usize, usize, usize) {
            match &run.packed {
                Some(p) => (p.rows[m].div_ceil(b), p.rows[m], p.val_rows[m]),
                None => (
                    batches,
                    ep.train_rows,
                    run.val.as_ref().map_or(0, |v| v.rows),
                ),
            }
        };
        let active = run.active;
        let is_active = |m: usize| active[m / 32] & (1 << (m % 32)) != 0;
        if run.looped.is_some() {
            // A batch's loss sum is never exactly 0 once written: one that is was lost.
            for m in (0..run.members).filter(|&m| is_active(m)) {
                let batches = own(m).0;
                let lost = all[m * stats_stride..m * stats_stride + batches]
                    .iter()
                    .filter(|&&v| v == 0.0)
                    .count();
                if lost > 0 {
                    return Err(Error::Backend(format!(
                        "{}: the looped training step lost {lost} of an epoch's {batches} steps \
                         (a dispatch ended early); MDN_GPU_PATH=fused trains without it",
                        self.gpu.info.name
                    )));
                }
            }
        }
        let stats: Vec<EpochStats> = (0..run.members)
            .map(|m| {
                let (own_batches, own_rows, own_val_rows) = own(m);
                let stats = &all[m * stats_stride..m * stats_stride + n_stats];
                let train_sum: f64 = stats[..own_batches].iter().map(|&v| v as f64).sum();
                let val_nll = run.val.as_ref().map(|_| {
                    -stats[batches..batches + val_slots]
                        .iter()
                        .map(|&s| s as f64)
                        .sum::<f64>()
                        / own_val_rows as f64
                });
                let finite = stats[..own_batches].iter().all(|v| v.is_finite())
                    && stats[batches..batches + val_slots]
                        .iter()
                        .all(|v| v.is_finite())
                    && stats[batches + val_slots] == 0.0;
                EpochStats {
                    train_nll: -train_sum / own_rows.max(1) as f64,
                    val_nll,
                    finite,
                    steps: own_batches as u64,
                    first_bad_batch: stats[..own_batches]
                        .iter()
                        .position(|v| !v.is_finite())
                        .map(|i| i as u64),
                }
            })
            .collect();
        run.adam_step += batches as u64;
        if let Some(p) = &mut run.core.packed {
            for m in (0..p.steps.len()).filter(|&m| is_active(m)) {
                p.steps[m] += p.rows[m].div_ceil(b) as u64;
            }
        }
        Ok(stats)
    }
}

impl GpuBackend {
    /// Times the plain matmul kernel (`shaders/matmul_bench.wgsl`) on `m x k` times `k x n`
    /// (`n` a multiple of 4), `reps` dispatches after one warm-up, and returns GFLOP/s
    /// (2 m n k flops per product). The benchmark's ceiling for this device.
    pub fn matmul_gflops(&self, m: usize, k: usize, n: usize, reps: usize) -> Result<f64> {
        assert!(
            n.is_multiple_of(4),
            "matmul benchmark needs n divisible by 4"
        );
        let g = &self.gpu;
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32) * 0.01).collect();
        let dims: Words = [m as u32, n as u32, k as u32, 0, 0, 0, 0, 0];
        let (ab, bb, cb) = (
            g.upload("bench a", &a, wgpu::BufferUsages::empty())?,
            g.upload("bench b", &b, wgpu::BufferUsages::empty())?,
            g.storage("bench c", m * n)?,
        );
        let du = g.uniform("bench dims", bytemuck::bytes_of(&dims));
        let step = g.uniform("bench step", bytemuck::bytes_of(&StepUniform::default()));
        let group = self
            .kernels
            .matmul_bench
            .bind(g, "matmul bench", &[&du, &ab, &bb, &cb]);
        let step_group = g.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("bench step"),
            layout: &self.kernels.step_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: step.as_entire_binding(),
            }],
        });
        let readback = g.readback("bench readback", 4);
        let run = |reps: usize| -> Result<f64> {
            let started = std::time::Instant::now();
            g.scoped("matmul benchmark", || {
                let mut enc = self.encoder("matmul bench");
                {
                    let mut p = self.pass(&mut enc, "matmul bench");
                    p.pass.set_bind_group(1, &step_group, &[0]);
                    for _ in 0..reps {
                        p.dispatch(
                            &self.kernels.matmul_bench,
                            &group,
                            div_ceil(n / 4, 8),
                            div_ceil(m.div_ceil(4), 8),
                        );
                    }
                }
                enc.copy_buffer_to_buffer(&cb, 0, &readback, 0, 4);
                g.queue.submit([enc.finish()]);
            })?;
            g.read_f32(&readback, 1)?;
            Ok(started.elapsed().as_secs_f64())
        };
        run(1)?;
        let seconds = run(reps)?;
        Ok(2.0 * (m * n * k * reps) as f64 / seconds / 1e9)
    }
}
