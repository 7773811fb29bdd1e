// Dense forward, bias and activation fused: out = act(input W + b).
// input: rows x n_in, W: n_in x n_out at params[w_off], b at params[b_off], out: rows x n_out.
// Each invocation computes a 4x4 register tile (4 rows x 4 outputs); loads past the edge are
// clamped to the last row or column and their results are not written.

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> input: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o0 = gid.x * 4u;
    let r0 = gid.y * 4u;
    if o0 >= layer.n_out || r0 >= step.rows || !member_active(gid.z) {
        return;
    }
    let n_in = layer.n_in;
    let n_out = layer.n_out;
    let last_o = n_out - 1u;
    let last_r = step.rows - 1u;
    let oc = vec4<u32>(o0, min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o));
    // this member's rows and parameters
    let first = gid.z * step.row_stride;
    let pb = gid.z * layer.p_stride;
    let rr = first + vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r));
    let b = vec4<f32>(params[pb + layer.b_off + oc.x], params[pb + layer.b_off + oc.y], params[pb + layer.b_off + oc.z], params[pb + layer.b_off + oc.w]);
    var acc0 = b;
    var acc1 = b;
    var acc2 = b;
    var acc3 = b;
    for (var i = 0u; i < n_in; i++) {
        let wrow = pb + layer.w_off + i * n_out;
        let w = vec4<f32>(params[wrow + oc.x], params[wrow + oc.y], params[wrow + oc.z], params[wrow + oc.w]);
        acc0 += input[rr.x * n_in + i] * w;
        acc1 += input[rr.y * n_in + i] * w;
        acc2 += input[rr.z * n_in + i] * w;
        acc3 += input[rr.w * n_in + i] * w;
    }
    var acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        let row = r0 + r;
        if row > last_r {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let o = o0 + c;
            if o <= last_o {
                output[(first + row) * n_out + o] = activate(layer.act, acc[r][c]);
            }
        }
    }
}
