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
//! With Student's t components (a multivariate t per component: the scale above, diagonal or
//! full, and `nu_k = 2 + exp(min(raw_dof_k, 20))` degrees of freedom), with
//! `q = |z|^2` and `s = (nu + D) / (nu + q)`:
//!
//! ```text
//! l_k          = log pi_k + lnΓ((nu+D)/2) - lnΓ(nu/2) - D/2 ln(nu π) - sum_j ln L_jj
//!                - (nu + D)/2 ln(1 + q/nu)
//! d/d mu, L    = the Gaussian's, with w replaced by s w (the quadratic's share)
//! d/d raw_dof  = gamma_k (nu - 2) ( -(ψ((nu+D)/2) - ψ(nu/2))/2 + D/(2 nu) + ln(1 + q/nu)/2
//!                                   - (nu + D) q / (2 nu (nu + q)) )
//! ```
//!
//! (the gradient in raw_dof is 0 where its clamp to [-10, 20] holds it). The Γ and ψ differences are taken
//! without cancellation ([`crate::student::ln_gamma_ratio`]), so a t with a billion degrees
//! of freedom is the Gaussian to rounding.
//!
//! Arithmetic is in `f64` per row: the CPU backend is the reference the GPU is judged by.

use crate::lanes;
use crate::layout::{Arch, Covariance, Family, HeadLayout, MAX_FULL_COVARIANCE_TARGETS};

/// ln(2 pi) / 2.
pub const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// softplus(x) = ln(1 + e^x), computed without overflow (with [`crate::lanes`]' exp and
/// ln_1p, as the CPU backend's head computes it, to the same bits).
#[inline]
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + lanes::ln_1p(lanes::exp(-x.abs()))
}

/// Inverse of softplus for s > 0: the raw value whose softplus is s.
pub fn softplus_inverse(s: f64) -> f64 {
    if s > 30.0 { s } else { s.exp_m1().ln() }
}

/// A gradient in `f32`, with what falls below `f32`'s normal range (about 1.2e-38) flushed
/// to zero. Components with almost no responsibility for a row give such gradients; they
/// move no parameter, and as subnormal operands they made every multiply-add of the
/// backward pass that met them many times slower (a whole training step on the CPU 1.5x).
#[inline(always)]
pub fn gradient_f32(v: f64) -> f32 {
    let g = v as f32;
    if g.abs() < f32::MIN_POSITIVE { 0.0 } else { g }
}

/// The logistic function, from `t = e^-|x|` (which softplus computes too).
#[inline]
fn sigmoid_from(x: f64, t: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + t)
    } else {
        t / (1.0 + t)
    }
}

#[inline]
pub fn sigmoid(x: f64) -> f64 {
    sigmoid_from(x, lanes::exp(-x.abs()))
}

/// The terms of a log-sum-exp: `e[i] = exp(v[i] - max)`; returns (max, sum of the terms).
/// The order of every operation is the CPU backend's head's (`Mixture::loglik_rows`).
fn exp_terms(v: impl Iterator<Item = f64> + Clone, e: &mut [f64]) -> (f64, f64) {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (e, x) in e.iter_mut().zip(v) {
        *e = lanes::exp(x - m);
        sum += *e;
    }
    (m, sum)
}

