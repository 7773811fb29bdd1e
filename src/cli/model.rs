//! Commands that apply a trained model: eval, predict, sample, plot, info.

use std::path::Path;

use serde_json::json;

use mdn::backend::{self, Backend};
use mdn::data::{Dataset, Missing, read_csv_from, read_data};
use mdn::error::Location;
use mdn::job::{EXAMPLE_CSV, EXAMPLE_NAME};
use mdn::model::Model;
use mdn::{Error, Result};

use super::args::{
    DeviceArg, EvalArgs, ExportArgs, ExportFormat, InfoArgs, ModelData, PlotArgs, PredictArgs,
    SampleArgs,
};
use super::output::{print_json, write_output};
use super::progress::message;

/// Opens the backend `--device` asks for (what auto chose goes to the log).
pub fn open_backend(device: DeviceArg) -> Result<Box<dyn Backend>> {
    let (b, note) = backend::open(device.device, device.threads.map(|t| t as usize))?;
    if let Some(note) = note {
        log::info!("{note}");
    }
    Ok(b)
}

/// A read's warnings, on stderr as the log gives them (`warning: ...`).
fn tell(notes: &[String]) {
    for n in notes {
        log::warn!("{n}");
    }
}

/// A model and the rows of `--data` it is applied to.
struct Applied {
    model: Model,
    data: Dataset,
    /// Each row's 0-based data row, where `--drop-missing` was given.
    ids: Option<Vec<usize>>,
    /// The `--keep` columns of those rows.
    kept: Option<mdn::tables::Kept>,
    /// The read's warnings (rows left out, unknown categories ignored), not yet told.
    notes: Vec<String>,
}

/// The model and the rows of `io.data` it reads, with each row's 0-based data row where
/// `--drop-missing` was given and the `--keep` columns (read first, so that a column not in
/// the file is refused before any row is read or left out).
fn model_data(io: &ModelData, need_targets: bool) -> Result<Applied> {
    let model = Model::load(&io.model)?;
    let kept = if io.keep.is_empty() {
        None
    } else {
        let (names, rows) = mdn::data::read_text_columns(&io.data, &io.keep)?;
        Some(mdn::tables::Kept { names, rows })
    };
    let choice = model
        .choice(need_targets)
        .with_unknown(io.unknown_category)
        .with_missing(if io.drop_missing {
            Missing::Drop
        } else {
            Missing::RefuseSayingDrop
        });
    let (data, notes, ids) = mdn::data::read_data_with_rows_noting(&io.data, &choice)?;
    let kept = match (kept, &ids) {
        // The kept columns of the rows read.
        (Some(mut kept), Some(ids)) => {
            kept.rows = ids
                .iter()
                .map(|&i| std::mem::take(&mut kept.rows[i]))
                .collect();
            Some(kept)
        }
        (kept, _) => kept,
    };
    // With --drop-missing every output labels its rows, whether or not any was left out.
    let ids = ids.or_else(|| io.drop_missing.then(|| (0..data.rows).collect()));
    Ok(Applied {
        model,
        data,
        ids,
        kept,
        notes: notes.warnings,
    })
}

pub fn eval(a: EvalArgs) -> Result<()> {
    if !a.io.keep.is_empty() && !a.per_row {
        return Err(Error::config(
            "--keep copies columns into every row's output: use it with --per-row",
        ));
    }
    if a.io.model.is_dir() {
        return eval_groups(&a);
    }
    let Applied {
        model,
        data,
        ids,
        kept,
        notes,
    } = model_data(&a.io, true)?;
    tell(&notes);
    let e = mdn::tables::evaluate(&model, open_backend(a.device)?.as_mut(), &data)?;
    if a.json {
        let mut out = json!({ "model": a.io.model, "data": a.io.data, "rows": e.rows, "mean_nll": e.mean_nll, "scores": e.scores });
        if a.per_row {
            out["loglik"] = json!(e.loglik);
            // Each log-likelihood's data row (where --drop-missing left rows out, not its index).
            out["row"] = match &ids {
                Some(ids) => json!(ids),
                None => json!((0..e.loglik.len()).collect::<Vec<_>>()),
            };
            if let Some(kept) = &kept {
                out["kept"] = kept.columns_json();
            }
        }
        return print_json(&out);
    }
    if a.per_row {
        // The rows are the data (stdout, readable as CSV); the summary goes to stderr.
        write_output(
            None,
            e.per_row_csv(ids.as_deref(), kept.as_ref())?.as_bytes(),
        )?;
        message(e.summary_text(&model.targets).trim_end());
        return Ok(());
    }
    write_output(None, e.summary_text(&model.targets).as_bytes())
}

