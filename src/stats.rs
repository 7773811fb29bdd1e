//! What users ask of a predicted conditional density, beyond pi, mu and sigma: per target
//! dimension, the marginal mixture's mean, variance, mode, CDF and quantiles, and proper
//! scores (CRPS in closed form, the PIT). All in f64 on one row's mixture; the backends only
//! produce the mixture parameters.
//!
//! The marginal of a diagonal Gaussian mixture in dimension j is the 1-D mixture
//! `sum_k pi_k N(mu_kj, sigma_kj^2)`. For a transformed target ([`Transform`]) that mixture is
//! the density of `z = g(y)`, and every answer here is about `y`: the CDF and quantiles
//! through `g`, the density with the Jacobian, the mean and variance in closed form (log) or
//! by quadrature (logit), the mode by search, the CRPS by quadrature.

use crate::student::StudentT;
use crate::transform::Transform;

/// A 1-D Gaussian mixture: one row's marginal in one target dimension (of `z = g(y)` when
/// `transform` is not none), or with `dof` a mixture of Student's t (each component's
/// location, scale and degrees of freedom; a multivariate t's marginal is a t with its
/// degrees of freedom).
#[derive(Debug, Clone, PartialEq)]
pub struct Marginal {
    pub pi: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub transform: Transform,
    /// Per component, Student's t degrees of freedom (> 2); empty for Gaussian components.
    /// Not combined with a transform (the trainer refuses that combination).
    pub dof: Vec<f64>,
}

/// Nodes and weights of 8-point Gauss-Legendre quadrature on [-1, 1].
const GAUSS_LEGENDRE_8: [(f64, f64); 8] = [
    (-0.960_289_856_497_536_3, 0.101_228_536_290_376_26),
    (-0.796_666_477_413_626_7, 0.222_381_034_453_374_47),
    (-0.525_532_409_916_329, 0.313_706_645_877_887_3),
    (-0.183_434_642_495_649_8, 0.362_683_783_378_362),
    (0.183_434_642_495_649_8, 0.362_683_783_378_362),
    (0.525_532_409_916_329, 0.313_706_645_877_887_3),
    (0.796_666_477_413_626_7, 0.222_381_034_453_374_47),
    (0.960_289_856_497_536_3, 0.101_228_536_290_376_26),
];

/// sum_i w_i f(x_i) approximating the integral of f over [a, b]: `panels` panels of 8-point
/// Gauss-Legendre.
fn integrate(a: f64, b: f64, panels: usize, f: &mut dyn FnMut(f64) -> f64) -> f64 {
    if b <= a {
        return 0.0;
    }
    let h = (b - a) / panels as f64;
    let mut total = 0.0;
    for p in 0..panels {
        let mid = a + (p as f64 + 0.5) * h;
        for (x, w) in GAUSS_LEGENDRE_8 {
            total += w * 0.5 * h * f(mid + 0.5 * h * x);
        }
    }
    total
}

/// Gauss-Legendre panels on each side of a t mixture's pairwise CRPS integrals (8 nodes
/// each): within 2e-6 (relative) of 50 times as many on the tests' pairs, down to a
/// component 50 times narrower than the other and nu 2.05 for both, and within 1e-7 where nu
/// is 2.5 or more (the integrand's ends behave like cos(theta)^(nu_w + nu_n - 2)).
const PAIR_PANELS: usize = 8;

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

