//! Student's t distribution in f64: what a mixture of t components (issue 26's
//! `--family student-t`) needs of one component, and the special functions it rests on.
//!
//! For a component with location `mu`, scale `sigma` and degrees of freedom `nu`, with
//! `z = (y - mu) / sigma`:
//!
//! ```text
//! ln p(y)  = lnΓ((nu+1)/2) - lnΓ(nu/2) - ln(nu π)/2 - ln sigma - (nu+1)/2 ln(1 + z²/nu)
//! F(y)     = 1 - I_x(nu/2, 1/2) / 2 for z >= 0 (x = nu / (nu + z²)), I_x / 2 below
//! mean     = mu (nu > 1),  variance = sigma² nu / (nu - 2) (nu > 2)
//! ```
//!
//! and the gradient of `-ln p(y)` (with `w = (nu+1) / (nu + z²)`):
//!
//! ```text
//! d/d mu    = -w z / sigma
//! d/d sigma = (1 - w z²) / sigma
//! d/d nu    = ( ψ(nu/2) - ψ((nu+1)/2) + 1/nu + ln(1 + z²/nu) - (nu+1) z² / (nu (nu + z²)) ) / 2
//! ```
//!
//! The CRPS of one t is in closed form (Jordan, Krüger and Lerch 2019, `crps_t` of
//! scoringRules). `lnΓ` is Lanczos' series (g = 7, 9 terms; about 1e-15 relative for
//! x >= 0.5, with the reflection formula below), ψ the asymptotic series after recurrence
//! to x >= 10, the regularised incomplete beta function Lentz's continued fraction. All are
//! checked against SciPy's values in the tests.

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 coefficients; reflection below 0.5).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x) Γ(1 - x) = π / sin(π x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ψ(x) = d/dx ln Γ(x) for x > 0: the recurrence ψ(x) = ψ(x + 1) - 1/x up to x >= 10, then
/// the asymptotic series ln x - 1/(2x) - sum B_2n / (2n x^2n).
pub fn digamma(x: f64) -> f64 {
    let mut x = x;
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // B2/2 = 1/12, B4/4 = -1/120, B6/6 = 1/252, B8/8 = -1/240, B10/10 = 1/132.
    let series = inv2
        * (1.0 / 12.0
            - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))));
    shift + x.ln() - 0.5 * inv - series
}

/// Stirling's correction lnΓ(x) - ((x - 1/2) ln x - x + ln(2π)/2) for x >= 16, to about
/// 1e-14 (the first term left out, 1/(1188x⁹)): 1/(12x) - 1/(360x³) + 1/(1260x⁵) -
/// 1/(1680x⁷).
fn stirling_correction(x: f64) -> f64 {
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))
}

/// lnΓ(a + h) - lnΓ(a) for a > 0 and h >= 0, without the cancellation of two large lnΓ
/// (a t's normaliser at a million degrees of freedom): the recurrence lnΓ(a) = lnΓ(a + 1) -
/// ln a up to a >= 16, then Stirling's series for both, their difference written with ln1p.
/// `shaders/mixture_head_common.wgsl` computes the same in f32.
pub fn ln_gamma_ratio(a: f64, h: f64) -> f64 {
    let mut a = a;
    let mut acc = 0.0;
    while a < 16.0 {
        acc -= (h / a).ln_1p();
        a += 1.0;
    }
    let b = a + h;
    acc + (a - 0.5) * (h / a).ln_1p() + h * b.ln() - h + stirling_correction(b)
        - stirling_correction(a)
}

/// The asymptotic series of ψ(x) for x >= 16 without its leading terms: ψ(x) = ln x -
/// 1/(2x) - this.
fn digamma_series(x: f64) -> f64 {
    let inv2 = 1.0 / (x * x);
    inv2 * (1.0 / 12.0
        - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))))
}

