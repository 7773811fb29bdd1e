//! Where a job's networks are fitted ([`Fitter`]): on a backend of the job's own, one after
//! another, or by a [`Packer`] that fits the networks of many jobs together (`--group-by`
//! on a GPU). A job hands its fits over (a small data set's cross-validation folds at once,
//! then its refit) and gets its models back, each the bits its fit alone would give.
//!
//! A packer works in rounds: when every job it serves is waiting on fits (or has none left),
//! it takes all their fits, sorts those of one kind (one network shape, the same steps) by
//! their rows, and trains them [`MOST_PACKED`] at a time in packed runs
//! ([`crate::train::train_packed`]). A fit that cannot be packed (its backend would not take
//! a packed member's steps for it alone, or it is the only one of its kind), and every fit of a
//! packed run that failed, trains alone, so that a group that fails fails alone, with its
//! own message.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::{MOST_PACKED, PackedGroup, Stopping, TrainEvent, TrainOptions};

/// One network to fit: its training rows, its validation rows (for early stopping, or to
/// score a cross-validation fold) and its options.
pub(super) struct Fit {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub opts: TrainOptions,
    /// The group's model itself (not a cross-validation fold): a packer trains these first
    /// in a round, so that a stop keeps them (as the groups under way).
    pub model: bool,
}

/// The models of [`Fitter::fit_all`], and whether the run was stopped meanwhile (then there
/// may be fewer models than fits, and the last may have stopped early).
pub(super) struct Fitted {
    pub models: Vec<Model>,
    pub stopped: bool,
}

/// Where a job's networks train.
pub(super) enum Fitter {
    /// A backend of the job's own.
    Own(Box<dyn Backend>),
    /// A packer shared with other jobs (each group's job of `--group-by` on a GPU).
    Shared(Arc<Packer>),
}

impl Fitter {
    /// The backend's name (the CPU, or the GPU adapter).
    pub fn name(&self) -> String {
        match self {
            Fitter::Own(b) => b.name(),
            Fitter::Shared(p) => p.name.clone(),
        }
    }

    /// What a run's bits depend on besides its data and options ([`Backend::identity`]).
    pub fn identity(&self) -> String {
        match self {
            Fitter::Own(b) => b.identity(),
            Fitter::Shared(p) => p.identity.clone(),
        }
    }

    /// The job's own backend, for what only it runs (a streamed run, an ensemble's members,
    /// checkpoints); an error for a shared packer, whose jobs never need one.
    pub fn backend(&mut self) -> Result<&mut dyn Backend> {
        match self {
            Fitter::Own(b) => Ok(b.as_mut()),
            Fitter::Shared(_) => Err(Error::Backend(
                "internal: a job whose networks train packed with other groups' asked for a \
                 backend of its own (only a streamed run, an ensemble or checkpoints need one, \
                 and --group-by packs none of them)"
                    .into(),
            )),
        }
    }

    /// Fits each of `fits`, telling `done` of each (its index among them) as it ends. On its
    /// own backend, one after another, each with its events to `observer` (false stops the
    /// fit after its epoch, its best epoch kept, and fits no other); on a shared packer
    /// together with other jobs' fits, the events unheard and the packer's cancel flag
    /// stopping them. The models are those `crate::train::train` gives each fit alone.
    pub fn fit_all(
        &mut self,
        fits: Vec<Fit>,
        done: &mut dyn FnMut(usize, &Model),
        observer: &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Fitted> {
        match self {
            Fitter::Own(backend) => {
                let mut stopped = false;
                let mut models = Vec::with_capacity(fits.len());
                for (i, f) in fits.iter().enumerate() {
                    let model = crate::train::train(
                        backend.as_mut(),
                        &f.train,
                        f.val.as_ref(),
                        &f.opts,
                        &mut |e| {
                            let go = observer(e);
                            stopped |= !go;
                            go
                        },
                    )?;
                    if stopped {
                        // Cut short: no fold report or choice from it.
                        models.push(model);
                        break;
                    }
                    done(i, &model);
                    models.push(model);
                }
                Ok(Fitted { models, stopped })
            }
            Fitter::Shared(packer) => {
                let answers = packer.ask(fits)?;
                let mut models = Vec::with_capacity(answers.len());
                for (i, a) in answers.into_iter().enumerate() {
                    let model = a?;
                    done(i, &model);
                    models.push(model);
                }
                let stopped = packer.stopped.load(Ordering::Relaxed)
                    || models.iter().any(|m| {
                        m.training
                            .as_ref()
                            .is_some_and(|t| t.stop_reason == "interrupted")
                    });
                Ok(Fitted { models, stopped })
            }
        }
    }
}

/// Fits the networks of many jobs together: the jobs run on threads of their own and hand
/// their fits to [`Packer::ask`]; one thread holding the backend serves them
/// ([`Packer::serve`]), a round at a time.
pub(super) struct Packer {
    name: String,
    identity: String,
    /// What `--device auto` chose and why.
    pub device_note: Option<String>,
    /// The serving thread saw the cancel flag: its jobs stop.
    stopped: AtomicBool,
    round: Mutex<Round>,
    wake: Condvar,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").field("name", &self.name).finish()
    }
}

