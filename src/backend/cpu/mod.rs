//! The CPU backend: plain Rust, the reference every other backend is judged against.
//!
//! Correctness first and readable, without waste: matrices are flat row-major slices; the
//! dense layers go through register-blocked kernels on the widest vector unit the CPU has
//! ([`dense`]); the mixture head is evaluated in `f64`, 8 rows at a time
//! ([`crate::mixture`]). Work buffers are allocated once per run (or per call for the
//! stateless operations) and reused for every batch.
//!
//! A batch is split into as many contiguous parts as the backend has threads; each part runs
//! forward, head and backward on its own workspace and gradient buffer, a tile of
//! [`TILE_ROWS`] rows at a time so that a tile's activations stay in cache, then the parts'
//! gradients are summed in part order. The same data, seed and thread count therefore give
//! the same bits; a different thread count changes the last bits of the sums.

pub(crate) mod dense;

pub use dense::PORTABLE_FUSED;

use std::ops::Range;

use rayon::prelude::*;

use crate::backend::{
    AdamState, AdamStepConstants, Backend, DataRef, EpochStats, LossGrad, StepConfig, TrainRun,
    TrainState,
};
use crate::error::{Error, Result};
use crate::layout::{Activation, Arch, LayerShape};
use crate::mixture::Mixture;

/// Rows per part evaluated at a time by forward-only passes (validation, evaluation).
const EVAL_CHUNK: usize = 2048;

/// Rows a training step takes through forward, head and backward at a time: few enough that
/// their activations and gradients stay in the L2 cache in between.
const TILE_ROWS: usize = 128;

/// The CPU reference backend.
pub struct CpuBackend {
    threads: usize,
    /// Workers for `threads > 1`.
    pool: Option<rayon::ThreadPool>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    /// A backend using every core the process may use.
    pub fn new() -> Self {
        CpuBackend::with_threads(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
    }

    /// A backend splitting each batch over `threads` threads (at least 1).
    pub fn with_threads(threads: usize) -> Self {
        let threads = threads.max(1);
        let pool = (threads > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("mdn-cpu-{i}"))
                    .build()
                    .ok()
            })
            .flatten();
        CpuBackend {
            threads: if pool.is_some() { threads } else { 1 },
            pool,
        }
    }

    /// Threads each batch is split over.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// State of a training run.
struct Run {
    net: Net,
    params: Vec<f32>,
    best: Vec<f32>,
    grad: Vec<f32>,
    adam: AdamState,
    train_x: Vec<f32>,
    train_y: Vec<f32>,
    train_rows: usize,
    val: Option<(Vec<f32>, Vec<f32>, usize)>,
    parts: Vec<Part>,
    /// The epoch in progress.
    epoch: Option<EpochAccum>,
    /// Parameters and Adam state saved by `snapshot`.
    saved: Option<(Vec<f32>, AdamState)>,
}

/// A training run on the CPU: its state and the backend's thread pool.
struct CpuRun<'a> {
    pool: Option<&'a rayon::ThreadPool>,
    run: Run,
}