/// `--out` checked before any work, as `mdn train` checks its own: writable, and neither the
/// model nor the data it reads.
fn check_out(out: Option<&std::path::Path>, io: &ModelData) -> Result<()> {
    let Some(p) = out else { return Ok(()) };
    mdn::atomic::check_writable(p, "--out")?;
    mdn::atomic::check_not_input(p, "--out", &[("--model", &io.model), ("--data", &io.data)])
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let qs = mdn::tables::quantile_levels(&a.quantiles, a.interval).map_err(|e| match e {
        Error::Config(m) if !m.starts_with("--") => Error::config(format!("--quantiles: {m}")),
        e => e,
    })?;
    check_out(a.out.as_deref(), &a.io)?;
    if a.io.model.is_dir() {
        return predict_groups(&a, &qs);
    }
    let Applied {
        model,
        data,
        ids,
        kept,
        notes,
    } = model_data(&a.io, false)?;
    tell(&notes);
    let pred = model.predict(open_backend(a.device)?.as_mut(), &data)?;
    let text = if a.json {
        let doc = mdn::tables::predictions_json(&model, &pred, &qs, kept.as_ref(), ids.as_deref());
        serde_json::to_string(&doc).expect("JSON of numbers") + "\n"
    } else {
        mdn::tables::predictions_csv(&model, &pred, &qs, kept.as_ref(), ids.as_deref())?
    };
    write_output(a.out.as_deref(), text.as_bytes())
}

pub fn sample(a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        return Err(Error::config("--n must be at least 1"));
    }
    check_out(a.out.as_deref(), &a.io)?;
    let Applied {
        model,
        data,
        ids,
        kept,
        notes,
    } = model_data(&a.io, false)?;
    tell(&notes);
    let samples = model.sample(
        open_backend(a.device)?.as_mut(),
        &data,
        a.n,
        a.seed,
        a.temperature,
        a.sigma_scale,
    )?;
    let text = if a.json {
        serde_json::to_string(&mdn::tables::samples_json(
            &model,
            data.rows,
            a.n,
            a.seed,
            &samples,
            ids.as_deref(),
            kept.as_ref(),
        ))
        .expect("JSON of numbers")
            + "\n"
    } else {
        mdn::tables::samples_csv(
            &model,
            data.rows,
            a.n,
            &samples,
            ids.as_deref(),
            kept.as_ref(),
        )?
    };
    write_output(a.out.as_deref(), text.as_bytes())
}