/// ψ(a + h) - ψ(a) for a > 0 and h >= 0, without cancellation (see [`ln_gamma_ratio`]).
pub fn digamma_diff(a: f64, h: f64) -> f64 {
    let mut a = a;
    let mut acc = 0.0;
    while a < 16.0 {
        acc += h / (a * (a + h));
        a += 1.0;
    }
    let b = a + h;
    acc + (h / a).ln_1p() + 0.5 * h / (a * b) - (digamma_series(b) - digamma_series(a))
}

/// The degrees of freedom of a raw head output: `2 + exp(clamp(raw, RAW_DOF_MIN,
/// RAW_DOF_MAX))`.
pub fn dof(raw: f64) -> f64 {
    use crate::layout::{RAW_DOF_MAX, RAW_DOF_MIN};
    2.0 + raw.clamp(RAW_DOF_MIN as f64, RAW_DOF_MAX as f64).exp()
}

/// d nu / d raw: nu - 2 where the clamp does not hold raw, else 0.
pub fn dof_slope(raw: f64, nu: f64) -> f64 {
    use crate::layout::{RAW_DOF_MAX, RAW_DOF_MIN};
    if (RAW_DOF_MIN as f64..RAW_DOF_MAX as f64).contains(&raw) {
        nu - 2.0
    } else {
        0.0
    }
}

/// The raw head output of `nu` degrees of freedom (nu > 2).
pub fn raw_dof(nu: f64) -> f64 {
    (nu - 2.0).ln()
}

/// The constant of a D-dimensional t's log-density with nu degrees of freedom (its scale's
/// log-determinant aside): lnΓ((nu+D)/2) - lnΓ(nu/2) - D/2 ln(nu π).
pub fn log_norm(nu: f64, d: f64) -> f64 {
    ln_gamma_ratio(0.5 * nu, 0.5 * d) - 0.5 * d * (nu * std::f64::consts::PI).ln()
}

/// d/d nu of `-ln p(y)` for a D-dimensional t whose whitened residual has squared norm `q`:
/// `-(ψ((nu+D)/2) - ψ(nu/2))/2 + D/(2 nu) + ln(1 + q/nu)/2 - (nu+D) q / (2 nu (nu+q))`.
pub fn nll_dof_derivative(nu: f64, d: f64, q: f64) -> f64 {
    -0.5 * digamma_diff(0.5 * nu, 0.5 * d) + 0.5 * d / nu + 0.5 * (q / nu).ln_1p()
        - 0.5 * (nu + d) * q / (nu * (nu + q))
}

/// The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1
/// (continued fraction by Lentz's method, on the side of x where it converges fast).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    inc_beta_split(a, b, x, 1.0 - x)
}

/// [`inc_beta`] at x given with its complement `y = 1 - x` (each exact where the other
/// would round: a t's CDF at a billion degrees of freedom has x within 1e-9 of 1). The
/// front factor's Γ ratio is taken without cancellation ([`ln_gamma_ratio`]).
pub fn inc_beta_split(a: f64, b: f64, x: f64, y: f64) -> f64 {
    inc_beta_with(a, b, x, y, ln_beta(a, b))
}

/// ln B(a, b) = lnΓ(a) + lnΓ(b) - lnΓ(a + b), through [`ln_gamma_ratio`].
pub fn ln_beta(a: f64, b: f64) -> f64 {
    let (big, small) = if a >= b { (a, b) } else { (b, a) };
    ln_gamma(small) - ln_gamma_ratio(big, small)
}

/// [`inc_beta_split`] with ln B(a, b) given (a caller evaluating many x for one (a, b)).
fn inc_beta_with(a: f64, b: f64, x: f64, y: f64, ln_beta: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if y <= 0.0 {
        return 1.0;
    }
    let ln_x = if x > 0.5 { (-y).ln_1p() } else { x.ln() };
    let ln_y = if y > 0.5 { (-x).ln_1p() } else { y.ln() };
    let ln_front = a * ln_x + b * ln_y - ln_beta;
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_fraction(a, b, x) / a).clamp(0.0, 1.0)
    } else {
        (1.0 - ln_front.exp() * beta_fraction(b, a, y) / b).clamp(0.0, 1.0)
    }
}

