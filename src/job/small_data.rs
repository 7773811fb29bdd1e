//! The rules that adapt to the data's size: the defaults that follow the number of training
//! rows ([`adapted_defaults`]), and below [`CROSS_VALIDATE_BELOW`] rows the number of epochs
//! (and, left to the defaults, the number of components) chosen by cross-validation before a
//! refit on every row; also the checks and warnings that need the number of rows. Training
//! the folds is the trainer's; what the refit does with the choice is `network`'s.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::fits::{Fit, Fitter};
use super::{JobEvent, ResolvedJob};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ComponentsChoice, EpochChoice, Model};
use crate::train::{Stopping, TrainEvent, TrainOptions};

/// The defaults that adapt to the data: rows per batch, patience and the epoch limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Adapted {
    pub batch_size: usize,
    pub components: usize,
    pub patience: usize,
    pub max_epochs: usize,
}

/// What the adapted defaults are from 32,768 training rows up (128 batches an epoch), and what
/// `options()` uses before the rows are known.
pub const LARGE: Adapted = Adapted {
    batch_size: 256,
    components: 5,
    patience: 10,
    max_epochs: 200,
};

/// The defaults for `n` training rows (docs/small-data.md states this rule):
/// - batch = the largest power of two at most n/128, kept within 32..=256, and at most n
///   (32 below 8,192 rows: on real tabular data of a few thousand rows, small batches reach
///   a better held-out NLL, and an epoch of them takes milliseconds);
/// - components K = n/20 within 1..=5 (at least 20 rows per component below 100 rows);
/// - with s = ceil(n / batch) steps per epoch: patience = ceil(100 / s) within 10..=50 and
///   the epoch limit ceil(3000 / s) within 200..=2000,
///
/// so that a small data set gets small batches and, epochs being short, more of them before
/// stopping, while from 32,768 rows on (128 batches of 256) they are 256, 10 and 200.
pub fn adapted_defaults(n: usize) -> Adapted {
    let n = n.max(1);
    let pow2 = |m: usize| if m == 0 { 1 } else { 1usize << m.ilog2() };
    let batch_size = pow2(n / 128).clamp(32, 256).min(n);
    let steps = n.div_ceil(batch_size);
    Adapted {
        batch_size,
        components: (n / 20).clamp(1, 5),
        patience: 100usize.div_ceil(steps).clamp(10, 50),
        max_epochs: 3000usize.div_ceil(steps).clamp(200, 2000),
    }
}

/// Below this many rows (a 10% split would hold out fewer than 150), a job that leaves the
/// validation to mdn chooses the number of epochs by [`CV_FOLDS`]-fold cross-validation
/// and refits on every row, rather than trusting a few dozen or a hundred validation rows.
/// (It was 500 until the small-data benchmark measured 630-1,710 training rows:
/// docs/small-data.md, "Epochs by cross-validation below 1,500 rows".)
pub const CROSS_VALIDATE_BELOW: usize = 1500;

/// Fewer rows than this cannot be cross-validated (each fold needs two rows).
pub const CROSS_VALIDATE_MIN: usize = 10;

/// Folds of the cross-validation that chooses the number of epochs.
pub const CV_FOLDS: usize = 5;

/// ChaCha8 stream of the permutation behind those folds.
const CV_STREAM: u64 = 7;

/// The folds of the cross-validation that chooses the number of epochs: [`CV_FOLDS`] folds
/// of `rows` rows, as equal as the rows allow (sizes differ by at most one), from a
/// permutation by `seed`; each as (held-out rows, training rows), in file order.
pub fn cv_folds(rows: usize, seed: u64) -> Vec<(Vec<usize>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..rows).collect();
    {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(CV_STREAM);
        order.shuffle(&mut rng);
    }
    (0..CV_FOLDS)
        .map(|f| {
            let (mut held, mut rest): (Vec<usize>, Vec<usize>) =
                (0..rows).partition(|&i| i % CV_FOLDS == f);
            held.iter_mut().for_each(|i| *i = order[*i]);
            rest.iter_mut().for_each(|i| *i = order[*i]);
            held.sort_unstable();
            rest.sort_unstable();
            (held, rest)
        })
        .collect()
}

