// The fused step's tile arithmetic, shared by fused_step.wgsl (a tile a workgroup) and
// fused_loop.wgsl (a network a workgroup, its tiles and steps in a loop); prepended to both
// by src/backend/gpu/kernels.rs after the mixture head. Each of them declares the bindings
// these functions read: desc, params, order, src_x, src_y, partial and stats.
//
// Every sum has a fixed order (rows of the tile in order; each output's inputs in order), no
// atomics: the same inputs give the same bits.
//
// Workgroup memory, `tile` (TILE_FLOATS floats, prepended by the host from the adapter's
// limit; FusedPlan in src/backend/gpu/fused.rs fits R rows of the model in it), in blocks of
// R rows:
//   inputs [R][d_in] | each layer's outputs [R][n_out] | head gradient [R][P] |
//   targets [R][D] | row log-likelihoods [R]
// On the way back each hidden layer's output block is overwritten, in place, by the gradient
// at that layer's pre-activation (each element by the invocation that reads it), so the
// backward pass needs no memory of its own.
//
// `desc` (written once per run by the host) holds the shape: words 0..16 the header (the
// D_* constants below), then LAYER_WORDS words per dense layer: n_in, n_out, w_off, b_off,
// activation of its output, activation of its input, and the offsets of its input and output
// blocks in `tile`.

// WG, the invocations of a workgroup, is prepended by the host with TILE_FLOATS (64 on a
// CPU adapter such as lavapipe, whose SIMD lanes idle in larger ones; 256 on a GPU).

// Register block of the forward pass: FR rows x FC outputs per invocation.
const FR: u32 = 4u;
const FC: u32 = 4u;

const D_LAYERS: u32 = 0u;
const D_INPUTS: u32 = 1u;
const D_TARGETS: u32 = 2u;
const D_K: u32 = 3u;
const D_HEAD_WIDTH: u32 = 4u;
const D_FLOOR: u32 = 5u;
const D_TILE_ROWS: u32 = 6u;
const D_TARGET_BLOCK: u32 = 7u;
const D_HEAD_GRAD_BLOCK: u32 = 8u;
const D_LL_BLOCK: u32 = 9u;
const D_PARAMS: u32 = 10u;
const D_STUDENT: u32 = 11u;
const D_LAYER0: u32 = 16u;
const LAYER_WORDS: u32 = 8u;

var<workgroup> tile: array<f32, TILE_FLOATS>;

// The head's shape, from desc, for mixture_head_common.wgsl.
var<private> head: Head;
// Where this invocation's row lives in `tile` during the head: outputs, gradient, targets.
var<private> h_row: u32;
var<private> d_row: u32;
var<private> y_row: u32;

fn hv(i: u32) -> f32 {
    return tile[h_row + i];
}

fn yv(j: u32) -> f32 {
    return tile[y_row + j];
}

fn set_delta(i: u32, v: f32) {
    tile[d_row + i] = v;
}

// Word w of layer l's descriptor.
fn lw(l: u32, w: u32) -> u32 {
    return desc[D_LAYER0 + LAYER_WORDS * l + w];
}

// The tile's rows r < n (from row `first` of a batch starting at `start` in the row order):
// inputs and targets through the member's row order.
fn gather(member: u32, start: u32, first: u32, n: u32, lid: u32) {
    let d_in = desc[D_INPUTS];
    let d_out = desc[D_TARGETS];
    let o = member * step.order_stride + start + first;
    for (var e = lid; e < n * d_in; e += WG) {
        let r = e / d_in;
        tile[e] = src_x[order[o + r] * d_in + e % d_in];
    }
    let yb = desc[D_TARGET_BLOCK];
    for (var e = lid; e < n * d_out; e += WG) {
        let r = e / d_out;
        tile[yb + e] = src_y[order[o + r] * d_out + e % d_out];
    }
}