/// The continued fraction of the incomplete beta function (Numerical Recipes' `betacf`).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One term of Lentz's method: the factor it multiplies h by.
    let mut step = |aa: f64| {
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        d * c
    };
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// One Student's t component: location, scale and degrees of freedom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StudentT {
    pub mu: f64,
    pub sigma: f64,
    pub nu: f64,
}

/// The gradient of `-ln p(y)` with respect to a component's location, scale and degrees of
/// freedom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gradient {
    pub mu: f64,
    pub sigma: f64,
    pub nu: f64,
}

/// The standard t with `nu` degrees of freedom, its constants computed once: what a caller
/// evaluating its density and CDF at many points (a mixture's CRPS) uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standard {
    pub nu: f64,
    /// lnΓ((nu+1)/2) - lnΓ(nu/2) - ln(nu π)/2.
    ln_norm: f64,
    /// ln B(nu/2, 1/2).
    ln_beta: f64,
}

impl Standard {
    pub fn new(nu: f64) -> Standard {
        Standard {
            nu,
            ln_norm: log_norm(nu, 1.0),
            ln_beta: ln_beta(0.5 * nu, 0.5),
        }
    }

    pub fn ln_pdf(&self, z: f64) -> f64 {
        self.ln_norm - 0.5 * (self.nu + 1.0) * (z * z / self.nu).ln_1p()
    }

    pub fn cdf(&self, z: f64) -> f64 {
        let (nu, z2) = (self.nu, z * z);
        let tail = 0.5 * inc_beta_with(0.5 * nu, 0.5, nu / (nu + z2), z2 / (nu + z2), self.ln_beta);
        if z >= 0.0 { 1.0 - tail } else { tail }
    }

    /// E|T - z| (nu > 1): z (2 F(z) - 1) + 2 f(z) (nu + z²) / (nu - 1).
    pub fn mean_abs(&self, z: f64) -> f64 {
        z * (2.0 * self.cdf(z) - 1.0)
            + 2.0 * self.ln_pdf(z).exp() * (self.nu + z * z) / (self.nu - 1.0)
    }
}

impl StudentT {
    /// The standard t of this component's degrees of freedom.
    pub fn standard(&self) -> Standard {
        Standard::new(self.nu)
    }

    pub fn ln_pdf(&self, y: f64) -> f64 {
        let z = (y - self.mu) / self.sigma;
        self.standard().ln_pdf(z) - self.sigma.ln()
    }

    pub fn pdf(&self, y: f64) -> f64 {
        self.ln_pdf(y).exp()
    }

    /// The gradient of `-ln p(y)` (see the module's formulas).
    pub fn gradient(&self, y: f64) -> Gradient {
        let (nu, s) = (self.nu, self.sigma);
        let z = (y - self.mu) / s;
        let z2 = z * z;
        let w = (nu + 1.0) / (nu + z2);
        Gradient {
            mu: -w * z / s,
            sigma: (1.0 - w * z2) / s,
            nu: nll_dof_derivative(nu, 1.0, z2),
        }
    }

    pub fn cdf(&self, y: f64) -> f64 {
        self.standard().cdf((y - self.mu) / self.sigma)
    }

    /// The `q`-quantile (0 < q < 1), to 1e-12 relative: bisection on the CDF within a
    /// bracket doubled until it holds the quantile (a t with few degrees of freedom has its
    /// 1e-6 quantile hundreds of scales out).
    pub fn quantile(&self, q: f64) -> f64 {
        let mut width = 8.0 * self.sigma;
        while width < 1e12 * self.sigma
            && (self.cdf(self.mu - width) > q || self.cdf(self.mu + width) < q)
        {
            width *= 2.0;
        }
        crate::stats::invert(&|y| self.cdf(y), q, self.mu - width, self.mu + width)
    }

