//! The epoch loop every run shares: one network in memory, one streamed, and an ensemble's
//! members trained together (a single network is a run of one member). It decides when an
//! epoch is run again and when a run stops; what an epoch is (row orders, windows read from a
//! file) is left to the [`Runs`] it drives.
//!
//! Per epoch: snapshot the run; train; a member whose epoch went NaN or infinite has its
//! learning rate halved and a new row order, and every member goes back to the snapshot and
//! runs the epoch again (the others to the same bits), up to [`MAX_RETRIES`] times. Then the
//! NLLs are converted to original units, each member keeps its best parameters (early
//! stopping) or its last (fixed epochs), a checkpoint is written when one is due, the
//! observer hears of the epoch, and members whose validation NLL has not improved for
//! `patience` epochs stop. At the end each member's kept parameters become a [`Model`].

use std::time::Instant;

use rand_chacha::ChaCha8Rng;

use super::init::Setup;
use super::options::{Stopping, TrainOptions};
use super::{EpochReport, MAX_RETRIES, STREAM_SHUFFLE, TrainEvent, rng_for};
use crate::backend::{Backend, EpochStats, StepConfig, TrainRun, TrainState};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{EpochRecord, Model, Recovery, TrainingInfo};
use crate::scaler::Scaler;

/// Where a resumed run continues from: the trainer's and the backend's state, and the
/// standardisation the run had (the data must still give the same).
#[derive(Debug, Clone)]
pub struct Resume {
    pub trainer: LoopState,
    pub state: TrainState,
    pub x_scaler: Scaler,
    pub y_scaler: Scaler,
}

/// Writes a checkpoint from the run's state, the trainer's state and the standardisation.
pub type CheckpointFn<'a> = dyn FnMut(TrainState, &LoopState, &Scaler, &Scaler) -> Result<()> + 'a;

/// Called after every `every`-th completed epoch with the run's and the trainer's state, to
/// write a checkpoint, but no sooner than `min_seconds` after the last one (so that runs of
/// many short epochs do not spend their time writing checkpoints). A run stopped by its
/// observer (Ctrl-C, a cancel, a service shutting down) writes one for its last epoch.
pub struct Checkpointer<'a> {
    pub every: usize,
    pub min_seconds: f64,
    /// Receives the run's state, the trainer's state and the x and y standardisation.
    pub write: &'a mut CheckpointFn<'a>,
}

/// Writes an ensemble's checkpoint from every member's run state and trainer state and the
/// standardisation.
pub type MembersCheckpointFn<'a> =
    dyn FnMut(Vec<(TrainState, LoopState)>, &Scaler, &Scaler) -> Result<()> + 'a;

/// [`Checkpointer`] for members trained together.
pub struct MembersCheckpointer<'a> {
    pub every: usize,
    pub min_seconds: f64,
    pub write: &'a mut MembersCheckpointFn<'a>,
}

/// The trainer's own state between epochs: with the backend's [`TrainState`] it is all a
/// checkpoint needs to continue a run exactly where it was.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoopState {
    /// Epochs completed.
    pub completed: usize,
    pub history: Vec<EpochRecord>,
    /// The best epoch and its validation NLL (original units).
    pub best: Option<(usize, f64)>,
    /// The learning rate now (halved by numerical faults).
    pub lr: f32,
    pub recoveries: Vec<Recovery>,
    /// Position of the shuffling random stream (ChaCha8 word position, decimal).
    pub shuffle_position: String,
}

impl LoopState {
    fn new(opts: &TrainOptions) -> LoopState {
        LoopState {
            completed: 0,
            history: Vec::new(),
            best: None,
            lr: opts.step.lr,
            recoveries: Vec::new(),
            shuffle_position: "0".into(),
        }
    }
}

