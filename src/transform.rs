//! Target transforms: a target the mixture is fitted to in other units. `log` (a positive
//! target: each Gaussian component becomes a log-normal one) and `logit:LOW,HIGH` (a target
//! bounded to the open interval (LOW, HIGH): each component becomes a logit-normal one). The
//! network, the scaler and the backends see `z = g(y)` only; the model's density, scores,
//! quantiles and samples are in the original units of `y`, with the Jacobian
//! `|dz/dy|` applied, so that NLLs stay comparable with an untransformed model's.
//!
//! A transform is written as text everywhere (command line, model file, job JSON, Python):
//! `none`, `log` or `logit:LOW,HIGH`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::mixture::softplus;

/// How one target is mapped before the mixture is fitted: `z = g(y)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Transform {
    /// z = y.
    #[default]
    None,
    /// z = ln y, for y > 0.
    Log,
    /// z = ln(u / (1 - u)) with u = (y - low) / (high - low), for low < y < high.
    Logit { low: f64, high: f64 },
}

impl Transform {
    pub fn is_none(&self) -> bool {
        matches!(self, Transform::None)
    }

    /// z = g(y); `None` when y is outside the transform's support.
    pub fn forward(&self, y: f64) -> Option<f64> {
        match *self {
            Transform::None => Some(y),
            Transform::Log => (y > 0.0).then(|| y.ln()),
            Transform::Logit { low, high } => (y > low && y < high).then(|| {
                // ln(y - low) - ln(high - y): no cancellation near either bound.
                (y - low).ln() - (high - y).ln()
            }),
        }
    }

    /// y = g⁻¹(z), strictly inside the support: where f64 rounds e^z to 0 or infinity, or
    /// a bound plus a share of the range to the bound itself, the nearest value inside
    /// (a far quantile, mode or sample stays a possible value).
    pub fn inverse(&self, z: f64) -> f64 {
        match *self {
            Transform::None => z,
            Transform::Log => z.exp().clamp(f64::MIN_POSITIVE, f64::MAX),
            Transform::Logit { low, high } => {
                // low + (high - low) sigmoid(z), the sigmoid computed without overflow.
                let s = if z >= 0.0 {
                    1.0 / (1.0 + (-z).exp())
                } else {
                    let e = z.exp();
                    e / (1.0 + e)
                };
                (low + (high - low) * s).clamp(low.next_up(), high.next_down())
            }
        }
    }

    /// ln |dz/dy| at y = g⁻¹(z), written in z: a density of z times exp of this is the
    /// density of y.
    pub fn log_jacobian(&self, z: f64) -> f64 {
        match *self {
            Transform::None => 0.0,
            // dz/dy = 1/y = e^-z.
            Transform::Log => -z,
            // dz/dy = 1 / ((high - low) s (1 - s)), s = sigmoid(z); -ln s = softplus(-z),
            // -ln(1 - s) = softplus(z).
            Transform::Logit { low, high } => -(high - low).ln() + softplus(-z) + softplus(z),
        }
    }

    /// ln |dz/dy| at y, computed from y (exact where [`Transform::log_jacobian`] of a z
    /// rounded to f32 is not).
    pub fn log_jacobian_at(&self, y: f64) -> f64 {
        match *self {
            Transform::None => 0.0,
            Transform::Log => -y.ln(),
            // dz/dy = 1/(y - low) + 1/(high - y) = (high - low) / ((y - low)(high - y)).
            Transform::Logit { low, high } => (high - low).ln() - (y - low).ln() - (high - y).ln(),
        }
    }

    /// The values the transform takes, for messages: "positive", "between 0 and 1".
    pub fn support(&self) -> String {
        match *self {
            Transform::None => "any number".into(),
            Transform::Log => "positive (greater than 0)".into(),
            Transform::Logit { low, high } => format!("strictly between {low} and {high}"),
        }
    }

    /// The support's bounds (open), for plots: (-inf, inf), (0, inf) or (low, high).
    pub fn bounds(&self) -> (f64, f64) {
        match *self {
            Transform::None => (f64::NEG_INFINITY, f64::INFINITY),
            Transform::Log => (0.0, f64::INFINITY),
            Transform::Logit { low, high } => (low, high),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::None => f.write_str("none"),
            Transform::Log => f.write_str("log"),
            Transform::Logit { low, high } => write!(f, "logit:{low},{high}"),
        }
    }
}

impl std::str::FromStr for Transform {
    type Err = String;

