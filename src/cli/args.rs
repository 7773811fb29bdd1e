//! The command line's arguments (clap), and how they become library values: `mdn train`'s
//! options become a [`TrainJob`]; named choices parse through [`mdn::named::Named`].

use std::path::{Path, PathBuf};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use mdn::backend::DeviceChoice;
use mdn::categorical::UnknownCategory;
use mdn::job::TrainJob;
use mdn::layout::{Activation, Covariance, DEFAULT_SIGMA_FLOOR, Family};
use mdn::named::Named;
use mdn::plot::Panel;
use mdn::synth::Kind;

/// A value parser for a named choice: its names (with help) as clap's possible values.
pub fn named<T: Named + Clone>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(
        T::ALL
            .iter()
            .map(|v| PossibleValue::new(v.name()).help(v.help())),
    )
    .map(|s| mdn::named::parse_named::<T>(&s).expect("one of the possible values"))
}

#[derive(Parser)]
#[command(
    name = "mdn",
    version,
    about = "Train and use Mixture Density Networks: conditional densities p(y | x)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
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
    /// (on a GPU also the dispatches per training step and each kernel's time;
    /// MDN_GPU_PATH=auto|fused|layered, MDN_GPU_TILE_ROWS=1..64 and
    /// MDN_GPU_WORKGROUP=32|64|128|256 override the GPU's path and tiling; on the CPU,
    /// MDN_CPU_ISA=avx2|baseline narrows the instruction set and MDN_CPU_GEMM=matrixmultiply
    /// puts the dense layers on that crate's sgemm instead of mdn's own kernels)
    Bench(BenchArgs),
    /// Choose K, L2, hidden widths, covariance and family by k-fold cross-validation, then train the
    /// chosen model
    Select(SelectArgs),
    /// Convert a CSV file to .npy (float32) row by row, writing its column names beside it
    Convert(ConvertArgs),
    /// Write a generated data set (bishop, wide or correlated) of any size to CSV or .npy
    Generate(GenerateArgs),
    /// Summarise a model file: columns, architecture, how it was trained, best epoch,
    /// component usage
    Info(InfoArgs),
    /// Write a model for another runtime: an ONNX graph (ONNX Runtime, tract) that takes the
    /// features and gives the mixture and each target's mean and variance
    Export(ExportArgs),
    /// Draw a model as PNG or SVG: conditional density map with the data (one-input models),
    /// PIT histogram, reliability curve, training curve
    Plot(PlotArgs),
    /// Run the training service: an HTTP API that queues training jobs, streams their
    /// progress and serves the trained models (docs/service.md)
    Serve(ServeArgs),
    /// Upload data to a training service and queue a training job (--wait: follow it and
    /// download the model)
    Submit(SubmitArgs),
    /// List a training service's jobs
    Jobs(JobsArgs),
    /// Show one job of a training service
    Status(JobIdArgs),
    /// Cancel a job of a training service (a running one keeps its best model so far)
    Cancel(JobIdArgs),
    /// Download the model of a finished job (or a model by its id, NAME, NAME:VERSION or
    /// NAME@ALIAS) from a training service
    Fetch(FetchArgs),
    /// A training service's registered models: names, versions, tags and aliases (with
    /// --alias ALIAS=VERSION: point an alias at a version)
    Models(ModelsArgs),
    /// Delete from a training service: finished jobs (with their models, unless registered),
    /// models, data sets, registered versions
    Delete(DeleteArgs),
    /// List a training service's data sets (uploads: one per distinct file)
    Datasets(ListArgs),
}

