//! End-to-end training on the CPU backend: quality on the shipped example, NLL in original
//! units, determinism, early stopping keeping the best weights, model files round-tripping.

mod common;

use std::path::Path;

use mdn::backend::{Backend, CpuBackend, StepConfig};
use mdn::data::{ColumnChoice, Dataset, read_csv};
use mdn::model::Model;
use mdn::tolerance::Tolerance;
use mdn::train::{Stopping, TrainOptions, split_validation, train};

fn asset(name: &str) -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name);
    read_csv(&path, &ColumnChoice::Default).unwrap()
}

fn fit(data: &Dataset, opts: &TrainOptions) -> Model {
    let (tr, val) = split_validation(data, 0.1, opts.seed).unwrap();
    train(&mut CpuBackend::new(), &tr, val.as_ref(), opts, &mut |_| {
        true
    })
    .unwrap()
}

fn mean_nll(model: &Model, data: &Dataset) -> f64 {
    let ll = model.loglik(&mut CpuBackend::new(), data).unwrap();
    -ll.iter().sum::<f64>() / ll.len() as f64
}

#[test]
fn shipped_example_reaches_the_target_nll() {
    let data = asset("bishop.csv");
    let test = asset("bishop_test.csv");
    let model = fit(&data, &TrainOptions::default());
    let nll = mean_nll(&model, &test);
    // A single Gaussian gets about -0.32 on this problem; a PyTorch MDN about -0.93.
    assert!(nll < -0.7, "held-out NLL {nll} is not below -0.7");
    let single = fit(
        &data,
        &TrainOptions {
            components: 1,
            ..TrainOptions::default()
        },
    );
    let single_nll = mean_nll(&single, &test);
    assert!(
        single_nll > -0.6 && single_nll < -0.2,
        "single Gaussian NLL {single_nll}, expected about -0.3 to -0.45"
    );
    assert!(
        nll < single_nll - 0.4,
        "mixture {nll} vs single Gaussian {single_nll}"
    );
}

#[test]
fn nll_is_reported_in_original_units() {
    let data = asset("bishop.csv");
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 3 },
        ..TrainOptions::default()
    };
    let model = fit(&data, &opts);
    let base = mean_nll(&model, &data);
    // The same model in units ten times larger: density divided by 10 per target dimension.
    let mut scaled = model.clone();
    for (m, s) in scaled
        .y_scaler
        .mean
        .iter_mut()
        .zip(scaled.y_scaler.std.iter_mut())
    {
        *m *= 10.0;
        *s *= 10.0;
    }
    let mut data10 = data.clone();
    data10.y.iter_mut().for_each(|v| *v *= 10.0);
    let d = data.d_out() as f64;
    Tolerance::new(1e-5, 0.0).assert_close(
        "scored on y*10",
        &[mean_nll(&scaled, &data10)],
        &[base + d * 10f64.ln()],
    );
    // Trained on y*10 from the start: standardisation makes it the same problem.
    let trained10 = fit(&data10, &opts);
    Tolerance::new(2e-3, 0.0).assert_close(
        "trained on y*10",
        &[mean_nll(&trained10, &data10)],
        &[base + d * 10f64.ln()],
    );
    let info = trained10.training.unwrap();
    let info1 = model.training.unwrap();
    Tolerance::new(2e-3, 0.0).assert_close(
        "reported validation NLL on y*10",
        &[info.history.last().unwrap().val_nll.unwrap()],
        &[info1.history.last().unwrap().val_nll.unwrap() + d * 10f64.ln()],
    );
}

#[test]
fn same_seed_same_bits_other_seed_other_model() {
    let data = asset("bishop.csv");
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 4 },
        ..TrainOptions::default()
    };
    let a = fit(&data, &opts);
    let b = fit(&data, &opts);
    assert_eq!(a.params, b.params);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = fit(&data, &TrainOptions { seed: 1, ..opts });
    assert_ne!(a.params, c.params);
}

