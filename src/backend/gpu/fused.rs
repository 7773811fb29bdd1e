//! The fused training step's plan: whether a model runs on the fused path, how many rows a
//! workgroup's tile holds, where each block of a tile lives in workgroup memory, and the
//! descriptor words `shaders/fused_step.wgsl` and `shaders/fused_grad.wgsl` read.
//!
//! A fused step is two dispatches (three with gradient-norm clipping): `fused_step` takes each
//! tile of R rows through gather, forward, head and backward in one workgroup and writes the
//! tile's partial gradient; `fused_grad` sums the tiles in order and applies Adam (or, when
//! clipping, leaves per-workgroup sums of squares for `adam`). The layered kernels (a dispatch
//! per layer and pass) remain the path for models whose tile would not fit: a row's
//! activations wider than workgroup memory holds for [`MIN_TILE_ROWS`] rows, or per-tile
//! partial gradients larger than [`PARTIAL_BUDGET_BYTES`] for a batch.
//!
//! R depends on the adapter (its workgroup memory) and the model, never on the batch, so the
//! same model on the same device always sums in the same order: same seed, same bits.

use crate::layout::{Activation, Arch};

/// Words of the descriptor header (see `shaders/fused_step.wgsl`), then per layer.
const HEADER_WORDS: usize = 16;
const LAYER_WORDS: usize = 8;

/// Most rows in a tile (`MDN_GPU_TILE_ROWS` may ask for fewer). More rows per tile means
/// fewer partial gradients to write and sum, fewer means more workgroups for small batches.
pub const MAX_TILE_ROWS: usize = 64;

/// Fewest rows in a tile: below this the model takes the layered path.
pub const MIN_TILE_ROWS: usize = 4;

/// Most workgroup memory the fused kernel declares (48 KiB: NVIDIA's static limit through
/// Vulkan; adapters offering less get less).
pub const MAX_TILE_BYTES: u32 = 48 * 1024;

/// The most bytes of partial gradients (all tiles of a batch, all members) the fused path
/// takes before a model falls back to the layered kernels (which then need far less).
pub const PARTIAL_BUDGET_BYTES: usize = 256 << 20;

/// Invocations per workgroup of `fused_grad` (its `@workgroup_size`).
pub const GRAD_WORKGROUP: usize = 256;

/// How the fused step is laid out on one adapter: workgroup size, rows per tile at most, and
/// the workgroup memory it declares. Fixed when the backend opens the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tiling {
    /// Invocations per workgroup of `fused_step` (its WGSL `WG`).
    pub workgroup: usize,
    /// Rows per tile at most.
    pub max_rows: usize,
    /// Floats of workgroup memory `fused_step` declares (`TILE_FLOATS`).
    pub floats: usize,
    /// The most dense-layer flops a training step may have to take the fused path (on a CPU
    /// adapter); `None`: any step. See [`CPU_FUSED_MAX_STEP_FLOPS`].
    pub fused_max_step_flops: Option<f64>,
    /// The most workgroup barriers one dispatch of the looped step may pass (on a CPU
    /// adapter); `None`: no bound. See [`CPU_LOOP_MAX_BARRIERS`].
    pub loop_max_barriers: Option<usize>,
    /// By default batches of at most this many tiles take the looped step
    /// ([`GPU_LOOP_MAX_TILES`] on a GPU; 0 on a CPU adapter, where it is no faster: lavapipe
    /// spends a one-tile step's time in the arithmetic, not in its two dispatches).
    pub loop_max_tiles: usize,
}

/// On a CPU adapter a dispatch of the looped step passes at most this many barriers, as
/// `FusedPlan::loop_barriers_per_step` counts them. lavapipe (Mesa 22.3.6) silently stops a
/// workgroup after a dispatch has gone through some 2,000 of its barriers: the later steps
/// never ran (their loss sums stayed 0, their updates were lost). Measured: one-row tiles of
/// a 2- and a 3-layer network stopped after 250 and 200 tiles, one tile a step of the
/// shipped example's network after 100-110 steps; all three fit a limit of 2,048 with a
/// step's own part worth about 12 barriers, which `loop_barriers_per_step` counts as 16.
/// Half of 2,048 leaves a margin.
pub const CPU_LOOP_MAX_BARRIERS: usize = 1024;

