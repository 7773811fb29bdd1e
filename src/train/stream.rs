//! Training one network on rows read from a [`RowSource`] window by window, so that memory
//! holds a few chunks, the validation set and the model, whatever the file's size.
//!
//! One pass first computes the standardisation (in f64, training rows only), collects the
//! validation rows (held out from the source by [`ValidationSplit`], or all of `val` when
//! given) and a sample of up to a million targets for the initial component means. Each epoch
//! then reads the chunks in a new random order; the training rows of each window of
//! `window_chunks` chunks are shuffled together and fed to the backend in batches, rows left
//! over carrying into the next window. The epochs themselves are the shared loop's.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::epochs::{self, Resume};
use super::init::Setup;
use super::options::{TrainOptions, check_columns, check_options};
use super::split::ValidationSplit;
use super::{Checkpointer, STREAM_INIT, TrainEvent, rng_for};
use crate::backend::{Backend, EpochStats, StepConfig, TrainRun};
use crate::data::{Dataset, RowSource};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::scaler::{ColumnStats, Scaler};

/// How streamed training reads its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamOptions {
    /// Rows read from the file at a time.
    pub chunk_rows: usize,
    /// Chunks shuffled together: each epoch visits the chunks in a new random order, and the
    /// training rows of `window_chunks` consecutive chunks of that order are shuffled
    /// together before they are cut into batches.
    pub window_chunks: usize,
    /// Validation rows kept in memory at most (the split holds out fewer rows when
    /// `--val-fraction` would hold out more).
    pub max_val_rows: usize,
    /// Held-out fraction when no separate validation set is given.
    pub val_fraction: f64,
    /// Rows the backend receives per upload (a GPU's chunk buffers hold this many) [default:
    /// a window's rows and a batch].
    pub device_chunk_rows: Option<usize>,
}

impl StreamOptions {
    /// The fraction of `rows` rows held out for validation: `val_fraction`, or less where
    /// that would be more than `max_val_rows` rows.
    pub fn val_fraction_for(&self, rows: usize) -> f64 {
        if self.val_fraction * rows as f64 > self.max_val_rows as f64 {
            self.max_val_rows as f64 / rows as f64
        } else {
            self.val_fraction
        }
    }

    /// Sizes chosen so that streamed training's data stays within `budget_bytes` for rows of
    /// `row_floats` values: the validation set takes a sixteenth (it is held three times: as
    /// read, standardised, and by the backend), and the rest goes to chunks, of which a
    /// window of 4 and one chunk being read are held about three times each (as read,
    /// standardised, shuffled).
    pub fn for_budget(budget_bytes: usize, row_floats: usize, val_fraction: f64) -> StreamOptions {
        let window_chunks = 4;
        let row_bytes = 4 * row_floats.max(1);
        let max_val_rows = (budget_bytes / 16 / row_bytes / 3).max(1000);
        let chunk_bytes = (budget_bytes - budget_bytes / 16) / (3 * window_chunks + 3);
        let chunk_rows = (chunk_bytes / row_bytes).max(256);
        StreamOptions {
            chunk_rows,
            window_chunks,
            max_val_rows,
            val_fraction,
            device_chunk_rows: Some(chunk_rows),
        }
    }
}

/// Trains a model on rows read from `source` window by window (see [`StreamOptions`]), so that
/// memory holds a few chunks, the validation set and the model, whatever the file's size.
///
/// One pass first computes the standardisation (in f64, training rows only), collects the
/// validation rows (held out from `source` by [`ValidationSplit`], or all of `val` when
/// given) and a sample of up to a million targets for the initial component means. Each epoch
/// then reads the chunks in a new random order; the training rows of each window of
/// `window_chunks` chunks are shuffled together and fed to the backend in batches, rows left
/// over carrying into the next window.
pub fn train_stream(
    backend: &mut dyn Backend,
    source: &mut dyn RowSource,
    val: Option<&Dataset>,
    stream: &StreamOptions,
    opts: &TrainOptions,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    train_stream_with(backend, source, val, stream, opts, None, None, observer)
}