#[test]
fn early_stopping_keeps_the_best_epoch() {
    let data = asset("bishop.csv");
    // A high learning rate makes the validation NLL wander, so the last epoch is rarely best.
    let opts = TrainOptions {
        step: StepConfig {
            lr: 0.02,
            ..StepConfig::default()
        },
        stopping: Stopping::Early {
            patience: 3,
            max_epochs: 60,
        },
        ..TrainOptions::default()
    };
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let val = val.unwrap();
    let model = train(&mut CpuBackend::new(), &tr, Some(&val), &opts, &mut |_| {
        true
    })
    .unwrap();
    let info = model.training.clone().unwrap();
    let best = info
        .history
        .iter()
        .map(|e| e.val_nll.unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(info.best_val_nll, Some(best));
    assert_eq!(info.saved_epoch, info.best_epoch.unwrap());
    if info.stop_reason == "early-stopping" {
        assert_eq!(info.epochs, info.best_epoch.unwrap() + 3);
    } else {
        assert_eq!(info.epochs, 60);
    }
    // The saved parameters are the best epoch's: their validation NLL is the recorded one.
    Tolerance::new(1e-9, 1e-9).assert_close(
        "saved model's validation NLL",
        &[mean_nll(&model, &val)],
        &[best],
    );
}

#[test]
fn fixed_epochs_keep_the_last_parameters() {
    let data = asset("bishop.csv");
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 5 },
        ..TrainOptions::default()
    };
    let model = fit(&data, &opts);
    let info = model.training.unwrap();
    assert_eq!(
        (info.epochs, info.saved_epoch, info.history.len()),
        (5, 5, 5)
    );
    assert_eq!(info.stop_reason, "epochs");
}

#[test]
fn observer_can_stop_training() {
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let mut seen = 0;
    let model = train(
        &mut CpuBackend::new(),
        &tr,
        val.as_ref(),
        &TrainOptions::default(),
        &mut |e| match e {
            mdn::train::TrainEvent::Epoch(r) => {
                seen = r.epoch;
                r.epoch < 2
            }
            _ => true,
        },
    )
    .unwrap();
    assert_eq!(seen, 2);
    let info = model.training.unwrap();
    assert_eq!(info.stop_reason, "interrupted");
    // The best of the two epochs is what was kept.
    assert_eq!(info.saved_epoch, info.best_epoch.unwrap());
}

