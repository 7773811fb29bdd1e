// The mixture head's row arithmetic, shared by the standalone head kernel
// (mixture_head_kernel.wgsl) and the fused training step (fused_step.wgsl); prepended, after
// common.wgsl, together with one of mixture_head.wgsl (diagonal covariance) or
// mixture_head_full.wgsl (full covariance), which define `component_term` and
// `component_gradient`.
//
// `head_row` computes one row: the log-normaliser of the logits, the log-sum-exp of the
// component terms, the row's log-likelihood and, when asked, the gradient of scale * NLL with
// respect to every head output (the logits here, the rest by `component_gradient`). The
// including kernel says where the row lives through three accessors, indexed relative to the
// row: `hv(i)` (head output i), `yv(j)` (target j) and `set_delta(i, v)` (the gradient at head
// output i), and declares `head: Head` (a uniform, or a private copy).
//
// A row's head outputs, as HeadLayout in src/layout.rs describes them: K logits | K*D means |
// K*D raw scales | K*T strictly-lower Cholesky entries (T = D(D-1)/2; full covariance only) |
// K raw degrees of freedom (Student's t components only, `head.student` = 1), each block
// component-major.
//
// Student's t components (src/mixture.rs has the mathematics): nu = 2 + exp(clamp(raw, -10, 20)),
// and the t's normaliser lnΓ((nu+D)/2) - lnΓ(nu/2) - D/2 ln(nu π) and the derivative's
// ψ((nu+D)/2) - ψ(nu/2) as differences taken without cancellation (WGSL has no lgamma): the
// recurrence up to 8, then Stirling's and the asymptotic series, as src/student.rs does in
// f64 (there up to 16).

struct Head {
    k: u32,
    d: u32,
    p: u32,
    floor: f32,
    // 1: Student's t components (K raw degrees of freedom end each row's head outputs).
    student: u32,
    _p1: u32, _p2: u32, _p3: u32,
}

const HALF_LN_2PI: f32 = 0.9189385332046727;

// Mean of component c, dimension j (HeadLayout::mu).
fn mu_at(c: u32, j: u32) -> u32 {
    return head.k + c * head.d + j;
}

// Raw scale of component c, dimension j (HeadLayout::raw_scale).
fn raw_scale_at(c: u32, j: u32) -> u32 {
    return head.k + head.k * head.d + c * head.d + j;
}

// Index of L[j][i] (i < j) among a component's strictly-lower Cholesky entries.
fn tri_index(j: u32, i: u32) -> u32 {
    return j * (j - 1u) / 2u + i;
}

// First strictly-lower Cholesky entry of component c (HeadLayout::lower_start).
fn lower_start(c: u32) -> u32 {
    let k = head.k;
    let d = head.d;
    return k + 2u * k * d + c * (d * (d - 1u) / 2u);
}

// Raw degrees of freedom of component c: the last K head outputs (HeadLayout::raw_dof).
fn raw_dof_at(c: u32) -> u32 {
    return head.p - head.k + c;
}

// Must match RAW_DOF_MIN and RAW_DOF_MAX in src/layout.rs.
const RAW_DOF_MIN: f32 = -10.0;
const RAW_DOF_MAX: f32 = 20.0;
const LN_PI: f32 = 1.1447298858494002;

// Component c's degrees of freedom.
fn dof_at(c: u32) -> f32 {
    return 2.0 + exp(clamp(hv(raw_dof_at(c)), RAW_DOF_MIN, RAW_DOF_MAX));
}

// d nu / d raw at component c (0 where the clamp holds raw).
fn dof_slope(c: u32, nu: f32) -> f32 {
    let raw = hv(raw_dof_at(c));
    return select(0.0, nu - 2.0, raw >= RAW_DOF_MIN && raw < RAW_DOF_MAX);
}

