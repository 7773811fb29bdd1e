//! What users ask of a predicted conditional density, beyond pi, mu and sigma: per target
//! dimension, the marginal mixture's mean, variance, mode, CDF and quantiles, and proper
//! scores (CRPS in closed form, the PIT). All in f64 on one row's mixture; the backends only
//! produce the mixture parameters.
//!
//! The marginal of a diagonal Gaussian mixture in dimension j is the 1-D mixture
//! `sum_k pi_k N(mu_kj, sigma_kj^2)`.

/// A 1-D Gaussian mixture: one row's marginal in one target dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Marginal {
    pub pi: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
}

const SQRT_2: f64 = std::f64::consts::SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// The mean of `values` and their sample variance (divided by n - 1, or by 1 for a single
/// value): the cross-validations' mean NLL and its standard error sqrt(var / n).
pub fn mean_var(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var)
}

/// Standard normal density.
pub fn phi(z: f64) -> f64 {
    INV_SQRT_2PI * (-0.5 * z * z).exp()
}

/// Standard normal CDF.
pub fn big_phi(z: f64) -> f64 {
    0.5 * libm::erfc(-z / SQRT_2)
}

impl Marginal {
    /// Marginal of dimension `j` of a row's mixture (`pi`: K, `mu`/`sigma`: K*D component-major).
    pub fn of(pi: &[f64], mu: &[f64], sigma: &[f64], d: usize, j: usize) -> Marginal {
        let k = pi.len();
        Marginal {
            pi: pi.to_vec(),
            mu: (0..k).map(|c| mu[c * d + j]).collect(),
            sigma: (0..k).map(|c| sigma[c * d + j]).collect(),
        }
    }

    pub fn mean(&self) -> f64 {
        self.pi.iter().zip(&self.mu).map(|(p, m)| p * m).sum()
    }

    /// Variance by the law of total variance: E[sigma^2] + Var[mu].
    pub fn variance(&self) -> f64 {
        let m = self.mean();
        self.pi
            .iter()
            .zip(&self.mu)
            .zip(&self.sigma)
            .map(|((p, mu), s)| p * (s * s + (mu - m) * (mu - m)))
            .sum()
    }

    pub fn pdf(&self, y: f64) -> f64 {
        self.pi
            .iter()
            .zip(&self.mu)
            .zip(&self.sigma)
            .map(|((p, m), s)| p * phi((y - m) / s) / s)
            .sum()
    }

    pub fn cdf(&self, y: f64) -> f64 {
        self.pi
            .iter()
            .zip(&self.mu)
            .zip(&self.sigma)
            .map(|((p, m), s)| p * big_phi((y - m) / s))
            .sum::<f64>()
            .clamp(0.0, 1.0)
    }

    /// The highest-density point: fixed-point iteration of the stationarity condition
    /// `y = sum_k r_k(y) mu_k / sum_k r_k(y)` with `r_k = pi_k N(y; mu_k, sigma_k) / sigma_k^2`,
    /// started from every component mean; the start that converges to the highest density wins.
    pub fn mode(&self) -> f64 {
        let mut best = (f64::NEG_INFINITY, self.mean());
        for &start in &self.mu {
            let mut y = start;
            for _ in 0..200 {
                let (mut num, mut den) = (0.0, 0.0);
                for ((p, m), s) in self.pi.iter().zip(&self.mu).zip(&self.sigma) {
                    let r = p * phi((y - m) / s) / (s * s * s);
                    num += r * m;
                    den += r;
                }
                if den <= 0.0 || !den.is_finite() {
                    break;
                }
                let next = num / den;
                let done = (next - y).abs() <= 1e-12 * (1.0 + y.abs());
                y = next;
                if done {
                    break;
                }
            }
            let density = self.pdf(y);
            if density > best.0 {
                best = (density, y);
            }
        }
        best.1
    }

    /// The `q`-quantile (0 < q < 1), exactly up to 1e-12 relative: bisection on the CDF within
    /// a bracket of every component's mean ± 40 sigma.
    pub fn quantile(&self, q: f64) -> f64 {
        let lo0 = self
            .mu
            .iter()
            .zip(&self.sigma)
            .map(|(m, s)| m - 40.0 * s)
            .fold(f64::INFINITY, f64::min);
        let hi0 = self
            .mu
            .iter()
            .zip(&self.sigma)
            .map(|(m, s)| m + 40.0 * s)
            .fold(f64::NEG_INFINITY, f64::max);
        let (mut lo, mut hi) = (lo0, hi0);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if self.cdf(mid) < q {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo <= 1e-12 * (1.0 + mid.abs()) {
                break;
            }
        }
        0.5 * (lo + hi)
    }

