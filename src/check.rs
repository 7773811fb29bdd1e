//! Parity checks of a backend against the CPU reference, operation by operation, on random
//! models and data: what `mdn check` runs on a user's own hardware.
//!
//! Shapes include batch sizes that don't fill a workgroup (1, 3, 50, 783), several layer
//! widths, K = 1..8 and D = 1..3, and full-covariance heads with D up to 16.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{AdamState, Backend, CpuBackend, DataRef, StepConfig};
use crate::error::Result;
use crate::layout::{Activation, Arch, Covariance, Family, MAX_FULL_COVARIANCE_TARGETS};
use crate::tolerance::{Comparison, Tolerance};

/// Head outputs (f32 arithmetic on both sides).
pub const FORWARD_TOL: Tolerance = Tolerance::new(1e-5, 1e-4);
/// Per-row log-likelihoods and mean losses.
pub const LOGLIK_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
/// Gradients of the mean NLL.
pub const GRAD_TOL: Tolerance = Tolerance::new(2e-5, 2e-3);
/// One Adam step.
pub const ADAM_TOL: Tolerance = Tolerance::new(1e-7, 1e-5);
/// Train and validation NLL over a few epochs.
pub const TRAJECTORY_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);

/// A random model and data for it.
pub struct Case {
    pub arch: Arch,
    pub params: Vec<f32>,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub rows: usize,
}

/// Weights ~ U(-1, 1)/sqrt(fan_in), biases ~ U(-0.3, 0.3), x and y ~ U(-2, 2): wide enough
/// that several components carry weight.
pub fn random_case(
    inputs: usize,
    hidden: &[usize],
    activation: Activation,
    k: usize,
    d: usize,
    rows: usize,
    seed: u64,
) -> Case {
    random_case_with(
        inputs,
        hidden,
        activation,
        k,
        d,
        rows,
        seed,
        Covariance::Diagonal,
    )
}

/// [`random_case`] with the given covariance shape.
pub fn random_case_with(
    inputs: usize,
    hidden: &[usize],
    activation: Activation,
    k: usize,
    d: usize,
    rows: usize,
    seed: u64,
    covariance: Covariance,
) -> Case {
    random_case_of(
        test_arch(inputs, hidden, activation, k, d, covariance),
        rows,
        seed,
    )
}

/// The architecture of a check's case (valid by construction).
fn test_arch(
    inputs: usize,
    hidden: &[usize],
    activation: Activation,
    k: usize,
    d: usize,
    covariance: Covariance,
) -> Arch {
    Arch::new(inputs, hidden.to_vec(), activation, k, d)
        .and_then(|a| a.with_covariance(covariance))
        .expect("valid test architecture")
}

/// Raw degrees of freedom a Student's t case's components start from, in turn: nu from
/// 2.2 (the heaviest tails) to about 400 (close to Gaussian; the f64 reference's lnΓ of
/// far larger nu loses the digits its finite differences need, so much larger nu is
/// checked against the Gaussian head instead: [`student_as_gaussian`]).
pub const STUDENT_RAW_DOF: [f32; 5] = [-1.5, 0.0, 1.5, 3.0, 6.0];

/// A Student's t case whose degrees of freedom are all about 1.8e8 (raw 19), and the
/// Gaussian case with the same parameters otherwise: the two log-likelihoods agree to
/// rounding.
pub fn student_as_gaussian(
    k: usize,
    d: usize,
    rows: usize,
    seed: u64,
    covariance: Covariance,
) -> (Case, Case) {
    let mut t = random_student_case(2, &[12], Activation::Tanh, k, d, rows, seed, covariance);
    let head = *t.arch.layers().last().expect("a head");
    let at = t.arch.head();
    for comp in 0..k {
        t.params[head.bias + at.raw_dof(comp)] = 19.0;
    }
    let arch = t.arch.clone().with_family(Family::Gaussian);
    let (pt, pg) = (t.arch.head_width(), arch.head_width());
    let mut params = t.params[..head.weights].to_vec();
    for i in 0..head.inputs {
        params.extend_from_slice(&t.params[head.weights + i * pt..head.weights + i * pt + pg]);
    }
    params.extend_from_slice(&t.params[head.bias..head.bias + pg]);
    let g = Case {
        arch,
        params,
        x: t.x.clone(),
        y: t.y.clone(),
        rows,
    };
    (t, g)
}

