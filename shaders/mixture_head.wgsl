// The mixture head's components with diagonal covariance (mixture_head_common.wgsl has the
// row arithmetic and the accessors' contract): softplus(raw) + floor for the sigmas, and no
// K- or D-sized arrays: the per-component terms are computed once for the log-sum-exp and
// again for the responsibilities.

// log pi_c + sum_j log N(y_j; mu_cj, sigma_cj), without the log-normaliser of the logits.
fn component_term(c: u32) -> f32 {
    var t = hv(c);
    for (var j = 0u; j < head.d; j++) {
        let sigma = softplus(hv(raw_scale_at(c, j))) + head.floor;
        let z = (yv(j) - hv(mu_at(c, j))) / sigma;
        t -= HALF_LN_2PI + log(sigma) + 0.5 * z * z;
    }
    return t;
}

// The gradient with respect to component c's means and raw scales, given its
// responsibility gamma.
fn component_gradient(c: u32, gamma: f32, scale: f32) {
    for (var j = 0u; j < head.d; j++) {
        let raw = hv(raw_scale_at(c, j));
        let sigma = softplus(raw) + head.floor;
        let z = (yv(j) - hv(mu_at(c, j))) / sigma;
        set_delta(mu_at(c, j), scale * (-gamma * z / sigma));
        set_delta(raw_scale_at(c, j), scale * gamma * (1.0 - z * z) / sigma * sigmoid(raw));
    }
}
