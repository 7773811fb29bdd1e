// sumsq[member] = sum of grad[i]^2 over the member's flat gradient, for gradient-norm clipping in adam.wgsl.
// One workgroup: a fixed strided subset per invocation, then a tree reduction in workgroup
// memory. Deterministic.

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> sumsq: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    if !member_active(wid.z) {
        return;
    }
    let first = wid.z * step.count; // this member's gradient
    var s = 0.0;
    for (var i = t; i < step.count; i += 256u) {
        let g = grad[first + i];
        s += g * g;
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
        sumsq[wid.z] = partial[0];
    }
}