/// What the loop drives: the members of a run, trained in the same epochs.
pub(super) trait Runs {
    fn snapshot(&mut self) -> Result<()>;
    /// Every member back to the last snapshot.
    fn restore(&mut self) -> Result<()>;
    /// One epoch of the members `epoch.training` marks; `None` when the observer stopped it
    /// midway (a streamed epoch reports its progress).
    fn epoch(
        &mut self,
        epoch: Epoch<'_>,
        observer: &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Option<Vec<EpochStats>>>;
    /// Keeps the current parameters of the members `which` marks as their best.
    fn keep_best(&mut self, which: &[bool]) -> Result<()>;
    fn save_state(&mut self) -> Result<Vec<TrainState>>;
    fn load_state(&mut self, states: &[TrainState]) -> Result<()>;
    /// Every member's kept parameters.
    fn best_params(&mut self) -> Result<Vec<Vec<f32>>>;
}

/// One epoch as the loop asks for it.
pub(super) struct Epoch<'a> {
    pub number: usize,
    /// The step, at the first member's learning rate.
    pub step: &'a StepConfig,
    /// Each member's learning rate.
    pub lrs: &'a [f32],
    /// The members that train (the others have stopped).
    pub training: &'a [bool],
    /// The members that draw a new row order from their random stream; the others repeat
    /// the order they had (an epoch run again after another member's fault).
    pub fresh: &'a [bool],
    pub rngs: &'a mut [ChaCha8Rng],
}

/// One network's epoch: `Some` statistics, or `None` when the observer stopped it midway.
/// It draws its row order from the random stream it is given, every time it is called.
pub(super) type EpochFn<'a> = dyn FnMut(
        &mut dyn TrainRun,
        usize,
        &StepConfig,
        &mut ChaCha8Rng,
        &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Option<EpochStats>>
    + 'a;

/// One network's run as a run of one member: its epochs are `epoch`'s.
pub(super) struct OneRun<'r, 'f> {
    pub run: &'r mut dyn TrainRun,
    pub epoch: &'f mut EpochFn<'f>,
}

impl Runs for OneRun<'_, '_> {
    fn snapshot(&mut self) -> Result<()> {
        self.run.snapshot()
    }
    fn restore(&mut self) -> Result<()> {
        self.run.restore()
    }
    fn epoch(
        &mut self,
        epoch: Epoch<'_>,
        observer: &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Option<Vec<EpochStats>>> {
        // The one member draws a new order every time: it is the member at fault whenever an
        // epoch runs again.
        debug_assert!(
            epoch.fresh[0],
            "one network's epoch always has a new row order"
        );
        let stats = (self.epoch)(
            self.run,
            epoch.number,
            epoch.step,
            &mut epoch.rngs[0],
            observer,
        )?;
        Ok(stats.map(|s| vec![s]))
    }
    fn keep_best(&mut self, which: &[bool]) -> Result<()> {
        if which[0] {
            self.run.keep_best()?;
        }
        Ok(())
    }
    fn save_state(&mut self) -> Result<Vec<TrainState>> {
        Ok(vec![self.run.save_state()?])
    }
    fn load_state(&mut self, states: &[TrainState]) -> Result<()> {
        self.run.load_state(&states[0])
    }
    fn best_params(&mut self) -> Result<Vec<Vec<f32>>> {
        Ok(vec![self.run.best_params()?])
    }
}

/// Who the members are: their seeds (the shuffling streams), and whether they are an
/// ensemble's (their messages then name the member).
pub(super) struct Members<'a> {
    pub seeds: &'a [u64],
    pub ensemble: bool,
    /// Each member's own standardisation and stopping, where they differ (a packed run's
    /// networks, each on rows of its own); `None`: every member has the run's.
    pub own: Option<&'a [Own]>,
}

/// What a member of a packed run has of its own: ln|dz/dy| of its targets' standardisation
/// (training rows, validation rows; see `EpochLoop::jacs`) and when it stops.
#[derive(Debug, Clone, Copy)]
pub(super) struct Own {
    pub jac: (f64, f64),
    pub stopping: Stopping,
}

/// The epoch limit and patience (`None`: fixed epochs) of `stopping`.
fn limits(stopping: Stopping) -> (usize, Option<usize>) {
    match stopping {
        Stopping::Early {
            patience,
            max_epochs,
        } => (max_epochs, Some(patience)),
        Stopping::Fixed { epochs } => (epochs, None),
    }
}

