//! How a deep ensemble's members run, and what the ensemble adds: on a GPU the members train
//! together in the same dispatches (in memory, and when resumed, from members at one Adam
//! step); on the CPU side by side, the threads shared out; otherwise (a GPU run streamed or
//! resumed from members at different steps, or one CPU thread) one after another. The rows, a small data
//! set's cross-validation and a CSV's conversion are done once for all of them. Members
//! training side by side share one checkpoint file, a slot each ([`MemberSink`]). At the end
//! the members become one model, with the ensemble's own validation NLL. Each member's run
//! itself is `network`'s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::network::{advice, warn_if_no_better};
use super::save::MemberSink;
use super::{JobEvent, Plan, ResolvedJob};
use crate::backend::{self, DeviceChoice};
use crate::checkpoint::EnsembleCheckpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::{TrainEvent, split_validation_by};

impl ResolvedJob {
    /// [`ResolvedJob::train`] but for the warnings on the finished model.
    pub(super) fn train_all(
        &self,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Model> {
        let m = self.job.ensemble.max(1);
        if m == 1 {
            return Ok(self
                .train_members(&[self.job.seed], observer, cancel)?
                .remove(0));
        }
        let mut shared = self.clone();
        self.read_and_cross_validate_once(&mut shared, observer, cancel)?;
        // A streamed CSV is converted once for all the members (the file is removed when the
        // run ends, held until then by `_converted`).
        let _converted = match self
            .job
            .data
            .as_ref()
            .filter(|p| self.streamed && !crate::data::is_npy(p))
        {
            Some(p) => {
                let tmp = self.convert_to_stream(p, observer, cancel)?;
                shared.converted = Some(tmp.path().to_path_buf());
                Some(tmp)
            }
            None => None,
        };
        if self.streamed && self.ensemble_resume.is_none() {
            self.read_val_once(&mut shared, observer)?;
        }
        let members = MemberJobs::new(self, shared);
        let on_cpu = match self.job.device {
            DeviceChoice::Cpu => true,
            DeviceChoice::Auto => backend::auto_device().0 == DeviceChoice::Cpu,
            _ => false,
        };
        if !on_cpu && !self.streamed && self.resumes_together() {
            return self.train_on_gpu(&members, observer, cancel);
        }
        // On the CPU the members train side by side, the threads shared out among them
        // (each member's bits depend only on its seed and its share, so a run is
        // reproducible for the same --threads).
        let threads = self.job.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let side_by_side = threads.min(m);
        let models = if on_cpu && side_by_side > 1 {
            self.train_shared_out(&members, threads, side_by_side, observer, cancel)?
        } else {
            self.train_in_turn(&members, observer, cancel)?
        };
        let models = warn_if_cut(models, m, observer);
        members.shared.finish_ensemble(models, observer)
    }

    /// The rows once, for every member, and a small data set's epochs cross-validated once
    /// for all of them (judged once, for the whole ensemble): into `shared`. Not for streamed
    /// runs or resumed ensembles.
    fn read_and_cross_validate_once(
        &self,
        shared: &mut ResolvedJob,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<()> {
        if self.streamed || self.ensemble_resume.is_some() {
            return Ok(());
        }
        if shared.arrays.is_none() {
            let data = self.read_data_telling(observer)?;
            shared.arrays = Some(std::sync::Arc::new((data, None)));
        }
        self.read_val_once(shared, observer)?;
        let data = &shared.arrays.as_ref().expect("just set").0;
        let has_val =
            self.job.val.is_some() || shared.arrays.as_ref().is_some_and(|a| a.1.is_some());
        if self.job.cross_validates(data.rows) && !has_val {
            let (mut fitter, _) = self.open_fitter()?;
            let choice = self.choose_epochs(data, &mut fitter, observer, cancel)?;
            // Judged once for the whole ensemble (its members stay quiet about it).
            let k = choice
                .components
                .iter()
                .find(|c| c.chosen)
                .map_or(self.options.components, |c| c.components);
            warn_if_no_better(
                "cross-validated",
                choice.cv_nll,
                choice.baseline_cv_nll,
                "on the same folds",
                &advice(k),
                observer,
            );
            shared.epoch_choice = Some(choice);
        }
        Ok(())
    }

    /// Whether the members can train together on a GPU: always from the start; resumed, only
    /// when they are at one Adam step (as training together leaves them; on a GPU a
    /// checkpoint of members trained side by side resumes them one after another).
    fn resumes_together(&self) -> bool {
        match &self.ensemble_resume {
            None => true,
            Some(c) => {
                let steps: Vec<Option<u64>> = c
                    .members
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.state.adam.step))
                    .collect();
                steps.iter().all(|s| s.is_some() && *s == steps[0])
            }
        }
    }