    /// The mean (nu > 1: mu; otherwise undefined, NaN).
    pub fn mean(&self) -> f64 {
        if self.nu > 1.0 { self.mu } else { f64::NAN }
    }

    /// The variance (nu > 2: sigma² nu / (nu - 2); infinite for 1 < nu <= 2).
    pub fn variance(&self) -> f64 {
        if self.nu > 2.0 {
            self.sigma * self.sigma * self.nu / (self.nu - 2.0)
        } else if self.nu > 1.0 {
            f64::INFINITY
        } else {
            f64::NAN
        }
    }

    /// The CRPS of observation y (nu > 1), in closed form: sigma times, at z,
    /// `z (2 F(z) - 1) + 2 f(z) (nu + z²) / (nu - 1) - 2 sqrt(nu) B(1/2, nu - 1/2) /
    /// ((nu - 1) B(1/2, nu/2)²)` for the standard t's F and f.
    pub fn crps(&self, y: f64) -> f64 {
        self.mean_abs(y) - 0.5 * self.mean_abs_pair()
    }

    /// E|X - y| (nu > 1): sigma (z (2 F(z) - 1) + 2 f(z) (nu + z²) / (nu - 1)) at z for the
    /// standard t's F and f.
    pub fn mean_abs(&self, y: f64) -> f64 {
        self.sigma * self.standard().mean_abs((y - self.mu) / self.sigma)
    }

    /// E|X - X'| for two independent draws (nu > 1): sigma 4 sqrt(nu) B(1/2, nu - 1/2) /
    /// ((nu - 1) B(1/2, nu/2)²).
    pub fn mean_abs_pair(&self) -> f64 {
        let nu = self.nu;
        // ln B(1/2, nu - 1/2) - 2 ln B(1/2, nu/2), through ratios of Γ that do not cancel.
        let ln_betas =
            -ln_gamma(0.5) - ln_gamma_ratio(nu - 0.5, 0.5) + 2.0 * ln_gamma_ratio(0.5 * nu, 0.5);
        self.sigma * 4.0 * nu.sqrt() / (nu - 1.0) * ln_betas.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64, what: &str) {
        assert!(
            (a - b).abs() <= rel * b.abs().max(1e-300),
            "{what}: {a} vs {b} (relative {:e})",
            ((a - b) / b).abs()
        );
    }

    /// SciPy 1.x's `gammaln` and `digamma`.
    #[test]
    fn ln_gamma_and_digamma_match_scipy() {
        let cases = [
            (0.1, 2.252712651734206, -10.423754940411076),
            (0.5, 0.5723649429247, -1.9635100260214235),
            (1.5, -0.12078223763524526, 0.03648997397857652),
            (2.05, 0.021937091667171754, 0.4545359610810819),
            (3.7, 1.428072326665388, 1.1671535393615113),
            (10.0, 12.801827480081469, 2.251752589066721),
            (55.5, 166.32150615984037, 4.0073469585404435),
            (1234.5, 7550.550901077894, 7.1180162318279985),
        ];
        for (x, lg, dg) in cases {
            close(ln_gamma(x), lg, 1e-13, &format!("ln_gamma({x})"));
            // ψ has a root at 1.4616: absolute near it.
            assert!(
                (digamma(x) - dg).abs() <= 1e-13 * (1.0 + dg.abs()),
                "digamma({x}): {} vs {dg}",
                digamma(x)
            );
        }
        assert!(ln_gamma(1.0).abs() < 1e-15 && ln_gamma(2.0).abs() < 1e-15);
        close(digamma(1.0), -0.5772156649015329, 1e-13, "digamma(1)");
    }

