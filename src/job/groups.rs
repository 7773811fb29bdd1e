//! One model per group of rows (`mdn train --group-by COLUMN`): a store's sales, a sensor's
//! readings, a patient's measurements, each with a density of its own.
//!
//! The data file is read and checked whole first (every cell the job uses, with the file's
//! own line numbers), then split by the group column's text into one CSV per group (without
//! that column, constant within a group), in a temporary directory. Each group is then the
//! whole job on its own rows: its own standardisation, validation split, small-data
//! defaults, categories and early stopping, exactly what `mdn train` gives on a file of
//! that group's rows alone (with the same threads). On the CPU groups train side by side,
//! the threads shared out; on a GPU one after another on one device: the GPU backend keeps
//! its device and compiled kernels for the next group (`backend::gpu`'s idle devices).
//!
//! The models go to a directory: `<group>.json` each, and `groups.csv`, one row per group
//! (its model file, rows, epochs, validation NLL, and what happened to it). The directory is
//! written beside its final name and renamed into place when whole, so a run that fails or
//! is killed leaves the previous one as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};

use serde::Serialize;

use super::fits::Packer;
pub use super::fits::Packing;
use super::{JobEvent, TrainJob, small_data::CROSS_VALIDATE_MIN};
use crate::atomic::TempDirectory;
use crate::backend::DeviceChoice;
use crate::data::{CsvRows, is_npy, names_shown};
use crate::error::{Error, Location, Result};
use crate::tables::csv_cell;
use crate::train::MOST_PACKED;

/// The index a group-by run writes beside its models, a row per group (for people and
/// pandas).
pub const INDEX: &str = "groups.csv";

/// The same index for mdn (`mdn predict --model DIR`): the group column's name and every
/// group's row ([`GroupIndex`]).
pub const INDEX_JSON: &str = "groups.json";

/// What `groups.json` holds.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GroupIndex {
    /// `mdn-groups`.
    pub format: String,
    pub format_version: u32,
    /// The column whose text names each row's group.
    pub column: String,
    /// The data file trained on, as named.
    pub data: String,
    pub groups: Vec<GroupResult>,
}

impl GroupIndex {
    /// The index of the directory `dir` that `mdn train --group-by` wrote.
    pub fn read(dir: &Path) -> Result<GroupIndex> {
        let path = dir.join(INDEX_JSON);
        let bad = |message: String| Error::ModelFile {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::config(format!(
                "{} is a directory without {INDEX_JSON}: give a model file, or a directory of \
                 models that mdn train --group-by wrote",
                dir.display()
            )),
            _ => Error::io(&path, e),
        })?;
        let index: GroupIndex = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if index.format != "mdn-groups" || index.format_version != 1 {
            return Err(bad(format!(
                "format {} version {}: not an index this mdn reads (mdn-groups 1)",
                index.format, index.format_version
            )));
        }
        Ok(index)
    }

    /// Each trained group's text and model file.
    pub fn models<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a str, PathBuf)> + 'a {
        self.groups
            .iter()
            .filter_map(move |g| Some((g.group.as_str(), dir.join(g.model.as_deref()?))))
    }
}

/// Most groups a run trains (each a model file in one directory).
pub const MOST_GROUPS: usize = 100_000;

/// How a job is split into groups.
#[derive(Debug, Clone)]
pub struct GroupBy {
    /// The column whose text names each row's group.
    pub column: String,
    /// Groups with fewer rows are left out (recorded in the index); `None` refuses them.
    pub min_rows: Option<usize>,
    /// Keep each group's model from the earlier run in the output directory (or a stopped
    /// run's beside it, `<out>.interrupted`) whose rows and options are this run's (its
    /// `fingerprint`), and train only the others.
    pub keep_trained: bool,
}

/// One group's rows and what became of them.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GroupResult {
    /// The group column's text.
    pub group: String,
    /// Its model file, relative to the output directory (none when it was not trained).
    pub model: Option<String>,
    pub rows: usize,
    pub train_rows: Option<usize>,
    pub val_rows: Option<usize>,
    pub epochs: Option<usize>,
    pub saved_epoch: Option<usize>,
    pub val_nll: Option<f64>,
    /// On small data (the model then trained on every row, so `val_nll` is none): the
    /// cross-validated NLL of the epochs chosen.
    pub cv_nll: Option<f64>,
    /// The linear-Gaussian model's NLL on the same validation rows or folds: what the group's
    /// model should beat.
    pub baseline_nll: Option<f64>,
    /// `trained`, `interrupted` (stopped by Ctrl-C, the best epoch kept), `left out`
    /// (fewer rows than `--min-group-rows`), `failed` or `not trained` (the run stopped first).
    pub status: String,
    /// Why it failed or was left out.
    pub reason: Option<String>,
    /// What its model depends on, for a later run to tell whether it would train the same
    /// model ([`GroupBy::keep_trained`]): the SHA-256 of mdn's version, the job's options
    /// (where it trains aside) and the group's rows, in hex. None for a group left out, and
    /// in an index written before 2026-12.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// What a group-by run reports, besides each group's own job events.
#[derive(Debug, Clone, Copy)]
pub enum GroupEvent<'a> {
    /// The data file was split: `groups` groups, `left_out` of them too small to train,
    /// `kept` of them kept from an earlier run.
    Split {
        groups: usize,
        left_out: usize,
        /// Groups whose models an earlier run's are kept ([`GroupBy::keep_trained`]).
        kept: usize,
        rows: usize,
    },
    /// Group `index` (from 0) of `of` starts training.
    Started {
        index: usize,
        of: usize,
        group: &'a str,
        rows: usize,
    },
    /// A group's job event.
    Job(&'a str, &'a JobEvent<'a>),
    /// A group finished (trained, interrupted or failed); `index` counts the groups
    /// finished before it (side by side they finish out of order).
    Finished {
        index: usize,
        of: usize,
        result: &'a GroupResult,
    },
    /// On a GPU, where the groups' networks are: a packed run's (or a network alone's)
    /// epoch, told a few times a second at most, for a progress display.
    Packing(Packing),
}