    /// On a GPU: every member in the same dispatches.
    fn train_on_gpu(
        &self,
        members: &MemberJobs<'_>,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Model> {
        let (seeds, m) = (&members.seeds, members.seeds.len());
        observer(&JobEvent::Note(&format!(
            "ensemble of {m}: trained together on the GPU (seeds {} to {})",
            seeds[0],
            seeds[m - 1]
        )));
        let mut all = members.job(0, self.job.threads);
        all.job.ensemble = m;
        all.resume = None;
        all.sink = None;
        all.ensemble_resume = self.ensemble_resume.clone();
        let models = all.train_members(seeds, observer, cancel)?;
        if cancel.load(Ordering::Relaxed) {
            observer(&JobEvent::Warning(&format!(
                "interrupted: the {m} members keep their best epochs so far"
            )));
        }
        members.shared.finish_ensemble(models, observer)
    }

    /// On the CPU: `side_by_side` members at a time, the threads shared out. A member that
    /// failed fails the run; after a cancel, the members that finished (or stopped at their
    /// best epoch) before the first missing one are kept.
    fn train_shared_out(
        &self,
        members: &MemberJobs<'_>,
        threads: usize,
        side_by_side: usize,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        let (seeds, m) = (&members.seeds, members.seeds.len());
        let share = (threads / side_by_side).max(1);
        observer(&JobEvent::Note(&format!(
            "ensemble of {m}: {side_by_side} members at a time, {share} thread(s) each (seeds {} to {})",
            seeds[0],
            seeds[m - 1]
        )));
        let results = self.run_on_threads(
            m,
            side_by_side,
            &|i| members.job(i, Some(share)),
            observer,
            cancel,
        );
        let mut models = Vec::with_capacity(m);
        let mut kept = true;
        for r in results {
            match r {
                Some(Ok(model)) if kept => models.push(model),
                Some(Ok(_)) | Some(Err(Error::Interrupted(_))) | None => kept = false,
                Some(Err(e)) => return Err(e),
            }
        }
        if models.is_empty() {
            return Err(Error::Interrupted(
                "interrupted before the first ensemble member finished an epoch; no model was written".into(),
            ));
        }
        Ok(models)
    }

