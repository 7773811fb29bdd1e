//! Data in: reading CSV files into row-major `f32` matrices of features and targets.
//!
//! A data file is CSV with a header row naming the columns. Which columns are targets and
//! which are features is decided from the header alone ([`ColumnChoice`]), and only those
//! columns are parsed, so a file may carry other columns (an id, a date) that are ignored when
//! `--features` leaves them out. Every problem is reported with the file, the line and the
//! column ([`crate::Error::Data`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};

/// Features and targets of a data set, row-major, in the file's original units.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where the rows came from (for messages).
    pub path: PathBuf,
    pub features: Vec<String>,
    pub targets: Vec<String>,
    /// `rows * features.len()` values.
    pub x: Vec<f32>,
    /// `rows * targets.len()` values; empty when the targets were not asked for.
    pub y: Vec<f32>,
    pub rows: usize,
}

impl Dataset {
    pub fn d_in(&self) -> usize {
        self.features.len()
    }

    pub fn d_out(&self) -> usize {
        self.targets.len()
    }

    /// A new data set holding the given rows, in the given order.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let (d, t) = (self.d_in(), self.d_out());
        let mut x = Vec::with_capacity(rows.len() * d);
        let mut y = Vec::with_capacity(rows.len() * t);
        for &r in rows {
            x.extend_from_slice(&self.x[r * d..(r + 1) * d]);
            if t > 0 && !self.y.is_empty() {
                y.extend_from_slice(&self.y[r * t..(r + 1) * t]);
            }
        }
        Dataset {
            path: self.path.clone(),
            features: self.features.clone(),
            targets: self.targets.clone(),
            x,
            y,
            rows: rows.len(),
        }
    }
}

/// How to pick feature and target columns from a header.
#[derive(Debug, Clone, Default)]
pub enum ColumnChoice {
    /// For training: `targets` by name (default: the last column); `features` by name
    /// (default: every column that is not a target).
    #[default]
    Default,
    Train {
        targets: Option<Vec<String>>,
        features: Option<Vec<String>>,
    },
    /// For a trained model: exactly these features, and these targets when `need_targets`
    /// (otherwise the targets are read only if all of them are present).
    Model {
        features: Vec<String>,
        targets: Vec<String>,
        need_targets: bool,
    },
}

struct Selection {
    features: Vec<usize>,
    targets: Vec<usize>,
}

fn find(header: &[String], name: &str, path: &Path, role: &str) -> Result<usize> {
    header.iter().position(|h| h == name).ok_or_else(|| {
        Error::data(
            Location::line(path, 1),
            format!(
                "{role} column '{name}' is not in the header (columns: {})",
                header.join(", ")
            ),
        )
    })
}

impl ColumnChoice {
    fn resolve(&self, header: &[String], path: &Path) -> Result<Selection> {
        match self {
            ColumnChoice::Default => ColumnChoice::Train {
                targets: None,
                features: None,
            }
            .resolve(header, path),
            ColumnChoice::Train { targets, features } => {
                let targets: Vec<usize> = match targets {
                    Some(names) if !names.is_empty() => names
                        .iter()
                        .map(|n| find(header, n, path, "target"))
                        .collect::<Result<_>>()?,
                    _ => vec![header.len() - 1],
                };
                let features: Vec<usize> = match features {
                    Some(names) if !names.is_empty() => names
                        .iter()
                        .map(|n| find(header, n, path, "feature"))
                        .collect::<Result<_>>()?,
                    _ => (0..header.len()).filter(|c| !targets.contains(c)).collect(),
                };
                for &t in &targets {
                    if features.contains(&t) {
                        return Err(Error::data(
                            Location::line(path, 1),
                            format!("column '{}' is both a target and a feature", header[t]),
                        ));
                    }
                }
                check_unique(&targets, header, path, "target")?;
                check_unique(&features, header, path, "feature")?;
                if features.is_empty() {
                    return Err(Error::data(
                        Location::line(path, 1),
                        format!(
                            "no feature columns left: the header has only {} and it is the target",
                            header.join(", ")
                        ),
                    ));
                }
                Ok(Selection { features, targets })
            }
            ColumnChoice::Model {
                features,
                targets,
                need_targets,
            } => {
                let missing: Vec<&str> = features
                    .iter()
                    .filter(|f| !header.contains(f))
                    .map(|f| f.as_str())
                    .collect();
                if !missing.is_empty() {
                    return Err(Error::data(
                        Location::line(path, 1),
                        format!(
                            "the model needs {} feature column(s) ({}) but the header lacks {} (columns: {})",
                            features.len(),
                            features.join(", "),
                            missing.join(", "),
                            header.join(", ")
                        ),
                    ));
                }
                let features = features
                    .iter()
                    .map(|n| find(header, n, path, "feature"))
                    .collect::<Result<_>>()?;
                let have_targets = targets.iter().all(|t| header.contains(t));
                let targets = if *need_targets || have_targets {
                    targets
                        .iter()
                        .map(|n| find(header, n, path, "target"))
                        .collect::<Result<_>>()?
                } else {
                    Vec::new()
                };
                Ok(Selection { features, targets })
            }
        }
    }
}

