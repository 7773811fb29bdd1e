// Shared by every kernel (prepended to each shader file by src/backend/gpu/kernels.rs).

// Per-dispatch values, one 128-byte record per batch or chunk, bound with a dynamic offset.
// Must match `StepUniform` in src/backend/gpu/mod.rs.
//
// Ensemble members: a run may hold several networks of one shape (members), trained together.
// Every dispatch covers all of them, the member being `gid.z` (see `member_of`), and each
// member has its own region of every buffer: parameters-like buffers at `member *
// layer.p_stride` (or `step.count`), work rows at `member * step.row_stride` rows, its row
// order at `member * step.order_stride`, statistics at `member * step.stats_stride`. With one
// member every offset is 0.
struct Step {
    rows: u32,      // rows in this batch or chunk
    start: u32,     // first position in the row-order buffer
    slot: u32,      // where this batch's reduction goes in the stats buffer
    flags: u32,     // bit 0: compute gradients; bit 1: fused_grad.wgsl applies Adam
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias1: f32,     // 1 / (1 - beta1^t)
    bias2: f32,     // 1 / (1 - beta2^t)
    l2: f32,
    inv_rows: f32,  // 1 / rows: gradients are of the mean NLL
    count: u32,     // element count for elementwise kernels
    clip_norm: f32, // > 0: Adam scales the gradient down to this norm (see grad_norm.wgsl)
    slices: u32,    // row slices of the weight gradient, before each layer's max_slices (fused: tiles)
    order_stride: u32,   // entries of the row-order buffer per member (0: members share it)
    row_stride: u32,     // rows per member in the work buffers
    stats_stride: u32,   // statistics slots per member
    partial_stride: u32, // partial weight-gradient floats per member
    wt_stride: u32,      // transposed-weight floats per member
    members_on: vec4<u32>, // bit m: member m trains (the others' dispatches return at once)
    // Where adam.wgsl finds the gradient's sum of squares when clipping: norm_parts partial
    // sums at sumsq[norm_first + member * norm_stride + j], added in order.
    norm_parts: u32,
    norm_first: u32,
    norm_stride: u32,
    steps: u32, // fused_loop.wgsl: the steps this dispatch runs, from this record on
    // A packed run (members of their own data: `GpuBackend::start_packed`): where each
    // member's own rows, 1 / rows and Adam bias corrections for each training step sit in the
    // step records read as words (fused_loop.wgsl: 4 words at member_table + (slot *
    // table_members + member) * 4); 0 in any other run.
    member_table: u32,
    table_members: u32,
    pad0: u32,
    pad1: u32,
}

@group(1) @binding(0) var<uniform> step: Step;

// A row-order entry past the end of a packed run's member's validation rows.
const NO_ROW: u32 = 0xffffffffu;

// One dense layer's shape and place in the flat parameter buffer (the dense kernels' group-0
// uniform). Must match the `Words` written by `Run` in src/backend/gpu/mod.rs.
struct Layer {
    n_in: u32,
    n_out: u32,
    w_off: u32,
    b_off: u32,
    act: u32,        // activation applied to this layer's output
    act_below: u32,  // activation of the layer below (backward pass)
    max_slices: u32, // the most row slices of this layer's weight gradient
    p_stride: u32,   // floats per member in the `params` binding (parameters or transposed weights)
}


const ACT_NONE: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_TANH: u32 = 2u;

fn activate(kind: u32, z: f32) -> f32 {
    switch kind {
        case 1u: { return max(z, 0.0); }
        case 2u: { return tanh(z); }
        default: { return z; }
    }
}

// The activation's derivative from its output a.
fn activation_derivative(kind: u32, a: f32) -> f32 {
    switch kind {
        case 1u: { return select(0.0, 1.0, a > 0.0); }
        case 2u: { return 1.0 - a * a; }
        default: { return 1.0; }
    }
}

fn softplus(x: f32) -> f32 {
    return max(x, 0.0) + log(1.0 + exp(-abs(x)));
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// NaN and infinity have all exponent bits set; tested on the bits, since compilers may
// assume floats are finite.
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// Row slices of this batch's weight gradient in a layer: the step's count (chosen by
// `weight_grad_slices` in src/backend/gpu/mod.rs), at most the layer's max_slices.
fn weight_grad_slices(max_slices: u32) -> u32 {
    return clamp(step.slices, 1u, max_slices);
}

// Whether member m is still training (members that have stopped early are skipped).
fn member_active(m: u32) -> bool {
    return ((step.members_on[m / 32u] >> (m % 32u)) & 1u) == 1u;
}

// Linear invocation index of a 1-D dispatch folded into 2-D (workgroups per dimension are
// limited, typically to 65535).
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>, wg_size: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg_size;
}
