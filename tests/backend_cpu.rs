//! The backend suite (tests/common/suite.rs) run against the CPU reference backend.

mod common;

use mdn::backend::{Backend, CpuBackend};

fn make() -> Option<Box<dyn Backend>> {
    Some(Box::new(CpuBackend::new()))
}

backend_suite!(make);
