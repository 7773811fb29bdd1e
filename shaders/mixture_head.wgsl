// The mixture head's components with diagonal covariance (mixture_head_common.wgsl has the
// row arithmetic and the accessors' contract): softplus(raw) + floor for the sigmas, and no
// K- or D-sized arrays: the per-component terms are computed once for the log-sum-exp and
// again for the responsibilities.

// log pi_c + sum_j log N(y_j; mu_cj, sigma_cj), without the log-normaliser of the logits
// (for Student's t components, log pi_c + the t's log-density).
fn component_term(c: u32) -> f32 {
    if head.student != 0u {
        var q = 0.0;
        var log_det = 0.0;
        for (var j = 0u; j < head.d; j++) {
            let sigma = softplus(hv(raw_scale_at(c, j))) + head.floor;
            let z = (yv(j) - hv(mu_at(c, j))) / sigma;
            q += z * z;
            log_det += log(sigma);
        }
        return hv(c) + student_log_density(dof_at(c), q, log_det);
    }
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
    if head.student != 0u {
        student_gradient(c, gamma, scale);
        return;
    }
    for (var j = 0u; j < head.d; j++) {
        let raw = hv(raw_scale_at(c, j));
        let sigma = softplus(raw) + head.floor;
        let z = (yv(j) - hv(mu_at(c, j))) / sigma;
        set_delta(mu_at(c, j), scale * (-gamma * z / sigma));
        set_delta(raw_scale_at(c, j), scale * gamma * (1.0 - z * z) / sigma * sigmoid(raw));
    }
}

// The gradient for Student's t components: the Gaussian's with the quadratic's share
// (nu + D) / (nu + q), and the degrees of freedom's.
fn student_gradient(c: u32, gamma: f32, scale: f32) {
    var q = 0.0;
    for (var j = 0u; j < head.d; j++) {
        let sigma = softplus(hv(raw_scale_at(c, j))) + head.floor;
        let z = (yv(j) - hv(mu_at(c, j))) / sigma;
        q += z * z;
    }
    let nu = dof_at(c);
    let share = (nu + f32(head.d)) / (nu + q);
    for (var j = 0u; j < head.d; j++) {
        let raw = hv(raw_scale_at(c, j));
        let sigma = softplus(raw) + head.floor;
        let z = (yv(j) - hv(mu_at(c, j))) / sigma;
        set_delta(mu_at(c, j), scale * (-gamma * share * z / sigma));
        set_delta(raw_scale_at(c, j), scale * gamma * (1.0 - share * z * z) / sigma * sigmoid(raw));
    }
    set_delta(raw_dof_at(c), scale * gamma * dof_slope(c, nu) * student_dof_derivative(nu, q));
}
