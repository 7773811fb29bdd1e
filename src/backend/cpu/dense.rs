//! The CPU backend's dense-layer kernels, written for the small row-major matrices of an
//! MDN's layers (tens to a few hundred columns): `out = a w + bias` and the weight gradient
//! `dw += aᵀ dz`. Both are one register-blocked kernel ([`tile`]): a block of output rows
//! times up to four vectors of output columns stays in registers while the shared dimension
//! streams past, one fused multiply-add per element and step. No packing, no dispatch on
//! shapes, nothing allocated; a 64-wide layer's weights stay in the L1 cache.
//!
//! General sgemm libraries (`matrixmultiply`, the `gemm` crate) pack their operands into
//! panels and pick kernels by shape. On these layers the `gemm` crate and these kernels ran a
//! training step equally fast (within the development machine's noise, 2026-12-06), but the
//! crate's result for a row depended on which rows shared its block, so predictions had to
//! go through the slower `matrixmultiply`; these kernels give every pass the same guarantee
//! below, and a weight gradient summed over row tiles the same bits as one summed whole.
//!
//! **Every element is one fixed chain of operations**: `out[r][o]` starts at `bias[o]` (or
//! zero) and adds `a[r][i] * w[i][o]` for `i = 0, 1, ...` in order; `dw[i][o]` adds
//! `a[r][i] * dz[r][o]` for the rows in order, starting from what `dw` held. How rows and
//! columns are blocked never changes a result, so a row's output is the same bits whichever
//! rows are computed with it (predictions do not depend on how a batch was split), and a
//! weight gradient summed over row tiles is the same bits as one summed over the whole batch.
//! The multiply-add is fused on AVX-512, AVX2+FMA and NEON (which therefore agree to the
//! bit) and a multiply then an add on an x86-64 baseline without FMA ([`PORTABLE_FUSED`]).
//!
//! The instruction set is [`crate::lanes::isa`]'s, chosen when the program runs.

use crate::lanes::{Isa, isa};

/// Output rows a tile holds in registers.
const ROWS: usize = 6;
/// Vectors of output columns a tile holds in registers, at most ([`Vector::VECTORS`] on an
/// instruction set with fewer registers).
const VECTORS: usize = 4;
/// Terms of a sum [`affine`] takes at a time: a 64-wide layer's `STEPS` rows of weights are
/// 32 KiB.
const STEPS: usize = 128;
/// Rows of a weight gradient taken at a time.
const BLOCK_ROWS: usize = 8 * ROWS;
/// Floats that a weight gradient's chunk of rows may take in the L1 cache (half of 32 KiB,
/// the smallest L1 data cache of the x86 and ARM cores mdn runs on).
const L1_FLOATS: usize = 4096;

/// `out[r][o] = bias[o] + sum_i a[r][i] * w[i][o]` (`bias` `None`: zero) for `rows` rows;
/// `a` is `rows x k` with row stride `lda`, `w` is `k x n`, `out` is `rows x n`.
///
/// A wide layer's sum goes in chunks of [`STEPS`] terms, each chunk's rows of `w` staying in
/// the L1 cache while every row of `a` takes them (`out` carries the chains from chunk to
/// chunk, so the chunks change no bits).
#[allow(clippy::too_many_arguments)]
pub fn affine(
    a: &[f32],
    lda: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
) {
    if rows == 0 || n == 0 {
        return;
    }
    assert!(
        lda >= k && a.len() >= (rows - 1) * lda + k,
        "a is too short"
    );
    assert!(
        w.len() >= k * n && out.len() >= rows * n,
        "w or out is too short"
    );
    assert!(bias.is_none_or(|b| b.len() >= n), "bias is too short");
    let mut i0 = 0;
    loop {
        let steps = (k - i0).min(STEPS);
        let init = match (i0, bias) {
            (0, Some(b)) => Init::Row(b.as_ptr()),
            (0, None) => Init::Zero,
            _ => Init::Out,
        };
        let job = Job {
            s: a[i0..].as_ptr(),
            s_row: lda,
            s_step: 1,
            v: w[i0 * n..].as_ptr(),
            v_step: n,
            steps,
            init,
            out: out.as_mut_ptr(),
            rows,
            cols: n,
        };
        // SAFETY: the asserts above bound every element the job reads and writes.
        unsafe { run(&job) }
        i0 += steps;
        if i0 >= k {
            break;
        }
    }
}

