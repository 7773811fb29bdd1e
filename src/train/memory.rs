//! Training one network on rows held in memory: the data standardised once, a new
//! permutation of the training rows every epoch, the rest the shared epoch loop's.

use rand::seq::SliceRandom;

use super::epochs::{self, Resume};
use super::init::{Standardised, standardise, val_ref};
use super::options::{TrainOptions, check_columns, check_options};
use super::{Checkpointer, TrainEvent};
use crate::backend::{Backend, DataRef};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;

/// Trains a model on `train` held in memory, validating on `val` (needed for early
/// stopping), and returns it with its training history.
pub fn train(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    train_with(backend, train, val, opts, None, None, observer)
}

/// [`train`], continuing from a checkpoint's state (`resume`) and writing checkpoints
/// (`checkpointer`). A resumed run ends with the same bits as an uninterrupted one.
pub fn train_with(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    resume: Option<Resume>,
    checkpointer: Option<Checkpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    check_options(train.rows, train.path.as_path(), val, opts)?;
    check_columns(&train.features, &train.targets, val)?;
    let Standardised {
        setup,
        tx,
        ty,
        val_std,
    } = standardise(train, val, opts)?;
    let params = setup.initial_params(&ty, opts.seed);
    let data = DataRef {
        x: &tx,
        y: &ty,
        rows: train.rows,
    };
    let mut run = backend.start(&setup.arch, &params, data, val_ref(&val_std))?;
    let mut order: Vec<u32> = (0..train.rows as u32).collect();
    let mut epoch = |b: &mut dyn crate::backend::TrainRun,
                     _epoch: usize,
                     step: &crate::backend::StepConfig,
                     shuffle_rng: &mut rand_chacha::ChaCha8Rng,
                     _obs: &mut dyn FnMut(&TrainEvent) -> bool| {
        // A fresh permutation each epoch, drawn as the streamed path draws one per window.
        order
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = i as u32);
        order.shuffle(shuffle_rng);
        b.train_epoch(&order, step).map(Some)
    };
    let ended = epochs::run_one(
        run.as_mut(),
        &mut epoch,
        &setup,
        opts,
        resume,
        checkpointer,
        &train.path,
        train.rows,
        observer,
    )?;
    drop(run);
    let counts = (train.rows, val.map_or(0, |v| v.rows));
    let mut models = epochs::models(
        ended,
        &setup,
        backend,
        opts,
        &[opts.seed],
        counts,
        val.unwrap_or(train),
    )?;
    Ok(models.pop().expect("one model"))
}
