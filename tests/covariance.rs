//! Full-covariance mixtures (`--covariance full`): on data whose true conditional density is
//! known and has strongly correlated targets, a full-covariance model must approach the true
//! NLL and beat diagonal models; its predictions and samples must carry the covariance; and it
//! must reduce exactly to the diagonal model where it should.

mod common;

use mdn::backend::{Backend, CpuBackend};
use mdn::data::Dataset;
use mdn::layout::Covariance;
use mdn::model::Model;
use mdn::synth::{Kind, correlated_truth, generate};
use mdn::tolerance::Tolerance;
use mdn::train::{Stopping, TrainOptions, split_validation, train};

fn fit(data: &Dataset, components: usize, covariance: Covariance) -> Model {
    let opts = TrainOptions {
        hidden: vec![32],
        components,
        covariance,
        stopping: Stopping::Early {
            patience: 10,
            max_epochs: 150,
        },
        ..TrainOptions::default()
    };
    let (tr, val) = split_validation(data, 0.1, 0).unwrap();
    train(
        &mut CpuBackend::new(),
        &tr,
        val.as_ref(),
        &opts,
        &mut |_| true,
    )
    .unwrap()
}

fn mean_nll(model: &Model, data: &Dataset) -> f64 {
    let ll = model.loglik(&mut CpuBackend::new(), data).unwrap();
    -ll.iter().sum::<f64>() / ll.len() as f64
}

/// Mean NLL of the data under the generator's true conditional density.
fn true_nll(data: &Dataset) -> f64 {
    let mut total = 0.0;
    for r in 0..data.rows {
        let (mu, l) = correlated_truth(data.x[r] as f64);
        let mut z = [0.0f64; 3];
        let mut ll = 0.0;
        for j in 0..3 {
            let mut s = data.y[r * 3 + j] as f64 - mu[j];
            for i in 0..j {
                s -= l[j * 3 + i] * z[i];
            }
            z[j] = s / l[j * 3 + j];
            ll -= common::HALF_LN_2PI + l[j * 3 + j].ln() + 0.5 * z[j] * z[j];
        }
        total -= ll;
    }
    total / data.rows as f64
}

#[test]
fn full_covariance_beats_diagonal_on_correlated_targets() {
    let data = generate(Kind::Correlated, 12000, 1);
    let test = generate(Kind::Correlated, 3000, 2);
    let truth = true_nll(&test);
    let full = mean_nll(&fit(&data, 1, Covariance::Full), &test);
    let diag1 = mean_nll(&fit(&data, 1, Covariance::Diagonal), &test);
    let diag3 = mean_nll(&fit(&data, 3, Covariance::Diagonal), &test);
    eprintln!(
        "held-out NLL: truth {truth:.4}, full K=1 {full:.4}, diagonal K=1 {diag1:.4}, K=3 {diag3:.4}"
    );
    assert!(
        full < truth + 0.1,
        "full covariance {full} is not within 0.1 of the true NLL {truth}"
    );
    assert!(full < diag1 - 1.0, "full {full} vs diagonal K=1 {diag1}");
    assert!(
        full < diag3 - 0.5,
        "full {full} vs diagonal K=3 {diag3}: more diagonal components do not make up for it"
    );
}

#[test]
fn predicted_covariance_and_samples_match_the_truth() {
    let data = generate(Kind::Correlated, 6000, 3);
    let model = fit(&data, 1, Covariance::Full);
    let xs = [-0.6f32, 0.0, 0.7];
    let at = Dataset {
        path: "points".into(),
        features: vec!["x".into()],
        targets: model.targets.clone(),
        x: xs.to_vec(),
        y: vec![0.0; 9],
        rows: 3,
    };
    let mut cpu = CpuBackend::new();
    let pred = model.predict(&mut cpu, &at).unwrap();
    assert_eq!(pred.scale_tril.len(), 3 * 9);
    for (r, &x) in xs.iter().enumerate() {
        let (mu, l) = correlated_truth(x as f64);
        let mut cov = vec![0.0; 9];
        for a in 0..3 {
            for b in 0..3 {
                cov[a * 3 + b] = (0..3).map(|i| l[a * 3 + i] * l[b * 3 + i]).sum();
            }
        }
        let got = pred.covariance(r, 0);
        Tolerance::new(0.01, 0.1).assert_close(&format!("covariance at x={x}"), &got, &cov);
        Tolerance::new(0.1, 0.0).assert_close(
            &format!("mean at x={x}"),
            &pred.mu[r * 3..r * 3 + 3],
            &mu,
        );
        // Marginal sigma is the square root of the covariance's diagonal.
        for j in 0..3 {
            let s = pred.sigma[r * 3 + j];
            assert!((s * s - got[j * 3 + j]).abs() < 1e-9 * (1.0 + s * s));
        }
    }
    // Samples reproduce the predicted covariance; --sigma-scale S scales it by S^2.
    let n = 40000;
    for (scale, r) in [(1.0, 0), (1.0, 1), (1.0, 2), (0.5, 1)] {
        let draws = model.sample(&mut cpu, &at, n, 9, 1.0, scale).unwrap();
        let rows = &draws[r * n * 3..(r + 1) * n * 3];
        let mut mean = [0.0f64; 3];
        for s in rows.chunks(3) {
            for j in 0..3 {
                mean[j] += s[j] / n as f64;
            }
        }
        let mut cov = vec![0.0f64; 9];
        for s in rows.chunks(3) {
            for a in 0..3 {
                for b in 0..3 {
                    cov[a * 3 + b] += (s[a] - mean[a]) * (s[b] - mean[b]) / n as f64;
                }
            }
        }
        let want: Vec<f64> = pred
            .covariance(r, 0)
            .iter()
            .map(|c| c * scale * scale)
            .collect();
        Tolerance::new(2e-3, 0.05).assert_close(
            &format!("sample covariance, row {r}, sigma scale {scale}"),
            &cov,
            &want,
        );
    }
}

