// The mixture head's components with full covariance (mixture_head_common.wgsl has the row
// arithmetic and the accessors' contract; see src/mixture.rs for the mathematics). Component
// c has a lower-triangular Cholesky factor L: diagonal softplus(raw) + floor from the raw
// scales, strictly-lower entries from the block after them. With r = y - mu_c, z = L^-1 r
// (forward substitution) and w = L^-T z (back substitution):
//   l_c        = log pi_c + sum_j (-ln(2 pi)/2 - ln L_jj - z_j^2/2)
//   d/d mu_cj  = -gamma_c w_j
//   d/d raw_cj =  gamma_c (1/L_jj - w_j z_j) sigmoid(raw_cj)
//   d/d L_ji   = -gamma_c w_j z_i
// z and w live in private arrays of MAXD entries (D <= MAXD is checked on the host).

// Must match MAX_FULL_COVARIANCE_TARGETS in src/layout.rs.
const MAXD: u32 = 16u;

var<private> z: array<f32, MAXD>;
var<private> w: array<f32, MAXD>;

// With Student's t components (head.student = 1) the term is the t's log-density over the
// same whitened residual, and the gradient the Gaussian's with w scaled by the quadratic's
// share (nu + D) / (nu + q), plus the degrees of freedom's.

// log pi_c + log N(y; mu_c, L L^T) without the logits' log-normaliser; leaves z = L^-1 r.
fn component_term(c: u32) -> f32 {
    let tb = lower_start(c);
    var t = hv(c);
    var q = 0.0;
    var log_det = 0.0;
    for (var j = 0u; j < head.d; j++) {
        let ljj = softplus(hv(raw_scale_at(c, j))) + head.floor;
        var s = yv(j) - hv(mu_at(c, j));
        for (var i = 0u; i < j; i++) {
            s -= hv(tb + tri_index(j, i)) * z[i];
        }
        z[j] = s / ljj;
        t -= HALF_LN_2PI + log(ljj) + 0.5 * z[j] * z[j];
        q += z[j] * z[j];
        log_det += log(ljj);
    }
    if head.student != 0u {
        return hv(c) + student_log_density(dof_at(c), q, log_det);
    }
    return t;
}

// The gradient with respect to component c's means, raw scales and Cholesky entries, given
// its responsibility gamma and the z that component_term(c) left.
fn component_gradient(c: u32, gamma: f32, scale: f32) {
    let d = head.d;
    let tb = lower_start(c);
    // The quadratic's share: 1 for Gaussian components.
    var share = 1.0;
    if head.student != 0u {
        var q = 0.0;
        for (var j = 0u; j < d; j++) {
            q += z[j] * z[j];
        }
        let nu = dof_at(c);
        share = (nu + f32(d)) / (nu + q);
        set_delta(raw_dof_at(c), scale * gamma * dof_slope(c, nu) * student_dof_derivative(nu, q));
    }
    for (var jj = 0u; jj < d; jj++) {
        let j = d - 1u - jj;
        let raw = hv(raw_scale_at(c, j));
        let ljj = softplus(raw) + head.floor;
        var s = z[j];
        for (var i = j + 1u; i < d; i++) {
            s -= hv(tb + tri_index(i, j)) * w[i];
        }
        w[j] = s / ljj;
        set_delta(mu_at(c, j), scale * (-gamma * share * w[j]));
        set_delta(raw_scale_at(c, j), scale * gamma * (1.0 / ljj - share * w[j] * z[j]) * sigmoid(raw));
    }
    for (var j = 1u; j < d; j++) {
        for (var i = 0u; i < j; i++) {
            set_delta(tb + tri_index(j, i), scale * (-gamma * share * w[j] * z[i]));
        }
    }
}