/// What a group-by run gives back.
#[derive(Debug, Clone)]
pub struct GroupsOutcome {
    /// The directory written.
    pub dir: PathBuf,
    /// Every group, in the order of their first rows in the file.
    pub groups: Vec<GroupResult>,
    /// Stopped by the cancel flag (the groups not reached are `not trained`).
    pub interrupted: bool,
    /// A stopped run's output directory held an earlier run's models: they are kept there,
    /// and `dir` is a new directory beside it (`<out>.interrupted`).
    pub kept_earlier: Option<PathBuf>,
    /// Groups whose models were kept from an earlier run ([`GroupBy::keep_trained`]).
    pub kept: usize,
    /// Stopped runs' directories (`<out>.interrupted`) that an earlier run's models were
    /// kept from, removed once `dir` was written: what they held for this run's groups is
    /// in `dir`.
    pub removed: Vec<PathBuf>,
}

impl GroupsOutcome {
    /// The groups that failed.
    pub fn failed(&self) -> impl Iterator<Item = &GroupResult> {
        self.groups.iter().filter(|g| g.status == "failed")
    }

    /// How many trained groups' models are no better than the linear-Gaussian baseline on
    /// the same rows: a validation (or cross-validated) NLL not below `baseline_nll`.
    pub fn no_better_than_baseline(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| matches!(g.status.as_str(), "trained" | "interrupted"))
            .filter(|g| match (g.val_nll.or(g.cv_nll), g.baseline_nll) {
                (Some(nll), Some(baseline)) => nll >= baseline,
                _ => false,
            })
            .count()
    }
}

/// The rows of each group as CSV text, in a temporary directory ([`split_by_group`]).
pub struct Split {
    /// The data file split.
    pub path: PathBuf,
    /// Holds the groups' files; removed when dropped.
    _dir: TempDirectory,
    /// Per group, in the order of its first row: its text, its file, its rows.
    pub groups: Vec<(String, PathBuf, usize)>,
    /// Per group, its rows' 0-based places among the data file's rows.
    pub places: Vec<Vec<usize>>,
    /// Per group, its rows' lines in the data file.
    pub lines: Vec<Vec<u64>>,
    /// Rows in all groups.
    pub rows: usize,
    /// Rows left out for an empty group cell (`drop_missing`), and the first one's line.
    pub no_group: usize,
    pub first_no_group: Option<u64>,
    /// Per group, the SHA-256 of its file's text (its rows, as its job reads them), where the
    /// split is for training (`used` given); else empty.
    pub digests: Vec<[u8; 32]>,
}

/// The output directory given as `job.out`: where the models go. It must be new, empty, or
/// an earlier run's (its `groups.csv` and the models it lists, nothing else: it is replaced
/// whole), and neither the working directory, one above it, nor one holding `data`.
fn out_dir(job: &TrainJob, data: &Path) -> Result<PathBuf> {
    let dir = job
        .out
        .clone()
        .ok_or_else(|| Error::config("--group-by writes a directory of models: give --out DIR"))?;
    let shown = dir.display();
    let canonical = crate::atomic::destination(&dir).ok().and_then(|d| {
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(std::fs::canonicalize(parent).ok()?.join(d.file_name()?))
    });
    let cwd = std::env::current_dir().ok();
    let Some(canonical) = canonical else {
        return Err(Error::config(format!(
            "--out {shown}: --group-by replaces the directory it writes whole; name a directory \
             of its own (for example --out models)"
        )));
    };
    if cwd.as_deref().is_some_and(|c| c.starts_with(&canonical)) {
        return Err(Error::config(format!(
            "--out {shown} is the working directory or one above it: --group-by replaces the \
             directory it writes whole; name a directory of its own (for example --out models)"
        )));
    }
    if std::fs::canonicalize(data).is_ok_and(|d| d.starts_with(&canonical)) {
        return Err(Error::config(format!(
            "--out {shown} holds the --data file: --group-by replaces the directory it writes \
             whole; choose another"
        )));
    }
    match std::fs::metadata(&dir) {
        Ok(m) if !m.is_dir() => Err(Error::config(format!(
            "--out {shown}: --group-by writes a directory of models, one per group, and this is a \
             file; choose a directory (for example --out models)"
        ))),
        Ok(_) => match foreign_entry(&dir)? {
            Some(path) => Err(Error::config(format!(
                "--out {shown}: the directory holds {}, which no {INDEX} of an earlier \
                 --group-by run lists, and a run replaces the directory whole; choose a new or \
                 empty directory",
                path.display()
            ))),
            None => Ok(dir),
        },
        Err(_) => {
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !parent.is_dir() {
                return Err(Error::config(format!(
                    "--out {shown}: directory {} does not exist",
                    parent.display()
                )));
            }
            Ok(dir)
        }
    }
}

/// The file in a run's staging directory that records each group as its model is written
/// there, a JSON line each after a header line ([`JournalHead`]): what a `--keep-trained`
/// run keeps from a run killed outright (SIGKILL after Slurm's grace period, the out of
/// memory killer, a lost node), which never wrote its index. Removed before the directory
/// is renamed into place.
const JOURNAL: &str = ".groups-journal.jsonl";

/// The first line of a [`JOURNAL`]: the run that writes it.
#[derive(Debug, Serialize, serde::Deserialize)]
struct JournalHead {
    /// `mdn-groups-journal`.
    journal: String,
    /// This machine's name and the run's process id: a journal whose process no longer
    /// runs on this machine is a killed run's.
    host: String,
    pid: u32,
    column: String,
    data: String,
}

/// A run's [`JOURNAL`], open for appending.
struct Journal {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Journal {
    /// A new journal in `staging`; where it cannot be written, none (said in the log): the
    /// run goes on, and only a killed run's models are lost, as before journals.
    fn open(staging: &Path, column: &str, data: &str) -> Journal {
        let path = staging.join(JOURNAL);
        let head = JournalHead {
            journal: "mdn-groups-journal".into(),
            host: crate::atomic::this_host().unwrap_or_default(),
            pid: std::process::id(),
            column: column.to_string(),
            data: data.to_string(),
        };
        let file = (|| -> std::io::Result<std::fs::File> {
            use std::io::Write;
            let mut f = std::fs::File::create(&path)?;
            writeln!(f, "{}", serde_json::to_string(&head)?)?;
            Ok(f)
        })();
        let file = file
            .inspect_err(|e| log::info!("{}: no journal of the groups ({e})", path.display()))
            .ok();
        Journal { path, file }
    }

