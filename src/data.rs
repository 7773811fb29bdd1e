//! Data in: reading CSV files into row-major `f32` matrices of features and targets.
//!
//! A data file is CSV with a header row naming the columns. Which columns are targets and
//! which are features is decided from the header alone ([`ColumnChoice`]), and only those
//! columns are parsed, so a file may carry other columns (an id, a date) that are ignored when
//! `--features` leaves them out. Every problem is reported with the file, the line and the
//! column ([`crate::Error::Data`]).

use std::path::{Path, PathBuf};

use crate::categorical::{Categorical, Lookup, UnknownCategory};
use crate::error::{Error, Location, Result};
use crate::transform::Transform;

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
    /// (otherwise no targets are read: new data to predict for often has its target column
    /// empty or "NA", and predicting never reads it).
    /// Categorical columns are read from their raw text through `categorical`, a category
    /// not in it treated as `unknown` says; a column named like an input itself (a `.npy`
    /// file a CSV was converted to) is read as a number. Rows with a missing value: `missing`.
    Model {
        features: Vec<String>,
        targets: Vec<String>,
        need_targets: bool,
        categorical: Vec<Categorical>,
        unknown: UnknownCategory,
        /// A training job's read (its categories learnt from its own rows): an unknown
        /// category, only in a validation file, is refused with what to do in training.
        training: bool,
        missing: Missing,
        /// Per target, its transform: a target value outside the transform's support is
        /// refused with its place (empty: none).
        transforms: Vec<Transform>,
    },
}

/// What a reader does with a row that has a missing value (an empty cell, `NA`, ...) in a
/// column it reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Missing {
    /// Refuse the file at the first one, saying how many rows have one.
    #[default]
    Refuse,
    /// The same, adding that `--drop-missing` would leave them out (training).
    RefuseSayingDrop,
    /// Leave such rows out, with a warning counting them (`--drop-missing`).
    Drop,
}

/// The columns a read takes: raw feature columns (each a number, or a categorical column's
/// one-hot indicators), target columns, and the network input names they make.
struct Selection {
    features: Vec<usize>,
    targets: Vec<usize>,
    /// Per raw feature column: its categories when it is categorical.
    encode: Vec<Option<Lookup>>,
    /// The names of the inputs the features make (`column=category` for categories).
    inputs: Vec<String>,
}

impl Selection {
    fn numeric(features: Vec<usize>, targets: Vec<usize>, header: &[String]) -> Selection {
        Selection {
            encode: features.iter().map(|_| None).collect(),
            inputs: features.iter().map(|&c| header[c].clone()).collect(),
            features,
            targets,
        }
    }
}

