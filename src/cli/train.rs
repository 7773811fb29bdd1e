//! `mdn train` and `mdn select`: both run the library's training job.

use serde_json::json;

use mdn::job::{GroupEvent, JobEvent, Outcome, TrainJob};
use mdn::model::Model;
use mdn::{Error, Result};

use super::Exit;
use super::args::{SelectArgs, TrainArgs};
use super::output::{print_json, write_output};
use super::progress::{
    Progress, fits_bar, groups_bar, interrupt_flag, interrupt_flag_saying, message,
};

/// Resolves and runs a job with progress on stderr and Ctrl-C as its cancel flag; the
/// outcome and the job's warnings, in order.
fn run_job(job: TrainJob, quiet: bool) -> Result<(Outcome, Vec<String>)> {
    let resolved = job.resolve()?;
    let stop = interrupt_flag();
    let mut progress = Progress::new(quiet);
    let mut warnings = Vec::new();
    let outcome = resolved.run(
        &mut |e: &JobEvent| {
            if let JobEvent::Warning(w) = e {
                warnings.push(w.to_string());
            }
            progress.job(e)
        },
        &stop,
    );
    progress.finish();
    Ok((outcome?, warnings))
}

pub fn train(a: TrainArgs) -> Result<Exit> {
    if let Some(column) = &a.group_by {
        return train_groups(&a, column);
    }
    let (outcome, warnings) = run_job(a.job(), a.quiet)?;
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
            "rows_left_out": info.rows_left_out,
            "components": info.components,
            "recoveries": info.recoveries,
            "warnings": warnings,
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
    for line in component_lines(c, model.ensemble_size() > 1) {
        message(&line);
    }
}

/// Most components whose weights and warnings are listed one by one; beyond it, a summary.
const LISTED: usize = 10;

/// The lines of the component report: the weights (the largest ones when there are many),
/// unused components, and duplicate pairs (mode collapse) with how many distinct components
/// remain.
fn component_lines(c: &mdn::model::ComponentUsage, ensemble: bool) -> Vec<String> {
    let whose = if ensemble { "member 1's " } else { "" };
    let k = c.weights.len();
    let mut lines = Vec::new();
    if k <= LISTED {
        let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
        lines.push(format!("{whose}component weights: {}", w.join(" ")));
    } else {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| c.weights[b].total_cmp(&c.weights[a]));
        let w: Vec<String> = order[..LISTED]
            .iter()
            .map(|&i| format!("{i}: {:.3}", c.weights[i]))
            .collect();
        lines.push(format!(
            "{whose}component weights, the {LISTED} largest of {k}: {}",
            w.join(", ")
        ));
    }
    // Distinct components: the used ones, duplicates counted once.
    let mut root: Vec<usize> = (0..k).collect();
    fn find(root: &mut [usize], i: usize) -> usize {
        let mut i = i;
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for &(p, q) in &c.duplicates {
        let (a, b) = (find(&mut root, p), find(&mut root, q));
        root[a.max(b)] = a.min(b);
    }
    let distinct = (0..k)
        .filter(|i| !c.unused.contains(i))
        .filter(|&i| find(&mut root, i) == i)
        .count();
    if !c.unused.is_empty() {
        let which = if c.unused.len() <= LISTED {
            format!("component(s) {:?} are", c.unused)
        } else {
            format!("{} of the {k} components are", c.unused.len())
        };
        lines.push(format!(
            "warning: {which} unused (average weight below 1% of an even share): --components {} \
             would do as well",
            k - c.unused.len()
        ));
    }
    if !c.duplicates.is_empty() {
        if c.duplicates.len() <= 3 {
            for (p, q) in &c.duplicates {
                lines.push(format!(
                    "warning: components {p} and {q} describe the same distribution (mode collapse)"
                ));
            }
        } else {
            let first: Vec<String> = c.duplicates[..3]
                .iter()
                .map(|(p, q)| format!("{p} and {q}"))
                .collect();
            lines.push(format!(
                "warning: {} pairs of components describe the same distribution (mode collapse; {}, \
                 ...): the model has {distinct} distinct components, and --components {distinct} \
                 would do as well",
                c.duplicates.len(),
                first.join(", ")
            ));
        }
    }
    lines
}

