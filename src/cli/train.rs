//! `mdn train` and `mdn select`: both run the library's training job.

use serde_json::json;

use mdn::job::{JobEvent, Outcome, TrainJob};
use mdn::model::Model;
use mdn::{Error, Result};

use super::Exit;
use super::args::{SelectArgs, TrainArgs};
use super::output::{print_json, write_output};
use super::progress::{Progress, fits_bar, interrupt_flag, message};

/// Resolves and runs a job with progress on stderr and Ctrl-C as its cancel flag.
fn run_job(job: TrainJob, quiet: bool) -> Result<Outcome> {
    let resolved = job.resolve()?;
    let stop = interrupt_flag();
    let mut progress = Progress::new(quiet);
    let outcome = resolved.run(&mut |e: &JobEvent| progress.job(e), &stop);
    progress.finish();
    outcome
}

pub fn train(a: TrainArgs) -> Result<Exit> {
    let outcome = run_job(a.job(), a.quiet)?;
    let info = outcome
        .model
        .training
        .as_ref()
        .expect("the trainer records its run");
    let members = outcome.model.ensemble_size();
    if !a.quiet && members > 1 {
        let epochs: Vec<String> = outcome
            .model
            .member_models()
            .filter_map(|m| m.training.as_ref())
            .map(|t| format!("{} of {}", t.saved_epoch, t.epochs))
            .collect();
        let val = info
            .ensemble_val_nll
            .map(|v| format!(", validation NLL {v:.4}"))
            .unwrap_or_default();
        message(&format!(
            "wrote {}: an ensemble of {members} members (parameters of epochs {}){val}",
            outcome.path.display(),
            epochs.join(", ")
        ));
        component_report(&outcome.model);
    } else if !a.quiet {
        // The saved parameters' validation NLL; the best epoch's beside it when that is
        // another epoch (with --epochs the last epoch is kept, best or not).
        let val = match (info.saved_val_nll(), info.best_epoch, info.best_val_nll) {
            (Some(v), Some(e), Some(b)) if e != info.saved_epoch => {
                format!(", validation NLL {v:.4} (the best, {b:.4}, was at epoch {e})")
            }
            (Some(v), ..) => format!(", validation NLL {v:.4}"),
            _ => String::new(),
        };
        let run = if info.stop_reason == "interrupted" {
            format!("(interrupted after {} epochs)", info.epochs)
        } else {
            format!("of {} ({})", info.epochs, info.stop_words())
        };
        message(&format!(
            "wrote {}: parameters of epoch {} {run}{val}",
            outcome.path.display(),
            info.saved_epoch,
        ));
        component_report(&outcome.model);
    }
    if a.json {
        let last = info.history.last();
        let member_runs: Vec<serde_json::Value> = outcome
            .model
            .member_models()
            .filter_map(|m| m.training.as_ref())
            .map(|t| {
                json!({
                    "seed": t.seed,
                    "epochs": t.epochs,
                    "saved_epoch": t.saved_epoch,
                    "stop_reason": t.stop_reason,
                    "best_val_nll": t.best_val_nll,
                })
            })
            .collect();
        print_json(&json!({
            "ensemble": members,
            "ensemble_val_nll": info.ensemble_val_nll,
            "members": member_runs,
            "model": outcome.path,
            "backend": info.backend,
            "epochs": info.epochs,
            "saved_epoch": info.saved_epoch,
            "stop_reason": info.stop_reason,
            "best_epoch": info.best_epoch,
            "best_val_nll": info.best_val_nll,
            "final_train_nll": last.map(|e| e.train_nll),
            "train_rows": info.train_rows,
            "val_rows": info.val_rows,
            "components": info.components,
            "recoveries": info.recoveries,
        }))?;
    }
    Ok(if outcome.interrupted {
        Exit::Interrupted
    } else {
        Exit::Success
    })
}

/// Each component's average weight, and warnings about unused and duplicate components (an
/// ensemble's first member's, and said so).
fn component_report(model: &Model) {
    let Some(c) = model.training.as_ref().and_then(|t| t.components.as_ref()) else {
        return;
    };
    let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
    let whose = if model.ensemble_size() > 1 {
        "member 1's "
    } else {
        ""
    };
    message(&format!("{whose}component weights: {}", w.join(" ")));
    if !c.unused.is_empty() {
        message(&format!(
            "warning: component(s) {:?} are unused (average weight below 1% of an even share): \
             --components {} would do as well",
            c.unused,
            c.weights.len() - c.unused.len()
        ));
    }
    for (p, q) in &c.duplicates {
        message(&format!(
            "warning: components {p} and {q} describe the same distribution (mode collapse)"
        ));
    }
}

pub fn select(a: SelectArgs) -> Result<Exit> {
    let hidden: Vec<Vec<usize>> = a
        .hidden
        .split(';')
        .map(|h| mdn::job::parse_widths(h).map_err(|e| Error::config(format!("--hidden: {e}"))))
        .collect::<Result<_>>()?;
    let settings = mdn::select::grid(&hidden, &a.l2, &a.components, &a.covariance);
    // Every setting's job is checked before any fitting (options, output, columns).
    for s in &settings {
        a.job(s).check_options()?;
    }
    let first = a.job(&settings[0]).resolve()?;
    let data = first.read_data()?;
    // Each fit trains on the other folds less their validation rows: the defaults adapt to
    // that many rows.
    let base = |rows: usize| first.options_for_rows(rows).0;
    let (mut backend, _) =
        mdn::backend::open(a.device.device, a.device.threads.map(|t| t as usize))?;
    let total = settings.len() * a.folds;
    let bar = fits_bar(a.quiet, total);
    let stop = interrupt_flag();
    let sel = mdn::select::cross_validate(
        backend.as_mut(),
        &data,
        &settings,
        a.folds,
        &base,
        a.fit.val_fraction,
        &mut |si, f| {
            let s = &settings[si];
            let what = format!(
                "K={} l2={} hidden={:?}, fold {}/{}",
                s.components,
                s.l2,
                s.hidden,
                f + 1,
                a.folds
            );
            match &bar {
                Some(b) => {
                    b.set_position((si * a.folds + f) as u64);
                    b.set_message(what);
                }
                None if !a.quiet => {
                    message(&format!("fit {}/{total}: {what}", si * a.folds + f + 1))
                }
                None => {}
            }
        },
        &mut |_| !stop.load(std::sync::atomic::Ordering::Relaxed),
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let sel = sel?;
    drop(backend);
    // The chosen setting, trained on all the data exactly as `mdn train` would; quietly, but
    // for its warnings (a model no better than a linear one, a constant column).
    let resolved = a.job(&sel.scores[sel.chosen].setting).resolve()?;
    let outcome = resolved.run(
        &mut |e: &JobEvent| {
            if let (JobEvent::Warning(w), false) = (e, a.quiet) {
                message(&format!("warning: {w}"));
            }
        },
        &stop,
    )?;
    if a.json {
        print_json(&json!({ "selection": sel, "model": outcome.path }))?;
    } else {
        let mut t = mdn::select::table(&sel);
        t.push_str(&format!("; wrote {}\n", outcome.path.display()));
        write_output(None, t.as_bytes())?;
    }
    Ok(if outcome.interrupted {
        Exit::Interrupted
    } else {
        Exit::Success
    })
}
