//! The `mdn` command line: a thin layer over the library. It parses options, reads files,
//! shows progress, prints results, and is the only place that turns errors into messages and
//! exit codes (2 for input the user can fix, 1 for anything else).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use mdn::atomic::write_atomic;
use mdn::backend::{self, Backend, DeviceChoice, StepConfig};
use mdn::data::RowSource;
use mdn::data::{ColumnChoice, Dataset, read_csv_from, read_data};
use mdn::layout::{Activation, Covariance, DEFAULT_SIGMA_FLOOR};
use mdn::model::Model;
use mdn::train::{EpochReport, Stopping, TrainEvent, TrainOptions, split_validation, train};
use mdn::{Error, Result};

/// The example data set `mdn train` uses without `--data` (Bishop's inverse problem).
const EXAMPLE_CSV: &[u8] = include_bytes!("../assets/bishop.csv");
const EXAMPLE_NAME: &str = "assets/bishop.csv";

#[derive(Parser)]
#[command(
    name = "mdn",
    version,
    about = "Train and use Mixture Density Networks: conditional densities p(y | x)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Train a model on a CSV file (without --data: the shipped example, Bishop's inverse problem)
    Train(TrainArgs),
    /// Mean negative log-likelihood of a model on a CSV file (original units of the targets)
    Eval(EvalArgs),
    /// Mixture weights, means, standard deviations and the mixture mean for every row
    Predict(PredictArgs),
    /// Draw samples of the targets from the predicted mixture for every row
    Sample(SampleArgs),
    /// List the compute devices mdn can use
    Devices(DevicesArgs),
    /// Check a GPU against the CPU reference, kernel by kernel (exit code 1 on any failure)
    Check(CheckArgs),
    /// Training speed of each backend on generated data, next to the device's matmul ceiling
    Bench(BenchArgs),
    /// Choose K, L2, hidden widths and covariance by k-fold cross-validation, then train the
    /// chosen model
    Select(SelectArgs),
    /// Convert a CSV file to .npy (float32) row by row, writing its column names beside it
    Convert(ConvertArgs),
    /// Write a generated data set (bishop, wide or correlated) of any size to CSV or .npy
    Generate(GenerateArgs),
    /// Draw a model as PNG or SVG: conditional density map with the data (one-input models),
    /// PIT histogram, reliability curve, training curve
    Plot(PlotArgs),
}

#[derive(Args)]
struct PlotArgs {
    /// Model file written by `mdn train`
    #[arg(long, default_value = "model.json")]
    model: PathBuf,
    /// CSV or .npy with the model's feature and target columns [default: the shipped example,
    /// for a model with its columns (x -> t)]
    #[arg(long)]
    data: Option<PathBuf>,
    /// The figure: a file name ending in .png or .svg
    #[arg(long, default_value = "model.png")]
    out: PathBuf,
    /// Which panels: all (those that apply), density, pit, reliability or history
    #[arg(long, value_enum, default_value = "all")]
    panel: mdn::plot::Panel,
    /// Target for the density map and the PIT histogram [default: the first]
    #[arg(long)]
    target: Option<String>,
    /// Figure size, WIDTHxHEIGHT in pixels [default: from the number of panels]
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    #[command(flatten)]
    device: DeviceArg,
    /// No messages
    #[arg(long, short)]
    quiet: bool,
}

fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("'{s}' is not a size like 1200x900");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