/// An ask's number and its fits' models (or errors), in its fits' order.
type Answer = (u64, Vec<Result<Model>>);

/// What the packer and its jobs share.
#[derive(Default)]
struct Round {
    /// Job threads not yet ended: the packer serves until none is left.
    workers: usize,
    /// Jobs under way: a round starts when each has asked.
    busy: usize,
    /// The fits asked for and not yet taken, by the ask's number.
    asks: Vec<(u64, Vec<Fit>)>,
    /// Each ask's models (or errors), in its fits' order.
    answers: HashMap<u64, Vec<Result<Model>>>,
    next: u64,
    /// The serving thread ended (a panic): asks are refused rather than left waiting.
    closed: bool,
    told: Told,
}

/// What the packer did, for the note at the end.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Told {
    pub packed_runs: usize,
    pub packed_fits: usize,
    pub alone: usize,
}

impl Packer {
    /// A packer for `workers` job threads (each calls [`Packer::leave`] as it ends) on the
    /// backend named `name`.
    pub fn new(
        workers: usize,
        name: String,
        identity: String,
        device_note: Option<String>,
    ) -> Packer {
        Packer {
            name,
            identity,
            device_note,
            stopped: AtomicBool::new(false),
            round: Mutex::new(Round {
                workers,
                ..Round::default()
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job has started: until the returned guard drops, rounds wait for its asks.
    pub fn busy(&self) -> Busy<'_> {
        self.lock().busy += 1;
        Busy(self)
    }

    /// A job thread has ended (called once by each of the `workers`, also when it panics:
    /// hold the returned guard).
    pub fn leave(&self) -> Leave<'_> {
        Leave(self)
    }

    /// The backend's name (the CPU, or the GPU adapter).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the packer has done so far.
    pub fn told(&self) -> Told {
        self.lock().told
    }

    /// Whether the serving thread has ended: a job that starts now would only fail.
    pub fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Hands `fits` to the packer and waits for their models.
    fn ask(&self, fits: Vec<Fit>) -> Result<Vec<Result<Model>>> {
        let mut round = self.lock();
        let id = round.next;
        round.next += 1;
        round.asks.push((id, fits));
        self.wake.notify_all();
        loop {
            if let Some(answer) = round.answers.remove(&id) {
                return Ok(answer);
            }
            if round.closed {
                return Err(Error::Backend(
                    "the thread training the groups' networks together ended".into(),
                ));
            }
            round = self.wake.wait(round).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Serves the jobs' asks on `backend` until every job thread has ended: a round whenever
    /// each job under way is waiting on its fits. `cancel` stops the round's runs after their
    /// current epochs (their best epochs kept) and tells the jobs they were stopped. `tell`
    /// hears where each round is.
    pub fn serve(
        &self,
        backend: &mut dyn Backend,
        cancel: &AtomicBool,
        tell: &mut dyn FnMut(Packing),
    ) {
        let _closes = Closes(self);
        loop {
            let asks = {
                let mut round = self.lock();
                loop {
                    if round.workers == 0 {
                        return;
                    }
                    if !round.asks.is_empty() && round.asks.len() >= round.busy {
                        break std::mem::take(&mut round.asks);
                    }
                    round = self.wake.wait(round).unwrap_or_else(|e| e.into_inner());
                }
            };
            let (answers, told) = fit_round(backend, asks, cancel, tell);
            if cancel.load(Ordering::Relaxed) {
                self.stopped.store(true, Ordering::Relaxed);
            }
            let mut round = self.lock();
            round.answers.extend(answers);
            round.told.packed_runs += told.packed_runs;
            round.told.packed_fits += told.packed_fits;
            round.told.alone += told.alone;
            self.wake.notify_all();
        }
    }
}

/// Where a packer's round is, for a progress display: training `networks` networks
/// together (1: a network alone), the `run`-th (from 1) of the round's `runs` trainings,
/// after their `epoch`-th epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    pub networks: usize,
    pub run: usize,
    pub runs: usize,
    pub epoch: usize,
}

/// One round: every fit asked for, those of a kind packed by rows, the rest alone; where it
/// is told to `tell` after each epoch.
fn fit_round(
    backend: &mut dyn Backend,
    asks: Vec<(u64, Vec<Fit>)>,
    cancel: &AtomicBool,
    tell: &mut dyn FnMut(Packing),
) -> (Vec<Answer>, Told) {
    let mut told = Told::default();
    let mut out: Vec<Vec<Option<Result<Model>>>> = asks
        .iter()
        .map(|(_, fits)| fits.iter().map(|_| None).collect())
        .collect();
    // The fits of a kind: the same network shape and steps (the seed and the stopping
    // are each fit's own).
    let mut kinds: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (a, (_, fits)) in asks.iter().enumerate() {
        for (i, f) in fits.iter().enumerate() {
            let shape = TrainOptions {
                seed: 0,
                split_seed: None,
                stopping: Stopping::Fixed { epochs: 0 },
                ..f.opts.clone()
            };
            let key = format!(
                "{} {} {} {shape:?}",
                f.train.features.len(),
                f.train.targets.len(),
                f.val.is_some()
            );
            kinds.entry(key).or_default().push((a, i));
        }
    }
    // The round's trainings: a packed run for each part of a kind, one for a network alone.
    let runs: usize = kinds.values().map(|k| k.len().div_ceil(MOST_PACKED)).sum();
    let mut run = 0;
    // The kinds with groups' models first: a stop then keeps those under way.
    let mut kinds: Vec<(String, Vec<(usize, usize)>)> = kinds.into_iter().collect();
    kinds.sort_by_key(|(key, fits)| (!fits.iter().any(|&(a, i)| asks[a].1[i].model), key.clone()));
    for (_, mut kind) in kinds {
        // Alike sizes together: an epoch is as long as its largest group's.
        kind.sort_by_key(|&(a, i)| asks[a].1[i].train.rows);
        for part in kind.chunks(MOST_PACKED) {
            run += 1;
            let mut heard = |networks: usize, e: &TrainEvent| {
                if let TrainEvent::Epoch(r) = e {
                    tell(Packing {
                        networks,
                        run: run.min(runs),
                        runs,
                        epoch: r.epoch,
                    });
                }
                !cancel.load(Ordering::Relaxed)
            };
            // Stopped, no other network starts (the loop below says so for each).
            if part.len() > 1 && !cancel.load(Ordering::Relaxed) {
                let groups: Vec<PackedGroup<'_>> = part
                    .iter()
                    .map(|&(a, i)| {
                        let f = &asks[a].1[i];
                        PackedGroup {
                            train: &f.train,
                            val: f.val.as_ref(),
                            opts: f.opts.clone(),
                        }
                    })
                    .collect();
                match crate::train::train_packed(backend, &groups, &mut |e| heard(part.len(), e)) {
                    Ok(Some(models)) if models.len() == part.len() => {
                        for (&(a, i), m) in part.iter().zip(models) {
                            out[a][i] = Some(Ok(m));
                        }
                        told.packed_runs += 1;
                        told.packed_fits += part.len();
                        continue;
                    }
                    Ok(_) => {}
                    // Each then trains alone, a failing one with its own message.
                    Err(e) => log::info!(
                        "a packed run of {} networks failed ({e}); each trains alone",
                        part.len()
                    ),
                }
            }
            for &(a, i) in part {
                if cancel.load(Ordering::Relaxed) {
                    out[a][i] = Some(Err(Error::Interrupted(
                        "stopped before the network trained".into(),
                    )));
                    continue;
                }
                let f = &asks[a].1[i];
                out[a][i] = Some(crate::train::train(
                    backend,
                    &f.train,
                    f.val.as_ref(),
                    &f.opts,
                    &mut |e| heard(1, e),
                ));
                told.alone += 1;
            }
        }
    }
    let answers = asks
        .iter()
        .zip(out)
        .map(|((id, _), models)| {
            let models = models
                .into_iter()
                .map(|m| m.expect("every fit of a round is trained"))
                .collect();
            (*id, models)
        })
        .collect();
    (answers, told)
}

/// A job under way ([`Packer::busy`]).
pub(super) struct Busy<'a>(&'a Packer);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut round = self.0.lock();
        round.busy -= 1;
        self.0.wake.notify_all();
    }
}

/// A job thread, ended when dropped ([`Packer::leave`]).
pub(super) struct Leave<'a>(&'a Packer);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut round = self.0.lock();
        round.workers -= 1;
        self.0.wake.notify_all();
    }
}

/// The serving thread's end, also by a panic: jobs still asking are refused.
struct Closes<'a>(&'a Packer);

impl Drop for Closes<'_> {
    fn drop(&mut self) {
        let mut round = self.0.lock();
        round.closed = true;
        self.0.wake.notify_all();
    }
}