/// [`random_case_with`] for Student's t components, their degrees of freedom spread over
/// [`STUDENT_RAW_DOF`] (the head's raw-dof biases).
#[allow(clippy::too_many_arguments)]
pub fn random_student_case(
    inputs: usize,
    hidden: &[usize],
    activation: Activation,
    k: usize,
    d: usize,
    rows: usize,
    seed: u64,
    covariance: Covariance,
) -> Case {
    let arch =
        test_arch(inputs, hidden, activation, k, d, covariance).with_family(Family::StudentT);
    let mut c = random_case_of(arch, rows, seed);
    let head = *c.arch.layers().last().expect("a head");
    let at = c.arch.head();
    for comp in 0..k {
        c.params[head.bias + at.raw_dof(comp)] = STUDENT_RAW_DOF[comp % STUDENT_RAW_DOF.len()];
    }
    c
}

/// Student's t shapes the checks run: (inputs, hidden, activation, K, D, rows, covariance).
#[allow(clippy::type_complexity)]
pub fn student_shapes() -> Vec<(
    usize,
    Vec<usize>,
    Activation,
    usize,
    usize,
    usize,
    Covariance,
)> {
    vec![
        (1, vec![], Activation::Relu, 1, 1, 1, Covariance::Diagonal),
        (
            2,
            vec![12],
            Activation::Relu,
            5,
            1,
            783,
            Covariance::Diagonal,
        ),
        (
            3,
            vec![16, 8],
            Activation::Tanh,
            4,
            3,
            50,
            Covariance::Diagonal,
        ),
        (2, vec![12], Activation::Relu, 3, 4, 3, Covariance::Full),
        (2, vec![8], Activation::Tanh, 2, 2, 50, Covariance::Full),
    ]
}

/// Random parameters and data for `arch`.
fn random_case_of(arch: Arch, rows: usize, seed: u64) -> Case {
    let (inputs, d) = (arch.inputs, arch.targets);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = vec![0.0f32; arch.param_count()];
    for layer in arch.layers() {
        let s = 1.0 / (layer.inputs as f32).sqrt();
        for w in &mut params[layer.weights..layer.weights + layer.weight_count()] {
            *w = rng.random_range(-s..s);
        }
        for b in &mut params[layer.bias..layer.bias + layer.outputs] {
            *b = rng.random_range(-0.3..0.3);
        }
    }
    let x = (0..rows * inputs)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let y = (0..rows * d).map(|_| rng.random_range(-2.0..2.0)).collect();
    Case {
        arch,
        params,
        x,
        y,
        rows,
    }
}

/// (inputs, hidden, activation, K, D, rows) used by the checks.
pub fn shapes() -> Vec<(usize, Vec<usize>, Activation, usize, usize, usize)> {
    vec![
        (1, vec![], Activation::Relu, 1, 1, 1),
        (3, vec![8], Activation::Relu, 4, 2, 3),
        (2, vec![5, 7], Activation::Tanh, 8, 3, 50),
        (4, vec![16], Activation::Relu, 2, 1, 783),
        (1, vec![64], Activation::Relu, 5, 1, 256),
        (6, vec![33], Activation::Tanh, 3, 2, 97),
    ]
}

/// (inputs, hidden, activation, K, D, rows) of full-covariance checks: D from 1 to 8.
pub fn full_covariance_shapes() -> Vec<(usize, Vec<usize>, Activation, usize, usize, usize)> {
    vec![
        (1, vec![], Activation::Relu, 1, 2, 1),
        (3, vec![8], Activation::Relu, 3, 3, 3),
        (2, vec![5], Activation::Tanh, 2, 8, 50),
        (4, vec![6], Activation::Relu, 4, 5, 97),
        (2, vec![4], Activation::Relu, 2, 1, 7),
    ]
}

/// One line of the parity table.
#[derive(Debug, Clone)]
pub struct CheckRow {
    pub kernel: String,
    pub comparison: Comparison,
}

