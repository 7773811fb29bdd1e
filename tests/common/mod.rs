//! Shared test helpers: an independent float64 implementation of the whole model (the
//! reference the backends are checked against), random cases, and the oracle files.
#![allow(dead_code)]

pub mod suite;

/// The GPU backend on the software adapter (or any adapter `MDN_TEST_DEVICE` names: `gpu`,
/// `software`, `auto`). Without an adapter: a test failure when `MDN_REQUIRE_GPU=1` (as on
/// CI), otherwise `None` and a note on stderr.
pub fn gpu_backend() -> Option<Box<dyn mdn::backend::Backend>> {
    use mdn::backend::{DeviceChoice, GpuBackend};
    let choice = match std::env::var("MDN_TEST_DEVICE").as_deref() {
        Ok("gpu") => DeviceChoice::Gpu,
        Ok("auto") => DeviceChoice::Auto,
        _ => DeviceChoice::Software,
    };
    match GpuBackend::new(choice) {
        Ok(b) => Some(Box::new(b)),
        Err(e) => {
            if std::env::var("MDN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("MDN_REQUIRE_GPU=1 but no GPU backend: {e}");
            }
            eprintln!("skipping a GPU test: {e} (set MDN_REQUIRE_GPU=1 to make this a failure)");
            None
        }
    }
}

use mdn::layout::{Activation, Arch};

pub const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

pub use mdn::check::{random_case, shapes};

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