/// `dw[i][o] += sum_r a[r][i] * dz[r][o]` over `rows` rows, in row order (`accumulate`
/// false: from zero); `a` is `rows x k`, `dz` is `rows x n`, `dw` is `k x n`.
///
/// Each tile of `dw` streams rows of `a` and `dz` past its registers, so the rows go in
/// chunks small enough for the columns a block of [`BLOCK_ROWS`] rows of `dw` reads to stay
/// in the L1 cache while each of its tiles takes them (the tiles load and store `dw` once a
/// chunk, which changes no bits).
pub fn weight_grad(
    a: &[f32],
    dz: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    dw: &mut [f32],
    accumulate: bool,
) {
    if k == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= rows * k && dz.len() >= rows * n,
        "a or dz is too short"
    );
    assert!(dw.len() >= k * n, "dw is too short");
    if rows == 0 && !accumulate {
        dw[..k * n].fill(0.0);
    }
    let chunk = (L1_FLOATS / (k.min(BLOCK_ROWS) + n.min(VECTORS * 16))).max(ROWS);
    let mut r0 = 0;
    while r0 < rows {
        let m = (rows - r0).min(chunk);
        let mut i0 = 0;
        while i0 < k {
            let block = (k - i0).min(BLOCK_ROWS);
            let job = Job {
                s: a[r0 * k + i0..].as_ptr(),
                s_row: 1,
                s_step: k,
                v: dz[r0 * n..].as_ptr(),
                v_step: n,
                steps: m,
                init: if accumulate || r0 > 0 {
                    Init::Out
                } else {
                    Init::Zero
                },
                out: dw[i0 * n..].as_mut_ptr(),
                rows: block,
                cols: n,
            };
            // SAFETY: the asserts above bound every element the job reads and writes.
            unsafe { run(&job) }
            i0 += block;
        }
        r0 += m;
    }
}

/// `db[o] += sum_r dz[r][o]` over `rows` rows, in row order.
pub fn bias_grad(dz: &[f32], rows: usize, n: usize, db: &mut [f32]) {
    for row in dz[..rows * n].chunks_exact(n) {
        for (d, &g) in db[..n].iter_mut().zip(row) {
            *d += g;
        }
    }
}

/// `wt[o][i] = w[i][o]` for `w` `k x n`.
pub fn transpose(w: &[f32], k: usize, n: usize, wt: &mut [f32]) {
    for (i, row) in w[..k * n].chunks_exact(n).enumerate() {
        for (o, &v) in row.iter().enumerate() {
            wt[o * k + i] = v;
        }
    }
}

/// Where an output element's chain starts.
#[derive(Clone, Copy)]
enum Init {
    Zero,
    /// The same row of values (a bias) for every output row.
    Row(*const f32),
    /// What the output holds.
    Out,
}

/// `out[r][c] = init + sum_t s[r * s_row + t * s_step] * v[t * v_step + c]` for `t` in
/// `0..steps`, `out` row-major `rows x cols`.
struct Job {
    s: *const f32,
    s_row: usize,
    s_step: usize,
    v: *const f32,
    v_step: usize,
    steps: usize,
    init: Init,
    out: *mut f32,
    rows: usize,
    cols: usize,
}

/// Runs `job` on the widest instruction set there is.
///
/// # Safety
/// Every element `job` describes must be in bounds.
unsafe fn run(job: &Job) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::run_avx512(job) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::run_avx2(job) },
        _ => unsafe { drive::<Portable>(job) },
    }
}

/// A vector of `f32` lanes: what [`tile`] needs of an instruction set.
trait Vector: Copy {
    const LANES: usize;
    /// Vectors of columns a tile holds: `ROWS * VECTORS` accumulators and a row of the
    /// streamed operand must fit in the registers.
    const VECTORS: usize;
    /// Which lanes a partial vector loads and stores.
    type Mask: Copy;
    fn mask(lanes: usize) -> Self::Mask;
    unsafe fn zero() -> Self;
    unsafe fn splat(p: *const f32) -> Self;
    unsafe fn load(p: *const f32, m: Self::Mask) -> Self;
    unsafe fn store(self, p: *mut f32, m: Self::Mask);
    /// `a * b + c`.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
}