/// Why a member that neither stopped early nor was interrupted stopped.
fn ran_out(stopping: Stopping) -> &'static str {
    match stopping {
        Stopping::Early { .. } => "max-epochs",
        Stopping::Fixed { .. } => "epochs",
    }
}

/// Writes a checkpoint from every member's run state and trainer state.
type WriteFn<'c> = dyn FnMut(Vec<TrainState>, &[LoopState], &Setup) -> Result<()> + 'c;

/// Checkpoints, whichever kind of run writes them.
pub(super) struct Checkpoints<'c> {
    every: usize,
    min_seconds: f64,
    last: Instant,
    write: Box<WriteFn<'c>>,
}

impl<'c> Checkpoints<'c> {
    pub(super) fn one(c: Checkpointer<'c>) -> Checkpoints<'c> {
        let write = c.write;
        Checkpoints {
            every: c.every,
            min_seconds: c.min_seconds,
            last: Instant::now(),
            write: Box::new(move |mut saved, states, setup| {
                let state = saved.pop().expect("one run's state");
                write(state, &states[0], &setup.x_scaler, &setup.y_scaler)
            }),
        }
    }

    pub(super) fn members(c: MembersCheckpointer<'c>) -> Checkpoints<'c> {
        let write = c.write;
        Checkpoints {
            every: c.every,
            min_seconds: c.min_seconds,
            last: Instant::now(),
            write: Box::new(move |saved, states, setup| {
                write(
                    saved.into_iter().zip(states.iter().cloned()).collect(),
                    &setup.x_scaler,
                    &setup.y_scaler,
                )
            }),
        }
    }

    fn due(&self, epoch: usize) -> bool {
        epoch.is_multiple_of(self.every.max(1))
            && self.last.elapsed().as_secs_f64() >= self.min_seconds
    }

    fn write(&mut self, runs: &mut dyn Runs, states: &[LoopState], setup: &Setup) -> Result<()> {
        (self.write)(runs.save_state()?, states, setup)?;
        self.last = Instant::now();
        Ok(())
    }
}

/// How a run ended: each member's trainer state, why it stopped, its last learning rate and
/// its kept parameters.
pub(super) struct Ended {
    pub states: Vec<LoopState>,
    pub reasons: Vec<&'static str>,
    pub lrs: Vec<f32>,
    pub params: Vec<Vec<f32>>,
}

/// Runs the epochs of `runs` (continuing from `resume`'s states, already loaded into the
/// run) until every member has stopped, the epochs run out or the observer stops it.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_epochs(
    runs: &mut dyn Runs,
    setup: &Setup,
    opts: &TrainOptions,
    members: Members<'_>,
    resume: Option<Vec<LoopState>>,
    mut checkpoints: Option<Checkpoints<'_>>,
    train_rows: usize,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
    note: &mut dyn FnMut(&str),
) -> Result<Ended> {
    let scaler = setup.y_scaler.log_jacobian();
    let jac = (scaler + setup.log_jacobian.0, scaler + setup.log_jacobian.1);
    let own: Vec<Own> = match members.own {
        Some(own) => own.to_vec(),
        None => vec![
            Own {
                jac,
                stopping: opts.stopping,
            };
            members.seeds.len()
        ],
    };
    let mut state = EpochLoop::new(opts, members, resume, own)?;
    let first = state.states.iter().map(|s| s.completed).max().unwrap_or(0) + 1;
    let mut interrupted = false;
    for epoch in first..=state.max_epochs {
        let active: Vec<usize> = (0..state.m())
            .filter(|&i| state.stop[i].is_none())
            .collect();
        if active.is_empty() {
            break;
        }
        let started = Instant::now();
        let Some(stats) = state.attempt(runs, epoch, observer, note)? else {
            interrupted = true;
            break;
        };
        let seconds = started.elapsed().as_secs_f64();
        let keep = state.record(epoch, &active, &stats, seconds);
        if keep.iter().any(|&k| k) {
            runs.keep_best(&keep)?;
        }
        let mut written = false;
        if let Some(c) = checkpoints.as_mut().filter(|c| c.due(epoch)) {
            c.write(runs, &state.states, setup)?;
            written = true;
        }
        if !observer(&TrainEvent::Epoch(
            state.report(epoch, &active, train_rows, seconds),
        )) {
            interrupted = true;
            if let Some(c) = checkpoints.as_mut().filter(|_| !written) {
                c.write(runs, &state.states, setup)?;
            }
            break;
        }
        state.stop_stale(epoch, &active, note);
    }
    state.end(runs, interrupted)
}

/// The loop's state across epochs, one entry per member.
struct EpochLoop<'a> {
    opts: &'a TrainOptions,
    members: Members<'a>,
    /// Each member's own standardisation and stopping. Its `jac` is ln|dz/dy| of the map
    /// from original to standardised target units (the standardisation's, plus the mean of
    /// the target transforms' over the training rows, and over the validation rows): NLLs
    /// in original units are the standardised ones less this.
    own: Vec<Own>,
    /// The most epochs any member may run.
    max_epochs: usize,
    states: Vec<LoopState>,
    rngs: Vec<ChaCha8Rng>,
    /// Why a member has stopped; `None` while it trains.
    stop: Vec<Option<&'static str>>,
    lrs: Vec<f32>,
    run_seconds: f64,
    epochs_run: usize,
}