/// What a step of the looped step costs in `CPU_LOOP_MAX_BARRIERS`'s count beyond its tiles'
/// barriers (see there).
const LOOP_STEP_BARRIERS: usize = 16;

/// By default (`GpuPath::Auto`) a GPU takes the looped step for batches of at most this
/// many tiles: one, where the fused step would be one workgroup and a gradient dispatch a
/// step.
pub const GPU_LOOP_MAX_TILES: usize = 1;

/// On a CPU adapter (lavapipe) the fused step pays off only for small steps: it saves the
/// layered path's 13-20 dispatches of about 0.03-0.05 ms each, but lavapipe runs its
/// arithmetic 2-3x slower than the layered kernels' (measured on config b: a fused step of
/// 90-97 ms against 39 ms; config a, 1.5 MFLOP a step, trains 1.1-1.7x faster fused, config
/// b256, 9.8 MFLOP, 1.1-1.3x slower). Steps above this many dense-layer flops take the layered
/// path there. On a GPU every step that fits a tile is fused.
pub const CPU_FUSED_MAX_STEP_FLOPS: f64 = 4e6;

impl Tiling {
    /// The tiling for an adapter of type `device_type` with these limits; `workgroup` and
    /// `max_rows` override the defaults (64 invocations and 64 rows on a CPU adapter such
    /// as lavapipe, where a workgroup is a loop over SIMD lanes and per-tile costs dominate;
    /// 256 invocations and 32 rows on a GPU, so that a batch of 256 spreads over 8
    /// workgroups and one of 4096 over 128, with every warp busy). The workgroup is cut to
    /// what the adapter allows.
    pub fn for_adapter(
        device_type: wgpu::DeviceType,
        limits: &wgpu::Limits,
        workgroup: Option<usize>,
        max_rows: Option<usize>,
    ) -> Tiling {
        let cpu = device_type == wgpu::DeviceType::Cpu;
        let allowed = limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x) as usize;
        let workgroup = workgroup.unwrap_or(if cpu { 64 } else { 256 });
        Tiling {
            workgroup: workgroup.clamp(1, allowed.max(1)),
            max_rows: max_rows
                .unwrap_or(if cpu { 64 } else { 32 })
                .clamp(1, MAX_TILE_ROWS),
            floats: (limits
                .max_compute_workgroup_storage_size
                .min(MAX_TILE_BYTES)
                / 4) as usize,
            fused_max_step_flops: cpu.then_some(CPU_FUSED_MAX_STEP_FLOPS),
            loop_max_barriers: cpu.then_some(CPU_LOOP_MAX_BARRIERS),
            loop_max_tiles: if cpu { 0 } else { GPU_LOOP_MAX_TILES },
        }
    }
}

/// How a model runs on the fused path.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedPlan {
    /// Rows per tile (R).
    pub tile_rows: usize,
    /// Parameters of one network.
    pub params: usize,
    /// The descriptor words (`desc` in the shaders).
    pub desc: Vec<u32>,
}

fn act_code(a: Activation) -> u32 {
    match a {
        Activation::Relu => 1,
        Activation::Tanh => 2,
    }
}

