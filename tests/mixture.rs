//! Closed forms for the mixture head: one component is a Gaussian, identical components are
//! one component, a hand-computed two-component case, extremes stay finite; a Student's t
//! head is the t's density (checked against SciPy in `student.rs`) and its gradient, the
//! degrees of freedom's included, matches finite differences.

use mdn::mixture::{HALF_LN_2PI, Mixture, logsumexp, softplus, softplus_inverse};
use mdn::student::StudentT;
use mdn::tolerance::Tolerance;

const TIGHT: Tolerance = Tolerance::new(1e-12, 1e-12);

fn gaussian_logpdf(y: f64, mu: f64, sigma: f64) -> f64 {
    -HALF_LN_2PI - sigma.ln() - 0.5 * ((y - mu) / sigma).powi(2)
}

#[test]
fn one_component_is_the_gaussian_log_density() {
    let mix = Mixture {
        k: 1,
        d: 2,
        floor: 0.0,
        full: false,
        student: false,
    };
    // [logit, mu0, mu1, raw0, raw1]
    let h = [0.7f32, 0.5, -1.25, 0.3, -0.8];
    let y = [1.5f32, -0.5];
    let mut scratch = [0.0; 1];
    let got = mix.loglik(&h, &y, &mut scratch, None, 1.0);
    let want = gaussian_logpdf(1.5, 0.5, softplus(0.3f32 as f64))
        + gaussian_logpdf(-0.5, -1.25, softplus(-0.8f32 as f64));
    TIGHT.assert_close("1 component", &[got], &[want]);
}

#[test]
fn identical_components_equal_one() {
    let one = Mixture {
        k: 1,
        d: 1,
        floor: 1e-4,
        full: false,
        student: false,
    };
    let five = Mixture {
        k: 5,
        d: 1,
        floor: 1e-4,
        full: false,
        student: false,
    };
    let h1 = [0.0f32, 0.3, 0.1];
    // Arbitrary logits, the same mean and sigma for every component.
    let mut h5 = vec![-1.0f32, 2.0, 0.5, 0.0, 3.0];
    h5.extend([0.3f32; 5]);
    h5.extend([0.1f32; 5]);
    for y in [-3.0f32, 0.0, 0.3, 2.5] {
        let a = one.loglik(&h1, &[y], &mut [0.0; 1], None, 1.0);
        let b = five.loglik(&h5, &[y], &mut [0.0; 5], None, 1.0);
        TIGHT.assert_close(&format!("y={y}"), &[b], &[a]);
    }
}

#[test]
fn hand_computed_two_components() {
    // pi = softmax(0, ln 3) = (1/4, 3/4); mu = (0, 2); sigma = (1, 0.5); y = 1.
    // p = 0.25 N(1; 0, 1) + 0.75 N(1; 2, 0.5) = 0.1414791309..., ln p = -1.9556030575845058
    let mix = Mixture {
        k: 2,
        d: 1,
        floor: 0.0,
        full: false,
        student: false,
    };
    let h = [
        0.0f32,
        3f32.ln(),
        0.0,
        2.0,
        softplus_inverse(1.0) as f32,
        softplus_inverse(0.5) as f32,
    ];
    let got = mix.loglik(&h, &[1.0], &mut [0.0; 2], None, 1.0);
    Tolerance::new(1e-6, 1e-6).assert_close("2 components", &[got], &[-1.9556030575845058]);
    let (mut pi, mut mu, mut sigma) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    mix.params(&h, &mut pi, &mut mu, &mut sigma);
    Tolerance::new(1e-7, 1e-6).assert_close("pi", &pi, &[0.25, 0.75]);
    Tolerance::new(1e-7, 1e-6).assert_close("sigma", &sigma, &[1.0, 0.5]);
}

