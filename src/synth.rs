//! Synthetic data sets for benchmarks and tests, deterministic by seed.
//!
//! * `bishop`: Bishop's inverse problem, d=1, D=1: t ~ U(0,1), x = t + 0.3 sin(2 pi t) +
//!   U(-0.1, 0.1); predict t from x.
//! * `wide`: d=16, D=2, a 3-mode Gaussian mixture whose parameters depend on x through a fixed
//!   random structure (independent of the seed): z = tanh(x P), mu_j = OFF_j + z M_j +
//!   0.5 sin(x S_j), logits = 1.5 x Q, fixed sigmas. The same family as the reference peers'
//!   generator (`shared/reference/peers/mdn_data.py`), drawn with our own RNG, so the rows
//!   differ but the problem is the same.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::Dataset;

/// Bishop's inverse problem with `n` rows.
pub fn bishop(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let t: f64 = rng.random();
        let noise: f64 = rng.random_range(-0.1..0.1);
        x.push((t + 0.3 * (2.0 * std::f64::consts::PI * t).sin() + noise) as f32);
        y.push(t as f32);
    }
    Dataset {
        path: "bishop (generated)".into(),
        features: vec!["x".into()],
        targets: vec!["t".into()],
        x,
        y,
        rows: n,
    }
}

const WIDE_IN: usize = 16;
const WIDE_OUT: usize = 2;
const WIDE_MODES: usize = 3;
const WIDE_HIDDEN: usize = 8;
const STRUCT_SEED: u64 = 20240611;
const OFF: [[f64; 2]; 3] = [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]];
const SIG: [[f64; 2]; 3] = [[0.15, 0.30], [0.40, 0.20], [0.25, 0.25]];

/// The `wide` problem with `n` rows.
pub fn wide(n: usize, seed: u64) -> Dataset {
    let mut s = ChaCha8Rng::seed_from_u64(STRUCT_SEED);
    let normal = |rng: &mut ChaCha8Rng, sd: f64, len: usize| -> Vec<f64> {
        (0..len)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                sd * z
            })
            .collect()
    };
    let inv = 1.0 / (WIDE_IN as f64).sqrt();
    let p = normal(&mut s, inv, WIDE_IN * WIDE_HIDDEN);
    let m = normal(&mut s, 1.0, WIDE_MODES * WIDE_HIDDEN * WIDE_OUT);
    let sm = normal(&mut s, inv, WIDE_MODES * WIDE_IN * WIDE_OUT);
    let q = normal(&mut s, inv, WIDE_IN * WIDE_MODES);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut xs = Vec::with_capacity(n * WIDE_IN);
    let mut ys = Vec::with_capacity(n * WIDE_OUT);
    for _ in 0..n {
        let x: Vec<f64> = (0..WIDE_IN)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let z: Vec<f64> = (0..WIDE_HIDDEN)
            .map(|h| {
                (0..WIDE_IN)
                    .map(|i| x[i] * p[i * WIDE_HIDDEN + h])
                    .sum::<f64>()
                    .tanh()
            })
            .collect();
        let logits: Vec<f64> = (0..WIDE_MODES)
            .map(|k| {
                1.5 * (0..WIDE_IN)
                    .map(|i| x[i] * q[i * WIDE_MODES + k])
                    .sum::<f64>()
            })
            .collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = w.iter().sum();
        let u: f64 = rng.random::<f64>() * total;
        let mut c = WIDE_MODES - 1;
        let mut acc = 0.0;
        for (k, wk) in w.iter().enumerate() {
            acc += wk;
            if u < acc {
                c = k;
                break;
            }
        }
        for j in 0..WIDE_OUT {
            let zm: f64 = (0..WIDE_HIDDEN)
                .map(|h| z[h] * m[(c * WIDE_HIDDEN + h) * WIDE_OUT + j])
                .sum();
            let xs_: f64 = (0..WIDE_IN)
                .map(|i| x[i] * sm[(c * WIDE_IN + i) * WIDE_OUT + j])
                .sum();
            let mu = OFF[c][j] + zm + 0.5 * xs_.sin();
            let eps: f64 = StandardNormal.sample(&mut rng);
            ys.push((mu + SIG[c][j] * eps) as f32);
        }
        xs.extend(x.iter().map(|&v| v as f32));
    }
    Dataset {
        path: "wide (generated)".into(),
        features: (0..WIDE_IN).map(|i| format!("x{i}")).collect(),
        targets: (0..WIDE_OUT).map(|j| format!("y{j}")).collect(),
        x: xs,
        y: ys,
        rows: n,
    }
}