impl TrainRun for CpuRun<'_> {
    fn train_epoch(&mut self, order: &[u32], cfg: &StepConfig) -> Result<EpochStats> {
        let (pool, run) = (self.pool, &mut self.run);
        if let Some(&bad) = order.iter().find(|&&i| i as usize >= run.train_rows) {
            return Err(Error::Backend(format!(
                "row index {bad} out of range ({} training rows)",
                run.train_rows
            )));
        }
        run.begin_epoch(cfg)?;
        let (d_in, d_out) = (run.net.arch.inputs, run.net.arch.targets);
        let (tx, ty) = (
            std::mem::take(&mut run.train_x),
            std::mem::take(&mut run.train_y),
        );
        for batch in order.chunks(cfg.batch_size) {
            let gather = |ws: &mut Workspace, range: Range<usize>| {
                for (slot, &row) in batch[range].iter().enumerate() {
                    let row = row as usize;
                    ws.x[slot * d_in..(slot + 1) * d_in]
                        .copy_from_slice(&tx[row * d_in..(row + 1) * d_in]);
                    ws.y[slot * d_out..(slot + 1) * d_out]
                        .copy_from_slice(&ty[row * d_out..(row + 1) * d_out]);
                }
            };
            run.step(pool, batch.len(), &gather);
        }
        (run.train_x, run.train_y) = (tx, ty);
        Ok(run.end_epoch(pool))
    }

    fn begin_epoch(&mut self, _train_rows: usize, cfg: &StepConfig) -> Result<()> {
        self.run.begin_epoch(cfg)
    }

    fn train_chunk(&mut self, x: &[f32], y: &[f32], rows: usize) -> Result<()> {
        let (pool, run) = (self.pool, &mut self.run);
        run.net.check_data(x, Some(y), rows)?;
        let cfg = run
            .epoch
            .as_ref()
            .ok_or_else(|| Error::Backend("train_chunk called before begin_epoch".into()))?
            .cfg;
        let (d_in, d_out) = (run.net.arch.inputs, run.net.arch.targets);
        let mut start = 0;
        while start < rows {
            let b = (rows - start).min(cfg.batch_size);
            let fill = |ws: &mut Workspace, r: Range<usize>| {
                copy_rows(ws, x, y, d_in, d_out, r.start + start..r.end + start)
            };
            run.step(pool, b, &fill);
            start += b;
        }
        Ok(())
    }

    fn end_epoch(&mut self) -> Result<EpochStats> {
        if self.run.epoch.is_none() {
            return Err(Error::Backend("end_epoch called before begin_epoch".into()));
        }
        Ok(self.run.end_epoch(self.pool))
    }

    fn save_state(&mut self) -> Result<TrainState> {
        let run = &self.run;
        Ok(TrainState {
            params: run.params.clone(),
            best: run.best.clone(),
            adam: run.adam.clone(),
        })
    }

    fn load_state(&mut self, state: &TrainState) -> Result<()> {
        let run = &mut self.run;
        let n = run.params.len();
        if state.params.len() != n || state.best.len() != n {
            return Err(Error::config(
                "checkpoint state does not match the model's parameter count",
            ));
        }
        state.adam.check_lengths(&state.params, &state.best)?;
        run.params.copy_from_slice(&state.params);
        run.best.copy_from_slice(&state.best);
        run.adam = state.adam.clone();
        Ok(())
    }

    fn snapshot(&mut self) -> Result<()> {
        let run = &mut self.run;
        run.saved = Some((run.params.clone(), run.adam.clone()));
        Ok(())
    }

    fn restore(&mut self) -> Result<()> {
        let run = &mut self.run;
        let (params, adam) = run
            .saved
            .clone()
            .ok_or_else(|| Error::Backend("restore called before snapshot".into()))?;
        run.params = params;
        run.adam = adam;
        run.epoch = None;
        Ok(())
    }

    fn keep_best(&mut self) -> Result<()> {
        let run = &mut self.run;
        run.best.copy_from_slice(&run.params);
        Ok(())
    }

    fn best_params(&mut self) -> Result<Vec<f32>> {
        Ok(self.run.best.clone())
    }

    fn current_params(&mut self) -> Result<Vec<f32>> {
        Ok(self.run.params.clone())
    }
}

/// What an epoch in progress has accumulated.
struct EpochAccum {
    cfg: StepConfig,
    nll_sum: f64,
    rows: usize,
    steps: u64,
    finite: bool,
    first_bad_batch: Option<u64>,
}

impl Run {
    fn begin_epoch(&mut self, cfg: &StepConfig) -> Result<()> {
        if cfg.batch_size == 0 {
            return Err(Error::config("batch size must be at least 1"));
        }
        self.epoch = Some(EpochAccum {
            cfg: *cfg,
            nll_sum: 0.0,
            rows: 0,
            steps: 0,
            finite: true,
            first_bad_batch: None,
        });
        Ok(())
    }

    /// One Adam step on a batch of `b` rows that `fill` copies into the workspaces.
    fn step(
        &mut self,
        pool: Option<&rayon::ThreadPool>,
        b: usize,
        fill: &(dyn Fn(&mut Workspace, Range<usize>) + Sync),
    ) {
        let acc = self.epoch.as_mut().expect("begin_epoch first");
        run_parts(
            &self.net,
            &self.params,
            &mut self.parts,
            pool,
            b,
            Pass::Gradient {
                scale: 1.0 / b as f64,
            },
            fill,
        );
        let ll: f64 = self.parts.iter().map(|p| p.ll).sum();
        acc.nll_sum -= ll;
        if !ll.is_finite() && acc.first_bad_batch.is_none() {
            acc.first_bad_batch = Some(acc.steps);
        }
        acc.finite &= ll.is_finite();
        acc.rows += b;
        acc.steps += 1;
        sum_grads(&self.parts, &mut self.grad);
        l2_term(&self.net, &self.params, &mut self.grad, acc.cfg.l2);
        clip(&mut self.grad, acc.cfg.clip_norm);
        self.adam.step += 1;
        let c = AdamStepConstants::new(&acc.cfg, self.adam.step);
        adam(
            &mut self.params,
            &self.grad,
            &mut self.adam.m,
            &mut self.adam.v,
            &c,
        );
    }