impl<'a> EpochLoop<'a> {
    fn new(
        opts: &'a TrainOptions,
        members: Members<'a>,
        resume: Option<Vec<LoopState>>,
        own: Vec<Own>,
    ) -> Result<EpochLoop<'a>> {
        let m = members.seeds.len();
        let max_epochs = own.iter().map(|o| limits(o.stopping).0).max().unwrap_or(0);
        let states = resume.unwrap_or_else(|| (0..m).map(|_| LoopState::new(opts)).collect());
        let mut rngs = Vec::with_capacity(m);
        for (&seed, state) in members.seeds.iter().zip(&states) {
            let mut rng = rng_for(seed, STREAM_SHUFFLE);
            rng.set_word_pos(
                state
                    .shuffle_position
                    .parse()
                    .map_err(|_| Error::config("checkpoint: malformed shuffle position"))?,
            );
            rngs.push(rng);
        }
        // A member that had stopped early stays stopped (one that ran out of epochs has none
        // left to run).
        let stop = states
            .iter()
            .zip(&own)
            .map(|(s, o)| match (limits(o.stopping).1, s.best) {
                (Some(p), Some((b, _))) if s.completed - b >= p => Some("early-stopping"),
                _ => None,
            })
            .collect();
        Ok(EpochLoop {
            opts,
            lrs: states.iter().map(|s| s.lr).collect(),
            members,
            own,
            max_epochs,
            states,
            rngs,
            stop,
            run_seconds: 0.0,
            epochs_run: 0,
        })
    }

    fn m(&self) -> usize {
        self.members.seeds.len()
    }

    /// Runs the epoch, again and again after faults: `None` when the observer stopped it.
    fn attempt(
        &mut self,
        runs: &mut dyn Runs,
        epoch: usize,
        observer: &mut dyn FnMut(&TrainEvent) -> bool,
        note: &mut dyn FnMut(&str),
    ) -> Result<Option<Vec<EpochStats>>> {
        runs.snapshot()?;
        let training: Vec<bool> = self.stop.iter().map(Option::is_none).collect();
        let mut fresh = training.clone();
        let mut faults = vec![0usize; self.m()];
        loop {
            let step = StepConfig {
                lr: self.lrs[0],
                ..self.opts.step
            };
            let e = Epoch {
                number: epoch,
                step: &step,
                lrs: &self.lrs,
                training: &training,
                fresh: &fresh,
                rngs: &mut self.rngs,
            };
            let Some(stats) = runs.epoch(e, observer)? else {
                return Ok(None);
            };
            let bad: Vec<usize> = (0..self.m())
                .filter(|&i| training[i] && !stats[i].finite)
                .collect();
            if bad.is_empty() {
                return Ok(Some(stats));
            }
            for &i in &bad {
                faults[i] += 1;
                self.give_up_after_retries(i, epoch, &stats[i], faults[i])?;
            }
            // Every member back to the epoch's start; the others repeat it to the same bits.
            runs.restore()?;
            fresh.fill(false);
            for i in bad {
                self.halve_lr(i, epoch, &stats[i], observer, note);
                fresh[i] = true;
            }
        }
    }

    /// Member `i`'s epoch went NaN or infinite for the `faults`-th time: an error past
    /// [`MAX_RETRIES`].
    fn give_up_after_retries(
        &self,
        i: usize,
        epoch: usize,
        stats: &EpochStats,
        faults: usize,
    ) -> Result<()> {
        let batch = first_bad_batch(stats);
        if faults > MAX_RETRIES {
            let who = if self.members.ensemble {
                format!(
                    "ensemble member {} (seed {}): ",
                    i + 1,
                    self.members.seeds[i]
                )
            } else {
                String::new()
            };
            return Err(Error::Numerical(format!(
                "{who}epoch {epoch} produced NaN or infinite values{batch} {faults} times, down to --lr {}; no model was written. \
                 Try a lower --lr (it was {}), a larger --l2, or look for extreme values in the data",
                self.lrs[i], self.opts.step.lr
            )));
        }
        Ok(())
    }

    /// Member `i` runs the epoch again at half its learning rate (which stays halved), and
    /// the observer (and, for an ensemble, `note`) hears of it.
    fn halve_lr(
        &mut self,
        i: usize,
        epoch: usize,
        stats: &EpochStats,
        observer: &mut dyn FnMut(&TrainEvent) -> bool,
        note: &mut dyn FnMut(&str),
    ) {
        let batch = first_bad_batch(stats);
        self.lrs[i] /= 2.0;
        let recovery = Recovery {
            epoch,
            batch: stats.first_bad_batch.map(|b| b + 1),
            lr: self.lrs[i],
        };
        observer(&TrainEvent::Recovered {
            epoch,
            batch: recovery.batch,
            lr: recovery.lr,
        });
        self.states[i].recoveries.push(recovery);
        if self.members.ensemble {
            note(&format!(
                "member {}: epoch {epoch} went NaN or infinite{batch}; running it again at --lr {}",
                i + 1,
                self.lrs[i]
            ));
        }
    }

    /// Records a completed epoch in each active member's state; returns which members keep
    /// their parameters now (an improved validation NLL, or every epoch when the epochs are
    /// fixed).
    fn record(
        &mut self,
        epoch: usize,
        active: &[usize],
        stats: &[EpochStats],
        seconds: f64,
    ) -> Vec<bool> {
        self.run_seconds += seconds;
        self.epochs_run += 1;
        let mut keep = vec![false; self.m()];
        for &i in active {
            let st = &mut self.states[i];
            st.completed = epoch;
            let jac = self.own[i].jac;
            let train_nll = stats[i].train_nll - jac.0;
            let val_nll = stats[i].val_nll.map(|v| v - jac.1);
            st.history.push(EpochRecord {
                epoch,
                train_nll,
                val_nll,
            });
            let improved = val_nll.is_some_and(|v| st.best.is_none_or(|(_, b)| v < b));
            if improved {
                st.best = Some((epoch, val_nll.expect("improved implies a value")));
            }
            keep[i] = improved || limits(self.own[i].stopping).1.is_none();
            st.lr = self.lrs[i];
            st.shuffle_position = self.rngs[i].get_word_pos().to_string();
        }
        keep
    }

    /// The epoch as the observer hears of it: the active members' mean NLLs, and the rows of
    /// all of them per second.
    fn report(&self, epoch: usize, active: &[usize], rows: usize, seconds: f64) -> EpochReport {
        let (mut train_sum, mut val_sum, mut val_count) = (0.0, 0.0, 0usize);
        for &i in active {
            let last = self.states[i].history.last().expect("a recorded epoch");
            train_sum += last.train_nll;
            if let Some(v) = last.val_nll {
                val_sum += v;
                val_count += 1;
            }
        }
        let m = self.m();
        let bests: Vec<(usize, f64)> = self.states.iter().filter_map(|s| s.best).collect();
        EpochReport {
            epoch,
            max_epochs: self.max_epochs,
            train_nll: train_sum / active.len() as f64,
            val_nll: (val_count > 0).then(|| val_sum / val_count as f64),
            best_val_nll: (bests.len() == m)
                .then(|| bests.iter().map(|b| b.1).sum::<f64>() / m as f64),
            best_epoch: bests.iter().map(|b| b.0).max().unwrap_or(0),
            rows_per_sec: (rows * active.len()) as f64 / seconds.max(1e-9),
            seconds,
            eta_seconds: (self.max_epochs - epoch) as f64 * self.run_seconds
                / self.epochs_run.max(1) as f64,
        }
    }

    /// Early stopping: members whose best epoch is `patience` epochs behind stop; and members
    /// that have run their own epoch limit (below the run's: a packed run's) stop there.
    fn stop_stale(&mut self, epoch: usize, active: &[usize], note: &mut dyn FnMut(&str)) {
        for &i in active {
            let (most, patience) = limits(self.own[i].stopping);
            let Some(p) = patience else {
                if epoch >= most {
                    self.stop[i] = Some(ran_out(self.own[i].stopping));
                }
                continue;
            };
            if epoch >= most && self.states[i].best.is_none_or(|(b, _)| epoch - b < p) {
                self.stop[i] = Some(ran_out(self.own[i].stopping));
                continue;
            }
            if let Some((best_epoch, best_nll)) = self.states[i].best
                && epoch - best_epoch >= p
            {
                self.stop[i] = Some("early-stopping");
                if self.members.ensemble {
                    note(&format!(
                        "member {} stopped at epoch {epoch}: best epoch {best_epoch}, validation NLL {best_nll:.4}",
                        i + 1
                    ));
                }
            }
        }
    }

    /// Each member's kept parameters and why it stopped.
    fn end(self, runs: &mut dyn Runs, interrupted: bool) -> Result<Ended> {
        if self.states.iter().all(|s| s.completed == 0) {
            return Err(Error::Interrupted(
                "interrupted before the first epoch finished; no model was written".into(),
            ));
        }
        let reasons = self
            .stop
            .iter()
            .zip(&self.own)
            .map(|(s, o)| match s {
                Some(r) => *r,
                None if interrupted => "interrupted",
                None => ran_out(o.stopping),
            })
            .collect();
        Ok(Ended {
            params: runs.best_params()?,
            states: self.states,
            reasons,
            lrs: self.lrs,
        })
    }
}

