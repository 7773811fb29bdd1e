// What the two mixture-head kernels share (prepended, after common.wgsl, to
// mixture_head.wgsl for diagonal covariance and mixture_head_full.wgsl for full covariance):
// the head's uniform and bindings, where each part of a row's head outputs lives, and the
// kernel's entry point. One invocation per row: the log-normaliser of the logits, the
// log-sum-exp of the component terms (each kernel's `component_term`), the row's
// log-likelihood and, with flags bit 0, the gradient of the mean NLL with respect to every
// head output (the logits here, the rest by each kernel's `component_gradient`).
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

@group(0) @binding(0) var<uniform> head: Head;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rowll: array<f32>;
@group(0) @binding(4) var<storage, read_write> delta: array<f32>;

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, 64u);
    if r >= step.rows || !member_active(gid.z) {
        return;
    }
    let k = head.k;
    let d = head.d;
    let row = gid.z * step.row_stride + r; // this member's row
    let base = row * head.p;
    let ybase = row * d;
    // log-normaliser of the logits
    var lmax = h[base];
    for (var c = 1u; c < k; c++) {
        lmax = max(lmax, h[base + c]);
    }
    var lsum = 0.0;
    for (var c = 0u; c < k; c++) {
        lsum += exp(h[base + c] - lmax);
    }
    let log_norm = lmax + log(lsum);
    // log-sum-exp of the component terms
    var tmax = component_term(base, ybase, 0u);
    for (var c = 1u; c < k; c++) {
        tmax = max(tmax, component_term(base, ybase, c));
    }
    var tsum = 0.0;
    for (var c = 0u; c < k; c++) {
        tsum += exp(component_term(base, ybase, c) - tmax);
    }
    let ll_unnorm = tmax + log(tsum);
    rowll[row] = ll_unnorm - log_norm;
    if (step.flags & 1u) == 0u {
        return;
    }
    let scale = step.inv_rows;
    for (var c = 0u; c < k; c++) {
        // component_term right before component_gradient: the full kernel's gradient uses
        // the whitened residual it leaves behind.
        let gamma = exp(component_term(base, ybase, c) - ll_unnorm);
        let pi = exp(h[base + c] - log_norm);
        delta[base + c] = scale * (pi - gamma);
        component_gradient(base, ybase, c, gamma, scale);
    }
}