    /// Records a group whose model is in the staging directory, synced: once this returns,
    /// a killed run's next `--keep-trained` run keeps it.
    fn record(&mut self, r: &GroupResult) {
        use std::io::Write;
        if r.status != "trained" || r.model.is_none() {
            return;
        }
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(r).expect("JSON of a group's row") + "\n";
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.sync_data()) {
                log::info!("{}: {e}; no more groups recorded", self.path.display());
                self.file = None;
            }
        }
    }

    /// Closes and removes the journal (the run's index takes its place).
    fn close(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A killed run's groups, from its staging directory `dir`'s [`JOURNAL`]: None unless the
/// journal was written on this machine by a process that no longer runs (Linux: read from
/// /proc; elsewhere no run counts as killed).
fn killed_run(dir: &Path) -> Option<GroupIndex> {
    let text = std::fs::read_to_string(dir.join(JOURNAL)).ok()?;
    let mut lines = text.lines();
    let head: JournalHead = serde_json::from_str(lines.next()?).ok()?;
    let host = crate::atomic::this_host()?;
    let alive = Path::new(&format!("/proc/{}", head.pid)).exists();
    if head.journal != "mdn-groups-journal" || head.host != host || alive {
        return None;
    }
    // A line cut short by the kill is no group's.
    let groups = lines
        .filter_map(|l| serde_json::from_str::<GroupResult>(l).ok())
        .collect();
    Some(GroupIndex {
        format: "mdn-groups".into(),
        format_version: 1,
        column: head.column,
        data: head.data,
        groups,
    })
}

/// The first entry of directory `dir` that is not an earlier group-by run's (its indexes and
/// the models they list): None where it holds only those, or nothing.
fn foreign_entry(dir: &Path) -> Result<Option<PathBuf>> {
    let listed: Vec<PathBuf> = GroupIndex::read(dir)
        .map(|i| i.models(dir).map(|(_, p)| p).collect())
        .unwrap_or_default();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let path = e.path();
        let ours = [INDEX, INDEX_JSON, JOURNAL]
            .iter()
            .any(|n| e.file_name() == *n);
        if !ours && !listed.contains(&path) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The directories of earlier runs to `dir` that a [`GroupBy::keep_trained`] run keeps
/// models from, newest first: `dir` and the stopped runs' beside it (`<dir>.interrupted`,
/// `<dir>.interrupted-2`, ...), each with its index. One that holds anything else, or whose
/// index cannot be read, is passed over with a warning to `warn`.
fn earlier_runs(dir: &Path, warn: &mut dyn FnMut(&str)) -> Vec<(PathBuf, GroupIndex)> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf, GroupIndex)> = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let stopped = format!("{name}.interrupted");
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        // A run killed while it wrote its models beside `dir` (`TempDirectory::beside`).
        if n.starts_with(".mdn-") && n.ends_with(".tmp") && e.file_type().is_ok_and(|t| t.is_dir())
        {
            let path = dir.with_file_name(&n);
            if let Some(index) = killed_run(&path) {
                let when = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((when, path, index));
            }
            continue;
        }
        let ours = n == *name
            || n == stopped
            || n.strip_prefix(&format!("{stopped}-"))
                .is_some_and(|k| k.parse::<usize>().is_ok());
        // `--out` itself may be a link to a directory; a stopped run's is mdn's own.
        let path = dir.with_file_name(&n);
        let is_dir = match n == *name {
            true => std::fs::metadata(&path).is_ok_and(|m| m.is_dir()),
            false => e.file_type().is_ok_and(|t| t.is_dir()),
        };
        if !ours || !is_dir {
            continue;
        }
        if !path.join(INDEX_JSON).exists() {
            // An empty `--out` is no earlier run; anything else is not mdn's.
            let empty = std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            if !empty {
                warn(&format!(
                    "--keep-trained: keeping no model from {}: it has no {INDEX_JSON}, so no \
                     --group-by run wrote it",
                    path.display()
                ));
            }
            continue;
        }
        let index = GroupIndex::read(&path).and_then(|index| match foreign_entry(&path)? {
            Some(f) => Err(Error::config(format!(
                "it holds {}, which its {INDEX_JSON} does not list",
                f.display()
            ))),
            None => Ok(index),
        });
        match index {
            Ok(index) => {
                let when = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((when, path, index));
            }
            Err(err) => warn(&format!(
                "--keep-trained: keeping no model from {}: {err}",
                path.display()
            )),
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, p, i)| (p, i)).collect()
}

/// Whether the models an earlier run's `index` lists are all in a run's `results`: each of
/// its groups with a model is `trained` there, with the same fingerprint where it was
/// trained in `index` too. A directory of such a run can go without losing a model.
fn superseded(index: &GroupIndex, results: &[GroupResult]) -> bool {
    index.groups.iter().filter(|r| r.model.is_some()).all(|r| {
        results.iter().any(|now| {
            now.group == r.group
                && now.model.is_some()
                && now.status == "trained"
                && (r.status != "trained" || now.fingerprint == r.fingerprint)
        })
    })
}

/// What a group's model depends on: mdn's version, the job's options (`job` with where it
/// trains and where its files are left out) and the SHA-256 of the group's rows (`rows`), as
/// the hex of their SHA-256 ([`GroupResult::fingerprint`]).
fn fingerprint(job: &TrainJob, rows: &[u8; 32]) -> String {
    use sha2::Digest;
    let what = TrainJob {
        data: None,
        out: None,
        device: DeviceChoice::Auto,
        threads: None,
        checkpoint_seconds: TrainJob::default().checkpoint_seconds,
        ..job.clone()
    };
    let mut h = sha2::Sha256::new();
    h.update(b"mdn group fingerprint 1\n");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"\n");
    h.update(
        serde_json::to_string(&what)
            .expect("JSON of a job")
            .as_bytes(),
    );
    h.update(b"\n");
    h.update(rows);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks what a group-by job cannot do, finds the group column, and makes the features