/// The point where a CDF reaches `q`, to 1e-12 relative: bisection within [lo, hi], which
/// must hold it.
pub fn invert(cdf: &dyn Fn(f64) -> f64, q: f64, lo: f64, hi: f64) -> f64 {
    let (mut lo, mut hi) = (lo, hi);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < q {
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
            transform: Transform::None,
            dof: Vec::new(),
        }
    }

    /// The same mixture with Student's t components of these degrees of freedom (K values;
    /// empty: Gaussian).
    pub fn with_dof(mut self, dof: &[f64]) -> Marginal {
        self.dof = dof.to_vec();
        self
    }

    /// Component `c` as a Student's t, if the components are t.
    fn student(&self, c: usize) -> Option<StudentT> {
        self.dof.get(c).map(|&nu| StudentT {
            mu: self.mu[c],
            sigma: self.sigma[c],
            nu,
        })
    }

    fn is_student(&self) -> bool {
        !self.dof.is_empty()
    }

    /// Each component's standard t, its constants computed once (for a caller evaluating
    /// the density or CDF many times: the mode, quantiles).
    fn standards(&self) -> Vec<crate::student::Standard> {
        self.dof
            .iter()
            .map(|&nu| crate::student::Standard::new(nu))
            .collect()
    }

    /// The density of a t mixture at y, from its components' standard t's.
    fn t_pdf(&self, st: &[crate::student::Standard], y: f64) -> f64 {
        (0..self.pi.len())
            .map(|c| {
                let s = self.sigma[c];
                self.pi[c] * st[c].ln_pdf((y - self.mu[c]) / s).exp() / s
            })
            .sum()
    }

    /// The CDF of a t mixture at y, from its components' standard t's.
    fn t_cdf(&self, st: &[crate::student::Standard], y: f64) -> f64 {
        (0..self.pi.len())
            .map(|c| self.pi[c] * st[c].cdf((y - self.mu[c]) / self.sigma[c]))
            .sum::<f64>()
            .clamp(0.0, 1.0)
    }

    /// The same mixture read as the density of `z = g(y)` for `transform`.
    pub fn with_transform(mut self, transform: Transform) -> Marginal {
        self.transform = transform;
        self
    }

    /// The mixture of z alone (its transform set aside).
    fn of_z(&self) -> Marginal {
        Marginal {
            transform: Transform::None,
            ..self.clone()
        }
    }

    /// The range of z outside which every component has less than 1e-23 of its mass
    /// (11 sigma either side).
    fn z_range(&self) -> (f64, f64) {
        let lo = self
            .mu
            .iter()
            .zip(&self.sigma)
            .map(|(m, s)| m - 11.0 * s)
            .fold(f64::INFINITY, f64::min);
        let hi = self
            .mu
            .iter()
            .zip(&self.sigma)
            .map(|(m, s)| m + 11.0 * s)
            .fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }

    /// E[f(Y)] = sum_k pi_k E[f(g⁻¹(Z_k))] for Z_k ~ N(mu_k, sigma_k^2), by the
    /// trapezoidal rule on 12 sigma either side in steps of sigma/4 (exponentially accurate
    /// for smooth f under a Gaussian weight).
    fn expect(&self, f: &dyn Fn(f64) -> f64) -> f64 {
        let mut total = 0.0;
        for ((p, m), s) in self.pi.iter().zip(&self.mu).zip(&self.sigma) {
            let mut e = 0.0;
            for i in -48..=48 {
                let t = i as f64 * 0.25;
                e += phi(t) * 0.25 * f(self.transform.inverse(m + s * t));
            }
            total += p * e;
        }
        total
    }

    pub fn mean(&self) -> f64 {
        match self.transform {
            Transform::None => self.pi.iter().zip(&self.mu).map(|(p, m)| p * m).sum(),
            // E[e^Z] = e^(mu + sigma^2 / 2).
            Transform::Log => self
                .pi
                .iter()
                .zip(&self.mu)
                .zip(&self.sigma)
                .map(|((p, m), s)| p * (m + 0.5 * s * s).exp())
                .sum(),
            Transform::Logit { .. } => self.expect(&|y| y),
        }
    }

    /// Variance by the law of total variance: E[sigma^2] + Var[mu] (of y: in closed form for
    /// log, E[e^2Z] = e^(2 mu + 2 sigma^2); by quadrature for logit).
    pub fn variance(&self) -> f64 {
        let m = self.mean();
        match self.transform {
            Transform::None => {}
            Transform::Log => {
                let second: f64 = self
                    .pi
                    .iter()
                    .zip(&self.mu)
                    .zip(&self.sigma)
                    .map(|((p, mu), s)| p * (2.0 * mu + 2.0 * s * s).exp())
                    .sum();
                if !second.is_finite() {
                    // Past f64's range (a far extrapolation): infinite, as the mean is.
                    return f64::INFINITY;
                }
                return (second - m * m).max(0.0);
            }
            Transform::Logit { .. } => return self.expect(&|y| (y - m) * (y - m)),
        }
        if self.is_student() {
            return (0..self.pi.len())
                .map(|c| {
                    let t = self.student(c).expect("t components");
                    self.pi[c] * (t.variance() + (t.mu - m) * (t.mu - m))
                })
                .sum();
        }
        self.pi
            .iter()
            .zip(&self.mu)
            .zip(&self.sigma)
            .map(|((p, mu), s)| p * (s * s + (mu - m) * (mu - m)))
            .sum()
    }

    pub fn pdf(&self, y: f64) -> f64 {
        if !self.transform.is_none() {
            return match self.transform.forward(y) {
                Some(z) if z.is_finite() => {
                    self.of_z().pdf(z) * self.transform.log_jacobian(z).exp()
                }
                _ => 0.0,
            };
        }
        if self.is_student() {
            return self.t_pdf(&self.standards(), y);
        }
        self.pi
            .iter()
            .zip(&self.mu)
            .zip(&self.sigma)
            .map(|((p, m), s)| p * phi((y - m) / s) / s)
            .sum()
    }

    pub fn cdf(&self, y: f64) -> f64 {
        if !self.transform.is_none() {
            let (low, high) = self.transform.bounds();
            return match self.transform.forward(y) {
                Some(z) => self.of_z().cdf(z),
                None if y <= low => 0.0,
                None if y >= high => 1.0,
                None => f64::NAN,
            };
        }
        if self.is_student() {
            return self.t_cdf(&self.standards(), y);
        }
        self.pi
            .iter()
            .zip(&self.mu)
            .zip(&self.sigma)
            .map(|((p, m), s)| p * big_phi((y - m) / s))
            .sum::<f64>()
            .clamp(0.0, 1.0)
    }

    /// The highest-density point: fixed-point iteration of the stationarity condition
    /// `y = sum_k r_k(y) mu_k / sum_k r_k(y)` with `r_k = pi_k N(y; mu_k, sigma_k) / sigma_k^2`
    /// (for a t, `pi_k t_k(y) (nu_k + 1) / (nu_k sigma_k^2 + (y - mu_k)^2)`),
    /// started from every component mean; the start that converges to the highest density wins.
    pub fn mode(&self) -> f64 {
        if !self.transform.is_none() {
            return self.transformed_mode();
        }
        let mut best = (f64::NEG_INFINITY, self.mean());
        let st = self.standards();
        for &start in &self.mu {
            let mut y = start;
            for _ in 0..200 {
                let (mut num, mut den) = (0.0, 0.0);
                for (c, ((p, m), s)) in self.pi.iter().zip(&self.mu).zip(&self.sigma).enumerate() {
                    // -d/dy of component c's density is r (y - m).
                    let r = match st.get(c) {
                        None => p * phi((y - m) / s) / (s * s * s),
                        Some(t) => {
                            let density = t.ln_pdf((y - m) / s).exp() / s;
                            p * density * (t.nu + 1.0) / (t.nu * s * s + (y - m) * (y - m))
                        }
                    };
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
        if !self.transform.is_none() {
            return self.transform.inverse(self.of_z().quantile(q));
        }
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
        // A t's far quantiles lie hundreds of scales out: widen until the bracket holds q.
        let (mut lo, mut hi) = (lo0, hi0);
        let mid = 0.5 * (lo0 + hi0);
        let st = self.standards();
        let cdf = |y: f64| {
            if st.is_empty() {
                self.cdf(y)
            } else {
                self.t_cdf(&st, y)
            }
        };
        for _ in 0..64 {
            if cdf(lo) <= q && cdf(hi) >= q {
                break;
            }
            lo = mid - 2.0 * (mid - lo);
            hi = mid + 2.0 * (hi - mid);
        }
        invert(&cdf, q, lo, hi)
    }

    /// CRPS of observation `y`, in closed form for a Gaussian mixture (Grimit et al. 2006):
    /// `sum_k pi_k A(y - mu_k, s_k^2) - 1/2 sum_k sum_l pi_k pi_l A(mu_k - mu_l, s_k^2 + s_l^2)`
    /// with `A(m, v) = 2 sqrt(v) phi(m / sqrt(v)) + m (2 Phi(m / sqrt(v)) - 1)`.
    pub fn crps(&self, y: f64) -> f64 {
        if !self.transform.is_none() {
            return self.transformed_crps(y);
        }
        if self.is_student() {
            return self.student_crps(y);
        }
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

    /// The mode of y for a transformed target: the highest s(u) = ln p_z(u) + ln |dz/dy|
    /// over u = g(y), among (a) the fixed points of its stationarity condition
    /// `u = (sum_k w_k mu_k + p(u) J'(u)) / sum_k w_k` (w_k = pi_k N(u; mu_k, sigma_k) /
    /// sigma_k^2, J = ln |dz/dy|; for one log-normal component, mu - sigma^2 in one step)
    /// started from every component's mean, which find narrow peaks, and (b) the best of a
    /// 256-point grid (over every component's mean ± 11 sigma, and down to
    /// mu - sigma^2 - 3 sigma, where a log-normal component's own mode lies) refined by
    /// golden-section search between its neighbours, which finds what the fixed points miss.
    fn transformed_mode(&self) -> f64 {
        let z = self.of_z();
        let t = self.transform;
        let score = |v: f64| {
            let p = z.pdf(v);
            if p > 0.0 {
                p.ln() + t.log_jacobian(v)
            } else {
                f64::NEG_INFINITY
            }
        };
        // J'(u): -1 for log (J = -u), tanh(u/2) for logit.
        let slope = |u: f64| match t {
            Transform::None => 0.0,
            Transform::Log => -1.0,
            Transform::Logit { .. } => (0.5 * u).tanh(),
        };
        let mut best = (f64::NEG_INFINITY, self.mu.first().copied().unwrap_or(0.0));
        let consider = |u: f64, best: &mut (f64, f64)| {
            let sc = score(u);
            if sc > best.0 {
                *best = (sc, u);
            }
        };
        for &start in &self.mu {
            let mut u = start;
            for _ in 0..200 {
                let (mut num, mut den, mut p) = (0.0, 0.0, 0.0);
                for ((pi, m), s) in self.pi.iter().zip(&self.mu).zip(&self.sigma) {
                    let r = pi * phi((u - m) / s) / s;
                    p += r;
                    num += r / (s * s) * m;
                    den += r / (s * s);
                }
                if den <= 0.0 || !den.is_finite() {
                    break;
                }
                let next = (num + p * slope(u)) / den;
                if !next.is_finite() {
                    break;
                }
                let done = (next - u).abs() <= 1e-12 * (1.0 + u.abs());
                u = next;
                if done {
                    break;
                }
            }
            consider(u, &mut best);
        }
        let (mut lo, hi) = self.z_range();
        if t == Transform::Log {
            for (m, s) in self.mu.iter().zip(&self.sigma) {
                lo = lo.min(m - s * s - 3.0 * s);
            }
        }
        const N: usize = 256;
        let step = (hi - lo) / N as f64;
        let mut grid = (f64::NEG_INFINITY, lo);
        for i in 0..=N {
            let v = lo + i as f64 * step;
            let sc = score(v);
            if sc > grid.0 {
                grid = (sc, v);
            }
        }
        let (mut a, mut b) = (grid.1 - step, grid.1 + step);
        let r = 0.5 * (5f64.sqrt() - 1.0);
        for _ in 0..100 {
            let (c, d) = (b - r * (b - a), a + r * (b - a));
            if score(c) >= score(d) {
                b = d;
            } else {
                a = c;
            }
            if b - a <= 1e-13 * (1.0 + a.abs()) {
                break;
            }
        }
        consider(0.5 * (a + b), &mut best);
        t.inverse(best.1)
    }

    /// CRPS of y for a mixture of t: `E|X - y| - E|X - X'| / 2` with
    /// `E|X - y| = sum_k pi_k E|X_k - y|` and `E|X - X'| = sum_k sum_l pi_k pi_l E|X_k - X_l|`,
    /// each `E|X_k - y|` and `E|X_k - X_k'|` in closed form ([`StudentT::mean_abs`],
    /// [`StudentT::mean_abs_pair`]), and `E|X_k - X_l|` (k != l) as `E|X_w - mu_n|` (closed
    /// form) plus the integral of `E|X_n - x| - |x - mu_n|` (n the narrower; a smooth bump
    /// that decays like 1/x^(nu_n - 1)) against the wider one's density, by the substitution
    /// `x = mu_w + sigma_w tan(theta)` and 8-point Gauss-Legendre panels on either side of the
    /// narrower one's location. (Integrating `E|X_n - x|` itself converged slowly where the
    /// wider t has nu near 2: its tails make the integrand's ends singular in theta.)
    fn student_crps(&self, y: f64) -> f64 {
        self.student_crps_with(y, PAIR_PANELS)
    }

    fn student_crps_with(&self, y: f64, panels: usize) -> f64 {
        let k = self.pi.len();
        let st = self.standards();
        // E|X_c - x| for component c.
        let mean_abs =
            |c: usize, x: f64| self.sigma[c] * st[c].mean_abs((x - self.mu[c]) / self.sigma[c]);
        let mut first = 0.0;
        let mut second = 0.0;
        for a in 0..k {
            first += self.pi[a] * mean_abs(a, y);
            second += self.pi[a] * self.pi[a] * self.student(a).expect("t").mean_abs_pair();
            for b in a + 1..k {
                let (n, w) = if self.sigma[a] <= self.sigma[b] {
                    (a, b)
                } else {
                    (b, a)
                };
                let (mu_n, mu_w, sigma_w) = (self.mu[n], self.mu[w], self.sigma[w]);
                let half = 0.5 * std::f64::consts::PI;
                let split = ((mu_n - mu_w) / sigma_w).atan();
                let mut f = |theta: f64| {
                    let t = theta.tan();
                    let sec2 = 1.0 + t * t;
                    let x = mu_w + sigma_w * t;
                    let bump = mean_abs(n, x) - (x - mu_n).abs();
                    st[w].ln_pdf(t).exp() * sec2 * bump
                };
                let e = mean_abs(w, mu_n)
                    + integrate(-half, split, panels, &mut f)
                    + integrate(split, half, panels, &mut f);
                second += 2.0 * self.pi[a] * self.pi[b] * e;
            }
        }
        first - 0.5 * second
    }

    /// CRPS of y for a transformed target: the integral over t of (F(t) - 1{t >= y})^2,
    /// written in z (t = g⁻¹(u), dt = du / |dz/dy|) and split at g(y), each side by
    /// 8-point Gauss-Legendre panels at most 1.5 of the narrowest component's sigma wide
    /// (2 to 64 panels a side) over every component's mean ± 11 sigma (extended to g(y) when
    /// y lies outside it). Beyond that range the integrand is below 1e-23 of the mass. For a
    /// y outside the support, its distance to the support adds.
    fn transformed_crps(&self, y: f64) -> f64 {
        let (low, _) = self.transform.bounds();
        let z = self.of_z();
        let (lo, hi) = self.z_range();
        let gy = match self.transform.forward(y) {
            Some(v) if v.is_finite() => v,
            _ if y <= low => f64::NEG_INFINITY,
            _ => f64::INFINITY,
        };
        let t = self.transform;
        let dt = |u: f64| (-t.log_jacobian(u)).exp();
        // Panels narrow enough for the steepest rise of F (a 1-sigma-wide component's).
        let narrowest = self.sigma.iter().cloned().fold(f64::INFINITY, f64::min);
        let panels =
            |a: f64, b: f64| ((b - a) / (1.5 * narrowest)).ceil().clamp(2.0, 64.0) as usize;
        let below = {
            let b = gy.min(hi);
            let mut f = |u: f64| z.cdf(u).powi(2) * dt(u);
            integrate(lo, b, panels(lo, b), &mut f)
        };
        let above = {
            let a = gy.max(lo);
            let mut f = |u: f64| (1.0 - z.cdf(u)).powi(2) * dt(u);
            integrate(a, hi, panels(a, hi), &mut f)
        };
        // Between the range and an observation far outside it, F is 0 (below) or 1 (above):
        // the integral there is the distance in y.
        let gap = if gy > hi {
            y - t.inverse(hi)
        } else if gy < lo {
            t.inverse(lo) - y
        } else {
            0.0
        };
        below + above + gap.max(0.0)
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

impl DimScores {
    /// The scores of several sets of rows together (`parts`: each set's rows and scores, one
    /// per target in the same order), as [`score`] gives them over all their rows: means
    /// weighted by rows, the PIT histograms added and the calibration error taken from their
    /// sum. None where the parts' targets differ, or there are no rows.
    pub fn pooled(parts: &[(usize, &[DimScores])]) -> Option<Vec<DimScores>> {
        let (_, first) = parts.first()?;
        let same = parts.iter().all(|(_, s)| {
            s.len() == first.len() && s.iter().zip(*first).all(|(a, b)| a.target == b.target)
        });
        let n: usize = parts.iter().map(|(rows, _)| rows).sum();
        if !same || n == 0 {
            return None;
        }
        let n = n as f64;
        Some(
            (0..first.len())
                .map(|j| {
                    let mean = |f: &dyn Fn(&DimScores) -> f64| -> f64 {
                        parts.iter().map(|(r, s)| *r as f64 * f(&s[j])).sum::<f64>() / n
                    };
                    let mut hist = vec![0u64; first[j].pit_histogram.len()];
                    for (_, s) in parts {
                        for (h, c) in hist.iter_mut().zip(&s[j].pit_histogram) {
                            *h += c;
                        }
                    }
                    let bins = hist.len().max(1) as f64;
                    let calibration_error = hist
                        .iter()
                        .map(|&c| (c as f64 / n - 1.0 / bins).abs())
                        .sum::<f64>()
                        / bins;
                    DimScores {
                        target: first[j].target.clone(),
                        crps: mean(&|s| s.crps),
                        rmse: mean(&|s| s.rmse * s.rmse).sqrt(),
                        pit_histogram: hist,
                        calibration_error,
                        coverage_50: mean(&|s| s.coverage_50),
                        coverage_90: mean(&|s| s.coverage_90),
                    }
                })
                .collect(),
        )
    }
}

/// Scores every target dimension of `pred` against the observed `y` (rows*D, original units).
pub fn score(targets: &[String], pred: &crate::model::Prediction, y: &[f32]) -> Vec<DimScores> {
    let d = targets.len();
    let rows = y.len() / d.max(1);
    (0..d)
        .map(|j| {
            let (mut crps, mut se, mut in50, mut in90) = (0.0, 0.0, 0usize, 0usize);
            let mut hist = vec![0u64; 10];
            // Each row's CRPS, squared error and PIT on every core (a t mixture's CRPS takes
            // quadrature), then summed in row order: the same bits on any number of cores.
            use rayon::prelude::*;
            let each: Vec<(f64, f64, f64)> = (0..rows)
                .into_par_iter()
                .map(|r| {
                    let m = pred.marginal(r, j);
                    let obs = y[r * d + j] as f64;
                    (m.crps(obs), (m.mean() - obs).powi(2), m.cdf(obs))
                })
                .collect();
            for (c, e, u) in each {
                crps += c;
                se += e;
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
            transform: Transform::None,
            dof: Vec::new(),
        };
        assert!((m.quantile(0.975) - (2.0 + 3.0 * 1.959963984540054)).abs() < 1e-9);
        assert!((m.mode() - 2.0).abs() < 1e-12);
        // CRPS of N(mu, s^2) at y: s (z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)).
        let z = (3.5 - 2.0) / 3.0;
        let want =
            3.0 * (z * (2.0 * big_phi(z) - 1.0) + 2.0 * phi(z) - 1.0 / std::f64::consts::PI.sqrt());
        assert!((m.crps(3.5) - want).abs() < 1e-12);
    }

    /// A log-normal mixture against its closed forms: CDF, quantile, mean, variance, mode of
    /// one component, and the CRPS of one log-normal (Baran and Lerch 2015):
    /// y (2 Phi(w) - 1) - 2 e^(mu + s^2/2) (Phi(w - s) + Phi(s / sqrt 2) - 1), w = (ln y - mu) / s.
    #[test]
    fn log_transformed_marginals_match_the_log_normal() {
        let (mu, s) = (0.7, 0.45);
        let m = Marginal {
            pi: vec![1.0],
            mu: vec![mu],
            sigma: vec![s],
            transform: Transform::Log,
            dof: Vec::new(),
        };
        let close = |a: f64, b: f64, tol: f64, what: &str| {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1e-300),
                "{what}: {a} vs {b}"
            );
        };
        close(m.mean(), (mu + s * s / 2.0).exp(), 1e-12, "mean");
        close(
            m.variance(),
            ((s * s).exp() - 1.0) * (2.0 * mu + s * s).exp(),
            1e-12,
            "variance",
        );
        close(m.mode(), (mu - s * s).exp(), 1e-8, "mode");
        close(
            m.quantile(0.9),
            (mu + s * 1.281_551_565_544_600_5).exp(),
            1e-9,
            "q0.9",
        );
        for y in [0.3, 1.0, 2.0, 2.4, 9.0, 40.0] {
            let w = (f64::ln(y) - mu) / s;
            close(m.cdf(y), big_phi(w), 1e-12, "cdf");
            close(m.pdf(y), phi(w) / (s * y), 1e-12, "pdf");
            let want = y * (2.0 * big_phi(w) - 1.0)
                - 2.0
                    * (mu + s * s / 2.0).exp()
                    * (big_phi(w - s) + big_phi(s / std::f64::consts::SQRT_2) - 1.0);
            close(m.crps(y), want, 1e-9, "crps");
        }
        // Past f64's range: an infinite mean has an infinite variance (not 0), and the mode
        // and quantiles stay positive.
        let far = Marginal {
            pi: vec![1.0],
            mu: vec![800.0],
            sigma: vec![30.0],
            transform: Transform::Log,
            dof: Vec::new(),
        };
        assert_eq!((far.mean(), far.variance()), (f64::INFINITY, f64::INFINITY));
        assert!(far.mode() > 0.0 && far.quantile(0.001) > 0.0);
        // A narrow peak far narrower than any grid's spacing is still the mode (found by the
        // fixed point started at its component): e^(3 - 0.001^2).
        let peaked = Marginal {
            pi: vec![0.5, 0.5],
            mu: vec![0.0, 3.0],
            sigma: vec![1.0, 0.001],
            transform: Transform::Log,
            dof: Vec::new(),
        };
        close(peaked.mode(), (3.0f64 - 1e-6).exp(), 1e-9, "narrow mode");
        // No mass below zero; an observation below the support adds its distance.
        assert_eq!(m.cdf(0.0), 0.0);
        assert_eq!(m.cdf(-3.0), 0.0);
        assert_eq!(m.pdf(-1.0), 0.0);
        close(m.crps(-2.0), m.crps(0.0) + 2.0, 1e-9, "crps below 0");
    }

    /// A logit-transformed mixture's mean, variance and CRPS against brute-force integrals
    /// of its density on a fine grid of y, and its quantiles against its CDF.
    #[test]
    fn logit_transformed_marginals_match_numerical_integrals() {
        let m = Marginal {
            pi: vec![0.3, 0.7],
            mu: vec![-1.2, 0.8],
            sigma: vec![0.5, 0.9],
            transform: Transform::Logit {
                low: 2.0,
                high: 5.0,
            },
            dof: Vec::new(),
        };
        let n = 400_000;
        let h = 3.0 / n as f64;
        let ys: Vec<f64> = (0..n).map(|i| 2.0 + (i as f64 + 0.5) * h).collect();
        let mass: f64 = ys.iter().map(|&y| m.pdf(y) * h).sum();
        let mean: f64 = ys.iter().map(|&y| y * m.pdf(y) * h).sum();
        let var: f64 = ys.iter().map(|&y| (y - mean).powi(2) * m.pdf(y) * h).sum();
        assert!((mass - 1.0).abs() < 1e-6, "mass {mass}");
        assert!((m.mean() - mean).abs() < 1e-6, "{} vs {mean}", m.mean());
        assert!(
            (m.variance() - var).abs() < 1e-6,
            "{} vs {var}",
            m.variance()
        );
        for obs in [2.5, 3.9, 4.7] {
            let crps: f64 = ys
                .iter()
                .map(|&t| (m.cdf(t) - if t >= obs { 1.0 } else { 0.0 }).powi(2) * h)
                .sum();
            assert!(
                (m.crps(obs) - crps).abs() < 1e-5,
                "{} vs {crps}",
                m.crps(obs)
            );
        }
        for q in [0.01, 0.5, 0.99] {
            assert!((m.cdf(m.quantile(q)) - q).abs() < 1e-9);
        }
        let mode = m.mode();
        for dy in [-1e-3, 1e-3] {
            assert!(m.pdf(mode) >= m.pdf(mode + dy));
        }
        assert_eq!((m.cdf(2.0), m.cdf(5.0)), (0.0, 1.0));
    }

    /// A mixture of t's mean, variance and CRPS against brute-force integrals of its density
    /// (on y = sinh(u), which reaches a million scales out), its quantiles against its CDF,
    /// and its mode against its neighbours.
    #[test]
    fn student_t_marginals_match_numerical_integrals() {
        let integrals = |m: &Marginal, obs: f64| {
            let n = 400_000;
            let top = 1e6f64.asinh();
            let h = 2.0 * top / n as f64;
            let (mut mass, mut mean, mut second, mut crps) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..n {
                let u = -top + (i as f64 + 0.5) * h;
                let (y, dy) = (u.sinh(), u.cosh() * h);
                let p = m.pdf(y) * dy;
                mass += p;
                mean += y * p;
                second += y * y * p;
                // The CRPS on either side of the observation (its integrand jumps there).
                let (v, dv) = ((0.5 * u).sinh(), 0.5 * (0.5 * u).cosh() * h);
                let (below, above) = (obs - v.abs(), obs + v.abs());
                crps += if u < 0.0 {
                    m.cdf(below).powi(2) * dv
                } else {
                    (1.0 - m.cdf(above)).powi(2) * dv
                };
            }
            (mass, mean, second - mean * mean, crps)
        };
        // (The second: the wider component's nu near 2, where a plain quadrature of the
        // pairwise term was off by 2e-5.)
        for dof in [
            vec![4.0, 7.0],
            vec![30.0, 2.2],
            vec![2.5, 30.0],
            vec![1e6, 1e6],
        ] {
            let m = Marginal {
                pi: vec![0.35, 0.65],
                mu: vec![-1.0, 2.0],
                sigma: vec![0.4, 1.3],
                transform: Transform::None,
                dof: dof.clone(),
            };
            for obs in [-1.2, 0.5, 9.0] {
                let (mass, mean, var, crps) = integrals(&m, obs);
                assert!((mass - 1.0).abs() < 1e-6, "{dof:?}: mass {mass}");
                assert!(
                    (m.mean() - mean).abs() < 1e-5,
                    "{dof:?}: {} vs {mean}",
                    m.mean()
                );
                if dof.iter().all(|&v| v >= 4.0) {
                    // (With nu = 2.5 the variance's integral converges too slowly to check.)
                    let rel = (m.variance() - var).abs() / var;
                    assert!(rel < 1e-4, "{dof:?}: variance {} vs {var}", m.variance());
                }
                let got = m.crps(obs);
                assert!(
                    (got - crps).abs() < 2e-7 * (1.0 + crps),
                    "{dof:?} y={obs}: CRPS {got} vs {crps}"
                );
            }
            for q in [1e-6, 0.01, 0.5, 0.99, 1.0 - 1e-6] {
                let x = m.quantile(q);
                assert!(
                    (m.cdf(x) - q).abs() < 1e-9 * q.max(1e-3),
                    "{dof:?} q={q}: F({x})={}",
                    m.cdf(x)
                );
            }
            let mode = m.mode();
            for dy in [-1e-4, 1e-4] {
                assert!(m.pdf(mode) >= m.pdf(mode + dy), "{dof:?}: mode {mode}");
            }
        }
        // A t with a million degrees of freedom is the Gaussian.
        let t = Marginal::of(&[1.0], &[0.5], &[2.0], 1, 0).with_dof(&[1e9]);
        let g = Marginal::of(&[1.0], &[0.5], &[2.0], 1, 0);
        for y in [-3.0, 0.5, 4.0] {
            assert!(
                (t.crps(y) - g.crps(y)).abs() < 1e-7,
                "{} vs {}",
                t.crps(y),
                g.crps(y)
            );
            assert!((t.cdf(y) - g.cdf(y)).abs() < 1e-8);
        }
    }

    /// The pairwise CRPS quadrature of a t mixture at its panel count against 50 times as
    /// many, on pairs of very different scales and nu down to 2.05.
    #[test]
    fn student_crps_quadrature_has_converged() {
        for (mu, sigma, dof) in [
            ([0.0, 0.0], [0.01, 1.0], [5.0, 2.5]),
            ([-1.0, 2.0], [0.4, 1.3], [30.0, 2.05]),
            ([0.0, 3.0], [1.0, 0.02], [2.05, 2.05]),
            ([0.0, 1e3], [1.0, 1.0], [3.0, 1e8]),
        ] {
            let m = Marginal {
                pi: vec![0.3, 0.7],
                mu: mu.to_vec(),
                sigma: sigma.to_vec(),
                transform: Transform::None,
                dof: dof.to_vec(),
            };
            for y in [-2.0, 0.0, 0.5, 3.0] {
                let (got, fine) = (m.crps(y), m.student_crps_with(y, 50 * PAIR_PANELS));
                assert!(
                    (got - fine).abs() <= 2e-6 * fine.abs().max(1.0),
                    "{mu:?} {sigma:?} {dof:?} y={y}: {got} vs {fine}"
                );
            }
        }
    }
}