/// One network's run through the loop, what an epoch is being `epoch`'s: continuing from
/// `resume` (loaded first), writing checkpoints through `checkpointer`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_one<'f>(
    run: &mut dyn TrainRun,
    epoch: &'f mut EpochFn<'f>,
    setup: &Setup,
    opts: &TrainOptions,
    resume: Option<Resume>,
    checkpointer: Option<Checkpointer<'_>>,
    path: &std::path::Path,
    train_rows: usize,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Ended> {
    let mut runs = OneRun { run, epoch };
    let resume = match resume {
        Some(r) => Some(resume_runs(&mut runs, vec![r], setup, path)?),
        None => None,
    };
    let members = Members {
        seeds: &[opts.seed],
        ensemble: false,
        own: None,
    };
    run_epochs(
        &mut runs,
        setup,
        opts,
        members,
        resume,
        checkpointer.map(Checkpoints::one),
        train_rows,
        observer,
        &mut |_| {},
    )
}

/// " (first at batch N)" where the statistics know the first bad batch.
fn first_bad_batch(stats: &EpochStats) -> String {
    stats
        .first_bad_batch
        .map(|b| format!(" (first at batch {})", b + 1))
        .unwrap_or_default()
}

/// Checks that each member's checkpoint was made from the data `setup` comes from (the same
/// standardisation), loads the members' run states into `runs`, and returns their trainer
/// states.
pub(super) fn resume_runs(
    runs: &mut dyn Runs,
    resume: Vec<Resume>,
    setup: &Setup,
    path: &std::path::Path,
) -> Result<Vec<LoopState>> {
    let mut trainers = Vec::with_capacity(resume.len());
    let mut saved = Vec::with_capacity(resume.len());
    for r in resume {
        if setup.x_scaler != r.x_scaler || setup.y_scaler != r.y_scaler {
            return Err(Error::config(format!(
                "{}: the training data differ from the checkpoint's (their statistics changed); cannot resume",
                path.display()
            )));
        }
        trainers.push(r.trainer);
        saved.push(r.state);
    }
    runs.load_state(&saved)?;
    Ok(trainers)
}

