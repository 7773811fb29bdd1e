// stats[slot] = 1.0 if any of values[0..count] is NaN or infinite, else 0.0. One workgroup.

@group(0) @binding(0) var<storage, read> values: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;

var<workgroup> flags: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    if !member_active(wid.z) {
        return;
    }
    let first = wid.z * step.count; // this member's values
    var bad = 0u;
    for (var i = t; i < step.count; i += 256u) {
        bad |= select(0u, 1u, non_finite(values[first + i]));
    }
    flags[t] = bad;
    workgroupBarrier();
    for (var width = 128u; width > 0u; width >>= 1u) {
        if t < width {
            flags[t] |= flags[t + width];
        }
        workgroupBarrier();
    }
    if t == 0u {
        stats[wid.z * step.stats_stride + step.slot] = f32(flags[0]);
    }
}