/// Blocks `job` into tiles of [`ROWS`] rows and up to [`Vector::VECTORS`] vectors of columns.
#[inline(always)]
unsafe fn drive<V: Vector>(job: &Job) {
    let block = V::VECTORS * V::LANES;
    let mut c0 = 0;
    while c0 < job.cols {
        let width = (job.cols - c0).min(block);
        let masks: [V::Mask; VECTORS] =
            std::array::from_fn(|j| V::mask(width.saturating_sub(j * V::LANES).min(V::LANES)));
        let vectors = width.div_ceil(V::LANES);
        let mut r0 = 0;
        while r0 < job.rows {
            let rows = (job.rows - r0).min(ROWS);
            // SAFETY: the tile lies inside the job.
            unsafe {
                match (rows, vectors) {
                    (6, 4) => tile::<V, 6, 4>(job, r0, c0, &masks),
                    (6, 3) => tile::<V, 6, 3>(job, r0, c0, &masks),
                    (6, 2) => tile::<V, 6, 2>(job, r0, c0, &masks),
                    (6, 1) => tile::<V, 6, 1>(job, r0, c0, &masks),
                    (r, 4) => (0..r).for_each(|i| tile::<V, 1, 4>(job, r0 + i, c0, &masks)),
                    (r, 3) => (0..r).for_each(|i| tile::<V, 1, 3>(job, r0 + i, c0, &masks)),
                    (r, 2) => (0..r).for_each(|i| tile::<V, 1, 2>(job, r0 + i, c0, &masks)),
                    (r, _) => (0..r).for_each(|i| tile::<V, 1, 1>(job, r0 + i, c0, &masks)),
                }
            }
            r0 += rows;
        }
        c0 += width;
    }
}

/// Rows `r0..r0 + R` and columns from `c0`, `C` vectors wide (the last masked), of `job`.
#[inline(always)]
unsafe fn tile<V: Vector, const R: usize, const C: usize>(
    job: &Job,
    r0: usize,
    c0: usize,
    masks: &[V::Mask; VECTORS],
) {
    unsafe {
        let out = |r: usize, j: usize| job.out.add((r0 + r) * job.cols + c0 + j * V::LANES);
        let mut acc = [[V::zero(); C]; R];
        match job.init {
            Init::Zero => {}
            Init::Row(b) => {
                let row: [V; C] =
                    std::array::from_fn(|j| V::load(b.add(c0 + j * V::LANES), masks[j]));
                acc = [row; R];
            }
            Init::Out => {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = V::load(out(r, j), masks[j]);
                    }
                }
            }
        }
        let mut s = job.s.add(r0 * job.s_row);
        let mut v = job.v.add(c0);
        for _ in 0..job.steps {
            let vs: [V; C] = std::array::from_fn(|j| V::load(v.add(j * V::LANES), masks[j]));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = V::splat(s.add(r * job.s_row));
                for (a, &y) in acc.iter_mut().zip(&vs) {
                    *a = V::mul_add(x, y, *a);
                }
            }
            s = s.add(job.s_step);
            v = v.add(job.v_step);
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, a) in acc.iter().enumerate() {
                a.store(out(r, j), masks[j]);
            }
        }
    }
}

/// Whether the build's baseline has a fused multiply-add instruction (every aarch64 CPU
/// does; x86-64 only when built for one that has it). Without one, `f32::mul_add` would be
/// a slow library call, so the baseline kernel multiplies, then adds.
pub const PORTABLE_FUSED: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// Eight lanes of multiply-adds, for any CPU (the compiler vectorises them with
/// what the build targets).
#[derive(Clone, Copy)]
struct Portable([f32; 8]);

impl Vector for Portable {
    const LANES: usize = 8;
    const VECTORS: usize = 2;
    type Mask = usize;
    #[inline(always)]
    fn mask(lanes: usize) -> usize {
        lanes
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        Portable([unsafe { *p }; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, m: usize) -> Self {
        let mut v = [0.0; 8];
        for (i, x) in v.iter_mut().enumerate().take(m) {
            *x = unsafe { *p.add(i) };
        }
        Portable(v)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, m: usize) {
        for (i, &x) in self.0.iter().enumerate().take(m) {
            unsafe { *p.add(i) = x };
        }
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
        if PORTABLE_FUSED {
            Portable(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], c.0[i])))
        } else {
            Portable(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Job, Vector, drive};

    /// [`drive`] compiled for AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512(job: &Job) {
        unsafe { drive::<Zmm>(job) }
    }