    fn from_str(s: &str) -> Result<Transform, String> {
        let s = s.trim();
        match s {
            "none" => return Ok(Transform::None),
            "log" => return Ok(Transform::Log),
            "logit" => {
                return Err(
                    "'logit' needs its bounds: logit:LOW,HIGH (logit:0,1 for a share)".into(),
                );
            }
            _ => {}
        }
        if let Some(bounds) = s.strip_prefix("logit:") {
            let parts: Vec<&str> = bounds.split(',').map(str::trim).collect();
            let nums: Vec<Option<f64>> = parts.iter().map(|p| p.parse::<f64>().ok()).collect();
            return match nums.as_slice() {
                [Some(low), Some(high)] if low.is_finite() && high.is_finite() && low < high => {
                    Ok(Transform::Logit {
                        low: *low,
                        high: *high,
                    })
                }
                [Some(_), Some(_)] => Err(format!(
                    "'{s}': logit's bounds must be finite numbers with LOW < HIGH"
                )),
                _ => Err(format!(
                    "'{s}': logit's bounds are two numbers, logit:LOW,HIGH (logit:0,1 for a share)"
                )),
            };
        }
        Err(format!(
            "unknown transform '{s}': expected none, log or logit:LOW,HIGH"
        ))
    }
}

impl Serialize for Transform {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Transform {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Transform, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether every target is untransformed (also when no transforms are given).
pub fn all_none(transforms: &[Transform]) -> bool {
    transforms.iter().all(Transform::is_none)
}

/// The transform of target `j` (none when `transforms` is empty).
pub fn of(transforms: &[Transform], j: usize) -> Transform {
    transforms.get(j).copied().unwrap_or_default()
}

/// The per-target transforms that `spec` names for `targets`: one transform for every target
/// (`log`), or `target=transform` items separated by `;` (`price=log;share=logit:0,1`),
/// the targets not named untransformed. Empty when every target is untransformed.
pub fn parse_spec(spec: &str, targets: &[String]) -> Result<Vec<Transform>, String> {
    check_spec(spec)?;
    let spec = spec.trim();
    let mut out = vec![Transform::None; targets.len()];
    let mut named = vec![false; targets.len()];
    if !spec.contains('=') {
        let t: Transform = spec.parse()?;
        out.fill(t);
    } else {
        for item in spec.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((name, t)) = item.split_once('=') else {
                return Err(format!(
                    "'{item}': name each target's transform as TARGET=TRANSFORM (for example {}=log), separated by ';'",
                    targets.first().map_or("y", |t| t.as_str())
                ));
            };
            let name = name.trim();
            let Some(j) = targets.iter().position(|t| t == name) else {
                return Err(format!(
                    "'{name}' is not a target (the targets are {})",
                    targets.join(", ")
                ));
            };
            if named[j] {
                return Err(format!("'{name}' is named twice"));
            }
            named[j] = true;
            out[j] = t.parse()?;
        }
    }
    Ok(if all_none(&out) { Vec::new() } else { out })
}

/// Whether a checked spec transforms no target (`none`, or every named target `none`).
pub fn spec_is_none(spec: &str) -> bool {
    let spec = spec.trim();
    if !spec.contains('=') {
        return spec.parse::<Transform>() == Ok(Transform::None);
    }
    spec.split(';')
        .filter_map(|item| item.split_once('='))
        .all(|(_, t)| t.parse::<Transform>() == Ok(Transform::None))
}

/// Checks a spec's form without the targets (before any file is read): not empty, a
/// transform, or `name=transform` items each with a name and a transform.
pub fn check_spec(spec: &str) -> Result<(), String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("is empty: give none, log or logit:LOW,HIGH".into());
    }
    if !spec.contains('=') {
        return spec.parse::<Transform>().map(|_| ());
    }
    for item in spec.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((name, t)) if !name.trim().is_empty() => {
                t.parse::<Transform>()?;
            }
            _ => {
                return Err(format!(
                    "'{item}': name each target's transform as TARGET=TRANSFORM (for example price=log), separated by ';'"
                ));
            }
        }
    }
    Ok(())
}

