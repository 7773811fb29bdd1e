// Dense backward to the parameters, second pass: adds the row slices of
// dense_backward_weights in order and the L2 term: dW[i][o] = sum_s partial[s][i][o] +
// 2 l2 W[i][o]; db[o] = sum_s partial[s][n_in][o].

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg, 64u);
    let n_in = layer.n_in;
    let n_out = layer.n_out;
    let per_slice = (n_in + 1u) * n_out;
    if idx >= per_slice || !member_active(gid.z) {
        return;
    }
    let slices = weight_grad_slices(layer.max_slices);
    let pb = gid.z * layer.p_stride; // this member's parameters
    let first = gid.z * step.partial_stride;
    var s = 0.0;
    for (var k = 0u; k < slices; k++) {
        s += partial[first + k * per_slice + idx];
    }
    let i = idx / n_out;
    if i == n_in {
        grad[pb + layer.b_off + idx % n_out] = s;
    } else {
        let w = pb + layer.w_off + idx;
        grad[w] = s + 2.0 * step.l2 * params[w];
    }
}