#[test]
fn head_gradient_matches_finite_differences() {
    let mix = Mixture {
        k: 3,
        d: 2,
        floor: 1e-3,
        full: false,
        student: false,
    };
    let h: Vec<f32> = (0..mix.width())
        .map(|i| ((i as f32) * 0.77).sin())
        .collect();
    let y = [0.4f32, -0.9];
    let mut grad = vec![0.0f32; mix.width()];
    mix.loglik(&h, &y, &mut [0.0; 3], Some(&mut grad), 1.0);
    // Finite differences in f64 of -loglik, varying the f32 inputs through an f64 copy.
    let f = |hh: &[f64]| -> f64 {
        let k = 3;
        let terms: Vec<f64> = (0..k)
            .map(|c| {
                let lse = logsumexp(&hh[..k]);
                let mut t = hh[c] - lse;
                for j in 0..2 {
                    let s = softplus(hh[k + k * 2 + c * 2 + j]) + 1e-3;
                    t += -HALF_LN_2PI
                        - s.ln()
                        - 0.5 * ((y[j] as f64 - hh[k + c * 2 + j]) / s).powi(2);
                }
                t
            })
            .collect();
        -logsumexp(&terms)
    };
    let base: Vec<f64> = h.iter().map(|&v| v as f64).collect();
    let fd: Vec<f64> = (0..base.len())
        .map(|i| {
            let (mut up, mut dn) = (base.clone(), base.clone());
            up[i] += 1e-6;
            dn[i] -= 1e-6;
            (f(&up) - f(&dn)) / 2e-6
        })
        .collect();
    Tolerance::new(1e-6, 1e-5).assert_close("head gradient", &grad, &fd);
}

#[test]
fn extremes_stay_finite() {
    let mix = Mixture {
        k: 2,
        d: 1,
        floor: 1e-4,
        full: false,
        student: false,
    };
    // Target a million standard deviations from every mean; sigmas at the floor; huge logits.
    for h in [
        [0.0f32, 0.0, 0.0, 1.0, -80.0, -80.0],
        [1e4, -1e4, 5.0, -5.0, 80.0, 80.0],
    ] {
        for y in [1e6f32, -1e6, 0.0] {
            let mut g = [0.0f32; 6];
            let ll = mix.loglik(&h, &[y], &mut [0.0; 2], Some(&mut g), 1.0);
            assert!(ll.is_finite(), "loglik {ll} for h={h:?} y={y}");
            assert!(
                g.iter().all(|v| v.is_finite()),
                "gradient {g:?} for h={h:?} y={y}"
            );
        }
    }
    assert_eq!(softplus(1000.0), 1000.0);
    assert!(softplus(-1000.0) >= 0.0);
    TIGHT.assert_close(
        "softplus inverse",
        &[softplus(softplus_inverse(0.37))],
        &[0.37],
    );
}

/// Regression: a component with almost no responsibility for a row gave gradients below
/// f32's normal range (about 1e-41 here); as subnormal operands they made every
/// multiply-add of the CPU backward pass that met them many times slower (a whole training
/// step 1.5-2.5x). They are zero now, on every path the head has.
#[test]
fn gradients_too_small_for_f32_were_subnormal_and_slowed_the_cpu_step() {
    let scale = 1.0 / 256.0;
    // Two components with equal weights and sigma 1 (raw = softplus^-1(1)); the second one is
    // 13.5 standard deviations from y, so its responsibility is about 3e-40.
    let raw = softplus_inverse(1.0) as f32;
    let row = |y_far: f32| [0.0f32, 0.0, 0.0, y_far, raw, raw];
    let check = |what: &str, g: &[f32]| {
        for (i, &v) in g.iter().enumerate() {
            assert!(
                v == 0.0 || v.abs() >= f32::MIN_POSITIVE,
                "{what}: gradient {i} is {v:e}, subnormal"
            );
        }
        // The far component's mean and scale: nothing to learn, exactly zero.
        assert_eq!((g[3], g[5]), (0.0, 0.0), "{what}: {g:?}");
        assert!(
            g[0] != 0.0 && g[4] != 0.0,
            "{what}: the near component still learns: {g:?}"
        );
    };
    for full in [false, true] {
        let mix = Mixture {
            k: 2,
            d: 1,
            floor: 0.0,
            full,
            student: false,
        };
        let h = row(13.5);
        let mut g = [f32::NAN; 6];
        mix.loglik(
            &h,
            &[0.0],
            &mut vec![0.0; mix.scratch_len()],
            Some(&mut g),
            scale,
        );
        check(&format!("one row, full {full}"), &g);
        // Rows taken several at a time (a partial group and a whole one).
        for rows in [3, 9] {
            let hs: Vec<f32> = (0..rows).flat_map(|_| h).collect();
            let (mut ll, mut gs) = (vec![0.0; rows], vec![f32::NAN; rows * 6]);
            let y = vec![0.0f32; rows];
            mix.loglik_rows(
                &hs,
                &y,
                rows,
                &mut ll,
                Some(&mut gs),
                scale,
                &mut Vec::new(),
            );
            for r in 0..rows {
                check(
                    &format!("{rows} rows, row {r}, full {full}"),
                    &gs[r * 6..r * 6 + 6],
                );
            }
        }
    }
}

