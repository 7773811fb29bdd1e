//! The validation split: which rows of a data set are held out, decided by row index and
//! seed alone, so that a run in memory and a streamed run hold out the same rows, every epoch,
//! with no pass over the data to decide.

use crate::data::Dataset;
use crate::error::{Error, Result};

/// Salt of the validation-split hash.
const SPLIT_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64: a fast, well-mixed hash of a 64-bit value.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which rows (0-based, in file order) are held out for validation. Each row gets a key from
/// a hash of the seed and its index; the `round(fraction * rows)` rows with the smallest keys
/// are held out, so that the count is exact and a streamed run holds out the same rows as one
/// in memory. Above [`ValidationSplit::EXACT_ROWS`] rows each row is held out on its own with
/// probability `fraction` (the count then off by a fraction of a percent), so that the split
/// needs no memory per row.
#[derive(Debug, Clone, Copy)]
pub struct ValidationSplit {
    seed_key: u64,
    rule: SplitRule,
}

#[derive(Debug, Clone, Copy)]
enum SplitRule {
    /// No row held out.
    Nothing,
    /// The rows whose key is at most this.
    UpTo(u64),
    /// Each row with this probability.
    Random(f64),
}

impl ValidationSplit {
    /// Splits up to this many rows exactly (the keys take 8 bytes a row while the split is
    /// chosen).
    pub const EXACT_ROWS: usize = 1 << 22;

    pub fn new(seed: u64, fraction: f64, rows: usize) -> ValidationSplit {
        let k = Self::held_out(fraction, rows);
        if fraction <= 0.0 || rows > Self::EXACT_ROWS {
            return Self::per_row(seed, fraction);
        }
        let seed_key = splitmix64(seed ^ SPLIT_SALT);
        let rule = match k {
            0 => SplitRule::Nothing,
            k => {
                let mut keys: Vec<u64> = (0..rows as u64).map(|r| key(seed_key, r)).collect();
                SplitRule::UpTo(*keys.select_nth_unstable(k - 1).1)
            }
        };
        ValidationSplit { seed_key, rule }
    }

    /// How many of `rows` rows an exact split at `fraction` holds out: round(fraction x rows).
    pub fn held_out(fraction: f64, rows: usize) -> usize {
        ((fraction.max(0.0) * rows as f64).round() as usize).min(rows)
    }

    /// Each row held out on its own with probability `fraction`: the rule before the exact
    /// one, kept for runs resumed from checkpoints that were split so.
    pub fn per_row(seed: u64, fraction: f64) -> ValidationSplit {
        ValidationSplit {
            seed_key: splitmix64(seed ^ SPLIT_SALT),
            rule: if fraction > 0.0 {
                SplitRule::Random(fraction)
            } else {
                SplitRule::Nothing
            },
        }
    }

    /// Whether `row` is held out.
    pub fn contains(&self, row: u64) -> bool {
        match self.rule {
            SplitRule::Nothing => false,
            SplitRule::UpTo(cut) => key(self.seed_key, row) <= cut,
            SplitRule::Random(p) => {
                let h = splitmix64(self.seed_key ^ row);
                ((h >> 11) as f64 / (1u64 << 53) as f64) < p
            }
        }
    }
}

/// A row's key for the split: the high bits of a hash of the seed and its index, the index in
/// the low 22 bits (so that no two rows of an exact split share one).
fn key(seed_key: u64, row: u64) -> u64 {
    const LOW: u64 = (1 << 22) - 1;
    (splitmix64(seed_key ^ row) & !LOW) | (row & LOW)
}

/// Splits `data` into training and validation rows by [`ValidationSplit`]. Returns no
/// validation set when `fraction` is 0.
pub fn split_validation(
    data: &Dataset,
    fraction: f64,
    seed: u64,
) -> Result<(Dataset, Option<Dataset>)> {
    split_validation_by(
        data,
        fraction,
        ValidationSplit::new(seed, fraction, data.rows),
    )
}

/// [`split_validation`] by a given split (a resumed run's may be the old per-row one).
pub fn split_validation_by(
    data: &Dataset,
    fraction: f64,
    split: ValidationSplit,
) -> Result<(Dataset, Option<Dataset>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::config(format!(
            "--val-fraction must be in [0, 1), got {fraction}"
        )));
    }
    if fraction == 0.0 {
        return Ok((data.clone(), None));
    }
    let (val, train): (Vec<usize>, Vec<usize>) =
        (0..data.rows).partition(|&r| split.contains(r as u64));
    if val.is_empty() || train.is_empty() {
        return Err(Error::config(format!(
            "{}: {} rows are too few to hold out a validation fraction of {fraction}",
            data.path.display(),
            data.rows
        )));
    }
    Ok((data.subset(&train), Some(data.subset(&val))))
}