pub fn plot(a: PlotArgs) -> Result<()> {
    let model = Model::load(&a.model)?;
    mdn::plot::Format::of(&a.out)?;
    let mut inputs = vec![("--model", a.model.as_path())];
    inputs.extend(a.data.as_deref().map(|d| ("--data", d)));
    mdn::atomic::check_not_input(&a.out, "--out", &inputs)?;
    let target = match &a.target {
        None => 0,
        Some(name) => model
            .targets
            .iter()
            .position(|t| t == name)
            .ok_or_else(|| {
                Error::config(format!(
                    "--target {name}: the model's targets are [{}]",
                    model.targets.join(", ")
                ))
            })?,
    };
    let choice = model.choice(true).with_missing(if a.drop_missing {
        Missing::Drop
    } else {
        Missing::RefuseSayingDrop
    });
    // The history panel draws the model's record only: its data are not read (a file
    // without the target columns is no error there).
    let history_only = a.panel == mdn::plot::Panel::History;
    if history_only && a.data.is_some() && !a.quiet {
        message("warning: --panel history draws the training history only: --data is not read");
    }
    let data = match &a.data {
        _ if history_only => None,
        Some(path) => Some(read_data(path, &choice)?),
        None if model.features == ["x"] && model.targets == ["t"] => Some(read_csv_from(
            EXAMPLE_CSV,
            Path::new(EXAMPLE_NAME),
            &choice,
        )?),
        None => None,
    };
    let figure = mdn::plot::Figure {
        model: &model,
        data: data.as_ref(),
        target,
        panel: a.panel,
        size: a.size,
    };
    // A figure's evaluations are small: with --device auto the CPU backend computes them,
    // without probing for a GPU.
    let device = match a.device.device {
        backend::DeviceChoice::Auto => DeviceArg {
            device: backend::DeviceChoice::Cpu,
            ..a.device
        },
        _ => a.device,
    };
    let mut backend = open_backend(device)?;
    figure.render(backend.as_mut(), &a.out)?;
    if !a.quiet {
        message(&format!(
            "wrote {}{}",
            a.out.display(),
            data.as_ref()
                .map(|d| format!(" ({} rows of {})", d.rows, d.path.display()))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

pub fn export(a: ExportArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| match a.format {
        ExportFormat::Onnx => a.model().with_extension("onnx"),
    });
    mdn::atomic::check_not_input(&out, "--out", &[("--model", a.model())])?;
    mdn::atomic::check_writable(&out, "--out")?;
    let model = Model::load(a.model())?;
    let bytes = match a.format {
        ExportFormat::Onnx => mdn::export::onnx(&model)?,
    };
    mdn::atomic::write_atomic(&out, &bytes)?;
    eprintln!(
        "wrote {}: ONNX opset {}, input x [rows, {}], outputs pi, mu, sigma{}, mean, variance ({} component{}{})",
        out.display(),
        mdn::export::OPSET,
        model.features.len(),
        if model.arch.covariance == mdn::layout::Covariance::Full {
            ", scale_tril"
        } else {
            ""
        },
        model.arch.components * model.ensemble_size(),
        if model.arch.components * model.ensemble_size() == 1 {
            ""
        } else {
            "s"
        },
        if model.ensemble_size() > 1 {
            format!(", an ensemble of {}", model.ensemble_size())
        } else {
            String::new()
        }
    );
    Ok(())
}

pub fn info(a: InfoArgs) -> Result<()> {
    let model = Model::load(a.model())?;
    let arch = &model.arch;
    let t = model.training.as_ref();
    if a.json {
        return print_json(&json!({
            "model": a.model(),
            "features": model.features,
            "columns": model.columns(),
            "categorical": model.categorical,
            "targets": model.targets,
            "transforms": (0..model.targets.len())
                .map(|j| mdn::transform::of(&model.transforms, j).to_string())
                .collect::<Vec<_>>(),
            "architecture": {
                "inputs": arch.inputs,
                "hidden": arch.hidden,
                "activation": arch.activation.name(),
                "components": arch.components,
                "targets": arch.targets,
                "covariance": arch.covariance.name(),
                "family": arch.family.name(),
                "sigma_floor": arch.sigma_floor,
                "parameters": arch.param_count(),
            },
            "ensemble": model.ensemble_size(),
            "ensemble_val_nll": t.and_then(|t| t.ensemble_val_nll),
            "training": t.map(|t| json!({
                "mdn_version": t.mdn_version,
                "backend": t.backend,
                "seed": t.seed,
                "lr": t.lr,
                "final_lr": t.final_lr,
                "l2": t.l2,
                "batch_size": t.batch_size,
                "clip_norm": t.clip_norm,
                "train_rows": t.train_rows,
                "val_rows": t.val_rows,
                "rows_left_out": t.rows_left_out,
                "epochs": t.epochs,
                "saved_epoch": t.saved_epoch,
                "best_epoch": t.best_epoch,
                "best_val_nll": t.best_val_nll,
                "stop_reason": t.stop_reason,
                "recoveries": t.recoveries.len(),
                "components": t.components,
                "baseline_val_nll": t.baseline_val_nll,
                "epoch_choice": t.epoch_choice,
                "constant_features": t.constant_features,
            })),
        }));
    }
    let mut s = format!("{}\n", a.model().display());
    // A categorical column by its name and its number of categories.
    let columns = model.column_labels();
    // A transformed target with its transform: price (log).
    let targets: Vec<String> = model
        .targets
        .iter()
        .enumerate()
        .map(|(j, t)| match mdn::transform::of(&model.transforms, j) {
            mdn::transform::Transform::None => t.clone(),
            tr => format!("{t} ({tr})"),
        })
        .collect();
    s.push_str(&format!(
        "  columns       [{}] -> [{}]\n",
        columns.join(", "),
        targets.join(", ")
    ));
    if !model.categorical.is_empty() {
        // What the network takes (the ONNX graph's and /v2's input columns).
        s.push_str(&format!(
            "  inputs        [{}]\n",
            model.features.join(", ")
        ));
    }
    s.push_str(&format!(
        "  architecture  {} inputs, {}, K={} {}components over {} target(s), {} covariance, sigma floor {}; {}\n",
        arch.inputs,
        if arch.hidden.is_empty() {
            "no hidden layer".to_string()
        } else {
            format!("hidden {:?} ({})", arch.hidden, arch.activation.name())
        },
        arch.components,
        if arch.family.is_gaussian() { "" } else { "Student's t " },
        arch.targets,
        arch.covariance.name(),
        arch.sigma_floor,
        if model.ensemble_size() > 1 {
            format!("{} parameters per member", arch.param_count())
        } else {
            format!("{} parameters", arch.param_count())
        }
    ));
    if model.ensemble_size() > 1 {
        // The members' validation NLLs (none after a small-data refit on every row).
        let each: Vec<Option<f64>> = model
            .member_models()
            .map(|m| m.training.as_ref().and_then(|t| t.saved_val_nll()))
            .collect();
        let each = if each.iter().any(Option::is_some) {
            let v: Vec<String> = each
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.4}")))
                .collect();
            format!("each member's {}; ", v.join(" "))
        } else {
            String::new()
        };
        let whole = t
            .and_then(|t| t.ensemble_val_nll)
            .map(|v| format!("validation NLL {v:.4}; "))
            .unwrap_or_default();
        s.push_str(&format!(
            "  ensemble      {} members (seeds from {}): {whole}{each}the lines below are the first member's\n",
            model.ensemble_size(),
            t.map(|t| t.seed).unwrap_or(0),
        ));
    }
    match t {
        None => s.push_str("  training      not recorded\n"),
        Some(t) => {
            s.push_str(&format!(
                "  trained       by mdn {} on {}: {} training rows, {} validation rows{}; seed {}, lr {}{}, L2 {}, batch {}{}\n",
                t.mdn_version,
                t.backend,
                t.train_rows,
                t.val_rows,
                match t.rows_left_out {
                    0 => String::new(),
                    n => format!(" ({n} left out for a missing value)"),
                },
                t.seed,
                t.lr,
                if t.final_lr > 0.0 && t.final_lr != t.lr {
                    format!(" (ended at {})", t.final_lr)
                } else {
                    String::new()
                },
                t.l2,
                t.batch_size,
                if t.clip_norm > 0.0 {
                    format!(", gradient clipped at norm {}", t.clip_norm)
                } else {
                    String::new()
                }
            ));
            let why = match t.stop_reason.as_str() {
                "early-stopping" => "stopped early",
                "max-epochs" => "reached the epoch limit",
                _ => t.stop_words(),
            };
            s.push_str(&format!(
                "  epochs        {} run ({why}); parameters of epoch {}{}\n",
                t.epochs,
                t.saved_epoch,
                match (t.saved_val_nll(), t.best_epoch, t.best_val_nll) {
                    (Some(v), Some(e), Some(b)) if e != t.saved_epoch =>
                        format!(", validation NLL {v:.4}; the best, {b:.4}, was at epoch {e}"),
                    (Some(v), ..) => format!(", validation NLL {v:.4}"),
                    _ => String::new(),
                }
            ));
            if let Some(c) = &t.epoch_choice {
                s.push_str(&format!(
                    "  small data    {} epochs chosen by {}-fold cross-validation (folds' best {:?}); \
                     cross-validated NLL {:.4} ± {:.4}; then trained on every row\n",
                    c.epochs, c.folds, c.fold_best_epochs, c.cv_nll, c.cv_se
                ));
                if !c.components.is_empty() {
                    let tried: Vec<String> = c
                        .components
                        .iter()
                        .map(|k| {
                            format!(
                                "K={} {:.4} ± {:.4}{}",
                                k.components,
                                k.cv_nll,
                                k.cv_se,
                                if k.chosen { " (chosen)" } else { "" }
                            )
                        })
                        .collect();
                    s.push_str(&format!(
                        "  K choice      cross-validated: {}\n",
                        tried.join(", ")
                    ));
                }
            }
            if let Some(b) = t.baseline_val_nll {
                let model = t
                    .epoch_choice
                    .as_ref()
                    .map(|c| c.cv_nll)
                    .or_else(|| t.saved_val_nll());
                s.push_str(&format!(
                    "  vs linear     a linear-Gaussian model reaches {b:.4} on the same rows{}\n",
                    match model {
                        Some(m) if m < b => format!(" (this model {m:.4}: better)"),
                        Some(m) => format!(" (this model {m:.4}: no better)"),
                        None => String::new(),
                    }
                ));
            }
            if !t.constant_features.is_empty() {
                s.push_str(&format!(
                    "  ignored       {}: constant in the training rows\n",
                    t.constant_features.join(", ")
                ));
            }
            if !t.recoveries.is_empty() {
                s.push_str(&format!(
                    "  recoveries    {} epoch(s) rolled back after NaN/Inf\n",
                    t.recoveries.len()
                ));
            }
            if let Some(c) = &t.components {
                let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
                s.push_str(&format!("  components    average weights {}", w.join(" ")));
                if !c.unused.is_empty() {
                    s.push_str(&format!("; unused {:?}", c.unused));
                }
                if !c.duplicates.is_empty() {
                    s.push_str(&format!("; duplicates {:?}", c.duplicates));
                }
                s.push('\n');
            }
        }
    }
    write_output(None, s.as_bytes())
}

/// A directory of group models (`mdn train --group-by`) and `--data` split by its group
/// column, every group's model found.
struct Grouped {
    column: String,
    models: std::collections::HashMap<String, std::path::PathBuf>,
    split: mdn::job::Split,
}

/// Opens `io.model` as a directory of group models and splits `io.data` by the group
/// column; a group without a model is refused, naming its first row.
fn grouped(io: &ModelData, skip_unknown: bool) -> Result<Grouped> {
    let dir = &io.model;
    let index = mdn::job::GroupIndex::read(dir)?;
    let column = index.column.clone();
    let header = mdn::data::header(&io.data)?;
    let Some(at) = header.iter().position(|h| *h == column) else {
        return Err(Error::data(
            Location::line(&io.data, 1),
            format!(
                "the models in {} are one per group of column '{column}', which is not in the \
                 header (columns: {})",
                dir.display(),
                mdn::data::names_shown(&header)
            ),
        ));
    };
    if io.keep.contains(&column) {
        return Err(Error::config(format!(
            "--keep {column}: the group column is in the output already"
        )));
    }
    let models: std::collections::HashMap<String, std::path::PathBuf> =
        index.models(dir).map(|(g, p)| (g.to_string(), p)).collect();
    let split = mdn::job::split_by_group(&io.data, at, None, io.drop_missing)?;
    if split.no_group > 0 {
        log::warn!(
            "{}: {} row(s) have no group (an empty '{column}' cell; the first at line {}): \
             left out (--drop-missing)",
            io.data.display(),
            split.no_group,
            split.first_no_group.unwrap_or(0)
        );
    }
    if split.groups.is_empty() {
        return Err(Error::data(
            Location::file(&io.data),
            "no data rows to predict for",
        ));
    }
    let unknown: Vec<usize> = (0..split.groups.len())
        .filter(|&g| !models.contains_key(&split.groups[g].0))
        .collect();
    if skip_unknown && !unknown.is_empty() {
        let rows: usize = unknown.iter().map(|&g| split.groups[g].2).sum();
        let named: Vec<String> = unknown
            .iter()
            .take(5)
            .map(|&g| format!("'{}'", split.groups[g].0))
            .collect();
        log::warn!(
            "{}: {rows} row(s) of {} group(s) without a model in {} left out \
             (--skip-unknown-groups): {}{}",
            io.data.display(),
            unknown.len(),
            dir.display(),
            named.join(", "),
            if unknown.len() > 5 { ", ..." } else { "" }
        );
        if unknown.len() == split.groups.len() {
            return Err(Error::data(
                Location::file(&io.data),
                format!(
                    "no row's group has a model in {}: nothing to apply them to",
                    dir.display()
                ),
            ));
        }
    }
    for (g, (value, _, rows)) in split.groups.iter().enumerate() {
        if !models.contains_key(value) && !skip_unknown {
            let why = match index.groups.iter().find(|r| r.group == *value) {
                Some(r) => match r.status.as_str() {
                    "left out" => "it was left out in training (--min-group-rows)".to_string(),
                    "failed" => "its training failed (see groups.csv)".to_string(),
                    _ => "its training was stopped before it".to_string(),
                },
                None => format!("the training data ({}) had no such group", index.data),
            };
            return Err(Error::data(
                Location::cell(&io.data, split.lines[g][0], at + 1, &column),
                format!(
                    "group '{value}' ({rows} row{}; the first here) has no model in {}: {why}; \
                     --skip-unknown-groups leaves its rows out",
                    if *rows == 1 { "" } else { "s" },
                    dir.display()
                ),
            ));
        }
    }
    Ok(Grouped {
        column,
        models,
        split,
    })
}

impl Grouped {
    /// Each group's model and rows, in the order of the groups' first rows, with each row's
    /// place in the data file; errors told as the data file's.
    fn apply(
        &self,
        io: &ModelData,
        need_targets: bool,
        mut f: impl FnMut(usize, Applied, Vec<usize>) -> Result<()>,
    ) -> Result<()> {
        for (g, (value, file, _)) in self.split.groups.iter().enumerate() {
            if !self.models.contains_key(value) {
                // Left out with --skip-unknown-groups (said when split).
                continue;
            }
            let group_io = ModelData {
                model: self.models[value].clone(),
                data: file.clone(),
                unknown_category: io.unknown_category,
                drop_missing: io.drop_missing,
                keep: io.keep.clone(),
            };
            let applied =
                model_data(&group_io, need_targets).map_err(|e| self.split.in_data_file(g, e))?;
            let notes: Vec<String> = applied
                .notes
                .iter()
                .map(|n| self.split.note_in_data_file(g, n))
                .collect();
            tell(&notes);
            let places: Vec<usize> = (0..applied.data.rows)
                .map(|r| self.split.places[g][mdn::tables::row_label(applied.ids.as_deref(), r)])
                .collect();
            f(g, applied, places).map_err(|e| self.split.in_data_file(g, e))?;
        }
        Ok(())
    }
}

/// `mdn predict --model DIR` on the directory `mdn train --group-by` wrote: each row by its
/// group's model (the group column's text), the rows in the data file's order, with the
/// group column after `row`. Groups whose models have fewer components than the most leave
/// the others' cells empty (CSV) or their lists shorter (JSON).
fn predict_groups(a: &PredictArgs, qs: &[f64]) -> Result<()> {
    let grouped = grouped(&a.io, a.skip_unknown_groups)?;
    let column = &grouped.column;
    let mut backend = open_backend(a.device)?;
    let mut docs = Vec::with_capacity(grouped.split.groups.len());
    grouped.apply(&a.io, false, |g, applied, places| {
        let pred = applied.model.predict(backend.as_mut(), &applied.data)?;
        let kept = applied.kept.as_ref();
        docs.push((
            g,
            if a.json {
                let mut doc =
                    mdn::tables::predictions_json(&applied.model, &pred, qs, kept, Some(&places));
                if let Some(rows) = doc["rows"].as_array_mut() {
                    for row in rows {
                        row[column.as_str()] = json!(grouped.split.groups[g].0);
                    }
                }
                GroupOutput::Json(doc)
            } else {
                GroupOutput::Csv(mdn::tables::predictions_csv(
                    &applied.model,
                    &pred,
                    qs,
                    kept,
                    Some(&places),
                )?)
            },
        ));
        Ok(())
    })?;
    let text = merge_group_outputs(docs, column, &grouped.split)?;
    write_output(a.out.as_deref(), text.as_bytes())
}

/// `mdn eval --model DIR`: each group's rows by its model; each group's mean NLL and scores,
/// and the mean NLL over every row (per row with `--per-row`, in the data file's order).
fn eval_groups(a: &EvalArgs) -> Result<()> {
    let grouped = grouped(&a.io, a.skip_unknown_groups)?;
    let column = &grouped.column;
    let mut backend = open_backend(a.device)?;
    let mut groups = Vec::new();
    let mut per_row: Vec<(usize, usize, f64, Option<Vec<String>>)> = Vec::new();
    let mut kept_names = Vec::new();
    let mut scores: Vec<(usize, Vec<mdn::stats::DimScores>)> = Vec::new();
    grouped.apply(&a.io, true, |g, applied, places| {
        let e = mdn::tables::evaluate(&applied.model, backend.as_mut(), &applied.data)?;
        scores.push((e.rows, e.scores.clone()));
        for (r, (&ll, &place)) in e.loglik.iter().zip(&places).enumerate() {
            let kept = applied.kept.as_ref().map(|k| k.rows[r].clone());
            per_row.push((place, g, ll, kept));
        }
        if let Some(k) = &applied.kept {
            kept_names = k.names.clone();
        }
        groups.push(json!({
            "group": grouped.split.groups[g].0,
            "model": grouped.models[&grouped.split.groups[g].0],
            "rows": e.rows,
            "mean_nll": e.mean_nll,
            "scores": e.scores,
        }));
        Ok(())
    })?;
    per_row.sort_by_key(|r| r.0);
    let rows = per_row.len();
    let mean_nll = -per_row.iter().map(|r| r.2).sum::<f64>() / rows.max(1) as f64;
    // Every row's scores together, each row scored by its group's model.
    let parts: Vec<(usize, &[mdn::stats::DimScores])> =
        scores.iter().map(|(r, s)| (*r, s.as_slice())).collect();
    let pooled = mdn::stats::DimScores::pooled(&parts);
    if a.json {
        let mut out = json!({
            "model": a.io.model, "data": a.io.data, "group_column": column,
            "rows": rows, "mean_nll": mean_nll, "scores": pooled, "groups": groups,
        });
        if a.per_row {
            out["loglik"] = json!(per_row.iter().map(|r| r.2).collect::<Vec<_>>());
            out["row"] = json!(per_row.iter().map(|r| r.0).collect::<Vec<_>>());
            out["group"] = json!(
                per_row
                    .iter()
                    .map(|r| &grouped.split.groups[r.1].0)
                    .collect::<Vec<_>>()
            );
        }
        return print_json(&out);
    }
    let mut summary = format!(
        "{rows} rows in {} groups of column '{column}': mean NLL {mean_nll:.4} (natural log, \
         original units)\n",
        groups.len()
    );
    if let Some(pooled) = &pooled {
        summary.push_str(&mdn::tables::scores_text(pooled));
    }
    for (g, (_, s)) in groups.iter().zip(&scores) {
        let crps: Vec<String> = s
            .iter()
            .map(|d| match s.len() {
                1 => format!("CRPS {}", mdn::tables::shown(d.crps)),
                _ => format!("{} CRPS {}", d.target, mdn::tables::shown(d.crps)),
            })
            .collect();
        summary.push_str(&format!(
            "  '{}': {} rows, mean NLL {:.4}, {}\n",
            g["group"].as_str().unwrap_or(""),
            g["rows"],
            g["mean_nll"].as_f64().unwrap_or(f64::NAN),
            crps.join(", ")
        ));
    }
    if a.per_row {
        let mut head = vec!["row".to_string(), column.clone()];
        head.extend(kept_names.iter().cloned());
        head.push("loglik".into());
        let cell = |c: &str| mdn::tables::csv_cell(c);
        let mut csv = head.iter().map(|h| cell(h)).collect::<Vec<_>>().join(",") + "\n";
        for (place, g, ll, kept) in &per_row {
            let mut cells = vec![place.to_string(), cell(&grouped.split.groups[*g].0)];
            cells.extend(kept.iter().flatten().map(|c| cell(c)));
            cells.push(format!("{ll}"));
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
        write_output(None, csv.as_bytes())?;
        message(summary.trim_end());
        return Ok(());
    }
    write_output(None, summary.as_bytes())
}

/// One group's predictions, as `predict` writes them for one model.
enum GroupOutput {
    Csv(String),
    Json(serde_json::Value),
}

/// The groups' predictions as one output, the rows in the data file's order: CSV with the
/// group column after `row` and the header of the group with the most components (the
/// others' missing cells empty), or JSON whose rows each name their group.
fn merge_group_outputs(
    docs: Vec<(usize, GroupOutput)>,
    column: &str,
    split: &mdn::job::Split,
) -> Result<String> {
    let mut rows: Vec<(usize, String)> = Vec::with_capacity(split.rows);
    if let Some((_, GroupOutput::Json(_))) = docs.first() {
        let mut base = serde_json::Value::Null;
        let mut all: Vec<serde_json::Value> = Vec::with_capacity(split.rows);
        let mut components = 0;
        for (_, d) in docs {
            let GroupOutput::Json(mut doc) = d else {
                continue;
            };
            components = components.max(doc["components"].as_u64().unwrap_or(0));
            if let Some(serde_json::Value::Array(r)) = doc.get_mut("rows").map(std::mem::take) {
                all.extend(r);
            }
            if base.is_null() {
                base = doc;
            }
        }
        all.sort_by_key(|r| r["row"].as_u64().unwrap_or(0));
        base["rows"] = serde_json::Value::Array(all);
        base["components"] = json!(components);
        base["group_column"] = json!(column);
        return Ok(serde_json::to_string(&base).expect("JSON of numbers") + "\n");
    }
    // CSV: the widest header, each group's cells placed by name.
    let mut parsed: Vec<(usize, Vec<String>, Vec<csv::StringRecord>)> = Vec::new();
    for (g, d) in docs {
        let GroupOutput::Csv(text) = d else { continue };
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let head: Vec<String> = r
            .headers()
            .map_err(|e| Error::config(format!("predictions: {e}")))?
            .iter()
            .map(String::from)
            .collect();
        let recs = r
            .records()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::config(format!("predictions: {e}")))?;
        parsed.push((g, head, recs));
    }
    let widest = parsed
        .iter()
        .map(|(_, h, _)| h)
        .max_by_key(|h| h.len())
        .cloned()
        .unwrap_or_default();
    let mut header = vec![widest[0].clone(), column.to_string()];
    header.extend(widest[1..].iter().cloned());
    for (g, head, recs) in &parsed {
        let at: Vec<Option<usize>> = widest
            .iter()
            .map(|name| head.iter().position(|h| h == name))
            .collect();
        for rec in recs {
            let place: usize = rec[0].parse().unwrap_or(0);
            let mut cells = vec![rec[0].to_string(), split.groups[*g].0.clone()];
            cells.extend(
                at[1..]
                    .iter()
                    .map(|i| i.map(|i| rec[i].to_string()).unwrap_or_default()),
            );
            let line: Vec<String> = cells.iter().map(|c| mdn::tables::csv_cell(c)).collect();
            rows.push((place, line.join(",")));
        }
    }
    rows.sort_by_key(|r| r.0);
    let mut out: String = header
        .iter()
        .map(|h| mdn::tables::csv_cell(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for (_, line) in rows {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}