#[test]
fn model_file_round_trips_exactly() {
    let data = asset("bishop.csv");
    let model = fit(
        &data,
        &TrainOptions {
            stopping: Stopping::Fixed { epochs: 2 },
            hidden: vec![8, 4],
            ..TrainOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    model.save(&path).unwrap();
    let back = Model::load(&path).unwrap();
    assert_eq!(back, model);
    // Only the model file is left in the directory: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("m.json")]);
    // And it predicts the same.
    let mut cpu = CpuBackend::new();
    assert_eq!(
        back.loglik(&mut cpu, &data).unwrap(),
        model.loglik(&mut cpu, &data).unwrap()
    );
}

#[test]
fn predictions_are_consistent_with_the_likelihood() {
    // Evaluate the mixture from `predict` (original units) by hand and compare with `loglik`.
    let data = asset("bishop_test.csv");
    let model = fit(
        &asset("bishop.csv"),
        &TrainOptions {
            stopping: Stopping::Fixed { epochs: 3 },
            ..TrainOptions::default()
        },
    );
    let mut cpu = CpuBackend::new();
    let pred = model.predict(&mut cpu, &data).unwrap();
    let ll = model.loglik(&mut cpu, &data).unwrap();
    let by_hand: Vec<f64> = (0..data.rows)
        .map(|r| {
            let y = data.y[r] as f64;
            let p: f64 = (0..pred.k)
                .map(|c| {
                    let (mu, s) = (pred.mu[r * pred.k + c], pred.sigma[r * pred.k + c]);
                    pred.pi[r * pred.k + c] * (-0.5 * ((y - mu) / s).powi(2)).exp()
                        / (s * (2.0 * std::f64::consts::PI).sqrt())
                })
                .sum();
            p.ln()
        })
        .collect();
    Tolerance::new(1e-5, 1e-5).assert_close("loglik from predicted mixture", &ll, &by_hand);
    for r in 0..data.rows {
        let s: f64 = pred.pi[r * pred.k..(r + 1) * pred.k].iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
    }
}

#[test]
fn samples_follow_the_predicted_mixture() {
    // One input row, many samples: their mean and variance match the mixture's.
    let model = fit(
        &asset("bishop.csv"),
        &TrainOptions {
            stopping: Stopping::Fixed { epochs: 5 },
            ..TrainOptions::default()
        },
    );
    let row = Dataset {
        path: "row".into(),
        features: vec!["x".into()],
        targets: vec![],
        x: vec![0.5],
        y: vec![],
        rows: 1,
    };
    let mut cpu = CpuBackend::new();
    let pred = model.predict(&mut cpu, &row).unwrap();
    let n = 200_000;
    let s = model.sample(&mut cpu, &row, n, 42, 1.0, 1.0).unwrap();
    let mean = s.iter().sum::<f64>() / n as f64;
    let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
    let m = pred.mean(0, 0);
    let v: f64 = (0..pred.k)
        .map(|c| pred.pi[c] * (pred.sigma[c].powi(2) + (pred.mu[c] - m).powi(2)))
        .sum();
    // Standard error of the mean is sqrt(v / n); allow 5 of them.
    assert!(
        (mean - m).abs() < 5.0 * (v / n as f64).sqrt(),
        "sample mean {mean} vs {m}"
    );
    assert!((var - v).abs() < 0.02 * v, "sample variance {var} vs {v}");
    assert_eq!(s, model.sample(&mut cpu, &row, n, 42, 1.0, 1.0).unwrap());
    assert_ne!(s, model.sample(&mut cpu, &row, n, 43, 1.0, 1.0).unwrap());
}

#[test]
fn backend_is_reused_across_runs() {
    // One backend value trains twice; the second run starts from scratch (Adam state reset).
    let data = asset("bishop.csv");
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 2 },
        ..TrainOptions::default()
    };
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let mut be = CpuBackend::new();
    let a = train(&mut be, &tr, val.as_ref(), &opts, &mut |_| true).unwrap();
    let b = train(&mut be, &tr, val.as_ref(), &opts, &mut |_| true).unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(be.name(), "cpu");
}

#[test]
fn threads_give_the_same_bits_run_to_run_and_agree_across_counts() {
    let data = asset("bishop.csv");
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 3 },
        hidden: vec![32, 32],
        ..TrainOptions::default()
    };
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let run = |threads: usize| {
        train(
            &mut CpuBackend::with_threads(threads),
            &tr,
            val.as_ref(),
            &opts,
            &mut |_| true,
        )
        .unwrap()
    };
    let (a, b) = (run(2), run(2));
    assert_eq!(a.params, b.params, "two runs on 2 threads differ");
    let (one, three) = (run(1), run(3));
    let hist = |m: &Model| {
        m.training
            .as_ref()
            .unwrap()
            .history
            .iter()
            .flat_map(|e| [e.train_nll, e.val_nll.unwrap()])
            .collect::<Vec<_>>()
    };
    Tolerance::new(1e-5, 1e-5).assert_close("1 vs 2 threads", &hist(&one), &hist(&a));
    Tolerance::new(1e-5, 1e-5).assert_close("3 vs 2 threads", &hist(&three), &hist(&a));
    // Stateless operations split rows the same way; uneven splits (3 threads, 50 rows) too.
    let c = mdn::check::random_case(3, &[8], mdn::layout::Activation::Relu, 2, 2, 50, 4);
    let g1 = CpuBackend::with_threads(1)
        .loss_grad(&c.arch, &c.params, &c.x, &c.y, 50, 0.01)
        .unwrap();
    let g3 = CpuBackend::with_threads(3)
        .loss_grad(&c.arch, &c.params, &c.x, &c.y, 50, 0.01)
        .unwrap();
    Tolerance::new(1e-7, 1e-5).assert_close("gradient, 1 vs 3 threads", &g3.grad, &g1.grad);
    let l1 = CpuBackend::with_threads(1)
        .loglik(&c.arch, &c.params, &c.x, &c.y, 50)
        .unwrap();
    let l3 = CpuBackend::with_threads(3)
        .loglik(&c.arch, &c.params, &c.x, &c.y, 50)
        .unwrap();
    assert_eq!(l1, l3, "per-row log-likelihoods do not depend on the split");
}