// out = act(in W + b) for the tile's n rows, in register blocks of FR rows x FC outputs
// (loads past the edge are clamped and their results not written), bias first and then the
// inputs in order, as dense_forward.wgsl sums them.
fn forward_layer(l: u32, n: u32, pb: u32, lid: u32) {
    let n_in = lw(l, 0u);
    let n_out = lw(l, 1u);
    let w_off = pb + lw(l, 2u);
    let b_off = pb + lw(l, 3u);
    let act = lw(l, 4u);
    let src = lw(l, 6u);
    let dst = lw(l, 7u);
    let cols = (n_out + FC - 1u) / FC;
    let blocks = cols * ((n + FR - 1u) / FR);
    let last_o = n_out - 1u;
    let last_r = n - 1u;
    for (var b = lid; b < blocks; b += WG) {
        let o0 = (b % cols) * FC;
        let r0 = (b / cols) * FR;
        var oc: array<u32, FC>;
        var rr: array<u32, FR>;
        var acc: array<f32, FR * FC>;
        for (var c = 0u; c < FC; c++) {
            oc[c] = min(o0 + c, last_o);
        }
        for (var r = 0u; r < FR; r++) {
            rr[r] = src + n_in * min(r0 + r, last_r);
        }
        for (var c = 0u; c < FC; c++) {
            let bias = params[b_off + oc[c]];
            for (var r = 0u; r < FR; r++) {
                acc[r * FC + c] = bias;
            }
        }
        for (var i = 0u; i < n_in; i++) {
            let wr = w_off + i * n_out;
            var w: array<f32, FC>;
            for (var c = 0u; c < FC; c++) {
                w[c] = params[wr + oc[c]];
            }
            for (var r = 0u; r < FR; r++) {
                let x = tile[rr[r] + i];
                for (var c = 0u; c < FC; c++) {
                    acc[r * FC + c] += x * w[c];
                }
            }
        }
        for (var r = 0u; r < FR; r++) {
            let row = r0 + r;
            if row > last_r {
                break;
            }
            for (var c = 0u; c < FC; c++) {
                let o = o0 + c;
                if o <= last_o {
                    tile[dst + row * n_out + o] = activate(act, acc[r * FC + c]);
                }
            }
        }
    }
}

// The tile's partial gradient of layer l's weights and bias: sum over the tile's rows, in
// order, of in[r][i] dz[r][o] (in = 1 for the bias), in 4x4 tiles of (i, o), written to the
// tile's region of `partial` at the parameters' flat offsets.
fn weight_gradient(l: u32, dz: u32, n: u32, base: u32, lid: u32) {
    let n_in = lw(l, 0u);
    let n_out = lw(l, 1u);
    let w_off = lw(l, 2u);
    let b_off = lw(l, 3u);
    let src = lw(l, 6u);
    let cols = (n_out + 3u) / 4u;
    let blocks = cols * ((n_in + 4u) / 4u); // n_in weight rows and the bias row
    let last_o = n_out - 1u;
    let last_i = n_in - 1u;
    for (var b = lid; b < blocks; b += WG) {
        let o0 = (b % cols) * 4u;
        let i0 = (b / cols) * 4u;
        let oc = vec4<u32>(o0, min(o0 + 1u, last_o), min(o0 + 2u, last_o), min(o0 + 3u, last_o));
        let ic = vec4<u32>(min(i0, last_i), min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
        let is_bias = vec4<bool>(i0 == n_in, i0 + 1u == n_in, i0 + 2u == n_in, i0 + 3u == n_in);
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        for (var r = 0u; r < n; r++) {
            let gr = dz + r * n_out;
            let g = vec4<f32>(tile[gr + oc.x], tile[gr + oc.y], tile[gr + oc.z], tile[gr + oc.w]);
            let xr0 = src + r * n_in;
            let xr = vec4<f32>(tile[xr0 + ic.x], tile[xr0 + ic.y], tile[xr0 + ic.z], tile[xr0 + ic.w]);
            let xv = select(xr, vec4<f32>(1.0), is_bias);
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
                if o <= last_o {
                    let at = select(w_off + i * n_out + o, b_off + o, i == n_in);
                    partial[base + at] = acc[t][c];
                }
            }
        }
    }
}

