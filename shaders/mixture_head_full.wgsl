// The mixture head with full covariance, fused, one invocation per row (the full-covariance
// counterpart of mixture_head.wgsl; see src/mixture.rs for the mathematics). Component c has
// a lower-triangular Cholesky factor L: diagonal softplus(raw) + floor from the sigma block,
// strictly-lower entries from the block after it (index c*T + j(j-1)/2 + i, T = D(D-1)/2).
// With r = y - mu_c, z = L^-1 r (forward substitution) and w = L^-T z (back substitution):
//   l_c        = log pi_c + sum_j (-ln(2 pi)/2 - ln L_jj - z_j^2/2)
//   d/d mu_cj  = -gamma_c w_j
//   d/d raw_cj =  gamma_c (1/L_jj - w_j z_j) sigmoid(raw_cj)
//   d/d L_ji   = -gamma_c w_j z_i
// z and w live in private arrays of MAXD entries (D <= MAXD is checked on the host).

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
// Must match MAX_FULL_COVARIANCE_TARGETS in src/layout.rs.
const MAXD: u32 = 16u;

var<private> z: array<f32, MAXD>;
var<private> w: array<f32, MAXD>;

fn tri_index(j: u32, i: u32) -> u32 {
    return j * (j - 1u) / 2u + i;
}

// Offset of component c's strictly-lower Cholesky entries within a row.
fn tri_base(c: u32) -> u32 {
    let k = head.k;
    let d = head.d;
    return k + 2u * k * d + c * (d * (d - 1u) / 2u);
}

// log pi_c + log N(y; mu_c, L L^T) without the logits' log-normaliser; leaves z = L^-1 r.
fn component_term(base: u32, ybase: u32, c: u32) -> f32 {
    let k = head.k;
    let d = head.d;
    let tb = base + tri_base(c);
    var t = h[base + c];
    for (var j = 0u; j < d; j++) {
        let ljj = softplus(h[base + k + k * d + c * d + j]) + head.floor;
        var s = y[ybase + j] - h[base + k + c * d + j];
        for (var i = 0u; i < j; i++) {
            s -= h[tb + tri_index(j, i)] * z[i];
        }
        z[j] = s / ljj;
        t -= HALF_LN_2PI + log(ljj) + 0.5 * z[j] * z[j];
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
        let tb = base + tri_base(c);
        for (var jj = 0u; jj < d; jj++) {
            let j = d - 1u - jj;
            let raw = h[base + k + k * d + c * d + j];
            let ljj = softplus(raw) + head.floor;
            var s = z[j];
            for (var i = j + 1u; i < d; i++) {
                s -= h[tb + tri_index(i, j)] * w[i];
            }
            w[j] = s / ljj;
            delta[base + k + c * d + j] = scale * (-gamma * w[j]);
            delta[base + k + k * d + c * d + j] = scale * gamma * (1.0 / ljj - w[j] * z[j]) * sigmoid(raw);
        }
        for (var j = 1u; j < d; j++) {
            for (var i = 0u; i < j; i++) {
                delta[tb + tri_index(j, i)] = scale * (-gamma * w[j] * z[i]);
            }
        }
    }
}
