//! NumPy `.npy` files: reading 2-D float32/float64 arrays in C order, and writing float32
//! arrays row by row without knowing the row count in advance.
//!
//! Column names live beside the array in `<file>.columns.json` (a JSON array of strings), as
//! `mdn convert` writes them. Without that file the columns are named by their index ("0",
//! "1", ...), so `--target 3` picks the fourth column either way.
//!
//! The header is checked against the file's length before anything is allocated: a size field
//! that claims more data than the file holds is an error, never an allocation.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Location, Result};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header we accept (numpy's own limit for version 1 is 65535 bytes).
const MAX_HEADER: usize = 1 << 16;

/// Element type of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// The parsed header of a 2-D `.npy` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

/// The path of the column-name file beside a `.npy` file.
pub fn columns_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".columns.json");
    PathBuf::from(s)
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::data(Location::file(path), message)
}

/// Reads and checks the header of a `.npy` file.
pub fn read_header(path: &Path, file: &mut File) -> Result<Header> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut pre = [0u8; 10];
    file.read_exact(&mut pre[..8])
        .map_err(|_| bad(path, "too short to be a .npy file"))?;
    if &pre[..6] != MAGIC {
        return Err(bad(
            path,
            "not a .npy file (the magic string \\x93NUMPY is missing)",
        ));
    }
    let major = pre[6];
    let header_len = match major {
        1 => {
            file.read_exact(&mut pre[8..10])
                .map_err(|_| bad(path, "truncated .npy header"))?;
            u16::from_le_bytes([pre[8], pre[9]]) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            file.read_exact(&mut b)
                .map_err(|_| bad(path, "truncated .npy header"))?;
            u32::from_le_bytes(b) as usize
        }
        v => {
            return Err(bad(
                path,
                format!(".npy format version {v} is not supported (1, 2 and 3 are)"),
            ));
        }
    };
    let prefix = if major == 1 { 10 } else { 12 };
    if header_len > MAX_HEADER || (prefix + header_len) as u64 > len {
        return Err(bad(
            path,
            format!("the .npy header claims {header_len} bytes, more than the file holds"),
        ));
    }
    let mut text = vec![0u8; header_len];
    file.read_exact(&mut text)
        .map_err(|_| bad(path, "truncated .npy header"))?;
    let text = String::from_utf8(text).map_err(|_| bad(path, "the .npy header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(path, format!("the .npy header has no '{key}'")))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| bad(path, format!("malformed '{key}' in the .npy header")))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.split(['\'', '"']).nth(1).unwrap_or("");
    let dtype = match descr {
        "<f4" | "=f4" => Dtype::F32,
        "<f8" | "=f8" => Dtype::F64,
        ">f4" | ">f8" => {
            return Err(bad(
                path,
                "big-endian arrays are not supported; save with dtype '<f4' or '<f8'",
            ));
        }
        other => {
            return Err(bad(
                path,
                format!(
                    "element type '{other}' is not supported: mdn reads float32 ('<f4') and float64 ('<f8')"
                ),
            ));
        }
    };
    let fortran = field("fortran_order")?;
    if fortran.starts_with("True") {
        return Err(bad(
            path,
            "the array is in Fortran order; save it with numpy.ascontiguousarray first",
        ));
    } else if !fortran.starts_with("False") {
        return Err(bad(path, "malformed 'fortran_order' in the .npy header"));
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(path, "malformed 'shape' in the .npy header"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(path, format!("malformed dimension '{s}' in the .npy shape")))
        })
        .collect::<Result<_>>()?;
    if dims.len() != 2 {
        return Err(bad(
            path,
            format!(
                "the array has {} dimension(s); mdn reads 2-D arrays (rows x columns)",
                dims.len()
            ),
        ));
    }
    let (rows, cols) = (dims[0], dims[1]);
    let data_offset = (prefix + header_len) as u64;
    let need = (rows as u128) * (cols as u128) * dtype.size() as u128;
    let have = (len - data_offset) as u128;
    if need != have {
        return Err(bad(
            path,
            format!(
                "the header says {rows} x {cols} {descr} values ({need} bytes) but the file holds {have} bytes of data"
            ),
        ));
    }
    if cols == 0 {
        return Err(bad(path, "the array has no columns"));
    }
    Ok(Header {
        dtype,
        rows,
        cols,
        data_offset,
    })
}

