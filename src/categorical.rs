//! Categorical features: a feature column of text (`region`, `fuel`) read as categories, each
//! category one indicator input of the network (one-hot), the categories learnt from the
//! training rows and kept in the model file, so every later reader takes the raw text.
//!
//! Which columns are categorical is decided once, before training ([`learn_categories`]): the
//! columns named by `--categorical`, and every feature column whose cells are mostly text. A
//! column that is mostly numbers with a few text cells is a typo more often than a category
//! and is refused at its first text cell. A network input of a categorical column is named
//! `column=category` ([`Categorical::input_names`]); the model's `features` list those names,
//! and its `categorical` list says which raw column each run of them comes from.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::{CsvRows, decimal_comma, is_missing, is_npy};
use crate::error::{Error, Location, Result};

/// The most categories one column may have: beyond this it is an id, a free-text column or a
/// number, not a category, and one-hot encoding it would mostly cost memory.
pub const MAX_CATEGORIES: usize = 1000;

/// From this many rows on, a text column whose values mostly never repeat (more distinct
/// values than half the rows) is taken for an id, not categories.
const ID_ROWS: usize = 20;

/// Rows read to see whether a file has text in its feature columns at all; a file with text
/// only further on is read whole anyway when the text is found.
const SNIFF_ROWS: usize = 10_000;

/// Distinct values counted in one column before giving up on an exact count.
const COUNT_LIMIT: usize = 1_000_000;

/// A feature column read as categories, in the order of its indicator inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Categorical {
    pub column: String,
    pub categories: Vec<String>,
}

/// Whether a cell reads as a date (`2020-01-31`, `2020/01/31`, `31/01/2020`, `1/31/20`,
/// a time after it allowed): a column of them as categories cannot predict a later date.
pub fn looks_like_date(cell: &str) -> bool {
    let day = cell.split(['T', ' ']).next().unwrap_or("");
    let parts: Vec<&str> = day.split(['-', '/', '.']).collect();
    let digits = |p: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    };
    parts.len() == 3
        && ((digits(parts[0], 4..=4) && digits(parts[1], 1..=2) && digits(parts[2], 1..=2))
            || (digits(parts[0], 1..=2) && digits(parts[1], 1..=2) && digits(parts[2], 2..=4)))
}

/// The advice for a column of dates.
pub const DATE_ADVICE: &str = "its values look like dates: give it as a number instead (days \
     since a start date, or year, month and weekday columns), which a later date has too";

impl Categorical {
    /// Whether most of its categories read as dates ([`looks_like_date`]).
    pub fn dates(&self) -> bool {
        let n = self
            .categories
            .iter()
            .filter(|c| looks_like_date(c))
            .count();
        n > 0 && 2 * n > self.categories.len()
    }

    /// The network input of one category: `column=category`.
    pub fn input_name(&self, category: &str) -> String {
        format!("{}={category}", self.column)
    }

    /// The network inputs of this column, one per category, in order.
    pub fn input_names(&self) -> Vec<String> {
        self.categories.iter().map(|c| self.input_name(c)).collect()
    }
}

/// What a reader does with a category the model was not trained on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownCategory {
    /// Refuse the file, naming the row, the column and the value.
    #[default]
    Error,
    /// All the column's indicators zero (no category), with a warning counting the rows.
    Ignore,
}

crate::named::named!(UnknownCategory, "way to treat unknown categories", {
    Error => "error": "refuse the file, naming the row, the column and the value (default)",
    Ignore => "ignore": "all of the column's indicators zero, with a warning counting the rows",
});