    /// mpmath's `loggamma(a+h) - loggamma(a)` and `digamma(a+h) - digamma(a)` at 40 digits,
    /// out to where lnΓ itself is 4.6e9 and the difference of two lnΓ would keep nothing.
    #[test]
    fn gamma_ratios_match_mpmath_without_cancellation() {
        let cases = [
            (1.0, 0.5, -0.12078223763524522, 0.6137056388801094),
            (1.5, 1.0, 0.4054651081081644, 0.6666666666666666),
            (3.7, 2.5, 3.7042264611719062, 0.5745882823280186),
            (20.0, 0.5, 1.491616787331304, 0.02531240246549753),
            (1e6, 0.5, 6.907755153982137, 5.00000125e-07),
            (1e6, 3.0, 41.44653467389032, 2.999997000005e-06),
            (2.5e8, 8.0, 154.69577191861217, 3.199999955200001e-08),
        ];
        for (a, h, lg, dg) in cases {
            close(
                ln_gamma_ratio(a, h),
                lg,
                1e-13,
                &format!("ln_gamma_ratio({a}, {h})"),
            );
            close(
                digamma_diff(a, h),
                dg,
                1e-13,
                &format!("digamma_diff({a}, {h})"),
            );
        }
        // Where both ways are accurate they agree.
        for a in [1.05, 2.5, 7.25, 15.9, 16.1, 40.0] {
            for h in [0.5, 1.0, 2.5, 8.0] {
                let direct = ln_gamma(a + h) - ln_gamma(a);
                close(
                    ln_gamma_ratio(a, h),
                    direct,
                    1e-13,
                    &format!("ratio({a}, {h})"),
                );
                close(
                    digamma_diff(a, h),
                    digamma(a + h) - digamma(a),
                    1e-12,
                    "diff",
                );
            }
        }
    }

    /// The D-dimensional normaliser tends to the Gaussian's, -D/2 ln(2π), as nu grows, and
    /// its nu-derivative (with q = 0) to zero, without losing that to rounding.
    #[test]
    fn the_normaliser_tends_to_the_gaussian() {
        for d in [1.0, 3.0, 16.0] {
            let gauss = -0.5 * d * (2.0 * std::f64::consts::PI).ln();
            let big = log_norm(1e12, d);
            assert!((big - gauss).abs() < 1e-9, "d {d}: {big} vs {gauss}");
            assert!(nll_dof_derivative(1e12, d, 0.0).abs() < 1e-15);
            assert!(nll_dof_derivative(1e12, d, d).abs() < 1e-15);
        }
        assert!((dof(raw_dof(3.5)) - 3.5).abs() < 1e-14);
        assert!(dof(1e9).is_finite());
    }

    /// SciPy's `betainc(a, b, x)`.
    #[test]
    fn incomplete_beta_matches_scipy() {
        let cases = [
            (1.0, 0.5, 0.3, 0.16333997346592444),
            (2.05, 0.5, 0.999, 0.9519221527094021),
            (15.0, 0.5, 0.2, 5.252095298744004e-12),
            (0.5, 0.5, 0.5, 0.5000000000000001),
            (30.0, 2.5, 0.9, 0.26254832087078794),
            (1.2, 0.5, 1e-4, 7.374361175715225e-06),
        ];
        for (a, b, x, want) in cases {
            close(inc_beta(a, b, x), want, 1e-12, &format!("I_{x}({a}, {b})"));
        }
    }

