//! The backend test suite, written once and run against every backend: each function takes
//! a backend and checks one operation against the float64 reference in `common` (or against
//! the CPU backend, for whole training runs). `backend_suite!` instantiates all of them as
//! `#[test]`s for one backend constructor.

use mdn::backend::{AdamState, Backend, CpuBackend, DataRef, StepConfig};
use mdn::layout::{Activation, Covariance};
use mdn::tolerance::Tolerance;

use super::*;

// Tolerances are the ones `mdn check` uses (f32 backends against f64 or CPU references).
use mdn::check::{ADAM_TOL, FORWARD_TOL, GRAD_TOL, LOGLIK_TOL, TRAJECTORY_TOL};

pub fn forward(b: &mut dyn Backend) {
    for (i, (d, hidden, act, k, dd, rows)) in shapes().into_iter().enumerate() {
        let c = random_case(d, &hidden, act, k, dd, rows, 100 + i as u64);
        let got = b.forward(&c.arch, &c.params, &c.x, rows).unwrap();
        let want = ref_forward(&c.arch, &to_f64(&c.params), &to_f64(&c.x), rows);
        FORWARD_TOL.assert_close(&format!("forward, shape {i} ({rows} rows)"), &got, &want);
    }
}

pub fn loglik(b: &mut dyn Backend) {
    for k in 1..=8 {
        for dd in 1..=3 {
            let rows = [1, 3, 50, 783][(k + dd) % 4];
            let c = random_case(
                2,
                &[12],
                Activation::Relu,
                k,
                dd,
                rows,
                (k * 10 + dd) as u64,
            );
            let got = b.loglik(&c.arch, &c.params, &c.x, &c.y, rows).unwrap();
            let h = ref_forward(&c.arch, &to_f64(&c.params), &to_f64(&c.x), rows);
            let want = ref_head_loglik(&c.arch, &h, &to_f64(&c.y), rows);
            LOGLIK_TOL.assert_close(&format!("loglik K={k} D={dd} rows={rows}"), &got, &want);
        }
    }
}

pub fn gradients(b: &mut dyn Backend) {
    for (i, (d, hidden, act, k, dd, rows)) in shapes().into_iter().enumerate() {
        for l2 in [0.0f32, 0.01] {
            let c = random_case(d, &hidden, act, k, dd, rows, 200 + i as u64);
            let got = b
                .loss_grad(&c.arch, &c.params, &c.x, &c.y, rows, l2)
                .unwrap();
            let (p, x, y) = (to_f64(&c.params), to_f64(&c.x), to_f64(&c.y));
            let want_loss = ref_loss(&c.arch, &p, &x, &y, rows, l2 as f64);
            LOGLIK_TOL.assert_close(
                &format!("loss, shape {i}, l2 {l2}"),
                &[got.nll + got.penalty],
                &[want_loss],
            );
            let want = ref_grad_fd(&c.arch, &p, &x, &y, rows, l2 as f64);
            GRAD_TOL.assert_close(
                &format!("gradient vs finite differences, shape {i}, l2 {l2}"),
                &got.grad,
                &want,
            );
        }
    }
}

/// Student's t heads (diagonal and full, degrees of freedom from 2.2 to 1.6e5): per-row
/// log-likelihoods against the f64 textbook density (libm's lgamma), the loss and every
/// gradient, the degrees of freedom's included, against float64 central finite differences.
pub fn student_t(b: &mut dyn Backend) {
    for (i, (d, hidden, act, k, dd, rows, cov)) in
        mdn::check::student_shapes().into_iter().enumerate()
    {
        let c = mdn::check::random_student_case(d, &hidden, act, k, dd, rows, 500 + i as u64, cov);
        let shape = format!(
            "Student's t, shape {i} (K={k} D={dd} rows={rows} {})",
            cov.name()
        );
        let got = b.loglik(&c.arch, &c.params, &c.x, &c.y, rows).unwrap();
        let h = ref_forward(&c.arch, &to_f64(&c.params), &to_f64(&c.x), rows);
        let want = ref_head_loglik(&c.arch, &h, &to_f64(&c.y), rows);
        LOGLIK_TOL.assert_close(&format!("loglik, {shape}"), &got, &want);
        // Finite differences cost a loss per parameter: at most 50 rows.
        let n = rows.min(50);
        let (x, y) = (&c.x[..n * d], &c.y[..n * dd]);
        let got = b.loss_grad(&c.arch, &c.params, x, y, n, 0.01).unwrap();
        let (p, x, y) = (to_f64(&c.params), to_f64(x), to_f64(y));
        let want_loss = ref_loss(&c.arch, &p, &x, &y, n, 0.01);
        LOGLIK_TOL.assert_close(
            &format!("loss, {shape}"),
            &[got.nll + got.penalty],
            &[want_loss],
        );
        let want = ref_grad_fd(&c.arch, &p, &x, &y, n, 0.01);
        GRAD_TOL.assert_close(
            &format!("gradient vs finite differences, {shape}"),
            &got.grad,
            &want,
        );
    }
}

