// Dense backward to the parameters: dW[i][o] = sum_r X[r][i] dZ[r][o] + 2 l2 W[i][o] and
// db[o] = sum_r dZ[r][o] (row i = n_in of the tile grid stands for the bias, with X = 1).
// Each invocation owns a 4x4 tile of (i, o) and sums over the rows in order: deterministic,
// no atomics.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o0 = gid.x * 4u;
    let i0 = gid.y * 4u;
    let n_in = layer.n_in;
    let n_out = layer.n_out;
    // rows 0..n_in are weights, row n_in is the bias
    if o0 >= n_out || i0 > n_in {
        return;
    }
    let last_o = n_out - 1u;
    let oc = vec4<u32>(o0, min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let last_i = n_in - 1u;
    let ic = vec4<u32>(min(i0, last_i), min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
    // 1.0 where the tile row is the bias row (i == n_in), else 0.0
    let is_bias = vec4<f32>(
        select(0.0, 1.0, i0 == n_in), select(0.0, 1.0, i0 + 1u == n_in),
        select(0.0, 1.0, i0 + 2u == n_in), select(0.0, 1.0, i0 + 3u == n_in));
    for (var r = 0u; r < step.rows; r++) {
        let g = vec4<f32>(dz[r * n_out + oc.x], dz[r * n_out + oc.y], dz[r * n_out + oc.z], dz[r * n_out + oc.w]);
        let xr = vec4<f32>(x[r * n_in + ic.x], x[r * n_in + ic.y], x[r * n_in + ic.z], x[r * n_in + ic.w]);
        let xv = select(xr, vec4<f32>(1.0), is_bias > vec4<f32>(0.5));
        acc0 += xv.x * g;
        acc1 += xv.y * g;
        acc2 += xv.z * g;
        acc3 += xv.w * g;
    }
    var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var t = 0u; t < 4u; t++) {
        let i = i0 + t;
        if i > n_in {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let o = o0 + c;
            if o > last_o {
                continue;
            }
            if i == n_in {
                grad[layer.b_off + o] = acc[t][c];
            } else {
                let w_index = layer.w_off + i * n_out + o;
                grad[w_index] = acc[t][c] + 2.0 * step.l2 * params[w_index];
            }
        }
    }
}