#[test]
fn one_student_t_component_is_the_t_density() {
    let mix = Mixture {
        k: 1,
        d: 1,
        floor: 0.0,
        full: false,
        student: true,
    };
    for (raw_dof, y) in [(-1.0f32, 0.3f32), (0.5, -4.0), (3.0, 12.0), (19.0, 1.5)] {
        // [logit, mu, raw sigma, raw dof]
        let h = [0.2f32, 0.5, 0.3, raw_dof];
        let got = mix.loglik(&h, &[y], &mut [0.0; 4], None, 1.0);
        let t = StudentT {
            mu: 0.5,
            sigma: softplus(0.3f32 as f64),
            nu: 2.0 + (raw_dof as f64).exp(),
        };
        TIGHT.assert_close(
            &format!("t, raw dof {raw_dof}"),
            &[got],
            &[t.ln_pdf(y as f64)],
        );
    }
    // Two identical t components are one.
    let two = Mixture { k: 2, ..mix };
    let h = [0.0f32, 0.0, 0.5, 0.5, 0.3, 0.3, 1.0, 1.0];
    let one = [0.0f32, 0.5, 0.3, 1.0];
    let (a, b) = (
        two.loglik(&h, &[2.0], &mut [0.0; 8], None, 1.0),
        mix.loglik(&one, &[2.0], &mut [0.0; 4], None, 1.0),
    );
    TIGHT.assert_close("identical t components", &[a], &[b]);
}

/// -log p of a Student's t head in f64 by its textbook formula (libm's lgamma), diagonal or
/// full, for finite differences.
fn student_nll(mix: &Mixture, hh: &[f64], y: &[f32]) -> f64 {
    let (k, d) = (mix.k, mix.d);
    let at = mix.head();
    let lse = logsumexp(&hh[..k]);
    let terms: Vec<f64> = (0..k)
        .map(|c| {
            let mut z = vec![0.0; d];
            let (mut q, mut log_det) = (0.0, 0.0);
            for j in 0..d {
                let l = softplus(hh[at.raw_scale(c, j)]) + mix.floor;
                let mut s = y[j] as f64 - hh[at.mu(c, j)];
                if mix.full {
                    for (i, zi) in z.iter().enumerate().take(j) {
                        s -= hh[at.lower(c, j, i)] * zi;
                    }
                }
                z[j] = s / l;
                q += z[j] * z[j];
                log_det += l.ln();
            }
            let nu = 2.0 + hh[at.raw_dof(c)].exp();
            let df = d as f64;
            hh[c] - lse + libm::lgamma(0.5 * (nu + df))
                - libm::lgamma(0.5 * nu)
                - 0.5 * df * (nu * std::f64::consts::PI).ln()
                - log_det
                - 0.5 * (nu + df) * (q / nu).ln_1p()
        })
        .collect();
    -logsumexp(&terms)
}

#[test]
fn student_t_head_gradient_matches_finite_differences() {
    for full in [false, true] {
        let mix = Mixture {
            k: 3,
            d: 3,
            floor: 1e-3,
            full,
            student: true,
        };
        let at = mix.head();
        let mut h: Vec<f32> = (0..mix.width())
            .map(|i| ((i as f32) * 0.77).sin())
            .collect();
        for (c, raw) in [-1.5f32, 0.5, 4.0].into_iter().enumerate() {
            h[at.raw_dof(c)] = raw;
        }
        let y = [0.4f32, -2.9, 1.7];
        let mut grad = vec![0.0f32; mix.width()];
        mix.loglik(
            &h,
            &y,
            &mut vec![0.0; mix.scratch_len()],
            Some(&mut grad),
            1.0,
        );
        let base: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        let fd: Vec<f64> = (0..base.len())
            .map(|i| {
                let (mut up, mut dn) = (base.clone(), base.clone());
                up[i] += 1e-6;
                dn[i] -= 1e-6;
                (student_nll(&mix, &up, &y) - student_nll(&mix, &dn, &y)) / 2e-6
            })
            .collect();
        Tolerance::new(1e-6, 1e-5).assert_close(
            &format!("t head gradient, full {full}"),
            &grad,
            &fd,
        );
        // And the log-likelihood itself.
        let ll = mix.loglik(&h, &y, &mut vec![0.0; mix.scratch_len()], None, 1.0);
        TIGHT.assert_close("t head loglik", &[ll], &[-student_nll(&mix, &base, &y)]);
    }
}
