//! What `mdn predict`, `mdn sample` and `mdn eval` answer, as CSV text or JSON values, in the
//! library so that every front end (the command line, the service) answers the same.

use serde_json::{Value, json};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Model, Prediction};
use crate::stats::DimScores;

/// The quantile levels to report: `quantiles` and, for a central `interval` of probability
/// p, its two ends ((1-p)/2 and (1+p)/2), in ascending order without repeats.
pub fn quantile_levels(quantiles: &[f64], interval: Option<f64>) -> Result<Vec<f64>> {
    let mut qs = quantiles.to_vec();
    if let Some(p) = interval {
        if !(p > 0.0 && p < 1.0) {
            return Err(Error::config(format!(
                "--interval must be between 0 and 1, got {p}"
            )));
        }
        // Rounded so that 0.9 gives the labels 0.05 and 0.95.
        let tail = ((1.0 - p) / 2.0 * 1e12).round() / 1e12;
        qs.extend([tail, ((1.0 - tail) * 1e12).round() / 1e12]);
    }
    if let Some(q) = qs.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
        return Err(Error::config(format!(
            "quantiles must be between 0 and 1 (exclusive), got {q}"
        )));
    }
    qs.sort_by(f64::total_cmp);
    qs.dedup();
    Ok(qs)
}

/// Columns of the input copied through to the output as text (`--keep` of `mdn predict`,
/// `sample` and `eval --per-row`).
#[derive(Debug, Clone, Default)]
pub struct Kept {
    pub names: Vec<String>,
    /// One entry per row, one cell per name.
    pub rows: Vec<Vec<String>>,
}

impl Kept {
    /// Row `r`'s cells as a JSON object by column name.
    pub fn row_json(&self, r: usize) -> Value {
        Value::Object(
            self.names
                .iter()
                .zip(&self.rows[r])
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect(),
        )
    }

    /// Every row's cells as a JSON object of columns (name: one string per row).
    pub fn columns_json(&self) -> Value {
        Value::Object(
            self.names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let column: Vec<&str> = self.rows.iter().map(|row| row[i].as_str()).collect();
                    (n.clone(), json!(column))
                })
                .collect(),
        )
    }

    /// Row `r`'s cells as CSV cells.
    fn csv_cells(&self, r: usize) -> impl Iterator<Item = String> + '_ {
        self.rows[r].iter().map(|c| csv_cell(c))
    }
}

/// Per row and target: mean, variance, mode and the quantiles of the marginal mixture.
/// What one row's marginal mixture of one target says: mean, variance, mode, quantiles.
pub struct Summary {
    pub mean: f64,
    pub variance: f64,
    pub mode: f64,
    /// At the levels asked for, in their order.
    pub quantiles: Vec<f64>,
}

/// The [`Summary`] of row `r`'s marginal mixture of target `j`.
pub fn summary(pred: &Prediction, qs: &[f64], r: usize, j: usize) -> Summary {
    let m = pred.marginal(r, j);
    Summary {
        mean: m.mean(),
        variance: m.variance(),
        mode: m.mode(),
        quantiles: qs.iter().map(|&q| m.quantile(q)).collect(),
    }
}

/// [`summary`] of every row and target, rows on every core (a Student's t mixture's mode
/// and quantiles take many CDF and density evaluations); each row's the same bits as alone.
pub fn summaries(pred: &Prediction, qs: &[f64]) -> Vec<Vec<Summary>> {
    use rayon::prelude::*;
    (0..pred.rows)
        .into_par_iter()
        .map(|r| (0..pred.d).map(|j| summary(pred, qs, r, j)).collect())
        .collect()
}