/// explicit without it. Returns the column's index in the header.
fn check(job: &mut TrainJob, by: &GroupBy) -> Result<(PathBuf, usize, String)> {
    let Some(path) = job.data.clone() else {
        return Err(Error::config(
            "--group-by splits a data file's rows: give it with --data",
        ));
    };
    if is_npy(&path) {
        return Err(Error::config(format!(
            "--group-by reads the groups from a CSV file's column, and {} is .npy: give the CSV",
            path.display()
        )));
    }
    for (what, set) in [
        ("--val", job.val.is_some()),
        (
            "--stream and --chunk-rows",
            job.stream || job.chunk_rows.is_some(),
        ),
        ("--resume", job.resume.is_some()),
        (
            "--checkpoint and --checkpoint-every",
            job.checkpoint.is_some() || job.checkpoint_every.is_some(),
        ),
    ] {
        if set {
            return Err(Error::config(format!(
                "{what} cannot be used with --group-by: each group holds out its own validation \
                 rows (--val-fraction) and trains in memory"
            )));
        }
    }
    match by.min_rows {
        Some(0) => return Err(Error::config("--min-group-rows must be at least 1")),
        Some(n) if n < CROSS_VALIDATE_MIN && job.val_fraction.is_none() => {
            return Err(Error::config(format!(
                "--min-group-rows {n} keeps groups of fewer than {CROSS_VALIDATE_MIN} rows, too few \
                 for the defaults to hold out validation rows from: give --min-group-rows \
                 {CROSS_VALIDATE_MIN}, or train every group on all its rows with --val-fraction 0 \
                 --epochs N"
            )));
        }
        _ => {}
    }
    if job
        .out
        .as_deref()
        .and_then(|o| o.extension())
        .is_some_and(|e| e == "json")
    {
        return Err(Error::config(format!(
            "--out {}: --group-by writes a directory of models, one per group, not one model \
             file; name the directory (for example --out models)",
            job.out.as_deref().unwrap_or(Path::new("")).display()
        )));
    }
    let header = crate::data::header(&path)?;
    let named = crate::data::rejoin_names(std::slice::from_ref(&by.column), &header);
    let column = match named.as_slice() {
        [one] => one.clone(),
        _ => by.column.clone(),
    };
    // By name, or by 0-based index as every column option.
    let Some(at) = header
        .iter()
        .position(|h| *h == column)
        .or_else(|| column.parse::<usize>().ok().filter(|&i| i < header.len()))
    else {
        return Err(Error::data(
            Location::line(&path, 1),
            format!(
                "--group-by column '{column}' is not in the header (columns: {})",
                names_shown(&header)
            ),
        ));
    };
    let column = header[at].clone();
    // The columns as the job picks them, by name (a group's file has other positions): the
    // defaults less the group column (constant within a group) where no features are named.
    let choice = crate::data::ColumnChoice::Train {
        targets: (!job.target.is_empty()).then(|| job.target.clone()),
        features: (!job.features.is_empty()).then(|| job.features.clone()),
    };
    let (features, targets) = choice.names(&header, &path)?;
    if targets.contains(&column) {
        return Err(Error::config(format!(
            "--group-by column '{column}' is also a target{}: the groups are named by one \
             column and the model predicts others",
            if job.target.is_empty() {
                " (the last column is the target unless --target names others)"
            } else {
                ""
            }
        )));
    }
    if !job.features.is_empty() && features.contains(&column) {
        return Err(Error::config(format!(
            "--group-by column '{column}' is also in --features: it is the same in every row of \
             a group, so it tells a group's model nothing; leave it out of --features"
        )));
    }
    job.features = features.into_iter().filter(|f| *f != column).collect();
    if job.features.is_empty() {
        return Err(Error::config(format!(
            "--group-by column '{column}' leaves no feature column: the file has only it and \
             the targets"
        )));
    }
    job.target = targets;
    let categorical = crate::data::rejoin_names(&job.categorical, &header);
    job.categorical = categorical.into_iter().filter(|c| *c != column).collect();
    Ok((path, at, column))
}

/// Splits `path` by column `at` into one CSV per group of the columns `used` (by name, in
/// the file's order), in the order of each group's first row. A row without a group (an
/// empty cell: `NA` may be a group's name) is refused, or left out with `drop_missing`.
///
/// With `used` None every column is kept, the group column too, in its place (a model
/// applied to a group's file then reads it as it would the data file).
pub fn split_by_group(
    path: &Path,
    at: usize,
    used: Option<&[String]>,
    drop_missing: bool,
) -> Result<Split> {
    let mut rows = CsvRows::open(path)?;
    let header = rows.header.clone();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&c| used.is_none_or(|u| c != at && u.contains(&header[c])))
        .collect();
    let head_line = keep
        .iter()
        .map(|&c| csv_cell(&header[c]))
        .collect::<Vec<_>>()
        .join(",");
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut groups: Vec<(String, String)> = Vec::new();
    let mut cells = Vec::with_capacity(header.len());
    let mut total = 0;
    let all: Vec<usize> = (0..header.len()).collect();
    let mut counts: Vec<usize> = Vec::new();
    let mut places: Vec<Vec<usize>> = Vec::new();
    let mut lines: Vec<Vec<u64>> = Vec::new();
    let mut place = 0;
    let (mut no_group, mut first_no_group) = (0, None);
    while let Some(line) = {
        cells.clear();
        rows.next_cells(&all, &mut cells)?
    } {
        place += 1;
        let group = &cells[at];
        if group.is_empty() {
            if drop_missing {
                no_group += 1;
                first_no_group.get_or_insert(line);
                continue;
            }
            return Err(Error::data(
                Location::cell(path, line, at + 1, &header[at]),
                "the row has no group (its --group-by cell is empty): --drop-missing leaves such \
                 rows out",
            ));
        }
        let g = match index.get(group.as_str()) {
            Some(&g) => g,
            None => {
                if groups.len() == MOST_GROUPS {
                    return Err(Error::data(
                        Location::cell(path, line, at + 1, &header[at]),
                        format!(
                            "more than {MOST_GROUPS} groups in column '{}': is it an id? each \
                             group is a model file",
                            header[at]
                        ),
                    ));
                }
                index.insert(group.clone(), groups.len());
                groups.push((group.clone(), format!("{head_line}\n")));
                counts.push(0);
                places.push(Vec::new());
                lines.push(Vec::new());
                groups.len() - 1
            }
        };
        let text = &mut groups[g].1;
        for (i, &c) in keep.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&csv_cell(&cells[c]));
        }
        text.push('\n');
        counts[g] += 1;
        places[g].push(place - 1);
        lines[g].push(line);
        total += 1;
    }
    let dir = TempDirectory::new()?;
    let mut files = Vec::with_capacity(groups.len());
    let mut digests = Vec::with_capacity(groups.len());
    for (g, ((value, text), n)) in groups.into_iter().zip(counts).enumerate() {
        let file = dir.path().join(format!("group-{g}.csv"));
        std::fs::write(&file, &text).map_err(|e| Error::io(&file, e))?;
        if used.is_some() {
            digests.push(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).into());
        }
        files.push((value, file, n));
    }
    Ok(Split {
        path: path.to_path_buf(),
        _dir: dir,
        groups: files,
        places,
        lines,
        rows: total,
        no_group,
        first_no_group,
        digests,
    })
}

