//! The simple model an MDN has to beat: for each target, one Gaussian whose mean is linear in
//! the inputs and whose variance is constant, fitted by least squares (in standardised units,
//! in f64, with a tiny ridge so collinear inputs still solve). `mdn train` compares the
//! trained model's validation NLL with this model's and warns when it is no better.

use crate::data::Dataset;
use crate::scaler::Scaler;

/// A linear-Gaussian model: `y_j ~ N(b_j + x . w_j, var_j)` in standardised units.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearGaussian {
    x_scaler: Scaler,
    y_scaler: Scaler,
    /// `(d_in + 1) x d_out`, row-major: the weights, then the intercepts.
    coef: Vec<f64>,
    /// Residual variance per target (standardised units).
    var: Vec<f64>,
}

const LN_2PI: f64 = 1.837_877_066_409_345_5;

impl LinearGaussian {
    /// Fits by least squares on `data`'s rows (which must hold targets).
    pub fn fit(data: &Dataset) -> LinearGaussian {
        let (d, t, n) = (data.d_in(), data.d_out(), data.rows);
        let x_scaler = Scaler::fit(&data.x, d);
        let y_scaler = Scaler::fit(&data.y, t);
        let (xs, ys) = (x_scaler.apply(&data.x), y_scaler.apply(&data.y));
        let p = d + 1;
        // Normal equations A c = B with A = X~'X~, X~ = [x, 1].
        let mut a = vec![0.0f64; p * p];
        let mut b = vec![0.0f64; p * t];
        let mut row = vec![0.0f64; p];
        for r in 0..n {
            for i in 0..d {
                row[i] = xs[r * d + i] as f64;
            }
            row[d] = 1.0;
            for i in 0..p {
                for k in i..p {
                    a[i * p + k] += row[i] * row[k];
                }
                for j in 0..t {
                    b[i * t + j] += row[i] * ys[r * t + j] as f64;
                }
            }
        }
        for i in 0..p {
            for k in 0..i {
                a[i * p + k] = a[k * p + i];
            }
        }
        let coef = solve_ridge(&a, &b, p, t, n);
        let mut var = vec![0.0f64; t];
        for r in 0..n {
            for j in 0..t {
                let e = ys[r * t + j] as f64 - predict(&coef, &xs[r * d..(r + 1) * d], d, t, j);
                var[j] += e * e / n.max(1) as f64;
            }
        }
        for v in &mut var {
            *v = v.max(1e-12);
        }
        LinearGaussian {
            x_scaler,
            y_scaler,
            coef,
            var,
        }
    }

    /// Mean negative log-likelihood per row of `data` (original units of the targets).
    pub fn mean_nll(&self, data: &Dataset) -> f64 {
        let (d, t, n) = (data.d_in(), data.d_out(), data.rows);
        let (xs, ys) = (self.x_scaler.apply(&data.x), self.y_scaler.apply(&data.y));
        let mut total = 0.0;
        for r in 0..n {
            for j in 0..t {
                let e =
                    ys[r * t + j] as f64 - predict(&self.coef, &xs[r * d..(r + 1) * d], d, t, j);
                total += 0.5 * (LN_2PI + self.var[j].ln() + e * e / self.var[j]);
            }
        }
        total / n.max(1) as f64 - self.y_scaler.log_jacobian()
    }
}

fn predict(coef: &[f64], x: &[f32], d: usize, t: usize, j: usize) -> f64 {
    let mut s = coef[d * t + j];
    for i in 0..d {
        s += coef[i * t + j] * x[i] as f64;
    }
    s
}

/// Solves `(A + lambda I') C = B` (I' without the intercept) by Cholesky, raising lambda until
/// the factorisation succeeds.
fn solve_ridge(a: &[f64], b: &[f64], p: usize, t: usize, n: usize) -> Vec<f64> {
    let mut lambda = 1e-9 * n.max(1) as f64;
    for _ in 0..40 {
        let mut m = a.to_vec();
        for i in 0..p - 1 {
            m[i * p + i] += lambda;
        }
        if let Some(l) = cholesky(&m, p) {
            let mut c = vec![0.0f64; p * t];
            for j in 0..t {
                // L z = b, then L' c = z.
                let mut z = vec![0.0f64; p];
                for i in 0..p {
                    let mut s = b[i * t + j];
                    for k in 0..i {
                        s -= l[i * p + k] * z[k];
                    }
                    z[i] = s / l[i * p + i];
                }
                for i in (0..p).rev() {
                    let mut s = z[i];
                    for k in i + 1..p {
                        s -= l[k * p + i] * c[k * t + j];
                    }
                    c[i * t + j] = s / l[i * p + i];
                }
            }
            return c;
        }
        lambda = (lambda * 100.0).max(1e-6);
    }
    // Not reached for finite data (the ridge makes A positive definite); the constant model.
    vec![0.0; p * t]
}

fn cholesky(m: &[f64], p: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; p * p];
    for i in 0..p {
        for k in 0..=i {
            let mut s = m[i * p + k];
            for q in 0..k {
                s -= l[i * p + q] * l[k * p + q];
            }
            if i == k {
                if s <= 1e-12 * m[i * p + i].abs().max(1e-300) || !s.is_finite() {
                    return None;
                }
                l[i * p + i] = s.sqrt();
            } else {
                l[i * p + k] = s / l[k * p + k];
            }
        }
    }
    Some(l)
}
