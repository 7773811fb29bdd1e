//! Synthetic data sets for benchmarks, tests and large-file experiments, generated row by row
//! (so `mdn generate` can write files of any size in bounded memory), deterministic by seed.
//!
//! * `bishop`: Bishop's inverse problem, d=1, D=1: t ~ U(0,1), x = t + 0.3 sin(2 pi t) +
//!   U(-0.1, 0.1); predict t from x.
//! * `wide`: d=16, D=2, a 3-mode Gaussian mixture whose parameters depend on x through a fixed
//!   random structure (independent of the seed): z = tanh(x P), mu_j = OFF_j + z M_j +
//!   0.5 sin(x S_j), logits = 1.5 x Q, fixed sigmas. The same family as the reference peers'
//!   generator (`shared/reference/peers/mdn_data.py`), drawn with our own RNG, so the rows
//!   differ but the problem is the same.
//! * `correlated`: d=1, D=3, one Gaussian whose mean and full covariance depend on x
//!   ([`correlated_truth`]): strongly correlated targets (y0 and y1 about 0.93 at x = 0), for
//!   `--covariance full`. Its true conditional density is known, so tests compare a trained
//!   model's NLL with the best possible one.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::Dataset;
use crate::error::{Error, Result};

/// Which problem to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bishop,
    Wide,
    Correlated,
}

crate::named::named!(Kind, "data set kind", {
    Bishop => "bishop": "d=1, D=1: Bishop's inverse problem, up to three answers",
    Wide => "wide": "d=16, D=2: a three-mode mixture whose weights and means depend on x",
    Correlated => "correlated": "d=1, D=3: one Gaussian with strongly correlated targets",
});

impl Kind {
    pub fn parse(name: &str) -> Result<Kind> {
        name.parse().map_err(Error::config)
    }
}

const WIDE_IN: usize = 16;
const WIDE_OUT: usize = 2;
const WIDE_MODES: usize = 3;
const WIDE_HIDDEN: usize = 8;
const STRUCT_SEED: u64 = 20240611;
const OFF: [[f64; 2]; 3] = [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]];
const SIG: [[f64; 2]; 3] = [[0.15, 0.30], [0.40, 0.20], [0.25, 0.25]];

/// The fixed random structure of `wide`.
struct WideStructure {
    p: Vec<f64>,
    m: Vec<f64>,
    s: Vec<f64>,
    q: Vec<f64>,
}

impl WideStructure {
    fn new() -> WideStructure {
        let mut r = ChaCha8Rng::seed_from_u64(STRUCT_SEED);
        let mut normal = |sd: f64, len: usize| -> Vec<f64> {
            (0..len)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut r);
                    sd * z
                })
                .collect()
        };
        let inv = 1.0 / (WIDE_IN as f64).sqrt();
        WideStructure {
            p: normal(inv, WIDE_IN * WIDE_HIDDEN),
            m: normal(1.0, WIDE_MODES * WIDE_HIDDEN * WIDE_OUT),
            s: normal(inv, WIDE_MODES * WIDE_IN * WIDE_OUT),
            q: normal(inv, WIDE_IN * WIDE_MODES),
        }
    }
}

/// The `correlated` problem's true conditional distribution at `x`: y ~ N(mu, L L^T) with
/// `L` lower-triangular (row-major 3 x 3).
pub fn correlated_truth(x: f64) -> ([f64; 3], [f64; 9]) {
    let pi = std::f64::consts::PI;
    let mu = [(pi * x).sin(), 0.5 * x, x * x];
    #[rustfmt::skip]
    let l = [
        0.3,            0.0,  0.0,
        0.25 + 0.1 * x, 0.1,  0.0,
        -0.2 * x,       0.15, 0.08,
    ];
    (mu, l)
}

/// Generates rows of one problem.
pub struct Generator {
    kind: Kind,
    rng: ChaCha8Rng,
    wide: Option<WideStructure>,
    x64: Vec<f64>,
}

impl Generator {
    pub fn new(kind: Kind, seed: u64) -> Generator {
        Generator {
            kind,
            rng: ChaCha8Rng::seed_from_u64(seed),
            wide: (kind == Kind::Wide).then(WideStructure::new),
            x64: Vec::with_capacity(WIDE_IN),
        }
    }