/// A CPU backend reporting a NaN at batch 4 on the given epoch attempts (1-based, counting
/// retries).
fn faulty(fail_attempts: Vec<usize>) -> common::Hooked<CpuBackend> {
    let mut be = common::Hooked::new(CpuBackend::new());
    be.after = Box::new(move |attempt, s| {
        if fail_attempts.contains(&attempt) {
            s.finite = false;
            s.first_bad_batch = Some(3);
        }
    });
    be
}

#[test]
fn numerical_faults_roll_back_and_halve_the_learning_rate() {
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 4 },
        ..TrainOptions::default()
    };
    // Attempts 2 and 3 are epoch 2 and its first retry: two faults, then it goes through.
    let mut be = faulty(vec![2, 3]);
    let mut events = Vec::new();
    let model = train(&mut be, &tr, val.as_ref(), &opts, &mut |e| {
        if let mdn::train::TrainEvent::Recovered { epoch, batch, lr } = e {
            events.push((*epoch, *batch, *lr));
        }
        true
    })
    .unwrap();
    assert_eq!(be.restores, 2);
    assert_eq!(events, vec![(2, Some(4), 5e-4), (2, Some(4), 2.5e-4)]);
    let info = model.training.as_ref().unwrap();
    assert_eq!(info.epochs, 4);
    assert_eq!(info.final_lr, 2.5e-4);
    assert_eq!(info.recoveries.len(), 2);
    assert_eq!(
        (info.recoveries[1].epoch, info.recoveries[1].batch),
        (2, Some(4))
    );
    assert!(model.params.iter().all(|v| v.is_finite()));
    // The file keeps the recovery record.
    let back = Model::from_json(&serde_json::to_vec(&model).unwrap()).unwrap();
    assert_eq!(back.training.unwrap().recoveries, info.recoveries);

    // A fault that does not go away stops training with the epoch and batch named.
    let mut be = faulty((1..100).collect());
    let err = train(&mut be, &tr, val.as_ref(), &opts, &mut |_| true).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("epoch 1")
            && msg.contains("batch 4")
            && msg.contains("4 times")
            && msg.contains("no model was written"),
        "{msg}"
    );
    assert_eq!(err.exit_code(), 1);
    assert_eq!(be.restores, mdn::train::MAX_RETRIES);
}

#[test]
fn gradient_clipping_changes_steps_only_above_the_threshold() {
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let run = |clip: f32| {
        let opts = TrainOptions {
            stopping: Stopping::Fixed { epochs: 2 },
            step: StepConfig {
                clip_norm: clip,
                ..StepConfig::default()
            },
            ..TrainOptions::default()
        };
        train(
            &mut CpuBackend::new(),
            &tr,
            val.as_ref(),
            &opts,
            &mut |_| true,
        )
        .unwrap()
    };
    let (none, huge, tiny) = (run(0.0), run(1e9), run(1e-3));
    assert_eq!(
        none.params, huge.params,
        "a threshold no gradient reaches changes nothing"
    );
    assert_ne!(none.params, tiny.params);
    assert_eq!(tiny.training.unwrap().clip_norm, 1e-3);
}

/// Bishop's data with x and t mapped by `fx` and `ft`.
fn scaled(fx: impl Fn(f32) -> f32, ft: impl Fn(f32) -> f32) -> Dataset {
    let mut d = mdn::synth::bishop(2000, 9);
    d.x.iter_mut().for_each(|v| *v = fx(*v));
    d.y.iter_mut().for_each(|v| *v = ft(*v));
    d
}

