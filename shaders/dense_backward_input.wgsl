// Dense backward to the layer below: dA[r][i] = (sum_o dZ[r][o] W[i][o]) * act'(A[r][i]),
// where A is the layer below's output (the input of this layer). W comes transposed
// (wt[o][i], from transpose.wgsl) so that neighbouring invocations read neighbouring weights.
// 4x4 register tile (4 rows x 4 inputs), edges clamped as in dense_forward.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> dz: array<f32>;
@group(0) @binding(3) var<storage, read> below: array<f32>;
@group(0) @binding(4) var<storage, read_write> da: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if i0 >= layer.n_in || r0 >= step.rows {
        return;
    }
    let n_in = layer.n_in;
    let n_out = layer.n_out;
    let last_i = n_in - 1u;
    let last_r = step.rows - 1u;
    let ic = vec4<u32>(i0, min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
    let rr = vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var o = 0u; o < n_out; o++) {
        let row = o * n_in;
        let w = vec4<f32>(wt[row + ic.x], wt[row + ic.y], wt[row + ic.z], wt[row + ic.w]);
        acc0 += dz[rr.x * n_out + o] * w;
        acc1 += dz[rr.y * n_out + o] * w;
        acc2 += dz[rr.z * n_out + o] * w;
        acc3 += dz[rr.w * n_out + o] * w;
    }
    var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        let row = r0 + r;
        if row > last_r {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let i = i0 + c;
            if i <= last_i {
                let a = below[row * n_in + i];
                da[row * n_in + i] = acc[r][c] * activation_derivative(layer.act_below, a);
            }
        }
    }
}