// The gradient at the pre-activation of the layer below: dz_below[r][i] = (sum over o, in
// order, of dz[r][o] W[i][o]) * act'(a[r][i]), written over a (layer l's input block) by the
// invocation that reads a[r][i]. 4 rows x 4 inputs per invocation.
fn input_gradient(l: u32, dz: u32, n: u32, pb: u32, lid: u32) {
    let n_in = lw(l, 0u);
    let n_out = lw(l, 1u);
    let w_off = pb + lw(l, 2u);
    let act_below = lw(l, 5u);
    let src = lw(l, 6u);
    let cols = (n_in + 3u) / 4u;
    let blocks = cols * ((n + 3u) / 4u);
    let last_i = n_in - 1u;
    let last_r = n - 1u;
    for (var b = lid; b < blocks; b += WG) {
        let i0 = (b % cols) * 4u;
        let r0 = (b / cols) * 4u;
        let wi = w_off + n_out * vec4<u32>(i0, min(i0 + 1u, last_i), min(i0 + 2u, last_i), min(i0 + 3u, last_i));
        let rr = dz + n_out * vec4<u32>(r0, min(r0 + 1u, last_r), min(r0 + 2u, last_r), min(r0 + 3u, last_r));
        var acc0 = vec4<f32>(0.0);
        var acc1 = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        var acc3 = vec4<f32>(0.0);
        for (var o = 0u; o < n_out; o++) {
            let w = vec4<f32>(params[wi.x + o], params[wi.y + o], params[wi.z + o], params[wi.w + o]);
            acc0 += tile[rr.x + o] * w;
            acc1 += tile[rr.y + o] * w;
            acc2 += tile[rr.z + o] * w;
            acc3 += tile[rr.w + o] * w;
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
                    let at = src + row * n_in + i;
                    tile[at] = acc[r][c] * activation_derivative(act_below, tile[at]);
                }
            }
        }
    }
}

// One tile: rows first..first+n of the batch (or validation chunk) starting at `start` in
// the member's row order, through gather, forward and head, and with `grad` the backward
// pass, writing the tile's partial gradient at partial[base..base + n_params] and its
// log-likelihood sum at partial[base + n_params]; without `grad` the sum goes to
// stats[val_at]. Called by every invocation of the workgroup (it has barriers); leaves the
// tile's workgroup memory to the caller after a final barrier.
fn tile_pass(member: u32, start: u32, first: u32, n: u32, grad: bool, inv_rows: f32, base: u32, val_at: u32, lid: u32) {
    let n_params = desc[D_PARAMS];
    let pb = member * n_params; // this member's parameters
    head = Head(desc[D_K], desc[D_TARGETS], desc[D_HEAD_WIDTH], bitcast<f32>(desc[D_FLOOR]), desc[D_STUDENT], 0u, 0u, 0u);
    gather(member, start, first, n, lid);
    workgroupBarrier();
    let layers = desc[D_LAYERS];
    for (var l = 0u; l < layers; l++) {
        forward_layer(l, n, pb, lid);
        workgroupBarrier();
    }
    let ll_block = desc[D_LL_BLOCK];
    let head_grad = desc[D_HEAD_GRAD_BLOCK];
    for (var r = lid; r < n; r += WG) {
        h_row = lw(layers - 1u, 7u) + r * head.p;
        d_row = head_grad + r * head.p;
        y_row = desc[D_TARGET_BLOCK] + r * head.d;
        tile[ll_block + r] = head_row(grad, inv_rows);
    }
    workgroupBarrier();
    if lid == 0u {
        var s = 0.0;
        for (var r = 0u; r < n; r++) {
            s += tile[ll_block + r];
        }
        if grad {
            partial[base + n_params] = s;
        } else {
            stats[val_at] = s;
        }
    }
    if !grad {
        return;
    }
    for (var k = 0u; k < layers; k++) {
        let l = layers - 1u - k;
        let dz = select(lw(l, 7u), head_grad, l == layers - 1u);
        weight_gradient(l, dz, n, base, lid);
        if l > 0u {
            workgroupBarrier();
            input_gradient(l, dz, n, pb, lid);
        }
        workgroupBarrier();
    }
}