/// Where the training service is and how to authenticate.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// The service's address
    #[arg(long, env = "MDN_SERVER", default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// File holding the service's bearer token or API key (or MDN_TOKEN)
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// With a server admin key: the workspace to act in (sent as Mdn-Workspace)
    #[arg(long, env = "MDN_WORKSPACE")]
    pub workspace: Option<String>,
    /// For an https:// service: trust the certificates in this PEM file (a self-signed
    /// certificate, a private CA) instead of the usual public ones
    #[arg(long, env = "MDN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// A registered name: its versions (without: every name)
    pub name: Option<String>,
    /// Point an alias of NAME at a version, ALIAS=VERSION (production=3); moves it if it
    /// points elsewhere
    #[arg(long, requires = "name")]
    pub alias: Option<String>,
    /// Every model of the workspace, registered or not: id, job, size, the versions holding it
    #[arg(long, conflicts_with_all = ["name", "alias"])]
    pub all: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// What to delete, in order: job ids (job_...), model ids (m_...), data set ids (ds_...),
    /// registered versions (NAME:VERSION)
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    /// Follow the job until it ends, with the progress of `mdn train`, then download the
    /// model to --out
    #[arg(long)]
    pub wait: bool,
    /// When the job succeeds, register its model as the next version of this name
    #[arg(long)]
    pub register: Option<String>,
}

#[derive(Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only jobs of this status: queued, running, succeeded, failed or cancelled
    #[arg(long)]
    pub status: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct JobIdArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The job's id (as `mdn submit` printed it)
    pub id: String,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// A job's id (its model) or a model's id
    pub id: String,
    /// Where to write the model
    #[arg(long, default_value = "model.json")]
    pub out: PathBuf,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// Manage the service's keys and workspaces (without one: run the service)
    #[command(subcommand)]
    pub admin: Option<ServeAdmin>,
    /// Address to listen on (without a token: loopback addresses only; port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: String,
    /// The service's state: a directory (SQLite, with the data sets, checkpoints and
    /// models beside it; one process at a time) or postgres://USER:PASSWORD@HOST:PORT/DB
    /// (shared by any number of processes on any number of machines; give --files)
    #[arg(long, env = "MDN_STORE", default_value = "mdn-store")]
    pub store: String,
    /// Where data sets, checkpoints and models go, seen by every process that serves the
    /// store: a directory (a shared filesystem) or s3://BUCKET/PREFIX (an S3-compatible
    /// object store; credentials, region and endpoint from the usual AWS_* variables)
    /// [default: the SQLite store's directory]
    #[arg(long, env = "MDN_FILES")]
    pub files: Option<String>,
    /// Local cache of the files kept in an object store [default: the SQLite store's cache
    /// folder, or one in the system's temporary directory]
    #[arg(long, env = "MDN_CACHE")]
    pub cache: Option<PathBuf>,
    /// Run workers only (no HTTP API): train the store's queued jobs
    #[arg(long, conflicts_with = "api")]
    pub worker: bool,
    /// Run the HTTP API only (no workers): other processes (`mdn serve --worker`) train
    #[arg(long)]
    pub api: bool,
    /// With --worker: stop once the queue is empty and this process's jobs are done (for
    /// batch schedulers)
    #[arg(long, requires = "worker")]
    pub exit_when_idle: bool,
    /// A worker holds its job this long past its last sign of life (renewed every epoch and
    /// every third of this); a job whose worker goes quiet longer is queued again and
    /// resumes elsewhere from its checkpoint
    #[arg(long, default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// A job whose worker vanished (killed, out of memory, out of touch) this many times
    /// fails instead of being queued again
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Device of jobs that do not name one: auto, gpu, software or cpu
    #[arg(long, value_parser = named::<DeviceChoice>(), env = "MDN_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// Jobs trained at the same time
    #[arg(long, default_value_t = 1)]
    pub max_running: usize,
    /// Largest data set upload, in MB (larger ones are refused with 413)
    #[arg(long, default_value_t = 1024)]
    pub max_upload_mb: u64,
    /// Most rows one predict, sample or eval request may carry (more are refused with 413:
    /// larger batches go as several requests, or through `mdn predict` on a file)
    #[arg(long, default_value_t = 10_000)]
    pub max_request_rows: usize,
    /// Models kept loaded for predictions, in MiB of their files (the least recently used
    /// are dropped first, and loaded again when asked for)
    #[arg(long, default_value_t = 1024)]
    pub model_cache_mb: u64,
    /// Most parameters of a job's model, all ensemble members together (its training state
    /// is about 16 bytes a parameter); larger jobs are refused with 400 at submission
    #[arg(long, default_value_t = 20_000_000)]
    pub max_model_params: u64,
    /// File holding the bearer token every /v1 request must carry (or MDN_TOKEN); needed to
    /// listen on a non-loopback address
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A running job writes its checkpoint after every epoch, but no more often than every
    /// this many seconds (it also writes one when the service stops)
    #[arg(long, default_value_t = 30.0)]
    pub checkpoint_seconds: f64,
    /// Serve HTTPS with this certificate chain (PEM; the server's certificate first)
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `mdn serve keys ...` and `mdn serve workspaces`: changes to a store, made beside the
/// processes serving it (they see each change at their next request).
#[derive(Subcommand)]
pub enum ServeAdmin {
    /// Make, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List workspaces with what they use; with NAME and a quota, set that workspace's quotas
    Workspaces(WorkspacesArgs),
}

