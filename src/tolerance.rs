//! Comparing floats with an explicit tolerance, reporting the worst element.
//!
//! An element passes when `|actual - expected| <= abs + rel * |expected|`. Used by the tests
//! and by parity checks between backends; a failed comparison names the worst element so a
//! failure says where to look.

/// An absolute and a relative tolerance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// The outcome of comparing two sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub tolerance: Tolerance,
    pub len: usize,
    /// Largest `|actual - expected|`.
    pub max_abs: f64,
    /// Largest `|actual - expected| / |expected|` over elements with `expected != 0`.
    pub max_rel: f64,
    /// The element that exceeds its allowance by the largest factor (or comes closest to it):
    /// (index, actual, expected).
    pub worst: Option<(usize, f64, f64)>,
    /// Number of elements outside the tolerance (NaN counts as outside).
    pub failures: usize,
    /// Lengths differed; nothing else was compared.
    pub length_mismatch: Option<(usize, usize)>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.failures == 0 && self.length_mismatch.is_none()
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((a, e)) = self.length_mismatch {
            return write!(f, "length mismatch: actual has {a} elements, expected {e}");
        }
        write!(
            f,
            "{} of {} elements outside abs {:e} + rel {:e}; max abs err {:e}, max rel err {:e}",
            self.failures,
            self.len,
            self.tolerance.abs,
            self.tolerance.rel,
            self.max_abs,
            self.max_rel
        )?;
        if let Some((i, a, e)) = self.worst {
            write!(f, "; worst at [{i}]: actual {a:e}, expected {e:e}")?;
        }
        Ok(())
    }
}

impl Tolerance {
    pub const fn new(abs: f64, rel: f64) -> Self {
        Tolerance { abs, rel }
    }

    /// Whether one value is within tolerance.
    pub fn accepts(&self, actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= self.abs + self.rel * expected.abs()
    }

    /// Compares element by element.
    pub fn compare<A, E>(&self, actual: &[A], expected: &[E]) -> Comparison
    where
        A: Copy + Into<f64>,
        E: Copy + Into<f64>,
    {
        let mut c = Comparison {
            tolerance: *self,
            len: expected.len(),
            max_abs: 0.0,
            max_rel: 0.0,
            worst: None,
            failures: 0,
            length_mismatch: None,
        };
        if actual.len() != expected.len() {
            c.length_mismatch = Some((actual.len(), expected.len()));
            return c;
        }
        let mut worst_ratio = -1.0f64;
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            let (a, e): (f64, f64) = (a.into(), e.into());
            let err = (a - e).abs();
            let allowed = self.abs + self.rel * e.abs();
            let ratio = if err.is_nan() {
                f64::INFINITY
            } else if allowed > 0.0 {
                err / allowed
            } else if err > 0.0 {
                f64::INFINITY
            } else {
                0.0
            };
            if err.is_nan() || err > allowed {
                c.failures += 1;
            }
            if err.is_nan() {
                c.max_abs = f64::NAN;
            } else {
                c.max_abs = c.max_abs.max(err);
                if e != 0.0 {
                    c.max_rel = c.max_rel.max(err / e.abs());
                }
            }
            if ratio > worst_ratio {
                worst_ratio = ratio;
                c.worst = Some((i, a, e));
            }
        }
        c
    }

    /// Panics with the comparison's report when it fails (for tests).
    #[track_caller]
    pub fn assert_close<A, E>(&self, what: &str, actual: &[A], expected: &[E])
    where
        A: Copy + Into<f64>,
        E: Copy + Into<f64>,
    {
        let c = self.compare(actual, expected);
        assert!(c.passed(), "{what}: {c}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_worst_element() {
        let t = Tolerance::new(1e-6, 1e-3);
        let c = t.compare(&[1.0f64, 2.0, 3.1], &[1.0f64, 2.0001, 3.0]);
        assert_eq!(c.failures, 1);
        assert_eq!(c.worst.unwrap().0, 2);
        assert!(!c.passed());
        assert!(c.to_string().contains("worst at [2]"));
        assert!(t.compare(&[1.0f64], &[1.0005f64]).passed());
        assert!(!t.compare(&[f64::NAN], &[1.0f64]).passed());
        assert!(!t.compare(&[1.0f64], &[1.0f64, 2.0]).passed());
    }
}
