//! The wgpu device: adapter discovery and choice, device creation with the adapter's own
//! limits, error capture (error scopes, an uncaptured-error sink and a device-lost callback,
//! so wgpu never panics on us), and buffer helpers (upload, readback).

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU if there is one, else the CPU backend.
    #[default]
    Auto,
    /// A hardware GPU (discrete, integrated or virtual); an error if there is none.
    Gpu,
    /// The software adapter (e.g. Mesa's lavapipe, "llvmpipe"); an error if there is none.
    Software,
    /// The CPU reference backend.
    Cpu,
}

crate::named::named!(DeviceChoice, "device", {
    Auto => "auto": "a hardware GPU if there is one, else the CPU backend",
    Gpu => "gpu": "a hardware GPU (discrete, integrated or virtual); an error if there is none",
    Software => "software": "the software adapter (e.g. Mesa's lavapipe): for CI and parity checks",
    Cpu => "cpu": "the CPU reference backend",
});

/// What `mdn devices` shows about an adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// A discrete, integrated or virtual GPU (not a software adapter).
    pub hardware: bool,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    pub min_uniform_buffer_offset_alignment: u32,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Workgroup memory in bytes, and the fused training step's default tiling on this
    /// adapter (`fused::Tiling::for_adapter`): invocations per workgroup, rows a tile at
    /// most, floats of workgroup memory it declares.
    pub max_compute_workgroup_storage_size: u32,
    pub fused_workgroup: usize,
    pub fused_max_tile_rows: usize,
    pub fused_tile_floats: usize,
    /// The most dense-layer MFLOP a fused step may have on this adapter (a CPU adapter);
    /// `None`: any.
    pub fused_max_step_mflop: Option<f64>,
    /// Whether the adapter can run the looped step (enough storage buffers a stage), by
    /// default for batches of at most how many tiles (0: only with `MDN_GPU_PATH=loop`), and
    /// the most barriers a dispatch of it may pass (`None`: no bound).
    pub looped_step: bool,
    pub loop_max_tiles: usize,
    pub loop_max_barriers: Option<usize>,
}

impl AdapterSummary {
    pub fn is_hardware(&self) -> bool {
        self.hardware
    }
}

/// How to install a Vulkan driver, said whenever no adapter is found.
pub const NO_ADAPTER_HELP: &str = "no GPU adapter found: install a Vulkan driver and loader \
(Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`, which includes the lavapipe \
software adapter), or use `--device cpu`";

/// The process's one wgpu instance, made on first use and never dropped.
///
/// Destroying the last Vulkan instance lets the loader unload the driver. NVIDIA's driver
/// (580.159, on an H200) keeps threads of its own running past that, and they then jump into
/// unmapped code: with an instance per backend, a process that made and dropped GPU backends
/// on several threads segfaulted in 3 runs of 8 (wgpu issue 8365 is the same driver bug at
/// exit). With one instance for the process, the driver stays loaded until the process ends.
fn instance() -> wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE
        .get_or_init(|| {
            let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
            wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            })
        })
        .clone()
}

fn is_hardware(t: wgpu::DeviceType) -> bool {
    matches!(
        t,
        wgpu::DeviceType::DiscreteGpu
            | wgpu::DeviceType::IntegratedGpu
            | wgpu::DeviceType::VirtualGpu
    )
}

fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let l = a.limits();
    let (subgroup_min_size, subgroup_max_size) = (info.subgroup_min_size, info.subgroup_max_size);
    let tiling = super::fused::Tiling::for_adapter(info.device_type, &l, None, None);
    AdapterSummary {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        hardware: is_hardware(info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
        max_buffer_size: l.max_buffer_size,
        max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
        max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
        min_uniform_buffer_offset_alignment: l.min_uniform_buffer_offset_alignment,
        subgroup_min_size,
        subgroup_max_size,
        max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
        fused_workgroup: tiling.workgroup,
        fused_max_tile_rows: tiling.max_rows,
        fused_tile_floats: tiling.floats,
        fused_max_step_mflop: tiling.fused_max_step_flops.map(|f| f / 1e6),
        looped_step: l.max_storage_buffers_per_shader_stage >= super::kernels::LOOP_STORAGE_BUFFERS,
        loop_max_tiles: tiling.loop_max_tiles,
        loop_max_barriers: tiling.loop_max_barriers,
    }
}

