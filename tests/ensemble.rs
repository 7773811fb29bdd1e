//! Deep ensembles: a model of M members whose density is the equal-weight mixture of
//! theirs, its variance split into aleatoric and epistemic parts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use mdn::backend::{CpuBackend, DeviceChoice};
use mdn::data::{ColumnChoice, Dataset, read_data};
use mdn::job::TrainJob;
use mdn::model::Model;
use mdn::stats::Marginal;

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

fn bishop(name: &str) -> Dataset {
    read_data(
        &asset(name),
        &ColumnChoice::exactly(vec!["x".into()], vec!["t".into()]),
    )
    .unwrap()
}

fn job(seed: u64, ensemble: usize) -> TrainJob {
    TrainJob {
        epochs: Some(15),
        hidden: vec![16],
        components: Some(3),
        device: DeviceChoice::Cpu,
        threads: Some(1),
        seed,
        ensemble,
        ..TrainJob::default()
    }
}

fn train(j: TrainJob, data: &Dataset) -> Model {
    j.resolve_arrays(data.clone(), None)
        .unwrap()
        .train(&mut |_| {}, &AtomicBool::new(false))
        .unwrap()
}

fn marginal(p: &mdn::model::Prediction, r: usize) -> Marginal {
    let (k, d) = (p.k, p.d);
    Marginal::of(
        &p.pi[r * k..(r + 1) * k],
        &p.mu[r * k * d..(r + 1) * k * d],
        &p.sigma[r * k * d..(r + 1) * k * d],
        d,
        0,
    )
}

#[test]
fn an_ensemble_of_identical_members_is_the_single_model() {
    let data = bishop("bishop.csv");
    let test = bishop("bishop_test.csv");
    let one = train(job(3, 1), &data);
    let three = Model::ensemble(vec![one.clone(), one.clone(), one.clone()]).unwrap();
    assert_eq!(three.ensemble_size(), 3);
    let cpu = &mut CpuBackend::with_threads(1);
    let (p1, p3) = (
        one.predict(cpu, &test).unwrap(),
        three.predict(cpu, &test).unwrap(),
    );
    assert_eq!(p3.k, 3 * p1.k);
    let (ll1, ll3) = (
        one.loglik(cpu, &test).unwrap(),
        three.loglik(cpu, &test).unwrap(),
    );
    let (_, epistemic) = p3.variance_split(3);
    let mut worst = 0.0f64;
    for r in 0..test.rows {
        let (a, b) = (marginal(&p1, r), marginal(&p3, r));
        for (x, y) in [
            (a.mean(), b.mean()),
            (a.variance(), b.variance()),
            (a.quantile(0.1), b.quantile(0.1)),
            (a.quantile(0.9), b.quantile(0.9)),
            (ll1[r], ll3[r]),
        ] {
            worst = worst.max((x - y).abs() / (1.0 + x.abs()));
        }
        worst = worst.max(epistemic[r]);
    }
    assert!(worst < 1e-9, "worst relative difference {worst}");
}

#[test]
fn the_variance_splits_into_mean_member_variance_and_variance_of_member_means() {
    let data = bishop("bishop.csv");
    let test = bishop("bishop_test.csv");
    let ens = train(job(0, 3), &data);
    assert_eq!(ens.ensemble_size(), 3);
    let cpu = &mut CpuBackend::with_threads(1);
    let pred = ens.predict(cpu, &test).unwrap();
    let (aleatoric, epistemic) = pred.variance_split(3);
    let members: Vec<_> = ens
        .member_models()
        .map(|m| {
            let mut single = m.clone();
            single.members.clear();
            single.predict(cpu, &test).unwrap()
        })
        .collect();
    let mut worst = 0.0f64;
    for r in 0..test.rows {
        let ms: Vec<Marginal> = members.iter().map(|p| marginal(p, r)).collect();
        let mean_var = ms.iter().map(|m| m.variance()).sum::<f64>() / 3.0;
        let mean_mean = ms.iter().map(|m| m.mean()).sum::<f64>() / 3.0;
        let var_mean = ms
            .iter()
            .map(|m| (m.mean() - mean_mean).powi(2))
            .sum::<f64>()
            / 3.0;
        let total = marginal(&pred, r).variance();
        for (x, y) in [
            (aleatoric[r], mean_var),
            (epistemic[r], var_mean),
            (aleatoric[r] + epistemic[r], total),
        ] {
            worst = worst.max((x - y).abs() / (1e-12 + y.abs()));
        }
    }
    assert!(worst < 1e-6, "worst relative difference {worst}");
}