/// A file name for group `value`: its letters, digits, `.`, `-` and `_`, the rest as `_`,
/// at most 100 characters; `-2`, `-3` ... after a name already taken (case aside, for
/// file systems that ignore it).
fn file_name(value: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let mut base: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if base.is_empty() || base.starts_with('.') || base.eq_ignore_ascii_case("groups") {
        base.insert(0, 'g');
    }
    let mut name = base.clone();
    let mut n = 1;
    while !taken.insert(name.to_lowercase()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    format!("{name}.json")
}

/// One group's training: its job (its rows' file, its model file in the staging
/// directory) and how its messages name it.
struct Task {
    /// Its row in the index.
    slot: usize,
    /// Its place among the groups trained (from 0).
    index: usize,
    job: TrainJob,
    name: String,
    file_text: String,
    shown: String,
}

impl Task {
    /// Trains the group (on `threads` threads where given), filling its `result`; its job
    /// events to `tell`. Whether the run was stopped by `cancel`.
    /// With a `packer`, its networks train with the other groups' in its rounds.
    fn run(
        &self,
        result: &mut GroupResult,
        threads: Option<usize>,
        packer: Option<&Arc<Packer>>,
        tell: &mut dyn FnMut(&JobEvent),
        cancel: &AtomicBool,
    ) -> bool {
        let job = TrainJob {
            threads: threads.or(self.job.threads),
            ..self.job.clone()
        };
        let _busy = packer.map(|p| p.busy());
        let run = job.resolve().and_then(|mut r| {
            r.packer = packer.cloned();
            r.run(
                &mut |e: &JobEvent| match e {
                    // The group file's read warnings (rows left out, by its own lines): the
                    // whole file's read said them with the file's lines.
                    JobEvent::Warning(w) if w.contains(&self.file_text) => {}
                    e => tell(e),
                },
                cancel,
            )
        });
        result.reason = None;
        match run {
            Ok(outcome) => {
                let t = outcome.model.training.as_ref();
                result.model = Some(self.name.clone());
                result.train_rows = t.map(|t| t.train_rows);
                result.val_rows = t.map(|t| t.val_rows);
                result.epochs = t.map(|t| t.epochs);
                result.saved_epoch = t.map(|t| t.saved_epoch);
                result.val_nll = t.and_then(|t| t.ensemble_val_nll.or(t.saved_val_nll()));
                result.cv_nll = t.and_then(|t| t.epoch_choice.as_ref()).map(|c| c.cv_nll);
                result.baseline_nll = t.and_then(|t| t.baseline_val_nll);
                result.status = if outcome.interrupted {
                    "interrupted"
                } else {
                    "trained"
                }
                .into();
                outcome.interrupted
            }
            Err(Error::Interrupted(_)) => {
                result.status = "not trained".into();
                result.reason = Some("the run was stopped first".into());
                true
            }
            Err(e) => {
                result.status = "failed".into();
                result.reason = Some(e.to_string().replace(&self.file_text, &self.shown));
                false
            }
        }
    }
}

/// A group's event, sent from a worker thread to the observer's (or the packer's).
enum Sent {
    Started(usize),
    Warning(usize, String),
    Finished(usize, Box<GroupResult>),
    Packing(Packing),
}

/// The tasks on `workers` threads of `share` CPU threads each, the next group to whichever
/// is free (their networks trained by `packer` where given); the events they send on `tx`,
/// and any other sender's of `rx`, told to `observer` on this thread until every sender has
/// gone. Whether a run was stopped.
#[allow(clippy::too_many_arguments)]
fn run_side_by_side(
    tasks: &[Task],
    results: &mut [GroupResult],
    workers: usize,
    share: usize,
    packer: Option<&Arc<Packer>>,
    (tx, rx): (Sender<Sent>, Receiver<Sent>),
    of: usize,
    observer: &mut dyn FnMut(&GroupEvent),
    cancel: &AtomicBool,
) -> bool {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stopped = AtomicBool::new(false);
    let start: Vec<GroupResult> = results.to_vec();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stopped, start) = (&next, &stopped, &start);
            // Made before the thread: should it not start, the closure (and the guard) is
            // dropped, and the packer does not wait for it.
            let leaves = packer.map(|p| p.leave());
            scope.spawn(move || {
                let _leaves = leaves;
                loop {
                    // The packer's thread gone, a group would only fail: none starts.
                    if packer.is_some_and(|p| p.closed()) {
                        break;
                    }
                    let t = next.fetch_add(1, Ordering::SeqCst);
                    if t >= tasks.len() || cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let task = &tasks[t];
                    let _ = tx.send(Sent::Started(t));
                    let mut result = start[task.slot].clone();
                    let mut tell = |e: &JobEvent| {
                        if let JobEvent::Warning(w) = e {
                            let _ = tx.send(Sent::Warning(t, w.to_string()));
                        }
                    };
                    if task.run(&mut result, Some(share), packer, &mut tell, cancel) {
                        stopped.store(true, Ordering::SeqCst);
                    }
                    let _ = tx.send(Sent::Finished(t, Box::new(result)));
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for sent in rx {
            match sent {
                Sent::Started(t) => {
                    let slot = tasks[t].slot;
                    observer(&GroupEvent::Started {
                        index: t,
                        of,
                        group: &results[slot].group,
                        rows: results[slot].rows,
                    })
                }
                Sent::Warning(t, w) => {
                    let group = results[tasks[t].slot].group.clone();
                    observer(&GroupEvent::Job(&group, &JobEvent::Warning(&w)))
                }
                Sent::Finished(t, result) => {
                    let slot = tasks[t].slot;
                    results[slot] = *result;
                    // Numbered as they finish.
                    observer(&GroupEvent::Finished {
                        index: done,
                        of,
                        result: &results[slot],
                    });
                    done += 1;
                }
                Sent::Packing(p) => observer(&GroupEvent::Packing(p)),
            }
        }
    });
    stopped.into_inner()
}

/// The tasks on a GPU: each group's job on a thread of its own (at most [`MOST_PACKED`] at
/// once), their networks trained together by one [`Packer`] on one device: a group's model
/// is the bits of its job alone. Tells `observer` what was packed. Whether a run was stopped.
fn run_packed(
    tasks: &[Task],
    results: &mut [GroupResult],
    job: &TrainJob,
    of: usize,
    observer: &mut dyn FnMut(&GroupEvent),
    cancel: &AtomicBool,
) -> Result<bool> {
    let workers = of.clamp(1, MOST_PACKED);
    let (device, threads) = (job.device, job.threads);
    let (stopped, told, name) = std::thread::scope(|scope| -> Result<_> {
        let (opened_tx, opened_rx) = std::sync::mpsc::channel::<Result<Arc<Packer>>>();
        let (tx, rx) = std::sync::mpsc::channel::<Sent>();
        let progress = tx.clone();
        // The device is opened, and held, by the thread that serves the packer; a panic there
        // is an error of the run (the groups done so far are kept), not the process's.
        scope.spawn(move || {
            let opened = std::panic::catch_unwind(|| crate::backend::open(device, threads))
                .unwrap_or_else(|_| Err(Error::Backend("opening the device panicked".into())));
            let (mut backend, note) = match opened {
                Ok(o) => o,
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let packer = Arc::new(Packer::new(
                workers,
                backend.name(),
                backend.identity(),
                note,
            ));
            let _ = opened_tx.send(Ok(packer.clone()));
            let mut last: Option<std::time::Instant> = None;
            let mut tell = |p: Packing| {
                if last.is_none_or(|t| t.elapsed().as_millis() >= 200) {
                    last = Some(std::time::Instant::now());
                    let _ = progress.send(Sent::Packing(p));
                }
            };
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                packer.serve(backend.as_mut(), cancel, &mut tell)
            }));
            if served.is_err() {
                log::error!("training the groups' networks together panicked");
            }
        });
        let packer = opened_rx
            .recv()
            .map_err(|_| Error::Backend("the thread opening the device ended".into()))??;
        let stopped = run_side_by_side(
            tasks,
            results,
            workers,
            1,
            Some(&packer),
            (tx, rx),
            of,
            observer,
            cancel,
        );
        Ok((stopped, packer.told(), packer.name().to_string()))
    })?;
    let fits = told.packed_fits + told.alone;
    if fits > 0 {
        observer(&GroupEvent::Job(
            "",
            &JobEvent::Note(&format!(
                "{name}: {fits} network{} trained for the groups (final fits, and small \
                 groups' cross-validation folds): {} of them together in {} packed run{}, {} \
                 alone",
                if fits == 1 { "" } else { "s" },
                told.packed_fits,
                told.packed_runs,
                if told.packed_runs == 1 { "" } else { "s" },
                told.alone
            )),
        ));
    }
    Ok(stopped)
}