pub fn select(a: SelectArgs) -> Result<Exit> {
    let hidden: Vec<Vec<usize>> = a
        .hidden
        .split(';')
        .map(|h| mdn::job::parse_widths(h).map_err(|e| Error::config(format!("--hidden: {e}"))))
        .collect::<Result<_>>()?;
    // A value given twice would fit the same setting twice.
    let once = |option: &str, values: Vec<String>| -> Result<()> {
        match values
            .iter()
            .enumerate()
            .find(|(i, v)| values[..*i].contains(v))
        {
            Some((_, v)) => Err(Error::config(format!(
                "{option} lists {v} twice: each value is one setting to compare"
            ))),
            None => Ok(()),
        }
    };
    let widths = |h: &Vec<usize>| {
        let w: Vec<String> = h.iter().map(|w| w.to_string()).collect();
        if w.is_empty() {
            "none".to_string()
        } else {
            w.join(",")
        }
    };
    once("--hidden", hidden.iter().map(widths).collect())?;
    once("--l2", a.l2.iter().map(|v| v.to_string()).collect())?;
    once(
        "--components",
        a.components.iter().map(|v| v.to_string()).collect(),
    )?;
    once(
        "--covariance",
        a.covariance.iter().map(|v| v.to_string()).collect(),
    )?;
    once("--family", a.family.iter().map(|v| v.to_string()).collect())?;
    let settings = mdn::select::grid(&hidden, &a.l2, &a.components, &a.covariance, &a.family);
    // Every setting's job is checked before any fitting (options, output, columns).
    for s in &settings {
        a.job(s).check_options()?;
    }
    let first = a.job(&settings[0]).resolve()?;
    // The read's warnings are given once: the final fit reads the file again.
    let mut said = Vec::new();
    let data = first.read_data_telling(&mut |e| {
        if let JobEvent::Warning(w) = e {
            said.push(w.to_string());
        }
    })?;
    if !a.quiet {
        for w in &said {
            message(&format!("warning: {w}"));
        }
    }
    // Each fit trains on the other folds less their validation rows: the defaults adapt to
    // that many rows.
    let base = |rows: usize| first.options_for_rows(rows).0;
    let (mut backend, _) =
        mdn::backend::open(a.device.device, a.device.threads.map(|t| t as usize))?;
    let total = settings.len() * a.folds;
    let bar = fits_bar(a.quiet, total);
    let stop = interrupt_flag_saying(
        "stopping after this epoch; a cross-validation cut short chooses no setting and writes \
         no model (Ctrl-C again to quit now)",
    );
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
                "K={} l2={} hidden={:?}{}{}, fold {}/{}",
                s.components,
                s.l2,
                s.hidden,
                match s.covariance {
                    mdn::layout::Covariance::Diagonal => "",
                    mdn::layout::Covariance::Full => " full",
                },
                if s.family.is_gaussian() {
                    ""
                } else {
                    " student-t"
                },
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
            if let (JobEvent::Warning(w), false) = (e, a.quiet)
                && !said.iter().any(|s| s == w)
            {
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

/// `mdn train --group-by COLUMN`: one model per group, a line per group, a warning said once
/// however many groups give it.
fn train_groups(a: &TrainArgs, column: &str) -> Result<Exit> {
    let mut job = a.job();
    if a.out.is_none() {
        job.out = Some(std::path::PathBuf::from("models"));
    }
    let by = mdn::job::GroupBy {
        column: column.to_string(),
        min_rows: a.min_group_rows,
        keep_trained: a.keep_trained,
    };
    let stop = interrupt_flag();
    let mut bar = None;
    let mut warnings: Vec<String> = Vec::new();
    let mut repeated = 0usize;
    let quiet = a.quiet;
    let say = |bar: &Option<indicatif::ProgressBar>, line: &str| match bar {
        Some(b) => b.suspend(|| message(line)),
        None => message(line),
    };
    let outcome = mdn::job::train_groups(
        job,
        &by,
        &mut |e: &GroupEvent| match e {
            GroupEvent::Split {
                groups,
                left_out,
                kept,
                rows,
            } => {
                if !quiet {
                    let left = if *left_out > 0 {
                        format!(
                            " ({left_out} left out: fewer than --min-group-rows {})",
                            by.min_rows.unwrap_or(0)
                        )
                    } else {
                        String::new()
                    };
                    message(&format!(
                        "{rows} rows in {groups} groups of column '{}'{left}: a model each",
                        by.column
                    ));
                }
                bar = groups_bar(quiet, groups - left_out - kept);
            }
            GroupEvent::Started { group, rows, .. } => {
                if let Some(b) = &bar {
                    b.set_message(format!("'{group}' ({rows} rows)"));
                }
            }
            GroupEvent::Job(group, JobEvent::Warning(w)) => {
                // The same warning of another group (its counts aside) is said once.
                let gist =
                    |s: &str| -> String { s.chars().filter(|c| !c.is_ascii_digit()).collect() };
                warnings.push(w.to_string());
                if warnings[..warnings.len() - 1]
                    .iter()
                    .any(|s| gist(s) == gist(w))
                {
                    repeated += 1;
                } else {
                    if !quiet {
                        let whose = if group.is_empty() {
                            String::new()
                        } else {
                            format!("group '{group}': ")
                        };
                        say(&bar, &format!("warning: {whose}{w}"));
                    }
                }
            }
            // What the whole run did (how the groups' networks were trained together).
            GroupEvent::Job("", JobEvent::Note(n)) => {
                if !quiet {
                    say(&bar, n);
                }
            }
            GroupEvent::Job(..) => {}
            GroupEvent::Packing(p) => {
                if let Some(b) = &bar {
                    b.set_message(match p.networks {
                        1 => format!(
                            "a network alone ({} of {} this round), epoch {}",
                            p.run, p.runs, p.epoch
                        ),
                        n => format!(
                            "{n} networks together (packed run {} of {} this round), epoch {}",
                            p.run, p.runs, p.epoch
                        ),
                    });
                }
            }
            GroupEvent::Finished { index, of, result } => {
                if let Some(b) = &bar {
                    b.set_position(*index as u64 + 1);
                }
                if !quiet {
                    say(&bar, &group_line(*index, *of, result));
                }
            }
        },
        &stop,
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let outcome = outcome?;
    let count = |status: &str| outcome.groups.iter().filter(|g| g.status == status).count();
    let failed: Vec<&mdn::job::GroupResult> = outcome.failed().collect();
    if !quiet {
        if repeated > 0 {
            message(&format!(
                "({repeated} warnings were the same as one above, for other groups)"
            ));
        }
        let trained = count("trained") + count("interrupted");
        let no_better = outcome.no_better_than_baseline();
        if no_better > 0 {
            message(&format!(
                "warning: {no_better} of {trained} groups' models are no better than a linear \
                 model with constant Gaussian noise on the same rows: their val_nll (or cv_nll) \
                 is not below baseline_nll in {}",
                mdn::job::GROUPS_INDEX
            ));
        }
        let mut parts = vec![format!(
            "wrote {}: {trained} model{}{} and {}",
            outcome.dir.display(),
            if trained == 1 { "" } else { "s" },
            match outcome.kept {
                0 => String::new(),
                k => format!(" ({k} kept from an earlier run)"),
            },
            mdn::job::GROUPS_INDEX
        )];
        for (status, what) in [
            ("left out", "left out"),
            ("failed", "failed"),
            ("not trained", "not trained (stopped first)"),
        ] {
            let n = count(status);
            if n > 0 {
                parts.push(format!("{n} group{} {what}", if n == 1 { "" } else { "s" }));
            }
        }
        message(&parts.join("; "));
        if let Some(earlier) = &outcome.kept_earlier {
            message(&format!(
                "the run was stopped: the earlier run's models in {} are kept as they were{}",
                earlier.display(),
                match a.keep_trained {
                    true => "",
                    false => {
                        "; the same command with --keep-trained keeps the groups trained and \
                         trains the rest"
                    }
                }
            ));
        } else if outcome.interrupted {
            message(
                "the run was stopped: the same command with --keep-trained keeps the groups \
                 trained and trains the rest",
            );
        }
        for d in &outcome.removed {
            message(&format!(
                "removed {}, an unfinished run's: what it held for these groups is in {}",
                d.display(),
                outcome.dir.display()
            ));
        }
    }
    if a.json {
        print_json(&json!({
            "dir": outcome.dir,
            "index": outcome.dir.join(mdn::job::GROUPS_INDEX),
            "interrupted": outcome.interrupted,
            "kept_earlier": outcome.kept_earlier,
            "kept": outcome.kept,
            "removed": outcome.removed,
            "groups": outcome.groups,
            "warnings": warnings,
        }))?;
    }
    if outcome.interrupted {
        return Ok(Exit::Interrupted);
    }
    if let Some(first) = failed.first() {
        return Err(Error::config(format!(
            "{} of {} groups could not be trained; the first, '{}': {} (the other groups' models \
             are written to {}, and {} says why for each)",
            failed.len(),
            outcome.groups.len(),
            first.group,
            first.reason.as_deref().unwrap_or("no reason recorded"),
            outcome.dir.display(),
            mdn::job::GROUPS_INDEX
        )));
    }
    Ok(Exit::Success)
}

/// A group's line when it is done: `[3/40] 'C': 412 rows, epoch 57 of 69, validation NLL
/// -0.8312 -> C.json`.
fn group_line(index: usize, of: usize, g: &mdn::job::GroupResult) -> String {
    let head = format!("[{}/{of}] '{}': {} rows", index + 1, g.group, g.rows);
    match g.status.as_str() {
        "failed" => format!(
            "{head}: failed: {}",
            g.reason.as_deref().unwrap_or("no reason recorded")
        ),
        "not trained" => format!("{head}: stopped before it trained"),
        status => {
            let epochs = match (g.saved_epoch, g.epochs) {
                (Some(s), Some(e)) => format!(", epoch {s} of {e}"),
                _ => String::new(),
            };
            let val = match (g.val_nll, g.cv_nll) {
                (Some(v), _) => format!(", validation NLL {v:.4}"),
                (None, Some(v)) => format!(", cross-validated NLL {v:.4}"),
                (None, None) => String::new(),
            };
            let stopped = if status == "interrupted" {
                " (interrupted)"
            } else {
                ""
            };
            format!(
                "{head}{epochs}{val}{stopped} -> {}",
                g.model.as_deref().unwrap_or("-")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::component_lines;
    use mdn::model::ComponentUsage;

    #[test]
    fn three_hundred_components_printed_fifty_warnings_and_three_hundred_weights() {
        let k = 300;
        let weights: Vec<f64> = (0..k)
            .map(|i| if i < 20 { 0.04 + i as f64 * 1e-4 } else { 1e-6 })
            .collect();
        let usage = ComponentUsage {
            weights,
            unused: (20..k).collect(),
            // 0-1, 1-2, ..., 9-10 and then 50 more pairs among the first 20.
            duplicates: (0..10)
                .map(|i| (i, i + 1))
                .chain((0..40).map(|i| (i % 20, 19 - i % 20)))
                .collect(),
        };
        let lines = component_lines(&usage, false);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("component weights, the 10 largest of 300: 19: 0.042"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("280 of the 300 components are unused"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("--components 20"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("warning: 50 pairs of components"),
            "{}",
            lines[2]
        );
        // 0..=10 one component; 11..=19 paired with 8..=0 (19-i), already in it; so one.
        assert!(
            lines[2].contains("the model has 1 distinct components"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn a_few_components_are_listed_one_by_one() {
        let usage = ComponentUsage {
            weights: vec![0.5, 0.3, 0.2],
            unused: vec![],
            duplicates: vec![(0, 1)],
        };
        let lines = component_lines(&usage, true);
        assert_eq!(
            lines,
            [
                "member 1's component weights: 0.500 0.300 0.200",
                "warning: components 0 and 1 describe the same distribution (mode collapse)"
            ]
        );
    }
}
