//! Shared test helpers: an independent float64 implementation of the whole model (the
//! reference the backends are checked against), random cases, and the oracle files.
#![allow(dead_code)]

/// A program on the `PATH`.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Whether this process runs as root (the PostgreSQL server then runs as `postgres`; a
/// small filesystem can be mounted).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A free TCP port on loopback (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub mod postgres;
pub mod python;
pub mod s3;
pub mod serve;
pub mod suite;

/// The GPU backend on the software adapter (or any adapter `MDN_TEST_DEVICE` names: `gpu`,
/// `software`, `auto`). Without an adapter: a test failure when `MDN_REQUIRE_GPU=1` (as on
/// CI), otherwise `None` and a note on stderr.
pub fn gpu_backend() -> Option<Box<dyn mdn::backend::Backend>> {
    gpu().map(|b| Box::new(b) as Box<dyn mdn::backend::Backend>)
}

/// The same adapter as [`gpu_backend`], as the concrete type (for tests that reach into the
/// device: readback counters, a deliberately lost device).
pub fn gpu() -> Option<mdn::backend::GpuBackend> {
    gpu_with(mdn::backend::GpuOptions::default())
}

/// The GPU backend on the layered path (a dispatch per layer and pass), which trains the
/// models too wide for the fused step's tiles.
pub fn gpu_backend_layered() -> Option<Box<dyn mdn::backend::Backend>> {
    gpu_with(mdn::backend::GpuOptions {
        path: mdn::backend::GpuPath::Layered,
        ..Default::default()
    })
    .map(|b| Box::new(b) as Box<dyn mdn::backend::Backend>)
}

/// [`gpu`] with explicit options (the path, the fused step's tiling).
pub fn gpu_with(options: mdn::backend::GpuOptions) -> Option<mdn::backend::GpuBackend> {
    use mdn::backend::{DeviceChoice, GpuBackend};
    let choice = match std::env::var("MDN_TEST_DEVICE").as_deref() {
        Ok("gpu") => DeviceChoice::Gpu,
        Ok("auto") => DeviceChoice::Auto,
        _ => DeviceChoice::Software,
    };
    match GpuBackend::with_options(choice, options) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("MDN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("MDN_REQUIRE_GPU=1 but no GPU backend: {e}");
            }
            // Straight to the process's stderr, past the test harness's capture, so that a
            // skipped GPU test is visible in the test output instead of passing silently.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED a GPU test: {e} (set MDN_REQUIRE_GPU=1 to make this a failure)"
            );
            None
        }
    }
}

use mdn::layout::{Activation, Arch, Covariance, Family};

pub const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

pub use mdn::check::{full_covariance_shapes, random_case, random_case_with, shapes};

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Head outputs of every row in f64, by the plain definition.
pub fn ref_forward(arch: &Arch, params: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for r in 0..rows {
        let mut a: Vec<f64> = x[r * arch.inputs..(r + 1) * arch.inputs].to_vec();
        for layer in arch.layers() {
            let mut z = vec![0.0; layer.outputs];
            for o in 0..layer.outputs {
                let mut s = params[layer.bias + o];
                for i in 0..layer.inputs {
                    s += a[i] * params[layer.weights + i * layer.outputs + o];
                }
                z[o] = if layer.activated {
                    match arch.activation {
                        Activation::Relu => s.max(0.0),
                        Activation::Tanh => s.tanh(),
                    }
                } else {
                    s
                };
            }
            a = z;
        }
        out.extend(a);
    }
    out
}

/// Per-row log-likelihood in f64 from head outputs, by the plain definition.
pub fn ref_head_loglik(arch: &Arch, h: &[f64], y: &[f64], rows: usize) -> Vec<f64> {
    let (k, d) = (arch.components, arch.targets);
    let p = arch.head_width();
    let floor = arch.sigma_floor as f64;
    (0..rows)
        .map(|r| {
            let h = &h[r * p..(r + 1) * p];
            let y = &y[r * d..(r + 1) * d];
            let m = h[..k].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + h[..k].iter().map(|a| (a - m).exp()).sum::<f64>().ln();
            let terms: Vec<f64> = (0..k)
                .map(|c| {
                    if arch.family == Family::StudentT {
                        return h[c] - lse + ref_student_logpdf(arch, h, c, y);
                    }
                    if arch.covariance == Covariance::Full {
                        return h[c] - lse + ref_full_gaussian_logpdf(arch, h, c, y);
                    }
                    let mut t = h[c] - lse;
                    for j in 0..d {
                        let mu = h[k + c * d + j];
                        let sigma = softplus(h[k + k * d + c * d + j]) + floor;
                        let z = (y[j] - mu) / sigma;
                        t += -HALF_LN_2PI - sigma.ln() - 0.5 * z * z;
                    }
                    t
                })
                .collect();
            let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
        })
        .collect()
}