#[test]
fn an_ensemble_is_at_least_as_likely_as_its_average_member_and_unsure_far_from_the_data() {
    // Rows with x in [-3, 3]: y = sin(x) + noise.
    let n = 1500;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let xi = -3.0 + 6.0 * (i as f32 + 0.5) / n as f32;
        x.push(xi);
        y.push(xi.sin() + 0.2 * (((i * 7919) % 101) as f32 / 101.0 - 0.5));
    }
    let data = Dataset {
        path: "generated".into(),
        features: vec!["x".into()],
        targets: vec!["y".into()],
        x,
        y,
        rows: n,
    };
    let j = TrainJob {
        epochs: Some(60),
        hidden: vec![32, 32],
        ..job(0, 5)
    };
    let ens = train(j, &data);
    let cpu = &mut CpuBackend::with_threads(1);
    // Jensen: log mean_m p_m >= mean_m log p_m, row by row.
    let ll = ens.loglik(cpu, &data).unwrap();
    let each: Vec<Vec<f64>> = ens
        .member_models()
        .map(|m| {
            let mut single = m.clone();
            single.members.clear();
            single.loglik(cpu, &data).unwrap()
        })
        .collect();
    for r in 0..n {
        let avg = each.iter().map(|l| l[r]).sum::<f64>() / each.len() as f64;
        assert!(
            ll[r] >= avg - 1e-9,
            "row {r}: ensemble {} < average member {avg}",
            ll[r]
        );
    }
    // Epistemic standard deviation at x = 6 against its mean inside [-3, 3].
    let grid: Vec<f32> = (0..61)
        .map(|i| -3.0 + i as f32 * 0.1)
        .chain([6.0])
        .collect();
    let rows = Dataset {
        path: "grid".into(),
        features: vec!["x".into()],
        targets: vec![],
        x: grid.clone(),
        y: vec![],
        rows: grid.len(),
    };
    let (_, epistemic) = ens.predict(cpu, &rows).unwrap().variance_split(5);
    let inside = epistemic[..61].iter().map(|v| v.sqrt()).sum::<f64>() / 61.0;
    let outside = epistemic[61].sqrt();
    assert!(
        outside >= 3.0 * inside,
        "epistemic std at x=6: {outside}, mean inside [-3, 3]: {inside}"
    );
}

