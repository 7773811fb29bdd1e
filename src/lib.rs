//! mdn: Mixture Density Networks trained on any GPU through wgpu, checked against a CPU
//! reference.
//!
//! Data flows one way: [`data`] reads a CSV into a [`data::Dataset`]; [`train`] standardises it,
//! initialises the flat parameters ([`layout`]) and drives a [`backend::Backend`] epoch by
//! epoch; the result is a [`model::Model`], saved as JSON, which answers log-likelihoods,
//! mixture parameters and samples. The mixture mathematics for one row lives in [`mixture`].
//! See ARCHITECTURE.md for the map and the invariants.

// Index loops read like the formulas they implement; numeric kernels take many slices.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

pub mod atomic;
pub mod backend;
pub mod baseline;
pub mod bench;
pub mod categorical;
pub mod check;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod export;
pub mod job;
pub mod lanes;
pub mod layout;
pub mod mixture;
#[macro_use]
pub mod named;
pub mod model;
pub mod npy;
pub mod plot;
pub mod scaler;
pub mod select;
pub mod serve;
pub mod stats;
pub mod student;
pub mod synth;
pub mod tables;
pub mod tolerance;
pub mod train;
pub mod transform;

pub use error::{Error, Result};
