//! Integration tests of the `mdn` binary: every command, its options and outputs, and every
//! input error (exit code 2, a message naming the place, nothing written).
//!
//! Each test runs the real binary (`CARGO_BIN_EXE_mdn`) in a temporary directory of its own.
//! This is one test binary, `cli`, with a module per command group; a test's full name is
//! `group::test`, so `cargo test --test cli select::` runs one group:
//!
//! - `train`: `mdn train`, its options, small data, full covariance;
//! - `predict`: `eval`, `predict`, `sample`, `plot` and `info` on a trained model;
//! - `select`: `mdn select`;
//! - `files`: data and model files, `convert` and `generate`, streaming, every input error,
//!   what `--out` may overwrite;
//! - `signals`: Ctrl-C, SIGKILL and `--resume`, checkpoints;
//! - `devices`: `devices`, `check`, `bench`, `--device`, `--help` and `--version`;
//! - `groups`: `mdn train --group-by`, a model per group;
//! - `family`: Student's t components (`--family student-t`).
//!
//! `support` holds what they share: running mdn, the shipped example data, a small trained
//! model. The parts of a test that need a software (Vulkan) adapter are skipped, with a line
//! on stderr, when there is none, unless `MDN_REQUIRE_GPU=1`.

mod support;
mod tables;
mod transforms;

mod devices;
mod family;
mod files;
mod groups;
mod predict;
mod select;
mod signals;
mod train;