#[test]
fn full_covariance_reduces_to_diagonal() {
    use mdn::check::random_case_with;
    use mdn::layout::Activation;
    // D = 1: the same parameters and the same model.
    let a = random_case_with(2, &[6], Activation::Relu, 3, 1, 50, 5, Covariance::Diagonal);
    let b = random_case_with(2, &[6], Activation::Relu, 3, 1, 50, 5, Covariance::Full);
    assert_eq!(a.arch.param_count(), b.arch.param_count());
    let mut cpu = CpuBackend::new();
    let la = cpu.loglik(&a.arch, &a.params, &a.x, &a.y, 50).unwrap();
    let lb = cpu.loglik(&b.arch, &a.params, &a.x, &a.y, 50).unwrap();
    assert_eq!(la, lb);
    // D = 4 with zero off-diagonal outputs: the diagonal model's likelihood and gradients.
    let (k, d) = (3, 4);
    let diag = random_case_with(2, &[6], Activation::Tanh, k, d, 50, 6, Covariance::Diagonal);
    let mut full_arch = diag.arch.clone();
    full_arch.covariance = Covariance::Full;
    let (dh, fh) = (
        *diag.arch.layers().last().unwrap(),
        *full_arch.layers().last().unwrap(),
    );
    let mut params = diag.params[..dh.weights].to_vec();
    params.resize(full_arch.param_count(), 0.0);
    for i in 0..dh.inputs {
        for o in 0..dh.outputs {
            params[fh.weights + i * fh.outputs + o] = diag.params[dh.weights + i * dh.outputs + o];
        }
    }
    params[fh.bias..fh.bias + dh.outputs].copy_from_slice(&diag.params[dh.bias..]);
    let ld = cpu
        .loglik(&diag.arch, &diag.params, &diag.x, &diag.y, 50)
        .unwrap();
    let lf = cpu
        .loglik(&full_arch, &params, &diag.x, &diag.y, 50)
        .unwrap();
    Tolerance::new(1e-12, 1e-12).assert_close("loglik, zero off-diagonals", &lf, &ld);
    let gd = cpu
        .loss_grad(&diag.arch, &diag.params, &diag.x, &diag.y, 50, 0.0)
        .unwrap();
    let gf = cpu
        .loss_grad(&full_arch, &params, &diag.x, &diag.y, 50, 0.0)
        .unwrap();
    let pick = |g: &[f32]| -> Vec<f32> {
        let mut v = g[..dh.weights].to_vec();
        for i in 0..dh.inputs {
            v.extend_from_slice(&g[fh.weights + i * fh.outputs..][..dh.outputs]);
        }
        v.extend_from_slice(&g[fh.bias..fh.bias + dh.outputs]);
        v
    };
    Tolerance::new(1e-6, 1e-5).assert_close(
        "gradients, zero off-diagonals",
        &pick(&gf.grad),
        &gd.grad,
    );
}

#[test]
fn model_files_without_a_covariance_field_are_diagonal() {
    let data = generate(Kind::Correlated, 600, 4);
    let opts = TrainOptions {
        hidden: vec![4],
        components: 1,
        stopping: Stopping::Fixed { epochs: 1 },
        ..TrainOptions::default()
    };
    let model = train(&mut CpuBackend::new(), &data, None, &opts, &mut |_| true).unwrap();
    let mut v = serde_json::to_value(&model).unwrap();
    assert_eq!(v["arch"]["covariance"], "diagonal");
    v["arch"].as_object_mut().unwrap().remove("covariance");
    let back = Model::from_json(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
    assert_eq!(back, model);
    // A full-covariance file names it, and too many targets are refused with a message.
    let mut arch = model.arch.clone();
    arch.covariance = Covariance::Full;
    arch.targets = 17;
    let err = arch.validate().unwrap_err().to_string();
    assert!(err.contains("at most 16 target"), "{err}");
}
