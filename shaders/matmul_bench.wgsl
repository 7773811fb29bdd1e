// A plain matmul, C = A B (A: m x k, B: k x n, n a multiple of 4), used only by the benchmark
// as the device's own ceiling: 4x4 register tile per invocation with vec4 loads of B and C,
// the layout that ran fastest on lavapipe.

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    _p0: u32, _p1: u32, _p2: u32, _p3: u32, _p4: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = gid.x;          // column block (4 columns)
    let r0 = gid.y * 4u;     // first of 4 rows
    let n4 = dims.n / 4u;
    if c4 >= n4 || r0 >= dims.m {
        return;
    }
    let last = dims.m - 1u;
    let r1 = min(r0 + 1u, last);
    let r2 = min(r0 + 2u, last);
    let r3 = min(r0 + 3u, last);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var i = 0u; i < dims.k; i++) {
        let w = b[i * n4 + c4];
        acc0 += a[r0 * dims.k + i] * w;
        acc1 += a[r1 * dims.k + i] * w;
        acc2 += a[r2 * dims.k + i] * w;
        acc3 += a[r3 * dims.k + i] * w;
    }
    c[r0 * n4 + c4] = acc0;
    if r0 + 1u <= last { c[r1 * n4 + c4] = acc1; }
    if r0 + 2u <= last { c[r2 * n4 + c4] = acc2; }
    if r0 + 3u <= last { c[r3 * n4 + c4] = acc3; }
}
