//! The backend suite (tests/common/suite.rs) run against the GPU backend, on the software
//! adapter by default (lavapipe on CI; `MDN_TEST_DEVICE=gpu` for a hardware GPU).

mod common;

use common::gpu_backend;

backend_suite!(gpu_backend);