/// [`train_stream`], continuing from a checkpoint's state and writing checkpoints, as
/// [`super::train_with`] does in memory.
#[allow(clippy::too_many_arguments)]
pub fn train_stream_with(
    backend: &mut dyn Backend,
    source: &mut dyn RowSource,
    val: Option<&Dataset>,
    stream: &StreamOptions,
    opts: &TrainOptions,
    resume: Option<Resume>,
    checkpointer: Option<Checkpointer<'_>>,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<Model> {
    let shape = Shape::of(source, stream);
    check_columns(&shape.features, &shape.targets, val)?;
    // Every row read from here on has its targets in units of z = g(y).
    let transforms = opts.transforms.clone();
    let mut transformed = Transformed {
        inner: source,
        transforms: &transforms,
    };
    let source: &mut dyn RowSource = &mut transformed;
    let val_z = match val {
        Some(v) if !crate::transform::all_none(&transforms) => {
            let y = crate::model::transformed_targets(&v.path, &v.targets, &transforms, &v.y)?;
            Some(Dataset {
                y: y.into_owned(),
                ..v.clone()
            })
        }
        _ => None,
    };
    let val = val_z.as_ref().or(val);
    let fraction = held_out_fraction(stream, val.is_some(), shape.rows)?;
    let split = opts.validation_split(fraction, shape.rows);
    let first = first_pass(source, &shape, &split, opts, observer)?;
    let val = val.or(first.held.as_ref());
    if fraction > 0.0 && val.is_none() {
        return Err(Error::config(format!(
            "{}: {} rows are too few to hold out a validation fraction of {fraction}",
            shape.path.display(),
            shape.rows
        )));
    }
    let train_rows = first.train_rows;
    check_options(train_rows, &shape.path, val, opts)?;
    let mut setup = Setup::new(
        &shape.path,
        &shape.features,
        &shape.targets,
        &first.x_stats,
        &first.y_stats,
        opts,
    )?;
    setup.log_jacobian = (
        first.log_jacobian,
        val.map_or(0.0, |v| {
            crate::transform::mean_log_jacobian(&setup.transforms, &v.y, v.d_out())
        }),
    );
    let val_std = val.map(|v| {
        (
            setup.x_scaler.apply(&v.x),
            setup.y_scaler.apply(&v.y),
            v.rows,
        )
    });
    let params = setup.initial_params(&setup.y_scaler.apply(&first.sample), opts.seed);
    let window_rows = shape.chunk_rows * stream.window_chunks.max(1);
    let mut run = backend.start_stream(
        &setup.arch,
        &params,
        super::init::val_ref(&val_std),
        stream
            .device_chunk_rows
            .unwrap_or(window_rows + opts.step.batch_size),
    )?;
    let mut windows = Windows {
        source: &mut *source,
        shape: &shape,
        split: &split,
        window_chunks: stream.window_chunks.max(1),
        batch: opts.step.batch_size,
        train_rows,
        x_scaler: setup.x_scaler.clone(),
        y_scaler: setup.y_scaler.clone(),
    };
    let mut epoch = |be: &mut dyn TrainRun,
                     epoch: usize,
                     step: &StepConfig,
                     shuffle_rng: &mut ChaCha8Rng,
                     obs: &mut dyn FnMut(&TrainEvent) -> bool| {
        windows.epoch(be, epoch, step, shuffle_rng, obs)
    };
    let ended = epochs::run_one(
        run.as_mut(),
        &mut epoch,
        &setup,
        opts,
        resume,
        checkpointer,
        &shape.path,
        train_rows,
        observer,
    )?;
    drop(run);
    // Without validation rows, the diagnostics look at the file's first rows.
    let head;
    let usage_rows = match val {
        Some(v) => v,
        None => {
            head = shape.head(source, 100_000)?;
            &head
        }
    };
    let counts = (train_rows, val.map_or(0, |v| v.rows));
    let mut models = epochs::models(
        ended,
        &setup,
        backend,
        opts,
        &[opts.seed],
        counts,
        usage_rows,
    )?;
    Ok(models.pop().expect("one model"))
}

/// The source's size and columns, and the chunks it is read in.
struct Shape {
    rows: usize,
    d_in: usize,
    d_out: usize,
    chunk_rows: usize,
    n_chunks: usize,
    features: Vec<String>,
    targets: Vec<String>,
    path: std::path::PathBuf,
}

impl Shape {
    fn of(source: &dyn RowSource, stream: &StreamOptions) -> Shape {
        let rows = source.rows();
        let chunk_rows = stream.chunk_rows.max(1);
        Shape {
            rows,
            d_in: source.features().len(),
            d_out: source.targets().len(),
            chunk_rows,
            n_chunks: rows.div_ceil(chunk_rows),
            features: source.features().to_vec(),
            targets: source.targets().to_vec(),
            path: source.path().to_path_buf(),
        }
    }

