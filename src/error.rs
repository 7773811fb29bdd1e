//! Typed errors for the whole library.
//!
//! Every fallible function in `mdn` returns [`Result<T>`]. Only the binary (`main.rs`) turns
//! an [`Error`] into a message and an exit code: input the user can fix (a bad CSV, a bad
//! option, a corrupt model file) exits with 2, everything else with 1.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a text file something went wrong. Lines and columns are 1-based; the column is a
/// field index for CSV files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub column: Option<usize>,
    /// Name of the CSV column, when known.
    pub column_name: Option<String>,
}

impl Location {
    pub fn file(path: &Path) -> Self {
        Location {
            path: path.to_path_buf(),
            line: None,
            column: None,
            column_name: None,
        }
    }

    pub fn line(path: &Path, line: u64) -> Self {
        Location {
            line: Some(line),
            ..Location::file(path)
        }
    }

    pub fn cell(path: &Path, line: u64, column: usize, name: &str) -> Self {
        Location {
            line: Some(line),
            column: Some(column),
            column_name: Some(name.to_string()),
            ..Location::file(path)
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(name) = &self.column_name {
            write!(f, " (column '{name}')")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in `mdn`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is unreadable or malformed. `at` names the file and, where it applies, the
    /// line and column.
    #[error("{at}: {message}")]
    Data { at: Location, message: String },

    /// A model file is missing, corrupt, of an unsupported version or inconsistent.
    #[error("model file {}: {message}", path.display())]
    ModelFile { path: PathBuf, message: String },

    /// A checkpoint is missing, corrupt, of an unsupported version or inconsistent.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    /// An I/O failure on a named file.
    #[error("{}: {}", path.display(), describe_io(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Options that contradict each other or the data (for example a batch larger than the
    /// training set, or a model applied to data of the wrong width).
    #[error("{0}")]
    Config(String),

    /// Training produced NaN or infinite values that could not be recovered from.
    #[error("numerical failure: {0}")]
    Numerical(String),

    /// A compute backend (GPU) failed: no adapter, device lost, validation error.
    #[error("{0}")]
    Backend(String),

    /// The service's store (its database) cannot be reached or refused a change; the
    /// service retries, and the API answers 503.
    #[error("{0}")]
    Store(String),

    /// Drawing or encoding a figure failed (`mdn plot`).
    #[error("plotting failed: {0}")]
    Plot(String),

    /// Training finished but the model could not be written where asked; it was written to
    /// `saved_to` instead.
    #[error("the trained model could not be written ({reason}); it was saved to {} instead", saved_to.display())]
    NotSaved { reason: String, saved_to: PathBuf },

    /// The user stopped the run (Ctrl-C) before anything could be saved.
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    pub fn data(at: Location, message: impl Into<String>) -> Self {
        Error::Data {
            at,
            message: message.into(),
        }
    }

    pub fn checkpoint(path: &Path, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn model_file(path: &Path, message: impl Into<String>) -> Self {
        Error::ModelFile {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    /// Whether this is an I/O error saying the disk (or the user's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ))
    }

    /// The process exit code `main` uses for this error: 2 for input the user can fix, 1 for
    /// failures of the computation or the machine.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Data { .. }
            | Error::ModelFile { .. }
            | Error::Checkpoint { .. }
            | Error::Config(_) => 2,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::IsADirectory => 2,
                _ => 1,
            },
            Error::Numerical(_)
            | Error::Backend(_)
            | Error::Store(_)
            | Error::Plot(_)
            | Error::NotSaved { .. } => 1,
            Error::Interrupted(_) => 130,
        }
    }
}

/// A short description of an I/O error, without the OS error number.
fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_string(),
        _ => e.to_string(),
    }
}