#[test]
fn mdn_train_ensemble_writes_a_version_2_model_that_every_command_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mdn = env!("CARGO_BIN_EXE_mdn");
    let run = |args: &[&str]| {
        let out = Command::new(mdn)
            .args(args)
            .env_remove("MDN_DEVICE")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&[
        "train",
        "--ensemble",
        "3",
        "--epochs",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]);
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("model.json")).unwrap())
            .unwrap();
    assert_eq!(model["format_version"], 2);
    assert_eq!(model["members"].as_array().unwrap().len(), 2);
    let test = asset("bishop_test.csv");
    let test = test.to_str().unwrap();
    let pred: serde_json::Value = serde_json::from_str(&run(&[
        "predict", "--data", test, "--json", "--device", "cpu",
    ]))
    .unwrap();
    assert_eq!(pred["ensemble"], 3);
    let row = &pred["rows"][0];
    let (a, e, v) = (
        row["aleatoric_variance"][0].as_f64().unwrap(),
        row["epistemic_variance"][0].as_f64().unwrap(),
        row["variance"][0].as_f64().unwrap(),
    );
    assert!(
        (a + e - v).abs() <= 1e-9 * v.abs().max(1.0),
        "{a} + {e} != {v}"
    );
    // The CSV has the same parts, as columns beside var_t.
    let csv = run(&["predict", "--data", test, "--device", "cpu"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let first: Vec<f64> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    let col = |name: &str| first[header.iter().position(|h| *h == name).unwrap()];
    let at = header.iter().position(|h| *h == "var_t").unwrap();
    assert_eq!(
        header[at..at + 4],
        ["var_t", "aleatoric_var_t", "epistemic_var_t", "mode_t"]
    );
    assert!((col("aleatoric_var_t") - a).abs() <= 1e-12 * a.abs().max(1.0));
    assert!((col("epistemic_var_t") - e).abs() <= 1e-12 * e.abs().max(1.0));
    assert!(run(&["info"]).contains("ensemble      3 members"));
    run(&["eval", "--data", test, "--device", "cpu"]);
    run(&["sample", "--data", test, "--n", "3", "--device", "cpu"]);
    run(&["plot", "--out", "m.svg", "--device", "cpu", "--quiet"]);
}

#[test]
fn a_streamed_ensemble_converts_once_and_its_first_member_is_the_streamed_single_model() {
    // The members stream the CSV converted once (nothing is left in the temporary
    // directory); they share the split of --seed, so member 1 is the streamed single model
    // of that seed, bit for bit, and member 2 differs from it.
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mdn = env!("CARGO_BIN_EXE_mdn");
    let train = |extra: &[&str], out: &str| -> serde_json::Value {
        let st = Command::new(mdn)
            .args(["train", "--data"])
            .arg(asset("bishop.csv"))
            .args([
                "--stream",
                "--chunk-rows",
                "700",
                "--epochs",
                "3",
                "--seed",
                "4",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                out,
            ])
            .args(extra)
            .env("TMPDIR", tmp.path())
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(out)).unwrap()).unwrap()
    };
    // Two members side by side on one thread each; the single model on one thread.
    let ens = train(&["--ensemble", "2", "--threads", "2"], "e.json");
    let single = train(&["--threads", "1"], "s.json");
    assert_eq!(ens["format_version"], 2);
    assert_eq!(ens["params"], single["params"]);
    assert_ne!(ens["members"][0]["params"], single["params"]);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn an_ensemble_trained_on_the_gpu_matches_the_cpu() {
    // The GPU adapter the GPU tests use (the software one unless MDN_TEST_DEVICE names
    // another); without one, a SKIPPED line (a failure with MDN_REQUIRE_GPU=1).
    let device = match std::env::var("MDN_TEST_DEVICE").as_deref() {
        Ok("gpu") => DeviceChoice::Gpu,
        _ => DeviceChoice::Software,
    };
    if let Err(e) = mdn::backend::GpuBackend::new(device) {
        if std::env::var("MDN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("MDN_REQUIRE_GPU=1 but no GPU backend: {e}");
        }
        eprintln!("SKIPPED a GPU test: {e}");
        return;
    }
    let data = bishop("bishop.csv");
    let test = bishop("bishop_test.csv");
    let j = |device| TrainJob {
        epochs: Some(3),
        device,
        ..job(4, 2)
    };
    let (gpu, cpu) = (train(j(device), &data), train(j(DeviceChoice::Cpu), &data));
    assert_eq!(gpu.ensemble_size(), 2);
    let be = &mut CpuBackend::with_threads(1);
    let (pg, pc) = (
        gpu.predict(be, &test).unwrap(),
        cpu.predict(be, &test).unwrap(),
    );
    let ((ag, eg), (ac, ec)) = (pg.variance_split(2), pc.variance_split(2));
    let (lg, lc) = (
        gpu.loglik(be, &test).unwrap(),
        cpu.loglik(be, &test).unwrap(),
    );
    // Three epochs on lavapipe: log-likelihoods within 2e-5 relative, variances within
    // 1e-8 absolute (the epistemic one is about 1e-2 at most).
    use mdn::tolerance::Tolerance;
    Tolerance::new(1e-4, 1e-3).assert_close("log-likelihoods", &lg, &lc);
    Tolerance::new(1e-6, 1e-2).assert_close("aleatoric variance", &ag, &ac);
    Tolerance::new(1e-6, 1e-2).assert_close("epistemic variance", &eg, &ec);
}

#[test]
fn cpu_members_trained_side_by_side_are_the_single_models_of_their_seeds() {
    // --threads 2 and 3 members: two at a time, one thread each; member m is the model that
    // seed 7 + m gives on one thread with the same validation rows.
    let data = bishop("bishop.csv");
    let (tr, val) = mdn::train::split_validation(&data, 0.1, 7).unwrap();
    let fit = |j: TrainJob| {
        j.resolve_arrays(tr.clone(), val.clone())
            .unwrap()
            .train(&mut |_| {}, &AtomicBool::new(false))
            .unwrap()
    };
    let ens = fit(TrainJob {
        threads: Some(2),
        ..job(7, 3)
    });
    assert_eq!(ens.ensemble_size(), 3);
    for (m, member) in ens.member_models().enumerate() {
        let single = fit(job(7 + m as u64, 1));
        assert_eq!(member.params, single.params, "member {m}");
    }
}