fn check_unique(cols: &[usize], header: &[String], path: &Path, role: &str) -> Result<()> {
    for (i, c) in cols.iter().enumerate() {
        if cols[..i].contains(c) {
            return Err(Error::data(
                Location::line(path, 1),
                format!("{role} column '{}' is named twice", header[*c]),
            ));
        }
    }
    Ok(())
}

/// Reads a CSV file with a header row, parsing only the columns `choice` selects.
///
/// Refuses, with file, line and column: a missing or empty file, a header with no rows, a
/// header with empty or repeated names (or that looks like data), ragged rows, cells that are
/// not numbers, and NaN or infinite values.
pub fn read_csv(path: &Path, choice: &ColumnChoice) -> Result<Dataset> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::data(
            Location::file(path),
            "is a directory, not a CSV file",
        ));
    }
    read_csv_from(std::io::BufReader::new(file), path, choice)
}

/// [`read_csv`] from any reader; `path` names the source in messages.
pub fn read_csv_from(
    source: impl std::io::Read,
    path: &Path,
    choice: &ColumnChoice,
) -> Result<Dataset> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(source);
    let csv_err = |e: csv::Error| -> Error {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        let message = match e.kind() {
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 text".to_string(),
            csv::ErrorKind::Io(io) => io.to_string(),
            _ => e.to_string(),
        };
        if line > 0 {
            Error::data(Location::line(path, line), message)
        } else {
            Error::data(Location::file(path), message)
        }
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == 0 {
                h.trim_start_matches('\u{feff}').to_string()
            } else {
                h.to_string()
            }
        })
        .collect();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(Error::data(
            Location::file(path),
            "the file is empty (expected a header row naming the columns)",
        ));
    }
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(Error::data(
                Location {
                    column: Some(i + 1),
                    ..Location::line(path, 1)
                },
                "empty column name in the header",
            ));
        }
        if header[..i].contains(h) {
            return Err(Error::data(
                Location::cell(path, 1, i + 1, h),
                "column name repeated in the header",
            ));
        }
    }
    if header.iter().all(|h| h.parse::<f64>().is_ok()) {
        return Err(Error::data(
            Location::line(path, 1),
            "the first line looks like data, not a header: mdn needs a header row naming the columns",
        ));
    }
    let sel = choice.resolve(&header, path)?;

    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut rows = 0usize;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_err(e)),
        }
        let line = record
            .position()
            .map(|p| p.line())
            .unwrap_or(rows as u64 + 2);
        if record.len() != header.len() {
            return Err(Error::data(
                Location::line(path, line),
                format!(
                    "row has {} fields but the header has {}",
                    record.len(),
                    header.len()
                ),
            ));
        }
        for (cols, out) in [(&sel.features, &mut x), (&sel.targets, &mut y)] {
            for &c in cols.iter() {
                out.push(parse_cell(&record[c], path, line, c, &header[c])?);
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(Error::data(
            Location::file(path),
            "has a header but no data rows",
        ));
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        features: sel.features.iter().map(|&c| header[c].clone()).collect(),
        targets: sel.targets.iter().map(|&c| header[c].clone()).collect(),
        x,
        y,
        rows,
    })
}

fn parse_cell(cell: &str, path: &Path, line: u64, col: usize, name: &str) -> Result<f32> {
    let at = || Location::cell(path, line, col + 1, name);
    if cell.is_empty() {
        return Err(Error::data(at(), "empty cell (missing value)"));
    }
    let v: f64 = cell
        .parse()
        .map_err(|_| Error::data(at(), format!("'{cell}' is not a number")))?;
    if !v.is_finite() {
        return Err(Error::data(
            at(),
            format!("'{cell}' is not a finite number (NaN and infinity are refused)"),
        ));
    }
    let f = v as f32;
    if !f.is_finite() {
        return Err(Error::data(
            at(),
            format!("'{cell}' is outside the range of 32-bit floats"),
        ));
    }
    Ok(f)
}