#[test]
fn extreme_scales_train_to_finite_nll() {
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 30 },
        ..TrainOptions::default()
    };
    let base = {
        let d = scaled(|x| x, |t| t);
        let m = fit(&d, &opts);
        mean_nll(&m, &d)
    };
    // Huge and tiny feature scales, offsets far from zero, huge and tiny target scales: the
    // standardisation (f64 statistics) absorbs them; the NLL moves by exactly the target's
    // log-Jacobian.
    for (name, fx, ft, shift) in [
        ("x * 1e30", 1e30f32, 1.0f32, 0.0f64),
        ("x * 1e-30", 1e-30, 1.0, 0.0),
        ("t * 1e20", 1.0, 1e20, 20.0 * 10f64.ln()),
        ("t * 1e-20", 1.0, 1e-20, -20.0 * 10f64.ln()),
    ] {
        let d = scaled(|x| x * fx, |t| t * ft);
        let m = fit(&d, &opts);
        let nll = mean_nll(&m, &d);
        assert!(nll.is_finite(), "{name}: NLL {nll}");
        assert!(
            (nll - shift - base).abs() < 0.05,
            "{name}: NLL {nll}, expected about {}",
            base + shift
        );
    }
    // (Offsets where f32 still resolves the data: x + 1e6 would round x to steps of 1/16.)
    let d = scaled(|x| x + 1e5, |t| t - 3e4);
    let nll = mean_nll(&fit(&d, &opts), &d);
    assert!((nll - base).abs() < 0.05, "offsets: NLL {nll} vs {base}");
}

#[test]
fn targets_far_from_every_mean_have_finite_loglik() {
    let m = fit(
        &asset("bishop.csv"),
        &TrainOptions {
            stopping: Stopping::Fixed { epochs: 3 },
            ..TrainOptions::default()
        },
    );
    let far = Dataset {
        path: "far".into(),
        features: vec!["x".into()],
        targets: vec!["t".into()],
        x: vec![0.5, 0.5, 1e6],
        y: vec![1e6, -1e6, 0.5],
        rows: 3,
    };
    let ll = m.loglik(&mut CpuBackend::new(), &far).unwrap();
    assert!(ll.iter().all(|v| v.is_finite()), "{ll:?}");
    assert!(
        ll[0] < -1e9,
        "a target 1e6 away is astronomically unlikely, not NaN: {}",
        ll[0]
    );
}