    /// Validation and the finite check after an epoch's steps.
    fn end_epoch(&mut self, pool: Option<&rayon::ThreadPool>) -> EpochStats {
        let acc = self.epoch.take().expect("begin_epoch first");
        let mut finite = acc.finite && self.params.iter().all(|v| v.is_finite());
        let val_nll = self.val.as_ref().map(|(x, y, rows)| {
            -eval_loglik(
                &self.net,
                &self.params,
                &mut self.parts,
                pool,
                x,
                y,
                *rows,
                None,
            ) / *rows as f64
        });
        if let Some(v) = val_nll {
            finite &= v.is_finite();
        }
        EpochStats {
            train_nll: acc.nll_sum / acc.rows.max(1) as f64,
            val_nll,
            finite,
            steps: acc.steps,
            first_bad_batch: acc.first_bad_batch,
        }
    }
}

/// One thread's share of a batch: its workspace, gradient and results.
struct Part {
    ws: Workspace,
    grad: Vec<f32>,
    /// Sum of the part's row log-likelihoods.
    ll: f64,
    /// Per-row log-likelihoods, when asked for.
    rows_ll: Vec<f64>,
    /// Each layer's weights transposed (`outputs x inputs`, at the layer's offset), for the
    /// input gradient.
    wt: Vec<f32>,
}

impl Part {
    fn new(net: &Net, cap: usize) -> Part {
        Part {
            ws: Workspace::new(net, cap),
            grad: vec![0.0; net.arch.param_count()],
            ll: 0.0,
            rows_ll: Vec::new(),
            wt: vec![0.0; net.arch.param_count()],
        }
    }
}

/// `threads` parts able to hold `rows` rows between them.
fn parts_for(net: &Net, threads: usize, rows: usize) -> Vec<Part> {
    let cap = rows.div_ceil(threads).max(1);
    (0..threads).map(|_| Part::new(net, cap)).collect()
}

/// Splits `0..rows` into `n` contiguous ranges whose sizes differ by at most one.
fn split_rows(rows: usize, n: usize) -> Vec<Range<usize>> {
    let (base, extra) = (rows / n, rows % n);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// What a pass over a batch computes.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// Forward only (head outputs stay in each part's workspace).
    Forward,
    /// Forward and log-likelihoods (`ll`, and `rows_ll` when `per_row`).
    Loglik { per_row: bool },
    /// Forward, log-likelihoods and the gradient of `scale * sum(-loglik)` in each part's `grad`.
    Gradient { scale: f64 },
}