#[test]
fn members_share_the_validation_split_of_the_ensembles_seed() {
    // Every member holds out the rows seed 11 holds out (their validation NLLs are of the
    // same rows), whatever its own seed: the ensemble's members differ in their initial
    // weights and row orders only.
    let data = bishop("bishop.csv");
    let ens = train(job(11, 3), &data);
    let (tr, val) = mdn::train::split_validation(&data, 0.1, 11).unwrap();
    let val = val.unwrap();
    let be = &mut CpuBackend::with_threads(1);
    for (m, member) in ens.member_models().enumerate() {
        let info = member.training.as_ref().unwrap();
        assert_eq!(info.seed, 11 + m as u64);
        assert_eq!((info.train_rows, info.val_rows), (tr.rows, val.rows));
        let mut single = member.clone();
        single.members.clear();
        let ll = single.loglik(be, &val).unwrap();
        let nll = -ll.iter().sum::<f64>() / val.rows as f64;
        let last = info.history.last().unwrap().val_nll.unwrap();
        assert!(
            (nll - last).abs() < 1e-4,
            "member {m}: its recorded validation NLL {last} is not that of seed 11's rows ({nll})"
        );
    }
}

#[test]
fn the_density_map_of_an_ensemble_carries_its_epistemic_band() {
    // The band is the ensemble's mean and the standard deviation of its members' means at
    // each column of the grid; a single model has none.
    let data = bishop("bishop.csv");
    let ens = train(job(2, 3), &data);
    let be = &mut CpuBackend::with_threads(1);
    let grid = mdn::plot::density_grid(&ens, be, 0, (-0.5, 1.5), (0.0, 1.0), (9, 4)).unwrap();
    let band = grid.epistemic.expect("an ensemble's grid has a band");
    assert_eq!(band.len(), 9);
    let x: Vec<f32> = grid.xs.iter().map(|&v| v as f32).collect();
    let rows = Dataset {
        path: "grid".into(),
        features: ens.features.clone(),
        targets: ens.targets.clone(),
        y: vec![0.0; x.len()],
        x,
        rows: 9,
    };
    let pred = ens.predict(be, &rows).unwrap();
    let (_, epistemic) = pred.variance_split(3);
    for (i, &(mean, sd)) in band.iter().enumerate() {
        assert!((mean - marginal(&pred, i).mean()).abs() < 1e-12);
        assert!((sd - epistemic[i].sqrt()).abs() < 1e-12);
    }
    let mut single = ens.clone();
    single.members.clear();
    let grid = mdn::plot::density_grid(&single, be, 0, (-0.5, 1.5), (0.0, 1.0), (9, 4)).unwrap();
    assert!(grid.epistemic.is_none());
}