/// Student's t components with about 1.8e8 degrees of freedom are the Gaussian ones: the
/// t's normaliser and log1p terms lose nothing to cancellation (in f32 on the GPU too). A
/// regression test: the first WGSL ln1p went through `log(1 + x)`, which WGSL makes only
/// absolutely accurate near 1, and lavapipe's rows were up to 0.45 nats off.
pub fn student_t_as_gaussian(b: &mut dyn Backend) {
    for (i, (k, dd, rows, cov)) in [
        (3usize, 1usize, 783usize, Covariance::Diagonal),
        (2, 3, 50, Covariance::Diagonal),
        (2, 4, 3, Covariance::Full),
    ]
    .into_iter()
    .enumerate()
    {
        let (t, g) = mdn::check::student_as_gaussian(k, dd, rows, 600 + i as u64, cov);
        let got = b.loglik(&t.arch, &t.params, &t.x, &t.y, rows).unwrap();
        let want = b.loglik(&g.arch, &g.params, &g.x, &g.y, rows).unwrap();
        LOGLIK_TOL.assert_close(
            &format!("Student's t at nu = 1.8e8 against Gaussian, K={k} D={dd} {cov:?}"),
            &got,
            &want,
        );
    }
}

/// Full-covariance log-likelihoods for D = 1..16 against the f64 reference (which inverts the
/// covariance by Gaussian elimination instead of triangular solves).
pub fn full_covariance_loglik(b: &mut dyn Backend) {
    for (i, dd) in [1usize, 2, 3, 5, 8, 12, 16].into_iter().enumerate() {
        let k = 1 + i % 4;
        let rows = [1, 3, 50, 783][i % 4];
        let c = random_case_with(
            2,
            &[12],
            Activation::Relu,
            k,
            dd,
            rows,
            300 + i as u64,
            Covariance::Full,
        );
        let got = b.loglik(&c.arch, &c.params, &c.x, &c.y, rows).unwrap();
        let h = ref_forward(&c.arch, &to_f64(&c.params), &to_f64(&c.x), rows);
        let want = ref_head_loglik(&c.arch, &h, &to_f64(&c.y), rows);
        LOGLIK_TOL.assert_close(
            &format!("full-covariance loglik K={k} D={dd} rows={rows}"),
            &got,
            &want,
        );
    }
}

/// Full-covariance gradients (every parameter, including the Cholesky factors' off-diagonal
/// head weights) against float64 central finite differences.
pub fn full_covariance_gradients(b: &mut dyn Backend) {
    for (i, (d, hidden, act, k, dd, rows)) in full_covariance_shapes().into_iter().enumerate() {
        let c = random_case_with(
            d,
            &hidden,
            act,
            k,
            dd,
            rows,
            400 + i as u64,
            Covariance::Full,
        );
        let got = b
            .loss_grad(&c.arch, &c.params, &c.x, &c.y, rows, 0.01)
            .unwrap();
        let (p, x, y) = (to_f64(&c.params), to_f64(&c.x), to_f64(&c.y));
        let want_loss = ref_loss(&c.arch, &p, &x, &y, rows, 0.01);
        LOGLIK_TOL.assert_close(
            &format!("full-covariance loss, shape {i}"),
            &[got.nll + got.penalty],
            &[want_loss],
        );
        let want = ref_grad_fd(&c.arch, &p, &x, &y, rows, 0.01);
        GRAD_TOL.assert_close(
            &format!("full-covariance gradient vs finite differences, shape {i} (K={k} D={dd})"),
            &got.grad,
            &want,
        );
    }
}

/// Full-covariance cases computed by SciPy (tests/fixtures/full_covariance/make.py): a
/// linear model whose head biases are the case's head outputs, so that the backend's head
/// sees exactly them; log-likelihood and the gradient of the NLL with respect to the biases.
pub fn full_covariance_scipy_cases(b: &mut dyn Backend) {
    scipy_cases(b, "full_covariance", mdn::layout::Family::Gaussian);
}