/// Runs `pass` over `rows` rows split across `parts`; `fill` copies a range of rows into a
/// workspace's `x` (and `y`). Parts run on `pool` when there is one.
fn run_parts(
    net: &Net,
    params: &[f32],
    parts: &mut [Part],
    pool: Option<&rayon::ThreadPool>,
    rows: usize,
    pass: Pass,
    fill: &(dyn Fn(&mut Workspace, Range<usize>) + Sync),
) {
    let ranges = split_rows(rows, parts.len());
    let work = |(part, range): (&mut Part, &Range<usize>)| {
        part.ll = 0.0;
        part.rows_ll.clear();
        let n = range.len();
        if n == 0 {
            part.grad.fill(0.0);
            return;
        }
        if part.ws.cap < n {
            part.ws = Workspace::new(net, n);
        }
        fill(&mut part.ws, range.clone());
        let ws = &mut part.ws;
        match pass {
            Pass::Forward => forward(net, params, &ws.x, n, &mut ws.acts),
            Pass::Loglik { per_row } => {
                forward(net, params, &ws.x, n, &mut ws.acts);
                let h = ws.acts.head();
                head(net, h, &ws.y, n, &mut ws.scratch, &mut ws.ll, None, 0.0);
                part.ll = ws.ll[..n].iter().sum();
                if per_row {
                    part.rows_ll.extend_from_slice(&ws.ll[..n]);
                }
            }
            Pass::Gradient { scale } => {
                transpose_weights(net, params, &mut part.wt);
                let (d_in, d_out, p) = (net.arch.inputs, net.arch.targets, net.mix.width());
                // Tile by tile, so that a tile's activations stay in cache from its forward
                // pass to its backward pass; the kernels add each tile's rows to the
                // gradient in row order (see `dense`).
                let mut start = 0;
                while start < n {
                    let m = (n - start).min(TILE_ROWS);
                    let x = &ws.x[start * d_in..(start + m) * d_in];
                    forward(net, params, x, m, &mut ws.acts);
                    let (h, y) = (ws.acts.head(), &ws.y[start * d_out..]);
                    let delta = Some(&mut ws.delta[..m * p]);
                    head(net, h, y, m, &mut ws.scratch, &mut ws.ll, delta, scale);
                    part.ll = ws.ll[..m].iter().fold(part.ll, |sum, &v| sum + v);
                    backward(
                        net,
                        params,
                        &part.wt,
                        x,
                        m,
                        &ws.acts,
                        &mut ws.delta,
                        &mut ws.delta_below,
                        &mut part.grad,
                        start > 0,
                    );
                    start += m;
                }
            }
        }
    };
    match pool {
        Some(pool) if parts.len() > 1 => {
            pool.install(|| parts.par_iter_mut().zip(ranges.par_iter()).for_each(work))
        }
        _ => parts.iter_mut().zip(ranges.iter()).for_each(work),
    }
}

/// Copies rows `range` of `x` (and `y`, when it is not empty) into a workspace.
fn copy_rows(
    ws: &mut Workspace,
    x: &[f32],
    y: &[f32],
    d_in: usize,
    d_out: usize,
    range: Range<usize>,
) {
    let n = range.len();
    ws.x[..n * d_in].copy_from_slice(&x[range.start * d_in..range.end * d_in]);
    if !y.is_empty() {
        ws.y[..n * d_out].copy_from_slice(&y[range.start * d_out..range.end * d_out]);
    }
}

/// Sums the parts' gradients into `grad`, in part order.
fn sum_grads(parts: &[Part], grad: &mut [f32]) {
    grad.copy_from_slice(&parts[0].grad);
    for part in &parts[1..] {
        for (g, &p) in grad.iter_mut().zip(&part.grad) {
            *g += p;
        }
    }
}

/// The architecture with its layer offsets resolved once.
struct Net {
    arch: Arch,
    layers: Vec<LayerShape>,
    mix: Mixture,
}

impl Net {
    fn new(arch: &Arch) -> Result<Net> {
        arch.validate()?;
        Ok(Net {
            arch: arch.clone(),
            layers: arch.layers(),
            mix: Mixture::of(arch),
        })
    }

    fn check_params(&self, params: &[f32]) -> Result<()> {
        let n = self.arch.param_count();
        if params.len() != n {
            return Err(Error::config(format!(
                "parameter buffer has {} values but the architecture needs {n}",
                params.len()
            )));
        }
        Ok(())
    }

    fn check_data(&self, x: &[f32], y: Option<&[f32]>, rows: usize) -> Result<()> {
        if x.len() != rows * self.arch.inputs {
            return Err(Error::config(format!(
                "input buffer has {} values, expected {rows} rows x {} features",
                x.len(),
                self.arch.inputs
            )));
        }
        if let Some(y) = y
            && y.len() != rows * self.arch.targets
        {
            return Err(Error::config(format!(
                "target buffer has {} values, expected {rows} rows x {} targets",
                y.len(),
                self.arch.targets
            )));
        }
        Ok(())
    }
}

/// Work buffers for up to `cap` rows.
struct Workspace {
    cap: usize,
    /// Gathered batch inputs and targets.
    x: Vec<f32>,
    y: Vec<f32>,
    /// Output of every layer (after the activation for hidden layers; the head's raw outputs
    /// last), `cap * width` each, in one buffer.
    acts: Activations,
    /// Gradient with respect to the current layer's pre-activation, and the one below.
    delta: Vec<f32>,
    delta_below: Vec<f32>,
    /// The mixture head's working space ([`Mixture::loglik_rows`]).
    scratch: Vec<f64>,
    /// Each row's log-likelihood.
    ll: Vec<f64>,
}

