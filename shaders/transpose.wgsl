// Transposes one layer's weights for the backward pass: wt[o][i] = W[i][o], so that
// dense_backward_input reads them along contiguous rows like dense_forward does.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> wt: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg, 64u);
    if idx >= layer.n_in * layer.n_out {
        return;
    }
    let i = idx / layer.n_out;
    let o = idx % layer.n_out;
    wt[o * layer.n_in + i] = params[layer.w_off + idx];
}