#[derive(Args)]
struct SelectArgs {
    #[command(flatten)]
    cols: DataColumns,
    /// Numbers of components to compare
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,5,8")]
    components: Vec<usize>,
    /// Covariance shapes to compare (diagonal, full or both: "diagonal,full")
    #[arg(long, value_enum, value_delimiter = ',', default_value = "diagonal")]
    covariance: Vec<Covariance>,
    /// L2 strengths to compare
    #[arg(long, value_delimiter = ',', default_value = "0")]
    l2: Vec<f32>,
    /// Hidden layer widths to compare, ';'-separated settings of ','-separated widths
    /// (e.g. "32;64,64")
    #[arg(long, default_value = "64")]
    hidden: String,
    /// Folds of the cross-validation
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// How each model is fitted; --val-fraction is taken from the training folds
    #[command(flatten)]
    fit: FitArgs,
    /// Where the chosen model goes
    #[arg(long, default_value = "model.json")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArg,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// The table as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConvertArgs {
    /// CSV file with a header row
    input: PathBuf,
    /// Output file: .npy (column names go to OUTPUT.columns.json) or .csv
    output: PathBuf,
    /// Columns to keep, in this order, by name or 0-based index [default: all]
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Which problem: bishop (d=1, D=1), wide (d=16, D=2) or correlated (d=1, D=3, one
    /// Gaussian with strongly correlated targets)
    #[arg(long, value_enum, default_value = "wide")]
    kind: mdn::synth::Kind,
    /// Rows to write
    #[arg(long)]
    rows: usize,
    /// Output file, .npy or .csv (targets are the last columns)
    #[arg(long)]
    out: PathBuf,
    /// Seed of the generator
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Configurations: a (d=1, hidden 64, batch 256, 100k rows, 5 epochs), a4096 (the same at
    /// batch 4096), b (d=16, D=2, hidden 64,64, batch 4096, 1M rows, 2 epochs), b256 (the same
    /// at batch 256), c (d=1, D=3 correlated, full covariance, K=3, hidden 64, batch 1024, 200k
    /// rows, 3 epochs), cdiag (the same with diagonal covariance)
    #[arg(long, value_delimiter = ',', default_value = "a,a4096,b256,b")]
    config: Vec<String>,
    /// Devices to time, comma-separated
    #[arg(
        long = "devices",
        value_enum,
        value_delimiter = ',',
        default_value = "cpu,auto"
    )]
    devices: Vec<DeviceChoice>,
    /// Rows of generated data (overrides the configuration's)
    #[arg(long)]
    rows: Option<usize>,
    /// Epochs per run (epochs 2.. are timed)
    #[arg(long)]
    epochs: Option<usize>,
    /// CPU thread counts to time, comma-separated [default: 1 and every core]
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

/// `--device`, shared by every command that computes.
#[derive(Args, Clone, Copy)]
struct DeviceArg {
    /// Where to compute: auto (a hardware GPU, else the software adapter, else the CPU), gpu,
    /// software (e.g. Mesa's lavapipe) or cpu
    #[arg(long, value_enum, env = "MDN_DEVICE", default_value = "auto")]
    device: DeviceChoice,
    /// Threads of the CPU backend [default: every core]
    #[arg(long, env = "MDN_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    device: DeviceArg,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    cols: DataColumns,
    /// Where to write the model
    #[arg(long, default_value = "model.json")]
    out: PathBuf,
    /// Hidden layer widths, comma-separated (e.g. 64,64); "none" for no hidden layer
    #[arg(long, default_value = "64", value_parser = parse_hidden)]
    hidden: HiddenWidths,
    /// Number of mixture components K
    #[arg(long, default_value_t = 5)]
    components: usize,
    /// Each component's covariance: diagonal (D standard deviations) or full (a Cholesky
    /// factor with D(D-1)/2 more outputs, for correlated targets; D <= 16)
    #[arg(long, value_enum, default_value_t = Covariance::Diagonal)]
    covariance: Covariance,
    /// L2 penalty on dense kernels (not biases): loss += L2 * sum(W^2)
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    #[command(flatten)]
    fit: FitArgs,
    /// Validation data (instead of holding out --val-fraction of --data)
    #[arg(long)]
    val: Option<PathBuf>,
    /// Run exactly this many epochs, without early stopping, and keep the last parameters
    #[arg(long, conflicts_with_all = ["patience", "max_epochs"])]
    epochs: Option<usize>,
    /// Memory for training data, in MiB: larger .npy files (and CSV files, converted to a
    /// temporary .npy first) are streamed from disk in chunks instead of loaded
    #[arg(long, default_value_t = 512)]
    memory_mb: usize,
    /// Stream the data from disk even when it would fit in memory
    #[arg(long)]
    stream: bool,
    /// Rows read from disk at a time when streaming [default: from --memory-mb]
    #[arg(long)]
    chunk_rows: Option<usize>,
    /// Write the full training state every N epochs (to --checkpoint), to --resume from
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Checkpoint file [default: beside --out, model.json -> model.ckpt.json]
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue the run a checkpoint was written by: its data and options are used, and the
    /// result is bit-identical to an uninterrupted run on the same device and threads
    #[arg(long)]
    resume: Option<PathBuf>,
    /// No progress output
    #[arg(long, short)]
    quiet: bool,
    /// Print a JSON summary of the run on stdout
    #[arg(long)]
    json: bool,
}

/// The training data and its columns (train, select).
#[derive(Args, Clone)]
struct DataColumns {
    /// Data: CSV with a header row, or .npy [default: the shipped example, assets/bishop.csv]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Target column names, comma-separated [default: the last column]
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Feature column names, comma-separated [default: every column that is not a target]
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
}

impl DataColumns {
    fn choice(&self) -> ColumnChoice {
        ColumnChoice::Train {
            targets: (!self.target.is_empty()).then(|| self.target.clone()),
            features: (!self.features.is_empty()).then(|| self.features.clone()),
        }
    }

    /// The whole data set in memory (the shipped example without --data).
    fn read(&self) -> Result<Dataset> {
        match &self.data {
            Some(path) => read_data(path, &self.choice()),
            None => read_csv_from(EXAMPLE_CSV, Path::new(EXAMPLE_NAME), &self.choice()),
        }
    }
}

/// How each model is fitted (train, select).
#[derive(Args, Clone)]
struct FitArgs {
    /// Hidden-layer activation
    #[arg(long, value_enum, default_value_t = Activation::Relu)]
    activation: Activation,
    /// Adam learning rate
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Rows per mini-batch
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Scale each step's gradient down to at most this Euclidean norm (0: no clipping)
    #[arg(long, default_value_t = 0.0)]
    clip_norm: f32,
    /// Fraction of rows held out (chosen by --seed) for validation and early stopping
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Stop when the validation NLL has not improved for this many epochs
    #[arg(long, default_value_t = 10)]
    patience: usize,
    /// Most epochs with early stopping
    #[arg(long, default_value_t = 200)]
    max_epochs: usize,
    /// Seed for initialisation, the validation split, folds and shuffling
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Floor added to every standard deviation, in standardised target units
    #[arg(long, default_value_t = DEFAULT_SIGMA_FLOOR)]
    sigma_floor: f32,
}

impl FitArgs {
    /// Training options with these fitting choices; early stopping unless `epochs` is given.
    fn options(&self, epochs: Option<usize>) -> TrainOptions {
        TrainOptions {
            activation: self.activation,
            sigma_floor: self.sigma_floor,
            step: StepConfig {
                lr: self.lr,
                batch_size: self.batch_size,
                clip_norm: self.clip_norm,
                ..StepConfig::default()
            },
            stopping: match epochs {
                Some(epochs) => Stopping::Fixed { epochs },
                None => Stopping::Early {
                    patience: self.patience,
                    max_epochs: self.max_epochs,
                },
            },
            seed: self.seed,
            ..TrainOptions::default()
        }
    }
}

#[derive(Clone)]
struct HiddenWidths(Vec<usize>);

fn parse_hidden(s: &str) -> std::result::Result<HiddenWidths, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(HiddenWidths(Vec::new()));
    }
    s.split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("'{w}' is not a layer width (a whole number >= 1)")),
        })
        .collect::<std::result::Result<_, _>>()
        .map(HiddenWidths)
}

