// The mixture head, fused, one invocation per row: from the head outputs h (rows x P) and the
// targets y (rows x D): softmax of the logits, softplus(raw) + floor for the sigmas, the
// log-likelihood by log-sum-exp, and (flags bit 0) the gradient of the mean NLL with respect
// to every head output, written to delta (rows x P). No K-sized arrays: the per-component
// terms are computed once for the log-sum-exp and again for the responsibilities.

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

// log pi_c + sum_j log N(y_j; mu_cj, sigma_cj), without the log-normaliser of the logits.
fn component_term(base: u32, ybase: u32, c: u32) -> f32 {
    let k = head.k;
    let d = head.d;
    var t = h[base + c];
    for (var j = 0u; j < d; j++) {
        let i = c * d + j;
        let sigma = softplus(h[base + k + k * d + i]) + head.floor;
        let z = (y[ybase + j] - h[base + k + i]) / sigma;
        t -= HALF_LN_2PI + log(sigma) + 0.5 * z * z;
    }
    return t;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, 64u);
    if r >= step.rows {
        return;
    }
    let k = head.k;
    let d = head.d;
    let base = r * head.p;
    let ybase = r * d;
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
    rowll[r] = ll_unnorm - log_norm;
    if (step.flags & 1u) == 0u {
        return;
    }
    let scale = step.inv_rows;
    for (var c = 0u; c < k; c++) {
        let gamma = exp(component_term(base, ybase, c) - ll_unnorm);
        let pi = exp(h[base + c] - log_norm);
        delta[base + c] = scale * (pi - gamma);
        for (var j = 0u; j < d; j++) {
            let i = c * d + j;
            let raw = h[base + k + k * d + i];
            let sigma = softplus(raw) + head.floor;
            let z = (y[ybase + j] - h[base + k + i]) / sigma;
            delta[base + k + i] = scale * (-gamma * z / sigma);
            delta[base + k + k * d + i] = scale * gamma * (1.0 - z * z) / sigma * sigmoid(raw);
        }
    }
}