/// log(sum(exp(v))) without overflow or underflow; -inf for an empty slice.
pub fn logsumexp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s = v.iter().fold(0.0, |s, &x| s + lanes::exp(x - m));
    if m.is_finite() { m + lanes::ln(s) } else { m }
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
    /// Student's t components (one raw degrees of freedom per component in the head).
    pub student: bool,
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
            student: arch.family == Family::StudentT,
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
            dof: self.student,
        }
    }

    pub fn width(&self) -> usize {
        self.head().width()
    }

    /// Length of the `scratch` slice [`Mixture::loglik`] needs: with full covariance K log
    /// terms, K weights, K exp terms and each component's whitened residual (K*D), kept for
    /// the gradient; a diagonal mixture works in space of its own.
    pub fn scratch_len(&self) -> usize {
        if self.full || self.student {
            self.k * (3 + self.d)
        } else {
            self.k
        }
    }

    /// Component `c`'s degrees of freedom (Student's t components; infinite for Gaussian ones).
    pub fn dof(&self, h: &[f32], c: usize) -> f64 {
        if self.student {
            crate::student::dof(h[self.head().raw_dof(c)] as f64)
        } else {
            f64::INFINITY
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
            pi[c] = lanes::exp(h[c] as f64 - m);
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
        if self.full || self.student {
            self.loglik_full(h, y, scratch, grad, scale)
        } else {
            self.loglik_diagonal(h, y, grad, scale)
        }
    }

    /// Component `c`'s whitened residual `z = L^{-1} (y - mu_c)` into `z` (forward
    /// substitution with full covariance, `z_j = r_j / L_jj` with diagonal); returns the
    /// Gaussian's `sum_j (-ln(2 pi)/2 - ln L_jj - z_j^2 / 2)`, `q = |z|^2` and
    /// `sum_j ln L_jj`.
    fn whiten(&self, h: &[f32], y: &[f32], c: usize, z: &mut [f64]) -> (f64, f64, f64) {
        let (d, at) = (self.d, self.head());
        let (mut term, mut q, mut log_det) = (0.0, 0.0, 0.0);
        for j in 0..d {
            let ljj = softplus(h[at.raw_scale(c, j)] as f64) + self.floor;
            let mut s = y[j] as f64 - h[at.mu(c, j)] as f64;
            if self.full {
                for i in 0..j {
                    s -= h[at.lower(c, j, i)] as f64 * z[i];
                }
            }
            z[j] = s / ljj;
            let ln_l = lanes::ln(ljj);
            term -= HALF_LN_2PI + ln_l + 0.5 * z[j] * z[j];
            q += z[j] * z[j];
            log_det += ln_l;
        }
        (term, q, log_det)
    }

    /// One row of a full-covariance mixture, or of a Student's t mixture (diagonal or full),
    /// with the diagonal case's operations where they share them (so that a full model with
    /// D = 1 gives the diagonal model's bits). A t's gradient is the Gaussian's with `w`
    /// scaled by the quadratic's share `(nu + D) / (nu + q)` (1 for Gaussian components, which
    /// changes no bit), plus the degrees of freedom's. `scratch` holds K log terms, K
    /// weights, K exp terms and each component's whitened residual.
    fn loglik_full(
        &self,
        h: &[f32],
        y: &[f32],
        scratch: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
    ) -> f64 {
        let (k, d, at) = (self.k, self.d, self.head());
        assert!(
            d <= MAXD || !self.full,
            "full covariance supports at most {MAXD} targets"
        );
        let df = d as f64;
        let logits = &h[..k];
        let mut w = [0.0f64; MAXD];
        let (l, rest) = scratch[..k * (3 + d)].split_at_mut(k);
        let (pi, rest) = rest.split_at_mut(k);
        let (q, zs) = rest.split_at_mut(k);
        let (lmax, sum) = exp_terms(logits.iter().map(|&v| v as f64), pi);
        let log_norm = lmax + lanes::ln(sum);
        for c in 0..k {
            pi[c] /= sum;
            let (term, quad, log_det) = self.whiten(h, y, c, &mut zs[c * d..(c + 1) * d]);
            l[c] = logits[c] as f64 - log_norm
                + if self.student {
                    let nu = self.dof(h, c);
                    crate::student::log_norm(nu, df)
                        - log_det
                        - 0.5 * (nu + df) * (quad / nu).ln_1p()
                } else {
                    term
                };
        }
        let (m, s) = exp_terms(l.iter().copied(), q);
        let ll = if m.is_finite() { m + lanes::ln(s) } else { m };
        if let Some(g) = grad {
            for c in 0..k {
                let gamma = q[c] / s;
                g[c] = gradient_f32(scale * (pi[c] - gamma));
                let z = &zs[c * d..(c + 1) * d];
                let off = at.lower_start(c);
                let share = if self.student {
                    let quad: f64 = z.iter().map(|v| v * v).sum();
                    let nu = self.dof(h, c);
                    let dnu = crate::student::dof_slope(h[at.raw_dof(c)] as f64, nu);
                    g[at.raw_dof(c)] = gradient_f32(
                        scale * gamma * dnu * crate::student::nll_dof_derivative(nu, df, quad),
                    );
                    (nu + df) / (nu + quad)
                } else {
                    1.0
                };
                for j in (0..d).rev() {
                    let raw = h[at.raw_scale(c, j)] as f64;
                    let t = lanes::exp(-raw.abs());
                    let ljj = (raw.max(0.0) + lanes::ln_1p(t)) + self.floor;
                    let mut s = z[j];
                    if self.full {
                        for i in j + 1..d {
                            s -= h[off + tri_index(i, j)] as f64 * w[i];
                        }
                    }
                    let wj = s / ljj;
                    if self.full {
                        w[j] = wj;
                    }
                    g[at.mu(c, j)] = gradient_f32(scale * (-gamma * share * wj));
                    g[at.raw_scale(c, j)] = gradient_f32(
                        scale * gamma * (1.0 / ljj - share * wj * z[j]) * sigmoid_from(raw, t),
                    );
                }
                if self.full {
                    for j in 1..d {
                        for i in 0..j {
                            g[off + tri_index(j, i)] =
                                gradient_f32(scale * (-gamma * share * w[j] * z[i]));
                        }
                    }
                }
            }
        }
        ll
    }

    fn loglik_diagonal(&self, h: &[f32], y: &[f32], grad: Option<&mut [f32]>, scale: f64) -> f64 {
        let mut ll = [0.0];
        self.diagonal_rows_on(h, y, 1, &mut ll, grad, scale, &mut Vec::new());
        ll[0]
    }

    /// Log-likelihoods of `rows` rows at once: head outputs `h` (rows x P, row-major) and
    /// targets `y` (rows x D), row r's into `ll[r]`. When `grad` is given (rows x P), it
    /// receives each row's `scale * d(-log p)/dh`. `buf` is working space, grown as needed.
    ///
    /// A diagonal mixture is computed [`LANES`](crate::lanes::LANES) rows at a time on the
    /// widest vector unit the CPU has ([`crate::lanes::isa`]); each row's values are the same
    /// bits whichever rows it is computed with, and on any x86 CPU.
    #[allow(clippy::too_many_arguments)]
    pub fn loglik_rows(
        &self,
        h: &[f32],
        y: &[f32],
        rows: usize,
        ll: &mut [f64],
        mut grad: Option<&mut [f32]>,
        scale: f64,
        buf: &mut Vec<f64>,
    ) {
        let (p, d) = (self.width(), self.d);
        if !self.full && !self.student {
            self.diagonal_rows_on(h, y, rows, ll, grad, scale, buf);
            return;
        }
        buf.resize(self.scratch_len().max(buf.len()), 0.0);
        for r in 0..rows {
            let g = grad.as_deref_mut().map(|g| &mut g[r * p..(r + 1) * p]);
            ll[r] = self.loglik(
                &h[r * p..(r + 1) * p],
                &y[r * d..(r + 1) * d],
                buf,
                g,
                scale,
            );
        }
    }

    /// [`Mixture::loglik_rows`] of a diagonal mixture on the instruction set [`isa`] chose.
    ///
    /// [`isa`]: crate::lanes::isa
    #[allow(clippy::too_many_arguments)]
    fn diagonal_rows_on(
        &self,
        h: &[f32],
        y: &[f32],
        rows: usize,
        ll: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
        buf: &mut Vec<f64>,
    ) {
        #[cfg(target_arch = "x86_64")]
        match crate::lanes::isa() {
            // SAFETY: `isa` chose these only where the CPU has the instructions.
            crate::lanes::Isa::Avx512 => {
                return unsafe { self.diagonal_rows_avx512(h, y, rows, ll, grad, scale, buf) };
            }
            crate::lanes::Isa::Avx2 => {
                return unsafe { self.diagonal_rows_avx2(h, y, rows, ll, grad, scale, buf) };
            }
            crate::lanes::Isa::Baseline => {}
        }
        self.diagonal_rows::<crate::lanes::Portable>(h, y, rows, ll, grad, scale, buf)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn diagonal_rows_avx512(
        &self,
        h: &[f32],
        y: &[f32],
        rows: usize,
        ll: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
        buf: &mut Vec<f64>,
    ) {
        self.diagonal_rows::<crate::lanes::Avx512>(h, y, rows, ll, grad, scale, buf)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn diagonal_rows_avx2(
        &self,
        h: &[f32],
        y: &[f32],
        rows: usize,
        ll: &mut [f64],
        grad: Option<&mut [f32]>,
        scale: f64,
        buf: &mut Vec<f64>,
    ) {
        self.diagonal_rows::<crate::lanes::Portable>(h, y, rows, ll, grad, scale, buf)
    }

    /// The diagonal mixture's rows, `LANES` at a time (a last partial group repeats its
    /// last row in the spare lanes). Per group: the weights' softmax, each component's log
    /// term with its sigmas and standardised residuals kept, the log-sum-exp, then the
    /// gradient from the responsibilities. Every exp and ln appears once per value (sigma's
    /// e^-|raw| serves softplus and the sigmoid, the softmax's and the log-sum-exp's terms
    /// give pi and the responsibilities).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn diagonal_rows<M: crate::lanes::LaneMath>(
        &self,
        h: &[f32],
        y: &[f32],
        rows: usize,
        ll: &mut [f64],
        mut grad: Option<&mut [f32]>,
        scale: f64,
        buf: &mut Vec<f64>,
    ) {
        use crate::lanes::{LANES as L, Lanes};
        // SAFETY (each `M::` call below): the caller runs this on a CPU `M` is for.
        let (k, d, at, p) = (self.k, self.d, self.head(), self.width());
        let kd = k * d;
        let floor = self.floor;
        buf.clear();
        buf.resize((4 * k + 3 * kd) * L, 0.0);
        let (logit, rest) = buf.split_at_mut(k * L);
        let (pi, rest) = rest.split_at_mut(k * L);
        let (lc, rest) = rest.split_at_mut(k * L);
        let (q, rest) = rest.split_at_mut(k * L);
        let (sig, rest) = rest.split_at_mut(kd * L);
        let (zz, tt) = rest.split_at_mut(kd * L);
        let mut start = 0;
        while start < rows {
            let valid = L.min(rows - start);
            let row: [usize; L] = std::array::from_fn(|i| start + i.min(valid - 1));
            // Column `col` of the group's head outputs.
            let column =
                |col: usize| -> Lanes { std::array::from_fn(|i| h[row[i] * p + col] as f64) };
            // log pi_k = logit_k - ln sum_k exp(logit_k), and pi_k.
            let mut lmax = [f64::NEG_INFINITY; L];
            for c in 0..k {
                let v = column(c);
                for i in 0..L {
                    lmax[i] = lmax[i].max(v[i]);
                }
                logit[c * L..(c + 1) * L].copy_from_slice(&v);
            }
            let mut sum = [0.0; L];
            for c in 0..k {
                let mut v = lanes::at(logit, c * L);
                for i in 0..L {
                    v[i] -= lmax[i];
                }
                let e = unsafe { M::exp(&v) };
                for i in 0..L {
                    sum[i] += e[i];
                }
                pi[c * L..(c + 1) * L].copy_from_slice(&e);
            }
            let ln_sum = unsafe { M::ln(&sum) };
            let mut log_norm = [0.0; L];
            for i in 0..L {
                log_norm[i] = lmax[i] + ln_sum[i];
            }
            for c in 0..k {
                for i in 0..L {
                    pi[c * L + i] /= sum[i];
                }
            }
            // l_k = log pi_k + sum_j (-ln(2 pi)/2 - ln sigma_kj - z_kj^2 / 2).
            for c in 0..k {
                let mut l = lanes::at(logit, c * L);
                for i in 0..L {
                    l[i] -= log_norm[i];
                }
                for j in 0..d {
                    let (raw, mu) = (column(at.raw_scale(c, j)), column(at.mu(c, j)));
                    let yj: Lanes = std::array::from_fn(|i| y[row[i] * d + j] as f64);
                    let t = unsafe { M::exp(&std::array::from_fn(|i| -raw[i].abs())) };
                    let sp = unsafe { M::ln_1p(&t) };
                    let mut sigma = [0.0; L];
                    for i in 0..L {
                        sigma[i] = (raw[i].max(0.0) + sp[i]) + floor;
                    }
                    let ln_sigma = unsafe { M::ln(&sigma) };
                    let mut z = [0.0; L];
                    for i in 0..L {
                        z[i] = (yj[i] - mu[i]) / sigma[i];
                        l[i] -= HALF_LN_2PI + ln_sigma[i] + 0.5 * z[i] * z[i];
                    }
                    let cj = (c * d + j) * L;
                    sig[cj..cj + L].copy_from_slice(&sigma);
                    zz[cj..cj + L].copy_from_slice(&z);
                    tt[cj..cj + L].copy_from_slice(&t);
                }
                lc[c * L..(c + 1) * L].copy_from_slice(&l);
            }
            // log p(y) = logsumexp_k l_k.
            let mut m = [f64::NEG_INFINITY; L];
            for c in 0..k {
                let v = lanes::at(lc, c * L);
                for i in 0..L {
                    m[i] = m[i].max(v[i]);
                }
            }
            let mut s = [0.0; L];
            for c in 0..k {
                let mut v = lanes::at(lc, c * L);
                for i in 0..L {
                    v[i] -= m[i];
                }
                let e = unsafe { M::exp(&v) };
                for i in 0..L {
                    s[i] += e[i];
                }
                q[c * L..(c + 1) * L].copy_from_slice(&e);
            }
            let ln_s = unsafe { M::ln(&s) };
            let mut out = [0.0; L];
            for i in 0..L {
                out[i] = if m[i].is_finite() {
                    m[i] + ln_s[i]
                } else {
                    m[i]
                };
            }
            ll[start..start + valid].copy_from_slice(&out[..valid]);
            if let Some(g) = grad.as_deref_mut() {
                self.diagonal_gradient(h, g, &row, valid, pi, q, &s, sig, zz, tt, scale);
            }
            start += L;
        }
    }

    /// The gradient of a group of rows from what [`Mixture::diagonal_rows`] kept: with the
    /// responsibilities gamma_k = q_k / s, d/d logit_k = pi_k - gamma_k, d/d mu_kj =
    /// -gamma_k z_kj / sigma_kj, d/d raw_kj = gamma_k (1 - z_kj^2) / sigma_kj * sigmoid(raw_kj).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn diagonal_gradient(
        &self,
        h: &[f32],
        g: &mut [f32],
        row: &[usize; crate::lanes::LANES],
        valid: usize,
        pi: &[f64],
        q: &[f64],
        s: &[f64; crate::lanes::LANES],
        sig: &[f64],
        zz: &[f64],
        tt: &[f64],
        scale: f64,
    ) {
        use crate::lanes::{LANES as L, Lanes};
        let (k, d, at, p) = (self.k, self.d, self.head(), self.width());
        for c in 0..k {
            let (qc, pc) = (lanes::at(q, c * L), lanes::at(pi, c * L));
            let mut gamma = [0.0; L];
            let mut gl = [0.0f32; L];
            for i in 0..L {
                gamma[i] = qc[i] / s[i];
                gl[i] = gradient_f32(scale * (pc[i] - gamma[i]));
            }
            for i in 0..valid {
                g[row[i] * p + c] = gl[i];
            }
            for j in 0..d {
                let (im, is, cj) = (at.mu(c, j), at.raw_scale(c, j), (c * d + j) * L);
                let (sigma, z, t) = (lanes::at(sig, cj), lanes::at(zz, cj), lanes::at(tt, cj));
                let raw: Lanes = std::array::from_fn(|i| h[row[i] * p + is] as f64);
                let (mut gm, mut gs) = ([0.0f32; L], [0.0f32; L]);
                for i in 0..L {
                    let sigmoid = if raw[i] >= 0.0 {
                        1.0 / (1.0 + t[i])
                    } else {
                        t[i] / (1.0 + t[i])
                    };
                    gm[i] = gradient_f32(scale * (-gamma[i] * z[i] / sigma[i]));
                    gs[i] =
                        gradient_f32(scale * gamma[i] * (1.0 - z[i] * z[i]) / sigma[i] * sigmoid);
                }
                for i in 0..valid {
                    g[row[i] * p + im] = gm[i];
                    g[row[i] * p + is] = gs[i];
                }
            }
        }
    }
}