/// The model and the data a command applies it to.
#[derive(Args)]
struct ModelData {
    /// Model file written by `mdn train`
    #[arg(long, default_value = "model.json")]
    model: PathBuf,
    /// CSV or .npy with the model's feature columns (and, for eval, its target columns);
    /// other columns are ignored
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    io: ModelData,
    /// Print every row's log-likelihood (original units) as well
    #[arg(long)]
    per_row: bool,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PredictArgs {
    /// Quantiles of each target's marginal mixture, comma-separated (e.g. 0.05,0.5,0.95),
    /// computed exactly from the mixture's CDF
    #[arg(long, value_delimiter = ',')]
    quantiles: Vec<f64>,
    /// Central interval of this probability (e.g. 0.9 adds the 0.05 and 0.95 quantiles)
    #[arg(long)]
    interval: Option<f64>,
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    io: ModelData,
    /// Write to this file instead of stdout
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON instead of CSV
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SampleArgs {
    #[command(flatten)]
    device: DeviceArg,
    #[command(flatten)]
    io: ModelData,
    /// Samples per row
    #[arg(long, short, default_value_t = 1)]
    n: usize,
    /// Seed of the sampler
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mixture-weight temperature: weights become pi^(1/T) renormalised (logits / T); below 1
    /// favours the heavier components, towards 0 always the heaviest
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Multiplies every component's standard deviation (below 1: samples closer to the means;
    /// with full covariance it scales the Cholesky factor, keeping the correlations)
    #[arg(long, default_value_t = 1.0)]
    sigma_scale: f64,
    /// Write to this file instead of stdout
    #[arg(long)]
    out: Option<PathBuf>,
    /// JSON instead of CSV
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DevicesArgs {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Predict(a) => cmd_predict(a),
        Command::Sample(a) => cmd_sample(a),
        Command::Devices(a) => cmd_devices(a),
        Command::Check(a) => cmd_check(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Select(a) => cmd_select(a),
        Command::Convert(a) => cmd_convert(a),
        Command::Generate(a) => cmd_generate(a),
        Command::Plot(a) => cmd_plot(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Opens the backend `--device` asks for; says so on stderr when `auto` fell back to the CPU.
fn open_backend(device: DeviceArg, quiet: bool) -> Result<Box<dyn Backend>> {
    let (b, warning) = backend::open(device.device, device.threads.map(|t| t as usize))?;
    if let (Some(w), false) = (warning, quiet) {
        eprintln!("warning: {w}");
    }
    Ok(b)
}

fn cmd_train(mut a: TrainArgs) -> Result<()> {
    // A resumed run takes its data and options from the checkpoint.
    let resume = match &a.resume {
        Some(path) => {
            let c = mdn::checkpoint::Checkpoint::load(path)?;
            a.cols = DataColumns {
                data: c.data.data.clone(),
                target: c.data.target.clone(),
                features: c.data.features.clone(),
            };
            a.val = c.data.val.clone();
            a.fit.val_fraction = c.data.val_fraction;
            a.fit.seed = c.options.seed;
            a.stream = c.data.stream;
            a.chunk_rows = c.data.chunk_rows;
            if c.data.memory_mb > 0 {
                a.memory_mb = c.data.memory_mb;
            }
            a.checkpoint = Some(a.checkpoint.clone().unwrap_or_else(|| path.clone()));
            a.checkpoint_every = Some(a.checkpoint_every.unwrap_or(c.every));
            Some(c)
        }
        None => None,
    };
    let choice = a.cols.choice();
    let mut opts = a.fit.options(a.epochs);
    opts.hidden = a.hidden.0.clone();
    opts.components = a.components;
    opts.covariance = a.covariance;
    opts.step.l2 = a.l2;
    let opts = resume.as_ref().map_or(opts, |c| c.options.clone());
    if a.checkpoint_every == Some(0) {
        return Err(Error::config("--checkpoint-every must be at least 1"));
    }
    if a.memory_mb == 0 {
        return Err(Error::config("--memory-mb must be at least 1"));
    }
    if a.chunk_rows == Some(0) {
        return Err(Error::config("--chunk-rows must be at least 1"));
    }
    // Refuse an unwritable destination before spending time on training.
    check_writable(&a.out)?;
    let budget = a.memory_mb << 20;
    let big = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as usize > budget / 2)
            .unwrap_or(false)
    };
    let streamed = a.stream || a.chunk_rows.is_some() || a.cols.data.as_deref().is_some_and(big);
    // A CSV too large for memory is converted to a temporary .npy (deleted afterwards).
    let mut _converted = None;
    let mut stream_choice = None;
    let stream_path = match &a.cols.data {
        Some(p) if streamed && !mdn::data::is_npy(p) => {
            let tmp = tempfile::Builder::new()
                .prefix("mdn-")
                .suffix(".npy")
                .tempfile()
                .map_err(|e| Error::io(Path::new("temporary file"), e))?;
            if !a.quiet {
                eprintln!(
                    "converting {} to a temporary .npy ({}) to stream it",
                    p.display(),
                    tmp.path().display()
                );
            }
            // The columns are decided once, from the CSV's header, and the temporary file
            // holds exactly them by name (a target given by index must not come back as a
            // feature of the converted file).
            let (f, t) = choice.names(&mdn::data::header(p)?, p)?;
            let columns: Vec<String> = f.iter().chain(&t).cloned().collect();
            stream_choice = Some(ColumnChoice::exactly(f, t));
            mdn::data::convert(p, tmp.path(), Some(&columns), &mut |_| {})?;
            let path = tmp.path().to_path_buf();
            _converted = Some(tmp);
            Some(path)
        }
        Some(p) if streamed => Some(p.clone()),
        None if streamed => return Err(Error::config("--stream needs --data FILE")),
        _ => None,
    };
    let stop = interrupt_flag();
    let mut progress = Progress::new(a.quiet);
    let mut observer = |e: &TrainEvent| {
        progress.event(e);
        !stop.load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut backend = open_backend(a.device, a.quiet)?;
    // Checkpoints (both ways of training): what to write, where, how often.
    let spec = mdn::checkpoint::DataSpec {
        data: a.cols.data.clone(),
        target: a.cols.target.clone(),
        features: a.cols.features.clone(),
        val: a.val.clone(),
        val_fraction: a.fit.val_fraction,
        stream: streamed,
        chunk_rows: a.chunk_rows,
        memory_mb: a.memory_mb,
    };
    let resume_state = resume.map(|c| {
        if !a.quiet {
            eprintln!(
                "resuming after epoch {} from {}",
                c.trainer.completed,
                a.resume.as_deref().unwrap_or(Path::new("")).display()
            );
        }
        mdn::train::Resume {
            trainer: c.trainer,
            state: c.state,
            x_scaler: c.x_scaler,
            y_scaler: c.y_scaler,
        }
    });
    let ckpt_path = a
        .checkpoint
        .clone()
        .unwrap_or_else(|| mdn::checkpoint::Checkpoint::default_path(&a.out));
    let every = a.checkpoint_every.unwrap_or(0);
    let mut write = |b: &mut dyn Backend,
                     st: &mdn::train::LoopState,
                     xs: &mdn::scaler::Scaler,
                     ys: &mdn::scaler::Scaler| {
        mdn::checkpoint::Checkpoint::new(
            spec.clone(),
            opts.clone(),
            every,
            (xs.clone(), ys.clone()),
            b.save_state()?,
            st.clone(),
        )
        .save(&ckpt_path)
    };
    let checkpointer = (every > 0).then_some(mdn::train::Checkpointer {
        every,
        write: &mut write,
    });
    let model = match stream_path {
        Some(path) => {
            let mut source =
                mdn::data::NpySource::open(&path, stream_choice.as_ref().unwrap_or(&choice))?;
            let val = match &a.val {
                Some(v) => Some(read_data(
                    v,
                    &ColumnChoice::Model {
                        features: source.features().to_vec(),
                        targets: source.targets().to_vec(),
                        need_targets: true,
                    },
                )?),
                None => None,
            };
            let row_floats = source.features().len() + source.targets().len();
            let mut sopts =
                mdn::train::StreamOptions::for_budget(budget, row_floats, a.fit.val_fraction);
            if let Some(c) = a.chunk_rows {
                sopts.chunk_rows = c;
            }
            if !a.quiet {
                eprintln!(
                    "streaming {} ({} rows) with the {} backend: [{}] -> [{}], hidden {:?}, K={}{}; chunks of {} rows, {} per shuffle window",
                    a.cols.data.as_deref().unwrap_or(&path).display(),
                    mdn::data::RowSource::rows(&source),
                    backend.name(),
                    source.features().join(", "),
                    source.targets().join(", "),
                    opts.hidden,
                    opts.components,
                    covariance_note(opts.covariance),
                    sopts.chunk_rows,
                    sopts.window_chunks,
                );
            }
            mdn::train::train_stream_with(
                backend.as_mut(),
                &mut source,
                val.as_ref(),
                &sopts,
                &opts,
                resume_state,
                checkpointer,
                &mut observer,
            )
        }
        None => {
            let data = a.cols.read()?;
            let (train_set, val_set) = match &a.val {
                Some(path) => {
                    let val = read_data(
                        path,
                        &ColumnChoice::Model {
                            features: data.features.clone(),
                            targets: data.targets.clone(),
                            need_targets: true,
                        },
                    )?;
                    (data, Some(val))
                }
                None => split_validation(&data, a.fit.val_fraction, a.fit.seed)?,
            };
            if !a.quiet {
                eprintln!(
                    "training on {} ({} rows: {} train, {} validation) with the {} backend: [{}] -> [{}], hidden {:?}, K={}{}",
                    train_set.path.display(),
                    train_set.rows + val_set.as_ref().map_or(0, |v| v.rows),
                    train_set.rows,
                    val_set.as_ref().map_or(0, |v| v.rows),
                    backend.name(),
                    train_set.features.join(", "),
                    train_set.targets.join(", "),
                    opts.hidden,
                    opts.components,
                    covariance_note(opts.covariance),
                );
            }
            mdn::train::train_with(
                backend.as_mut(),
                &train_set,
                val_set.as_ref(),
                &opts,
                resume_state,
                checkpointer,
                &mut observer,
            )
        }
    };
    progress.finish();
    let model = model?;
    model.save(&a.out)?;
    let info = model
        .training
        .as_ref()
        .expect("the trainer records its run");
    if !a.quiet {
        let val = info
            .best_val_nll
            .map(|v| {
                format!(
                    ", validation NLL {v:.4} at epoch {}",
                    info.best_epoch.unwrap_or(0)
                )
            })
            .unwrap_or_default();
        eprintln!(
            "wrote {}: parameters of epoch {} of {} ({}){val}",
            a.out.display(),
            info.saved_epoch,
            info.epochs,
            info.stop_reason
        );
        if let Some(c) = &info.components {
            let w: Vec<String> = c.weights.iter().map(|w| format!("{w:.3}")).collect();
            eprintln!("component weights: {}", w.join(" "));
            if !c.unused.is_empty() {
                eprintln!(
                    "warning: component(s) {:?} are unused (average weight below 1% of an even share): \
                     --components {} would do as well",
                    c.unused,
                    c.weights.len() - c.unused.len()
                );
            }
            for (p, q) in &c.duplicates {
                eprintln!(
                    "warning: components {p} and {q} describe the same distribution (mode collapse)"
                );
            }
        }
    }
    if a.json {
        let last = info.history.last();
        print_json(&json!({
            "model": a.out,
            "backend": info.backend,
            "epochs": info.epochs,
            "saved_epoch": info.saved_epoch,
            "stop_reason": info.stop_reason,
            "best_epoch": info.best_epoch,
            "best_val_nll": info.best_val_nll,
            "final_train_nll": last.map(|e| e.train_nll),
            "train_rows": info.train_rows,
            "val_rows": info.val_rows,
            "components": info.components,
            "recoveries": info.recoveries,
        }))?;
    }
    Ok(())
}

fn check_writable(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the directory to write into does not exist",
            ),
        ));
    }
    if path.is_dir() {
        return Err(Error::config(format!(
            "--out {} is a directory",
            path.display()
        )));
    }
    Ok(())
}

/// Set when the user presses Ctrl-C: training stops after the current window or epoch and
/// saves the best model so far. A second Ctrl-C exits at once.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: finishing up and saving the best model so far (Ctrl-C again to quit now)"
        );
    });
    flag
}

