//! Training an ensemble's members together, where the backend can
//! ([`Backend::start_members`]): the networks share the rows, the standardisation and the
//! validation rows, each with its own seed (initialisation and row orders), learning rate and
//! early stopping. The shared epoch loop runs them as one run of several members.

use rand::seq::SliceRandom;

use super::epochs::{self, Checkpoints, Epoch, Members, Resume, Runs};
use super::init::{Standardised, standardise, val_ref};
use super::options::{TrainOptions, check_columns, check_options};
use super::{MembersCheckpointer, TrainEvent};
use crate::backend::{Backend, DataRef, EpochStats, MembersRun, TrainState};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;

/// Trains the members of an ensemble together, where the backend can
/// ([`Backend::start_members`]; `Ok(None)` where it cannot): the networks of `seeds` (each
/// seed its own initialisation and row orders, as [`super::train`] with `opts.seed` = that
/// seed) on the same rows, standardisation and validation rows. Each member stops early on
/// its own validation curve and keeps its own best epoch; a member whose epoch goes NaN or
/// infinite goes back to the epoch's start at half its learning rate, as [`super::train`]
/// does, and its results are the single run's bits (the other members run that epoch again to
/// the same bits). Members that have stopped are carried along until the last one stops.
///
/// The observer gets one [`TrainEvent::Epoch`] per epoch summed up over the members still
/// training (mean NLLs; rows per second over all of them), `note` a line when a member stops.
#[allow(clippy::too_many_arguments)]
pub fn train_members(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    seeds: &[u64],
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
    note: &mut dyn FnMut(&str),
) -> Result<Option<Vec<Model>>> {
    train_members_with(backend, train, val, opts, seeds, None, None, observer, note)
}

/// [`train_members`], continuing from each member's checkpointed state (all at the same Adam
/// step: as members trained together leave them) and writing checkpoints of all of them.
#[allow(clippy::too_many_arguments)]
pub fn train_members_with(
    backend: &mut dyn Backend,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    seeds: &[u64],
    resume: Option<Vec<Resume>>,
    checkpointer: Option<MembersCheckpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
    note: &mut dyn FnMut(&str),
) -> Result<Option<Vec<Model>>> {
    check_options(train.rows, train.path.as_path(), val, opts)?;
    check_columns(&train.features, &train.targets, val)?;
    let m = seeds.len();
    if m == 0 {
        return Err(Error::config("an ensemble needs at least one member"));
    }
    let Standardised {
        setup,
        tx,
        ty,
        val_std,
    } = standardise(train, val, opts)?;
    let params: Vec<Vec<f32>> = seeds
        .iter()
        .map(|&seed| setup.initial_params(&ty, seed))
        .collect();
    let data = DataRef {
        x: &tx,
        y: &ty,
        rows: train.rows,
    };
    let Some(run) = backend.start_members(&setup.arch, &params, data, val_ref(&val_std))? else {
        return Ok(None);
    };
    let mut runs = Together::new(run, &vec![train.rows; m]);
    let resume = match resume {
        Some(r) if r.len() != m => {
            return Err(Error::config(format!(
                "{} members' states to resume an ensemble of {m}",
                r.len()
            )));
        }
        Some(r) => Some(epochs::resume_runs(&mut runs, r, &setup, &train.path)?),
        None => None,
    };
    let ended = epochs::run_epochs(
        &mut runs,
        &setup,
        opts,
        Members {
            seeds,
            ensemble: true,
            own: None,
        },
        resume,
        checkpointer.map(Checkpoints::members),
        train.rows,
        observer,
        note,
    )?;
    drop(runs);
    let counts = (train.rows, val.map_or(0, |v| v.rows));
    let models = epochs::models(
        ended,
        &setup,
        backend,
        opts,
        seeds,
        counts,
        val.unwrap_or(train),
    )?;
    Ok(Some(models))
}

/// Members trained in the same epochs by one [`MembersRun`], each with its own row order
/// of its training rows: an ensemble's of the same rows, a packed run's of its own.
pub(super) struct Together<'r> {
    run: Box<dyn MembersRun + 'r>,
    /// Each member's permutation of its training rows.
    orders: Vec<Vec<u32>>,
}

impl<'r> Together<'r> {
    /// The members of `run`, of `rows[m]` training rows each.
    pub(super) fn new(run: Box<dyn MembersRun + 'r>, rows: &[usize]) -> Together<'r> {
        Together {
            run,
            orders: rows.iter().map(|&n| (0..n as u32).collect()).collect(),
        }
    }
}

impl Runs for Together<'_> {
    fn snapshot(&mut self) -> Result<()> {
        self.run.snapshot()
    }
    fn restore(&mut self) -> Result<()> {
        self.run.restore()
    }
    fn epoch(
        &mut self,
        epoch: Epoch<'_>,
        _observer: &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Option<Vec<EpochStats>>> {
        for (i, rng) in epoch.rngs.iter_mut().enumerate() {
            if epoch.fresh[i] {
                // A fresh permutation, drawn as a single network's run draws one.
                let o = &mut self.orders[i];
                o.iter_mut().enumerate().for_each(|(r, v)| *v = r as u32);
                o.shuffle(rng);
            }
        }
        let stats =
            self.run
                .train_epoch(&self.orders.concat(), epoch.step, epoch.lrs, epoch.training)?;
        Ok(Some(stats))
    }
    fn keep_best(&mut self, which: &[bool]) -> Result<()> {
        self.run.keep_best(which)
    }
    fn save_state(&mut self) -> Result<Vec<TrainState>> {
        self.run.save_state()
    }
    fn load_state(&mut self, states: &[TrainState]) -> Result<()> {
        self.run.load_state(states)
    }
    fn best_params(&mut self) -> Result<Vec<Vec<f32>>> {
        self.run.best_params()
    }
}