/// Column names of a `.npy` file: from `<file>.columns.json` if present, else "0", "1", ...
pub fn column_names(path: &Path, cols: usize) -> Result<Vec<String>> {
    let names_path = columns_path(path);
    match std::fs::read(&names_path) {
        Ok(bytes) => {
            let names: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| {
                bad(
                    &names_path,
                    format!("expected a JSON array of column names ({e})"),
                )
            })?;
            if let Some((i, n)) = names
                .iter()
                .enumerate()
                .find(|(i, n)| names[..*i].contains(n))
            {
                return Err(bad(
                    &names_path,
                    format!(
                        "column name '{n}' is repeated (at positions {} and {})",
                        names.iter().position(|m| m == n).unwrap_or(0),
                        i
                    ),
                ));
            }
            if names.iter().any(|n| n.is_empty()) {
                return Err(bad(&names_path, "a column name is empty"));
            }
            if names.len() != cols {
                return Err(bad(
                    &names_path,
                    format!(
                        "lists {} column names but {} has {cols} columns",
                        names.len(),
                        path.display()
                    ),
                ));
            }
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((0..cols).map(|c| c.to_string()).collect())
        }
        Err(e) => Err(Error::io(&names_path, e)),
    }
}

/// Sequential reader of the rows of a 2-D `.npy` file, converting to f32.
pub struct NpyReader {
    path: PathBuf,
    reader: BufReader<File>,
    pub header: Header,
    next_row: usize,
    buf: Vec<u8>,
}

impl NpyReader {
    pub fn open(path: &Path) -> Result<NpyReader> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let header = read_header(path, &mut file)?;
        Ok(NpyReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            header,
            next_row: 0,
            buf: Vec::new(),
        })
    }

    /// Moves to row `row` (the next [`NpyReader::read_rows`] starts there).
    pub fn seek_row(&mut self, row: usize) -> Result<()> {
        let at =
            self.header.data_offset + (row * self.header.cols * self.header.dtype.size()) as u64;
        self.reader
            .seek(SeekFrom::Start(at))
            .map_err(|e| Error::io(&self.path, e))?;
        self.next_row = row;
        Ok(())
    }

    /// Reads up to `max_rows` rows into `out` (cleared first), as f32; returns the rows read
    /// (0 at the end). Refuses NaN and infinite values, naming the row and column.
    pub fn read_rows(&mut self, max_rows: usize, out: &mut Vec<f32>) -> Result<usize> {
        out.clear();
        let n = max_rows.min(self.header.rows - self.next_row);
        let cols = self.header.cols;
        let size = self.header.dtype.size();
        self.buf.resize(n * cols * size, 0);
        self.reader
            .read_exact(&mut self.buf)
            .map_err(|e| Error::io(&self.path, e))?;
        out.reserve(n * cols);
        match self.header.dtype {
            Dtype::F32 => out.extend(
                self.buf
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            Dtype::F64 => out.extend(
                self.buf
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
            ),
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            let (r, c) = (self.next_row + i / cols, i % cols);
            return Err(bad(
                &self.path,
                format!(
                    "row {r}, column {c}: {} is not a finite 32-bit float (NaN, infinity and values beyond 3.4e38 are refused)",
                    out[i]
                ),
            ));
        }
        self.next_row += n;
        Ok(n)
    }
}

/// Writes a 2-D float32 `.npy` file row by row, to a temporary file renamed into place by
/// [`NpyWriter::finish`], which also fills in the row count.
pub struct NpyWriter {
    path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    cols: usize,
    rows: usize,
}

/// Room for the header: fixed, so the row count can be written after the data.
const HEADER_BYTES: usize = 128;

fn header_text(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = Vec::with_capacity(HEADER_BYTES);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&[1, 0]);
    let len = (HEADER_BYTES - 10) as u16;
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    while h.len() < HEADER_BYTES - 1 {
        h.push(b' ');
    }
    h.push(b'\n');
    h
}

impl NpyWriter {
    pub fn create(path: &Path, cols: usize) -> Result<NpyWriter> {
        let path = &crate::atomic::destination(path)?;
        let tmp = crate::atomic::temp_beside(path)?;
        let mut file = BufWriter::with_capacity(1 << 20, tmp);
        file.write_all(&header_text(0, cols))
            .map_err(|e| Error::io(path, e))?;
        Ok(NpyWriter {
            path: path.to_path_buf(),
            file,
            cols,
            rows: 0,
        })
    }

    /// Appends one or more rows (`values.len()` a multiple of the column count).
    pub fn write_rows(&mut self, values: &[f32]) -> Result<()> {
        debug_assert_eq!(values.len() % self.cols, 0);
        for v in values {
            self.file
                .write_all(&v.to_le_bytes())
                .map_err(|e| Error::io(&self.path, e))?;
        }
        self.rows += values.len() / self.cols;
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes the final header, syncs and renames the file into place.
    pub fn finish(self) -> Result<usize> {
        let path = self.path;
        let mut tmp = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        let header = header_text(self.rows, self.cols);
        assert_eq!(
            header.len(),
            HEADER_BYTES,
            "the shape fits the reserved header"
        );
        tmp.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&path, e))?;
        tmp.write_all(&header).map_err(|e| Error::io(&path, e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(&path, e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(self.rows)
    }
}