/// Training progress: a bar on a terminal (epochs, NLLs, rows/s, and within a streamed epoch
/// the share done and an ETA), plain lines otherwise, nothing with --quiet.
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    /// Warnings are shown unless --quiet.
    warn: bool,
    last: Option<String>,
    epoch_started: std::time::Instant,
    last_line: std::time::Instant,
    max_epochs: usize,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} epoch {pos}/{len} [{bar:30}] {msg} ({elapsed})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let now = std::time::Instant::now();
        Progress {
            bar,
            lines: !quiet && !terminal,
            warn: !quiet,
            last: None,
            epoch_started: now,
            last_line: now,
            max_epochs: 0,
        }
    }

    fn event(&mut self, e: &TrainEvent) {
        match e {
            TrainEvent::Epoch(r) => self.epoch(r),
            TrainEvent::Rows { epoch, done, total } => self.rows(*epoch, *done, *total),
            TrainEvent::Recovered { epoch, batch, lr } => {
                let at = batch.map(|b| format!(" at batch {b}")).unwrap_or_default();
                let line = format!(
                    "warning: epoch {epoch} produced NaN or infinite values{at}; rolled back and retrying at --lr {lr}"
                );
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None if self.lines || self.warn => eprintln!("{line}"),
                    None => {}
                }
            }
        }
    }

    fn rows(&mut self, epoch: usize, done: usize, total: usize) {
        let seconds = self.epoch_started.elapsed().as_secs_f64().max(1e-9);
        let per_sec = done as f64 / seconds;
        let eta = if per_sec > 0.0 {
            (total - done.min(total)) as f64 / per_sec
        } else {
            0.0
        };
        let what = if epoch == 0 {
            "reading the data".to_string()
        } else {
            format!("epoch {epoch}")
        };
        let text = format!(
            "{what}: {:.0}% of {total} rows, {}, ETA {:.0}s",
            100.0 * done as f64 / total.max(1) as f64,
            rate(per_sec),
            eta
        );
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        } else if self.lines && self.last_line.elapsed().as_secs() >= 10 {
            eprintln!("{text}");
            self.last_line = std::time::Instant::now();
        }
    }

    fn epoch(&mut self, r: &EpochReport) {
        let val = r
            .val_nll
            .map(|v| format!("  val {v:.4}"))
            .unwrap_or_default();
        let best = r
            .best_val_nll
            .map(|b| format!("  best {b:.4} (epoch {})", r.best_epoch))
            .unwrap_or_default();
        let text = format!(
            "train {:.4}{val}{best}  {}",
            r.train_nll,
            rate(r.rows_per_sec)
        );
        self.max_epochs = r.max_epochs;
        if let Some(bar) = &self.bar {
            bar.set_length(r.max_epochs as u64);
            bar.set_position(r.epoch as u64);
            bar.set_message(text.clone());
            self.last = Some(format!("epoch {}/{}  {text}", r.epoch, r.max_epochs));
        } else if self.lines {
            eprintln!("epoch {}/{}  {text}", r.epoch, r.max_epochs);
        }
        self.epoch_started = std::time::Instant::now();
        self.last_line = self.epoch_started;
    }

    /// Clears the bar and leaves the last epoch's line behind.
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Some(last) = self.last.take() {
                eprintln!("{last}");
            }
        }
    }
}

