// The mixture head as a kernel of its own (the layered path, evaluation and prediction):
// one invocation per row of the step's rows, reading the head layer's outputs `h` and the
// targets `y`, writing the row's log-likelihood to `rowll` and, with flags bit 0, the
// gradient of the mean NLL at every head output to `delta`. The arithmetic is
// mixture_head_common.wgsl's `head_row`.

@group(0) @binding(0) var<uniform> head: Head;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rowll: array<f32>;
@group(0) @binding(4) var<storage, read_write> delta: array<f32>;

// Where this invocation's row starts in h and delta, and in y.
var<private> row_base: u32;
var<private> y_base: u32;

fn hv(i: u32) -> f32 {
    return h[row_base + i];
}

fn yv(j: u32) -> f32 {
    return y[y_base + j];
}

fn set_delta(i: u32, v: f32) {
    delta[row_base + i] = v;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, 64u);
    if r >= step.rows || !member_active(gid.z) {
        return;
    }
    let row = gid.z * step.row_stride + r; // this member's row
    row_base = row * head.p;
    y_base = row * head.d;
    rowll[row] = head_row((step.flags & 1u) != 0u, step.inv_rows);
}