/// log N(y; mu_c, Sigma_c) for a full-covariance head, computed differently from the crate:
/// Sigma = L L^T is formed explicitly, then Gaussian elimination with partial pivoting gives
/// both Sigma^{-1} r and log det Sigma.
pub fn ref_full_gaussian_logpdf(arch: &Arch, h: &[f64], c: usize, y: &[f64]) -> f64 {
    let (logdet, quad) = ref_full_parts(arch, h, c, y);
    -(arch.targets as f64) * HALF_LN_2PI - 0.5 * logdet - 0.5 * quad
}

/// The log-density of component `c` of a Student's t head: a multivariate t with the
/// covariance-shaped scale Sigma (diagonal or full, as [`ref_full_parts`] forms it) and
/// nu = 2 + exp(clamp(raw, -10, 20)) from the last K head outputs, by its textbook formula with
/// libm's lgamma.
pub fn ref_student_logpdf(arch: &Arch, h: &[f64], c: usize, y: &[f64]) -> f64 {
    let (k, d) = (arch.components, arch.targets as f64);
    let (logdet, quad) = ref_full_parts(arch, h, c, y);
    let nu = 2.0 + h[arch.head_width() - k + c].clamp(-10.0, 20.0).exp();
    libm::lgamma(0.5 * (nu + d))
        - libm::lgamma(0.5 * nu)
        - 0.5 * d * (nu * std::f64::consts::PI).ln()
        - 0.5 * logdet
        - 0.5 * (nu + d) * (1.0 + quad / nu).ln()
}

/// ln det Sigma_c and r^T Sigma_c^-1 r (r = y - mu_c) of a head's component `c` (full or
/// diagonal): Sigma = L L^T formed explicitly, then Gaussian elimination with partial
/// pivoting.
pub fn ref_full_parts(arch: &Arch, h: &[f64], c: usize, y: &[f64]) -> (f64, f64) {
    let (k, d) = (arch.components, arch.targets);
    let full = arch.covariance == Covariance::Full;
    let t = if full { d * (d - 1) / 2 } else { 0 };
    let floor = arch.sigma_floor as f64;
    let mut l = vec![0.0; d * d];
    for j in 0..d {
        l[j * d + j] = softplus(h[k + k * d + c * d + j]) + floor;
        for i in 0..j {
            if full {
                l[j * d + i] = h[k + 2 * k * d + c * t + j * (j - 1) / 2 + i];
            }
        }
    }
    // Augmented [Sigma | r].
    let mut a = vec![0.0; d * (d + 1)];
    for p in 0..d {
        for q in 0..d {
            a[p * (d + 1) + q] = (0..d).map(|i| l[p * d + i] * l[q * d + i]).sum();
        }
        a[p * (d + 1) + d] = y[p] - h[k + c * d + p];
    }
    let r: Vec<f64> = (0..d).map(|p| a[p * (d + 1) + d]).collect();
    let mut logdet = 0.0;
    for col in 0..d {
        let piv = (col..d)
            .max_by(|&p, &q| {
                a[p * (d + 1) + col]
                    .abs()
                    .total_cmp(&a[q * (d + 1) + col].abs())
            })
            .unwrap();
        if piv != col {
            for q in 0..=d {
                a.swap(piv * (d + 1) + q, col * (d + 1) + q);
            }
        }
        let pv = a[col * (d + 1) + col];
        logdet += pv.abs().ln();
        for p in col + 1..d {
            let f = a[p * (d + 1) + col] / pv;
            for q in col..=d {
                a[p * (d + 1) + q] -= f * a[col * (d + 1) + q];
            }
        }
    }
    let mut x = vec![0.0; d];
    for p in (0..d).rev() {
        let s: f64 = (p + 1..d).map(|q| a[p * (d + 1) + q] * x[q]).sum();
        x[p] = (a[p * (d + 1) + d] - s) / a[p * (d + 1) + p];
    }
    let quad: f64 = r.iter().zip(&x).map(|(a, b)| a * b).sum();
    (logdet, quad)
}