#[derive(Args, Clone)]
pub struct StoreArg {
    /// The service's store: a directory (SQLite) or postgres://USER:PASSWORD@HOST:PORT/DB
    #[arg(long, env = "MDN_STORE", default_value = "mdn-store")]
    pub store: String,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it as the last line of standard output (it is shown only once;
    /// the store keeps only its hash)
    Add(KeyAddArgs),
    /// List keys (never the keys themselves): id, workspace, scope, name, last use
    List(KeyListArgs),
    /// Revoke a key: every request with it is refused from now on
    Revoke(KeyRevokeArgs),
}

#[derive(Args)]
pub struct KeyAddArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// The workspace the key belongs to (made if new): it sees that workspace's data sets,
    /// jobs and models, and nothing else
    #[arg(long, required_unless_present = "server_admin")]
    pub workspace: Option<String>,
    /// read: list, fetch and predict; write: also upload, submit, cancel and delete; admin:
    /// also manage the workspace's keys
    #[arg(long, required_unless_present = "server_admin", value_parser = ["read", "write", "admin"])]
    pub scope: Option<String>,
    /// Who or what the key is for, shown in listings and in the events it causes
    #[arg(long, default_value = "key")]
    pub name: String,
    /// A key that sees and manages every workspace (scope admin, no workspace)
    #[arg(long, conflicts_with_all = ["workspace", "scope"])]
    pub server_admin: bool,
}

#[derive(Args)]
pub struct KeyListArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Only the keys of this workspace
    #[arg(long)]
    pub workspace: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct KeyRevokeArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// The key's id (key_..., as `keys list` shows it), or the whole key
    pub id: String,
}

#[derive(Args)]
pub struct WorkspacesArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// The workspace whose quotas to set (made if new)
    pub name: Option<String>,
    /// Most jobs queued or running at once in the workspace (a number, or none)
    #[arg(long, requires = "name")]
    pub max_jobs: Option<String>,
    /// Most megabytes of data sets and models the workspace stores (a number, or none)
    #[arg(long, requires = "name")]
    pub max_mb: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PlotArgs {
    /// Model file written by `mdn train`
    #[arg(long, default_value = "model.json")]
    pub model: PathBuf,
    /// CSV or .npy with the model's feature and target columns [default: the shipped example,
    /// for a model with its columns (x -> t)]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The figure: a file name ending in .png or .svg
    #[arg(long, default_value = "model.png")]
    pub out: PathBuf,
    /// Which panels: all (those that apply), density, pit, reliability or history
    #[arg(long, value_parser = named::<Panel>(), default_value = "all")]
    pub panel: Panel,
    /// Target for the density map and the PIT histogram [default: the first]
    #[arg(long)]
    pub target: Option<String>,
    /// Leave out rows of --data with a missing value (an empty cell, NA, NaN, null, ?) in a
    /// column the model reads, with a warning counting them, instead of refusing the file
    #[arg(long)]
    pub drop_missing: bool,
    /// Figure size, WIDTHxHEIGHT in pixels [default: from the number of panels]
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// No messages
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("'{s}' is not a size like 1200x900");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let size: (u32, u32) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if size.0 < 200 || size.1 < 150 || size.0 > 10000 || size.1 > 10000 {
        return Err(format!(
            "{}x{} is out of range (200x150 to 10000x10000)",
            size.0, size.1
        ));
    }
    Ok(size)
}