/// One fold of [`cross_validate_epochs`], as it ends.
#[derive(Debug, Clone, Copy)]
pub struct FoldReport {
    /// 0-based.
    pub fold: usize,
    pub held_out: usize,
    pub best_epoch: usize,
    /// Epochs it ran before it stopped.
    pub epochs: usize,
    /// Held-out NLL at its best epoch.
    pub nll: f64,
    /// A linear-Gaussian model's on the same rows.
    pub baseline: f64,
}

/// Chooses the number of epochs for a data set too small to spare a validation split: on
/// each of the [`cv_folds`], a model with `opts(training rows)` trained on the other folds
/// early-stops on the held-out one; the choice is the median of their best epochs, and each
/// fold is scored at that epoch (not at its own best, which would flatter it). `observer`
/// hears every fit's events (false stops the fit: an [`Error::Interrupted`]).
pub fn cross_validate_epochs(
    backend: &mut dyn Backend,
    data: &Dataset,
    seed: u64,
    opts: &dyn Fn(usize) -> TrainOptions,
    fold_done: &mut dyn FnMut(FoldReport),
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<EpochChoice> {
    let mut outcomes = Vec::new();
    for (f, (held, rest)) in cv_folds(data.rows, seed).iter().enumerate() {
        let (train, test) = (data.subset(rest), data.subset(held));
        let mut stopped = false;
        let model =
            crate::train::train(backend, &train, Some(&test), &opts(train.rows), &mut |e| {
                let go = observer(e);
                stopped |= !go;
                go
            })?;
        if stopped {
            return Err(Error::Interrupted(
                "interrupted while choosing the number of epochs".into(),
            ));
        }
        let outcome = FoldOutcome::of(f, &train, &test, &model);
        fold_done(outcome.report);
        outcomes.push(outcome);
    }
    Ok(choice_from_folds(&outcomes))
}

/// What a fold's fit tells the choice of epochs.
struct FoldOutcome {
    report: FoldReport,
    /// Its held-out NLL after each epoch.
    curve: Vec<Option<f64>>,
}

impl FoldOutcome {
    /// Fold `fold`'s `model`, trained on `train` and early-stopped on `test`.
    fn of(fold: usize, train: &Dataset, test: &Dataset, model: &Model) -> FoldOutcome {
        let info = model
            .training
            .as_ref()
            .expect("the trainer records its run");
        FoldOutcome {
            report: FoldReport {
                fold,
                held_out: test.rows,
                best_epoch: info.best_epoch.unwrap_or(info.epochs),
                epochs: info.epochs,
                nll: info.best_val_nll.unwrap_or(f64::NAN),
                baseline: crate::baseline::LinearGaussian::fit(train).mean_nll(test),
            },
            curve: info.history.iter().map(|e| e.val_nll).collect(),
        }
    }
}

/// The number of epochs the folds choose: the median of their best epochs, each fold scored
/// at it (not at its own best, which would flatter it; at the last epoch it ran when it
/// stopped sooner).
fn choice_from_folds(folds: &[FoldOutcome]) -> EpochChoice {
    let best_epochs: Vec<usize> = folds.iter().map(|f| f.report.best_epoch).collect();
    let mut sorted = best_epochs.clone();
    sorted.sort_unstable();
    let epochs = sorted[sorted.len() / 2].max(1);
    let fold_nll: Vec<f64> = folds
        .iter()
        .map(|f| {
            let c = &f.curve;
            c.get(epochs.min(c.len()).saturating_sub(1))
                .copied()
                .flatten()
                .unwrap_or(f64::NAN)
        })
        .collect();
    let k = fold_nll.len() as f64;
    let (cv_nll, var) = crate::stats::mean_var(&fold_nll);
    EpochChoice {
        folds: fold_nll.len(),
        fold_best_epochs: best_epochs,
        fold_nll,
        cv_nll,
        cv_se: (var / k).sqrt(),
        baseline_cv_nll: folds.iter().map(|f| f.report.baseline).sum::<f64>() / k,
        epochs,
        components: Vec::new(),
    }
}

impl ResolvedJob {
    /// Chooses the number of epochs for a small data set by [`CV_FOLDS`]-fold
    /// cross-validation: on each fold, a model trained on the other folds with early stopping
    /// on this one (the defaults adapted to those rows); the choice is the median of the
    /// folds' best epochs. The folds' held-out NLLs, and a linear-Gaussian model's on the same
    /// folds, are what the refitted model is judged by.
    pub(super) fn choose_epochs(
        &self,
        data: &Dataset,
        fitter: &mut Fitter,
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<EpochChoice> {
        observer(&JobEvent::Note(&format!(
            "small data ({} rows; a 10% split would hold out {}): choosing the number of epochs by \
             {CV_FOLDS}-fold cross-validation, then training on every row",
            data.rows,
            data.rows / 10
        )));
        // Every fold fits the model the refit will be (the components adapted to all the
        // rows); what cannot work on a fold is refused before any fit.
        let k = self.options_for_rows(data.rows).0.components;
        self.refuse_what_no_fold_fits(data.rows, k)?;
        // With K left to the defaults, fewer components are tried too, and taken only when
        // their folds beat the default's by more than the standard error of the paired
        // differences: on small data fewer components often generalise better, but a
        // heavy-tailed target needs the default's.
        let candidates: Vec<usize> = if self.job.components.is_none() {
            std::iter::once(k)
                .chain([3, 2].into_iter().filter(|&c| c < k))
                .collect()
        } else {
            vec![k]
        };
        let mut tried = self.cross_validate(data, fitter, &candidates, observer, cancel)?;
        let pick = pick_components(&tried);
        if pick > 0 {
            observer(&JobEvent::Note(&format!(
                "K={} rather than {k}: its folds beat K={k}'s by more than the standard error of their differences",
                candidates[pick]
            )));
        } else if candidates.len() > 1 {
            observer(&JobEvent::Note(&format!(
                "keeping K={k}: no smaller K beat its folds by more than the standard error of their differences"
            )));
        }
        let components: Vec<ComponentsChoice> = if candidates.len() > 1 {
            tried
                .iter()
                .zip(&candidates)
                .enumerate()
                .map(|(i, (c, &kc))| ComponentsChoice {
                    components: kc,
                    cv_nll: c.cv_nll,
                    cv_se: c.cv_se,
                    epochs: c.epochs,
                    chosen: i == pick,
                })
                .collect()
        } else {
            Vec::new()
        };
        let choice = EpochChoice {
            components,
            ..tried.swap_remove(pick)
        };
        let epochs = choice.epochs;
        observer(&JobEvent::Note(&format!(
            "{epochs} epoch{s} (the median of the folds' best): cross-validated NLL {:.4} ± {:.4} there \
             (linear model {:.4}); training on all {} rows for {epochs} epoch{s}",
            choice.cv_nll,
            choice.cv_se,
            choice.baseline_cv_nll,
            data.rows,
            s = if epochs == 1 { "" } else { "s" }
        )));
        if let Some(words) = learnt_little(&choice) {
            observer(&JobEvent::Warning(&words));
        }
        Ok(choice)
    }

    /// Refuses, before any fit, a K or a batch larger than the rows the smallest
    /// cross-validation fold of `rows` rows trains on.
    fn refuse_what_no_fold_fits(&self, rows: usize, k: usize) -> Result<()> {
        let folds = cv_folds(rows, self.options.split_seed());
        let smallest = folds.iter().map(|(_, rest)| rest.len()).min().unwrap_or(0);
        if k > smallest {
            return Err(Error::config(format!(
                "{}: --components {k} is more than the {smallest} rows a cross-validation fold trains on \
                 ({rows} rows in all): each component needs rows to describe",
                self.job.data_name(),
            )));
        }
        if let Some(b) = self.job.batch_size.filter(|&b| b > smallest) {
            return Err(Error::config(format!(
                "{}: --batch-size {b} is larger than the {smallest} rows a cross-validation fold trains on \
                 ({rows} rows in all): use --batch-size {smallest} or less, or --val-fraction to validate on a split",
                self.job.data_name(),
            )));
        }
        Ok(())
    }

    /// The epochs cross-validated with each of the `candidates` K (the default's first): every
    /// candidate's folds handed to `fitter` at once, a line per fold for the default K, and one
    /// for each candidate when there are several.
    fn cross_validate(
        &self,
        data: &Dataset,
        fitter: &mut Fitter,
        candidates: &[usize],
        observer: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> Result<Vec<EpochChoice>> {
        let folds: Vec<(Dataset, Dataset)> = cv_folds(data.rows, self.options.split_seed())
            .iter()
            .map(|(held, rest)| (data.subset(rest), data.subset(held)))
            .collect();
        let fits = candidates
            .iter()
            .flat_map(|&kc| {
                folds.iter().map(move |(train, test)| {
                    let (mut opts, _) = self.options_for_rows(train.rows);
                    opts.components = kc;
                    Fit {
                        train: train.clone(),
                        val: Some(test.clone()),
                        opts,
                        model: false,
                    }
                })
            })
            .collect();
        let n = folds.len();
        let mut outcomes: Vec<Vec<FoldOutcome>> = candidates.iter().map(|_| Vec::new()).collect();
        let mut done = |i: usize, model: &Model| {
            let (c, f) = (i / n, i % n);
            let outcome = FoldOutcome::of(f, &folds[f].0, &folds[f].1, model);
            if c == 0 {
                let r = &outcome.report;
                observer(&JobEvent::Note(&format!(
                    "fold {}/{CV_FOLDS} ({} rows held out): best epoch {} of {}, held-out NLL {:.4} \
                     (linear model {:.4})",
                    f + 1,
                    r.held_out,
                    r.best_epoch,
                    r.epochs,
                    r.nll,
                    r.baseline
                )));
            }
            outcomes[c].push(outcome);
            if f + 1 == n && candidates.len() > 1 {
                let choice = choice_from_folds(&outcomes[c]);
                observer(&JobEvent::Note(&format!(
                    "K={}: {} epoch{}, cross-validated NLL {:.4} ± {:.4}",
                    candidates[c],
                    choice.epochs,
                    if choice.epochs == 1 { "" } else { "s" },
                    choice.cv_nll,
                    choice.cv_se
                )));
            }
        };
        let fitted = fitter.fit_all(fits, &mut done, &mut |_| !cancel.load(Ordering::Relaxed))?;
        if fitted.stopped || fitted.models.len() < n * candidates.len() {
            return Err(Error::Interrupted(
                "interrupted while choosing the number of epochs; no model was written".into(),
            ));
        }
        Ok(outcomes.iter().map(|o| choice_from_folds(o)).collect())
    }

    /// Checks that need the number of rows, and warnings about likely mistakes.
    /// `rows` are the training rows, or with `all_rows` every row of the file (a streamed run
    /// before its first pass).
    pub(super) fn check_rows(
        &self,
        opts: &TrainOptions,
        rows: usize,
        all_rows: bool,
        observer: &mut dyn FnMut(&JobEvent),
    ) -> Result<()> {
        let k = opts.components;
        let path = self.job.data_name();
        let what = if all_rows { "rows" } else { "training rows" };
        if k > rows {
            return Err(Error::config(format!(
                "{path}: --components {k} is more than the {rows} {what}: each component needs rows to describe"
            )));
        }
        if !all_rows && rows < CROSS_VALIDATE_MIN {
            let why = match (self.job.val.is_some(), self.job.val_fraction) {
                (false, Some(f)) if f > 0.0 => {
                    format!(" (--val-fraction {f} holds out the others)")
                }
                _ => String::new(),
            };
            observer(&JobEvent::Warning(&format!(
                "{path}: only {rows} training row{}{why}: too few to learn a distribution from \
                 (the defaults refuse fewer than {CROSS_VALIDATE_MIN})",
                if rows == 1 { "" } else { "s" }
            )));
        }
        if k > 1 && rows < 10 * k {
            observer(&JobEvent::Warning(&format!(
                "--components {k} with {rows} {what} leaves fewer than 10 rows per component: \
                 a smaller --components (or `mdn select`) is likely better"
            )));
        }
        if k > 100 {
            observer(&JobEvent::Warning(&format!(
                "--components {k} is far more than a mixture usually needs (every row's density has {k} terms, \
                 so training is slow); `mdn select` compares a few values"
            )));
        }
        Ok(())
    }

    /// The options for `train_rows` training rows: the job's, with every option it leaves
    /// to the data set by [`adapted_defaults`] (a resumed run keeps its checkpoint's). The
    /// second value is what was adapted, if anything.
    pub fn options_for_rows(&self, train_rows: usize) -> (TrainOptions, Vec<String>) {
        let mut opts = self.options.clone();
        let job = &self.job;
        let mut chosen = Vec::new();
        if self.resume.is_some() {
            return (opts, chosen);
        }
        let a = adapted_defaults(train_rows);
        if job.batch_size.is_none() {
            opts.step.batch_size = a.batch_size;
            chosen.push(format!("batch {}", a.batch_size));
        }
        if job.components.is_none() {
            opts.components = a.components;
            chosen.push(format!("K={}", a.components));
        }
        if let Stopping::Early {
            patience,
            max_epochs,
        } = &mut opts.stopping
        {
            if job.patience.is_none() {
                *patience = a.patience;
                chosen.push(format!("patience {}", a.patience));
            }
            if job.max_epochs.is_none() {
                *max_epochs = a.max_epochs;
                chosen.push(format!("at most {} epochs", a.max_epochs));
            }
        }
        log::info!("job: defaults for {train_rows} training rows: {chosen:?}");
        (opts, chosen)
    }
}

/// Which of the K `tried` (the default's first) to keep: a smaller K only when its folds beat
/// the default's by more than the standard error of the paired differences, and the best such.
fn pick_components(tried: &[EpochChoice]) -> usize {
    let mut pick = 0;
    for i in 1..tried.len() {
        let d: Vec<f64> = tried[i]
            .fold_nll
            .iter()
            .zip(&tried[0].fold_nll)
            .map(|(a, b)| a - b)
            .collect();
        let (mean, var) = crate::stats::mean_var(&d);
        if mean + (var / d.len() as f64).sqrt() < 0.0 && tried[i].cv_nll < tried[pick].cv_nll {
            pick = i;
        }
    }
    pick
}

/// A cross-validation whose folds were mostly best at their first epochs, said so: the
/// network then learnt almost nothing beyond its initial weights. None otherwise.
pub(super) fn learnt_little(choice: &EpochChoice) -> Option<String> {
    const FEW: usize = 2;
    let early = choice
        .fold_best_epochs
        .iter()
        .filter(|&&e| e <= FEW)
        .count();
    let folds = choice.fold_best_epochs.len();
    (choice.epochs <= FEW && 2 * early > folds).then(|| {
        format!(
            "{early} of {folds} folds were best after at most {FEW} epochs, so the model is trained for \
             {} epoch{}: the network learnt almost nothing beyond its initial weights, and its \
             density is close to one fitted to the targets alone. With this few rows, a smaller \
             network (--hidden 8, --components 1) or more rows may do better",
            choice.epochs,
            if choice.epochs == 1 { "" } else { "s" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::learnt_little;
    use crate::model::EpochChoice;

    fn choice(fold_best_epochs: Vec<usize>, epochs: usize) -> EpochChoice {
        EpochChoice {
            folds: fold_best_epochs.len(),
            fold_nll: vec![1.0; fold_best_epochs.len()],
            fold_best_epochs,
            cv_nll: 1.0,
            cv_se: 0.1,
            baseline_cv_nll: 1.1,
            epochs,
            components: Vec::new(),
        }
    }

    #[test]
    fn twenty_rows_chose_one_epoch_without_a_warning_that_the_network_learnt_nothing() {
        let words = learnt_little(&choice(vec![1, 1, 3, 1, 1], 1)).expect("a warning");
        assert!(
            words.starts_with("4 of 5 folds were best after at most 2 epochs"),
            "{words}"
        );
        assert!(words.contains("trained for 1 epoch:"), "{words}");
        assert_eq!(learnt_little(&choice(vec![1, 40, 35, 1, 52], 35)), None);
        assert_eq!(learnt_little(&choice(vec![3, 9, 8, 1, 2], 3)), None);
    }
}
