//! The compute pipelines, one per WGSL file in `shaders/`, created once per device and reused
//! for every model shape (layer sizes and offsets are uniforms, not constants).
//!
//! Every kernel has two bind groups: group 0 holds its own buffers (listed here as `Slot`s,
//! in binding order), group 1 the per-dispatch `Step` record (a uniform with a dynamic
//! offset, shared by all kernels). `shaders/common.wgsl` is prepended to every kernel;
//! `shaders/mixture_head_common.wgsl` (the head layout and row arithmetic) and one of
//! `mixture_head.wgsl` / `mixture_head_full.wgsl` (the components) to the two head kernels
//! (`mixture_head_kernel.wgsl`) and the two fused steps (`fused_step.wgsl`), whose workgroup
//! memory size (`TILE_FLOATS`) is the adapter's, up to 48 KiB.

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
    /// The fused training step (diagonal and full covariance) and its gradient sum.
    pub fused_step: Kernel,
    pub fused_step_full: Kernel,
    pub fused_grad: Kernel,
    /// The fused step's workgroup size and memory, and rows per tile at most.
    pub tiling: Tiling,
}

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const HEAD_COMMON: &str = include_str!("../../../shaders/mixture_head_common.wgsl");
const HEAD_DIAGONAL: &str = include_str!("../../../shaders/mixture_head.wgsl");
const HEAD_FULL: &str = include_str!("../../../shaders/mixture_head_full.wgsl");
const HEAD_KERNEL: &str = include_str!("../../../shaders/mixture_head_kernel.wgsl");
const FUSED_STEP: &str = include_str!("../../../shaders/fused_step.wgsl");

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

/// Size of the `Step` uniform record (see `shaders/common.wgsl`).
pub const STEP_BYTES: u64 = 112;

impl Kernels {
    pub fn new(gpu: &Gpu, tiling: &Tiling) -> Result<Kernels> {
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
            // The fused step's workgroup memory and size, from the adapter (FusedPlan sizes
            // tiles to them).
            let tile = format!(
                "const TILE_FLOATS: u32 = {}u;\nconst WG: u32 = {}u;",
                tiling.floats, tiling.workgroup
            );
            let k = |name: &'static str, source: &str, slots: &[Slot]| {
                make(gpu, &step_layout, name, source, slots)
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
                fused_step: k(
                    "fused_step",
                    &format!("{tile}\n{HEAD_COMMON}\n{HEAD_DIAGONAL}\n{FUSED_STEP}"),
                    FUSED_STEP_SLOTS,
                ),
                fused_step_full: k(
                    "fused_step_full",
                    &format!("{tile}\n{HEAD_COMMON}\n{HEAD_FULL}\n{FUSED_STEP}"),
                    FUSED_STEP_SLOTS,
                ),
                fused_grad: k(
                    "fused_grad",
                    include_str!("../../../shaders/fused_grad.wgsl"),
                    &[
                        Read, ReadWrite, ReadWrite, ReadWrite, ReadWrite, ReadWrite, Read,
                        ReadWrite,
                    ],
                ),
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
    }

    /// The fused training step for diagonal or full covariance.
    pub fn fused(&self, full: bool) -> &Kernel {
        if full {
            &self.fused_step_full
        } else {
            &self.fused_step
        }
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
            compilation_options: Default::default(),
            cache: None,
        });
    Kernel {
        name,
        pipeline,
        layout,
    }
}