    /// CRPS of observation `y`, in closed form for a Gaussian mixture (Grimit et al. 2006):
    /// `sum_k pi_k A(y - mu_k, s_k^2) - 1/2 sum_k sum_l pi_k pi_l A(mu_k - mu_l, s_k^2 + s_l^2)`
    /// with `A(m, v) = 2 sqrt(v) phi(m / sqrt(v)) + m (2 Phi(m / sqrt(v)) - 1)`.
    pub fn crps(&self, y: f64) -> f64 {
        let a = |m: f64, v: f64| {
            let s = v.sqrt();
            2.0 * s * phi(m / s) + m * (2.0 * big_phi(m / s) - 1.0)
        };
        let k = self.pi.len();
        let mut first = 0.0;
        let mut second = 0.0;
        for i in 0..k {
            first += self.pi[i] * a(y - self.mu[i], self.sigma[i] * self.sigma[i]);
            for l in 0..k {
                second += self.pi[i]
                    * self.pi[l]
                    * a(
                        self.mu[i] - self.mu[l],
                        self.sigma[i] * self.sigma[i] + self.sigma[l] * self.sigma[l],
                    );
            }
        }
        first - 0.5 * second
    }
}

/// Scores of a predicted mixture against observed targets, for one target dimension.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DimScores {
    pub target: String,
    /// Mean CRPS (closed form), in the target's units. Lower is better.
    pub crps: f64,
    /// Root mean squared error of the mixture mean.
    pub rmse: f64,
    /// Counts of the probability integral transform F(y) in 10 equal bins on [0, 1]; a
    /// calibrated model gives a flat histogram.
    pub pit_histogram: Vec<u64>,
    /// Mean absolute difference between the PIT histogram's bin shares and 1/10 (0 for a
    /// perfectly flat histogram; at most 0.18).
    pub calibration_error: f64,
    /// Share of rows inside the central 50% and 90% intervals (ideally 0.5 and 0.9).
    pub coverage_50: f64,
    pub coverage_90: f64,
}

/// Scores every target dimension. `pi`: rows*K, `mu`/`sigma`: rows*K*D, `y`: rows*D.
pub fn score(
    targets: &[String],
    pi: &[f64],
    mu: &[f64],
    sigma: &[f64],
    y: &[f32],
    k: usize,
) -> Vec<DimScores> {
    let d = targets.len();
    let rows = y.len() / d.max(1);
    (0..d)
        .map(|j| {
            let (mut crps, mut se, mut in50, mut in90) = (0.0, 0.0, 0usize, 0usize);
            let mut hist = vec![0u64; 10];
            for r in 0..rows {
                let m = Marginal::of(
                    &pi[r * k..(r + 1) * k],
                    &mu[r * k * d..(r + 1) * k * d],
                    &sigma[r * k * d..(r + 1) * k * d],
                    d,
                    j,
                );
                let obs = y[r * d + j] as f64;
                crps += m.crps(obs);
                se += (m.mean() - obs).powi(2);
                let u = m.cdf(obs);
                hist[((u * 10.0) as usize).min(9)] += 1;
                in50 += usize::from((0.25..=0.75).contains(&u));
                in90 += usize::from((0.05..=0.95).contains(&u));
            }
            let n = rows.max(1) as f64;
            let calibration_error = hist
                .iter()
                .map(|&c| (c as f64 / n - 0.1).abs())
                .sum::<f64>()
                / 10.0;
            DimScores {
                target: targets[j].clone(),
                crps: crps / n,
                rmse: (se / n).sqrt(),
                pit_histogram: hist,
                calibration_error,
                coverage_50: in50 as f64 / n,
                coverage_90: in90 as f64 / n,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_and_quantiles() {
        assert!((big_phi(0.0) - 0.5).abs() < 1e-15);
        assert!((big_phi(1.959963984540054) - 0.975).abs() < 1e-12);
        let m = Marginal {
            pi: vec![1.0],
            mu: vec![2.0],
            sigma: vec![3.0],
        };
        assert!((m.quantile(0.975) - (2.0 + 3.0 * 1.959963984540054)).abs() < 1e-9);
        assert!((m.mode() - 2.0).abs() < 1e-12);
        // CRPS of N(mu, s^2) at y: s (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)).
        let z = (3.5 - 2.0) / 3.0;
        let want =
            3.0 * (z * (2.0 * big_phi(z) - 1.0) + 2.0 * phi(z) - 1.0 / std::f64::consts::PI.sqrt());
        assert!((m.crps(3.5) - want).abs() < 1e-12);
    }
}
