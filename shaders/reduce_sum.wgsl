// Deterministic sum of values[0..rows] into stats[slot]: one workgroup, each invocation sums
// a fixed strided subset in order, then a tree reduction in workgroup memory. No atomics, so
// the same inputs give the same bits.

@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    if !member_active(wid.z) {
        return;
    }
    let first = wid.z * step.row_stride; // this member's rows
    var s = 0.0;
    for (var i = t; i < step.rows; i += 256u) {
        s += values[first + i];
    }
    partial[t] = s;
    workgroupBarrier();
    for (var width = 128u; width > 0u; width >>= 1u) {
        if t < width {
            partial[t] += partial[t + width];
        }
        workgroupBarrier();
    }
    if t == 0u {
        stats[wid.z * step.stats_stride + step.slot] = partial[0];
    }
}