/// Column names given comma-separated (`--features a,b`), their list split at every comma:
/// pieces that together make a name the header has (`dur, "days"`) are joined again. A piece
/// that is a name itself stays one; otherwise the longest run making a name wins. Runs are
/// no longer than the header's names have commas (none: the list is returned as it is).
pub fn rejoin_names(names: &[String], header: &[String]) -> Vec<String> {
    let most = header
        .iter()
        .map(|h| h.matches(',').count())
        .max()
        .unwrap_or(0);
    if most == 0 {
        return names.to_vec();
    }
    let known: std::collections::HashSet<&str> = header.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(names.len());
    let mut i = 0;
    while i < names.len() {
        let longest = (i + 2..=names.len().min(i + most + 1))
            .rev()
            .find(|&j| known.contains(names[i..j].join(",").as_str()));
        match longest {
            Some(j) if !known.contains(names[i].as_str()) => {
                out.push(names[i..j].join(","));
                i = j;
            }
            _ => {
                out.push(names[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// Column names as a message lists them: a name with a comma, or with spaces at its ends,
/// in quotes ('dur, "days"'), so that the list reads as the header has it.
pub fn names_shown(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            if n.contains(',') || n.trim() != n || n.is_empty() {
                format!("'{n}'")
            } else {
                n.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Column names as one shell word for an option (`--features 'sale date,sqft'`): quoted
/// when a shell would split or expand them.
pub fn shell_list(names: &[&str]) -> String {
    let list = names.join(",");
    let plain = list
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.,=:/+-@%".contains(c));
    if plain && !list.is_empty() {
        list
    } else {
        format!("'{}'", list.replace('\'', "'\\''"))
    }
}

/// A column by name or, failing that, by 0-based index ("3" is the fourth column).
fn find(header: &[String], name: &str, path: &Path, role: &str) -> Result<usize> {
    let by_index = || name.parse::<usize>().ok().filter(|&i| i < header.len());
    header
        .iter()
        .position(|h| h == name)
        .or_else(by_index)
        .ok_or_else(|| {
            if !is_npy(path) {
                return Error::data(
                    Location::line(path, 1),
                    format!(
                        "{role} column '{name}' is not in the header (columns: {})",
                        names_shown(header)
                    ),
                );
            }
            // A .npy file has no header: its names come from the file beside it, if any.
            let names = crate::npy::columns_path(path);
            let whence = if names.exists() {
                format!("named in {}", names.display())
            } else {
                format!(
                    "numbered from 0: no {} names them, as mdn convert writes one",
                    names.display()
                )
            };
            Error::data(
                Location::file(path),
                format!(
                    "{role} column '{name}' is not one of its columns ({}, {whence})",
                    header.join(", ")
                ),
            )
        })
}

impl ColumnChoice {
    /// The feature and target columns this choice picks from `header`, by name: the one
    /// place that decides columns (by name, or by 0-based index), for every way of reading.
    pub fn names(&self, header: &[String], path: &Path) -> Result<(Vec<String>, Vec<String>)> {
        let sel = self.resolve(header, path)?;
        let targets = sel.targets.iter().map(|&c| header[c].clone()).collect();
        Ok((sel.inputs, targets))
    }

    /// The choice of a trained model's columns: its features (categorical ones read from
    /// their text), and its targets when `need_targets`; unknown categories and missing
    /// values refused.
    pub fn model(
        features: &[String],
        targets: &[String],
        categorical: &[Categorical],
        need_targets: bool,
    ) -> ColumnChoice {
        ColumnChoice::Model {
            features: features.to_vec(),
            targets: targets.to_vec(),
            need_targets,
            categorical: categorical.to_vec(),
            unknown: UnknownCategory::Error,
            training: false,
            missing: Missing::Refuse,
            transforms: Vec::new(),
        }
    }

    /// This choice as a training job's read (a model's choice only): an unknown category
    /// (in a validation file) is refused saying what to do in training.
    pub fn for_training(mut self) -> ColumnChoice {
        if let ColumnChoice::Model { training, .. } = &mut self {
            *training = true;
        }
        self
    }

    fn training(&self) -> bool {
        matches!(self, ColumnChoice::Model { training: true, .. })
    }

    /// This choice refusing a target value outside its transform's support (a model's
    /// choice only; `transforms` one per target, or empty).
    pub fn with_transforms(mut self, transforms: &[Transform]) -> ColumnChoice {
        if let ColumnChoice::Model { transforms: t, .. } = &mut self {
            *t = transforms.to_vec();
        }
        self
    }

    fn transforms(&self) -> &[Transform] {
        match self {
            ColumnChoice::Model { transforms, .. } => transforms,
            _ => &[],
        }
    }

    /// This choice treating unknown categories as `unknown` says (a model's choice only).
    pub fn with_unknown(mut self, unknown: UnknownCategory) -> ColumnChoice {
        if let ColumnChoice::Model { unknown: u, .. } = &mut self {
            *u = unknown;
        }
        self
    }

    /// This choice treating missing values as `missing` says (a model's choice only).
    pub fn with_missing(mut self, missing: Missing) -> ColumnChoice {
        if let ColumnChoice::Model { missing: m, .. } = &mut self {
            *m = missing;
        }
        self
    }

    fn missing(&self) -> Missing {
        match self {
            ColumnChoice::Model { missing, .. } => *missing,
            _ => Missing::Refuse,
        }
    }

    fn unknown(&self) -> UnknownCategory {
        match self {
            ColumnChoice::Model { unknown, .. } => *unknown,
            _ => UnknownCategory::Error,
        }
    }

    /// The choice of exactly these columns, by name.
    pub fn exactly(features: Vec<String>, targets: Vec<String>) -> ColumnChoice {
        ColumnChoice::Train {
            targets: Some(targets),
            features: Some(features),
        }
    }

    fn resolve(&self, header: &[String], path: &Path) -> Result<Selection> {
        match self {
            ColumnChoice::Default => ColumnChoice::Train {
                targets: None,
                features: None,
            }
            .resolve(header, path),
            ColumnChoice::Train { targets, features } => {
                // By default columns without a name (pandas' index) are neither.
                let named = |c: &usize| !is_unnamed(header, *c);
                let targets: Vec<usize> = match targets {
                    Some(names) if !names.is_empty() => rejoin_names(names, header)
                        .iter()
                        .map(|n| find(header, n, path, "target"))
                        .collect::<Result<_>>()?,
                    _ => vec![
                        (0..header.len())
                            .rev()
                            .find(named)
                            .unwrap_or(header.len() - 1),
                    ],
                };
                let features: Vec<usize> = match features {
                    Some(names) if !names.is_empty() => rejoin_names(names, header)
                        .iter()
                        .map(|n| find(header, n, path, "feature"))
                        .collect::<Result<_>>()?,
                    _ => (0..header.len())
                        .filter(|c| !targets.contains(c) && named(c))
                        .collect(),
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
                    let unnamed = (0..header.len()).any(|c| is_unnamed(header, c));
                    return Err(Error::data(
                        Location::line(path, 1),
                        format!(
                            "no feature columns left: the header has only {} and it is the target{}",
                            names_shown(header),
                            if unnamed {
                                " (a column without a name is left out unless named: \
                                 --features \"Unnamed: 0\")"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                Ok(Selection::numeric(features, targets, header))
            }
            ColumnChoice::Model {
                features,
                targets,
                need_targets,
                categorical,
                ..
            } => {
                // Raw columns, in order: a feature the header names is read as a number; a
                // categorical column's run of inputs from the column's text.
                let (mut cols, mut encode, mut lacking) = (Vec::new(), Vec::new(), Vec::new());
                let mut i = 0;
                while i < features.len() {
                    if let Some(c) = header.iter().position(|h| *h == features[i]) {
                        cols.push(c);
                        encode.push(None);
                        i += 1;
                    } else if let Some(cat) = crate::categorical::run_at(features, i, categorical) {
                        match header.iter().position(|h| *h == cat.column) {
                            Some(c) => {
                                cols.push(c);
                                encode.push(Some(Lookup::new(cat)));
                            }
                            None => lacking.push(cat.column.clone()),
                        }
                        i += cat.categories.len();
                    } else {
                        lacking.push(features[i].clone());
                        i += 1;
                    }
                }
                if !lacking.is_empty() {
                    let needed = crate::categorical::raw_columns(features, categorical);
                    return Err(Error::data(
                        Location::line(path, 1),
                        format!(
                            "the model needs {} feature column(s) ({}) but the header lacks {} (columns: {})",
                            needed.len(),
                            needed.join(", "),
                            lacking.join(", "),
                            header.join(", ")
                        ),
                    ));
                }
                let targets = if *need_targets {
                    targets
                        .iter()
                        .map(|n| find(header, n, path, "target"))
                        .collect::<Result<_>>()?
                } else {
                    Vec::new()
                };
                Ok(Selection {
                    features: cols,
                    targets,
                    encode,
                    inputs: features.clone(),
                })
            }
        }
    }
}

/// What a file that starts with `head` is when it is plainly not CSV text (a spreadsheet,
/// compressed, UTF-16, JSON, a `.npy` array): said instead of a parse error at line 1.
fn not_csv(head: &[u8]) -> Option<String> {
    let save_as = "save it as CSV (in Excel: CSV UTF-8), or with pandas: \
                   pd.read_excel(f).to_csv(\"data.csv\", index=False)";
    let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let mut bytes = text.iter().filter(|b| !b.is_ascii_whitespace());
    let (first, second) = (bytes.next(), bytes.next());
    // `{"`, `[{`, `[[`, `["`: not a header such as `[m] length,...`, `[1/s] rate,...`, `{x},...`.
    let json = match (first, second) {
        (Some(b'{'), Some(c)) => matches!(c, b'"' | b'}'),
        (Some(b'['), Some(c)) => matches!(c, b'{' | b'[' | b'"' | b']'),
        _ => false,
    };
    Some(if head.starts_with(b"PK\x03\x04") {
        format!("a zip archive (an Excel .xlsx workbook is one), not CSV text: {save_as}")
    } else if head.starts_with(b"\xd0\xcf\x11\xe0") {
        format!("an old Excel .xls workbook, not CSV text: {save_as}")
    } else if head.starts_with(b"\x1f\x8b") {
        "gzip-compressed: decompress it first (gunzip, or zcat FILE > data.csv)".to_string()
    } else if head.starts_with(b"\xff\xfe") || head.starts_with(b"\xfe\xff") {
        "UTF-16 text (what Excel's \"Unicode text\" writes): save it as UTF-8 (in Excel: CSV \
         UTF-8; iconv -f UTF-16 -t UTF-8)"
            .to_string()
    } else if head.starts_with(b"\x93NUMPY") {
        "a .npy array: give it a .npy name (mdn reads a file by its extension)".to_string()
    } else if head.starts_with(b"PAR1") && head[4..].iter().take(64).any(|&b| b < 0x09) {
        "a Parquet file, not CSV text: with pandas, pd.read_parquet(f).to_csv(\"data.csv\", \
         index=False)"
            .to_string()
    } else if json {
        "JSON, not CSV text: mdn reads CSV with a header row (with pandas: \
         pd.read_json(f, lines=...).to_csv(\"data.csv\", index=False))"
            .to_string()
    } else {
        return None;
    })
}

/// The name of column `i` (from 0) when the header gives it none, as pandas names it.
fn unnamed(i: usize) -> String {
    format!("Unnamed: {i}")
}

/// Whether column `c` has no name of its own: empty in the header, or pandas' name for such
/// a column (a file pandas wrote after reading one with an index column).
fn is_unnamed(header: &[String], c: usize) -> bool {
    header[c] == unnamed(c)
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

/// Reads a data file: `.npy` (see [`crate::npy`]) by its extension, CSV otherwise.
pub fn read_data(path: &Path, choice: &ColumnChoice) -> Result<Dataset> {
    if is_npy(path) {
        read_npy(path, choice)
    } else {
        read_csv(path, choice)
    }
}

/// The column names of a data file without reading its rows: a CSV file's header, or a
/// `.npy` file's names (from `<file>.columns.json`, else "0", "1", ...).
pub fn header(path: &Path) -> Result<Vec<String>> {
    if is_npy(path) {
        let reader = crate::npy::NpyReader::open(path)?;
        crate::npy::column_names(path, reader.header.cols)
    } else {
        Ok(CsvRows::open(path)?.header)
    }
}

/// Whether a path names a `.npy` file.
pub fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Reads the columns `choice` selects from a 2-D float32 or float64 `.npy` file.
pub fn read_npy(path: &Path, choice: &ColumnChoice) -> Result<Dataset> {
    let mut reader = crate::npy::NpyReader::open(path)?;
    let (rows, cols) = (reader.header.rows, reader.header.cols);
    let names = crate::npy::column_names(path, cols)?;
    let sel = choice.resolve(&names, path)?;
    numbers_only(&sel, path)?;
    if rows == 0 {
        return Err(Error::data(Location::file(path), "the array has no rows"));
    }
    let mut x = Vec::with_capacity(rows * sel.features.len());
    let mut y = Vec::with_capacity(rows * sel.targets.len());
    let mut chunk = Vec::new();
    while reader.read_rows(65536, &mut chunk)? > 0 {
        for row in chunk.chunks_exact(cols) {
            x.extend(sel.features.iter().map(|&c| row[c]));
            y.extend(sel.targets.iter().map(|&c| row[c]));
        }
    }
    let targets: Vec<String> = sel.targets.iter().map(|&c| names[c].clone()).collect();
    // A target outside its transform's support, by its row in the array.
    crate::model::transformed_targets(path, &targets, choice.transforms(), &y)?;
    Ok(Dataset {
        path: path.to_path_buf(),
        features: sel.inputs,
        targets,
        x,
        y,
        rows,
    })
}

/// Refuses a `.npy` file for a model that reads a column of it as categories: a `.npy` file
/// holds numbers only.
fn numbers_only(sel: &Selection, path: &Path) -> Result<()> {
    match sel.encode.iter().flatten().next() {
        Some(lookup) => Err(Error::data(
            Location::file(path),
            format!(
                "the model reads column '{}' as categories (text), but a .npy file holds numbers; \
                 give the data as CSV",
                lookup.column
            ),
        )),
        None => Ok(()),
    }
}

/// Reads a CSV file with a header row, parsing only the columns `choice` selects.
///
/// Refuses, with file, line and column: a missing or empty file, a header with no rows, a
/// header with empty or repeated names (or that looks like data), ragged rows, cells that are
/// not numbers, and NaN or infinite values.
pub fn read_csv(path: &Path, choice: &ColumnChoice) -> Result<Dataset> {
    let (data, notes) = rows_to_dataset(CsvRows::open(path)?, path, choice)?;
    log_notes(notes);
    Ok(data)
}

/// A CSV source read record by record: the header is checked on opening, and each call of
/// [`CsvRows::next_row`] parses the requested columns of one record.
pub struct CsvRows<R: std::io::Read> {
    reader: csv::Reader<CountLines<std::io::BufReader<R>>>,
    lines: std::sync::Arc<std::sync::Mutex<LineEnds>>,
    path: PathBuf,
    pub header: Vec<String>,
    /// The field separator: `,`, or `;` or a tab when the header shows the file uses one.
    pub delimiter: u8,
    record: csv::StringRecord,
}

/// The line endings a CSV reader has been given (offset, and whether it is a `\n`), kept from
/// the last record's start on, so a record's line is exact for any line ending. The csv crate
/// counts lines itself, but a record's position in a CRLF file is the previous line's `\n`
/// (its lines came out one too early) and includes blank lines skipped before it.
#[derive(Default)]
struct LineEnds {
    ends: std::collections::VecDeque<(u64, bool)>,
    read: u64,
    newlines_before: u64,
}

impl LineEnds {
    /// The 1-based line of the first character at or after `byte` that ends no line: where the
    /// record the csv crate placed at `byte` really begins. Bytes must come in order.
    fn line_at(&mut self, byte: u64) -> u64 {
        while let Some(&(at, newline)) = self.ends.front() {
            if at >= byte {
                break;
            }
            self.newlines_before += newline as u64;
            self.ends.pop_front();
        }
        let (mut lines, mut next) = (self.newlines_before, byte);
        for &(at, newline) in &self.ends {
            if at != next {
                break;
            }
            lines += newline as u64;
            next += 1;
        }
        lines + 1
    }
}

/// A reader noting every line ending that passes through it in a shared [`LineEnds`].
struct CountLines<R> {
    inner: R,
    lines: std::sync::Arc<std::sync::Mutex<LineEnds>>,
}

impl<R: std::io::Read> std::io::Read for CountLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = lock(&self.lines);
        let start = lines.read;
        for i in memchr::memchr2_iter(b'\r', b'\n', &buf[..n]) {
            lines.ends.push_back((start + i as u64, buf[i] == b'\n'));
        }
        lines.read += n as u64;
        Ok(n)
    }
}

/// The field separator a file's header line shows: `;` or a tab when the line has no comma
/// and does have that separator (and not the other), else `,`; separators inside a quoted
/// name (`"price, EUR";age`) do not count. European spreadsheets write `;`-separated files;
/// a tab-separated export is common too.
fn sniff_delimiter(first_line: &[u8]) -> u8 {
    let mut quoted = false;
    let mut outside = Vec::with_capacity(first_line.len());
    for &b in first_line {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            outside.push(b);
        }
    }
    let has = |b: u8| outside.contains(&b);
    if has(b',') {
        return b',';
    }
    match (has(b';'), has(b'\t')) {
        (true, false) => b';',
        (false, true) => b'\t',
        _ => b',',
    }
}

impl CsvRows<std::fs::File> {
    /// Opens a CSV file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::data(
                Location::file(path),
                "is a directory, not a CSV file",
            ));
        }
        CsvRows::new(file, path)
    }
}

impl<R: std::io::Read> CsvRows<R> {
    /// Reads and checks the header: not empty, no empty or repeated names, not data. The
    /// separator is sniffed from the header line ([`sniff_delimiter`]).
    pub fn new(source: R, path: &Path) -> Result<Self> {
        let mut source = std::io::BufReader::with_capacity(1 << 20, source);
        let first_line = {
            use std::io::BufRead;
            let buf = source.fill_buf().map_err(|e| Error::io(path, e))?;
            if let Some(what) = not_csv(buf) {
                return Err(Error::data(Location::file(path), what));
            }
            let end = memchr::memchr2(b'\r', b'\n', buf).unwrap_or(buf.len());
            buf[..end].to_vec()
        };
        let delimiter = sniff_delimiter(&first_line);
        let lines = std::sync::Arc::new(std::sync::Mutex::new(LineEnds::default()));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .delimiter(delimiter)
            .trim(csv::Trim::All)
            .from_reader(CountLines {
                inner: source,
                lines: lines.clone(),
            });
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| csv_error(e, path, &lines))?
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
        if header.iter().all(|h| h.is_empty()) {
            return Err(Error::data(
                Location::line(path, 1),
                "the header names no column (expected a header row naming the columns)",
            ));
        }
        // A first line of numbers (its empty fields aside: a headerless file's trailing
        // separator or missing first cell) is data, not a header.
        let numbers = header
            .iter()
            .filter(|h| !h.is_empty())
            .all(|h| h.parse::<f64>().is_ok());
        // A column without a name is pandas' index (`df.to_csv()`), or the empty field after
        // a trailing separator: named as pandas reads it, and left out by default.
        let header: Vec<String> = header
            .into_iter()
            .enumerate()
            .map(|(i, h)| if h.is_empty() { unnamed(i) } else { h })
            .collect();
        for (i, h) in header.iter().enumerate() {
            if header[..i].contains(h) {
                return Err(Error::data(
                    Location::cell(path, 1, i + 1, h),
                    "column name repeated in the header",
                ));
            }
        }
        if numbers {
            return Err(Error::data(
                Location::line(path, 1),
                "the first line looks like data, not a header: mdn needs a header row naming the columns",
            ));
        }
        Ok(CsvRows {
            reader,
            lines,
            path: path.to_path_buf(),
            header,
            delimiter,
            record: csv::StringRecord::new(),
        })
    }

    /// Parses columns `groups[g]` of the next record, appending them to `outs[g]`; false at
    /// the end of the file. Ragged rows and bad cells are refused with their place.
    pub fn next_row(&mut self, groups: &[&[usize]], outs: &mut [&mut Vec<f32>]) -> Result<bool> {
        let Some(line) = self.next_record()? else {
            return Ok(false);
        };
        for (cols, out) in groups.iter().zip(outs.iter_mut()) {
            for &c in cols.iter() {
                out.push(parse_cell(
                    &self.record[c],
                    &self.path,
                    line,
                    c,
                    &self.header[c],
                )?);
            }
        }
        Ok(true)
    }
}

impl<R: std::io::Read> CsvRows<R> {
    /// Reads the next record, refusing a ragged one; its line, or `None` at the end.
    fn next_record(&mut self) -> Result<Option<u64>> {
        loop {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) => return Err(csv_error(e, &self.path, &self.lines)),
            }
            // A line of spaces is a blank line (skipped, as an empty one is), not a row of
            // one empty field; in a one-column file it is a missing value.
            let blank = self.record.len() == 1 && self.record[0].is_empty();
            if !(blank && self.header.len() > 1) {
                break;
            }
        }
        let line = match self.record.position() {
            Some(p) => lock(&self.lines).line_at(p.byte()),
            None => 0,
        };
        if self.record.len() != self.header.len() {
            return Err(Error::data(
                Location::line(&self.path, line),
                format!(
                    "row has {} fields but the header has {}",
                    self.record.len(),
                    self.header.len()
                ),
            ));
        }
        Ok(Some(line))
    }

    /// The cells of columns `cols` of the next record as text, appended to `out`; the
    /// record's line, or None at the end of the file.
    pub fn next_cells(&mut self, cols: &[usize], out: &mut Vec<String>) -> Result<Option<u64>> {
        let Some(line) = self.next_record()? else {
            return Ok(None);
        };
        out.extend(cols.iter().map(|&c| self.record[c].to_string()));
        Ok(Some(line))
    }

    /// The first cell of columns `cols` of the current record that is a missing value.
    fn first_missing(&self, cols: &[usize]) -> Option<usize> {
        cols.iter().copied().find(|&c| is_missing(&self.record[c]))
    }
}

/// Reading a selection's rows: features (categories one-hot), targets, and what to do with
/// rows that have a missing value or an unknown category.
struct Reading {
    sel: Selection,
    unknown: UnknownCategory,
    missing: Missing,
    rows: usize,
    /// Rows with a missing value, and the first one's place and message.
    missing_rows: usize,
    first_missing: Option<(Location, String)>,
    /// Rows with an unknown category read as no category, and the first one's message.
    ignored_rows: usize,
    first_ignored: Option<String>,
    /// Per target, its transform (empty: none).
    transforms: Vec<Transform>,
    /// A training job's read ([`ColumnChoice::for_training`]).
    training: bool,
    /// With `track` and `Missing::Drop`, the 0-based data row of every row kept (what `mdn
    /// predict --drop-missing` labels its rows with; not kept by the streamed and checking
    /// reads, whose memory must not grow with the rows).
    kept: Vec<usize>,
    track: bool,
}

impl Reading {
    fn new(sel: Selection, choice: &ColumnChoice) -> Reading {
        Reading {
            sel,
            unknown: choice.unknown(),
            missing: choice.missing(),
            rows: 0,
            missing_rows: 0,
            first_missing: None,
            ignored_rows: 0,
            first_ignored: None,
            transforms: choice.transforms().to_vec(),
            training: choice.training(),
            kept: Vec::new(),
            track: false,
        }
    }

    /// Appends the next row's inputs to `x` and targets to `y`; false at the end. A row with a
    /// missing value is left out (and counted); once one is met without `Missing::Drop` the
    /// rest are only counted, for [`Reading::finish`]'s error.
    fn next<R: std::io::Read>(
        &mut self,
        csv: &mut CsvRows<R>,
        x: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<bool> {
        loop {
            let Some(line) = csv.next_record()? else {
                return Ok(false);
            };
            self.rows += 1;
            let absent = csv
                .first_missing(&self.sel.features)
                .or_else(|| csv.first_missing(&self.sel.targets));
            if let Some(c) = absent {
                self.missing_rows += 1;
                if self.first_missing.is_none() {
                    self.first_missing = Some((
                        Location::cell(&csv.path, line, c + 1, &csv.header[c]),
                        missing_message(&csv.record[c]),
                    ));
                }
                continue;
            }
            if self.first_missing.is_some() && self.missing != Missing::Drop {
                continue; // Only counting now.
            }
            for (&c, encode) in self.sel.features.iter().zip(&self.sel.encode) {
                let cell = &csv.record[c];
                match encode {
                    None => x.push(parse_cell(cell, &csv.path, line, c, &csv.header[c])?),
                    Some(lookup) => {
                        let at = x.len();
                        x.resize(at + lookup.width, 0.0);
                        match lookup.get(cell) {
                            Some(k) => x[at + k] = 1.0,
                            None if self.unknown == UnknownCategory::Ignore => {
                                self.ignored_rows += 1;
                                if self.first_ignored.is_none() {
                                    self.first_ignored = Some(format!(
                                        "line {line}, column '{}': '{cell}'",
                                        lookup.column
                                    ));
                                }
                            }
                            None => {
                                let what = if self.training {
                                    "the model has no input for a category its training rows \
                                     lack: add rows of it to the training data, or leave those \
                                     rows out of this file"
                                } else {
                                    "--unknown-category ignore predicts such rows with no \
                                     category"
                                };
                                return Err(Error::data(
                                    Location::cell(&csv.path, line, c + 1, &csv.header[c]),
                                    format!("{}; {what}", lookup.unknown_message(cell)),
                                ));
                            }
                        }
                    }
                }
            }
            for (j, &c) in self.sel.targets.iter().enumerate() {
                let cell = &csv.record[c];
                let v = parse_cell(cell, &csv.path, line, c, &csv.header[c]).map_err(|e| {
                    // Text in a target: say that a target is a number (a text column is a
                    // categorical feature, never a target).
                    match e {
                        Error::Data { at, message }
                            if message.ends_with("' is not a number")
                                && cell.trim().parse::<f64>().is_err() =>
                        {
                            Error::Data {
                                at,
                                message: format!(
                                    "{message}: a target column holds numbers (mdn predicts \
                                     the density of numeric targets; a text column can only \
                                     be a feature)"
                                ),
                            }
                        }
                        e => e,
                    }
                })?;
                let t = crate::transform::of(&self.transforms, j);
                if t.forward(v as f64).is_none_or(|z| !z.is_finite()) {
                    // The cell as the file has it, and what f32 made of it when that differs
                    // (0.99999999 is 1 in f32, outside logit:0,1).
                    let read = if cell.trim().parse::<f64>().ok() == Some(v as f64) {
                        String::new()
                    } else {
                        format!(" (read as the 32-bit float {v})")
                    };
                    return Err(Error::data(
                        Location::cell(&csv.path, line, c + 1, &csv.header[c]),
                        format!(
                            "'{}'{read} is outside the support of --transform {t}: the target must be {}",
                            cell.trim(),
                            t.support()
                        ),
                    ));
                }
                y.push(v);
            }
            if self.track && self.missing == Missing::Drop {
                self.kept.push(self.rows - 1);
            }
            return Ok(true);
        }
    }

    /// After the last row: the error for no rows at all, for rows with a missing value
    /// (unless dropped) and for none left; the rows kept, and the warnings for rows dropped
    /// or read with no category.
    fn finish(self, path: &Path) -> Result<(usize, ReadNotes)> {
        let mut notes = ReadNotes::default();
        if self.rows == 0 {
            return Err(Error::data(
                Location::file(path),
                "has a header but no data rows",
            ));
        }
        if let Some((at, message)) = self.first_missing {
            let (n, all) = (self.missing_rows, self.rows);
            let rows = if n == 1 {
                format!("1 of {all} rows has a missing value")
            } else {
                format!("{n} of {all} rows have a missing value")
            };
            match self.missing {
                Missing::Refuse => {
                    return Err(Error::data(at, format!("{message}; {rows} in the columns read")));
                }
                Missing::RefuseSayingDrop => {
                    return Err(Error::data(
                        at,
                        format!("{message}; {rows} in the columns used (--drop-missing leaves them out)"),
                    ));
                }
                Missing::Drop => notes.warnings.push(format!(
                    "{}: {rows} in the columns used (the first at line {}); left out (--drop-missing)",
                    path.display(),
                    at.line.unwrap_or(0)
                )),
            }
        }
        if self.missing == Missing::Drop {
            notes.left_out = self.missing_rows;
        }
        if let Some(first) = self.first_ignored {
            notes.warnings.push(format!(
                "{}: {} row(s) have a category the model was not trained on (the first: {first}); \
                 predicted with no category (--unknown-category ignore)",
                path.display(),
                self.ignored_rows
            ));
        }
        if self.missing_rows == self.rows {
            return Err(Error::data(
                Location::file(path),
                format!(
                    "every row ({}) has a missing value in the columns used: no rows left",
                    self.rows
                ),
            ));
        }
        Ok((self.rows - self.missing_rows, notes))
    }
}

/// What a read says besides its rows: how many rows it left out for a missing value
/// (`Missing::Drop`, `--drop-missing`) and its warnings (those rows, unknown categories read
/// as none), for a caller that reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadNotes {
    /// Data rows of the file left out for a missing value in a column read.
    pub left_out: usize,
    /// The read's warnings, in words.
    pub warnings: Vec<String>,
}

/// Logs the warnings of a read nobody else reports (`warning: ...` on the command line).
fn log_notes(notes: ReadNotes) {
    for n in notes.warnings {
        log::warn!("{n}");
    }
}

/// The columns `names` picks (by name or 0-based index) as text, one entry per row, as they
/// are written (CSV) or as numbers (`.npy`): what `mdn predict --keep` copies through.
/// Returns the columns' names and the rows.
pub fn read_text_columns(path: &Path, names: &[String]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let header = header(path)?;
    let cols: Vec<usize> = rejoin_names(names, &header)
        .iter()
        .map(|n| find(&header, n, path, "--keep"))
        .collect::<Result<_>>()?;
    let names = cols.iter().map(|&c| header[c].clone()).collect();
    let mut rows = Vec::new();
    if is_npy(path) {
        let mut reader = crate::npy::NpyReader::open(path)?;
        let mut chunk = Vec::new();
        while reader.read_rows(65536, &mut chunk)? > 0 {
            for row in chunk.chunks_exact(header.len()) {
                rows.push(cols.iter().map(|&c| row[c].to_string()).collect());
            }
        }
    } else {
        let mut csv = CsvRows::open(path)?;
        let mut cells = Vec::new();
        while csv.next_cells(&cols, &mut cells)?.is_some() {
            rows.push(std::mem::take(&mut cells));
        }
    }
    Ok((names, rows))
}

fn lock(lines: &std::sync::Mutex<LineEnds>) -> std::sync::MutexGuard<'_, LineEnds> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

fn csv_error(e: csv::Error, path: &Path, lines: &std::sync::Mutex<LineEnds>) -> Error {
    let line = e
        .position()
        .map(|p| lock(lines).line_at(p.byte()))
        .unwrap_or(0);
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => {
            "not valid UTF-8 text (save the file as UTF-8: in Excel, CSV \
                                        UTF-8; iconv -f WINDOWS-1252 -t UTF-8 for an older file)"
                .to_string()
        }
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    };
    if line > 0 {
        Error::data(Location::line(path, line), message)
    } else {
        Error::data(Location::file(path), message)
    }
}

/// [`read_csv`] from any reader; `path` names the source in messages.
pub fn read_csv_from(
    source: impl std::io::Read,
    path: &Path,
    choice: &ColumnChoice,
) -> Result<Dataset> {
    let (data, notes) = rows_to_dataset(CsvRows::new(source, path)?, path, choice)?;
    log_notes(notes);
    Ok(data)
}

/// [`read_data`], returning the warnings of the read (rows left out by `--drop-missing`,
/// unknown categories ignored) instead of logging them, for a caller that reports them.
pub fn read_data_noting(path: &Path, choice: &ColumnChoice) -> Result<(Dataset, ReadNotes)> {
    if is_npy(path) {
        Ok((read_npy(path, choice)?, ReadNotes::default()))
    } else {
        rows_to_dataset(CsvRows::open(path)?, path, choice)
    }
}

/// [`read_data`], with the 0-based data row each row of the dataset was read from when
/// rows were left out (`Missing::Drop` and a row with a missing value; otherwise `None`:
/// row r is data row r). A `.npy` file has no missing values to leave out.
pub fn read_data_with_rows(
    path: &Path,
    choice: &ColumnChoice,
) -> Result<(Dataset, Option<Vec<usize>>)> {
    let (data, notes, kept) = read_data_with_rows_noting(path, choice)?;
    log_notes(notes);
    Ok((data, kept))
}

/// [`read_data_with_rows`], its warnings returned instead of logged.
#[allow(clippy::type_complexity)]
pub fn read_data_with_rows_noting(
    path: &Path,
    choice: &ColumnChoice,
) -> Result<(Dataset, ReadNotes, Option<Vec<usize>>)> {
    if is_npy(path) {
        return Ok((read_npy(path, choice)?, ReadNotes::default(), None));
    }
    read_rows(CsvRows::open(path)?, path, choice, true)
}

fn rows_to_dataset<R: std::io::Read>(
    rows_in: CsvRows<R>,
    path: &Path,
    choice: &ColumnChoice,
) -> Result<(Dataset, ReadNotes)> {
    read_rows(rows_in, path, choice, false).map(|(data, notes, _)| (data, notes))
}

/// The dataset, the read's warnings and, with `track` where rows were left out, the data
/// rows kept.
#[allow(clippy::type_complexity)]
fn read_rows<R: std::io::Read>(
    mut rows_in: CsvRows<R>,
    path: &Path,
    choice: &ColumnChoice,
    track: bool,
) -> Result<(Dataset, ReadNotes, Option<Vec<usize>>)> {
    let sel = choice.resolve(&rows_in.header, path)?;
    let targets = sel
        .targets
        .iter()
        .map(|&c| rows_in.header[c].clone())
        .collect();
    let features = sel.inputs.clone();
    let mut reading = Reading::new(sel, choice);
    reading.track = track;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    while reading.next(&mut rows_in, &mut x, &mut y)? {}
    let kept = std::mem::take(&mut reading.kept);
    let total = reading.rows;
    let (rows, notes) = reading.finish(path)?;
    let data = Dataset {
        path: path.to_path_buf(),
        features,
        targets,
        x,
        y,
        rows,
    };
    let kept = (rows < total).then_some(kept);
    Ok((data, notes, kept))
}

/// Reads every row `choice` picks from a CSV file without keeping them: the error reading
/// them would give, if any, and otherwise the rows a run would get. A `.npy` file's values
/// were checked when it was written or uploaded: only its columns are checked.
pub fn check_rows(path: &Path, choice: &ColumnChoice) -> Result<usize> {
    if is_npy(path) {
        return NpySource::open(path, choice).map(|s| s.rows());
    }
    let mut rows_in = CsvRows::open(path)?;
    let sel = choice.resolve(&rows_in.header, path)?;
    let mut reading = Reading::new(sel, choice);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    while reading.next(&mut rows_in, &mut x, &mut y)? {
        x.clear();
        y.clear();
    }
    Ok(reading.finish(path)?.0)
}

/// Where rows go when writing a table: CSV or `.npy` (by the path's extension), written to a
/// temporary file and renamed into place by [`TableWriter::finish`]; a `.npy` file gets its
/// column names in `<file>.columns.json`.
pub enum TableWriter {
    Csv {
        path: PathBuf,
        out: std::io::BufWriter<tempfile::NamedTempFile>,
        cols: usize,
        rows: usize,
    },
    Npy {
        path: PathBuf,
        writer: crate::npy::NpyWriter,
        names: Vec<String>,
    },
}

impl TableWriter {
    pub fn create(path: &Path, names: &[String]) -> Result<TableWriter> {
        if is_npy(path) {
            return Ok(TableWriter::Npy {
                path: path.to_path_buf(),
                writer: crate::npy::NpyWriter::create(path, names.len())?,
                names: names.to_vec(),
            });
        }
        let path = &crate::atomic::destination(path)?;
        let tmp = crate::atomic::temp_beside(path)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, tmp);
        use std::io::Write;
        let header: Vec<String> = names.iter().map(|n| crate::tables::csv_cell(n)).collect();
        writeln!(out, "{}", header.join(",")).map_err(|e| Error::io(path, e))?;
        Ok(TableWriter::Csv {
            path: path.to_path_buf(),
            out,
            cols: names.len(),
            rows: 0,
        })
    }

    /// Appends rows (`values.len()` a multiple of the column count).
    pub fn write_rows(&mut self, values: &[f32]) -> Result<()> {
        match self {
            TableWriter::Npy { writer, .. } => writer.write_rows(values),
            TableWriter::Csv {
                path,
                out,
                cols,
                rows,
            } => {
                use std::io::Write;
                let mut line = String::new();
                for row in values.chunks_exact(*cols) {
                    line.clear();
                    for (i, v) in row.iter().enumerate() {
                        if i > 0 {
                            line.push(',');
                        }
                        line.push_str(&v.to_string());
                    }
                    line.push('\n');
                    out.write_all(line.as_bytes())
                        .map_err(|e| Error::io(path, e))?;
                    *rows += 1;
                }
                Ok(())
            }
        }
    }

    /// Syncs and renames the file into place; returns the rows written.
    pub fn finish(self) -> Result<usize> {
        match self {
            TableWriter::Npy {
                path,
                writer,
                names,
            } => {
                let rows = writer.finish()?;
                let json = serde_json::to_vec(&names).expect("names serialise");
                crate::atomic::write_atomic(&crate::npy::columns_path(&path), &json)?;
                Ok(rows)
            }
            TableWriter::Csv {
                path, out, rows, ..
            } => {
                let tmp = out
                    .into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?;
                tmp.as_file().sync_all().map_err(|e| Error::io(&path, e))?;
                tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
                Ok(rows)
            }
        }
    }
}

/// Converts a CSV file to `.npy` (or CSV) row by row, never holding the whole file: the
/// `columns` given (default: all) in their order. Returns the rows and column names written.
pub fn convert(
    input: &Path,
    output: &Path,
    columns: Option<&[String]>,
    progress: &mut dyn FnMut(usize),
) -> Result<(usize, Vec<String>)> {
    convert_while(input, output, columns, &mut |n| {
        progress(n);
        true
    })
}

/// [`convert`], stopping with [`Error::Interrupted`] (and no output) when `progress` (rows
/// written so far) returns false.
pub fn convert_while(
    input: &Path,
    output: &Path,
    columns: Option<&[String]>,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<(usize, Vec<String>)> {
    if is_npy(input) {
        return Err(Error::config(format!(
            "{}: convert reads CSV files; this one is already .npy",
            input.display()
        )));
    }
    let rows_in = CsvRows::open(input)?;
    let cols: Vec<usize> = match columns {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| find(&rows_in.header, n, input, "selected"))
            .collect::<Result<_>>()?,
        _ => (0..rows_in.header.len()).collect(),
    };
    let sel = Selection::numeric(cols, Vec::new(), &rows_in.header);
    let (rows, names, notes) = convert_selection(
        rows_in,
        sel,
        &ColumnChoice::Default,
        input,
        output,
        progress,
    )?;
    log_notes(notes);
    Ok((rows, names))
}

/// Converts the columns `choice` picks from a CSV file to `.npy` (or CSV) row by row: the
/// features as the network's inputs (a categorical column's indicators), then the targets,
/// rows with a missing value treated as the choice says. What a streamed run reads. Returns
/// the rows and column names written, and the read's warnings (rows left out).
pub fn convert_choice(
    input: &Path,
    output: &Path,
    choice: &ColumnChoice,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<(usize, Vec<String>, ReadNotes)> {
    let rows_in = CsvRows::open(input)?;
    let sel = choice.resolve(&rows_in.header, input)?;
    convert_selection(rows_in, sel, choice, input, output, progress)
}

fn convert_selection(
    mut rows_in: CsvRows<std::fs::File>,
    sel: Selection,
    choice: &ColumnChoice,
    input: &Path,
    output: &Path,
    progress: &mut dyn FnMut(usize) -> bool,
) -> Result<(usize, Vec<String>, ReadNotes)> {
    let mut names = sel.inputs.clone();
    names.extend(sel.targets.iter().map(|&c| rows_in.header[c].clone()));
    let (width, targets) = (sel.inputs.len(), sel.targets.len());
    let mut reading = Reading::new(sel, choice);
    let mut out = TableWriter::create(output, &names)?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut block = Vec::with_capacity(65536 * names.len());
    let mut rows = 0;
    loop {
        let (mut n, mut more) = (0, true);
        x.clear();
        y.clear();
        while n < 65536 {
            more = reading.next(&mut rows_in, &mut x, &mut y)?;
            if !more {
                break;
            }
            n += 1;
        }
        block.clear();
        for r in 0..n {
            block.extend_from_slice(&x[r * width..(r + 1) * width]);
            block.extend_from_slice(&y[r * targets..(r + 1) * targets]);
        }
        if n > 0 {
            out.write_rows(&block)?;
        }
        rows += n;
        if !progress(rows) {
            return Err(Error::Interrupted(
                "interrupted while converting the data; no model was written".into(),
            ));
        }
        if !more {
            break;
        }
    }
    let (_, notes) = reading.finish(input)?;
    out.finish()?;
    Ok((rows, names, notes))
}

/// Cells that mean "no value": an empty cell and the spellings spreadsheets, R, pandas and
/// databases write for one. All are reported the same way: as a missing value.
pub fn is_missing(cell: &str) -> bool {
    cell.is_empty()
        || [
            "NA", "N/A", "NaN", "-NaN", "+NaN", "null", "None", "?", ".", "#N/A", "#NA", "<NA>",
        ]
        .iter()
        .any(|m| cell.eq_ignore_ascii_case(m))
}

/// The message for a missing cell, the same for every spelling.
fn missing_message(cell: &str) -> String {
    if cell.is_empty() {
        "missing value (an empty cell)".to_string()
    } else {
        format!("missing value ('{cell}')")
    }
}

/// A number written with a decimal comma (`1,5`, as a spreadsheet in many languages writes
/// it): the number with a decimal point (`1.5`).
pub(crate) fn decimal_comma(cell: &str) -> Option<String> {
    let point = cell.replace(',', ".");
    (cell.matches(',').count() == 1 && point.parse::<f64>().is_ok()).then_some(point)
}

fn parse_cell(cell: &str, path: &Path, line: u64, col: usize, name: &str) -> Result<f32> {
    let at = || Location::cell(path, line, col + 1, name);
    if is_missing(cell) {
        return Err(Error::data(at(), missing_message(cell)));
    }
    let v: f64 = cell.parse().map_err(|_| {
        let message = match decimal_comma(cell) {
            Some(point) => format!(
                "'{cell}' is not a number: mdn reads a decimal point ({point}), not a decimal comma"
            ),
            None => format!("'{cell}' is not a number"),
        };
        Error::data(at(), message)
    })?;
    if !v.is_finite() {
        return Err(Error::data(
            at(),
            format!("'{cell}' is not a finite number (infinity is refused)"),
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

/// Rows that can be read by range without holding them all: what streamed training reads.
pub trait RowSource {
    fn path(&self) -> &Path;
    fn rows(&self) -> usize;
    fn features(&self) -> &[String];
    fn targets(&self) -> &[String];
    /// Reads rows `start..start + n`, appending their features to `x` and targets to `y`.
    fn read(&mut self, start: usize, n: usize, x: &mut Vec<f32>, y: &mut Vec<f32>) -> Result<()>;
}

impl RowSource for Dataset {
    fn path(&self) -> &Path {
        &self.path
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn features(&self) -> &[String] {
        &self.features
    }
    fn targets(&self) -> &[String] {
        &self.targets
    }
    fn read(&mut self, start: usize, n: usize, x: &mut Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        let (d, t) = (self.d_in(), self.d_out());
        x.extend_from_slice(&self.x[start * d..(start + n) * d]);
        y.extend_from_slice(&self.y[start * t..(start + n) * t]);
        Ok(())
    }
}

/// The selected columns of a `.npy` file, read by row range from disk.
pub struct NpySource {
    reader: crate::npy::NpyReader,
    path: PathBuf,
    features: Vec<String>,
    targets: Vec<String>,
    feature_cols: Vec<usize>,
    target_cols: Vec<usize>,
    buf: Vec<f32>,
}

impl NpySource {
    pub fn open(path: &Path, choice: &ColumnChoice) -> Result<NpySource> {
        let reader = crate::npy::NpyReader::open(path)?;
        let names = crate::npy::column_names(path, reader.header.cols)?;
        let sel = choice.resolve(&names, path)?;
        numbers_only(&sel, path)?;
        if reader.header.rows == 0 {
            return Err(Error::data(Location::file(path), "the array has no rows"));
        }
        Ok(NpySource {
            features: sel.inputs.clone(),
            targets: sel.targets.iter().map(|&c| names[c].clone()).collect(),
            feature_cols: sel.features,
            target_cols: sel.targets,
            path: path.to_path_buf(),
            reader,
            buf: Vec::new(),
        })
    }
}

impl RowSource for NpySource {
    fn path(&self) -> &Path {
        &self.path
    }
    fn rows(&self) -> usize {
        self.reader.header.rows
    }
    fn features(&self) -> &[String] {
        &self.features
    }
    fn targets(&self) -> &[String] {
        &self.targets
    }
    fn read(&mut self, start: usize, n: usize, x: &mut Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        self.reader.seek_row(start)?;
        let got = self.reader.read_rows(n, &mut self.buf)?;
        if got != n {
            return Err(Error::data(
                Location::file(&self.path),
                format!("expected {n} rows from row {start}, read {got}"),
            ));
        }
        let cols = self.reader.header.cols;
        for row in self.buf.chunks_exact(cols) {
            x.extend(self.feature_cols.iter().map(|&c| row[c]));
            y.extend(self.target_cols.iter().map(|&c| row[c]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_missing;

    /// Regression (a trial's table): C's `-nan` and Excel's and pandas' `#N/A`, `#NA` and
    /// `<NA>` were read as "not a number" instead of as missing values.
    #[test]
    fn the_missing_spellings_of_c_excel_and_pandas_are_missing_values() {
        for cell in [
            "", "NA", "na", "N/A", "NaN", "nan", "-nan", "+NaN", "null", "NULL", "None", "?", ".",
            "#N/A", "#NA", "<NA>",
        ] {
            assert!(is_missing(cell), "{cell:?}");
        }
        for cell in ["0", "-", "n", "NaNa", "inf", "-1", "#VALUE!"] {
            assert!(!is_missing(cell), "{cell:?}");
        }
    }
}
