//! Choices made by name: `--activation relu` on the command line, `"covariance": "full"` in
//! a job's JSON. Each such enum implements [`Named`] (its names, one-line help, `FromStr`,
//! `Display`), so the library parses them itself and the command line builds its value
//! parsers from the same list, without the library depending on the argument parser.

/// An enum of unit variants chosen by name.
pub trait Named: Copy + PartialEq + Send + Sync + 'static {
    /// What a value is called in messages ("activation").
    const WHAT: &'static str;
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
    /// One line for `--help`.
    fn help(self) -> &'static str;
}

/// The value named `s` (exactly, or ignoring ASCII case), or a message listing the names.
pub fn parse_named<T: Named>(s: &str) -> Result<T, String> {
    let s = s.trim();
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
            format!("'{s}' is not a {} (choose {})", T::WHAT, names.join(", "))
        })
}

/// Implements [`Named`], an inherent `name`, `FromStr` and `Display` for an enum.
macro_rules! named {
    ($t:ident, $what:literal, { $($v:ident => $n:literal: $h:literal),+ $(,)? }) => {
        impl $t {
            /// The value's name, as options and files spell it.
            pub fn name(self) -> &'static str {
                match self { $($t::$v => $n),+ }
            }
        }
        impl $crate::named::Named for $t {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($t::$v),+];
            fn name(self) -> &'static str {
                $t::name(self)
            }
            fn help(self) -> &'static str {
                match self { $($t::$v => $h),+ }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                $crate::named::parse_named(s)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use named;
