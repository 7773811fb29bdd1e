//! Quantiles, modes, proper scores and sampling controls against closed forms and Monte Carlo.

use mdn::model::Prediction;
use mdn::stats::{Marginal, score};
use mdn::transform::Transform;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn two_modes() -> Marginal {
    Marginal {
        pi: vec![0.3, 0.7],
        mu: vec![-1.0, 2.0],
        sigma: vec![0.5, 1.5],
        transform: Transform::None,
        dof: Vec::new(),
    }
}

#[test]
fn quantiles_invert_the_cdf_and_bracket_the_mass() {
    let m = two_modes();
    for q in [1e-6, 0.01, 0.05, 0.3, 0.5, 0.77, 0.95, 0.999999] {
        let x = m.quantile(q);
        assert!(
            (m.cdf(x) - q).abs() < 1e-9,
            "q={q}: cdf(quantile) = {}",
            m.cdf(x)
        );
    }
    assert!(m.quantile(0.05) < m.quantile(0.5) && m.quantile(0.5) < m.quantile(0.95));
    // Variance by the law of total variance, against its definition.
    let mean = -0.3 + 0.7 * 2.0;
    let var = 0.3 * (0.25 + (-1.0f64 - mean).powi(2)) + 0.7 * (2.25 + (2.0f64 - mean).powi(2));
    assert!((m.mean() - mean).abs() < 1e-12 && (m.variance() - var).abs() < 1e-12);
}

#[test]
fn the_mode_is_the_highest_density_point() {
    let m = two_modes();
    let mode = m.mode();
    // A fine grid finds no higher density.
    let best = (0..20001)
        .map(|i| -5.0 + i as f64 * 0.0005)
        .map(|x| (m.pdf(x), x))
        .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
    assert!(
        (mode - best.1).abs() < 1e-3,
        "mode {mode} vs grid {}",
        best.1
    );
    assert!(m.pdf(mode) >= best.0 - 1e-12);
    // A tall narrow component wins over a heavier wide one.
    let m = Marginal {
        pi: vec![0.2, 0.8],
        mu: vec![0.0, 5.0],
        sigma: vec![0.01, 3.0],
        transform: Transform::None,
        dof: Vec::new(),
    };
    assert!(m.mode().abs() < 1e-6);
}

#[test]
fn crps_matches_monte_carlo() {
    // CRPS(F, y) = E|X - y| - E|X - X'| / 2 for independent X, X' ~ F.
    let m = two_modes();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut draw = || {
        let c = if rng.random::<f64>() < 0.3 { 0 } else { 1 };
        let z: f64 = StandardNormal.sample(&mut rng);
        m.mu[c] + m.sigma[c] * z
    };
    let n = 400_000;
    for y in [-1.5, 0.3, 2.0, 6.0] {
        let (mut a, mut b) = (0.0, 0.0);
        for _ in 0..n {
            let (x1, x2) = (draw(), draw());
            a += (x1 - y).abs();
            b += (x1 - x2).abs();
        }
        let mc = a / n as f64 - 0.5 * b / n as f64;
        assert!(
            (m.crps(y) - mc).abs() < 0.01,
            "y={y}: closed form {} vs Monte Carlo {mc}",
            m.crps(y)
        );
    }
    // The same mixture as one of z = logit((y - 0) / 10): y = g⁻¹(X), the CRPS by quadrature.
    // (Monte Carlo's error is larger here: src/stats.rs checks the quadrature against a
    // brute-force integral to 1e-5.)
    let t = Transform::Logit {
        low: 0.0,
        high: 10.0,
    };
    let lm = two_modes().with_transform(t);
    for y in [0.5, 2.0, 7.0, 9.9, 12.0] {
        let (mut a, mut b) = (0.0, 0.0);
        for _ in 0..n {
            let (x1, x2) = (t.inverse(draw()), t.inverse(draw()));
            a += (x1 - y).abs();
            b += (x1 - x2).abs();
        }
        let mc = a / n as f64 - 0.5 * b / n as f64;
        assert!(
            (lm.crps(y) - mc).abs() < 0.03,
            "logit, y={y}: quadrature {} vs Monte Carlo {mc}",
            lm.crps(y)
        );
    }
}

#[test]
fn scores_of_a_calibrated_forecast() {
    // Targets drawn from the forecast itself: PIT flat, coverages near nominal.
    let k = 2;
    let rows = 20_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (mut pi, mut mu, mut sigma, mut y) = (vec![], vec![], vec![], vec![]);
    for r in 0..rows {
        let shift = (r % 7) as f64;
        pi.extend([0.4, 0.6]);
        mu.extend([shift - 1.0, shift + 1.5]);
        sigma.extend([0.3, 0.8]);
        let c = if rng.random::<f64>() < 0.4 { 0 } else { 1 };
        let z: f64 = StandardNormal.sample(&mut rng);
        y.push((mu[r * k + c] + sigma[r * k + c] * z) as f32);
    }
    let of = |sigma: &[f64], transforms: Vec<Transform>| Prediction {
        rows,
        k,
        d: 1,
        pi: pi.clone(),
        mu: mu.clone(),
        sigma: sigma.to_vec(),
        scale_tril: Vec::new(),
        transforms,
        dof: Vec::new(),
    };
    let s = &score(&["y".to_string()], &of(&sigma, vec![]), &y)[0];
    assert!(s.calibration_error < 0.01, "{s:?}");
    assert!(
        (s.coverage_50 - 0.5).abs() < 0.02 && (s.coverage_90 - 0.9).abs() < 0.01,
        "{s:?}"
    );
    assert_eq!(s.pit_histogram.iter().sum::<u64>(), rows as u64);
    // A forecast that is too sharp is miscalibrated: U-shaped PIT, low coverage.
    let narrow: Vec<f64> = sigma.iter().map(|s| s * 0.3).collect();
    let t = &score(&["y".to_string()], &of(&narrow, vec![]), &y)[0];
    assert!(t.calibration_error > 0.03 && t.coverage_90 < 0.7, "{t:?}");
    assert!(t.pit_histogram[0] > s.pit_histogram[0] && t.pit_histogram[9] > s.pit_histogram[9]);
    // The same mixture as one of ln y, scored on e^y: the PIT is the same (F(e^y) through ln
    // is the CDF of y), so it is as calibrated, and the scores are in units of e^y.
    let e: Vec<f32> = y.iter().map(|v| (*v as f64).exp() as f32).collect();
    let l = &score(&["y".to_string()], &of(&sigma, vec![Transform::Log]), &e)[0];
    assert!(l.calibration_error < 0.01, "{l:?}");
    let differ: u64 = l
        .pit_histogram
        .iter()
        .zip(&s.pit_histogram)
        .map(|(a, b)| a.abs_diff(*b))
        .sum();
    assert!(
        differ <= 4,
        "{:?} vs {:?}",
        l.pit_histogram,
        s.pit_histogram
    );
    assert!(
        l.crps > s.crps,
        "CRPS in units of e^y: {} vs {}",
        l.crps,
        s.crps
    );
}