/// Trains the ensemble job `j` (writing checkpoints into `dir`), cancelled after `stop_after`
/// epoch reports when given, and returns the model file's parameters, member by member.
fn run_job(j: TrainJob, stop_after: Option<usize>) -> Vec<Vec<f32>> {
    use mdn::job::JobEvent;
    use mdn::train::TrainEvent;
    use std::sync::atomic::Ordering;
    let cancel = AtomicBool::new(false);
    let mut epochs = 0;
    let outcome = j
        .resolve()
        .unwrap()
        .run(
            &mut |e| {
                if let JobEvent::Train(TrainEvent::Epoch(_)) = e {
                    epochs += 1;
                    if stop_after.is_some_and(|n| epochs >= n) {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            },
            &cancel,
        )
        .unwrap();
    outcome
        .model
        .member_models()
        .map(|m| m.params.clone())
        .collect()
}

fn checkpointed(dir: &Path, device: DeviceChoice, threads: Option<usize>) -> TrainJob {
    TrainJob {
        data: Some(asset("bishop.csv")),
        out: Some(dir.join("m.json")),
        checkpoint_every: Some(1),
        epochs: None,
        max_epochs: Some(40),
        patience: Some(3),
        device,
        threads,
        ..job(5, 3)
    }
}

#[test]
fn an_ensemble_resumed_from_its_checkpoint_ends_with_the_uninterrupted_bits_cpu() {
    // Three members, two side by side on one thread each: the cancel stops the first two
    // mid-run, the third has not started (its slot of the checkpoint is empty and it starts
    // over). Resumed, every member ends as the uninterrupted run's.
    let dir = tempfile::tempdir().unwrap();
    let whole = run_job(checkpointed(dir.path(), DeviceChoice::Cpu, Some(2)), None);
    std::fs::remove_file(dir.path().join("m.ckpt.json")).ok();
    let cut = run_job(
        checkpointed(dir.path(), DeviceChoice::Cpu, Some(2)),
        Some(6),
    );
    assert!(
        cut.len() < 3 || cut != whole,
        "the cancel came too late to test anything"
    );
    let ckpt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.ckpt.json")).unwrap())
            .unwrap();
    assert_eq!(ckpt["format_version"], 2);
    assert_eq!(ckpt["members"].as_array().unwrap().len(), 3);
    assert!(ckpt["members"][2].is_null(), "member 3 had not started");
    let resumed = run_job(
        TrainJob {
            resume: Some(dir.path().join("m.ckpt.json")),
            out: Some(dir.path().join("m.json")),
            device: DeviceChoice::Cpu,
            threads: Some(2),
            ..TrainJob::default()
        },
        None,
    );
    assert_eq!(resumed.len(), 3);
    for (m, (a, b)) in resumed.iter().zip(&whole).enumerate() {
        assert_eq!(a, b, "member {m}");
    }
}

#[test]
fn an_ensemble_resumed_from_its_checkpoint_ends_with_the_uninterrupted_bits_gpu() {
    // The members train together on the GPU (lavapipe unless MDN_TEST_DEVICE names
    // another): the checkpoint holds all of them at one step; resumed, they end as the
    // uninterrupted run's, each with its own early stop.
    let device = match std::env::var("MDN_TEST_DEVICE").as_deref() {
        Ok("gpu") => DeviceChoice::Gpu,
        _ => DeviceChoice::Software,
    };
    if let Err(e) = mdn::backend::GpuBackend::new(device) {
        if std::env::var("MDN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
            panic!("MDN_REQUIRE_GPU=1 but no GPU backend: {e}");
        }
        eprintln!("SKIPPED a GPU test: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let whole = run_job(checkpointed(dir.path(), device, None), None);
    std::fs::remove_file(dir.path().join("m.ckpt.json")).ok();
    run_job(checkpointed(dir.path(), device, None), Some(5));
    let ckpt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.ckpt.json")).unwrap())
            .unwrap();
    let completed: Vec<u64> = ckpt["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["trainer"]["completed"].as_u64().unwrap())
        .collect();
    assert_eq!(completed, vec![5, 5, 5]);
    let resumed = run_job(
        TrainJob {
            resume: Some(dir.path().join("m.ckpt.json")),
            out: Some(dir.path().join("m.json")),
            device,
            ..TrainJob::default()
        },
        None,
    );
    assert_eq!(resumed, whole);
}

#[test]
fn ensemble_interrupted_in_its_last_member_is_an_interrupted_run() {
    // Regression (a new user's Ctrl-C while the last member trained gave exit code 0): the
    // members train one after another on one thread; the cancel comes in member 3's first
    // epoch. The run is interrupted, and says so.
    use mdn::job::JobEvent;
    use mdn::train::TrainEvent;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let (mut third, mut warnings) = (false, Vec::new());
    let outcome = TrainJob {
        data: Some(asset("bishop.csv")),
        out: Some(dir.path().join("m.json")),
        threads: Some(1),
        epochs: Some(20),
        ..job(1, 3)
    }
    .resolve()
    .unwrap()
    .run(
        &mut |e| match e {
            JobEvent::Note(n) if n.contains("ensemble member 3 of 3") => third = true,
            JobEvent::Train(TrainEvent::Epoch(_)) if third => cancel.store(true, Ordering::Relaxed),
            JobEvent::Warning(w) => warnings.push(w.to_string()),
            _ => {}
        },
        &cancel,
    )
    .unwrap();
    assert!(outcome.interrupted);
    assert_eq!(outcome.model.ensemble_size(), 3);
    assert!(
        warnings.iter().any(|w| w.contains("interrupted: member 3")),
        "{warnings:?}"
    );
}

#[test]
fn a_small_data_ensemble_no_better_than_a_linear_model_says_so_once() {
    // Regression: with --ensemble the cross-validated comparison with a linear model was
    // silent. 60 rows of a straight line with noise: the linear model wins; the ensemble's
    // cross-validation is done once and warned about once.
    use mdn::job::JobEvent;
    let n = 60;
    let x: Vec<f32> = (0..n).map(|i| -3.0 + 6.0 * i as f32 / n as f32).collect();
    let y: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| 0.5 * v + 0.3 * (((i * 7919) % 101) as f32 / 101.0 - 0.5))
        .collect();
    let data = Dataset {
        path: "line.csv".into(),
        features: vec!["x".into()],
        targets: vec!["y".into()],
        x,
        y,
        rows: n,
    };
    let mut warnings = Vec::new();
    let mut folds = 0;
    TrainJob {
        epochs: None,
        components: None,
        ..job(0, 3)
    }
    .resolve_arrays(data, None)
    .unwrap()
    .train(
        &mut |e| match e {
            JobEvent::Warning(w) => warnings.push(w.to_string()),
            JobEvent::Note(n) if n.starts_with("fold ") => folds += 1,
            _ => {}
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(folds, 5, "the folds run once for the ensemble");
    let linear: Vec<_> = warnings.iter().filter(|w| w.contains("linear")).collect();
    assert_eq!(linear.len(), 1, "{warnings:?}");
}

#[test]
fn ensemble_progress_jumped_to_another_members_epochs_without_a_word() {
    // Regression (a new user): side by side on the CPU, the epochs shown are the first
    // running member's; when it ended, the next member's epochs followed mid-run ("epoch
    // 58/58", then "epoch 22/58") with nothing saying whose they were. A note now says.
    use mdn::job::JobEvent;
    use mdn::train::TrainEvent;
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    TrainJob {
        data: Some(asset("bishop.csv")),
        out: Some(dir.path().join("m.json")),
        threads: Some(2),
        epochs: Some(12),
        ..job(3, 3)
    }
    .resolve()
    .unwrap()
    .run(
        &mut |e| match e {
            JobEvent::Note(n) => lines.push(n.to_string()),
            JobEvent::Train(TrainEvent::Epoch(r)) => lines.push(format!("epoch {}", r.epoch)),
            JobEvent::Member { index, of } => lines.push(format!("member {index} of {of}")),
            _ => {}
        },
        &AtomicBool::new(false),
    )
    .unwrap();
    let (mut prev, mut said) = (0usize, false);
    let mut takeovers = 0;
    for l in &lines {
        if let Some(e) = l.strip_prefix("epoch ") {
            let e: usize = e.parse().unwrap();
            if e != prev + 1 {
                assert!(
                    said,
                    "epoch {e} after epoch {prev} without a note: {lines:?}"
                );
                takeovers += 1;
            }
            (prev, said) = (e, false);
        } else if l.starts_with("the epochs below are member ") {
            said = true;
        }
    }
    // The epochs were tagged with their member (for the service's events and Python's
    // history_): one Member before the first epoch and one at each takeover.
    let members: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("member ") && l.contains(" of 3"))
        .collect();
    assert_eq!(members.len(), takeovers + 1, "{lines:?}");
    // The first two members start together, and whichever thread runs first is shown
    // first (member 1 was, once, on a loaded machine).
    assert!(
        ["member 0 of 3", "member 1 of 3"].contains(&members[0].as_str()),
        "{lines:?}"
    );
    let first_epoch = lines.iter().position(|l| l.starts_with("epoch ")).unwrap();
    let first_member = lines.iter().position(|l| l == members[0]).unwrap();
    assert!(first_member < first_epoch, "{lines:?}");
    // Three members two at a time: usually the first ends, and the second (already running)
    // or the third takes over. The threads' speeds decide: where the first member is the
    // last to end (seen once on CI), its own epochs are shown throughout, 1 to 12 in order.
    let shown: Vec<&String> = lines.iter().filter(|l| l.starts_with("epoch ")).collect();
    assert!(
        takeovers >= 1 || shown.len() == 12,
        "no takeover, and not one member's 12 epochs: {lines:?}"
    );
}