#[derive(Args)]
pub struct SelectArgs {
    #[command(flatten)]
    pub cols: DataColumns,
    /// Numbers of components to compare
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,5,8")]
    pub components: Vec<usize>,
    /// Covariance shapes to compare (diagonal, full or both: "diagonal,full")
    #[arg(long, value_parser = named::<Covariance>(), value_delimiter = ',', default_value = "diagonal")]
    pub covariance: Vec<Covariance>,
    /// Component families to compare (gaussian, student-t or both: "gaussian,student-t")
    #[arg(long, value_parser = named::<Family>(), value_delimiter = ',', default_value = "gaussian")]
    pub family: Vec<Family>,
    /// L2 strengths to compare
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub l2: Vec<f32>,
    /// Hidden layer widths to compare, ';'-separated settings of ','-separated widths
    /// (e.g. "32;64,64")
    #[arg(long, default_value = "64")]
    pub hidden: String,
    /// Folds of the cross-validation
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// How each model is fitted; --val-fraction is taken from the training folds
    #[command(flatten)]
    pub fit: FitArgs,
    /// Where the chosen model goes
    #[arg(long, default_value = "model.json")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
    /// The table as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// CSV file with a header row
    pub input: PathBuf,
    /// Output file: .npy (column names go to OUTPUT.columns.json) or .csv
    pub output: PathBuf,
    /// Columns to keep, in this order, by name or 0-based index [default: all]
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
    /// Print a JSON summary on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Which problem: bishop (d=1, D=1), wide (d=16, D=2) or correlated (d=1, D=3, one
    /// Gaussian with strongly correlated targets)
    #[arg(long, value_parser = named::<Kind>(), default_value = "wide")]
    pub kind: Kind,
    /// Rows to write
    #[arg(long)]
    pub rows: usize,
    /// Output file, .npy or .csv (targets are the last columns)
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the generator
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Configurations: a (d=1, hidden 64, batch 256, 100k rows, 5 epochs), a4096 and a32 (the
    /// same at batch 4096 and 32), b (d=16, D=2, hidden 64,64, batch 4096, 1M rows, 2 epochs), b256 (the same
    /// at batch 256), c (d=1, D=3 correlated, full covariance, K=3, hidden 64, batch 1024, 200k
    /// rows, 3 epochs), cdiag (the same with diagonal covariance)
    #[arg(long, value_delimiter = ',', default_value = "a,a4096,b256,b")]
    pub config: Vec<String>,
    /// Devices to time, comma-separated
    #[arg(
        long = "devices",
        value_parser = named::<DeviceChoice>(),
        value_delimiter = ',',
        default_value = "cpu,auto"
    )]
    pub devices: Vec<DeviceChoice>,
    /// Rows of generated data (overrides the configuration's)
    #[arg(long)]
    pub rows: Option<usize>,
    /// Epochs per run (epochs 2.. are timed)
    #[arg(long)]
    pub epochs: Option<usize>,
    /// CPU thread counts to time, comma-separated [default: 1 and every core]
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Also time this many networks trained at once (an ensemble's members: in the same
    /// dispatches on a GPU, side by side on the CPU), next to one network
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

/// `--device`, shared by every command that computes.
#[derive(Args, Clone, Copy)]
pub struct DeviceArg {
    /// Where to compute: auto (a hardware GPU, else the CPU backend; `mdn devices` says what
    /// it picks here), gpu, software (e.g. Mesa's lavapipe, for CI and parity checks) or cpu
    #[arg(long, value_parser = named::<DeviceChoice>(), env = "MDN_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// Threads of the CPU backend [default: every core]
    #[arg(long, env = "MDN_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub cols: DataColumns,
    /// Where to write the model [default: model.json; with --resume, where the checkpoint's
    /// run was writing it]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hidden layer widths, comma-separated (e.g. 64,64); "none" for no hidden layer
    #[arg(long, default_value = "64", value_parser = parse_hidden)]
    pub hidden: HiddenWidths,
    /// Number of mixture components K [default: 5; below 100 training rows n/20, at least 1]
    #[arg(long)]
    pub components: Option<usize>,
    /// Each component's covariance: diagonal (D standard deviations) or full (a Cholesky
    /// factor with D(D-1)/2 more outputs, for correlated targets; D <= 16)
    #[arg(long, value_parser = named::<Covariance>(), default_value = "diagonal")]
    pub covariance: Covariance,
    /// Component family: gaussian, or student-t (heavy tails: each component a multivariate
    /// t whose degrees of freedom, above 2, are learnt)
    #[arg(long, value_parser = named::<Family>(), default_value = "gaussian")]
    pub family: Family,
    /// L2 penalty on dense kernels (not biases): loss += L2 * sum(W^2)
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    /// Train a deep ensemble of M members (seeds --seed, --seed + 1, ...): their mixture
    /// also says where the model is unsure because it has seen no data (epistemic variance)
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// Train one model per group of rows, the groups named by this column's values (a
    /// store, a sensor, a patient): --out is then a directory of <group>.json models and
    /// groups.csv [default --out: models]
    #[arg(long, value_name = "COLUMN")]
    pub group_by: Option<String>,
    /// With --group-by: leave out groups of fewer rows (listed in groups.csv) [default:
    /// refuse groups too small for the defaults to hold out validation rows from]
    #[arg(long, value_name = "N", requires = "group_by")]
    pub min_group_rows: Option<usize>,
    /// With --group-by: keep each group's model from the earlier run in --out (or a stopped
    /// run's, <out>.interrupted) whose rows and options are unchanged, and train only the
    /// other groups (to finish a run that was stopped, or to add groups)
    #[arg(long, requires = "group_by")]
    pub keep_trained: bool,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Validation data (instead of holding out --val-fraction of --data)
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Run exactly this many epochs, without early stopping, and keep the last parameters
    #[arg(long, conflicts_with_all = ["patience", "max_epochs"])]
    pub epochs: Option<usize>,
    /// Memory for training data, in MiB: larger .npy files (and CSV files, converted to a
    /// temporary .npy first) are streamed from disk in chunks instead of loaded
    #[arg(long, default_value_t = 512)]
    pub memory_mb: usize,
    /// Stream the data from disk even when it would fit in memory
    #[arg(long)]
    pub stream: bool,
    /// Rows read from disk at a time when streaming [default: from --memory-mb]
    #[arg(long)]
    pub chunk_rows: Option<usize>,
    /// Write the full training state every N epochs (to --checkpoint), to --resume from
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Write checkpoints no more often than every S seconds (for runs of many short epochs);
    /// Ctrl-C (or SIGTERM) still writes one for the last finished epoch
    #[arg(long, default_value_t = 0.0)]
    pub checkpoint_seconds: f64,
    /// Checkpoint file, written every epoch unless --checkpoint-every says otherwise
    /// [default, with --checkpoint-every: beside --out, model.json -> model.ckpt.json]
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue the run a checkpoint was written by: its data and options are used, and the
    /// result is bit-identical to an uninterrupted run on the same device and threads
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No progress output
    #[arg(long, short)]
    pub quiet: bool,
    /// Print a JSON summary of the run on stdout
    #[arg(long)]
    pub json: bool,
}

/// The training data and its columns (train, select).
#[derive(Args, Clone)]
pub struct DataColumns {
    /// Data: CSV with a header row, or .npy [default: the shipped example, assets/bishop.csv]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Target column names, comma-separated [default: the last column]
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// Feature column names, comma-separated [default: every column that is not a target]
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Feature columns to read as categories (one indicator input per value), comma-separated;
    /// needed only for numeric codes: a feature column of text is categorical anyway
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Leave out rows with a missing value (an empty cell, NA, NaN, null, ?) in a column
    /// used, instead of refusing the file
    #[arg(long)]
    pub drop_missing: bool,
    /// Transform of the targets before the mixture is fitted: log (a positive target:
    /// log-normal components), logit:LOW,HIGH (a target between LOW and HIGH) or none; one
    /// for every target, or per target as 'price=log;share=logit:0,1'. Densities, NLLs,
    /// quantiles, samples and scores stay in the target's own units
    #[arg(long, default_value = "none")]
    pub transform: String,
}

/// How each model is fitted (train, select).
#[derive(Args, Clone)]
pub struct FitArgs {
    /// Hidden-layer activation
    #[arg(long, value_parser = named::<Activation>(), default_value = "relu")]
    pub activation: Activation,
    /// Adam learning rate
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Rows per mini-batch [default: adapts to the training rows n: the largest power of two
    /// at most n/128, within 32..256 (32 below 8,192 rows, 256 from 32,768)]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Scale each step's gradient down to at most this Euclidean norm (0: no clipping)
    #[arg(long, default_value_t = 0.0)]
    pub clip_norm: f32,
    /// Fraction of rows held out (chosen by --seed) for validation and early stopping
    /// [default: 0.1; below 1,500 rows, when this is not given (nor, in `mdn train`, --val
    /// or --epochs), the number of epochs is chosen by 5-fold cross-validation and the model
    /// trained on every row]
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Stop when the validation NLL has not improved for this many epochs [default: 10, more
    /// when an epoch has fewer than 10 batches: ceil(100 / batches), at most 50]
    #[arg(long)]
    pub patience: Option<usize>,
    /// Most epochs with early stopping [default: 200, more when an epoch has fewer than 15
    /// batches: ceil(3000 / batches), at most 2000]
    #[arg(long)]
    pub max_epochs: Option<usize>,
    /// Seed for initialisation, the validation split, folds and shuffling
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Floor added to every standard deviation, in standardised target units
    #[arg(long, default_value_t = DEFAULT_SIGMA_FLOOR)]
    pub sigma_floor: f32,
}

#[derive(Clone)]
pub struct HiddenWidths(pub Vec<usize>);

pub fn parse_hidden(s: &str) -> std::result::Result<HiddenWidths, String> {
    mdn::job::parse_widths(s).map(HiddenWidths)
}

/// The model and the data a command applies it to.
#[derive(Args)]
pub struct ModelData {
    /// Model file written by `mdn train` (predict and eval: or the directory of models
    /// `mdn train --group-by` wrote, each row by its group's model)
    #[arg(long, default_value = "model.json")]
    pub model: PathBuf,
    /// CSV or .npy with the model's feature columns (and, for eval, its target columns);
    /// other columns are ignored
    #[arg(long)]
    pub data: PathBuf,
    /// A category the model was not trained on: error (refuse the file, naming the row), or
    /// ignore (none of the column's indicators set, with a warning)
    #[arg(long, value_parser = named::<UnknownCategory>(), default_value = "error")]
    pub unknown_category: UnknownCategory,
    /// Leave out rows with a missing value (an empty cell, NA, NaN, null, ?) in a column
    /// the model reads, with a warning counting them, instead of refusing the file; every
    /// output's `row` stays the row's 0-based place among the file's data rows
    #[arg(long)]
    pub drop_missing: bool,
    /// Columns of --data to copy into the output as they are (identifiers, dates),
    /// comma-separated names (eval: with --per-row)
    #[arg(long, value_delimiter = ',')]
    pub keep: Vec<String>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub io: ModelData,
    /// Print every row's log-likelihood (original units) as well
    #[arg(long)]
    pub per_row: bool,
    /// With a directory of group models: leave out the rows of groups that have no model
    /// (a warning counts them) instead of refusing the file
    #[arg(long)]
    pub skip_unknown_groups: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    /// Quantiles of each target's marginal mixture, comma-separated (e.g. 0.05,0.5,0.95),
    /// computed exactly from the mixture's CDF
    #[arg(long, value_delimiter = ',')]
    pub quantiles: Vec<f64>,
    /// Central interval of this probability (e.g. 0.9 adds the 0.05 and 0.95 quantiles)
    #[arg(long)]
    pub interval: Option<f64>,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub io: ModelData,
    /// Write to this file instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// JSON instead of CSV
    #[arg(long)]
    pub json: bool,
    /// With a directory of group models: leave out the rows of groups that have no model
    /// (a warning counts them; `row` stays each row's place) instead of refusing the file
    #[arg(long)]
    pub skip_unknown_groups: bool,
}

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub io: ModelData,
    /// Samples per row
    #[arg(long, short, default_value_t = 1)]
    pub n: usize,
    /// Seed of the sampler
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Mixture-weight temperature: weights become pi^(1/T) renormalised (logits / T); below 1
    /// favours the heavier components, towards 0 always the heaviest
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Multiplies every component's standard deviation (below 1: samples closer to the means;
    /// with full covariance it scales the Cholesky factor, keeping the correlations; with
    /// Student's t components, their scale)
    #[arg(long, default_value_t = 1.0)]
    pub sigma_scale: f64,
    /// Write to this file instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// JSON instead of CSV
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DevicesArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Model file written by `mdn train`
    #[arg(default_value = "model.json")]
    pub model: PathBuf,
    /// The model file as predict, eval and sample take it (instead of MODEL)
    #[arg(long = "model", value_name = "MODEL", conflicts_with = "model")]
    pub model_flag: Option<PathBuf>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Model file written by `mdn train`
    #[arg(default_value = "model.json")]
    pub model: PathBuf,
    /// The model file as predict, eval and sample take it (instead of MODEL)
    #[arg(long = "model", value_name = "MODEL", conflicts_with = "model")]
    pub model_flag: Option<PathBuf>,
    /// The format to write
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: ExportFormat,
    /// Where to write it [default: the model's file name with the format's extension]
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// ONNX, opset 13: input x [rows, features] float32; outputs pi, mu, sigma (and
    /// scale_tril for full covariance), mean and variance, float32, in the targets' units
    Onnx,
}

/// The fields of a training job that `train` and `select` take from the same options.
fn shared_job(
    cols: &DataColumns,
    fit: &FitArgs,
    device: DeviceArg,
    out: Option<&std::path::Path>,
) -> TrainJob {
    TrainJob {
        data: cols.data.clone(),
        target: cols.target.clone(),
        features: cols.features.clone(),
        categorical: cols.categorical.clone(),
        drop_missing: cols.drop_missing,
        transform: cols.transform.clone(),
        val_fraction: fit.val_fraction,
        activation: fit.activation,
        lr: fit.lr,
        batch_size: fit.batch_size,
        clip_norm: fit.clip_norm,
        patience: fit.patience,
        max_epochs: fit.max_epochs,
        seed: fit.seed,
        sigma_floor: fit.sigma_floor,
        device: device.device,
        threads: device.threads.map(|t| t as usize),
        out: out.map(|p| p.to_path_buf()),
        ..TrainJob::default()
    }
}

impl TrainArgs {
    /// The training job these options describe.
    pub fn job(&self) -> TrainJob {
        TrainJob {
            val: self.val.clone(),
            hidden: self.hidden.0.clone(),
            components: self.components,
            covariance: self.covariance,
            family: self.family,
            l2: self.l2,
            epochs: self.epochs,
            memory_mb: self.memory_mb,
            stream: self.stream,
            chunk_rows: self.chunk_rows,
            // A checkpoint file named is written (every epoch unless told otherwise; a
            // resumed run keeps its checkpoint's cadence).
            checkpoint_every: self.checkpoint_every.or(self
                .checkpoint
                .as_ref()
                .filter(|_| self.resume.is_none())
                .map(|_| 1)),
            checkpoint_seconds: self.checkpoint_seconds,
            ensemble: self.ensemble,
            checkpoint: self.checkpoint.clone(),
            resume: self.resume.clone(),
            ..shared_job(&self.cols, &self.fit, self.device, self.out.as_deref())
        }
    }
}

impl SelectArgs {
    /// The job that trains the chosen setting on all the data, as `mdn train` would.
    pub fn job(&self, setting: &mdn::select::Setting) -> TrainJob {
        TrainJob {
            hidden: setting.hidden.clone(),
            components: Some(setting.components),
            covariance: setting.covariance,
            family: setting.family,
            l2: setting.l2,
            ..shared_job(&self.cols, &self.fit, self.device, Some(&self.out))
        }
    }
}

/// Options `mdn train --resume` may still be given: where its files go and how it runs and
/// reports. Everything else comes from the checkpoint.
const WITH_RESUME: &[&str] = &[
    "resume",
    "out",
    "checkpoint",
    "checkpoint_every",
    "checkpoint_seconds",
    "device",
    "threads",
    "quiet",
    "json",
];

/// Refuses options given beside `--resume` that the checkpoint decides (they would be
/// ignored): the data, the model, the fitting and `--ensemble`.
pub fn check_resume(train: &clap::Command, m: &clap::ArgMatches) -> mdn::Result<()> {
    use clap::parser::ValueSource;
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    if !given("resume") {
        return Ok(());
    }
    let others: Vec<&clap::Arg> = train
        .get_arguments()
        .filter(|a| given(a.get_id().as_str()) && !WITH_RESUME.contains(&a.get_id().as_str()))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    // Options that agree with the checkpoint are fine (a scheduler's requeue repeats the
    // whole command line); those that differ are refused, each with both values.
    use clap::FromArgMatches;
    let args = TrainArgs::from_arg_matches(m).map_err(|e| mdn::Error::config(e.to_string()))?;
    let keys: Vec<&str> = others.iter().map(|a| a.get_id().as_str()).collect();
    let differ = args.job().resume_disagreements(&keys)?;
    let flag = |id: &str| {
        others
            .iter()
            .find(|a| a.get_id().as_str() == id)
            .and_then(|a| a.get_long())
            .map_or(id.to_string(), |l| format!("--{l}"))
    };
    let mut refused: Vec<String> = differ
        .iter()
        .map(|(k, given, theirs)| {
            format!("{} {given} (the checkpoint's run has {theirs})", flag(k))
        })
        .collect();
    refused.sort();
    if refused.is_empty() {
        return Ok(());
    }
    Err(mdn::Error::config(format!(
        "--resume continues the checkpoint's run with its own data and options, and {} from it: {}; drop {}, or start a new run without --resume",
        if refused.len() > 1 {
            "these differ"
        } else {
            "this differs"
        },
        refused.join(", "),
        if refused.len() > 1 { "them" } else { "it" }
    )))
}

impl InfoArgs {
    /// The model file, however it was given.
    pub fn model(&self) -> &Path {
        self.model_flag.as_deref().unwrap_or(&self.model)
    }
}

impl ExportArgs {
    /// The model file, however it was given.
    pub fn model(&self) -> &Path {
        self.model_flag.as_deref().unwrap_or(&self.model)
    }
}