impl Workspace {
    fn new(net: &Net, cap: usize) -> Workspace {
        let maxw = net.arch.max_width();
        Workspace {
            cap,
            x: vec![0.0; cap * net.arch.inputs],
            y: vec![0.0; cap * net.arch.targets],
            acts: Activations::new(net, cap),
            delta: vec![0.0; cap * maxw],
            delta_below: vec![0.0; cap * maxw],
            scratch: Vec::new(),
            ll: Vec::with_capacity(cap),
        }
    }
}

/// Every layer's outputs for up to `cap` rows, layer after layer in one flat buffer.
struct Activations {
    buf: Vec<f32>,
    /// Start of layer l's outputs; the last entry is the buffer's length.
    offsets: Vec<usize>,
}

impl Activations {
    fn new(net: &Net, cap: usize) -> Activations {
        let mut offsets = vec![0];
        for l in &net.layers {
            offsets.push(offsets.last().unwrap() + cap * l.outputs);
        }
        Activations {
            buf: vec![0.0; *offsets.last().unwrap()],
            offsets,
        }
    }

    /// Layer l's outputs.
    fn layer(&self, l: usize) -> &[f32] {
        &self.buf[self.offsets[l]..self.offsets[l + 1]]
    }

    /// The head's outputs.
    fn head(&self) -> &[f32] {
        self.layer(self.offsets.len() - 2)
    }

    /// Layer l - 1's outputs (empty for l = 0) and layer l's, for writing.
    fn below_and_out(&mut self, l: usize) -> (&[f32], &mut [f32]) {
        let (below, rest) = self.buf.split_at_mut(self.offsets[l]);
        let below = if l == 0 {
            &below[..0]
        } else {
            &below[self.offsets[l - 1]..]
        };
        (below, &mut rest[..self.offsets[l + 1] - self.offsets[l]])
    }
}

/// The kernels that multiply the dense layers: mdn's own ([`dense`]), unless
/// `MDN_CPU_GEMM=matrixmultiply` asks for that crate's general sgemm, to compare them with
/// `mdn bench`. Both give a row the same bits in any block of rows, so a prediction does not
/// depend on how rows were split over threads.
fn own_kernels() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| std::env::var("MDN_CPU_GEMM").ok().as_deref() != Some("matrixmultiply"))
}

/// `c = a b` (or `c += a b` with `accumulate`) for row-major `c` (m x n), where `a` is m x k and
/// `b` is k x n given by their row and column strides, so transposes cost nothing:
/// `matrixmultiply`'s cache-blocked SIMD sgemm, one thread.
pub(crate) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    c: &mut [f32],
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (a, rsa, csa) = a;
    let (b, rsb, csb) = b;
    // The largest element each operand's strides reach must be in bounds.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    assert!(k == 0 || (last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len()));
    assert!(c.len() >= m * n);
    // SAFETY: the asserts above keep every element sgemm reads (a: m x k, b: k x n at the given
    // strides) and writes (c: m x n, row-major) inside the slices; c does not alias a or b.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            if accumulate { 1.0 } else { 0.0 },
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `out[r][o] = b[o] + sum_i a[r][i] * w[i][o]`.
fn dense_forward(
    a: &[f32],
    w: &[f32],
    b: &[f32],
    rows: usize,
    n_in: usize,
    n_out: usize,
    out: &mut [f32],
) {
    if own_kernels() {
        dense::affine(a, n_in, w, Some(b), rows, n_in, n_out, out);
        return;
    }
    for out_row in out[..rows * n_out].chunks_exact_mut(n_out) {
        out_row.copy_from_slice(b);
    }
    sgemm(rows, n_in, n_out, (a, n_in, 1), (w, n_out, 1), out, true);
}

/// `dw[i][o] = sum_r a[r][i] * dz[r][o]` and `db[o] = sum_r dz[r][o]`, or with `accumulate`
/// those sums added to what `dw` and `db` hold.
#[allow(clippy::too_many_arguments)]
fn dense_weight_grad(
    a: &[f32],
    dz: &[f32],
    rows: usize,
    n_in: usize,
    n_out: usize,
    dw: &mut [f32],
    db: &mut [f32],
    accumulate: bool,
) {
    if !accumulate {
        db.fill(0.0);
    }
    dense::bias_grad(dz, rows, n_out, db);
    if own_kernels() {
        dense::weight_grad(a, dz, rows, n_in, n_out, dw, accumulate);
        return;
    }
    // a^T: element (i, r) of the n_in x rows matrix is a[r * n_in + i].
    sgemm(
        n_in,
        rows,
        n_out,
        (a, 1, n_in),
        (dz, n_out, 1),
        dw,
        accumulate,
    );
}