/// The index's text: one row per group.
fn index_csv(groups: &[GroupResult]) -> String {
    let mut out = String::from(
        "group,model,rows,train_rows,val_rows,epochs,saved_epoch,val_nll,cv_nll,baseline_nll,status,reason\n",
    );
    let num = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
    let nll = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for g in groups {
        let cells = [
            csv_cell(&g.group),
            g.model.as_deref().map(csv_cell).unwrap_or_default(),
            g.rows.to_string(),
            num(g.train_rows),
            num(g.val_rows),
            num(g.epochs),
            num(g.saved_epoch),
            nll(g.val_nll),
            nll(g.cv_nll),
            nll(g.baseline_nll),
            g.status.clone(),
            g.reason.as_deref().map(csv_cell).unwrap_or_default(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Trains one model per group of `job`'s data file, as [`GroupBy`] says, writing them and
/// the index to the directory `job.out`. `cancel` stops the group training now after its
/// current epoch (its best epoch kept) and trains no other; the directory then has the
/// groups done. A group that fails is recorded with its reason and the others go on.
pub fn train_groups(
    mut job: TrainJob,
    by: &GroupBy,
    observer: &mut dyn FnMut(&GroupEvent),
    cancel: &AtomicBool,
) -> Result<GroupsOutcome> {
    let (path, at, by_column) = check(&mut job, by)?;
    let dir = out_dir(&job, &path)?;
    // Every cell the job uses, checked in the whole file, with its own line numbers; the
    // options and columns with it.
    let whole = job.clone();
    let resolved = TrainJob {
        out: Some(std::env::temp_dir().join("mdn-group-check.json")),
        ..whole
    }
    .resolve()?;
    let mut tell = |e: &JobEvent| observer(&GroupEvent::Job("", e));
    resolved.read_data_telling(&mut tell)?;
    // Which columns are categories is decided once, on the whole file: a date column with a
    // few rows a day is categorical in one store and "an id" in another.
    job.categorical = resolved
        .categorical
        .iter()
        .map(|k| k.column.clone())
        .collect();
    let used: Vec<String> = job.features.iter().chain(&job.target).cloned().collect();
    let split = split_by_group(&path, at, Some(&used), job.drop_missing)?;
    if split.no_group > 0 {
        observer(&GroupEvent::Job(
            "",
            &JobEvent::Warning(&format!(
                "{} row(s) have no group (an empty '{by_column}' cell; the first at line {}): \
                 left out (--drop-missing)",
                split.no_group,
                split.first_no_group.unwrap_or(0)
            )),
        ));
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted(
            "stopped before any group trained: nothing was written".into(),
        ));
    }
    let min = by.min_rows.unwrap_or(match job.val_fraction {
        Some(_) => 1,
        None => CROSS_VALIDATE_MIN,
    });
    let small: Vec<&(String, PathBuf, usize)> = split.groups.iter().filter(|g| g.2 < min).collect();
    if by.min_rows.is_none() && !small.is_empty() {
        let shown: Vec<String> = small
            .iter()
            .take(5)
            .map(|(v, _, n)| format!("'{v}' ({n})"))
            .collect();
        return Err(Error::config(format!(
            "{} of the {} groups in column '{}' {} fewer than {min} rows, too few for the \
             defaults to hold out validation rows from: {}{}; leave them out with \
             --min-group-rows {min}",
            small.len(),
            split.groups.len(),
            by_column,
            if small.len() == 1 { "has" } else { "have" },
            shown.join(", "),
            if small.len() > 5 { ", ..." } else { "" }
        )));
    }
    let staging = TempDirectory::beside(&dir)?;
    let data_name = path.display().to_string();
    let mut journal = Journal::open(staging.path(), &by_column, &data_name);
    let sources = match by.keep_trained {
        true => earlier_runs(&dir, &mut |w| {
            observer(&GroupEvent::Job("", &JobEvent::Warning(w)))
        }),
        false => Vec::new(),
    };
    let mut kept_models = 0;
    // Models kept from each source.
    let mut kept_from = vec![0usize; sources.len()];
    // Every group's row, its model file named in order; the trainable ones are the tasks.
    let mut taken = std::collections::HashSet::new();
    let mut results: Vec<GroupResult> = Vec::with_capacity(split.groups.len());
    let mut tasks: Vec<Task> = Vec::new();
    for (g, (value, file, rows)) in split.groups.iter().enumerate() {
        let mut result = GroupResult {
            group: value.clone(),
            model: None,
            rows: *rows,
            train_rows: None,
            val_rows: None,
            epochs: None,
            saved_epoch: None,
            val_nll: None,
            cv_nll: None,
            baseline_nll: None,
            status: "not trained".into(),
            reason: Some("the run was stopped first".into()),
            fingerprint: None,
        };
        if *rows < min {
            result.status = "left out".into();
            result.reason = Some(format!("{rows} rows, fewer than --min-group-rows {min}"));
        } else {
            let name = file_name(value, &mut taken);
            let print = fingerprint(&job, &split.digests[g]);
            // An earlier run's model of these rows and options, where one is kept.
            let earlier = sources.iter().enumerate().find_map(|(i, (d, index))| {
                let row = index.groups.iter().find(|r| {
                    r.group == *value
                        && r.status == "trained"
                        && r.fingerprint.as_deref() == Some(print.as_str())
                })?;
                // A file name, not a path (an index edited by hand names no other file).
                let model = row.model.as_deref()?;
                if Path::new(model).file_name() != Some(std::ffi::OsStr::new(model)) {
                    return None;
                }
                let file = d.join(model);
                file.is_file().then(|| (i, file, row.clone()))
            });
            result.fingerprint = Some(print);
            if let Some((i, file, row)) = earlier {
                let to = staging.path().join(&name);
                match std::fs::copy(&file, &to) {
                    Ok(_) => {
                        kept_from[i] += 1;
                        let kept = GroupResult {
                            model: Some(name),
                            ..row
                        };
                        journal.record(&kept);
                        results.push(kept);
                        kept_models += 1;
                        continue;
                    }
                    Err(e) => observer(&GroupEvent::Job(
                        "",
                        &JobEvent::Warning(&format!(
                            "--keep-trained: group '{value}' trains again: its model {} could \
                             not be copied: {e}",
                            file.display()
                        )),
                    )),
                }
            }
            tasks.push(Task {
                slot: g,
                index: tasks.len(),
                job: TrainJob {
                    data: Some(file.clone()),
                    out: Some(staging.path().join(&name)),
                    ..job.clone()
                },
                name,
                file_text: file.display().to_string(),
                shown: format!("{data_name} (group '{value}')"),
            });
        }
        results.push(result);
    }
    let of = tasks.len();
    observer(&GroupEvent::Split {
        groups: split.groups.len(),
        left_out: small.len(),
        kept: kept_models,
        rows: split.rows,
    });
    if by.keep_trained {
        let from: Vec<String> = sources
            .iter()
            .zip(&kept_from)
            .filter(|(_, n)| **n > 0)
            .map(|((d, _), n)| {
                let killed = d
                    .file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(".mdn-"));
                match killed {
                    true => format!("{n} from {}, a run killed outright", d.display()),
                    false => format!("{n} from {}", d.display()),
                }
            })
            .collect();
        let note = match (sources.is_empty(), from.is_empty()) {
            (true, _) => format!(
                "--keep-trained: no earlier run's models in {}: every group trains",
                dir.display()
            ),
            (false, true) => format!(
                "--keep-trained: no group's rows and options are as an earlier run's: all {of} \
                 train"
            ),
            (false, false) => format!(
                "--keep-trained: {kept_models} of {} groups' models kept, their rows and options \
                 unchanged ({}); {of} to train",
                kept_models + of,
                from.join(", ")
            ),
        };
        observer(&GroupEvent::Job("", &JobEvent::Note(&note)));
    }
    // On the CPU, groups side by side with the threads shared out (each group's bits are
    // those of `mdn train` on its rows with its share of threads); on a GPU one at a time
    // on one device.
    let on_cpu = match job.device {
        DeviceChoice::Cpu => true,
        DeviceChoice::Auto => crate::backend::auto_device().0 == DeviceChoice::Cpu,
        _ => false,
    };
    let threads = job.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let side_by_side = if on_cpu { threads.min(of).max(1) } else { 1 };
    // Each group's share of the threads is that of a run training every group, kept ones
    // too: a group's bits follow its share.
    let share = (threads / threads.min(kept_models + of).max(1)).max(1);
    // On a GPU, the groups' networks train together where each group's job is one network
    // in memory.
    let packs = !on_cpu && job.ensemble <= 1 && !resolved.streamed;
    let mut interrupted = false;
    // Each group done recorded, for a killed run's next `--keep-trained` run.
    let observer = &mut |e: &GroupEvent| {
        if let GroupEvent::Finished { result, .. } = e {
            journal.record(result);
        }
        observer(e)
    };
    if tasks.is_empty() {
        // Every group kept, or left out.
    } else if packs {
        interrupted = run_packed(&tasks, &mut results, &job, of, observer, cancel)?;
    } else if side_by_side == 1 {
        for task in &tasks {
            if cancel.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let value = &results[task.slot].group.clone();
            observer(&GroupEvent::Started {
                index: task.index,
                of,
                group: value,
                rows: results[task.slot].rows,
            });
            let result = task.run(
                &mut results[task.slot],
                (on_cpu && share != threads).then_some(share),
                None,
                &mut |e| observer(&GroupEvent::Job(value, e)),
                cancel,
            );
            interrupted |= result;
            observer(&GroupEvent::Finished {
                index: task.index,
                of,
                result: &results[task.slot],
            });
        }
    } else {
        interrupted = run_side_by_side(
            &tasks,
            &mut results,
            side_by_side,
            share,
            None,
            std::sync::mpsc::channel(),
            of,
            observer,
            cancel,
        );
    }
    interrupted |= cancel.load(Ordering::Relaxed);
    journal.close();
    if !results.iter().any(|r| r.model.is_some()) {
        // Nothing to replace an earlier run's directory with.
        return Err(match results.iter().find(|r| r.status == "failed") {
            _ if interrupted => {
                Error::Interrupted("stopped before any group trained: nothing was written".into())
            }
            Some(r) => Error::config(format!(
                "no group could be trained; the first, '{}': {}",
                r.group,
                r.reason.as_deref().unwrap_or("no reason recorded")
            )),
            None => Error::config(format!(
                "no group of column '{by_column}' has --min-group-rows {min} rows: nothing to train"
            )),
        });
    }
    let index_path = staging.path().join(INDEX);
    std::fs::write(&index_path, index_csv(&results)).map_err(|e| Error::io(&index_path, e))?;
    let index = GroupIndex {
        format: "mdn-groups".into(),
        format_version: 1,
        column: by_column.clone(),
        data: data_name.clone(),
        groups: results,
    };
    let json_path = staging.path().join(INDEX_JSON);
    let text = serde_json::to_string_pretty(&index).expect("JSON of an index") + "\n";
    std::fs::write(&json_path, text).map_err(|e| Error::io(&json_path, e))?;
    let results = index.groups;
    let kept = staging.path().to_path_buf();
    let dir_name = dir.file_name().unwrap_or_default().to_os_string();
    // A stopped run does not replace an earlier run's whole directory with its part: it goes
    // beside it: to a free name, or with `keep_trained` to the `<out>.interrupted` it kept
    // from, where every model that one holds is in this run's.
    let stopped_dir = dir.with_file_name(format!("{}.interrupted", dir_name.to_string_lossy()));
    let replaces_stopped = sources
        .iter()
        .any(|(d, index)| *d == stopped_dir && superseded(index, &results));
    let (dir, kept_earlier) = match interrupted && dir.exists() {
        true if replaces_stopped => (stopped_dir, Some(dir)),
        true => {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let free = (1..)
                .map(|n| match n {
                    1 => dir.with_file_name(format!("{name}.interrupted")),
                    n => dir.with_file_name(format!("{name}.interrupted-{n}")),
                })
                .find(|p| !p.exists())
                .expect("a free name");
            (free, Some(dir))
        }
        false => (dir, None),
    };
    if let Err(e) = staging.persist_as(&dir) {
        // The models stay where they were written, said so.
        return Err(Error::NotSaved {
            reason: format!("{}: {e}", dir.display()),
            saved_to: kept,
        });
    }
    drop(split);
    // The stopped runs kept from: what they held for these groups is in `dir` now.
    let mut removed = Vec::new();
    let stopped = format!("{}.interrupted", dir_name.to_string_lossy());
    for (d, _) in sources {
        let was_stopped = d.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with(&stopped) || (n.starts_with(".mdn-") && n.ends_with(".tmp"))
        });
        if !was_stopped || d == dir {
            continue;
        }
        // As it is now, not as it was when the run started.
        let gone = match killed_run(&d) {
            Some(index) => superseded(&index, &results),
            None => GroupIndex::read(&d).is_ok_and(|index| {
                superseded(&index, &results) && matches!(foreign_entry(&d), Ok(None))
            }),
        };
        if gone && std::fs::remove_dir_all(&d).is_ok() {
            removed.push(d);
        }
    }
    Ok(GroupsOutcome {
        dir,
        groups: results,
        interrupted,
        kept_earlier,
        kept: kept_models,
        removed,
    })
}