/// Student's t cases computed by SciPy's `multivariate_t` (tests/fixtures/student_t/make.py),
/// diagonal and full, as [`full_covariance_scipy_cases`]: the gradient includes the degrees
/// of freedom's.
pub fn student_t_scipy_cases(b: &mut dyn Backend) {
    scipy_cases(b, "student_t", mdn::layout::Family::StudentT);
}

fn scipy_cases(b: &mut dyn Backend, fixture: &str, family: mdn::layout::Family) {
    let path = format!(
        "{}/tests/fixtures/{fixture}/cases.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_f64().unwrap())
            .collect()
    };
    for (i, c) in v["cases"].as_array().unwrap().iter().enumerate() {
        let (k, d) = (
            c["K"].as_u64().unwrap() as usize,
            c["D"].as_u64().unwrap() as usize,
        );
        let mut arch = mdn::layout::Arch::new(1, vec![], Activation::Relu, k, d)
            .unwrap()
            .with_family(family);
        arch.covariance = match c.get("covariance").and_then(|v| v.as_str()) {
            Some("diagonal") => Covariance::Diagonal,
            _ => Covariance::Full,
        };
        arch.sigma_floor = c["floor"].as_f64().unwrap() as f32;
        let h = floats(&c["h"]);
        assert_eq!(h.len(), arch.head_width());
        let mut params = vec![0.0f32; arch.param_count()];
        let bias = arch.layers()[0].bias;
        for (p, v) in params[bias..].iter_mut().zip(&h) {
            *p = *v as f32;
        }
        let y: Vec<f32> = floats(&c["y"]).iter().map(|&v| v as f32).collect();
        let ll = b.loglik(&arch, &params, &[0.0], &y, 1).unwrap();
        let what = format!("SciPy {fixture} case {i} (K={k} D={d})");
        LOGLIK_TOL.assert_close(
            &format!("{what}: loglik"),
            &ll,
            &[c["loglik"].as_f64().unwrap()],
        );
        let g = b.loss_grad(&arch, &params, &[0.0], &y, 1, 0.0).unwrap();
        GRAD_TOL.assert_close(
            &format!("{what}: gradient of the NLL"),
            &g.grad[bias..],
            &floats(&c["grad_nll"]),
        );
    }
}

pub fn oracle_cases(b: &mut dyn Backend) {
    for name in ["seed0.json", "seed1.json"] {
        let o = oracle(name);
        let params: Vec<f32> = o.params.iter().map(|&v| v as f32).collect();
        let x: Vec<f32> = o.x.iter().map(|&v| v as f32).collect();
        let y: Vec<f32> = o.y.iter().map(|&v| v as f32).collect();
        let head = b.forward(&o.arch, &params, &x, o.rows).unwrap();
        FORWARD_TOL.assert_close(&format!("{name}: head outputs"), &head, &o.head);
        let ll = b.loglik(&o.arch, &params, &x, &y, o.rows).unwrap();
        LOGLIK_TOL.assert_close(&format!("{name}: loglik"), &ll, &o.loglik);
        let lg = b.loss_grad(&o.arch, &params, &x, &y, o.rows, 0.0).unwrap();
        LOGLIK_TOL.assert_close(&format!("{name}: mean NLL"), &[lg.nll], &[o.mean_nll]);
        GRAD_TOL.assert_close(&format!("{name}: gradients"), &lg.grad, &o.grads);
    }
}

pub fn adam(b: &mut dyn Backend) {
    // Hand-computed (float64) values for three steps, lr 0.1, betas 0.9/0.999, eps 1e-7.
    let cfg = StepConfig {
        lr: 0.1,
        ..StepConfig::default()
    };
    let mut params = vec![1.0f32, -2.0];
    let mut state = AdamState::new(2);
    let expected = [
        ([0.5f32, -0.1], [0.900000019999996, -1.9000000999999]),
        ([0.1, 0.2], [0.8196959444343859, -1.936610429552553]),
        ([-0.3, 0.0], [0.7986246553666493, -1.9649103163774464]),
    ];
    for (t, (g, want)) in expected.iter().enumerate() {
        b.adam_step(&mut params, g, &mut state, &cfg).unwrap();
        assert_eq!(state.step, t as u64 + 1);
        ADAM_TOL.assert_close(&format!("adam step {}", t + 1), &params, want);
    }
    // Many parameters (more than a workgroup, not a multiple of one), many steps, against f64.
    let n = 1000;
    let mut p: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    let mut p64 = to_f64(&p);
    let (mut m, mut v) = (vec![0.0f64; n], vec![0.0f64; n]);
    let mut state = AdamState::new(n);
    let cfg = StepConfig::default();
    for t in 1..=5 {
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * t) as f32 * 0.11).cos() * 0.1)
            .collect();
        b.adam_step(&mut p, &g, &mut state, &cfg).unwrap();
        for i in 0..n {
            let gi = g[i] as f64;
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.999 * v[i] + 0.001 * gi * gi;
            let mh = m[i] / (1.0 - 0.9f64.powi(t as i32));
            let vh = v[i] / (1.0 - 0.999f64.powi(t as i32));
            p64[i] -= 1e-3 * mh / (vh.sqrt() + 1e-7);
        }
    }
    Tolerance::new(1e-6, 1e-5).assert_close("adam, 1000 params x 5 steps", &p, &p64);
}