impl FusedPlan {
    /// The plan for `arch` on an adapter's `tiling`: as many rows a tile as fit its
    /// workgroup memory, up to its `max_rows`; `None` when not even [`MIN_TILE_ROWS`] rows
    /// (or `max_rows`, if fewer) fit, and the layered path trains the model.
    pub fn new(arch: &Arch, tiling: &Tiling) -> Option<FusedPlan> {
        let tile_floats = tiling.floats;
        let layers = arch.layers();
        let (d_in, d_out, p) = (arch.inputs, arch.targets, arch.head_width());
        // inputs | every layer's outputs | head gradient | targets | row log-likelihood
        let per_row = d_in + layers.iter().map(|l| l.outputs).sum::<usize>() + p + d_out + 1;
        let max_rows = tiling.max_rows.clamp(1, MAX_TILE_ROWS);
        let rows = (tile_floats / per_row).min(max_rows);
        if rows < MIN_TILE_ROWS.min(max_rows) {
            return None;
        }
        let mut desc = vec![0u32; HEADER_WORDS + LAYER_WORDS * layers.len()];
        // Block offsets, in floats, of a tile of `rows` rows.
        let mut at = rows * d_in;
        for (l, s) in layers.iter().enumerate() {
            let input = if l == 0 { 0 } else { at - rows * s.inputs };
            let words = [
                s.inputs,
                s.outputs,
                s.weights,
                s.bias,
                if s.activated {
                    act_code(arch.activation) as usize
                } else {
                    0
                },
                if l > 0 {
                    act_code(arch.activation) as usize
                } else {
                    0
                },
                input,
                at,
            ];
            let w = HEADER_WORDS + LAYER_WORDS * l;
            for (i, v) in words.into_iter().enumerate() {
                desc[w + i] = v as u32;
            }
            at += rows * s.outputs;
        }
        let head_grad = at;
        let targets = head_grad + rows * p;
        let ll = targets + rows * d_out;
        debug_assert!(ll + rows <= tile_floats);
        let header = [
            layers.len() as u32,
            d_in as u32,
            d_out as u32,
            arch.components as u32,
            p as u32,
            arch.sigma_floor.to_bits(),
            rows as u32,
            targets as u32,
            head_grad as u32,
            ll as u32,
            arch.param_count() as u32,
            u32::from(!arch.family.is_gaussian()),
        ];
        desc[..header.len()].copy_from_slice(&header);
        Some(FusedPlan {
            tile_rows: rows,
            params: arch.param_count(),
            desc,
        })
    }

    /// Workgroup barriers one step of `rows` rows passes in `shaders/fused_loop.wgsl`:
    /// `tile_pass`'s 3 L + 1 a tile (L dense layers, the head's included: the gather, each
    /// layer forward, the head, and two a layer back but one for the first), what a step
    /// itself costs on lavapipe (two storage barriers, counted as [`LOOP_STEP_BARRIERS`]),
    /// and with clipping the tree over `workgroup` invocations and two more.
    pub fn loop_barriers_per_step(&self, rows: usize, clip: bool, workgroup: usize) -> usize {
        let layers = self.desc[0] as usize;
        let tree = if clip {
            workgroup.next_power_of_two().trailing_zeros() as usize + 3
        } else {
            0
        };
        self.tiles(rows) * (3 * layers + 1) + LOOP_STEP_BARRIERS + tree
    }

    /// Tiles of a batch of `rows` rows.
    pub fn tiles(&self, rows: usize) -> usize {
        rows.div_ceil(self.tile_rows).max(1)
    }

    /// Floats per member of a batch of up to `rows` rows' partial gradients: each tile's
    /// gradient and log-likelihood sum.
    pub fn partial_stride(&self, rows: usize) -> usize {
        self.tiles(rows) * (self.params + 1)
    }

    /// Workgroups of `fused_grad` per member (one invocation per parameter and one for the
    /// loss): also the number of partial sums of squares it leaves when clipping.
    pub fn grad_groups(&self) -> usize {
        (self.params + 1).div_ceil(GRAD_WORKGROUP)
    }