/// The transforms as the spec [`parse_spec`] reads back: `log`, or `a=log;b=none`.
pub fn spec(transforms: &[Transform], targets: &[String]) -> String {
    if all_none(transforms) {
        return "none".into();
    }
    if transforms.len() == 1 || transforms.windows(2).all(|w| w[0] == w[1]) {
        return transforms[0].to_string();
    }
    targets
        .iter()
        .zip(transforms)
        .map(|(n, t)| format!("{n}={t}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Row-major targets `y` (`d` per row) mapped to `z` in place; the first value outside its
/// transform's support as (row, target, value).
pub fn forward_rows(
    transforms: &[Transform],
    y: &mut [f32],
    d: usize,
) -> Result<(), (usize, usize, f32)> {
    if all_none(transforms) {
        return Ok(());
    }
    for (r, row) in y.chunks_exact_mut(d).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let t = of(transforms, j);
            match t.forward(*v as f64) {
                Some(z) if z.is_finite() => *v = z as f32,
                _ => return Err((r, j, *v)),
            }
        }
    }
    Ok(())
}

/// ln |dz/dy| of one row of transformed targets `z` (the sum over its targets).
pub fn row_log_jacobian(transforms: &[Transform], z: &[f32]) -> f64 {
    transforms
        .iter()
        .zip(z)
        .map(|(t, &v)| t.log_jacobian(v as f64))
        .sum()
}

/// The mean of [`row_log_jacobian`] over the rows of row-major `z` (0 for no rows).
pub fn mean_log_jacobian(transforms: &[Transform], z: &[f32], d: usize) -> f64 {
    if all_none(transforms) || z.is_empty() {
        return 0.0;
    }
    let rows = z.len() / d;
    z.chunks_exact(d)
        .map(|r| row_log_jacobian(transforms, r))
        .sum::<f64>()
        / rows as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
    }

    #[test]
    fn round_trips_and_jacobians_match_finite_differences() {
        let cases = [
            (Transform::Log, vec![1e-6, 0.3, 1.0, 42.0, 1e6]),
            (
                Transform::Logit {
                    low: -2.0,
                    high: 5.0,
                },
                vec![-1.999, -1.0, 0.0, 3.3, 4.999],
            ),
            (Transform::None, vec![-3.0, 0.0, 7.5]),
        ];
        for (t, ys) in cases {
            for y in ys {
                let z = t.forward(y).unwrap();
                close(t.inverse(z), y, 1e-12);
                let (low, high) = t.bounds();
                let h = 1e-5 * (1.0 + y.abs()).min(y - low).min(high - y);
                let dz = (t.forward(y + h).unwrap() - t.forward(y - h).unwrap()) / (2.0 * h);
                close(t.log_jacobian(z), dz.abs().ln(), 1e-6);
                close(t.log_jacobian_at(y), t.log_jacobian(z), 1e-12);
            }
        }
    }

    #[test]
    fn outside_the_support_is_refused() {
        assert_eq!(Transform::Log.forward(0.0), None);
        assert_eq!(Transform::Log.forward(-1.0), None);
        let t = Transform::Logit {
            low: 0.0,
            high: 1.0,
        };
        assert_eq!(t.forward(0.0), None);
        assert_eq!(t.forward(1.0), None);
        let mut y = vec![1.0f32, 0.5, 2.0, 0.0];
        assert_eq!(
            forward_rows(&[Transform::Log, Transform::Log], &mut y, 2),
            Err((1, 1, 0.0))
        );
    }

    #[test]
    fn specs_parse_and_print() {
        let targets = vec!["price".to_string(), "share".to_string()];
        assert_eq!(parse_spec("none", &targets).unwrap(), vec![]);
        assert_eq!(
            parse_spec("log", &targets).unwrap(),
            vec![Transform::Log, Transform::Log]
        );
        let both = parse_spec("price=log; share=logit:0,1", &targets).unwrap();
        assert_eq!(
            both,
            vec![
                Transform::Log,
                Transform::Logit {
                    low: 0.0,
                    high: 1.0
                }
            ]
        );
        assert_eq!(spec(&both, &targets), "price=log;share=logit:0,1");
        assert_eq!(parse_spec(&spec(&both, &targets), &targets).unwrap(), both);
        assert_eq!(
            parse_spec("share=logit:0,1", &targets).unwrap()[0],
            Transform::None
        );
        for bad in [
            "",
            "price=log;price=none",
            "=log",
            "logit",
            "logit:1,0",
            "logit:0",
            "sqrt",
            "cost=log",
            "price=log;share",
        ] {
            let e = parse_spec(bad, &targets).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(
            parse_spec("cost=log", &targets)
                .unwrap_err()
                .contains("price, share")
        );
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(json, r#"["log","logit:0,1"]"#);
        assert_eq!(serde_json::from_str::<Vec<Transform>>(&json).unwrap(), both);
    }
}
