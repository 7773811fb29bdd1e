//! The numbers behind `mdn plot`'s panels: the density map of Bishop's inverse problem shows
//! its three branches, and the PIT and reliability curves are what their definitions say.

use std::path::Path;

use mdn::backend::CpuBackend;
use mdn::data::{ColumnChoice, read_csv};
use mdn::model::Prediction;
use mdn::plot::{density_grid, pit, reliability};
use mdn::train::{TrainOptions, split_validation, train};

/// One column of a density map: the density `p` at `ys`.
struct Column {
    ys: Vec<f64>,
    p: Vec<f64>,
}

impl Column {
    fn inside(&self, a: f64, b: f64) -> impl Iterator<Item = f64> + '_ {
        self.ys
            .iter()
            .zip(&self.p)
            .filter(move |(y, _)| **y >= a && **y <= b)
            .map(|(_, p)| *p)
    }
    fn mass(&self, a: f64, b: f64) -> f64 {
        self.inside(a, b).sum::<f64>() * (self.ys[1] - self.ys[0])
    }
    fn peak(&self, a: f64, b: f64) -> f64 {
        self.inside(a, b).fold(0.0, f64::max)
    }
}

#[test]
fn bishop_density_map_shows_three_branches() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/bishop.csv");
    let data = read_csv(&path, &ColumnChoice::Default).unwrap();
    let opts = TrainOptions::default();
    let (tr, val) = split_validation(&data, 0.1, opts.seed).unwrap();
    let mut cpu = CpuBackend::new();
    let model = train(&mut cpu, &tr, val.as_ref(), &opts, &mut |_| true).unwrap();
    // x = t + 0.3 sin(2 pi t) + U(-0.1, 0.1). The noise-free curve has three branches for
    // 0.41 < x < 0.59. With the noise, at x = 0.42 the true density is zero between
    // t = 0.23 and 0.47 (the lower branch apart from the other two, merged); at x = 0.58
    // the mirror image; at x = 0.5 it is flat over [0.16, 0.84], covering all three; at the
    // edges there is one branch.
    let mut column = |x: f64| {
        let g = density_grid(&model, &mut cpu, 0, (x, x), (-0.3, 1.3), (1, 1600)).unwrap();
        Column {
            ys: g.ys,
            p: g.density,
        }
    };
    for (x, (lo, gap, hi)) in [
        (0.42, ((0.10, 0.24), (0.26, 0.42), (0.47, 0.82))),
        (0.58, ((0.18, 0.53), (0.58, 0.74), (0.76, 0.90))),
    ] {
        let c = column(x);
        let (mass, peak) = (|a: f64, b: f64| c.mass(a, b), |a: f64, b: f64| c.peak(a, b));
        let top = peak(-0.3, 1.3);
        assert!(
            (mass(-0.3, 1.3) - 1.0).abs() < 0.01,
            "x = {x}: a density integrates to 1"
        );
        assert!(
            mass(lo.0, lo.1) > 0.1,
            "x = {x}: mass {} in {lo:?}",
            mass(lo.0, lo.1)
        );
        assert!(
            mass(hi.0, hi.1) > 0.1,
            "x = {x}: mass {} in {hi:?}",
            mass(hi.0, hi.1)
        );
        assert!(
            mass(lo.0, lo.1) + mass(hi.0, hi.1) > 0.9,
            "x = {x}: the two regions hold the mass"
        );
        assert!(
            peak(gap.0, gap.1) < 0.05 * top,
            "x = {x}: density {} in the gap {gap:?}, peak {top}",
            peak(gap.0, gap.1)
        );
    }
    let c = column(0.5);
    let (mass, peak) = (|a: f64, b: f64| c.mass(a, b), |a: f64, b: f64| c.peak(a, b));
    let top = peak(-0.3, 1.3);
    for t in [0.21, 0.5, 0.79] {
        assert!(
            peak(t - 0.02, t + 0.02) > 0.3 * top,
            "x = 0.5: branch at t = {t} has density {} of peak {top}",
            peak(t - 0.02, t + 0.02)
        );
    }
    assert!(mass(0.1, 0.9) > 0.97, "x = 0.5: mass {}", mass(0.1, 0.9));
    for (x, t) in [(0.05, 0.03), (0.95, 0.97)] {
        let c = column(x);
        let mass = |a: f64, b: f64| c.mass(a, b);
        assert!(
            mass(t - 0.15, t + 0.15) > 0.97,
            "x = {x}: one branch near t = {t}"
        );
    }
    // Only one-input models have a density map.
    let mut two = model.clone();
    two.arch.inputs = 2;
    let err = density_grid(&two, &mut cpu, 0, (0.0, 1.0), (0.0, 1.0), (2, 2)).unwrap_err();
    assert!(
        err.to_string().contains("one numeric feature column"),
        "{err}"
    );
}

#[test]
fn pit_and_reliability_follow_their_definitions() {
    // Three rows of a one-component standard normal: PIT is Phi(y).
    let pred = Prediction {
        rows: 3,
        k: 1,
        d: 1,
        pi: vec![1.0; 3],
        mu: vec![0.0, 1.0, -2.0],
        sigma: vec![1.0, 2.0, 0.5],
        scale_tril: Vec::new(),
        transforms: Vec::new(),
        dof: Vec::new(),
    };
    let p = pit(
        &pred,
        &[0.0, 1.0 + 2.0 * 1.959_964, -2.0 - 0.5], // f32 targets
        0,
    );
    mdn::tolerance::Tolerance::new(1e-6, 0.0).assert_close(
        "PIT",
        &p,
        &[0.5, 0.975, 0.158_655_253_931_457],
    );
    // Reliability: the fraction of PIT values at or below each level.
    let values = [0.05, 0.15, 0.15, 0.35, 0.95];
    let curve = reliability(&values, 4);
    assert_eq!(
        curve,
        vec![(0.0, 0.0), (0.25, 0.6), (0.5, 0.8), (0.75, 0.8), (1.0, 1.0)]
    );
}