#[test]
fn degenerate_data_is_refused_with_a_message() {
    // Identical targets, and one row repeated: no distribution to learn.
    let mut d = mdn::synth::bishop(500, 3);
    d.y.iter_mut().for_each(|v| *v = 0.25);
    let (tr, val) = split_validation(&d, 0.1, 0).unwrap();
    let err = train(
        &mut CpuBackend::new(),
        &tr,
        val.as_ref(),
        &TrainOptions::default(),
        &mut |_| true,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("target column 't' is constant"),
        "{err}"
    );
    let row = d.subset(&vec![7; 500]);
    let (tr, val) = split_validation(&row, 0.1, 0).unwrap();
    let err = train(
        &mut CpuBackend::new(),
        &tr,
        val.as_ref(),
        &TrainOptions {
            step: StepConfig {
                batch_size: 64,
                ..StepConfig::default()
            },
            ..TrainOptions::default()
        },
        &mut |_| true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("is constant"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn component_diagnostics_find_unused_and_duplicate_components() {
    use mdn::layout::{Activation, Arch};
    use mdn::scaler::Scaler;
    // No hidden layer, K = 3, D = 1: head = [3 logits, 3 means, 3 raw sigmas], all from biases.
    let arch = Arch::new(1, vec![], Activation::Relu, 3, 1).unwrap();
    let mut params = vec![0.0f32; arch.param_count()];
    let head = arch.layers()[0];
    let bias = [0.0, -30.0, 0.0, 0.5, 2.0, 0.5, 0.0, 0.0, 0.0];
    params[head.bias..head.bias + 9].copy_from_slice(&bias);
    let unit = |n| Scaler {
        mean: vec![0.0; n],
        std: vec![1.0; n],
    };
    let model = Model::new(
        arch,
        vec!["x".into()],
        vec!["t".into()],
        unit(1),
        unit(1),
        params,
    );
    let data = asset("bishop_test.csv");
    let u = model
        .component_usage(&mut CpuBackend::new(), &data)
        .unwrap();
    assert_eq!(u.unused, vec![1]);
    assert_eq!(u.duplicates, vec![(0, 2)]);
    Tolerance::new(1e-9, 0.0).assert_close("weights", &u.weights, &[0.5, 0.0, 0.5]);
    // A trained model records its usage; the weights are a distribution.
    let m = fit(
        &asset("bishop.csv"),
        &TrainOptions {
            stopping: Stopping::Fixed { epochs: 20 },
            ..TrainOptions::default()
        },
    );
    let c = m.training.unwrap().components.unwrap();
    assert_eq!(c.weights.len(), 5);
    assert!((c.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(c.duplicates.is_empty() && c.unused.is_empty(), "{c:?}");
}

/// Two Student's t components at one place with one scale are duplicates only when their
/// degrees of freedom agree too: a core and a heavy-tailed outlier component are not.
#[test]
fn student_t_components_with_other_degrees_of_freedom_are_not_duplicates() {
    use mdn::layout::{Activation, Arch, Family};
    use mdn::scaler::Scaler;
    let arch = Arch::new(1, vec![], Activation::Relu, 2, 1)
        .unwrap()
        .with_family(Family::StudentT);
    let head = arch.layers()[0];
    let unit = |n| Scaler {
        mean: vec![0.0; n],
        std: vec![1.0; n],
    };
    let data = asset("bishop_test.csv");
    for (dofs, duplicates) in [([1.5f32, 1.5], vec![(0, 1)]), ([-1.0, 4.0], vec![])] {
        // [2 logits, 2 means, 2 raw sigmas, 2 raw dof], all from biases.
        let mut params = vec![0.0f32; arch.param_count()];
        let bias = [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, dofs[0], dofs[1]];
        params[head.bias..head.bias + 8].copy_from_slice(&bias);
        let model = Model::new(
            arch.clone(),
            vec!["x".into()],
            vec!["t".into()],
            unit(1),
            unit(1),
            params,
        );
        let u = model
            .component_usage(&mut CpuBackend::new(), &data)
            .unwrap();
        assert_eq!(u.duplicates, duplicates, "raw dof {dofs:?}");
    }
}

#[test]
fn checkpoints_keep_their_minimum_interval_and_a_stopped_run_writes_its_last_epoch() {
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 50 },
        ..TrainOptions::default()
    };
    let run = |min_seconds: f64, stop_after: usize| {
        let mut written = Vec::new();
        let mut write = |_: mdn::backend::TrainState,
                         st: &mdn::train::LoopState,
                         _: &mdn::scaler::Scaler,
                         _: &mdn::scaler::Scaler| {
            written.push(st.completed);
            Ok(())
        };
        let checkpointer = Some(mdn::train::Checkpointer {
            every: 2,
            min_seconds,
            write: &mut write,
        });
        let mut observer = |e: &mdn::train::TrainEvent| match e {
            mdn::train::TrainEvent::Epoch(r) => r.epoch < stop_after,
            _ => true,
        };
        mdn::train::train_with(
            &mut CpuBackend::with_threads(1),
            &tr,
            val.as_ref(),
            &opts,
            None,
            checkpointer,
            &mut observer,
        )
        .unwrap();
        written
    };
    // Every second epoch; stopped at 7, the 7th is written too.
    assert_eq!(run(0.0, 7), vec![2, 4, 6, 7]);
    // An interval longer than the run: only the stop writes one.
    assert_eq!(run(3600.0, 7), vec![7]);
    // Stopped on an epoch that was written: not twice.
    assert_eq!(run(0.0, 6), vec![2, 4, 6]);
    // A run that ends by itself writes nothing extra.
    assert_eq!(run(3600.0, usize::MAX), Vec::<usize>::new());
}