    /// One member after another (on a GPU: streamed, or resumed from members at different
    /// steps; on the CPU: one thread); a cancel keeps the members done so far.
    fn train_in_turn(
        &self,
        members: &MemberJobs<'_>,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<Model>> {
        let (seeds, m) = (&members.seeds, members.seeds.len());
        let mut models = Vec::with_capacity(m);
        for i in 0..m {
            let one = members.job(i, self.job.threads);
            observer(&JobEvent::Note(&format!(
                "ensemble member {} of {m} (seed {})",
                i + 1,
                seeds[i]
            )));
            observer(&JobEvent::Member { index: i, of: m });
            match one.train_members(&seeds[i..=i], observer, cancel) {
                Ok(mut model) => {
                    let stopped = cancel.load(Ordering::Relaxed);
                    models.push(model.remove(0));
                    if stopped {
                        break;
                    }
                }
                Err(Error::Interrupted(_)) if !models.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(models)
    }

    /// The ensemble of `models`, with its own validation NLL (on the validation rows its
    /// members share, where there are any) recorded and reported beside its members'.
    fn finish_ensemble(
        &self,
        models: Vec<Model>,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<Model> {
        let mut model = Model::ensemble(models).map_err(Error::Backend)?;
        let Some(val) = self.ensemble_validation()? else {
            return Ok(model);
        };
        let mut cpu = crate::backend::CpuBackend::new();
        let ll = model.loglik(&mut cpu, &val)?;
        let nll = -ll.iter().sum::<f64>() / val.rows.max(1) as f64;
        let members: Vec<f64> = model
            .member_models()
            .filter_map(|m| {
                let info = m.training.as_ref()?;
                info.history
                    .iter()
                    .find(|e| e.epoch == info.saved_epoch)
                    .and_then(|e| e.val_nll)
            })
            .collect();
        let listed: Vec<String> = members.iter().map(|v| format!("{v:.4}")).collect();
        observer(&JobEvent::Note(&format!(
            "ensemble of {}: validation NLL {nll:.4}; its members' {} (mean {:.4})",
            model.ensemble_size(),
            listed.join(", "),
            members.iter().sum::<f64>() / members.len().max(1) as f64
        )));
        if let Some(info) = model.training.as_mut() {
            info.ensemble_val_nll = Some(nll);
        }
        Ok(model)
    }

    /// The validation file (`--val`) read once for all the members, so that its warnings are
    /// told once, not by each member.
    fn read_val_once(
        &self,
        shared: &mut ResolvedJob,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<()> {
        if let Some(path) = &self.job.val {
            let val = self.read_val_file(path, observer)?;
            shared.val_file = Some(std::sync::Arc::new(val));
        }
        Ok(())
    }

    /// The validation rows an ensemble's members share: `--val`, the arrays' validation set,
    /// or the split of the ensemble's seed. None for streamed runs and when every row was
    /// trained on (small data refitted after cross-validation, `--val-fraction 0`).
    fn ensemble_validation(&self) -> Result<Option<Dataset>> {
        if self.streamed {
            return Ok(None);
        }
        if let Some(path) = &self.job.val {
            return self.read_val_file(path, &mut |_| {}).map(Some);
        }
        if let Some(v) = self.arrays.as_ref().and_then(|a| a.1.clone()) {
            return Ok(Some(v));
        }
        if self.epoch_choice.is_some() || self.job.val_fraction() == 0.0 {
            return Ok(None);
        }
        let data = match &self.arrays {
            Some(a) => a.0.clone(),
            None => self.read_data_telling(&mut |_| {})?,
        };
        let fraction = self.job.val_fraction();
        let split = self.options.validation_split(fraction, data.rows);
        Ok(split_validation_by(&data, fraction, split)?.1)
    }

    /// Trains members `0..m` on `workers` threads; their events reach `observer` (on this
    /// thread): notes and warnings tagged with the member, the plan once, and the epochs of
    /// one member at a time (the lowest-numbered one still training), so that a progress
    /// display follows one run; a line when each member ends. A member not started because
    /// of a cancel is None.
    fn run_on_threads(
        &self,
        m: usize,
        workers: usize,
        member: &(dyn Fn(usize) -> ResolvedJob + Sync),
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Vec<Option<Result<Model>>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Owned)>();
        let results: std::sync::Mutex<Vec<Option<Result<Model>>>> =
            std::sync::Mutex::new((0..m).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let tx = tx.clone();
                let (next, results) = (&next, &results);
                scope.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= m || cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let one = member(i);
                        let mut send = |e: &JobEvent| {
                            if let Some(owned) = Owned::from(e) {
                                let _ = tx.send((i, owned));
                            }
                        };
                        let r = one
                            .train_members(&[one.options.seed], &mut send, cancel)
                            .map(|mut v| v.remove(0));
                        let _ = tx.send((i, Owned::Finished(member_end(&r))));
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                    }
                });
            }
            drop(tx);
            // The members' events, in the order they happen.
            let mut relay = Relay::new(m);
            for (i, e) in rx {
                relay.pass(i, e, observer);
            }
        });
        results.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// Each member's job: the ensemble's `shared` job (rows read once, a CSV converted once, a
/// small data set's epochs chosen once) with the member's seed for its initial weights and
/// row orders, the ensemble's seed for the split, and its slot of the checkpoint (kept from
/// the checkpoint resumed, so that members already done stay done).
struct MemberJobs<'a> {
    base: &'a ResolvedJob,
    shared: ResolvedJob,
    seeds: Vec<u64>,
    sink: Option<std::sync::Arc<std::sync::Mutex<Option<EnsembleCheckpoint>>>>,
}

