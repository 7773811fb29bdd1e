//! The backend suite (tests/common/suite.rs) run against the GPU backend's layered path:
//! the kernels that train models too wide for the fused step's tiles (a dispatch per layer
//! and pass). tests/backend_gpu.rs runs the same suite on the default, fused path.

mod common;

use common::gpu_backend_layered;

backend_suite!(gpu_backend_layered);