// ln(1 + x), to f32 precision relative to the result also for tiny x: WGSL's log is only
// absolutely accurate (2^-21) near 1, and the t's ln(1 + q/nu) is multiplied by nu/2. For
// |x| < 1/4 the series 2 atanh(s) = 2 (s + s^3/3 + ... + s^11/11), s = x / (2 + x) <= 1/7.
fn ln1p(x: f32) -> f32 {
    if abs(x) < 0.25 {
        let s = x / (2.0 + x);
        let s2 = s * s;
        return 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 / 11.0)))));
    }
    return log(1.0 + x);
}

// lnΓ(x) - ((x - 1/2) ln x - x + ln(2π)/2) for x >= 8.
fn stirling_correction(x: f32) -> f32 {
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    return inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0));
}

// lnΓ(a + h) - lnΓ(a) for a >= 1, h >= 0.
fn ln_gamma_ratio(a0: f32, h: f32) -> f32 {
    var a = a0;
    var acc = 0.0;
    for (var i = 0u; i < 8u && a < 8.0; i++) {
        acc -= ln1p(h / a);
        a += 1.0;
    }
    let b = a + h;
    return acc + (a - 0.5) * ln1p(h / a) + h * log(b) - h + (stirling_correction(b) - stirling_correction(a));
}

// ψ(x) = ln x - 1/(2x) - this, for x >= 8.
fn digamma_series(x: f32) -> f32 {
    let inv2 = 1.0 / (x * x);
    return inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 / 252.0));
}

// ψ(a + h) - ψ(a) for a >= 1, h >= 0.
fn digamma_diff(a0: f32, h: f32) -> f32 {
    var a = a0;
    var acc = 0.0;
    for (var i = 0u; i < 8u && a < 8.0; i++) {
        acc += h / (a * (a + h));
        a += 1.0;
    }
    let b = a + h;
    return acc + ln1p(h / a) + 0.5 * h / (a * b) - (digamma_series(b) - digamma_series(a));
}

// The log-density of a D-dimensional t with nu degrees of freedom, scale log-determinant
// log_det and squared whitened residual q.
fn student_log_density(nu: f32, q: f32, log_det: f32) -> f32 {
    let d = f32(head.d);
    return ln_gamma_ratio(0.5 * nu, 0.5 * d) - 0.5 * d * (log(nu) + LN_PI) - log_det
        - 0.5 * (nu + d) * ln1p(q / nu);
}

// d/d nu of -ln p for a D-dimensional t with squared whitened residual q.
fn student_dof_derivative(nu: f32, q: f32) -> f32 {
    let d = f32(head.d);
    return -0.5 * digamma_diff(0.5 * nu, 0.5 * d) + 0.5 * d / nu + 0.5 * ln1p(q / nu)
        - 0.5 * (nu + d) * q / (nu * (nu + q));
}

// One row's log-likelihood; with `grad`, also the gradient of scale * NLL at every head
// output, through set_delta.
fn head_row(grad: bool, scale: f32) -> f32 {
    let k = head.k;
    // log-normaliser of the logits
    var lmax = hv(0u);
    for (var c = 1u; c < k; c++) {
        lmax = max(lmax, hv(c));
    }
    var lsum = 0.0;
    for (var c = 0u; c < k; c++) {
        lsum += exp(hv(c) - lmax);
    }
    let log_norm = lmax + log(lsum);
    // log-sum-exp of the component terms
    var tmax = component_term(0u);
    for (var c = 1u; c < k; c++) {
        tmax = max(tmax, component_term(c));
    }
    var tsum = 0.0;
    for (var c = 0u; c < k; c++) {
        tsum += exp(component_term(c) - tmax);
    }
    let ll_unnorm = tmax + log(tsum);
    if grad {
        for (var c = 0u; c < k; c++) {
            // component_term right before component_gradient: the full kernel's gradient
            // uses the whitened residual it leaves behind.
            let gamma = exp(component_term(c) - ll_unnorm);
            let pi = exp(hv(c) - log_norm);
            set_delta(c, scale * (pi - gamma));
            component_gradient(c, gamma, scale);
        }
    }
    return ll_unnorm - log_norm;
}