    /// [`drive`] compiled for AVX2 with FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2(job: &Job) {
        unsafe { drive::<Ymm>(job) }
    }

    /// Sixteen lanes; a partial vector through a lane mask.
    #[derive(Clone, Copy)]
    struct Zmm(__m512);

    impl Vector for Zmm {
        const LANES: usize = 16;
        const VECTORS: usize = 4;
        type Mask = __mmask16;
        #[inline(always)]
        fn mask(lanes: usize) -> __mmask16 {
            ((1u32 << lanes) - 1) as __mmask16
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            Zmm(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            Zmm(unsafe { _mm512_set1_ps(*p) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, m: __mmask16) -> Self {
            Zmm(unsafe { _mm512_maskz_loadu_ps(m, p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, m: __mmask16) {
            unsafe { _mm512_mask_storeu_ps(p, m, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            Zmm(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
    }

    /// Eight lanes; a partial vector through `vmaskmov`.
    #[derive(Clone, Copy)]
    struct Ymm(__m256);

    impl Vector for Ymm {
        const LANES: usize = 8;
        const VECTORS: usize = 2;
        type Mask = __m256i;
        #[inline(always)]
        fn mask(lanes: usize) -> __m256i {
            let m: [i32; 8] = std::array::from_fn(|i| if i < lanes { -1 } else { 0 });
            // SAFETY: an unaligned load of eight i32 from a local array.
            unsafe { _mm256_loadu_si256(m.as_ptr().cast()) }
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            Ymm(unsafe { _mm256_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            Ymm(unsafe { _mm256_broadcast_ss(&*p) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, m: __m256i) -> Self {
            Ymm(unsafe { _mm256_maskload_ps(p, m) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, m: __m256i) {
            unsafe { _mm256_maskstore_ps(p, m, self.0) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self {
            Ymm(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One element's chain as the kernels define it, one step at a time.
    fn chain(init: f32, terms: impl Iterator<Item = (f32, f32)>) -> f32 {
        let fused = isa() != Isa::Baseline || PORTABLE_FUSED;
        terms.fold(init, |acc, (x, y)| {
            if fused {
                x.mul_add(y, acc)
            } else {
                x * y + acc
            }
        })
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(13);
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    const SHAPES: [(usize, usize, usize); 10] = [
        (1, 1, 1),
        (3, 2, 17),
        (50, 16, 64),
        (783, 64, 25),
        (7, 65, 100),
        (13, 3, 33),
        (256, 64, 64),
        (6, 1, 129),
        (5, 300, 70),
        (40, 130, 200),
    ];

    #[test]
    fn affine_is_each_elements_chain_in_order() {
        for &(rows, k, n) in &SHAPES {
            let lda = k + 3;
            let (a, w, b) = (data(rows * lda, 1), data(k * n, 2), data(n, 3));
            for bias in [Some(&b[..]), None] {
                let mut out = vec![f32::NAN; rows * n];
                affine(&a, lda, &w, bias, rows, k, n, &mut out);
                for r in 0..rows {
                    for o in 0..n {
                        let init = bias.map_or(0.0, |b| b[o]);
                        let want = chain(init, (0..k).map(|i| (a[r * lda + i], w[i * n + o])));
                        assert_eq!(
                            out[r * n + o].to_bits(),
                            want.to_bits(),
                            "rows {rows} k {k} n {n}: element ({r}, {o}) is {} not {want}",
                            out[r * n + o]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn weight_grad_is_each_elements_chain_in_row_order() {
        for &(rows, k, n) in &SHAPES {
            let (a, dz, start) = (data(rows * k, 4), data(rows * n, 5), data(k * n, 6));
            for accumulate in [false, true] {
                let mut dw = start.clone();
                weight_grad(&a, &dz, rows, k, n, &mut dw, accumulate);
                for i in 0..k {
                    for o in 0..n {
                        let init = if accumulate { start[i * n + o] } else { 0.0 };
                        let want = chain(init, (0..rows).map(|r| (a[r * k + i], dz[r * n + o])));
                        assert_eq!(
                            dw[i * n + o].to_bits(),
                            want.to_bits(),
                            "rows {rows} k {k} n {n}: element ({i}, {o}) is {} not {want}",
                            dw[i * n + o]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_weight_gradient_summed_over_row_tiles_is_the_whole_batchs() {
        let (rows, k, n) = (783, 64, 25);
        let (a, dz) = (data(rows * k, 7), data(rows * n, 8));
        let mut whole = vec![0.0; k * n];
        weight_grad(&a, &dz, rows, k, n, &mut whole, false);
        let mut tiled = vec![0.0; k * n];
        for (t, start) in (0..rows).step_by(100).enumerate() {
            let end = (start + 100).min(rows);
            let m = end - start;
            weight_grad(
                &a[start * k..],
                &dz[start * n..],
                m,
                k,
                n,
                &mut tiled,
                t > 0,
            );
        }
        assert_eq!(whole, tiled);
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        let w = data(3 * 5, 9);
        let mut wt = vec![0.0; 15];
        transpose(&w, 3, 5, &mut wt);
        for i in 0..3 {
            for o in 0..5 {
                assert_eq!(wt[o * 3 + i], w[i * 5 + o]);
            }
        }
    }
}
