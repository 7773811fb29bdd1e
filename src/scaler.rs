//! Standardisation: per-column `(v - mean) / std` from the training rows ([`Scaler`]), and
//! the one-pass statistics it is computed from ([`ColumnStats`], Welford in f64) for data
//! streamed from disk. The trainer fits them; models and checkpoints store them.

use serde::{Deserialize, Serialize};

/// Per-column standardisation `(v - mean) / std`, from training-set statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Scaler {
    /// Mean and standard deviation of each of `cols` columns of a row-major matrix, in f64.
    /// A constant column gets std 1 (it is then only centred).
    pub fn fit(values: &[f32], cols: usize) -> Scaler {
        let mut stats = ColumnStats::new(cols);
        stats.push(values);
        stats.scaler()
    }

    /// Whether column `c` had zero spread in the data the scaler was fitted on.
    pub fn is_constant(values: &[f32], cols: usize, c: usize) -> bool {
        let mut it = values.chunks_exact(cols).map(|r| r[c]);
        match it.next() {
            Some(first) => it.all(|v| v == first),
            None => true,
        }
    }

    /// Standardised copy of row-major `values`.
    pub fn apply(&self, values: &[f32]) -> Vec<f32> {
        let mut out = values.to_vec();
        self.apply_in_place(&mut out);
        out
    }

    /// Standardises row-major `values` in place.
    pub fn apply_in_place(&self, values: &mut [f32]) {
        let cols = self.mean.len();
        for row in values.chunks_exact_mut(cols) {
            for c in 0..cols {
                row[c] = (row[c] - self.mean[c]) / self.std[c];
            }
        }
    }

    /// ln of the Jacobian of the map from original to standardised units: `-sum ln std`.
    /// A density in standardised units times exp of this is the density in original units.
    pub fn log_jacobian(&self) -> f64 {
        -self.std.iter().map(|&s| (s as f64).ln()).sum::<f64>()
    }
}

/// Per-column mean, spread and range accumulated row by row (Welford's algorithm in f64,
/// one pass, stable for large offsets): standardisation statistics of data streamed from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    pub rows: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    min: Vec<f32>,
    max: Vec<f32>,
    /// Whether every value of the column is a whole number.
    whole: Vec<bool>,
}

/// Fewer float32 steps than this across a column's range: [`ColumnStats::coarse`].
pub const COARSE_STEPS: f64 = 100.0;

/// A column whose values float32 rounds to few steps: [`ColumnStats::coarse`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coarse {
    /// Its mean.
    pub about: f64,
    /// Its largest value less its smallest.
    pub spread: f64,
    /// The distance between neighbouring float32 values at its size.
    pub step: f64,
}

impl Coarse {
    /// What to tell the user about column `name`.
    pub fn message(&self, name: &str) -> String {
        format!(
            "column '{name}' has values about {:.4e} that differ by at most {}: float32, in \
             which mdn computes, has steps of {} at that size, so it keeps only about {} \
             distinct values of it; subtract an offset (such as {:.0}) from the column first",
            self.about,
            crate::tables::num(self.spread),
            crate::tables::num(self.step),
            (self.spread / self.step).round() as u64 + 1,
            self.about
        )
    }
}

impl ColumnStats {
    pub fn new(cols: usize) -> ColumnStats {
        ColumnStats {
            rows: 0,
            mean: vec![0.0; cols],
            m2: vec![0.0; cols],
            min: vec![f32::INFINITY; cols],
            max: vec![f32::NEG_INFINITY; cols],
            whole: vec![true; cols],
        }
    }

    /// Adds rows (`values.len()` a multiple of the column count).
    pub fn push(&mut self, values: &[f32]) {
        let cols = self.mean.len();
        for row in values.chunks_exact(cols) {
            self.rows += 1;
            let n = self.rows as f64;
            for c in 0..cols {
                let v = row[c] as f64;
                let delta = v - self.mean[c];
                self.mean[c] += delta / n;
                self.m2[c] += delta * (v - self.mean[c]);
                self.min[c] = self.min[c].min(row[c]);
                self.max[c] = self.max[c].max(row[c]);
                self.whole[c] &= row[c].fract() == 0.0;
            }
        }
    }

    /// Whether column `c` held one value only (or no rows).
    pub fn is_constant(&self, c: usize) -> bool {
        self.min[c] >= self.max[c] || self.min[c].is_nan()
    }

    /// Column `c`'s values when float32 (in which mdn computes) leaves them too few steps
    /// to tell apart: they are large and differ little (Unix times in seconds, a target of
    /// 1e8 plus noise). `None` when the column keeps at least [`COARSE_STEPS`] steps across
    /// its range, or has one value only.
    pub fn coarse(&self, c: usize) -> Option<Coarse> {
        let (min, max) = (self.min[c], self.max[c]);
        if min >= max || !min.is_finite() || !max.is_finite() {
            return None;
        }
        let top = min.abs().max(max.abs());
        let step = (top.next_up() - top) as f64;
        let spread = max as f64 - min as f64;
        // Whole numbers below 2^24 (counts, codes, years) are exact in float32: no value of
        // theirs was merged with another, however few steps they span.
        if self.whole[c] && step <= 1.0 {
            return None;
        }
        (spread / step < COARSE_STEPS).then_some(Coarse {
            about: self.mean[c],
            spread,
            step,
        })
    }

    /// The standardisation: population standard deviation, 1 for a constant column.
    pub fn scaler(&self) -> Scaler {
        let rows = self.rows.max(1) as f64;
        let std = self
            .m2
            .iter()
            .map(|&m| {
                let s = (m / rows).sqrt();
                if s > 0.0 && s.is_finite() {
                    s as f32
                } else {
                    1.0
                }
            })
            .collect();
        Scaler {
            mean: self.mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }
}
