// The looped training step: one workgroup trains one network (member = workgroup_id.z) for
// `step.steps` steps in one dispatch, with no other workgroup to wait for. Each step takes
// the batch's tiles one after another through fused_tile.wgsl's `tile_pass` (gather,
// forward, head, backward in workgroup memory, each tile's partial gradient to `partial`),
// then sums the tiles in tile order, adds L2 and applies Adam, as fused_grad.wgsl does (the
// same sums in the same order: without clipping, the same bits as fused_step +
// fused_grad on the same adapter). With clipping, each invocation sums the squares of its
// parameters in order and a tree over the invocations adds those (adam.wgsl's formula
// then; a different order from the fused path's per-256 sums, so not the same bits).
//
// It is the path for batches of one tile (the fused path's step is one workgroup anyway,
// and this saves its two dispatches a step) and for ensembles whose members fill the GPU
// (see `GpuBackend::loops_steps_of`). Storage writes (partials, parameters, Adam moments)
// are made visible to the workgroup by `storageBarrier` between the phases of a step.
//
// The step's own values (rows, start, slot, Adam's constants) come from its record in
// `records` (the step-record buffer read as words, RECORD_WORDS a record, prepended by the
// host); `step`, the uniform, is the first step's record and gives what the steps share
// (strides, active members) and `steps`. Training records sit at their slot's index.

@group(0) @binding(0) var<storage, read> desc: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read> src_x: array<f32>;
@group(0) @binding(4) var<storage, read> src_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> m: array<f32>;
@group(0) @binding(8) var<storage, read_write> v: array<f32>;
@group(0) @binding(9) var<storage, read> lrs: array<f32>;
@group(0) @binding(10) var<storage, read> records: array<u32>;

// Words of a `Step` record (common.wgsl's order).
const R_ROWS: u32 = 0u;
const R_START: u32 = 1u;
const R_SLOT: u32 = 2u;
const R_BETA1: u32 = 5u;
const R_BETA2: u32 = 6u;
const R_EPS: u32 = 7u;
const R_BIAS1: u32 = 8u;
const R_BIAS2: u32 = 9u;
const R_L2: u32 = 10u;
const R_INV_ROWS: u32 = 11u;
const R_CLIP_NORM: u32 = 13u;

fn record_f32(at: u32, w: u32) -> f32 {
    return bitcast<f32>(records[at + w]);
}

// Whether parameter e (of one member's flat layout) is a bias.
fn is_bias(e: u32) -> bool {
    for (var l = 0u; l < desc[D_LAYERS]; l++) {
        let b_off = lw(l, 3u);
        if e >= b_off && e < b_off + lw(l, 1u) {
            return true;
        }
    }
    return false;
}

// Adam on parameter i (of the whole buffer) with gradient g, as adam.wgsl and fused_grad.wgsl
// compute it.
fn adam(i: u32, g: f32, lr: f32, at: u32, bias1: f32, bias2: f32) {
    let beta1 = record_f32(at, R_BETA1);
    let beta2 = record_f32(at, R_BETA2);
    let mi = beta1 * m[i] + (1.0 - beta1) * g;
    let vi = beta2 * v[i] + (1.0 - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] -= lr * (mi * bias1) / (sqrt(vi * bias2) + record_f32(at, R_EPS));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let member = wid.z;
    if !member_active(member) {
        return;
    }
    let n_params = desc[D_PARAMS];
    let per_tile = desc[D_TILE_ROWS];
    let first_param = member * n_params;
    let region = member * step.partial_stride;
    let lr = lrs[member];
    // The tree over invocations (clipping) starts at the largest power of two below WG.
    var top = 1u;
    while top * 2u < WG {
        top *= 2u;
    }
    for (var j = 0u; j < step.steps; j++) {
        let at = (step.slot + j) * RECORD_WORDS;
        var rows = records[at + R_ROWS];
        let start = records[at + R_START];
        var inv_rows = record_f32(at, R_INV_ROWS);
        var bias1 = record_f32(at, R_BIAS1);
        var bias2 = record_f32(at, R_BIAS2);
        if step.member_table != 0u {
            // A packed run: this member's own rows in this step (0: its epoch has ended), and
            // its own Adam step's bias corrections.
            let mt = step.member_table + ((step.slot + j) * step.table_members + member) * 4u;
            rows = records[mt];
            inv_rows = bitcast<f32>(records[mt + 1u]);
            bias1 = bitcast<f32>(records[mt + 2u]);
            bias2 = bitcast<f32>(records[mt + 3u]);
            if rows == 0u {
                continue;
            }
        }
        let tiles = (rows + per_tile - 1u) / per_tile;
        for (var t = 0u; t < tiles; t++) {
            let first = t * per_tile;
            let base = region + t * (n_params + 1u);
            tile_pass(member, start, first, min(per_tile, rows - first), true, inv_rows, base, 0u, lid);
        }
        storageBarrier();
        let l2 = record_f32(at, R_L2);
        let clip_norm = record_f32(at, R_CLIP_NORM);
        var squares = 0.0;
        for (var e = lid; e <= n_params; e += WG) {
            var g = 0.0;
            for (var t = 0u; t < tiles; t++) {
                g += partial[region + t * (n_params + 1u) + e];
            }
            if e == n_params {
                stats[member * step.stats_stride + records[at + R_SLOT]] = g;
                continue;
            }
            let i = first_param + e;
            if !is_bias(e) {
                g += 2.0 * l2 * params[i];
            }
            if clip_norm > 0.0 {
                // Kept in the first tile's slot (read back only by this invocation).
                partial[region + e] = g;
                squares += g * g;
            } else {
                adam(i, g, lr, at, bias1, bias2);
            }
        }
        if clip_norm > 0.0 {
            // The tile's workgroup memory is free after tile_pass's last barrier.
            tile[lid] = squares;
            workgroupBarrier();
            for (var width = top; width > 0u; width >>= 1u) {
                if lid < width && lid + width < WG {
                    tile[lid] += tile[lid + width];
                }
                workgroupBarrier();
            }
            let norm = sqrt(tile[0]);
            for (var e = lid; e < n_params; e += WG) {
                var g = partial[region + e];
                if norm > clip_norm {
                    g *= clip_norm / norm;
                }
                adam(first_param + e, g, lr, at, bias1, bias2);
            }
            // Every invocation has read tile[0] before the next step's gather.
            workgroupBarrier();
        }
        storageBarrier();
    }
}