    /// Feature and target column names.
    pub fn columns(&self) -> (Vec<String>, Vec<String>) {
        match self.kind {
            Kind::Bishop => (vec!["x".into()], vec!["t".into()]),
            Kind::Wide => (
                (0..WIDE_IN).map(|i| format!("x{i}")).collect(),
                (0..WIDE_OUT).map(|j| format!("y{j}")).collect(),
            ),
            Kind::Correlated => (
                vec!["x".into()],
                vec!["y0".into(), "y1".into(), "y2".into()],
            ),
        }
    }

    /// Appends one row's features to `x` and targets to `y`.
    pub fn row(&mut self, x: &mut Vec<f32>, y: &mut Vec<f32>) {
        let rng = &mut self.rng;
        match (self.kind, &self.wide) {
            (Kind::Correlated, _) => {
                let xv: f64 = rng.random_range(-1.0..1.0);
                let (mu, l) = correlated_truth(xv);
                let e: [f64; 3] = [0; 3].map(|_| StandardNormal.sample(&mut *rng));
                x.push(xv as f32);
                for j in 0..3 {
                    let le: f64 = (0..=j).map(|i| l[j * 3 + i] * e[i]).sum();
                    y.push((mu[j] + le) as f32);
                }
            }
            (Kind::Bishop, _) | (Kind::Wide, None) => {
                let t: f64 = rng.random();
                let noise: f64 = rng.random_range(-0.1..0.1);
                x.push((t + 0.3 * (2.0 * std::f64::consts::PI * t).sin() + noise) as f32);
                y.push(t as f32);
            }
            (Kind::Wide, Some(w)) => {
                self.x64.clear();
                for _ in 0..WIDE_IN {
                    let v: f64 = StandardNormal.sample(rng);
                    self.x64.push(v);
                }
                let xv = &self.x64;
                let mut z = [0.0f64; WIDE_HIDDEN];
                for (h, zh) in z.iter_mut().enumerate() {
                    *zh = (0..WIDE_IN)
                        .map(|i| xv[i] * w.p[i * WIDE_HIDDEN + h])
                        .sum::<f64>()
                        .tanh();
                }
                let mut weights = [0.0f64; WIDE_MODES];
                for (k, wk) in weights.iter_mut().enumerate() {
                    *wk = 1.5
                        * (0..WIDE_IN)
                            .map(|i| xv[i] * w.q[i * WIDE_MODES + k])
                            .sum::<f64>();
                }
                let top = weights.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                weights.iter_mut().for_each(|v| *v = (*v - top).exp());
                let u: f64 = rng.random::<f64>() * weights.iter().sum::<f64>();
                let mut c = WIDE_MODES - 1;
                let mut acc = 0.0;
                for (k, wk) in weights.iter().enumerate() {
                    acc += wk;
                    if u < acc {
                        c = k;
                        break;
                    }
                }
                for j in 0..WIDE_OUT {
                    let zm: f64 = (0..WIDE_HIDDEN)
                        .map(|h| z[h] * w.m[(c * WIDE_HIDDEN + h) * WIDE_OUT + j])
                        .sum();
                    let xs: f64 = (0..WIDE_IN)
                        .map(|i| xv[i] * w.s[(c * WIDE_IN + i) * WIDE_OUT + j])
                        .sum();
                    let mu = OFF[c][j] + zm + 0.5 * xs.sin();
                    let eps: f64 = StandardNormal.sample(rng);
                    y.push((mu + SIG[c][j] * eps) as f32);
                }
                x.extend(xv.iter().map(|&v| v as f32));
            }
        }
    }
}

/// `n` rows of a problem, in memory.
pub fn generate(kind: Kind, n: usize, seed: u64) -> Dataset {
    let mut g = Generator::new(kind, seed);
    let (features, targets) = g.columns();
    let mut x = Vec::with_capacity(n * features.len());
    let mut y = Vec::with_capacity(n * targets.len());
    for _ in 0..n {
        g.row(&mut x, &mut y);
    }
    let name = match kind {
        Kind::Bishop => "bishop (generated)",
        Kind::Wide => "wide (generated)",
        Kind::Correlated => "correlated (generated)",
    };
    Dataset {
        path: name.into(),
        features,
        targets,
        x,
        y,
        rows: n,
    }
}

/// Bishop's inverse problem with `n` rows.
pub fn bishop(n: usize, seed: u64) -> Dataset {
    generate(Kind::Bishop, n, seed)
}

/// The `wide` problem with `n` rows.
pub fn wide(n: usize, seed: u64) -> Dataset {
    generate(Kind::Wide, n, seed)
}