/// Mean NLL plus `l2 * sum(W^2)`, in f64.
pub fn ref_loss(arch: &Arch, params: &[f64], x: &[f64], y: &[f64], rows: usize, l2: f64) -> f64 {
    let h = ref_forward(arch, params, x, rows);
    let ll = ref_head_loglik(arch, &h, y, rows);
    let nll = -ll.iter().sum::<f64>() / rows as f64;
    let mut penalty = 0.0;
    for layer in arch.layers() {
        for w in &params[layer.weights..layer.weights + layer.weight_count()] {
            penalty += w * w;
        }
    }
    nll + l2 * penalty
}

/// Central finite differences of [`ref_loss`] for every parameter.
pub fn ref_grad_fd(
    arch: &Arch,
    params: &[f64],
    x: &[f64],
    y: &[f64],
    rows: usize,
    l2: f64,
) -> Vec<f64> {
    let mut p = params.to_vec();
    (0..p.len())
        .map(|i| {
            let h = 1e-6 * (1.0 + p[i].abs());
            let orig = p[i];
            p[i] = orig + h;
            let up = ref_loss(arch, &p, x, y, rows, l2);
            p[i] = orig - h;
            let down = ref_loss(arch, &p, x, y, rows, l2);
            p[i] = orig;
            (up - down) / (2.0 * h)
        })
        .collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}

/// One float64 oracle case from `tests/fixtures/oracle` (made by PyTorch autograd).
pub struct Oracle {
    pub arch: Arch,
    pub params: Vec<f64>,
    pub grads: Vec<f64>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub rows: usize,
    pub loglik: Vec<f64>,
    pub mean_nll: f64,
    pub head: Vec<f64>,
}

pub fn oracle(name: &str) -> Oracle {
    let path = format!(
        "{}/tests/fixtures/oracle/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let c = &v["config"];
    let get = |k: &str| c[k].as_u64().unwrap() as usize;
    let hidden: Vec<usize> = c["hidden"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_u64().unwrap() as usize)
        .collect();
    let mut arch = Arch::new(get("d"), hidden, Activation::Relu, get("K"), get("D")).unwrap();
    arch.sigma_floor = 0.0; // the oracle uses sigma = softplus(raw)
    let flat = |layers: &serde_json::Value| -> Vec<f64> {
        let mut out = Vec::new();
        for layer in layers.as_array().unwrap() {
            for row in layer["W"].as_array().unwrap() {
                out.extend(row.as_array().unwrap().iter().map(|w| w.as_f64().unwrap()));
            }
            out.extend(
                layer["b"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_f64().unwrap()),
            );
        }
        out
    };
    let matrix = |m: &serde_json::Value| -> Vec<f64> {
        m.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|a| a.as_f64().unwrap()))
            .collect()
    };
    let params = flat(&v["layers"]);
    assert_eq!(
        params.len(),
        arch.param_count(),
        "oracle layout matches ours"
    );
    Oracle {
        grads: flat(&v["grads"]),
        x: matrix(&v["inputs"]),
        y: matrix(&v["targets"]),
        rows: get("n"),
        loglik: v["loglik"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect(),
        mean_nll: v["mean_nll"].as_f64().unwrap(),
        head: matrix(&v["intermediates"]["head"]),
        params,
        arch,
    }
}

/// Wraps a backend so a test can tamper with in-memory epochs: `before` runs before each
/// `train_epoch` (with the attempt number, 1-based, counting retries), `after` may change its
/// statistics. `restore` checks that it really returns to the last snapshot.
pub struct Hooked<B> {
    pub inner: B,
    pub attempts: usize,
    pub restores: usize,
    pub before: BeforeEpoch,
    pub after: AfterEpoch,
}

/// Runs before an epoch attempt, with the attempt number.
pub type BeforeEpoch = Box<dyn FnMut(usize)>;
/// May change an epoch attempt's statistics.
pub type AfterEpoch = Box<dyn FnMut(usize, &mut mdn::backend::EpochStats)>;

impl<B: mdn::backend::Backend> Hooked<B> {
    pub fn new(inner: B) -> Self {
        Hooked {
            inner,
            attempts: 0,
            restores: 0,
            before: Box::new(|_| {}),
            after: Box::new(|_, _| {}),
        }
    }

