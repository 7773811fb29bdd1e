// The fused step's second kernel: one invocation per parameter e of each member (member =
// workgroup_id.z) sums the step.slices tiles' partial gradients that fused_step.wgsl left in
// `partial`, in tile order, adds the L2 term for weights (2 l2 W; biases have none) and
// writes the gradient. Invocation e = n_params sums the tiles' log-likelihoods into
// stats[slot] instead. Then either
// - flags bit 1: the Adam step itself (no clipping), as adam.wgsl computes it; or
// - clip_norm > 0: each workgroup's sum of squared gradients, by a tree reduction in
//   workgroup memory, to partial[norm_first + member * norm_stride + workgroup], which
//   adam.wgsl (dispatched next) adds in order into the gradient's norm.
// Deterministic: fixed-order sums, no atomics.

@group(0) @binding(0) var<storage, read> desc: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;
@group(0) @binding(6) var<storage, read> lrs: array<f32>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;

var<workgroup> squares: array<f32, 256>;

// Whether parameter e (of one member's flat layout) is a bias, from the layer descriptors
// of fused_step.wgsl's `desc` (words 16 + 8 l: n_in, n_out, w_off, b_off, ...).
fn is_bias(e: u32) -> bool {
    let layers = desc[0];
    for (var l = 0u; l < layers; l++) {
        let n_out = desc[16u + 8u * l + 1u];
        let b_off = desc[16u + 8u * l + 3u];
        if e >= b_off && e < b_off + n_out {
            return true;
        }
    }
    return false;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let member = wid.z;
    if !member_active(member) {
        return;
    }
    let group = wid.x + wid.y * nwg.x;
    let e = group * 256u + lid;
    let n = step.count; // parameters per member
    let first = member * step.partial_stride;
    var square = 0.0;
    if e <= n {
        var g = 0.0;
        for (var t = 0u; t < step.slices; t++) {
            g += partial[first + t * (n + 1u) + e];
        }
        if e == n {
            stats[member * step.stats_stride + step.slot] = g;
        } else {
            let i = member * n + e;
            if !is_bias(e) {
                g += 2.0 * step.l2 * params[i];
            }
            grad[i] = g;
            square = g * g;
            if (step.flags & 2u) != 0u {
                let mi = step.beta1 * m[i] + (1.0 - step.beta1) * g;
                let vi = step.beta2 * v[i] + (1.0 - step.beta2) * g * g;
                m[i] = mi;
                v[i] = vi;
                params[i] -= lrs[member] * (mi * step.bias1) / (sqrt(vi * step.bias2) + step.eps);
            }
        }
    }
    if step.clip_norm > 0.0 {
        squares[lid] = square;
        workgroupBarrier();
        for (var width = 128u; width > 0u; width >>= 1u) {
            if lid < width {
                squares[lid] += squares[lid + width];
            }
            workgroupBarrier();
        }
        if lid == 0u && group < step.norm_parts {
            partial[step.norm_first + member * step.norm_stride + group] = squares[0];
        }
    }
}
