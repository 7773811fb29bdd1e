//! The mixture head's mathematics for one row: from the head outputs to pi, mu, sigma, the
//! log-likelihood (by log-sum-exp, so it never underflows) and its gradient.
//!
//! For head outputs `h` (layout in [`crate::layout`]) and a target `y` of dimension D:
//!
//! ```text
//! log pi_k  = h_k - logsumexp(h_0..h_{K-1})
//! mu_kj     = h[K + k*D + j]
//! sigma_kj  = softplus(h[K + K*D + k*D + j]) + floor
//! l_k       = log pi_k + sum_j ( -ln(2 pi)/2 - ln sigma_kj - z_kj^2 / 2 ),  z_kj = (y_j - mu_kj) / sigma_kj
//! log p(y)  = logsumexp_k l_k
//! ```
//!
//! and with the responsibilities `gamma_k = exp(l_k - log p(y))`, the gradient of `-log p(y)`:
//!
//! ```text
//! d/d logit_k = pi_k - gamma_k
//! d/d mu_kj   = -gamma_k z_kj / sigma_kj
//! d/d raw_kj  =  gamma_k (1 - z_kj^2) / sigma_kj * sigmoid(raw_kj)
//! ```
//!
//! Arithmetic is in `f64` per row: the CPU backend is the reference the GPU is judged by.

/// ln(2 pi) / 2.
pub const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// softplus(x) = ln(1 + e^x), computed without overflow.
#[inline]
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Inverse of softplus for s > 0: the raw value whose softplus is s.
pub fn softplus_inverse(s: f64) -> f64 {
    if s > 30.0 { s } else { s.exp_m1().ln() }
}

#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log(sum(exp(v))) without overflow or underflow; -inf for an empty slice.
pub fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
}

/// Shape of the mixture: K components over a D-dimensional target, with a sigma floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    pub k: usize,
    pub d: usize,
    pub floor: f64,
}

impl Mixture {
    pub fn width(&self) -> usize {
        self.k + 2 * self.k * self.d
    }

    /// The mixture weights, means and standard deviations of one row's head outputs.
    /// `pi` has K entries, `mu` and `sigma` K*D (component-major).
    pub fn params(&self, h: &[f32], pi: &mut [f64], mu: &mut [f64], sigma: &mut [f64]) {
        let (k, kd) = (self.k, self.k * self.d);
        let m = h[..k].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let mut sum = 0.0;
        for c in 0..k {
            pi[c] = (h[c] as f64 - m).exp();
            sum += pi[c];
        }
        for p in pi.iter_mut() {
            *p /= sum;
        }
        for i in 0..kd {
            mu[i] = h[k + i] as f64;
            sigma[i] = softplus(h[k + kd + i] as f64) + self.floor;
        }
    }

    /// Log-likelihood of target `y` under one row's head outputs `h`. `scratch` holds K values.
    /// When `grad` is given, it receives `scale * d(-log p)/dh` (P values).
    pub fn loglik(
        &self,
        h: &[f32],
        y: &[f32],
        scratch: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
    ) -> f64 {
        let (k, d, kd) = (self.k, self.d, self.k * self.d);
        let logits = &h[..k];
        let lmax = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let log_norm = lmax
            + logits
                .iter()
                .map(|&a| (a as f64 - lmax).exp())
                .sum::<f64>()
                .ln();
        let l = &mut scratch[..k];
        for c in 0..k {
            let mut lc = logits[c] as f64 - log_norm;
            for j in 0..d {
                let i = c * d + j;
                let sigma = softplus(h[k + kd + i] as f64) + self.floor;
                let z = (y[j] as f64 - h[k + i] as f64) / sigma;
                lc -= HALF_LN_2PI + sigma.ln() + 0.5 * z * z;
            }
            l[c] = lc;
        }
        let ll = logsumexp(l);
        if let Some(g) = grad {
            for c in 0..k {
                let gamma = (l[c] - ll).exp();
                let pi = (logits[c] as f64 - log_norm).exp();
                g[c] = (scale * (pi - gamma)) as f32;
                for j in 0..d {
                    let i = c * d + j;
                    let raw = h[k + kd + i] as f64;
                    let sigma = softplus(raw) + self.floor;
                    let z = (y[j] as f64 - h[k + i] as f64) / sigma;
                    g[k + i] = (scale * (-gamma * z / sigma)) as f32;
                    g[k + kd + i] = (scale * gamma * (1.0 - z * z) / sigma * sigmoid(raw)) as f32;
                }
            }
        }
        ll
    }
}