    fn hook<'a>(
        &'a mut self,
        start: impl FnOnce(&'a mut B) -> mdn::Result<Box<dyn mdn::backend::TrainRun + 'a>>,
    ) -> mdn::Result<Box<dyn mdn::backend::TrainRun + 'a>> {
        let Hooked {
            inner,
            attempts,
            restores,
            before,
            after,
        } = self;
        Ok(Box::new(HookedRun {
            inner: start(inner)?,
            attempts,
            restores,
            before,
            after,
            saved: Vec::new(),
        }))
    }
}

/// A run of a [`Hooked`] backend.
struct HookedRun<'a> {
    inner: Box<dyn mdn::backend::TrainRun + 'a>,
    attempts: &'a mut usize,
    restores: &'a mut usize,
    before: &'a mut BeforeEpoch,
    after: &'a mut AfterEpoch,
    saved: Vec<f32>,
}

impl<B: mdn::backend::Backend> mdn::backend::Backend for Hooked<B> {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn start<'a>(
        &'a mut self,
        a: &Arch,
        p: &[f32],
        t: mdn::backend::DataRef<'_>,
        v: Option<mdn::backend::DataRef<'_>>,
    ) -> mdn::Result<Box<dyn mdn::backend::TrainRun + 'a>> {
        self.hook(|inner| inner.start(a, p, t, v))
    }
    fn start_stream<'a>(
        &'a mut self,
        a: &Arch,
        p: &[f32],
        v: Option<mdn::backend::DataRef<'_>>,
        c: usize,
    ) -> mdn::Result<Box<dyn mdn::backend::TrainRun + 'a>> {
        self.hook(|inner| inner.start_stream(a, p, v, c))
    }
    fn forward(&mut self, a: &Arch, p: &[f32], x: &[f32], r: usize) -> mdn::Result<Vec<f32>> {
        self.inner.forward(a, p, x, r)
    }
    fn loglik(
        &mut self,
        a: &Arch,
        p: &[f32],
        x: &[f32],
        y: &[f32],
        r: usize,
    ) -> mdn::Result<Vec<f64>> {
        self.inner.loglik(a, p, x, y, r)
    }
    fn loss_grad(
        &mut self,
        a: &Arch,
        p: &[f32],
        x: &[f32],
        y: &[f32],
        r: usize,
        l2: f32,
    ) -> mdn::Result<mdn::backend::LossGrad> {
        self.inner.loss_grad(a, p, x, y, r, l2)
    }
    fn adam_step(
        &mut self,
        p: &mut [f32],
        g: &[f32],
        s: &mut mdn::backend::AdamState,
        cfg: &mdn::backend::StepConfig,
    ) -> mdn::Result<()> {
        self.inner.adam_step(p, g, s, cfg)
    }
}

impl mdn::backend::TrainRun for HookedRun<'_> {
    fn train_epoch(
        &mut self,
        order: &[u32],
        cfg: &mdn::backend::StepConfig,
    ) -> mdn::Result<mdn::backend::EpochStats> {
        *self.attempts += 1;
        (self.before)(*self.attempts);
        let mut s = self.inner.train_epoch(order, cfg)?;
        (self.after)(*self.attempts, &mut s);
        Ok(s)
    }
    fn begin_epoch(&mut self, rows: usize, cfg: &mdn::backend::StepConfig) -> mdn::Result<()> {
        self.inner.begin_epoch(rows, cfg)
    }
    fn train_chunk(&mut self, x: &[f32], y: &[f32], rows: usize) -> mdn::Result<()> {
        self.inner.train_chunk(x, y, rows)
    }
    fn end_epoch(&mut self) -> mdn::Result<mdn::backend::EpochStats> {
        self.inner.end_epoch()
    }
    fn save_state(&mut self) -> mdn::Result<mdn::backend::TrainState> {
        self.inner.save_state()
    }
    fn load_state(&mut self, s: &mdn::backend::TrainState) -> mdn::Result<()> {
        self.inner.load_state(s)
    }
    fn snapshot(&mut self) -> mdn::Result<()> {
        self.saved = self.inner.current_params()?;
        self.inner.snapshot()
    }
    fn restore(&mut self) -> mdn::Result<()> {
        self.inner.restore()?;
        assert_eq!(
            self.inner.current_params()?,
            self.saved,
            "restore returned to the snapshot"
        );
        *self.restores += 1;
        Ok(())
    }
    fn keep_best(&mut self) -> mdn::Result<()> {
        self.inner.keep_best()
    }
    fn best_params(&mut self) -> mdn::Result<Vec<f32>> {
        self.inner.best_params()
    }
    fn current_params(&mut self) -> mdn::Result<Vec<f32>> {
        self.inner.current_params()
    }
}
