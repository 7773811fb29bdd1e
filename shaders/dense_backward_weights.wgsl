// Dense backward to the parameters, first pass: over slice s of the batch's rows (gid.z, with
// the member),
// partial[s][i][o] = sum_{r in slice s} X[r][i] dZ[r][o], where row i = n_in stands for the
// bias (X = 1). Each invocation owns a 4x4 tile of (i, o) and sums its rows in order; the
// second pass (weight_grad_sum.wgsl) adds the slices in order. Deterministic, no atomics.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dz: array<f32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o0 = gid.x * 4u;
    let i0 = gid.y * 4u;
    let slices = weight_grad_slices(layer.max_slices);
    // gid.z runs over members x slices
    let member = gid.z / slices;
    let slice = gid.z % slices;
    let first = member * step.row_stride;
    let n_in = layer.n_in;
    let n_out = layer.n_out;
    // tile rows 0..n_in are weights, row n_in is the bias
    if o0 >= n_out || i0 > n_in || slice >= slices || !member_active(member) {
        return;
    }
    let per_slice = (step.rows + slices - 1u) / slices;
    let r_begin = slice * per_slice;
    let r_end = min(step.rows, r_begin + per_slice);
    let last_o = n_out - 1u;
    let oc = vec4<u32>(o0, min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o));
    let last_i = n_in - 1u;
    let ic = vec4<u32>(min(i0, last_i), min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
    // where the tile row is the bias row (i == n_in), X is 1
    let is_bias = vec4<bool>(i0 == n_in, i0 + 1u == n_in, i0 + 2u == n_in, i0 + 3u == n_in);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var r = r_begin; r < r_end; r++) {
        let rm = first + r;
        let g = vec4<f32>(dz[rm * n_out + oc.x], dz[rm * n_out + oc.y], dz[rm * n_out + oc.z], dz[rm * n_out + oc.w]);
        let xr = vec4<f32>(x[rm * n_in + ic.x], x[rm * n_in + ic.y], x[rm * n_in + ic.z], x[rm * n_in + ic.w]);
        let xv = select(xr, vec4<f32>(1.0), is_bias);
        acc0 += xv.x * g;
        acc1 += xv.y * g;
        acc2 += xv.z * g;
        acc3 += xv.w * g;
    }
    var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    let base = member * step.partial_stride + slice * (n_in + 1u) * n_out;
    for (var t = 0u; t < 4u; t++) {
        let i = i0 + t;
        if i > n_in {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let o = o0 + c;
            if o <= last_o {
                partial[base + i * n_out + o] = acc[t][c];
            }
        }
    }
}
