// Prepares one layer's weights for the backward pass to its inputs: wt[o][i] = W[i][o], then
// n_in zeros. dense_forward then computes dA = dZ W^T reading wt as an (n_out x n_in) weight
// matrix with a zero bias, with the same access pattern as the forward pass.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> wt: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg, 64u);
    let count = layer.n_in * layer.n_out;
    if idx >= count + layer.n_in || !member_active(gid.z) {
        return;
    }
    let wb = gid.z * step.wt_stride; // this member's transposed weights
    if idx >= count {
        wt[wb + idx] = 0.0;
        return;
    }
    let i = idx / layer.n_out;
    let o = idx % layer.n_out;
    wt[wb + o * layer.n_in + i] = params[gid.z * layer.p_stride + layer.w_off + idx];
}
