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
//! With full covariance, component k has a lower-triangular Cholesky factor `L` whose diagonal
//! is the sigma block above and whose strictly-lower entries are further head outputs (layout
//! in [`crate::layout`]); `Sigma_k = L L^T`. With `r = y - mu_k`, the whitened residual
//! `z = L^{-1} r` (forward substitution) and `w = L^{-T} z = Sigma_k^{-1} r` (back
//! substitution):
//!
//! ```text
//! l_k         = log pi_k + sum_j ( -ln(2 pi)/2 - ln L_jj - z_j^2 / 2 )
//! d/d mu_kj   = -gamma_k w_j
//! d/d raw_kj  =  gamma_k (1 / L_jj - w_j z_j) * sigmoid(raw_kj)
//! d/d L_ji    = -gamma_k w_j z_i          (i < j)
//! ```
//!
//! which for a diagonal `L` is the diagonal case (w_j = z_j / sigma_j).
//!
//! Arithmetic is in `f64` per row: the CPU backend is the reference the GPU is judged by.

use crate::layout::{Arch, Covariance, HeadLayout, MAX_FULL_COVARIANCE_TARGETS};

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

/// ln sum_k exp(logit_k), the softmax's normaliser, in f64.
fn log_normaliser(logits: &[f32]) -> f64 {
    let lmax = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    lmax + logits
        .iter()
        .map(|&a| (a as f64 - lmax).exp())
        .sum::<f64>()
        .ln()
}

/// Shape of the mixture: K components over a D-dimensional target, with a sigma floor, and
/// diagonal or full covariance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    pub k: usize,
    pub d: usize,
    pub floor: f64,
    /// Full covariance through a Cholesky factor (D must be at most
    /// [`MAX_FULL_COVARIANCE_TARGETS`]).
    pub full: bool,
}

const MAXD: usize = MAX_FULL_COVARIANCE_TARGETS;

pub use crate::layout::tri_index;

impl Mixture {
    /// The mixture an architecture's head parameterises.
    pub fn of(arch: &Arch) -> Mixture {
        Mixture {
            k: arch.components,
            d: arch.targets,
            floor: arch.sigma_floor as f64,
            full: arch.covariance == Covariance::Full,
        }
    }

    /// Strictly-lower Cholesky entries per component (0 for a diagonal mixture).
    pub fn tri(&self) -> usize {
        if self.full {
            self.d * (self.d - 1) / 2
        } else {
            0
        }
    }

    /// Where each part lives in one row's head outputs.
    #[inline]
    pub fn head(&self) -> HeadLayout {
        HeadLayout {
            k: self.k,
            d: self.d,
            tri: self.tri(),
        }
    }

    pub fn width(&self) -> usize {
        self.head().width()
    }

    /// Length of the `scratch` slice [`Mixture::loglik`] needs: K log terms, and with full
    /// covariance each component's whitened residual (K*D more), kept for the gradient.
    pub fn scratch_len(&self) -> usize {
        if self.full {
            self.k * (1 + self.d)
        } else {
            self.k
        }
    }

    /// Component `c`'s Cholesky factor `L` (D x D, row-major, zero above the diagonal) from
    /// one row's head outputs; diagonal for a diagonal mixture.
    pub fn cholesky(&self, h: &[f32], c: usize, l: &mut [f64]) {
        let (d, at) = (self.d, self.head());
        l[..d * d].fill(0.0);
        for j in 0..d {
            l[j * d + j] = softplus(h[at.raw_scale(c, j)] as f64) + self.floor;
            if self.full {
                for i in 0..j {
                    l[j * d + i] = h[at.lower(c, j, i)] as f64;
                }
            }
        }
    }

    /// The mixture weights, means and standard deviations of one row's head outputs.
    /// `pi` has K entries, `mu` and `sigma` K*D (component-major). With full covariance
    /// `sigma` is the diagonal of each Cholesky factor (see [`Mixture::cholesky`]), not the
    /// marginal standard deviation.
    pub fn params(&self, h: &[f32], pi: &mut [f64], mu: &mut [f64], sigma: &mut [f64]) {
        let (k, at) = (self.k, self.head());
        let m = h[at.logits()]
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let mut sum = 0.0;
        for c in 0..k {
            pi[c] = (h[c] as f64 - m).exp();
            sum += pi[c];
        }
        for p in pi.iter_mut() {
            *p /= sum;
        }
        for (i, (&m, &raw)) in h[at.means()].iter().zip(&h[at.raw_scales()]).enumerate() {
            mu[i] = m as f64;
            sigma[i] = softplus(raw as f64) + self.floor;
        }
    }

