//! The trainer: the validation split, standardisation and initialisation, and the epoch loop
//! with early stopping and fault rollback. It talks only to the [`Backend`] trait.
//!
//! Three ways in, one epoch loop (`epochs`): [`train`] hands the backend a data set held in
//! memory (`memory`); [`train_stream`] reads a [`RowSource`] (a `.npy` file) window by window,
//! so the data set may be larger than memory or than the GPU's buffers (`stream`);
//! [`train_members`] trains an ensemble's networks together where the backend can
//! (`members`); [`train_packed`] trains many networks, each on rows of its own (one model
//! per group), together where the backend can (`packed`). A single network is, to the
//! loop, a run of one member.
//!
//! | module | decides |
//! |---|---|
//! | `options` | what shapes a run, and the checks made before any work |
//! | `split` | which rows are held out for validation |
//! | `init` | the standardisation, the architecture and the initial parameters |
//! | `epochs` | when an epoch runs again, when a run stops, what a run's models record |
//! | `memory`, `stream`, `members`, `packed` | what an epoch is for each way in |
//!
//! The validation split is by row index: which rows are held out depends on the seed and the
//! row's index alone ([`ValidationSplit`]). Membership is the same in memory and streamed, the
//! same every epoch, and needs no pass over the data to decide.
//!
//! Randomness comes from one seed through ChaCha8 streams, one per purpose (initialisation,
//! the per-epoch shuffles), so the same seed gives the same run on the same backend, and
//! changing one use of randomness never shifts another.
//!
//! [`Backend`]: crate::backend::Backend
//! [`RowSource`]: crate::data::RowSource

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod epochs;
mod init;
mod members;
mod memory;
mod options;
mod packed;
mod split;
mod stream;

pub use epochs::{
    CheckpointFn, Checkpointer, LoopState, MembersCheckpointFn, MembersCheckpointer, Resume,
};
pub use init::init_params;
pub(crate) use init::student_with_transform;
pub use members::{train_members, train_members_with};
pub use memory::{train, train_with};
pub use options::{Stopping, TrainOptions};
pub use packed::{MOST_PACKED, PackedGroup, train_packed};
pub use split::{ValidationSplit, split_validation, split_validation_by};
pub use stream::{StreamOptions, train_stream, train_stream_with};

/// ChaCha8 stream numbers, one per use of the seed.
const STREAM_INIT: u64 = 1;
const STREAM_SHUFFLE: u64 = 3;

/// The random stream `stream` of `seed`.
fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// What the trainer tells its observer after every epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    /// The most epochs this run can take.
    pub max_epochs: usize,
    /// Mean training NLL per row (original units).
    pub train_nll: f64,
    /// Validation NLL per row (original units).
    pub val_nll: Option<f64>,
    pub best_val_nll: Option<f64>,
    pub best_epoch: usize,
    /// Training rows per second in this epoch.
    pub rows_per_sec: f64,
    /// Seconds this epoch took.
    pub seconds: f64,
    /// Seconds left at most, at the mean epoch time so far: the epochs left to `max_epochs`
    /// (early stopping may end the run sooner).
    pub eta_seconds: f64,
}

/// What the trainer tells its observer; returning `false` from the observer stops training
/// (after an epoch, the parameters kept so far are used; within a streamed epoch, the epoch
/// is abandoned and the last completed epoch's parameters are kept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent {
    /// Progress within an epoch (streamed training reports it after every window).
    Rows {
        epoch: usize,
        done: usize,
        total: usize,
    },
    /// An epoch has finished.
    Epoch(EpochReport),
    /// An epoch produced NaN or infinite values (first in `batch`, 1-based, when known); the
    /// state before it was restored and the epoch is run again at learning rate `lr`.
    Recovered {
        epoch: usize,
        batch: Option<u64>,
        lr: f32,
    },
}

/// Retries of an epoch after a numerical fault before training gives up.
pub const MAX_RETRIES: usize = 3;