/// `da[r][i] = sum_o dz[r][o] * w[i][o]`; `wt` is `w` transposed ([`transpose_weights`]).
fn dense_input_grad(
    dz: &[f32],
    w: &[f32],
    wt: &[f32],
    rows: usize,
    layer: &LayerShape,
    da: &mut [f32],
) {
    let (n_in, n_out) = (layer.inputs, layer.outputs);
    if own_kernels() {
        dense::affine(dz, n_out, wt, None, rows, n_out, n_in, da);
        return;
    }
    // w^T: element (o, i) of the n_out x n_in matrix is w[i * n_out + o].
    sgemm(rows, n_out, n_in, (dz, n_out, 1), (w, 1, n_out), da, false);
}

/// Each layer's weights but the first's, transposed into `wt` at the layer's offset, for
/// [`dense_input_grad`] (with mdn's own kernels only).
fn transpose_weights(net: &Net, params: &[f32], wt: &mut [f32]) {
    if !own_kernels() {
        return;
    }
    for layer in &net.layers[1..] {
        let range = layer.weights..layer.weights + layer.weight_count();
        dense::transpose(
            &params[range.clone()],
            layer.inputs,
            layer.outputs,
            &mut wt[range],
        );
    }
}

/// Forward pass of `rows` inputs `x` through every layer into `acts`.
fn forward(net: &Net, params: &[f32], x: &[f32], rows: usize, acts: &mut Activations) {
    for (l, layer) in net.layers.iter().enumerate() {
        let (below, out) = acts.below_and_out(l);
        let input: &[f32] = if l == 0 { x } else { below };
        let out = &mut out[..rows * layer.outputs];
        let w = &params[layer.weights..layer.weights + layer.weight_count()];
        let b = &params[layer.bias..layer.bias + layer.outputs];
        dense_forward(input, w, b, rows, layer.inputs, layer.outputs, out);
        if layer.activated {
            let act = net.arch.activation;
            for v in out.iter_mut() {
                *v = act.apply(*v);
            }
        }
    }
}

/// Each row's log-likelihood into `ll`; when `delta` is given, writes `scale *
/// d(-loglik)/dh` for every row's head outputs into it. `scratch` is working space
/// ([`Mixture::loglik_rows`]).
#[allow(clippy::too_many_arguments)]
fn head(
    net: &Net,
    h: &[f32],
    y: &[f32],
    rows: usize,
    scratch: &mut Vec<f64>,
    ll: &mut Vec<f64>,
    delta: Option<&mut [f32]>,
    scale: f64,
) {
    let (p, d) = (net.mix.width(), net.arch.targets);
    ll.resize(rows, 0.0);
    net.mix.loglik_rows(
        &h[..rows * p],
        &y[..rows * d],
        rows,
        &mut ll[..rows],
        delta,
        scale,
        scratch,
    );
}

/// Backward pass of `rows` rows with inputs `x`: from `delta` (gradient at the head
/// outputs, `rows * P`) to `grad` (flat layout; overwritten, or added to with `accumulate`).
/// `wt` holds the transposed weights ([`transpose_weights`]); `delta_below` is working
/// space. The L2 term is added once per batch by [`l2_term`].
#[allow(clippy::too_many_arguments)]
fn backward(
    net: &Net,
    params: &[f32],
    wt: &[f32],
    x: &[f32],
    rows: usize,
    acts: &Activations,
    delta: &mut Vec<f32>,
    delta_below: &mut Vec<f32>,
    grad: &mut [f32],
    accumulate: bool,
) {
    let act: Activation = net.arch.activation;
    for l in (0..net.layers.len()).rev() {
        let layer = net.layers[l];
        let input: &[f32] = if l == 0 { x } else { acts.layer(l - 1) };
        let (dw, db) =
            grad[layer.weights..layer.bias + layer.outputs].split_at_mut(layer.weight_count());
        let (n_in, n_out) = (layer.inputs, layer.outputs);
        dense_weight_grad(input, delta, rows, n_in, n_out, dw, db, accumulate);
        if l > 0 {
            let w = layer.weights..layer.weights + layer.weight_count();
            dense_input_grad(delta, &params[w.clone()], &wt[w], rows, &layer, delta_below);
            // Through the activation of the layer below (its outputs are acts[l - 1]).
            let a = &acts.layer(l - 1)[..rows * n_in];
            for (d, &av) in delta_below[..rows * n_in].iter_mut().zip(a) {
                *d *= act.derivative_from_output(av);
            }
            std::mem::swap(delta, delta_below);
        }
    }
}