impl Split {
    /// An error reading group `g`'s file told as one reading the data file: its path, and a
    /// line of the group's file as the data file's line.
    pub fn in_data_file(&self, g: usize, e: Error) -> Error {
        let file = &self.groups[g].1;
        let shown = format!("{} (group '{}')", self.path.display(), self.groups[g].0);
        match e {
            Error::Data { mut at, message } if at.path == *file => {
                at.path = self.path.clone();
                // The group file's line 1 is the header, its line n + 2 the group's row n.
                at.line = at.line.map(|l| match l {
                    0 | 1 => l,
                    l => self.lines[g].get(l as usize - 2).copied().unwrap_or(l),
                });
                Error::Data {
                    at,
                    message: format!(
                        "group '{}': {}",
                        self.groups[g].0,
                        message.replace(&file.display().to_string(), &shown)
                    ),
                }
            }
            Error::Config(m) => Error::Config(m.replace(&file.display().to_string(), &shown)),
            e => e,
        }
    }
}

impl Split {
    /// A read warning of group `g`'s file told as one of the data file: its path, and each
    /// `line N` of the group's file as the data file's line.
    pub fn note_in_data_file(&self, g: usize, note: &str) -> String {
        let file = self.groups[g].1.display().to_string();
        let shown = format!("{} (group '{}')", self.path.display(), self.groups[g].0);
        let note = note.replace(&file, &shown);
        let mut out = String::with_capacity(note.len());
        let mut rest = note.as_str();
        while let Some(i) = rest.find("line ") {
            out.push_str(&rest[..i + 5]);
            rest = &rest[i + 5..];
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            match rest[..digits].parse::<usize>() {
                Ok(l) if l >= 2 => {
                    let mapped = self.lines[g].get(l - 2).map_or(l as u64, |&m| m);
                    out.push_str(&mapped.to_string());
                }
                _ => out.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        out
    }
}