    /// SciPy's `stats.t(nu, loc, scale)`: logpdf, cdf, ppf; the CRPS against SciPy's
    /// quadrature of (F(t) - 1{t >= y})².
    #[test]
    fn student_t_matches_scipy() {
        let cases = [
            // nu, mu, sigma, y, logpdf, cdf, ppf(0.975), ppf(1e-6), crps
            (
                2.5,
                1.0,
                2.0,
                0.3,
                -1.7935021004951759,
                0.3768463438858073,
                8.149309684007363,
                -439.3468583564737,
                0.659646588198779,
            ),
            (
                4.0,
                -1.0,
                0.5,
                3.0,
                -7.370715432592322,
                0.9993380515453915,
                0.3882225525988967,
                -21.788927075225487,
                3.63368242400693,
            ),
            (
                30.0,
                0.0,
                1.0,
                -2.5,
                -3.8605213197760384,
                0.009057824534033344,
                2.0422724563012378,
                -5.871117120418882,
                1.9260522783799232,
            ),
            (
                2.05,
                0.0,
                1.0,
                40.0,
                -11.195271637128618,
                0.999731663227747,
                4.203635183648639,
                -612.3370566709859,
                38.937329312084906,
            ),
        ];
        for (nu, mu, sigma, y, lp, cdf, q975, q_tiny, crps) in cases {
            let t = StudentT { mu, sigma, nu };
            let at = format!("t(nu {nu}, mu {mu}, sigma {sigma}) at {y}");
            close(t.ln_pdf(y), lp, 1e-13, &format!("ln_pdf {at}"));
            close(t.cdf(y), cdf, 1e-12, &format!("cdf {at}"));
            close(t.quantile(0.975), q975, 1e-10, &format!("q0.975 {at}"));
            close(t.quantile(1e-6), q_tiny, 1e-10, &format!("q1e-6 {at}"));
            close(t.crps(y), crps, 1e-9, &format!("crps {at}"));
        }
        let t = StudentT {
            mu: 2.0,
            sigma: 3.0,
            nu: 5.0,
        };
        assert_eq!(t.mean(), 2.0);
        close(t.variance(), 9.0 * 5.0 / 3.0, 1e-15, "variance");
    }

    /// The gradient of -ln p against central differences, for each parameter, from near the
    /// centre to far in the tail and from nu just above 2 to nearly normal.
    #[test]
    fn the_gradient_matches_finite_differences() {
        let mut worst: f64 = 0.0;
        for &nu in &[2.05, 3.0, 7.5, 60.0] {
            for &(mu, sigma) in &[(0.0, 1.0), (-1.5, 0.3), (4.0, 7.0)] {
                for &y in &[-30.0, -1.0, 0.0, 0.7, 5.0, 200.0] {
                    let t = StudentT { mu, sigma, nu };
                    let g = t.gradient(y);
                    let f = |m: f64, s: f64, n: f64| {
                        -StudentT {
                            mu: m,
                            sigma: s,
                            nu: n,
                        }
                        .ln_pdf(y)
                    };
                    let h = 1e-6;
                    let numeric = [
                        (f(mu + h, sigma, nu) - f(mu - h, sigma, nu)) / (2.0 * h),
                        (f(mu, sigma + h * sigma, nu) - f(mu, sigma - h * sigma, nu))
                            / (2.0 * h * sigma),
                        (f(mu, sigma, nu + h * nu) - f(mu, sigma, nu - h * nu)) / (2.0 * h * nu),
                    ];
                    for (got, want) in [g.mu, g.sigma, g.nu].into_iter().zip(numeric) {
                        let err = (got - want).abs() / want.abs().max(1e-4);
                        worst = worst.max(err);
                        assert!(
                            err < 1e-5,
                            "nu {nu} mu {mu} sigma {sigma} y {y}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        eprintln!("worst relative gradient error {worst:e}");
    }

    /// Sampled through rand_distr's StudentT, a component's draws have its quantiles.
    #[test]
    fn draws_follow_the_cdf() {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let t = StudentT {
            mu: 1.0,
            sigma: 2.0,
            nu: 3.5,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let dist = rand_distr::StudentT::new(t.nu).unwrap();
        let n = 200_000;
        let draws: Vec<f64> = (0..n)
            .map(|_| t.mu + t.sigma * dist.sample(&mut rng))
            .collect();
        for q in [0.01, 0.25, 0.5, 0.9, 0.995] {
            let below = draws.iter().filter(|&&v| v <= t.quantile(q)).count() as f64 / n as f64;
            assert!((below - q).abs() < 0.004, "q {q}: {below}");
        }
    }
}
