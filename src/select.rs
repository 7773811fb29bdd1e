//! Model selection by k-fold cross-validation: which number of components, L2 strength,
//! hidden widths, covariance and component family generalise best.
//!
//! Rows are assigned to folds by a hash of (seed, row index). For each setting and fold, a
//! model is trained on the other folds as `mdn train` would train it there (early stopping on
//! a validation split taken from them; on small data, with the number of epochs chosen by
//! cross-validation within them and a refit on all of them) and scored by its mean NLL on the
//! held-out fold. The chosen setting follows the
//! one-standard-error rule: among the settings whose mean held-out NLL is within one standard
//! error of the best mean, the one with the fewest parameters.

use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::job::{CROSS_VALIDATE_BELOW, CROSS_VALIDATE_MIN, cross_validate_epochs};
use crate::layout::{Arch, Covariance, Family};
use crate::train::{Stopping, TrainEvent, TrainOptions, split_validation, train};

/// One candidate setting.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Setting {
    pub components: usize,
    pub l2: f32,
    pub hidden: Vec<usize>,
    pub covariance: Covariance,
    pub family: Family,
}

impl Setting {
    /// `base` with this setting's components, hidden widths, L2, covariance and family.
    pub fn options(&self, base: &TrainOptions) -> TrainOptions {
        TrainOptions {
            components: self.components,
            hidden: self.hidden.clone(),
            covariance: self.covariance,
            family: self.family,
            step: crate::backend::StepConfig {
                l2: self.l2,
                ..base.step
            },
            ..base.clone()
        }
    }
}

/// Every combination of the given values, in the order `mdn select` prints them: hidden
/// widths, then L2, then components, then covariance, then family.
pub fn grid(
    hidden: &[Vec<usize>],
    l2: &[f32],
    components: &[usize],
    covariance: &[Covariance],
    family: &[Family],
) -> Vec<Setting> {
    let mut settings = Vec::new();
    for h in hidden {
        for &l2 in l2 {
            for &k in components {
                for &covariance in covariance {
                    for &family in family {
                        settings.push(Setting {
                            components: k,
                            l2,
                            hidden: h.clone(),
                            covariance,
                            family,
                        });
                    }
                }
            }
        }
    }
    settings
}

/// The selection as a text table, one setting per line, the chosen one marked; the last
/// line (without a newline) says how it was chosen.
pub fn table(sel: &Selection) -> String {
    let mut t = format!(
        "{:>4} {:>8} {:<12} {:<9} {:<9} {:>8} {:>10} {:>8} {:>8}\n",
        "K", "l2", "hidden", "cov", "family", "params", "mean NLL", "std", "se"
    );
    for (i, sc) in sel.scores.iter().enumerate() {
        let mark = if i == sel.chosen {
            "  <- chosen"
        } else if i == sel.best {
            "  (lowest mean)"
        } else {
            ""
        };
        t.push_str(&format!(
            "{:>4} {:>8} {:<12} {:<9} {:<9} {:>8} {:>10.4} {:>8.4} {:>8.4}{mark}\n",
            sc.setting.components,
            sc.setting.l2,
            format!("{:?}", sc.setting.hidden),
            sc.setting.covariance.name(),
            sc.setting.family.name(),
            sc.params,
            sc.mean_nll,
            sc.std_nll,
            sc.se_nll
        ));
    }
    t.push_str(&format!(
        "{}-fold cross-validation; chosen by the one-standard-error rule (fewest parameters with a mean NLL within one standard error, se, of the lowest mean)",
        sel.folds
    ));
    t
}

/// The cross-validated score of one setting.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SettingScore {
    pub setting: Setting,
    pub params: usize,
    /// Held-out NLL per fold (original units).
    pub fold_nll: Vec<f64>,
    pub mean_nll: f64,
    /// Standard deviation over folds.
    pub std_nll: f64,
    /// Standard error of the mean (std / sqrt(folds)).
    pub se_nll: f64,
}

/// The table and the choice.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Selection {
    pub folds: usize,
    pub scores: Vec<SettingScore>,
    /// Index into `scores` of the lowest mean NLL.
    pub best: usize,
    /// Index into `scores` of the setting chosen by the one-standard-error rule.
    pub chosen: usize,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The fold (0..folds) of row `row`.
pub fn fold_of(seed: u64, row: u64, folds: usize) -> usize {
    (splitmix64(splitmix64(seed ^ 0xf01d_f01d) ^ row) % folds as u64) as usize
}

