// Gathers one batch: bx[r] = x[order[start + r]], by[r] = y[order[start + r]], for each
// member through its own row order.

struct Gather {
    d_in: u32,
    d_out: u32,
    _p0: u32, _p1: u32, _p2: u32, _p3: u32, _p4: u32, _p5: u32,
}

@group(0) @binding(0) var<uniform> g: Gather;
@group(0) @binding(1) var<storage, read> order: array<u32>;
@group(0) @binding(2) var<storage, read> src_x: array<f32>;
@group(0) @binding(3) var<storage, read> src_y: array<f32>;
@group(0) @binding(4) var<storage, read_write> bx: array<f32>;
@group(0) @binding(5) var<storage, read_write> by: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = linear_index(gid, nwg, 64u);
    if r >= step.rows || !member_active(gid.z) {
        return;
    }
    let member = gid.z;
    let src = order[member * step.order_stride + step.start + r];
    let row = member * step.row_stride + r;
    for (var c = 0u; c < g.d_in; c++) {
        bx[row * g.d_in + c] = src_x[src * g.d_in + c];
    }
    for (var c = 0u; c < g.d_out; c++) {
        by[row * g.d_out + c] = src_y[src * g.d_out + c];
    }
}