    /// Chunk `c`'s first row and its number of rows.
    fn chunk(&self, c: usize) -> (usize, usize) {
        let start = c * self.chunk_rows;
        (start, (self.rows - start).min(self.chunk_rows))
    }

    /// The source's first `n` rows (at most) as a data set.
    fn head(&self, source: &mut dyn RowSource, n: usize) -> Result<Dataset> {
        let n = self.rows.min(n);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        source.read(0, n, &mut x, &mut y)?;
        Ok(Dataset {
            path: self.path.clone(),
            features: self.features.clone(),
            targets: self.targets.clone(),
            x,
            y,
            rows: n,
        })
    }
}

/// The fraction held out for validation: none when a validation set is given, else
/// `--val-fraction`, made small enough that the validation rows fit in memory.
fn held_out_fraction(stream: &StreamOptions, val_given: bool, rows: usize) -> Result<f64> {
    let fraction = if val_given { 0.0 } else { stream.val_fraction };
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::config(format!(
            "--val-fraction must be in [0, 1), got {fraction}"
        )));
    }
    Ok(if fraction > 0.0 {
        stream.val_fraction_for(rows)
    } else {
        fraction
    })
}

/// What the first pass over the source learns.
struct FirstPass {
    x_stats: ColumnStats,
    y_stats: ColumnStats,
    /// The held-out validation rows (none when nothing is held out).
    held: Option<Dataset>,
    /// Up to a million training targets (a reservoir sample), for the initial means.
    sample: Vec<f32>,
    train_rows: usize,
    /// The mean ln |dz/dy| of the training rows' target transforms.
    log_jacobian: f64,
}

/// Pass 1: the training rows' statistics, the validation rows, a sample of targets.
fn first_pass(
    source: &mut dyn RowSource,
    shape: &Shape,
    split: &ValidationSplit,
    opts: &TrainOptions,
    observer: &mut dyn FnMut(&TrainEvent) -> bool,
) -> Result<FirstPass> {
    let seed = opts.seed;
    let mut jacobian = 0.0;
    const SAMPLE: usize = 1_000_000;
    let (d_in, d_out) = (shape.d_in, shape.d_out);
    let mut x_stats = ColumnStats::new(d_in);
    let mut y_stats = ColumnStats::new(d_out);
    let (mut vx, mut vy) = (Vec::new(), Vec::new());
    let mut sample: Vec<f32> = Vec::new();
    let mut sample_rng = rng_for(seed, STREAM_INIT + 100);
    let (mut cx, mut cy) = (Vec::new(), Vec::new());
    let mut train_rows = 0usize;
    for c in 0..shape.n_chunks {
        let (start, n) = shape.chunk(c);
        cx.clear();
        cy.clear();
        source.read(start, n, &mut cx, &mut cy)?;
        for r in 0..n {
            let (x, y) = (
                &cx[r * d_in..(r + 1) * d_in],
                &cy[r * d_out..(r + 1) * d_out],
            );
            if split.contains((start + r) as u64) {
                vx.extend_from_slice(x);
                vy.extend_from_slice(y);
                continue;
            }
            x_stats.push(x);
            y_stats.push(y);
            jacobian += crate::transform::row_log_jacobian(&opts.transforms, y);
            train_rows += 1;
            // Reservoir sample of the targets.
            if sample.len() < SAMPLE * d_out {
                sample.extend_from_slice(y);
            } else {
                let k = sample_rng.random_range(0..train_rows);
                if k < SAMPLE {
                    sample[k * d_out..(k + 1) * d_out].copy_from_slice(y);
                }
            }
        }
        if !observer(&TrainEvent::Rows {
            epoch: 0,
            done: start + n,
            total: shape.rows,
        }) {
            return Err(Error::Interrupted(
                "interrupted while reading the data; no model was written".into(),
            ));
        }
    }
    let held = (!vy.is_empty()).then(|| Dataset {
        path: shape.path.clone(),
        features: shape.features.clone(),
        targets: shape.targets.clone(),
        rows: vy.len() / d_out.max(1),
        x: vx,
        y: vy,
    });
    Ok(FirstPass {
        x_stats,
        y_stats,
        held,
        sample,
        train_rows,
        log_jacobian: jacobian / train_rows.max(1) as f64,
    })
}

/// A source whose rows come with their targets mapped by `transforms` (z = g(y)); a value
/// outside its transform's support is an error naming its row.
struct Transformed<'s> {
    inner: &'s mut dyn RowSource,
    transforms: &'s [crate::transform::Transform],
}