/// Adds `2 * l2 * W` to the kernel gradients; returns `l2 * sum(W^2)`.
fn l2_term(net: &Net, params: &[f32], grad: &mut [f32], l2: f32) -> f64 {
    if l2 == 0.0 {
        return 0.0;
    }
    let mut penalty = 0.0f64;
    for layer in &net.layers {
        let range = layer.weights..layer.weights + layer.weight_count();
        for (g, &w) in grad[range.clone()].iter_mut().zip(&params[range]) {
            *g += 2.0 * l2 * w;
            penalty += (w as f64) * (w as f64);
        }
    }
    l2 as f64 * penalty
}

/// Scales `grad` down to Euclidean norm `max_norm` when it is longer (`max_norm` 0: off).
fn clip(grad: &mut [f32], max_norm: f32) {
    if max_norm <= 0.0 {
        return;
    }
    let norm = grad
        .iter()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt();
    if norm > max_norm as f64 {
        let scale = (max_norm as f64 / norm) as f32;
        grad.iter_mut().for_each(|g| *g *= scale);
    }
}

/// One Adam step over the flat buffers.
fn adam(params: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: &AdamStepConstants) {
    for i in 0..params.len() {
        let g = grad[i];
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g;
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g * g;
        let m_hat = m[i] * c.bias1;
        let v_hat = v[i] * c.bias2;
        params[i] -= c.lr * m_hat / (v_hat.sqrt() + c.eps);
    }
}