fn rate(rows_per_sec: f64) -> String {
    if rows_per_sec >= 1e6 {
        format!("{:.2}M rows/s", rows_per_sec / 1e6)
    } else if rows_per_sec >= 1e3 {
        format!("{:.1}k rows/s", rows_per_sec / 1e3)
    } else {
        format!("{rows_per_sec:.0} rows/s")
    }
}

fn model_data(model_path: &Path, data_path: &Path, need_targets: bool) -> Result<(Model, Dataset)> {
    let model = Model::load(model_path)?;
    let data = read_data(
        data_path,
        &ColumnChoice::Model {
            features: model.features.clone(),
            targets: model.targets.clone(),
            need_targets,
        },
    )?;
    Ok((model, data))
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let (model, data) = model_data(&a.io.model, &a.io.data, true)?;
    let mut backend = open_backend(a.device, a.json)?;
    let ll = model.loglik(backend.as_mut(), &data)?;
    let mean_nll = -ll.iter().sum::<f64>() / ll.len() as f64;
    let pred = model.predict(backend.as_mut(), &data)?;
    let scores = mdn::stats::score(
        &model.targets,
        &pred.pi,
        &pred.mu,
        &pred.sigma,
        &data.y,
        pred.k,
    );
    if a.json {
        let mut out = json!({ "model": a.io.model, "data": a.io.data, "rows": data.rows, "mean_nll": mean_nll, "scores": scores });
        if a.per_row {
            out["loglik"] = json!(ll);
        }
        return print_json(&out);
    }
    let mut text = String::new();
    if a.per_row {
        text.push_str("row,loglik\n");
        for (i, v) in ll.iter().enumerate() {
            text.push_str(&format!("{i},{v}\n"));
        }
    }
    text.push_str(&format!(
        "mean NLL {mean_nll:.6} over {} rows (per row, original units of {})\n",
        data.rows,
        model.targets.join(", ")
    ));
    for s in &scores {
        text.push_str(&format!(
            "{}: CRPS {:.6}  RMSE of mean {:.6}  coverage 50% {:.3} 90% {:.3}  PIT calibration error {:.4}  PIT histogram {:?}\n",
            s.target, s.crps, s.rmse, s.coverage_50, s.coverage_90, s.calibration_error, s.pit_histogram
        ));
    }
    write_output(None, text.as_bytes())
}