/// Every adapter wgpu can see (Vulkan, Metal, DX12; `WGPU_BACKEND` overrides).
pub fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(summary)
        .collect()
}

/// Picks an adapter for `choice` (not `Cpu`). Hardware GPUs are preferred discrete first.
fn pick_adapter(choice: DeviceChoice) -> Result<wgpu::Adapter> {
    let inst = instance();
    let mut adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    let adapters_seen: Vec<(String, wgpu::DeviceType)> = adapters
        .iter()
        .map(|a| (a.get_info().name, a.get_info().device_type))
        .collect();
    let found = match choice {
        DeviceChoice::Gpu => adapters
            .into_iter()
            .find(|a| is_hardware(a.get_info().device_type)),
        DeviceChoice::Software => adapters
            .into_iter()
            .find(|a| a.get_info().device_type == wgpu::DeviceType::Cpu),
        // As `--device gpu`: auto never means the software adapter (see `backend::open`).
        DeviceChoice::Auto => adapters
            .into_iter()
            .find(|a| is_hardware(a.get_info().device_type)),
        DeviceChoice::Cpu => None,
    };
    let seen: Vec<String> = adapters_seen
        .iter()
        .map(|(n, t)| format!("{n} ({t:?})"))
        .collect();
    found.ok_or_else(|| {
        Error::Backend(match (choice, seen.is_empty()) {
            (_, true) => NO_ADAPTER_HELP.to_string(),
            (DeviceChoice::Gpu, false) => format!(
                "--device gpu: no hardware GPU adapter (found only {}); install your GPU's Vulkan, Metal or DX12 \
                 driver, or use `--device software` or `--device cpu`",
                seen.join(", ")
            ),
            (DeviceChoice::Software, false) => format!(
                "--device software: no software adapter (found {}); install Mesa's lavapipe (Debian/Ubuntu: \
                 `apt-get install mesa-vulkan-drivers`) or use `--device cpu`",
                seen.join(", ")
            ),
            _ => format!("no usable GPU adapter among {}", seen.join(", ")),
        })
    })
}

/// Errors reported outside an error scope, and the device-lost reason.
#[derive(Default)]
struct Sink {
    uncaptured: Vec<String>,
    lost: Option<String>,
}

/// Devices are opened and closed one at a time in the process. On an H200 the whole
/// `backend_gpu` suite at 16 test threads hung in about 1 run of 3 with one thread inside
/// `vkDestroyDevice` and the others waiting on the Vulkan loader's lock or inside the driver:
/// device creation and destruction on several threads at once is where the loader and the
/// driver meet, so mdn never does two of them at once (training itself runs in parallel).
static DEVICE_LIFECYCLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Gpu {
    fn drop(&mut self) {
        let _one_at_a_time = DEVICE_LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: dropped once, here, and never used after.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.queue);
            std::mem::ManuallyDrop::drop(&mut self.device);
        }
    }
}

/// An open device with its queue, limits and error capture.
pub struct Gpu {
    /// Dropped under `DEVICE_LIFECYCLE` (see `Drop for Gpu`).
    pub device: std::mem::ManuallyDrop<wgpu::Device>,
    pub queue: std::mem::ManuallyDrop<wgpu::Queue>,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    sink: Arc<Mutex<Sink>>,
    /// Number of host readbacks so far (see [`Gpu::readbacks`]); shared, so that it can be
    /// watched while a run holds the backend.
    readbacks: Arc<std::sync::atomic::AtomicU64>,
}