impl RowSource for Transformed<'_> {
    fn path(&self) -> &std::path::Path {
        self.inner.path()
    }
    fn rows(&self) -> usize {
        self.inner.rows()
    }
    fn features(&self) -> &[String] {
        self.inner.features()
    }
    fn targets(&self) -> &[String] {
        self.inner.targets()
    }
    fn read(&mut self, start: usize, n: usize, x: &mut Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        let at = y.len();
        self.inner.read(start, n, x, y)?;
        let d = self.inner.targets().len();
        crate::transform::forward_rows(self.transforms, &mut y[at..], d).map_err(|(r, j, v)| {
            crate::model::outside_support(
                self.inner.path(),
                self.inner.targets(),
                self.transforms,
                (start + r, j, v),
            )
        })
    }
}

/// A streamed epoch: the chunks in a new random order, read a window at a time, the window's
/// training rows standardised and shuffled together and fed to the backend in whole batches,
/// the rows left over carried into the next window (and the last ones fed at the end).
struct Windows<'s> {
    source: &'s mut dyn RowSource,
    shape: &'s Shape,
    split: &'s ValidationSplit,
    window_chunks: usize,
    batch: usize,
    train_rows: usize,
    x_scaler: Scaler,
    y_scaler: Scaler,
}

impl Windows<'_> {
    fn epoch(
        &mut self,
        be: &mut dyn TrainRun,
        epoch: usize,
        step: &StepConfig,
        shuffle_rng: &mut ChaCha8Rng,
        obs: &mut dyn FnMut(&TrainEvent) -> bool,
    ) -> Result<Option<EpochStats>> {
        let (d_in, d_out, b) = (self.shape.d_in, self.shape.d_out, self.batch);
        let mut order: Vec<usize> = (0..self.shape.n_chunks).collect();
        order.shuffle(shuffle_rng);
        be.begin_epoch(self.train_rows, step)?;
        // Carried rows (fewer than a batch) and the window being assembled, standardised.
        let (mut wx, mut wy) = (Vec::new(), Vec::new());
        let (mut sx, mut sy) = (Vec::new(), Vec::new());
        let mut done = 0;
        for window in order.chunks(self.window_chunks) {
            let (mut rx, mut ry) = self.read_window(window)?;
            self.x_scaler.apply_in_place(&mut rx);
            self.y_scaler.apply_in_place(&mut ry);
            let mut perm: Vec<u32> = (0..(ry.len() / d_out) as u32).collect();
            perm.shuffle(shuffle_rng);
            for &i in &perm {
                let i = i as usize;
                wx.extend_from_slice(&rx[i * d_in..(i + 1) * d_in]);
                wy.extend_from_slice(&ry[i * d_out..(i + 1) * d_out]);
            }
            let full = (wy.len() / d_out) / b * b;
            if full > 0 {
                be.train_chunk(&wx[..full * d_in], &wy[..full * d_out], full)?;
                done += full;
                sx.clear();
                sy.clear();
                sx.extend_from_slice(&wx[full * d_in..]);
                sy.extend_from_slice(&wy[full * d_out..]);
                std::mem::swap(&mut wx, &mut sx);
                std::mem::swap(&mut wy, &mut sy);
            }
            if !obs(&TrainEvent::Rows {
                epoch,
                done,
                total: self.train_rows,
            }) {
                return Ok(None);
            }
        }
        let rest = wy.len() / d_out.max(1);
        if rest > 0 {
            be.train_chunk(&wx, &wy, rest)?;
        }
        be.end_epoch().map(Some)
    }

    /// The training rows of a window's chunks, as read.
    fn read_window(&mut self, window: &[usize]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (d_in, d_out) = (self.shape.d_in, self.shape.d_out);
        let (mut rx, mut ry) = (Vec::new(), Vec::new());
        let (mut cx, mut cy) = (Vec::new(), Vec::new());
        for &c in window {
            let (start, n) = self.shape.chunk(c);
            self.source.read(start, n, &mut cx, &mut cy)?;
            for r in 0..n {
                if !self.split.contains((start + r) as u64) {
                    rx.extend_from_slice(&cx[r * d_in..(r + 1) * d_in]);
                    ry.extend_from_slice(&cy[r * d_out..(r + 1) * d_out]);
                }
            }
            cx.clear();
            cy.clear();
        }
        Ok((rx, ry))
    }
}