/// Compares `backend` with the CPU reference on every operation.
pub fn run(backend: &mut dyn Backend) -> Result<Vec<CheckRow>> {
    let mut cpu = CpuBackend::new();
    let mut rows = Vec::new();
    let mut push = |kernel: String, c: Comparison| {
        rows.push(CheckRow {
            kernel,
            comparison: c,
        })
    };
    let cases = shapes()
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, Covariance::Diagonal, 1000 + i as u64))
        .chain(
            full_covariance_shapes()
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, Covariance::Full, 1500 + i as u64)),
        );
    for ((d, hidden, act, k, dd, n), cov, seed) in cases {
        let c = random_case_with(d, &hidden, act, k, dd, n, seed, cov);
        let shape = format!(
            "d={d} hidden={hidden:?} {} K={k} D={dd} rows={n}{}",
            act.name(),
            match cov {
                Covariance::Diagonal => "",
                Covariance::Full => " full",
            }
        );
        let got = backend.forward(&c.arch, &c.params, &c.x, n)?;
        let want = cpu.forward(&c.arch, &c.params, &c.x, n)?;
        push(
            format!("forward ({shape})"),
            FORWARD_TOL.compare(&got, &want),
        );
        let got = backend.loss_grad(&c.arch, &c.params, &c.x, &c.y, n, 1e-3)?;
        let want = cpu.loss_grad(&c.arch, &c.params, &c.x, &c.y, n, 1e-3)?;
        push(
            format!("loss ({shape})"),
            LOGLIK_TOL.compare(&[got.nll + got.penalty], &[want.nll + want.penalty]),
        );
        push(
            format!("gradient ({shape})"),
            GRAD_TOL.compare(&got.grad, &want.grad),
        );
    }
    for (i, (d, hidden, act, k, dd, n, cov)) in student_shapes().into_iter().enumerate() {
        let c = random_student_case(d, &hidden, act, k, dd, n, 1700 + i as u64, cov);
        let shape = format!(
            "Student's t, d={d} hidden={hidden:?} {} K={k} D={dd} rows={n} {} covariance",
            act.name(),
            cov.name()
        );
        let got = backend.loglik(&c.arch, &c.params, &c.x, &c.y, n)?;
        let want = cpu.loglik(&c.arch, &c.params, &c.x, &c.y, n)?;
        push(
            format!("mixture head loglik ({shape})"),
            LOGLIK_TOL.compare(&got, &want),
        );
        let got = backend.loss_grad(&c.arch, &c.params, &c.x, &c.y, n, 1e-3)?;
        let want = cpu.loss_grad(&c.arch, &c.params, &c.x, &c.y, n, 1e-3)?;
        push(
            format!("gradient ({shape})"),
            GRAD_TOL.compare(&got.grad, &want.grad),
        );
    }
    // Student's t at about 1.8e8 degrees of freedom is the Gaussian, on the backend alone
    // (its f32 series for the t's normaliser and ln(1 + q/nu) lose nothing to cancellation).
    for (dd, cov) in [(1, Covariance::Diagonal), (3, Covariance::Full)] {
        let (t, g) = student_as_gaussian(3, dd, 783, 1800 + dd as u64, cov);
        let got = backend.loglik(&t.arch, &t.params, &t.x, &t.y, 783)?;
        let want = backend.loglik(&g.arch, &g.params, &g.x, &g.y, 783)?;
        push(
            format!(
                "mixture head loglik (Student's t at nu 1.8e8 against Gaussian, K=3 D={dd} rows=783 {} covariance)",
                cov.name()
            ),
            LOGLIK_TOL.compare(&got, &want),
        );
    }
    for (dd, n) in [(4, 783), (MAX_FULL_COVARIANCE_TARGETS, 50)] {
        let c = random_case_with(2, &[12], Activation::Relu, 3, dd, n, 1600, Covariance::Full);
        let got = backend.loglik(&c.arch, &c.params, &c.x, &c.y, n)?;
        let want = cpu.loglik(&c.arch, &c.params, &c.x, &c.y, n)?;
        push(
            format!("mixture head loglik (full covariance, K=3 D={dd} rows={n})"),
            LOGLIK_TOL.compare(&got, &want),
        );
    }
    for k in 1..=8 {
        let dd = 1 + k % 3;
        let n = [1, 3, 50, 783][k % 4];
        let c = random_case(2, &[12], Activation::Relu, k, dd, n, 2000 + k as u64);
        let got = backend.loglik(&c.arch, &c.params, &c.x, &c.y, n)?;
        let want = cpu.loglik(&c.arch, &c.params, &c.x, &c.y, n)?;
        push(
            format!("mixture head loglik (K={k} D={dd} rows={n})"),
            LOGLIK_TOL.compare(&got, &want),
        );
    }
    {
        let n = 1000;
        let cfg = StepConfig::default();
        let mut p: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
        let mut q = p.clone();
        let (mut s1, mut s2) = (AdamState::new(n), AdamState::new(n));
        for t in 1..=3 {
            let g: Vec<f32> = (0..n)
                .map(|i| ((i * t) as f32 * 0.11).cos() * 0.1)
                .collect();
            backend.adam_step(&mut p, &g, &mut s1, &cfg)?;
            cpu.adam_step(&mut q, &g, &mut s2, &cfg)?;
        }
        push(
            "adam (1000 parameters, 3 steps)".to_string(),
            ADAM_TOL.compare(&p, &q),
        );
    }
    for (n, batch, cov, family) in [
        (783usize, 50usize, Covariance::Diagonal, Family::Gaussian),
        (300, 256, Covariance::Diagonal, Family::Gaussian),
        (300, 64, Covariance::Full, Family::Gaussian),
        (783, 50, Covariance::Diagonal, Family::StudentT),
        (300, 64, Covariance::Full, Family::StudentT),
        // Batches of one tile (32 rows on a GPU, up to 64 on lavapipe): the looped step.
        (300, 32, Covariance::Diagonal, Family::Gaussian),
        (300, 24, Covariance::Full, Family::StudentT),
    ] {
        let case = |rows, seed| match family {
            Family::Gaussian => {
                random_case_with(3, &[16, 8], Activation::Relu, 3, 2, rows, seed, cov)
            }
            Family::StudentT => {
                random_student_case(3, &[16, 8], Activation::Relu, 3, 2, rows, seed, cov)
            }
        };
        let (c, val) = (case(n, 7), case(50, 8));
        let cfg = StepConfig {
            batch_size: batch,
            l2: 1e-3,
            ..StepConfig::default()
        };
        let run = |be: &mut dyn Backend| -> Result<Vec<f64>> {
            let mut run = be.start(
                &c.arch,
                &c.params,
                DataRef {
                    x: &c.x,
                    y: &c.y,
                    rows: n,
                },
                Some(DataRef {
                    x: &val.x,
                    y: &val.y,
                    rows: 50,
                }),
            )?;
            let mut traj = Vec::new();
            for epoch in 0..3u32 {
                let order: Vec<u32> = (0..n as u32).map(|i| (i * 7 + epoch) % n as u32).collect();
                let s = run.train_epoch(&order, &cfg)?;
                traj.push(s.train_nll);
                traj.push(s.val_nll.unwrap_or(f64::NAN));
            }
            Ok(traj)
        };
        let got = run(backend)?;
        let want = run(&mut cpu)?;
        push(
            format!(
                "training, 3 epochs ({n} rows, batch {batch}, {} covariance{})",
                cov.name(),
                match family {
                    Family::Gaussian => "",
                    Family::StudentT => ", Student's t",
                }
            ),
            TRAJECTORY_TOL.compare(&got, &want),
        );
    }
    // An ensemble's members trained together (where the backend can): each member's
    // trajectory against the CPU training that member alone; the third member stops after
    // two epochs, as an early-stopped member does.
    for cov in [Covariance::Diagonal, Covariance::Full] {
        let n = 783usize;
        let members: Vec<Case> = (0..3)
            .map(|m| random_case_with(3, &[16, 8], Activation::Relu, 3, 2, n, 30 + m, cov))
            .collect();
        let val = random_case_with(3, &[16, 8], Activation::Relu, 3, 2, 50, 8, cov);
        let (arch, x, y) = (&members[0].arch, &members[0].x, &members[0].y);
        let cfg = StepConfig {
            batch_size: 50,
            l2: 1e-3,
            ..StepConfig::default()
        };
        let order = |m: usize, epoch: u32| -> Vec<u32> {
            let step = [7u32, 11, 13][m];
            (0..n as u32)
                .map(|i| (i * step + epoch) % n as u32)
                .collect()
        };
        let train = DataRef { x, y, rows: n };
        let val_ref = DataRef {
            x: &val.x,
            y: &val.y,
            rows: 50,
        };
        let params: Vec<Vec<f32>> = members.iter().map(|c| c.params.clone()).collect();
        let Some(mut run) = backend.start_members(arch, &params, train, Some(val_ref))? else {
            break;
        };
        let mut got = vec![Vec::new(); 3];
        for epoch in 0..3u32 {
            let orders: Vec<u32> = (0..3).flat_map(|m| order(m, epoch)).collect();
            let active = [true, true, epoch < 2];
            let stats = run.train_epoch(&orders, &cfg, &[cfg.lr; 3], &active)?;
            for m in (0..3).filter(|&m| active[m]) {
                got[m].push(stats[m].train_nll);
                got[m].push(stats[m].val_nll.unwrap_or(f64::NAN));
            }
        }
        drop(run);
        for (m, got) in got.iter().enumerate() {
            let mut one = cpu.start(arch, &params[m], train, Some(val_ref))?;
            let mut want = Vec::new();
            for epoch in 0..if m == 2 { 2 } else { 3 } {
                let s = one.train_epoch(&order(m, epoch), &cfg)?;
                want.push(s.train_nll);
                want.push(s.val_nll.unwrap_or(f64::NAN));
            }
            push(
                format!(
                    "ensemble member {} of 3 trained together ({n} rows, batch 50, {} covariance)",
                    m + 1,
                    cov.name()
                ),
                TRAJECTORY_TOL.compare(got, &want),
            );
        }
    }
    Ok(rows)
}