/// Per-row log-likelihoods (when `per_row`) and their sum over a whole data set, in blocks of
/// `parts.len() * EVAL_CHUNK` rows.
fn eval_loglik(
    net: &Net,
    params: &[f32],
    parts: &mut [Part],
    pool: Option<&rayon::ThreadPool>,
    x: &[f32],
    y: &[f32],
    rows: usize,
    mut per_row: Option<&mut Vec<f64>>,
) -> f64 {
    let (d_in, d_out) = (net.arch.inputs, net.arch.targets);
    let block = parts.len() * EVAL_CHUNK;
    let mut sum = 0.0;
    let mut start = 0;
    while start < rows {
        let n = (rows - start).min(block);
        let fill = |ws: &mut Workspace, r: Range<usize>| {
            copy_rows(ws, x, y, d_in, d_out, r.start + start..r.end + start)
        };
        run_parts(
            net,
            params,
            parts,
            pool,
            n,
            Pass::Loglik {
                per_row: per_row.is_some(),
            },
            &fill,
        );
        for part in parts.iter() {
            sum += part.ll;
            if let Some(out) = per_row.as_deref_mut() {
                out.extend_from_slice(&part.rows_ll);
            }
        }
        start += n;
    }
    sum
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".to_string()
    }

    fn identity(&self) -> String {
        let t = self.threads;
        format!("cpu, {t} thread{}", if t == 1 { "" } else { "s" })
    }

    fn start<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[f32],
        train: DataRef<'_>,
        val: Option<DataRef<'_>>,
    ) -> Result<Box<dyn TrainRun + 'a>> {
        let net = Net::new(arch)?;
        net.check_params(params)?;
        net.check_data(train.x, Some(train.y), train.rows)?;
        if let Some(v) = &val {
            net.check_data(v.x, Some(v.y), v.rows)?;
        }
        let n = params.len();
        Ok(Box::new(CpuRun {
            pool: self.pool.as_ref(),
            run: Run {
                params: params.to_vec(),
                best: params.to_vec(),
                grad: vec![0.0; n],
                adam: AdamState::new(n),
                train_x: train.x.to_vec(),
                train_y: train.y.to_vec(),
                train_rows: train.rows,
                val: val.map(|v| (v.x.to_vec(), v.y.to_vec(), v.rows)),
                // Sized for the first batch; grown on demand.
                parts: parts_for(&net, self.threads, 256),
                epoch: None,
                saved: None,
                net,
            },
        }))
    }

    fn start_stream<'a>(
        &'a mut self,
        arch: &Arch,
        params: &[f32],
        val: Option<DataRef<'_>>,
        _chunk_rows: usize,
    ) -> Result<Box<dyn TrainRun + 'a>> {
        self.start(
            arch,
            params,
            DataRef {
                x: &[],
                y: &[],
                rows: 0,
            },
            val,
        )
    }

    fn forward(&mut self, arch: &Arch, params: &[f32], x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let net = Net::new(arch)?;
        net.check_params(params)?;
        net.check_data(x, None, rows)?;
        let p = arch.head_width();
        let mut parts = parts_for(&net, self.threads, rows.min(self.threads * EVAL_CHUNK));
        let block = parts.len() * EVAL_CHUNK;
        let mut out = Vec::with_capacity(rows * p);
        let mut start = 0;
        while start < rows {
            let n = (rows - start).min(block);
            let fill = |ws: &mut Workspace, r: Range<usize>| {
                copy_rows(ws, x, &[], arch.inputs, 0, r.start + start..r.end + start)
            };
            run_parts(
                &net,
                params,
                &mut parts,
                self.pool.as_ref(),
                n,
                Pass::Forward,
                &fill,
            );
            for (part, range) in parts.iter().zip(split_rows(n, parts.len())) {
                out.extend_from_slice(&part.ws.acts.head()[..range.len() * p]);
            }
            start += n;
        }
        Ok(out)
    }

    fn loglik(
        &mut self,
        arch: &Arch,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        rows: usize,
    ) -> Result<Vec<f64>> {
        let net = Net::new(arch)?;
        net.check_params(params)?;
        net.check_data(x, Some(y), rows)?;
        let mut parts = parts_for(&net, self.threads, rows.min(self.threads * EVAL_CHUNK));
        let mut out = Vec::with_capacity(rows);
        eval_loglik(
            &net,
            params,
            &mut parts,
            self.pool.as_ref(),
            x,
            y,
            rows,
            Some(&mut out),
        );
        Ok(out)
    }

    fn loss_grad(
        &mut self,
        arch: &Arch,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        rows: usize,
        l2: f32,
    ) -> Result<LossGrad> {
        let net = Net::new(arch)?;
        net.check_params(params)?;
        net.check_data(x, Some(y), rows)?;
        if rows == 0 {
            return Err(Error::config("loss_grad needs at least one row"));
        }
        let mut parts = parts_for(&net, self.threads, rows);
        let fill =
            |ws: &mut Workspace, r: Range<usize>| copy_rows(ws, x, y, arch.inputs, arch.targets, r);
        run_parts(
            &net,
            params,
            &mut parts,
            self.pool.as_ref(),
            rows,
            Pass::Gradient {
                scale: 1.0 / rows as f64,
            },
            &fill,
        );
        let ll: f64 = parts.iter().map(|p| p.ll).sum();
        let mut grad = vec![0.0; params.len()];
        sum_grads(&parts, &mut grad);
        let penalty = l2_term(&net, params, &mut grad, l2);
        Ok(LossGrad {
            nll: -ll / rows as f64,
            penalty,
            grad,
        })
    }

    fn adam_step(
        &mut self,
        params: &mut [f32],
        grad: &[f32],
        state: &mut AdamState,
        cfg: &StepConfig,
    ) -> Result<()> {
        state.check_lengths(params, grad)?;
        state.step += 1;
        let c = AdamStepConstants::new(cfg, state.step);
        adam(params, grad, &mut state.m, &mut state.v, &c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clipping_scales_to_the_threshold_only_when_longer() {
        let mut g = vec![3.0f32, 4.0];
        clip(&mut g, 10.0);
        assert_eq!(g, vec![3.0, 4.0]);
        clip(&mut g, 1.0);
        assert!(
            (g[0] - 0.6).abs() < 1e-7 && (g[1] - 0.8).abs() < 1e-7,
            "{g:?}"
        );
        clip(&mut g, 0.0);
        assert!((g[0] - 0.6).abs() < 1e-7, "0 turns clipping off");
    }
}