fn cmd_predict(a: PredictArgs) -> Result<()> {
    let mut qs = a.quantiles.clone();
    if let Some(p) = a.interval {
        if !(p > 0.0 && p < 1.0) {
            return Err(Error::config(format!(
                "--interval must be between 0 and 1, got {p}"
            )));
        }
        // Rounded so that 0.9 gives the labels 0.05 and 0.95.
        let tail = ((1.0 - p) / 2.0 * 1e12).round() / 1e12;
        qs.extend([tail, ((1.0 - tail) * 1e12).round() / 1e12]);
    }
    if let Some(q) = qs.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
        return Err(Error::config(format!(
            "quantiles must be between 0 and 1 (exclusive), got {q}"
        )));
    }
    let (model, data) = model_data(&a.io.model, &a.io.data, false)?;
    let pred = model.predict(open_backend(a.device, a.json)?.as_mut(), &data)?;
    let (k, d) = (pred.k, pred.d);
    // Per row and target: mean, variance, mode, quantiles of the marginal mixture.
    let summary = |r: usize, j: usize| {
        let m = mdn::stats::Marginal::of(
            &pred.pi[r * k..(r + 1) * k],
            &pred.mu[r * k * d..(r + 1) * k * d],
            &pred.sigma[r * k * d..(r + 1) * k * d],
            d,
            j,
        );
        let q: Vec<f64> = qs.iter().map(|&q| m.quantile(q)).collect();
        (m.mean(), m.variance(), m.mode(), q)
    };
    let text = if a.json {
        let rows: Vec<serde_json::Value> = (0..pred.rows)
            .map(|r| {
                let comp = |v: &[f64], c: usize| v[(r * k + c) * d..(r * k + c + 1) * d].to_vec();
                let sums: Vec<_> = (0..d).map(|j| summary(r, j)).collect();
                let mut row = json!({
                    "pi": pred.pi[r * k..(r + 1) * k],
                    "mu": (0..k).map(|c| comp(&pred.mu, c)).collect::<Vec<_>>(),
                    "sigma": (0..k).map(|c| comp(&pred.sigma, c)).collect::<Vec<_>>(),
                    "mean": sums.iter().map(|s| s.0).collect::<Vec<_>>(),
                    "variance": sums.iter().map(|s| s.1).collect::<Vec<_>>(),
                    "mode": sums.iter().map(|s| s.2).collect::<Vec<_>>(),
                });
                if !pred.scale_tril.is_empty() {
                    row["cov"] = json!(
                        (0..k)
                            .map(|c| {
                                pred.covariance(r, c)
                                    .chunks(d)
                                    .map(|row| row.to_vec())
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>()
                    );
                }
                if !qs.is_empty() {
                    let quantiles: serde_json::Map<String, serde_json::Value> = qs
                        .iter()
                        .enumerate()
                        .map(|(i, q)| {
                            (
                                q.to_string(),
                                json!(sums.iter().map(|s| s.3[i]).collect::<Vec<_>>()),
                            )
                        })
                        .collect();
                    row["quantiles"] = serde_json::Value::Object(quantiles);
                }
                row
            })
            .collect();
        let doc = json!({ "targets": model.targets, "components": k, "rows": rows });
        serde_json::to_string(&doc).expect("JSON of numbers") + "\n"
    } else {
        let mut header = vec!["row".to_string()];
        header.extend((0..k).map(|c| format!("pi_{c}")));
        for what in ["mu", "sigma"] {
            for c in 0..k {
                header.extend(model.targets.iter().map(|t| format!("{what}_{c}_{t}")));
            }
        }
        let full = !pred.scale_tril.is_empty();
        if full {
            for c in 0..k {
                for a in 0..d {
                    for b in a + 1..d {
                        let (ta, tb) = (&model.targets[a], &model.targets[b]);
                        header.push(format!("corr_{c}_{ta}_{tb}"));
                    }
                }
            }
        }
        for what in ["mean", "var", "mode"] {
            header.extend(model.targets.iter().map(|t| format!("{what}_{t}")));
        }
        for q in &qs {
            header.extend(model.targets.iter().map(|t| format!("q{q}_{t}")));
        }
        let mut s = header.join(",") + "\n";
        for r in 0..pred.rows {
            let mut cells = vec![r.to_string()];
            cells.extend(pred.pi[r * k..(r + 1) * k].iter().map(|v| v.to_string()));
            cells.extend(
                pred.mu[r * k * d..(r + 1) * k * d]
                    .iter()
                    .map(|v| v.to_string()),
            );
            cells.extend(
                pred.sigma[r * k * d..(r + 1) * k * d]
                    .iter()
                    .map(|v| v.to_string()),
            );
            if full {
                for c in 0..k {
                    let cov = pred.covariance(r, c);
                    for a in 0..d {
                        for b in a + 1..d {
                            let rho = cov[a * d + b] / (cov[a * d + a] * cov[b * d + b]).sqrt();
                            cells.push(rho.to_string());
                        }
                    }
                }
            }
            let sums: Vec<_> = (0..d).map(|j| summary(r, j)).collect();
            cells.extend(sums.iter().map(|s| s.0.to_string()));
            cells.extend(sums.iter().map(|s| s.1.to_string()));
            cells.extend(sums.iter().map(|s| s.2.to_string()));
            for i in 0..qs.len() {
                cells.extend(sums.iter().map(|s| s.3[i].to_string()));
            }
            s.push_str(&cells.join(","));
            s.push('\n');
        }
        s
    };
    write_output(a.out.as_deref(), text.as_bytes())
}

fn cmd_sample(a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        return Err(Error::config("--n must be at least 1"));
    }
    let (model, data) = model_data(&a.io.model, &a.io.data, false)?;
    let samples = model.sample(
        open_backend(a.device, a.json)?.as_mut(),
        &data,
        a.n,
        a.seed,
        a.temperature,
        a.sigma_scale,
    )?;
    let d = model.arch.targets;
    let text = if a.json {
        let rows: Vec<serde_json::Value> = (0..data.rows)
            .map(|r| {
                let s: Vec<Vec<f64>> = (0..a.n)
                    .map(|i| samples[(r * a.n + i) * d..(r * a.n + i + 1) * d].to_vec())
                    .collect();
                json!({ "row": r, "samples": s })
            })
            .collect();
        serde_json::to_string(
            &json!({ "targets": model.targets, "n": a.n, "seed": a.seed, "rows": rows }),
        )
        .expect("JSON of numbers")
            + "\n"
    } else {
        let mut s = format!("row,sample,{}\n", model.targets.join(","));
        for r in 0..data.rows {
            for i in 0..a.n {
                let v = &samples[(r * a.n + i) * d..(r * a.n + i + 1) * d];
                let cells: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                s.push_str(&format!("{r},{i},{}\n", cells.join(",")));
            }
        }
        s
    };
    write_output(a.out.as_deref(), text.as_bytes())
}