/// The raw data columns a model's inputs come from, in order: a numeric feature's own name,
/// and once per categorical column its name (for messages and `mdn info`).
pub fn raw_columns(features: &[String], categorical: &[Categorical]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < features.len() {
        match run_at(features, i, categorical) {
            Some(c) => {
                out.push(c.column.clone());
                i += c.categories.len();
            }
            None => {
                out.push(features[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// The categorical column whose indicator inputs start at `features[i]`, if any.
pub fn run_at<'a>(
    features: &[String],
    i: usize,
    categorical: &'a [Categorical],
) -> Option<&'a Categorical> {
    categorical.iter().find(|c| {
        let names = c.input_names();
        !names.is_empty() && features[i..].starts_with(&names)
    })
}

/// Checks a model's categorical columns against its feature names: each column's inputs one
/// run in `features`, categories distinct and not empty.
pub fn validate(
    features: &[String],
    categorical: &[Categorical],
) -> std::result::Result<(), String> {
    for c in categorical {
        if c.categories.is_empty() {
            return Err(format!(
                "categorical column '{}' has no categories",
                c.column
            ));
        }
        let distinct: BTreeSet<&String> = c.categories.iter().collect();
        if distinct.len() != c.categories.len() {
            return Err(format!(
                "categorical column '{}' repeats a category",
                c.column
            ));
        }
        let names = c.input_names();
        let found = (0..features.len()).any(|i| features[i..].starts_with(&names));
        if !found {
            return Err(format!(
                "categorical column '{}': its inputs ({}) are not among the features",
                c.column,
                names.join(", ")
            ));
        }
    }
    Ok(())
}

/// What one column's cells were, over the rows read.
#[derive(Default)]
struct ColumnCells {
    numbers: usize,
    text: usize,
    /// The first text cell: its line and value.
    first_text: Option<(u64, String)>,
    /// Text cells that are numbers written with a decimal comma (`0,5`).
    decimal_commas: usize,
    /// Distinct values (up to [`COUNT_LIMIT`]) and the line each was first seen on.
    values: HashMap<String, u64>,
    /// More distinct values than were counted.
    overflow: bool,
}

/// The categorical columns among the training data's `features` (raw column names): those in
/// `forced` (`--categorical`) and those whose cells are mostly text, each with its categories
/// in sorted order, in the order of `features`. A file with no text in its feature columns'
/// first rows and nothing forced is read no further. Refuses, with the place: a forced name
/// that is not a feature, a `.npy` file with forced columns, a mostly numeric column with a
/// text cell, a column with more than [`MAX_CATEGORIES`] values, and an input name that
/// clashes with another column's.
pub fn learn_categories(
    path: &Path,
    features: &[String],
    forced: &[String],
) -> Result<Vec<Categorical>> {
    for f in forced {
        if !features.contains(f) {
            return Err(Error::config(format!(
                "--categorical '{f}' is not a feature column (features: {})",
                features.join(", ")
            )));
        }
    }
    if is_npy(path) {
        if !forced.is_empty() {
            return Err(Error::config(format!(
                "--categorical {}: {} is a .npy file, whose columns are numbers; give the CSV file",
                forced.join(","),
                path.display()
            )));
        }
        return Ok(Vec::new());
    }
    if forced.is_empty() && !has_text(path, features, SNIFF_ROWS)? {
        return Ok(Vec::new());
    }
    let mut rows = CsvRows::open(path)?;
    let cols: Vec<usize> = features
        .iter()
        .map(|f| {
            rows.header
                .iter()
                .position(|h| h == f)
                .expect("features are in the header")
        })
        .collect();
    let mut cells: Vec<ColumnCells> = cols.iter().map(|_| ColumnCells::default()).collect();
    let mut text = Vec::new();
    while let Some(line) = rows.next_cells(&cols, &mut text)? {
        for (cell, stats) in text.drain(..).zip(cells.iter_mut()) {
            if is_missing(&cell) {
                continue;
            }
            if cell.parse::<f64>().is_ok() {
                stats.numbers += 1;
            } else {
                stats.text += 1;
                if decimal_comma(&cell).is_some() {
                    stats.decimal_commas += 1;
                }
                if stats.first_text.is_none() {
                    stats.first_text = Some((line, cell.clone()));
                }
            }
            if stats.values.len() < COUNT_LIMIT {
                stats.values.entry(cell).or_insert(line);
            } else if !stats.values.contains_key(&cell) {
                stats.overflow = true;
            }
        }
    }
    let header = rows.header.clone();
    let mut out = Vec::new();
    for ((name, &col), stats) in features.iter().zip(&cols).zip(&cells) {
        let wanted = forced.contains(name);
        if !wanted && stats.text == 0 {
            continue;
        }
        if !wanted && stats.decimal_commas == stats.text {
            // Numbers as a spreadsheet in many languages writes them, not categories.
            let (line, cell) = stats.first_text.clone().expect("a text cell was seen");
            return Err(Error::data(
                Location::cell(path, line, col + 1, name),
                format!(
                    "'{cell}' is not a number: mdn reads a decimal point ({}), not a decimal \
                     comma (so are the column's {} other such cells; --categorical {name} reads \
                     them as categories if they are ones)",
                    decimal_comma(&cell).unwrap_or_default(),
                    stats.text - 1
                ),
            ));
        }
        if !wanted && stats.text < stats.numbers {
            let (line, cell) = stats.first_text.clone().expect("a text cell was seen");
            return Err(Error::data(
                Location::cell(path, line, col + 1, name),
                format!(
                    "'{cell}' is not a number (the column has {} numbers and {} text cell{}: \
                     probably a typo to fix; if the column does hold categories, --categorical \
                     {name} reads every value as one)",
                    stats.numbers,
                    stats.text,
                    if stats.text == 1 { "" } else { "s" }
                ),
            ));
        }
        let n = stats.values.len();
        // An id (or free text): too many values for categories, or (not named with
        // --categorical) hardly a value that repeats.
        let rows = stats.numbers + stats.text;
        let unique = !wanted && n <= MAX_CATEGORIES && rows >= ID_ROWS && 2 * n > rows;
        if n > MAX_CATEGORIES || unique {
            let count = if stats.overflow {
                format!("more than {n}")
            } else {
                format!("{n}")
            };
            let others: Vec<&str> = features
                .iter()
                .filter(|f| *f != name)
                .map(|f| f.as_str())
                .collect();
            return Err(Error::data(
                Location {
                    column: Some(col + 1),
                    column_name: Some(name.clone()),
                    ..Location::file(path)
                },
                format!(
                    "{count} different values: {}; {}{}",
                    if unique {
                        format!(
                            "in {rows} rows most values never repeat, so it is no categorical \
                             feature (name it with --categorical if it is one)"
                        )
                    } else {
                        format!("too many for a categorical feature (at most {MAX_CATEGORIES})")
                    },
                    match &stats.first_text {
                        Some((_, cell)) if looks_like_date(cell) => {
                            format!("{DATE_ADVICE}, or leave the column out")
                        }
                        _ => "an id or free text tells the model nothing, leave the column out"
                            .to_string(),
                    },
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(" (--features {})", crate::data::shell_list(&others))
                    }
                ),
            ));
        }
        let mut categories: Vec<String> = stats.values.keys().cloned().collect();
        categories.sort();
        let c = Categorical {
            column: name.clone(),
            categories,
        };
        for input in c.input_names() {
            if header.contains(&input) {
                return Err(Error::data(
                    Location::line(path, 1),
                    format!(
                        "the categorical column '{name}' would make an input named '{input}', \
                         which is also a column of the file; rename one of them"
                    ),
                ));
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// Whether any of `features`' cells in the first `limit` rows is text (not a number and not
/// a missing value).
fn has_text(path: &Path, features: &[String], limit: usize) -> Result<bool> {
    let mut rows = CsvRows::open(path)?;
    let cols: Vec<usize> = features
        .iter()
        .filter_map(|f| rows.header.iter().position(|h| h == f))
        .collect();
    let mut text = Vec::new();
    for _ in 0..limit {
        if rows.next_cells(&cols, &mut text)?.is_none() {
            break;
        }
        if text
            .drain(..)
            .any(|c| !is_missing(&c) && c.parse::<f64>().is_err())
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A categorical column's categories by name, for reading cells.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub column: String,
    index: HashMap<String, usize>,
    pub width: usize,
    categories: Vec<String>,
}

impl Lookup {
    pub fn new(c: &Categorical) -> Lookup {
        Lookup {
            column: c.column.clone(),
            index: c
                .categories
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), i))
                .collect(),
            width: c.categories.len(),
            categories: c.categories.clone(),
        }
    }

    /// The indicator that is 1 for `cell`, or None for a category not learnt.
    pub fn get(&self, cell: &str) -> Option<usize> {
        self.index.get(cell).copied()
    }

    /// The message for a category not learnt.
    pub fn unknown_message(&self, cell: &str) -> String {
        const SHOWN: usize = 8;
        let mut known = self
            .categories
            .iter()
            .take(SHOWN)
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.categories.len() > SHOWN {
            known.push_str(&format!(", ... ({} in all)", self.categories.len()));
        }
        // Categories are matched exactly; one that differs only in case or surrounding spaces
        // is most likely the same, and is named.
        let near = self
            .categories
            .iter()
            .find(|c| c.trim().to_lowercase() == cell.trim().to_lowercase());
        match near {
            Some(c) => format!(
                "'{cell}' is not a category the model was trained on (categories are matched exactly: did you mean '{c}'? it knows {known})"
            ),
            None => {
                format!("'{cell}' is not a category the model was trained on (it knows {known})")
            }
        }
    }
}
