// Backward through the activation of the layer below: da[r][i] *= act'(a[r][i]), where a is
// that layer's output (this layer's input), for the step's rows.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> below: array<f32>;
@group(0) @binding(2) var<storage, read_write> da: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = linear_index(gid, nwg, 64u);
    if idx >= step.rows * layer.n_in || !member_active(gid.z) {
        return;
    }
    let j = gid.z * step.row_stride * layer.n_in + idx; // this member's rows
    da[j] *= activation_derivative(layer.act_below, below[j]);
}