/// A few epochs with the same data, order and seed: the NLL trajectory matches the CPU's.
pub fn training_run(b: &mut dyn Backend) {
    for (rows, batch, cov, student) in [
        (783usize, 50usize, Covariance::Diagonal, false),
        (300, 256, Covariance::Diagonal, false),
        (64, 1, Covariance::Diagonal, false),
        (783, 50, Covariance::Full, false),
        (783, 50, Covariance::Diagonal, true),
        (300, 64, Covariance::Full, true),
    ] {
        let case = |n, seed| {
            if student {
                mdn::check::random_student_case(3, &[16, 8], Activation::Relu, 3, 3, n, seed, cov)
            } else {
                random_case_with(3, &[16, 8], Activation::Relu, 3, 3, n, seed, cov)
            }
        };
        let (c, val) = (case(rows, 7), case(50, 8));
        let cfg = StepConfig {
            batch_size: batch,
            l2: 1e-3,
            ..StepConfig::default()
        };
        let (want, want_p, _) = three_epochs(&mut CpuBackend::new(), &c, &val, &cfg);
        let (got, got_p, _) = three_epochs(b, &c, &val, &cfg);
        TRAJECTORY_TOL.assert_close(
            &format!("NLL trajectory, {rows} rows, batch {batch}, {cov:?}, Student's t {student}"),
            &got,
            &want,
        );
        Tolerance::new(1e-4, 1e-3).assert_close(
            &format!("parameters after 3 epochs, {rows} rows"),
            &got_p,
            &want_p,
        );
    }
}

/// Three epochs of `c` (with `val` as the validation set) in a fixed order per epoch (a
/// stride-7 permutation, or the reverse where 7 divides the rows): the train and validation
/// NLL of each, the parameters after them, and the dispatches per training step.
pub fn three_epochs(
    b: &mut dyn Backend,
    c: &mdn::check::Case,
    val: &mdn::check::Case,
    cfg: &StepConfig,
) -> (Vec<f64>, Vec<f32>, Option<f64>) {
    let rows = c.rows;
    let mut run = b
        .start(
            &c.arch,
            &c.params,
            DataRef {
                x: &c.x,
                y: &c.y,
                rows,
            },
            Some(DataRef {
                x: &val.x,
                y: &val.y,
                rows: val.rows,
            }),
        )
        .unwrap();
    let mut traj = Vec::new();
    for epoch in 0..3u32 {
        let order: Vec<u32> = if rows.is_multiple_of(7) {
            (0..rows as u32).rev().collect()
        } else {
            (0..rows as u32)
                .map(|i| (i * 7 + epoch) % rows as u32)
                .collect()
        };
        let s = run.train_epoch(&order, cfg).unwrap();
        assert!(s.finite);
        assert_eq!(s.steps as usize, rows.div_ceil(cfg.batch_size));
        traj.extend([s.train_nll, s.val_nll.unwrap()]);
    }
    let dispatches = run.dispatches_per_step();
    (traj, run.current_params().unwrap(), dispatches)
}

/// Gradient-norm clipping: a few epochs with a threshold well below the gradients' norm
/// follow the CPU's trajectory.
pub fn clipping(b: &mut dyn Backend) {
    let c = random_case(3, &[16, 8], Activation::Relu, 3, 2, 500, 12);
    let cfg = StepConfig {
        batch_size: 50,
        clip_norm: 0.05,
        l2: 1e-3,
        ..StepConfig::default()
    };
    let run = |be: &mut dyn Backend| -> (Vec<f64>, Vec<f32>) {
        let mut be = be
            .start(
                &c.arch,
                &c.params,
                DataRef {
                    x: &c.x,
                    y: &c.y,
                    rows: 500,
                },
                None,
            )
            .unwrap();
        let order: Vec<u32> = (0..500u32).map(|i| (i * 7) % 500).collect();
        let traj = (0..3)
            .map(|_| be.train_epoch(&order, &cfg).unwrap().train_nll)
            .collect();
        (traj, be.current_params().unwrap())
    };
    let (want, want_p) = run(&mut CpuBackend::new());
    let (got, got_p) = run(b);
    TRAJECTORY_TOL.assert_close("NLL trajectory with clipping", &got, &want);
    Tolerance::new(1e-4, 1e-3).assert_close("parameters with clipping", &got_p, &want_p);
}