fn cmd_devices(a: DevicesArgs) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let adapters = backend::gpu::list_adapters();
    if a.json {
        return print_json(&json!({
            "cpu": { "name": "cpu", "kind": "cpu", "threads": threads },
            "adapters": adapters,
        }));
    }
    let mut s = format!("cpu       reference backend (plain Rust), {threads} hardware threads\n");
    if adapters.is_empty() {
        s.push_str(&format!(
            "(no GPU adapters: {})\n",
            backend::gpu::NO_ADAPTER_HELP
        ));
    }
    for ad in &adapters {
        let kind = if ad.device_type == "Cpu" {
            "software"
        } else {
            "gpu"
        };
        s.push_str(&format!(
            "{kind:<9} {} ({}, {}), driver {} {}\n          max storage binding {} MiB, max buffer {} MiB, \
             workgroups/dim {}, invocations/workgroup {}, storage buffers/stage {}, subgroup size {}..{}\n",
            ad.name,
            ad.backend,
            ad.device_type,
            ad.driver,
            ad.driver_info,
            ad.max_storage_buffer_binding_size >> 20,
            ad.max_buffer_size >> 20,
            ad.max_compute_workgroups_per_dimension,
            ad.max_compute_invocations_per_workgroup,
            ad.max_storage_buffers_per_shader_stage,
            ad.subgroup_min_size,
            ad.subgroup_max_size,
        ));
    }
    write_output(None, s.as_bytes())
}

fn cmd_check(a: CheckArgs) -> Result<()> {
    let mut b = open_backend(a.device, a.json)?;
    let name = b.name();
    let rows = mdn::check::run(b.as_mut())?;
    let failed = rows.iter().filter(|r| !r.comparison.passed()).count();
    if a.json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let c = &r.comparison;
                json!({
                    "kernel": r.kernel, "max_abs_err": c.max_abs, "max_rel_err": c.max_rel,
                    "tol_abs": c.tolerance.abs, "tol_rel": c.tolerance.rel, "pass": c.passed(),
                    "worst": c.worst.map(|(i, got, want)| json!({"index": i, "actual": got, "expected": want})),
                })
            })
            .collect();
        print_json(
            &json!({ "device": name, "reference": "cpu", "checks": items, "failed": failed }),
        )?;
    } else {
        let width = rows
            .iter()
            .map(|r| r.kernel.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut s = format!("{name} against the CPU reference\n");
        s.push_str(&format!(
            "{:<width$}  {:>11}  {:>11}  {:>17}  result\n",
            "kernel", "max abs err", "max rel err", "tolerance abs/rel"
        ));
        for r in &rows {
            let c = &r.comparison;
            s.push_str(&format!(
                "{:<width$}  {:>11.3e}  {:>11.3e}  {:>8.0e}/{:<8.0e}  {}\n",
                r.kernel,
                c.max_abs,
                c.max_rel,
                c.tolerance.abs,
                c.tolerance.rel,
                if c.passed() {
                    "pass".to_string()
                } else {
                    format!("FAIL: {c}")
                }
            ));
        }
        s.push_str(&format!(
            "{} checks, {} passed, {failed} failed\n",
            rows.len(),
            rows.len() - failed
        ));
        write_output(None, s.as_bytes())?;
    }
    if failed > 0 {
        return Err(mdn::Error::Numerical(format!(
            "{failed} parity check(s) failed on {name}"
        )));
    }
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let mut devices = a.devices.clone();
    // `auto` resolving to the CPU would time the CPU twice.
    if devices.contains(&DeviceChoice::Auto)
        && backend::GpuBackend::new(DeviceChoice::Auto).is_err()
    {
        eprintln!("warning: no GPU adapter; timing the CPU backend only");
        devices.retain(|d| *d != DeviceChoice::Auto);
    }
    let quiet = a.json;
    let threads = if a.threads.is_empty() {
        mdn::bench::default_threads()
    } else {
        a.threads.clone()
    };
    let (results, ceilings) = mdn::bench::run_suite(
        &devices,
        &threads,
        &a.config,
        a.rows,
        a.epochs,
        &mut |line| {
            if !quiet {
                eprintln!("{line}");
            }
        },
    )?;
    if a.json {
        let ceilings: Vec<serde_json::Value> = ceilings
            .iter()
            .map(|(b, g)| json!({"backend": b, "matmul_gflops": g}))
            .collect();
        return print_json(&json!({ "results": results, "ceilings": ceilings }));
    }
    write_output(None, mdn::bench::table(&results, &ceilings).as_bytes())
}

/// A row counter on stderr for long writes: a spinner on a terminal, nothing otherwise.
fn row_counter(quiet: bool, what: &str) -> Option<ProgressBar> {
    (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {human_pos} rows ({per_sec}, {elapsed})")
                .expect("valid template"),
        );
        bar.set_message(what.to_string());
        bar
    })
}

/// ", full covariance" in the training banner, nothing for the default.
fn covariance_note(c: Covariance) -> &'static str {
    match c {
        Covariance::Diagonal => "",
        Covariance::Full => ", full covariance",
    }
}