impl<'a> MemberJobs<'a> {
    fn new(base: &'a ResolvedJob, shared: ResolvedJob) -> MemberJobs<'a> {
        let m = base.job.ensemble.max(1);
        MemberJobs {
            seeds: (0..m as u64).map(|i| base.job.seed + i).collect(),
            // Checkpoints: one file for the ensemble, a slot per member.
            sink: base
                .job
                .checkpoint_every
                .is_some()
                .then(|| std::sync::Arc::new(std::sync::Mutex::new(base.ensemble_resume.clone()))),
            base,
            shared,
        }
    }

    /// Member `i`'s job, on `threads` threads.
    fn job(&self, i: usize, threads: Option<usize>) -> ResolvedJob {
        let mut one = self.shared.clone();
        one.options.seed = self.seeds[i];
        one.options.split_seed = Some(self.base.job.seed);
        one.job.seed = self.seeds[i];
        one.job.ensemble = 1;
        one.job.threads = threads;
        one.ensemble_resume = None;
        one.resume = self.base.ensemble_resume.as_ref().and_then(|c| c.member(i));
        one.sink = self.sink.as_ref().map(|shared| MemberSink {
            shared: shared.clone(),
            member: i,
            members: self.seeds.len(),
        });
        one
    }
}

/// Warns when a cancel cut members short (they keep their best epochs so far) or stopped the
/// ensemble before every member ran (the model holds those that did, and the run counts as
/// interrupted whichever member it stopped in).
fn warn_if_cut(
    mut models: Vec<Model>,
    m: usize,
    observer: &mut dyn FnMut(&JobEvent),
) -> Vec<Model> {
    let cut: Vec<String> = models
        .iter()
        .enumerate()
        .filter_map(|(i, model)| {
            let t = model.training.as_ref()?;
            (t.stop_reason == "interrupted").then(|| format!("{} (at epoch {})", i + 1, t.epochs))
        })
        .collect();
    if !cut.is_empty() && models.len() == m {
        observer(&JobEvent::Warning(&format!(
            "interrupted: member{} {} kept at {} best epoch so far",
            if cut.len() > 1 { "s" } else { "" },
            cut.join(", "),
            if cut.len() > 1 { "their" } else { "its" }
        )));
    }
    if models.len() < m {
        observer(&JobEvent::Warning(&format!(
            "stopped after {} of {m} ensemble members: the model holds those",
            models.len()
        )));
        if let Some(t) = models[0].training.as_mut() {
            t.stop_reason = "interrupted".into();
        }
    }
    models
}

/// A member's event sent from its thread.
enum Owned {
    Resuming(usize, PathBuf),
    Started(Box<Plan>),
    Train(TrainEvent),
    Warning(String),
    Note(String),
    Finished(String),
}

impl Owned {
    fn from(e: &JobEvent) -> Option<Owned> {
        Some(match e {
            JobEvent::Resuming { epoch, from } => Owned::Resuming(*epoch, from.to_path_buf()),
            JobEvent::Started(p) => Owned::Started(Box::new((*p).clone())),
            JobEvent::Train(t) => Owned::Train(**t),
            JobEvent::Warning(w) => Owned::Warning(w.to_string()),
            JobEvent::Note(n) => Owned::Note(n.to_string()),
            _ => return None,
        })
    }
}

/// How a member's run ended, in a line.
fn member_end(r: &Result<Model>) -> String {
    match r {
        Ok(model) => match model.training.as_ref() {
            Some(t) => match (t.stop_reason.as_str(), t.best_val_nll) {
                ("early-stopping", Some(v)) => format!(
                    "stopped at epoch {}: best epoch {}, validation NLL {v:.4}",
                    t.epochs, t.saved_epoch
                ),
                ("interrupted", _) => format!("interrupted at epoch {}", t.epochs),
                _ => format!("ran its {} epochs", t.epochs),
            },
            None => "finished".into(),
        },
        Err(e) => format!("failed: {e}"),
    }
}

/// Passes the events of members training side by side to one observer: the plan once, the
/// epochs of the first member running (when it ends, the next takes over mid-run, and a note
/// says whose epochs follow), everything else tagged with its member.
struct Relay {
    m: usize,
    started: Vec<bool>,
    finished: Vec<bool>,
    planned: bool,
    /// The member whose epochs are shown.
    shown: Option<usize>,
}

impl Relay {
    fn new(m: usize) -> Relay {
        Relay {
            m,
            started: vec![false; m],
            finished: vec![false; m],
            planned: false,
            shown: None,
        }
    }

    fn pass(&mut self, i: usize, e: Owned, observer: &mut dyn FnMut(&JobEvent)) {
        let m = self.m;
        let lead = (0..m).find(|&j| self.started[j] && !self.finished[j]);
        match e {
            Owned::Resuming(epoch, from) => {
                observer(&JobEvent::Note(&format!(
                    "ensemble member {} of {m} resumes",
                    i + 1
                )));
                observer(&JobEvent::Resuming { epoch, from: &from });
            }
            Owned::Started(p) => {
                self.started[i] = true;
                if !self.planned {
                    self.planned = true;
                    observer(&JobEvent::Started(&p));
                }
                observer(&JobEvent::Note(&format!(
                    "ensemble member {} of {m} started",
                    i + 1
                )));
            }
            Owned::Train(t) if lead == Some(i) => {
                if self.shown.is_some_and(|s| s != i) {
                    observer(&JobEvent::Note(&format!(
                        "the epochs below are member {}'s (of {m})",
                        i + 1
                    )));
                }
                if self.shown != Some(i) {
                    observer(&JobEvent::Member { index: i, of: m });
                }
                self.shown = Some(i);
                observer(&JobEvent::Train(&t))
            }
            Owned::Train(_) => {}
            Owned::Finished(end) => {
                self.finished[i] = true;
                observer(&JobEvent::Note(&format!("member {} {end}", i + 1)));
            }
            Owned::Warning(w) => observer(&JobEvent::Warning(&format!("member {}: {w}", i + 1))),
            Owned::Note(n) => observer(&JobEvent::Note(&format!("member {}: {n}", i + 1))),
        }
    }
}