    /// Floats of the whole partial buffer for `members` networks and batches of up to `rows`
    /// rows: every member's tiles, then every member's sums of squares.
    pub fn partial_len(&self, rows: usize, members: usize) -> usize {
        members * (self.partial_stride(rows) + self.grad_groups())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Covariance;

    #[test]
    fn tile_rows_follow_workgroup_memory_and_wide_models_fall_back() {
        // Config b: 16 inputs, 64, 64, K=5, D=2 (head 25): 16+64+64+25+25+2+1 = 197 floats
        // a row.
        let tiling = |floats, max_rows| Tiling {
            workgroup: 256,
            max_rows,
            floats,
            fused_max_step_flops: None,
            loop_max_barriers: None,
            loop_max_tiles: 1,
        };
        let b = Arch::new(16, vec![64, 64], Activation::Relu, 5, 2).unwrap();
        assert_eq!(
            FusedPlan::new(&b, &tiling(12288, 32)).unwrap().tile_rows,
            32
        );
        assert_eq!(
            FusedPlan::new(&b, &tiling(12288, 64)).unwrap().tile_rows,
            62
        );
        assert_eq!(FusedPlan::new(&b, &tiling(4096, 32)).unwrap().tile_rows, 20);
        assert!(
            FusedPlan::new(&b, &tiling(700, 32)).is_none(),
            "3 rows: layered"
        );
        assert_eq!(FusedPlan::new(&b, &tiling(700, 3)).unwrap().tile_rows, 3);
        let wide = Arch::new(4, vec![4096], Activation::Relu, 3, 1).unwrap();
        assert!(FusedPlan::new(&wide, &tiling(12288, 32)).is_none());
        // Full covariance widens the head: D=3 adds 3 Cholesky entries a component.
        let c = Arch::new(1, vec![64], Activation::Tanh, 3, 3)
            .unwrap()
            .with_covariance(Covariance::Full)
            .unwrap();
        let plan = FusedPlan::new(&c, &tiling(12288, 8)).unwrap();
        assert_eq!(plan.tile_rows, 8);
        assert_eq!(plan.desc[4] as usize, c.head_width());
    }

    #[test]
    fn tiling_defaults_by_adapter_type_and_limits() {
        let limits = wgpu::Limits::default(); // 16 KiB of workgroup memory, 256 invocations
        let gpu = Tiling::for_adapter(wgpu::DeviceType::DiscreteGpu, &limits, None, None);
        assert_eq!((gpu.workgroup, gpu.max_rows, gpu.floats), (256, 32, 4096));
        assert_eq!(gpu.fused_max_step_flops, None);
        let cpu = Tiling::for_adapter(wgpu::DeviceType::Cpu, &limits, None, None);
        assert_eq!((cpu.workgroup, cpu.max_rows), (64, 64));
        assert_eq!(cpu.fused_max_step_flops, Some(CPU_FUSED_MAX_STEP_FLOPS));
        let big = wgpu::Limits {
            max_compute_workgroup_storage_size: 64 * 1024,
            ..limits.clone()
        };
        let asked = Tiling::for_adapter(wgpu::DeviceType::Other, &big, Some(1024), Some(500));
        assert_eq!((asked.workgroup, asked.max_rows), (256, MAX_TILE_ROWS));
        assert_eq!(asked.floats, 12288, "at most 48 KiB declared");
    }

    #[test]
    fn tile_blocks_do_not_overlap() {
        let a = Arch::new(3, vec![7, 5], Activation::Tanh, 2, 2).unwrap();
        let plan = FusedPlan::new(
            &a,
            &Tiling {
                workgroup: 64,
                max_rows: 64,
                floats: 4096,
                fused_max_step_flops: None,
                loop_max_barriers: None,
                loop_max_tiles: 1,
            },
        )
        .unwrap();
        let r = plan.tile_rows as u32;
        let d = &plan.desc;
        // layer l's input block is the block before its output block
        let layer = |l: usize, w: usize| d[16 + 8 * l + w];
        assert_eq!(layer(0, 6), 0);
        assert_eq!(layer(0, 7), 3 * r);
        assert_eq!(layer(1, 6), layer(0, 7));
        assert_eq!(layer(2, 6), layer(1, 7));
        assert_eq!(layer(2, 7), layer(1, 7) + 5 * r);
        let head = a.head_width() as u32;
        assert_eq!(
            d[8],
            layer(2, 7) + head * r,
            "head gradient after the head's outputs"
        );
        assert_eq!(d[7], d[8] + head * r, "targets after the head gradient");
        assert_eq!(d[9], d[7] + 2 * r, "log-likelihoods after the targets");
        assert!((d[9] + r) as usize <= 4096);
        // activations: hidden layers' outputs are activated, the head's is not
        assert_eq!((layer(0, 4), layer(0, 5)), (2, 0));
        assert_eq!((layer(2, 4), layer(2, 5)), (0, 2));
    }
}