fn cmd_select(a: SelectArgs) -> Result<()> {
    let data = a.cols.read()?;
    let hidden: Vec<Vec<usize>> = a
        .hidden
        .split(';')
        .map(|h| parse_hidden(h).map(|w| w.0).map_err(Error::config))
        .collect::<Result<_>>()?;
    let mut settings = Vec::new();
    for h in &hidden {
        for &l2 in &a.l2 {
            for &k in &a.components {
                for &covariance in &a.covariance {
                    settings.push(mdn::select::Setting {
                        components: k,
                        l2,
                        hidden: h.clone(),
                        covariance,
                    });
                }
            }
        }
    }
    check_writable(&a.out)?;
    let base = a.fit.options(None);
    let mut backend = open_backend(a.device, a.quiet)?;
    let total = settings.len() * a.folds;
    let bar = (!a.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} cross-validation [{bar:30}] {pos}/{len} fits ({eta} left) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    });
    let stop = interrupt_flag();
    let sel = mdn::select::cross_validate(
        backend.as_mut(),
        &data,
        &settings,
        a.folds,
        &base,
        a.fit.val_fraction,
        &mut |si, f| {
            let s = &settings[si];
            let what = format!(
                "K={} l2={} hidden={:?}, fold {}/{}",
                s.components,
                s.l2,
                s.hidden,
                f + 1,
                a.folds
            );
            match &bar {
                Some(b) => {
                    b.set_position((si * a.folds + f) as u64);
                    b.set_message(what);
                }
                None if !a.quiet => eprintln!("fit {}/{total}: {what}", si * a.folds + f + 1),
                None => {}
            }
        },
        &mut |_| !stop.load(std::sync::atomic::Ordering::Relaxed),
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let sel = sel?;
    // The chosen setting, trained on all the data.
    let s = &sel.scores[sel.chosen].setting;
    let opts = s.options(&base);
    let (tr, val) = split_validation(&data, a.fit.val_fraction, a.fit.seed)?;
    let model = train(backend.as_mut(), &tr, val.as_ref(), &opts, &mut |_| {
        !stop.load(std::sync::atomic::Ordering::Relaxed)
    })?;
    model.save(&a.out)?;
    if a.json {
        return print_json(&json!({ "selection": sel, "model": a.out }));
    }
    let mut t = format!(
        "{:>4} {:>8} {:<12} {:<9} {:>8} {:>10} {:>8}\n",
        "K", "l2", "hidden", "cov", "params", "mean NLL", "std"
    );
    for (i, sc) in sel.scores.iter().enumerate() {
        let mark = if i == sel.chosen {
            "  <- chosen"
        } else if i == sel.best {
            "  (lowest mean)"
        } else {
            ""
        };
        t.push_str(&format!(
            "{:>4} {:>8} {:<12} {:<9} {:>8} {:>10.4} {:>8.4}{mark}\n",
            sc.setting.components,
            sc.setting.l2,
            format!("{:?}", sc.setting.hidden),
            sc.setting.covariance.name(),
            sc.params,
            sc.mean_nll,
            sc.std_nll
        ));
    }
    t.push_str(&format!(
        "{}-fold cross-validation; chosen by the one-standard-error rule (fewest parameters within one standard error of the lowest mean); wrote {}\n",
        sel.folds,
        a.out.display()
    ));
    write_output(None, t.as_bytes())
}

fn cmd_plot(a: PlotArgs) -> Result<()> {
    let model = Model::load(&a.model)?;
    mdn::plot::Format::of(&a.out)?;
    let target = match &a.target {
        None => 0,
        Some(name) => model
            .targets
            .iter()
            .position(|t| t == name)
            .ok_or_else(|| {
                Error::config(format!(
                    "--target {name}: the model's targets are [{}]",
                    model.targets.join(", ")
                ))
            })?,
    };
    let choice = ColumnChoice::Model {
        features: model.features.clone(),
        targets: model.targets.clone(),
        need_targets: true,
    };
    let data = match &a.data {
        Some(path) => Some(read_data(path, &choice)?),
        None if model.features == ["x"] && model.targets == ["t"] => Some(read_csv_from(
            EXAMPLE_CSV,
            Path::new(EXAMPLE_NAME),
            &choice,
        )?),
        None => None,
    };
    let figure = mdn::plot::Figure {
        model: &model,
        data: data.as_ref(),
        target,
        panel: a.panel,
        size: a.size,
    };
    let mut backend = open_backend(a.device, a.quiet)?;
    figure.render(backend.as_mut(), &a.out)?;
    if !a.quiet {
        eprintln!(
            "wrote {}{}",
            a.out.display(),
            data.as_ref()
                .map(|d| format!(" ({} rows of {})", d.rows, d.path.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn cmd_convert(a: ConvertArgs) -> Result<()> {
    let bar = row_counter(a.quiet, "converting");
    let columns = (!a.columns.is_empty()).then_some(a.columns.as_slice());
    let (rows, names) = mdn::data::convert(&a.input, &a.output, columns, &mut |n| {
        if let Some(b) = &bar {
            b.set_position(n as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if a.json {
        return print_json(
            &json!({ "input": a.input, "output": a.output, "rows": rows, "columns": names }),
        );
    }
    if !a.quiet {
        eprintln!(
            "wrote {}: {rows} rows x {} columns ({})",
            a.output.display(),
            names.len(),
            names.join(", ")
        );
    }
    Ok(())
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    if a.rows == 0 {
        return Err(Error::config("--rows must be at least 1"));
    }
    let mut g = mdn::synth::Generator::new(a.kind, a.seed);
    let (features, targets) = g.columns();
    let names: Vec<String> = features.iter().chain(&targets).cloned().collect();
    let mut out = mdn::data::TableWriter::create(&a.out, &names)?;
    let bar = row_counter(a.quiet, "generating");
    let (mut x, mut y, mut block) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while done < a.rows {
        let n = (a.rows - done).min(65536);
        block.clear();
        for _ in 0..n {
            x.clear();
            y.clear();
            g.row(&mut x, &mut y);
            block.extend_from_slice(&x);
            block.extend_from_slice(&y);
        }
        out.write_rows(&block)?;
        done += n;
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    }
    let rows = out.finish()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if !a.quiet {
        let kind = a.kind.to_possible_value().expect("a named kind");
        let kind = kind.get_name();
        eprintln!(
            "wrote {}: {rows} rows of {kind} ({} features, {} targets)",
            a.out.display(),
            features.len(),
            targets.len()
        );
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).expect("JSON of plain values") + "\n";
    write_output(None, s.as_bytes())
}

/// Writes to a file (atomically) or to stdout.
fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(p) => write_atomic(p, bytes),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io(Path::new("<stdout>"), e))
        }
    }
}