/// `mdn predict --json`: per row the mixture (pi, mu, sigma; covariance matrices for
/// full-covariance models) and per target the mean, variance, mode and quantiles.
///
/// Each row has its `row`: its 0-based data row (`ids[r]` where `--drop-missing` left rows
/// out).
pub fn predictions_json(
    model: &Model,
    pred: &Prediction,
    qs: &[f64],
    kept: Option<&Kept>,
    ids: Option<&[usize]>,
) -> Value {
    let (k, d) = (pred.k, pred.d);
    let members = model.ensemble_size();
    let split = (members > 1).then(|| pred.variance_split(members));
    let all = summaries(pred, qs);
    let rows: Vec<Value> = (0..pred.rows)
        .map(|r| {
            let comp = |v: &[f64], c: usize| v[(r * k + c) * d..(r * k + c + 1) * d].to_vec();
            let sums = &all[r];
            let mut row = json!({
                "pi": pred.pi[r * k..(r + 1) * k],
                "mu": (0..k).map(|c| comp(&pred.mu, c)).collect::<Vec<_>>(),
                "sigma": (0..k).map(|c| comp(&pred.sigma, c)).collect::<Vec<_>>(),
                "mean": sums.iter().map(|s| s.mean).collect::<Vec<_>>(),
                "variance": sums.iter().map(|s| s.variance).collect::<Vec<_>>(),
                "mode": sums.iter().map(|s| s.mode).collect::<Vec<_>>(),
            });
            if !pred.dof.is_empty() {
                row["dof"] = json!(pred.dof[r * k..(r + 1) * k]);
            }
            row["row"] = json!(row_label(ids, r));
            if let Some((aleatoric, epistemic)) = &split {
                row["aleatoric_variance"] = json!(aleatoric[r * d..(r + 1) * d]);
                row["epistemic_variance"] = json!(epistemic[r * d..(r + 1) * d]);
            }
            if !pred.scale_tril.is_empty() {
                row["cov"] = json!(
                    (0..k)
                        .map(|c| {
                            pred.covariance(r, c)
                                .chunks(d)
                                .map(|row| row.to_vec())
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                );
            }
            if !qs.is_empty() {
                let quantiles: serde_json::Map<String, Value> = qs
                    .iter()
                    .enumerate()
                    .map(|(i, q)| {
                        (
                            q.to_string(),
                            json!(sums.iter().map(|s| s.quantiles[i]).collect::<Vec<_>>()),
                        )
                    })
                    .collect();
                row["quantiles"] = Value::Object(quantiles);
            }
            if let Some(kept) = kept {
                row["kept"] = kept.row_json(r);
            }
            row
        })
        .collect();
    let mut doc = json!({ "targets": model.targets, "components": k, "rows": rows });
    if !model.arch.family.is_gaussian() {
        // Each component a multivariate t with location mu, scale sigma (cov) and dof.
        doc["family"] = json!(model.arch.family.name());
    }
    if !model.transforms.is_empty() {
        // mu, sigma and cov are of z = g(y); the rest is of y.
        doc["transforms"] = json!(model.transforms);
    }
    if members > 1 {
        doc["ensemble"] = json!(members);
    }
    doc
}

/// `mdn predict` as CSV: `row`, the kept columns, `pi_c`, `mu_c_t`, `sigma_c_t`
/// (`corr_c_a_b` for full covariance), `mean_t`, `var_t` (for an ensemble then
/// `aleatoric_var_t` and `epistemic_var_t`), `mode_t`, then `q<level>_t` in
/// ascending order of level. `row` is the 0-based data row (`ids[r]` where rows were left
/// out).
/// A CSV output's header line, refusing a kept column (`--keep`) whose name the output also
/// gives another column (`row`, `sample`, a target, ...): readers such as pandas would
/// rename one of them silently.
fn header_line(header: &[String], kept: Option<&Kept>) -> Result<String> {
    if let Some(k) = kept {
        for (i, name) in k.names.iter().enumerate() {
            if k.names[..i].contains(name) {
                return Err(Error::config(format!("--keep lists {name} twice")));
            }
        }
        for name in &k.names {
            if header.iter().filter(|h| *h == name).count() > 1 {
                return Err(Error::config(format!(
                    "--keep {name}: the output has a column named '{name}' of its own; rename \
                     the file's column to keep it"
                )));
            }
        }
    }
    Ok(header
        .iter()
        .map(|h| csv_cell(h))
        .collect::<Vec<_>>()
        .join(",")
        + "\n")
}

pub fn predictions_csv(
    model: &Model,
    pred: &Prediction,
    qs: &[f64],
    kept: Option<&Kept>,
    ids: Option<&[usize]>,
) -> Result<String> {
    let (k, d) = (pred.k, pred.d);
    let mut header = vec!["row".to_string()];
    if let Some(kept) = kept {
        header.extend(kept.names.iter().cloned());
    }
    header.extend((0..k).map(|c| format!("pi_{c}")));
    for what in ["mu", "sigma"] {
        for c in 0..k {
            header.extend(model.targets.iter().map(|t| format!("{what}_{c}_{t}")));
        }
    }
    let student = !pred.dof.is_empty();
    if student {
        header.extend((0..k).map(|c| format!("dof_{c}")));
    }
    let full = !pred.scale_tril.is_empty();
    if full {
        for c in 0..k {
            for a in 0..d {
                for b in a + 1..d {
                    let (ta, tb) = (&model.targets[a], &model.targets[b]);
                    header.push(format!("corr_{c}_{ta}_{tb}"));
                }
            }
        }
    }
    let members = model.ensemble_size();
    let split = (members > 1).then(|| pred.variance_split(members));
    let parts: &[&str] = if split.is_some() {
        &["mean", "var", "aleatoric_var", "epistemic_var", "mode"]
    } else {
        &["mean", "var", "mode"]
    };
    for what in parts {
        header.extend(model.targets.iter().map(|t| format!("{what}_{t}")));
    }
    for q in qs {
        header.extend(model.targets.iter().map(|t| format!("q{q}_{t}")));
    }
    let mut s = header_line(&header, kept)?;
    let all = summaries(pred, qs);
    for r in 0..pred.rows {
        let mut cells = vec![row_label(ids, r).to_string()];
        if let Some(kept) = kept {
            cells.extend(kept.csv_cells(r));
        }
        cells.extend(pred.pi[r * k..(r + 1) * k].iter().map(|v| num(*v)));
        cells.extend(pred.mu[r * k * d..(r + 1) * k * d].iter().map(|v| num(*v)));
        cells.extend(
            pred.sigma[r * k * d..(r + 1) * k * d]
                .iter()
                .map(|v| num(*v)),
        );
        if student {
            cells.extend(pred.dof[r * k..(r + 1) * k].iter().map(|v| num(*v)));
        }
        if full {
            for c in 0..k {
                let cov = pred.covariance(r, c);
                for a in 0..d {
                    for b in a + 1..d {
                        let rho = cov[a * d + b] / (cov[a * d + a] * cov[b * d + b]).sqrt();
                        cells.push(num(rho));
                    }
                }
            }
        }
        let sums = &all[r];
        cells.extend(sums.iter().map(|s| num(s.mean)));
        cells.extend(sums.iter().map(|s| num(s.variance)));
        if let Some((aleatoric, epistemic)) = &split {
            cells.extend(aleatoric[r * d..(r + 1) * d].iter().map(|v| num(*v)));
            cells.extend(epistemic[r * d..(r + 1) * d].iter().map(|v| num(*v)));
        }
        cells.extend(sums.iter().map(|s| num(s.mode)));
        for i in 0..qs.len() {
            cells.extend(sums.iter().map(|s| num(s.quantiles[i])));
        }
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    Ok(s)
}

/// A number for CSV: Rust's shortest round-trip form, in exponent notation beyond 1e16 or
/// below 1e-6 in magnitude (written out, 1e300 is 301 digits; a far extrapolation of a
/// log-transformed model gives such variances).
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && a.is_finite() && !(1e-6..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// A text cell quoted for CSV when it needs it.
pub fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// Row `r`'s 0-based data row: `ids[r]` where rows were left out, else `r`.
pub fn row_label(ids: Option<&[usize]>, r: usize) -> usize {
    ids.map_or(r, |ids| ids[r])
}

/// `mdn sample --json`: `n` samples per row (`samples` as [`Model::sample`] returns them);
/// `row` is each row's data row ([`row_label`]), `kept` its `--keep` columns.
pub fn samples_json(
    model: &Model,
    rows: usize,
    n: usize,
    seed: u64,
    samples: &[f64],
    ids: Option<&[usize]>,
    kept: Option<&Kept>,
) -> Value {
    let d = model.arch.targets;
    let rows: Vec<Value> = (0..rows)
        .map(|r| {
            let s: Vec<Vec<f64>> = (0..n)
                .map(|i| samples[(r * n + i) * d..(r * n + i + 1) * d].to_vec())
                .collect();
            let mut row = json!({ "row": row_label(ids, r), "samples": s });
            if let Some(kept) = kept {
                row["kept"] = kept.row_json(r);
            }
            row
        })
        .collect();
    json!({ "targets": model.targets, "n": n, "seed": seed, "rows": rows })
}

/// `mdn sample` as CSV: `row`, the kept columns, `sample`, the targets.
pub fn samples_csv(
    model: &Model,
    rows: usize,
    n: usize,
    samples: &[f64],
    ids: Option<&[usize]>,
    kept: Option<&Kept>,
) -> Result<String> {
    let d = model.arch.targets;
    let mut header = vec!["row".to_string()];
    header.extend(kept.iter().flat_map(|k| k.names.iter().cloned()));
    header.push("sample".into());
    header.extend(model.targets.iter().cloned());
    let mut s = header_line(&header, kept)?;
    for r in 0..rows {
        let mut first = vec![row_label(ids, r).to_string()];
        first.extend(kept.iter().flat_map(|k| k.csv_cells(r)));
        let first = first.join(",");
        for i in 0..n {
            let v = &samples[(r * n + i) * d..(r * n + i + 1) * d];
            let cells: Vec<String> = v.iter().map(|x| num(*x)).collect();
            s.push_str(&format!("{first},{i},{}\n", cells.join(",")));
        }
    }
    Ok(s)
}

/// What `mdn eval` reports: the mean NLL per row (original units), per-target scores, and
/// every row's log-likelihood.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    pub rows: usize,
    pub mean_nll: f64,
    pub scores: Vec<DimScores>,
    #[serde(skip)]
    pub loglik: Vec<f64>,
}

/// Evaluates `model` on `data` (which must hold the targets).
pub fn evaluate(
    model: &Model,
    backend: &mut dyn crate::backend::Backend,
    data: &Dataset,
) -> Result<Evaluation> {
    let loglik = model.loglik(backend, data)?;
    let mean_nll = -loglik.iter().sum::<f64>() / loglik.len() as f64;
    let pred = model.predict(backend, data)?;
    let scores = crate::stats::score(&model.targets, &pred, &data.y);
    Ok(Evaluation {
        rows: data.rows,
        mean_nll,
        scores,
        loglik,
    })
}

impl Evaluation {
    /// The summary as text: the mean NLL line, then one line of scores per target.
    pub fn summary_text(&self, targets: &[String]) -> String {
        let mut text = format!(
            "mean NLL {} over {} rows (per row, original units of {})\n",
            shown(self.mean_nll),
            self.rows,
            targets.join(", ")
        );
        text.push_str(&scores_text(&self.scores));
        text
    }

    /// Every row's log-likelihood as CSV: `row`, the kept columns, `loglik`.
    pub fn per_row_csv(&self, ids: Option<&[usize]>, kept: Option<&Kept>) -> Result<String> {
        let mut header = vec!["row".to_string()];
        header.extend(kept.iter().flat_map(|k| k.names.iter().cloned()));
        header.push("loglik".into());
        let mut text = header_line(&header, kept)?;
        for (i, v) in self.loglik.iter().enumerate() {
            let mut cells = vec![row_label(ids, i).to_string()];
            cells.extend(kept.iter().flat_map(|k| k.csv_cells(i)));
            cells.push(v.to_string());
            text.push_str(&(cells.join(",") + "\n"));
        }
        Ok(text)
    }
}

/// One line of scores per target: CRPS, RMSE of the mean, coverage of the central 50% and
/// 90% intervals, the PIT's calibration error and histogram.
pub fn scores_text(scores: &[crate::stats::DimScores]) -> String {
    let mut text = String::new();
    for s in scores {
        text.push_str(&format!(
            "{}: CRPS {}  RMSE of mean {}  coverage 50% {:.3} 90% {:.3}  PIT calibration error {:.4}  PIT histogram {:?}\n",
            s.target, shown(s.crps), shown(s.rmse), s.coverage_50, s.coverage_90, s.calibration_error, s.pit_histogram
        ));
    }
    text
}

/// A score in words: six decimals where that shows it, six significant digits in exponent
/// form for targets on a very small or very large scale (a CRPS of 3e-31 is not "0.000000").
pub fn shown(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-3..1e9).contains(&v.abs()) {
        format!("{v:.5e}")
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::{num, shown};

    #[test]
    fn scores_of_targets_on_tiny_or_huge_scales_were_shown_as_zero_or_thirty_digits() {
        assert_eq!(shown(0.123456789), "0.123457");
        assert_eq!(shown(-1.5), "-1.500000");
        assert_eq!(shown(0.0), "0.000000");
        assert_eq!(shown(3.2e-31), "3.20000e-31");
        assert_eq!(shown(9.8127e29), "9.81270e29");
        assert_eq!(shown(12345.678), "12345.678000");
    }

    #[test]
    fn numbers_beyond_1e16_or_below_1e_6_are_written_in_exponent_form_and_read_back() {
        for (v, text) in [
            (0.5, "0.5"),
            (0.0, "0"),
            (-3.25, "-3.25"),
            (123456.75, "123456.75"),
            (1e300, "1e300"),
            (-2.5e20, "-2.5e20"),
            (1.5e-9, "1.5e-9"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(num(v), text);
            assert_eq!(num(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(num(f64::MAX).parse::<f64>().unwrap(), f64::MAX);
    }
}
