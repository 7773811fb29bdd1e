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
// K*D raw scales | K*T strictly-lower Cholesky entries (T = D(D-1)/2; full covariance only),
// each block component-major.

struct Head {
    k: u32,
    d: u32,
    p: u32,
    floor: f32,
    _p0: u32, _p1: u32, _p2: u32, _p3: u32,
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