    /// Log-likelihood of target `y` under one row's head outputs `h`. `scratch` holds
    /// [`Mixture::scratch_len`] values.
    /// When `grad` is given, it receives `scale * d(-log p)/dh` (P values).
    pub fn loglik(
        &self,
        h: &[f32],
        y: &[f32],
        scratch: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
    ) -> f64 {
        if self.full {
            self.loglik_full(h, y, scratch, grad, scale)
        } else {
            self.loglik_diagonal(h, y, scratch, grad, scale)
        }
    }

    /// Component `c`'s whitened residual `z = L^{-1} (y - mu_c)` into `z`; returns
    /// `sum_j (-ln(2 pi)/2 - ln L_jj - z_j^2 / 2)`.
    fn whiten(&self, h: &[f32], y: &[f32], c: usize, z: &mut [f64]) -> f64 {
        let (d, at) = (self.d, self.head());
        let mut term = 0.0;
        for j in 0..d {
            let ljj = softplus(h[at.raw_scale(c, j)] as f64) + self.floor;
            let mut s = y[j] as f64 - h[at.mu(c, j)] as f64;
            for i in 0..j {
                s -= h[at.lower(c, j, i)] as f64 * z[i];
            }
            z[j] = s / ljj;
            term -= HALF_LN_2PI + ljj.ln() + 0.5 * z[j] * z[j];
        }
        term
    }

    fn loglik_full(
        &self,
        h: &[f32],
        y: &[f32],
        scratch: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
    ) -> f64 {
        let (k, d, at) = (self.k, self.d, self.head());
        assert!(d <= MAXD, "full covariance supports at most {MAXD} targets");
        let logits = &h[..k];
        let log_norm = log_normaliser(logits);
        let mut w = [0.0f64; MAXD];
        let (l, zs) = scratch[..k * (1 + d)].split_at_mut(k);
        for c in 0..k {
            l[c] = logits[c] as f64 - log_norm + self.whiten(h, y, c, &mut zs[c * d..]);
        }
        let ll = logsumexp(l);
        if let Some(g) = grad {
            for c in 0..k {
                let gamma = (l[c] - ll).exp();
                let pi = (logits[c] as f64 - log_norm).exp();
                g[c] = (scale * (pi - gamma)) as f32;
                let z = &zs[c * d..(c + 1) * d];
                let off = at.lower_start(c);
                for j in (0..d).rev() {
                    let raw = h[at.raw_scale(c, j)] as f64;
                    let ljj = softplus(raw) + self.floor;
                    let mut s = z[j];
                    for i in j + 1..d {
                        s -= h[off + tri_index(i, j)] as f64 * w[i];
                    }
                    w[j] = s / ljj;
                    g[at.mu(c, j)] = (scale * (-gamma * w[j])) as f32;
                    g[at.raw_scale(c, j)] =
                        (scale * gamma * (1.0 / ljj - w[j] * z[j]) * sigmoid(raw)) as f32;
                }
                for j in 1..d {
                    for i in 0..j {
                        g[off + tri_index(j, i)] = (scale * (-gamma * w[j] * z[i])) as f32;
                    }
                }
            }
        }
        ll
    }

    fn loglik_diagonal(
        &self,
        h: &[f32],
        y: &[f32],
        scratch: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
    ) -> f64 {
        let (k, d, at) = (self.k, self.d, self.head());
        let logits = &h[..k];
        let log_norm = log_normaliser(logits);
        let l = &mut scratch[..k];
        for c in 0..k {
            let mut lc = logits[c] as f64 - log_norm;
            for j in 0..d {
                let sigma = softplus(h[at.raw_scale(c, j)] as f64) + self.floor;
                let z = (y[j] as f64 - h[at.mu(c, j)] as f64) / sigma;
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
                    let (im, is) = (at.mu(c, j), at.raw_scale(c, j));
                    let raw = h[is] as f64;
                    let sigma = softplus(raw) + self.floor;
                    let z = (y[j] as f64 - h[im] as f64) / sigma;
                    g[im] = (scale * (-gamma * z / sigma)) as f32;
                    g[is] = (scale * gamma * (1.0 - z * z) / sigma * sigmoid(raw)) as f32;
                }
            }
        }
        ll
    }
}