/// Snapshot and restore bring back parameters, Adam's moments and its step count: an epoch
/// rerun after a restore gives the same bits as the first time.
pub fn snapshot_restore(b: &mut dyn Backend) {
    let c = random_case(3, &[16], Activation::Relu, 3, 2, 300, 11);
    let cfg = StepConfig {
        batch_size: 64,
        ..StepConfig::default()
    };
    let mut b = b
        .start(
            &c.arch,
            &c.params,
            DataRef {
                x: &c.x,
                y: &c.y,
                rows: 300,
            },
            None,
        )
        .unwrap();
    let order: Vec<u32> = (0..300u32).rev().collect();
    b.train_epoch(&order, &cfg).unwrap();
    b.snapshot().unwrap();
    let saved = b.current_params().unwrap();
    let first = b.train_epoch(&order, &cfg).unwrap();
    let after = b.current_params().unwrap();
    assert_ne!(after, saved);
    b.restore().unwrap();
    assert_eq!(b.current_params().unwrap(), saved, "parameters restored");
    let again = b.train_epoch(&order, &cfg).unwrap();
    assert_eq!(
        b.current_params().unwrap(),
        after,
        "moments and step count restored"
    );
    assert_eq!(first.train_nll, again.train_nll);
}

/// Instantiates the suite for one backend. `$make` returns `Option<Box<dyn Backend>>`; `None`
/// (no adapter, and `MDN_REQUIRE_GPU` unset) skips the test with a note.
#[macro_export]
macro_rules! backend_suite {
    ($make:expr) => {
        #[test]
        fn forward_matches_reference() {
            if let Some(mut b) = $make() {
                common::suite::forward(&mut *b);
            }
        }
        #[test]
        fn loglik_matches_reference() {
            if let Some(mut b) = $make() {
                common::suite::loglik(&mut *b);
            }
        }
        #[test]
        fn gradients_match_finite_differences() {
            if let Some(mut b) = $make() {
                common::suite::gradients(&mut *b);
            }
        }
        #[test]
        fn full_covariance_loglik_matches_reference() {
            if let Some(mut b) = $make() {
                common::suite::full_covariance_loglik(&mut *b);
            }
        }
        #[test]
        fn full_covariance_gradients_match_finite_differences() {
            if let Some(mut b) = $make() {
                common::suite::full_covariance_gradients(&mut *b);
            }
        }
        #[test]
        fn full_covariance_matches_scipy() {
            if let Some(mut b) = $make() {
                common::suite::full_covariance_scipy_cases(&mut *b);
            }
        }
        #[test]
        fn student_t_matches_reference_and_finite_differences() {
            if let Some(mut b) = $make() {
                common::suite::student_t(&mut *b);
            }
        }
        #[test]
        fn student_t_with_huge_dof_is_gaussian() {
            if let Some(mut b) = $make() {
                common::suite::student_t_as_gaussian(&mut *b);
            }
        }
        #[test]
        fn student_t_matches_scipy() {
            if let Some(mut b) = $make() {
                common::suite::student_t_scipy_cases(&mut *b);
            }
        }
        #[test]
        fn oracle_cases_match() {
            if let Some(mut b) = $make() {
                common::suite::oracle_cases(&mut *b);
            }
        }
        #[test]
        fn adam_matches_hand_computed_steps() {
            if let Some(mut b) = $make() {
                common::suite::adam(&mut *b);
            }
        }
        #[test]
        fn gradient_clipping_matches_cpu() {
            if let Some(mut b) = $make() {
                common::suite::clipping(&mut *b);
            }
        }
        #[test]
        fn snapshot_and_restore_are_exact() {
            if let Some(mut b) = $make() {
                common::suite::snapshot_restore(&mut *b);
            }
        }
        #[test]
        fn training_run_matches_cpu() {
            if let Some(mut b) = $make() {
                common::suite::training_run(&mut *b);
            }
        }
    };
}