/// Cross-validates every setting on `data`. `base(n)` gives everything but the setting for a
/// fit on `n` training rows (the defaults that adapt to the rows adapt to each fit's);
/// `progress(setting index, fold)` is called before each fit. Each fit holds out
/// `val_fraction` of its rows to stop early; with None, as `mdn train`'s defaults do: 10%, or
/// on fewer than [`CROSS_VALIDATE_BELOW`] rows none, the number of epochs being chosen by
/// cross-validation within the fit's rows ([`cross_validate_epochs`]) before a refit on all of
/// them. `observer` returning false stops the fit under way and the whole comparison, an
/// [`Error::Interrupted`]: a fit cut short would score its setting unfairly.
pub fn cross_validate(
    backend: &mut dyn Backend,
    data: &Dataset,
    settings: &[Setting],
    folds: usize,
    base: &dyn Fn(usize) -> TrainOptions,
    val_fraction: Option<f64>,
    progress: &mut dyn FnMut(usize, usize),
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Selection> {
    if folds < 2 {
        return Err(Error::config("--folds must be at least 2"));
    }
    if settings.is_empty() {
        return Err(Error::config("no settings to compare"));
    }
    let seed = base(data.rows).seed;
    let stopped = std::cell::Cell::new(false);
    let observer = &mut |e: &TrainEvent| {
        let go = observer(e);
        stopped.set(stopped.get() || !go);
        go
    };
    let total = settings.len() * folds;
    let mut scores = Vec::with_capacity(settings.len());
    for (si, setting) in settings.iter().enumerate() {
        let opts = setting.options(&base(data.rows));
        let arch = Arch::new(
            data.d_in(),
            setting.hidden.clone(),
            opts.activation,
            setting.components,
            data.d_out(),
        )?
        .with_covariance(setting.covariance)?
        .with_family(opts.family);
        let mut fold_nll = Vec::with_capacity(folds);
        for f in 0..folds {
            progress(si, f);
            let (held, rest): (Vec<usize>, Vec<usize>) =
                (0..data.rows).partition(|&r| fold_of(seed, r as u64, folds) == f);
            if held.is_empty() || rest.is_empty() {
                return Err(Error::config(format!(
                    "{} rows are too few for {folds} folds",
                    data.rows
                )));
            }
            let (train_set, test_set) = (data.subset(&rest), data.subset(&held));
            let small = (CROSS_VALIDATE_MIN..CROSS_VALIDATE_BELOW).contains(&train_set.rows);
            let model = if val_fraction.is_none() && small {
                // As `mdn train` does on small data: the epochs by cross-validation within
                // these rows, then a fit on all of them.
                let k = setting.options(&base(train_set.rows)).components;
                let opts = |rows: usize| TrainOptions {
                    components: k,
                    ..setting.options(&base(rows))
                };
                let choice = cross_validate_epochs(
                    backend,
                    &train_set,
                    seed,
                    &opts,
                    &mut |_| {},
                    &mut *observer,
                )?;
                let refit = TrainOptions {
                    stopping: Stopping::Fixed {
                        epochs: choice.epochs,
                    },
                    ..opts(train_set.rows)
                };
                train(backend, &train_set, None, &refit, observer)?
            } else {
                let (tr, val) = split_validation(&train_set, val_fraction.unwrap_or(0.1), seed)?;
                let opts = setting.options(&base(tr.rows));
                train(backend, &tr, val.as_ref(), &opts, observer)?
            };
            if stopped.get() {
                return Err(Error::Interrupted(format!(
                    "interrupted in fit {} of {total}: no setting was chosen and no model written",
                    si * folds + f + 1
                )));
            }
            let ll = model.loglik(backend, &test_set)?;
            fold_nll.push(-ll.iter().sum::<f64>() / ll.len() as f64);
        }
        let (mean, var) = crate::stats::mean_var(&fold_nll);
        scores.push(SettingScore {
            setting: setting.clone(),
            params: arch.param_count(),
            fold_nll,
            mean_nll: mean,
            std_nll: var.sqrt(),
            se_nll: (var / folds as f64).sqrt(),
        });
    }
    let best = (0..scores.len())
        .min_by(|&a, &b| scores[a].mean_nll.total_cmp(&scores[b].mean_nll))
        .expect("settings");
    let limit = scores[best].mean_nll + scores[best].se_nll;
    let chosen = (0..scores.len())
        .filter(|&i| scores[i].mean_nll <= limit)
        .min_by(|&a, &b| {
            scores[a]
                .params
                .cmp(&scores[b].params)
                .then(scores[a].mean_nll.total_cmp(&scores[b].mean_nll))
        })
        .expect("the best setting qualifies");
    Ok(Selection {
        folds,
        scores,
        best,
        chosen,
    })
}
