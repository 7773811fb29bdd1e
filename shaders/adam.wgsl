// One Adam step over the flat parameter buffer:
// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr (m * bias1) / (sqrt(v * bias2) + eps)
// With step.clip_norm > 0 the gradient is first scaled down to that norm, from the sum of
// squares: grad_norm.wgsl's one sum per member, or fused_grad.wgsl's one per workgroup,
// added in order (see `norm_parts` in common.wgsl). The learning rate is the member's, from lrs.

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> sumsq: array<f32>;
// Each member's learning rate (halved for a member after a numerical fault).
@group(0) @binding(5) var<storage, read> lrs: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let member = gid.z;
    let e = linear_index(gid, nwg, 64u);
    if e >= step.count || !member_active(member) {
        return;
    }
    let i = member * step.count + e;
    var g = grad[i];
    if step.clip_norm > 0.0 {
        var squares = 0.0;
        for (var j = 0u; j < step.norm_parts; j++) {
            squares += sumsq[step.norm_first + member * step.norm_stride + j];
        }
        let norm = sqrt(squares);
        if norm > step.clip_norm {
            g *= step.clip_norm / norm;
        }
    }
    let mi = step.beta1 * m[i] + (1.0 - step.beta1) * g;
    let vi = step.beta2 * v[i] + (1.0 - step.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] -= lrs[member] * (mi * step.bias1) / (sqrt(vi * step.bias2) + step.eps);
}