impl Gpu {
    /// Opens the adapter `choice` picks (not `Cpu`), asking for the adapter's own limits
    /// rather than the downlevel defaults.
    pub fn open(choice: DeviceChoice) -> Result<Gpu> {
        let adapter = pick_adapter(choice)?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let lifecycle = DEVICE_LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("mdn device"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| {
            Error::Backend(format!(
                "cannot open {} ({:?}): {e}",
                info.name, info.backend
            ))
        })?;
        let sink = Arc::new(Mutex::new(Sink::default()));
        let s = sink.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            s.lock()
                .unwrap_or_else(|p| p.into_inner())
                .uncaptured
                .push(e.to_string());
        }));
        let s = sink.clone();
        device.set_device_lost_callback(move |reason, message| {
            s.lock().unwrap_or_else(|p| p.into_inner()).lost =
                Some(format!("{reason:?}: {message}"));
        });
        drop(lifecycle);
        Ok(Gpu {
            device: std::mem::ManuallyDrop::new(device),
            queue: std::mem::ManuallyDrop::new(queue),
            info,
            limits,
            sink,
            readbacks: Default::default(),
        })
    }

    /// A short description: name (backend, type).
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Returns an error if the device was lost or reported an error outside a scope.
    pub fn check(&self) -> Result<()> {
        let mut s = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lost) = &s.lost {
            return Err(Error::Backend(format!(
                "GPU device lost ({}): {lost}",
                self.info.name
            )));
        }
        if !s.uncaptured.is_empty() {
            let all = std::mem::take(&mut s.uncaptured).join("; ");
            return Err(Error::Backend(format!(
                "GPU error on {}: {all}",
                self.info.name
            )));
        }
        Ok(())
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes and returns what
    /// they caught as an error.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = f();
        let e3 = pollster::block_on(internal.pop());
        let e2 = pollster::block_on(oom.pop());
        let e1 = pollster::block_on(validation.pop());
        self.check()?;
        if let Some(e) = e1.or(e2).or(e3) {
            return Err(Error::Backend(format!(
                "{what} failed on {}: {e}",
                self.info.name
            )));
        }
        Ok(value)
    }

    /// A storage buffer holding `data`, checked against the adapter's binding limit.
    pub fn upload(
        &self,
        label: &str,
        data: &[f32],
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let bytes = (data.len().max(1) * 4) as u64;
        self.check_size(label, bytes)?;
        let contents: &[u8] = if data.is_empty() {
            &[0u8; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC
                    | extra,
            }))
    }

    /// A zeroed storage buffer of `len` f32 (or u32) values.
    pub fn storage(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let bytes = (len.max(1) * 4) as u64;
        self.check_size(label, bytes)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer with `bytes`.
    pub fn uniform(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A buffer the host can map for reading.
    pub fn readback(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    fn check_size(&self, label: &str, bytes: u64) -> Result<()> {
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::Config(format!(
                "{label} needs {:.1} MiB but {} binds at most {:.1} MiB per buffer; use fewer rows, \
                 a smaller --batch-size, or --device cpu",
                bytes as f64 / 1048576.0,
                self.info.name,
                limit as f64 / 1048576.0
            )));
        }
        Ok(())
    }

    /// How many times the host has read GPU memory back (each [`Gpu::read_f32`] counts once).
    pub fn readbacks(&self) -> u64 {
        self.readbacks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The readback counter itself, to watch while a training run holds the backend.
    pub fn readback_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.readbacks.clone()
    }

    /// Waits for the queue and reads `len` f32 values from a mappable buffer.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        self.readbacks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = (len * 4) as u64;
        if len == 0 {
            return Ok(Vec::new());
        }
        let slice = buffer.slice(0..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Backend(format!("waiting for {} failed: {e}", self.info.name)))?;
        self.check()?;
        rx.recv()
            .map_err(|_| Error::Backend("GPU readback was abandoned".into()))?
            .map_err(|e| Error::Backend(format!("mapping a readback buffer failed: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Backend(format!("reading back failed: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        buffer.unmap();
        Ok(out)
    }
}
