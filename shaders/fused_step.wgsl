// The fused training step (and the fused validation pass). A workgroup takes one tile of up
// to R rows of one member (tile = the folded workgroup id, member = workgroup_id.z) through
// the gather, every dense layer, the mixture head and, with flags bit 0, the whole backward
// pass, keeping the tile's activations in workgroup memory (fused_tile.wgsl, prepended, has
// the arithmetic and the layout). It writes, per tile, the partial gradient of every
// parameter (flat layout) and the tile's log-likelihood sum to `partial`, which
// fused_grad.wgsl sums over the tiles in tile order. Without flags bit 0 (validation) it
// writes only the tile's log-likelihood sum, to stats[member * stats_stride + slot + tile]
// (the host binds the row log-likelihood buffer there, and reduce_sum.wgsl adds the sums).

@group(0) @binding(0) var<storage, read> desc: array<u32>;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> src_x: array<f32>;
@group(0) @binding(4) var<storage, read> src_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let member = wid.z;
    let t = wid.x + wid.y * nwg.x;
    let per_tile = desc[D_TILE_ROWS];
    if !member_active(member) || t * per_tile >= step.rows {
        return;
    }
    let first = t * per_tile;
    var n = min(per_tile, step.rows - first);
    let grad = (step.flags & 1u) != 0u;
    let val_at = member * step.stats_stride + step.slot + t;
    if !grad {
        // A packed run's members have validation rows of their own, as many as each has: a
        // member's row order ends in NO_ROW entries where another has more. A tile of none
        // sums to 0, which adds nothing to the member's chunk sum.
        let o = member * step.order_stride + step.start + first;
        while n > 0u && order[o + n - 1u] == NO_ROW {
            n -= 1u;
        }
        if n == 0u {
            if lid == 0u {
                stats[val_at] = 0.0;
            }
            return;
        }
    }
    // This tile's region of `partial`: a gradient and a log-likelihood sum.
    let base = member * step.partial_stride + t * (desc[D_PARAMS] + 1u);
    tile_pass(member, step.start, first, n, grad, step.inv_rows, base, val_at, lid);
}