/// The models a run ends with, one per member: its kept parameters, the record of its
/// training, and how it uses its components on `usage_rows`.
#[allow(clippy::too_many_arguments)]
pub(super) fn models(
    ended: Ended,
    setup: &Setup,
    backend: &mut dyn Backend,
    opts: &TrainOptions,
    seeds: &[u64],
    counts: (usize, usize),
    usage_rows: &Dataset,
) -> Result<Vec<Model>> {
    let name = backend.name();
    let Ended {
        states,
        reasons,
        lrs,
        params,
    } = ended;
    let mut models = Vec::with_capacity(seeds.len());
    for (i, (state, params)) in states.into_iter().zip(params).enumerate() {
        let member_opts = TrainOptions {
            seed: seeds[i],
            ..opts.clone()
        };
        let model = build_model(
            setup.clone(),
            params,
            name.clone(),
            counts,
            &member_opts,
            state,
            reasons[i],
            lrs[i],
        );
        models.push(with_component_usage(model, backend, usage_rows)?);
    }
    Ok(models)
}

/// The model one member's run ends with: its kept parameters and the record of its training.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_model(
    setup: Setup,
    params: Vec<f32>,
    backend_name: String,
    (train_rows, val_rows): (usize, usize),
    opts: &TrainOptions,
    state: LoopState,
    stop_reason: &str,
    final_lr: f32,
) -> Model {
    let LoopState {
        completed,
        history,
        best,
        recoveries,
        ..
    } = state;
    let constant_features = setup
        .constant_features
        .iter()
        .map(|&c| setup.features[c].clone())
        .collect();
    let saved_epoch = match opts.stopping {
        Stopping::Early { .. } => best.map(|b| b.0).unwrap_or(completed),
        Stopping::Fixed { .. } => completed,
    };
    let mut model = Model::new(
        setup.arch,
        setup.features,
        setup.targets,
        setup.x_scaler,
        setup.y_scaler,
        params,
    )
    .with_transforms(&setup.transforms);
    model.training = Some(TrainingInfo {
        mdn_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: backend_name,
        seed: opts.seed,
        lr: opts.step.lr,
        beta1: opts.step.beta1,
        beta2: opts.step.beta2,
        eps: opts.step.eps,
        l2: opts.step.l2,
        batch_size: opts.step.batch_size,
        train_rows,
        val_rows,
        epochs: completed,
        saved_epoch,
        best_epoch: best.map(|b| b.0),
        best_val_nll: best.map(|b| b.1),
        stop_reason: stop_reason.to_string(),
        final_lr,
        components: None,
        baseline_val_nll: None,
        epoch_choice: None,
        ensemble_val_nll: None,
        constant_features,
        rows_left_out: 0,
        clip_norm: opts.step.clip_norm,
        recoveries,
        history,
    });
    model
}

/// Records how the trained model uses its components on `data` (mode-collapse diagnostics).
pub(super) fn with_component_usage(
    mut model: Model,
    backend: &mut dyn Backend,
    data: &Dataset,
) -> Result<Model> {
    let usage = model.component_usage(backend, data)?;
    if let Some(info) = model.training.as_mut() {
        info.components = Some(usage);
    }
    Ok(model)
}
