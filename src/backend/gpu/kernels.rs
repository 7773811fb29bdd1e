//! The compute pipelines, one per WGSL file in `shaders/`, created once per device and reused
//! for every model shape (layer sizes and offsets are uniforms, not constants).
//!
//! Every kernel has two bind groups: group 0 holds its own buffers (listed here as `Slot`s,
//! in binding order), group 1 the per-dispatch `Step` record (a uniform with a dynamic
//! offset, shared by all kernels). `shaders/common.wgsl` is prepended to every kernel;
//! `shaders/mixture_head_common.wgsl` (the head layout and row arithmetic) and one of
//! `mixture_head.wgsl` / `mixture_head_full.wgsl` (the components) to the two head kernels
//! (`mixture_head_kernel.wgsl`), and with `shaders/fused_tile.wgsl` to the two fused steps
//! (`fused_step.wgsl`) and the two looped steps (`fused_loop.wgsl`), whose workgroup memory
//! size (`TILE_FLOATS`) is the adapter's, up to 48 KiB.

use std::borrow::Cow;

use super::context::Gpu;
use super::fused::Tiling;
use crate::error::Result;

/// What a group-0 binding holds.
#[derive(Clone, Copy)]
enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// One compute pipeline and its group-0 layout.
pub struct Kernel {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    /// A bind group for this kernel's group 0 from buffers in binding order.
    pub fn bind(&self, gpu: &Gpu, label: &str, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// Every kernel, plus the layout of the shared `Step` group.
pub struct Kernels {
    pub step_layout: wgpu::BindGroupLayout,
    pub gather: Kernel,
    pub dense_forward: Kernel,
    pub mixture_head: Kernel,
    pub mixture_head_full: Kernel,
    pub reduce_sum: Kernel,
    pub transpose: Kernel,
    pub activation_backward: Kernel,
    pub dense_backward_weights: Kernel,
    pub weight_grad_sum: Kernel,
    pub adam: Kernel,
    pub grad_norm: Kernel,
    pub finite_check: Kernel,
    pub matmul_bench: Kernel,
    /// The fused training step's kernels, where the adapter can run them (see
    /// `FusedKernels::new`); without them every model trains on the layered kernels.
    pub fused: Option<FusedKernels>,
    /// The fused step's workgroup size and memory, and rows per tile at most.
    pub tiling: Tiling,
}

/// The fused training step (diagonal and full covariance), its gradient sum, and the looped
/// step (diagonal and full), where the adapter can run it.
pub struct FusedKernels {
    pub step: Kernel,
    pub step_full: Kernel,
    pub grad: Kernel,
    /// `fused_loop` (diagonal, full covariance): `None` where the adapter has fewer than
    /// [`LOOP_STORAGE_BUFFERS`] storage buffers a stage or refuses the kernel.
    pub looped: Option<[Kernel; 2]>,
}

/// Storage buffers `fused_loop` binds (the most of any kernel).
pub const LOOP_STORAGE_BUFFERS: u32 = 11;

/// Bytes between step records in the step-record buffer: a record, rounded up to the
/// adapter's alignment of dynamic uniform offsets.
pub fn step_stride(limits: &wgpu::Limits) -> u64 {
    STEP_BYTES.next_multiple_of((limits.min_uniform_buffer_offset_alignment as u64).max(1))
}

impl FusedKernels {
    /// The fused step's pipelines, with the adapter's tiling prepended (`TILE_FLOATS`, `WG`).
    /// `None`, with a warning in the log, where the adapter lacks what they need (8 storage
    /// buffers a stage, the workgroup size) or refuses them: the layered kernels then train
    /// every model, as they did before the fused step existed.
    fn new(
        gpu: &Gpu,
        step_layout: &wgpu::BindGroupLayout,
        tiling: &Tiling,
        with_loop: bool,
    ) -> Option<FusedKernels> {
        let l = &gpu.limits;
        if l.max_storage_buffers_per_shader_stage < 8
            || (l.max_compute_invocations_per_workgroup as usize) < 256
            || tiling.floats == 0
        {
            log::warn!(
                "{}: too few storage buffers or invocations for the fused training step; using the layered kernels",
                gpu.info.name
            );
            return None;
        }
        let tile = format!(
            "const TILE_FLOATS: u32 = {}u;\nconst WG: u32 = {}u;",
            tiling.floats, tiling.workgroup
        );
        use Slot::*;
        // fused_step writes every value of workgroup memory it reads (rows and columns past
        // a tile's edge are clamped onto written ones), so it skips zero-initialising 48 KiB
        // a workgroup.
        let step = |name, head: &str| {
            make(
                gpu,
                step_layout,
                name,
                &format!("{tile}\n{HEAD_COMMON}\n{head}\n{FUSED_TILE}\n{FUSED_STEP}"),
                FUSED_STEP_SLOTS,
                false,
            )
        };
        let looped = |name, head: &str| {
            make(
                gpu,
                step_layout,
                name,
                &format!(
                    "{tile}\nconst RECORD_WORDS: u32 = {}u;\n{HEAD_COMMON}\n{head}\n{FUSED_TILE}\n{FUSED_LOOP}",
                    step_stride(l) / 4
                ),
                FUSED_LOOP_SLOTS,
                false,
            )
        };
        let made = gpu.scoped("creating the fused step's pipelines", || FusedKernels {
            step: step("fused_step", HEAD_DIAGONAL),
            step_full: step("fused_step_full", HEAD_FULL),
            looped: None,
            grad: make(
                gpu,
                step_layout,
                "fused_grad",
                include_str!("../../../shaders/fused_grad.wgsl"),
                &[
                    Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite, ReadWrite, Read, ReadWrite,
                ],
                true,
            ),
        });
        match made {
            Ok(mut k) => {
                // The looped step needs more storage buffers than the rest, and workgroup
                // memory for its invocations' sums of squares.
                if !with_loop {
                    // Not asked for.
                } else if l.max_storage_buffers_per_shader_stage < LOOP_STORAGE_BUFFERS
                    || tiling.floats < tiling.workgroup
                {
                    log::info!(
                        "{}: too few storage buffers ({} of {LOOP_STORAGE_BUFFERS}) for the looped training step",
                        gpu.info.name,
                        l.max_storage_buffers_per_shader_stage
                    );
                } else {
                    match gpu.scoped("creating the looped step's pipelines", || {
                        [
                            looped("fused_loop", HEAD_DIAGONAL),
                            looped("fused_loop_full", HEAD_FULL),
                        ]
                    }) {
                        Ok(pair) => k.looped = Some(pair),
                        Err(e) => log::warn!("the looped training step is unavailable: {e}"),
                    }
                }
                Some(k)
            }
            Err(e) => {
                log::warn!(
                    "the fused training step is unavailable: {e}; using the layered kernels"
                );
                None
            }
        }
    }
}

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const HEAD_COMMON: &str = include_str!("../../../shaders/mixture_head_common.wgsl");
const HEAD_DIAGONAL: &str = include_str!("../../../shaders/mixture_head.wgsl");
const HEAD_FULL: &str = include_str!("../../../shaders/mixture_head_full.wgsl");
const HEAD_KERNEL: &str = include_str!("../../../shaders/mixture_head_kernel.wgsl");
const FUSED_TILE: &str = include_str!("../../../shaders/fused_tile.wgsl");
const FUSED_STEP: &str = include_str!("../../../shaders/fused_step.wgsl");
const FUSED_LOOP: &str = include_str!("../../../shaders/fused_loop.wgsl");

/// fused_step's bindings: desc, params, order, x, y, partial, stats.
const FUSED_STEP_SLOTS: &[Slot] = &[
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
];

/// fused_loop's bindings: fused_step's, then m, v, lrs and the step records as words.
const FUSED_LOOP_SLOTS: &[Slot] = &[
    Slot::Read,
    Slot::ReadWrite,
    Slot::Read,
    Slot::Read,
    Slot::Read,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::ReadWrite,
    Slot::Read,
    Slot::Read,
];

/// Size of the `Step` uniform record (see `shaders/common.wgsl`).
pub const STEP_BYTES: u64 = 128;

impl Kernels {
    /// Every kernel for `gpu` with the fused steps' `tiling`; the looped step's pipelines
    /// only with `looped`.
    pub fn new(gpu: &Gpu, tiling: &Tiling, looped: bool) -> Result<Kernels> {
        gpu.scoped("creating the compute pipelines", || {
            let step_layout =
                gpu.device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("step uniform layout"),
                        entries: &[wgpu::BindGroupLayoutEntry {
                            binding: 0,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Uniform,
                                has_dynamic_offset: true,
                                min_binding_size: wgpu::BufferSize::new(STEP_BYTES),
                            },
                            count: None,
                        }],
                    });
            use Slot::*;
            let k = |name: &'static str, source: &str, slots: &[Slot]| {
                make(gpu, &step_layout, name, source, slots, true)
            };
            Kernels {
                gather: k(
                    "gather",
                    include_str!("../../../shaders/gather.wgsl"),
                    &[Uniform, Read, Read, Read, ReadWrite, ReadWrite],
                ),
                dense_forward: k(
                    "dense_forward",
                    include_str!("../../../shaders/dense_forward.wgsl"),
                    &[Uniform, Read, Read, ReadWrite],
                ),
                mixture_head: k(
                    "mixture_head",
                    &format!("{HEAD_COMMON}\n{HEAD_DIAGONAL}\n{HEAD_KERNEL}"),
                    &[Uniform, Read, Read, ReadWrite, ReadWrite],
                ),
                mixture_head_full: k(
                    "mixture_head_full",
                    &format!("{HEAD_COMMON}\n{HEAD_FULL}\n{HEAD_KERNEL}"),
                    &[Uniform, Read, Read, ReadWrite, ReadWrite],
                ),
                fused: None,
                tiling: *tiling,
                reduce_sum: k(
                    "reduce_sum",
                    include_str!("../../../shaders/reduce_sum.wgsl"),
                    &[Read, ReadWrite],
                ),
                transpose: k(
                    "transpose",
                    include_str!("../../../shaders/transpose.wgsl"),
                    &[Uniform, Read, ReadWrite],
                ),
                activation_backward: k(
                    "activation_backward",
                    include_str!("../../../shaders/activation_backward.wgsl"),
                    &[Uniform, Read, ReadWrite],
                ),
                dense_backward_weights: k(
                    "dense_backward_weights",
                    include_str!("../../../shaders/dense_backward_weights.wgsl"),
                    &[Uniform, Read, Read, ReadWrite],
                ),
                weight_grad_sum: k(
                    "weight_grad_sum",
                    include_str!("../../../shaders/weight_grad_sum.wgsl"),
                    &[Uniform, Read, Read, ReadWrite],
                ),
                adam: k(
                    "adam",
                    include_str!("../../../shaders/adam.wgsl"),
                    &[ReadWrite, Read, ReadWrite, ReadWrite, Read, Read],
                ),
                grad_norm: k(
                    "grad_norm",
                    include_str!("../../../shaders/grad_norm.wgsl"),
                    &[Read, ReadWrite],
                ),
                finite_check: k(
                    "finite_check",
                    include_str!("../../../shaders/finite_check.wgsl"),
                    &[Read, ReadWrite],
                ),
                matmul_bench: k(
                    "matmul_bench",
                    include_str!("../../../shaders/matmul_bench.wgsl"),
                    &[Uniform, Read, Read, ReadWrite],
                ),
                step_layout,
            }
        })
        .map(|mut k| {
            k.fused = FusedKernels::new(gpu, &k.step_layout, tiling, looped);
            k
        })
    }

    /// The fused training step for diagonal or full covariance. Only called for a run with
    /// a fused plan, which exists only where the fused kernels do.
    pub fn fused(&self, full: bool) -> &Kernel {
        let f = self.fused_kernels();
        if full { &f.step_full } else { &f.step }
    }

    /// The looped step for diagonal or full covariance, where the adapter has it.
    pub fn looped(&self, full: bool) -> Option<&Kernel> {
        self.fused
            .as_ref()
            .and_then(|f| f.looped.as_ref())
            .map(|pair| &pair[usize::from(full)])
    }

    /// The fused step's gradient sum (see [`Kernels::fused`]).
    pub fn fused_grad(&self) -> &Kernel {
        &self.fused_kernels().grad
    }

    fn fused_kernels(&self) -> &FusedKernels {
        self.fused
            .as_ref()
            .expect("a fused plan exists only where the fused kernels were made")
    }

    /// The mixture-head kernel for diagonal or full covariance.
    pub fn head(&self, full: bool) -> &Kernel {
        if full {
            &self.mixture_head_full
        } else {
            &self.mixture_head
        }
    }
}

fn make(
    gpu: &Gpu,
    step_layout: &wgpu::BindGroupLayout,
    name: &'static str,
    source: &str,
    slots: &[Slot],
    zero_initialize_workgroup_memory: bool,
) -> Kernel {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match s {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = gpu
        .device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(name),
            entries: &entries,
        });
    let pipeline_layout = gpu
        .device
        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout), Some(step_layout)],
            immediate_size: 0,
        });
    let module = gpu
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(Cow::Owned(format!("{COMMON}\n{source}"))),
        });
    let pipeline = gpu
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory,
                ..Default::default()
            },
            cache: None,
        });
    Kernel {
        name,
        pipeline,
        layout,
    }
}
