//! The backend suite (tests/common/suite.rs) run against the GPU backend, on the software
//! adapter by default (lavapipe on CI; `MDN_TEST_DEVICE=gpu` for a hardware GPU).

mod common;

use common::gpu_backend;

backend_suite!(gpu_backend);

use std::path::Path;

use mdn::backend::{AdamState, Backend, CpuBackend, StepConfig};
use mdn::data::{ColumnChoice, Dataset, read_csv};
use mdn::tolerance::Tolerance;
use mdn::train::{Stopping, TrainOptions, split_validation, train};

fn asset(name: &str) -> Dataset {
    read_csv(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(name),
        &ColumnChoice::Default,
    )
    .unwrap()
}

#[test]
fn same_seed_same_bits_on_the_gpu() {
    let Some(mut gpu) = gpu_backend() else { return };
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 3 },
        hidden: vec![32, 16],
        ..TrainOptions::default()
    };
    let a = train(gpu.as_mut(), &tr, val.as_ref(), &opts, &mut |_| true).unwrap();
    let b = train(gpu.as_mut(), &tr, val.as_ref(), &opts, &mut |_| true).unwrap();
    assert_eq!(
        a.params, b.params,
        "two runs with the same seed on one device differ"
    );
    assert_eq!(
        a.training.as_ref().unwrap().history,
        b.training.as_ref().unwrap().history
    );
    // And they follow the CPU reference closely.
    let c = train(
        &mut CpuBackend::new(),
        &tr,
        val.as_ref(),
        &opts,
        &mut |_| true,
    )
    .unwrap();
    let nll = |m: &mdn::model::Model| {
        m.training
            .as_ref()
            .unwrap()
            .history
            .iter()
            .flat_map(|e| [e.train_nll, e.val_nll.unwrap()])
            .collect::<Vec<_>>()
    };
    Tolerance::new(1e-4, 1e-4).assert_close("GPU vs CPU NLL trajectory", &nll(&a), &nll(&c));
}

#[test]
fn shipped_example_trains_on_the_gpu() {
    let Some(mut gpu) = gpu_backend() else { return };
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let model = train(
        gpu.as_mut(),
        &tr,
        val.as_ref(),
        &TrainOptions::default(),
        &mut |_| true,
    )
    .unwrap();
    let test = asset("bishop_test.csv");
    let ll = model.loglik(gpu.as_mut(), &test).unwrap();
    let nll = -ll.iter().sum::<f64>() / ll.len() as f64;
    assert!(nll < -0.7, "held-out NLL {nll} on the GPU");
    // Evaluation on the GPU agrees with the CPU for the same model.
    let cpu_ll = model.loglik(&mut CpuBackend::new(), &test).unwrap();
    Tolerance::new(1e-4, 1e-4).assert_close("per-row loglik, GPU vs CPU", &ll, &cpu_ll);
}

#[test]
fn large_dispatches_fold_into_two_dimensions() {
    // More elements than 65535 workgroups of 64 invocations: the Adam dispatch must fold.
    let Some(mut gpu) = gpu_backend() else { return };
    let n = 65535 * 64 + 3;
    let mut p: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 * 0.37).sin()).collect();
    let g: Vec<f32> = (0..n).map(|i| ((i % 777) as f32 * 0.11).cos()).collect();
    let mut q = p.clone();
    let (mut s1, mut s2) = (AdamState::new(n), AdamState::new(n));
    let cfg = StepConfig::default();
    gpu.adam_step(&mut p, &g, &mut s1, &cfg).unwrap();
    CpuBackend::new()
        .adam_step(&mut q, &g, &mut s2, &cfg)
        .unwrap();
    Tolerance::new(1e-7, 1e-5).assert_close("adam over 4.2M parameters", &p, &q);
}

#[test]
fn training_with_many_batches_and_partial_last_batch() {
    // 2 * 512 + 1 batches: the epoch is submitted in pieces; the last batch has one row.
    let Some(mut gpu) = gpu_backend() else { return };
    let c = common::random_case(2, &[8], mdn::layout::Activation::Tanh, 2, 1, 1025, 3);
    let cfg = StepConfig {
        batch_size: 1,
        ..StepConfig::default()
    };
    let order: Vec<u32> = (0..1025u32).rev().collect();
    let run = |be: &mut dyn Backend| {
        let mut be = be
            .start(
                &c.arch,
                &c.params,
                mdn::backend::DataRef {
                    x: &c.x,
                    y: &c.y,
                    rows: 1025,
                },
                None,
            )
            .unwrap();
        let s = be.train_epoch(&order, &cfg).unwrap();
        (s, be.current_params().unwrap())
    };
    let (gs, gp) = run(gpu.as_mut());
    let (cs, cp) = run(&mut CpuBackend::new());
    assert_eq!(gs.steps, 1025);
    assert!(gs.finite);
    Tolerance::new(1e-4, 1e-4).assert_close("train NLL", &[gs.train_nll], &[cs.train_nll]);
    Tolerance::new(1e-4, 1e-3).assert_close("parameters after 1025 steps", &gp, &cp);
}

#[test]
fn one_readback_per_epoch() {
    let Some(mut backend) = common::gpu() else {
        return;
    };
    let readbacks = backend.gpu().readback_counter();
    let count = || readbacks.load(std::sync::atomic::Ordering::Relaxed);
    let c = common::random_case(3, &[16], mdn::layout::Activation::Relu, 3, 1, 2000, 9);
    let val = common::random_case(3, &[16], mdn::layout::Activation::Relu, 3, 1, 300, 10);
    let mut gpu = backend
        .start(
            &c.arch,
            &c.params,
            mdn::backend::DataRef {
                x: &c.x,
                y: &c.y,
                rows: 2000,
            },
            Some(mdn::backend::DataRef {
                x: &val.x,
                y: &val.y,
                rows: 300,
            }),
        )
        .unwrap();
    let cfg = StepConfig {
        batch_size: 64,
        ..StepConfig::default()
    };
    let before = count();
    let order: Vec<u32> = (0..2000).collect();
    for epoch in 1..=4u64 {
        let s = gpu.train_epoch(&order, &cfg).unwrap();
        assert!(s.finite && s.val_nll.is_some());
        gpu.keep_best().unwrap();
        assert_eq!(
            count() - before,
            epoch,
            "readbacks after {epoch} epochs of 32 batches"
        );
    }
}

#[test]
fn weight_gradients_over_many_row_slices_match_the_cpu() {
    // The weight gradient is summed over about sqrt(rows) row slices of at least 16 rows,
    // at most 256 (fewer for a layer with many weights): 15 rows are one slice, 17 two (of
    // 9 and 8 rows), 4097 are 65 slices of 64 rows with a last one of 1 row, and the 257x128
    // layer of hidden [256, 128] caps the 142 slices of 20001 rows at 127.
    let Some(mut gpu) = gpu_backend() else { return };
    let mut cpu = CpuBackend::new();
    for (rows, hidden) in [
        (15, vec![8]),
        (17, vec![8]),
        (4097, vec![24, 12]),
        (20_001, vec![256, 128]),
    ] {
        let c = common::random_case(5, &hidden, mdn::layout::Activation::Tanh, 3, 2, rows, 31);
        let got = gpu
            .loss_grad(&c.arch, &c.params, &c.x, &c.y, rows, 0.01)
            .unwrap();
        let want = cpu
            .loss_grad(&c.arch, &c.params, &c.x, &c.y, rows, 0.01)
            .unwrap();
        mdn::check::GRAD_TOL.assert_close(
            &format!("gradient, {rows} rows, hidden {hidden:?}"),
            &got.grad,
            &want.grad,
        );
    }
}

#[test]
fn evaluation_in_several_chunks_matches_the_cpu() {
    // More rows than one evaluation dispatch holds (4096): forward and loglik run in chunks.
    let Some(mut gpu) = gpu_backend() else { return };
    let c = common::random_case(
        5,
        &[24, 12],
        mdn::layout::Activation::Relu,
        4,
        2,
        10_001,
        21,
    );
    let mut cpu = CpuBackend::new();
    let got = gpu.forward(&c.arch, &c.params, &c.x, c.rows).unwrap();
    let want = cpu.forward(&c.arch, &c.params, &c.x, c.rows).unwrap();
    mdn::check::FORWARD_TOL.assert_close("forward, 10001 rows", &got, &want);
    let got = gpu.loglik(&c.arch, &c.params, &c.x, &c.y, c.rows).unwrap();
    let want = cpu.loglik(&c.arch, &c.params, &c.x, &c.y, c.rows).unwrap();
    mdn::check::LOGLIK_TOL.assert_close("loglik, 10001 rows", &got, &want);
}

#[test]
fn a_lost_device_is_an_error_that_says_so() {
    let Some(mut backend) = common::gpu() else {
        return;
    };
    let device = backend.gpu().device.clone();
    let c = common::random_case(2, &[8], mdn::layout::Activation::Relu, 2, 1, 200, 5);
    let mut gpu = backend
        .start(
            &c.arch,
            &c.params,
            mdn::backend::DataRef {
                x: &c.x,
                y: &c.y,
                rows: 200,
            },
            None,
        )
        .unwrap();
    let order: Vec<u32> = (0..200).collect();
    let cfg = StepConfig {
        batch_size: 50,
        ..StepConfig::default()
    };
    gpu.train_epoch(&order, &cfg).unwrap();
    // Destroying the device is what a driver reset or an unplugged GPU looks like.
    device.destroy();
    let err = gpu.train_epoch(&order, &cfg).unwrap_err().to_string();
    assert!(err.contains("lost"), "{err}");
    assert!(gpu.current_params().is_err());
}

#[test]
fn losing_the_device_mid_run_keeps_the_last_checkpoint() {
    use mdn::checkpoint::{Checkpoint, DataSpec};
    let Some(gpu) = common::gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt.json");
    let data = asset("bishop.csv");
    let (tr, val) = split_validation(&data, 0.1, 0).unwrap();
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 5 },
        ..TrainOptions::default()
    };
    let spec = DataSpec {
        data: None,
        target: vec![],
        features: vec![],
        categorical: vec![],
        drop_missing: false,
        val: None,
        val_fraction: 0.1,
        stream: false,
        chunk_rows: None,
        memory_mb: 512,
        out: None,
    };
    let mut write = |state: mdn::backend::TrainState,
                     st: &mdn::train::LoopState,
                     xs: &mdn::scaler::Scaler,
                     ys: &mdn::scaler::Scaler| {
        Checkpoint::new(
            spec.clone(),
            opts.clone(),
            1,
            (xs.clone(), ys.clone()),
            state,
            st.clone(),
        )
        .save(&path)
    };
    // The device is lost when the third epoch starts.
    let device = gpu.gpu().device.clone();
    let mut be = common::Hooked::new(gpu);
    be.before = Box::new(move |attempt| {
        if attempt == 3 {
            device.destroy();
        }
    });
    let checkpointer = Some(mdn::train::Checkpointer {
        min_seconds: 0.0,
        every: 1,
        write: &mut write,
    });
    let err = mdn::train::train_with(
        &mut be,
        &tr,
        val.as_ref(),
        &opts,
        None,
        checkpointer,
        &mut |_| true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("GPU device lost"), "{err}");
    assert_eq!(err.exit_code(), 1);
    // The checkpoint of epoch 2 is whole and resumable.
    let c = Checkpoint::load(&path).unwrap();
    assert_eq!(c.trainer.completed, 2);
    assert!(c.state.params.iter().all(|v| v.is_finite()));
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "no temporary files left: {files:?}");
}

#[test]
fn ensemble_members_trained_together_are_the_single_runs_of_their_seeds() {
    // Three members in every dispatch: 783 training rows in batches of 50 (a partial last
    // batch; 783 fills no workgroup), two hidden layers, early stopping with a short
    // patience so that the members stop at different epochs (the ones stopped first are
    // carried along, their results ignored). Each member must be exactly the model its seed
    // gives alone on the same device: parameters, history, best epoch and stop reason.
    let Some(mut gpu) = gpu_backend() else { return };
    members_are_the_single_runs_of_their_seeds(gpu.as_mut());
}

#[test]
fn looped_ensemble_members_are_the_single_runs_of_their_seeds() {
    // The same with the looped step: a workgroup a member, the members stopped early
    // returning at once from every dispatch.
    let Some(mut gpu) = common::gpu_with(mdn::backend::GpuOptions {
        path: mdn::backend::GpuPath::Loop,
        ..Default::default()
    }) else {
        return;
    };
    members_are_the_single_runs_of_their_seeds(&mut gpu);
}

/// Three members trained together on `gpu` and each member's seed trained alone give the
/// same bits.
fn members_are_the_single_runs_of_their_seeds(gpu: &mut dyn mdn::backend::Backend) {
    let data = asset("bishop.csv");
    let rows: Vec<usize> = (0..883).collect();
    let (tr, val) = split_validation(&data.subset(&rows), 100.0 / 883.0, 9).unwrap();
    let val = val.unwrap();
    let opts = TrainOptions {
        stopping: Stopping::Early {
            patience: 2,
            max_epochs: 12,
        },
        hidden: vec![24, 16],
        components: 3,
        step: StepConfig {
            batch_size: 50,
            ..StepConfig::default()
        },
        ..TrainOptions::default()
    };
    let seeds = [3u64, 4, 5];
    let mut notes = Vec::new();
    let members = mdn::train::train_members(
        gpu,
        &tr,
        Some(&val),
        &opts,
        &seeds,
        &mut |_| true,
        &mut |n| notes.push(n.to_string()),
    )
    .unwrap()
    .expect("the GPU backend trains members together");
    assert_eq!(members.len(), 3);
    let mut epochs = Vec::new();
    for (member, &seed) in members.iter().zip(&seeds) {
        let single = train(
            &mut *gpu,
            &tr,
            Some(&val),
            &TrainOptions {
                seed,
                ..opts.clone()
            },
            &mut |_| true,
        )
        .unwrap();
        assert_eq!(member.params, single.params, "member of seed {seed}");
        let (a, b) = (
            member.training.as_ref().unwrap(),
            single.training.as_ref().unwrap(),
        );
        assert_eq!(a.history, b.history, "seed {seed}");
        assert_eq!(
            (a.best_epoch, a.stop_reason.as_str(), a.seed),
            (b.best_epoch, b.stop_reason.as_str(), seed)
        );
        epochs.push(a.epochs);
    }
    eprintln!("members' epochs: {epochs:?}; notes: {notes:?}");
}

#[test]
fn full_covariance_members_trained_together_are_the_single_runs_of_their_seeds() {
    // The full-covariance head with members: 3 targets, 2 members, 50 rows a batch, and
    // gradient-norm clipping tight enough to act (each member's norm from its own sums of
    // squares: on the fused path, its own workgroups' partial sums).
    let Some(mut gpu) = gpu_backend() else { return };
    let data = mdn::synth::generate(mdn::synth::Kind::Correlated, 600, 1);
    let (tr, val) = split_validation(&data, 0.15, 2).unwrap();
    let opts = TrainOptions {
        stopping: Stopping::Fixed { epochs: 3 },
        hidden: vec![16],
        components: 2,
        covariance: mdn::layout::Covariance::Full,
        step: StepConfig {
            batch_size: 50,
            clip_norm: 0.3,
            ..StepConfig::default()
        },
        ..TrainOptions::default()
    };
    let seeds = [8u64, 9];
    let members = mdn::train::train_members(
        gpu.as_mut(),
        &tr,
        val.as_ref(),
        &opts,
        &seeds,
        &mut |_| true,
        &mut |_| {},
    )
    .unwrap()
    .unwrap();
    for (member, &seed) in members.iter().zip(&seeds) {
        let single = train(
            gpu.as_mut(),
            &tr,
            val.as_ref(),
            &TrainOptions {
                seed,
                ..opts.clone()
            },
            &mut |_| true,
        )
        .unwrap();
        assert_eq!(member.params, single.params, "member of seed {seed}");
    }
}

#[test]
fn gpu_backends_made_and_dropped_on_several_threads_crashed_the_nvidia_driver() {
    // Regression (an NVIDIA H200, driver 580.159.04): each backend made its own Vulkan
    // instance, and dropping the last one unloaded the driver while the driver's own threads
    // still ran, so one test thread's GPU work segfaulted in 3 of 8 runs of the ensemble suite
    // (a jump into libnvidia-glcore after it was unmapped). One instance now lives as long as
    // the process. Here 8 threads each make, use and drop backends, and ask what `--device auto` picks (which lists the adapters).
    if gpu_backend().is_none() {
        return;
    }
    let c = common::random_case(2, &[8], mdn::layout::Activation::Relu, 2, 1, 50, 5);
    let want = CpuBackend::new()
        .forward(&c.arch, &c.params, &c.x, c.rows)
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..4 {
                    let mut gpu = gpu_backend().unwrap();
                    let got = gpu.forward(&c.arch, &c.params, &c.x, c.rows).unwrap();
                    mdn::check::FORWARD_TOL.assert_close("forward, 50 rows", &got, &want);
                    drop(gpu);
                    let _ = mdn::backend::auto_device();
                }
            });
        }
    });
}

#[test]
fn the_fused_step_is_two_dispatches_three_with_clipping_and_the_layered_path_many() {
    let Some(mut fused) = common::gpu() else {
        return;
    };
    let Some(mut layered) = common::gpu_backend_layered() else {
        return;
    };
    let c = common::random_case(1, &[64], mdn::layout::Activation::Relu, 5, 1, 600, 3);
    let val = common::random_case(1, &[64], mdn::layout::Activation::Relu, 5, 1, 50, 4);
    assert!(fused.fused_plan(&c.arch).is_some());
    for (clip, want) in [(0.0, 2.0), (0.5, 3.0)] {
        let cfg = StepConfig {
            batch_size: 256,
            clip_norm: clip,
            ..StepConfig::default()
        };
        let (_, _, d) = common::suite::three_epochs(&mut fused, &c, &val, &cfg);
        assert_eq!(d, Some(want), "fused, clip_norm {clip}");
        // config a's structure on the layered path: gather, 2 forward, head, loss sum, and
        // per layer 2 weight-gradient passes (3 more below the head), Adam: 13
        let (_, _, d) = common::suite::three_epochs(layered.as_mut(), &c, &val, &cfg);
        assert_eq!(d, Some(if clip > 0.0 { 14.0 } else { 13.0 }), "layered");
    }
}

#[test]
fn fused_tiles_of_any_size_train_as_the_cpu_does() {
    // Tiles of 1, 3 and 64 rows (the last tile of each batch partial), diagonal and full
    // covariance, relu and tanh, batches of 1, 50 and 783 (one batch of the whole data):
    // each follows the CPU's trajectory, and the same tiling twice gives the same bits.
    use mdn::layout::{Activation, Covariance};
    let mut cpu = CpuBackend::new();
    for (tile_rows, hidden, act, cov, batch) in [
        (1, vec![5, 7], Activation::Tanh, Covariance::Diagonal, 50),
        (3, vec![16, 8], Activation::Relu, Covariance::Full, 50),
        (64, vec![16, 8], Activation::Relu, Covariance::Diagonal, 783),
        (64, vec![33], Activation::Tanh, Covariance::Full, 1),
    ] {
        let Some(mut gpu) = common::gpu_with(mdn::backend::GpuOptions {
            tile_rows: Some(tile_rows),
            path: mdn::backend::GpuPath::Fused,
            ..Default::default()
        }) else {
            return;
        };
        let rows = if batch == 1 { 64 } else { 783 };
        let c = mdn::check::random_case_with(3, &hidden, act, 3, 3, rows, 7, cov);
        let val = mdn::check::random_case_with(3, &hidden, act, 3, 3, 50, 8, cov);
        let plan = gpu.fused_plan(&c.arch).expect("fits a tile");
        assert_eq!(plan.tile_rows, tile_rows);
        let cfg = StepConfig {
            batch_size: batch,
            l2: 1e-3,
            ..StepConfig::default()
        };
        let what = format!("{tile_rows}-row tiles, hidden {hidden:?}, {cov:?}, batch {batch}");
        let (want, want_p, _) = common::suite::three_epochs(&mut cpu, &c, &val, &cfg);
        let (got, got_p, d) = common::suite::three_epochs(&mut gpu, &c, &val, &cfg);
        assert_eq!(d, Some(2.0), "{what}");
        mdn::check::TRAJECTORY_TOL.assert_close(&format!("NLL, {what}"), &got, &want);
        Tolerance::new(1e-4, 1e-3).assert_close(&format!("parameters, {what}"), &got_p, &want_p);
        let (again, again_p, _) = common::suite::three_epochs(&mut gpu, &c, &val, &cfg);
        assert_eq!((got, got_p), (again, again_p), "same bits, {what}");
    }
}

/// The GPU backend on the fused path and on the looped path, with tiles of `tile_rows` rows.
fn fused_and_looped(
    tile_rows: usize,
) -> Option<(mdn::backend::GpuBackend, mdn::backend::GpuBackend)> {
    use mdn::backend::{GpuOptions, GpuPath};
    let with = |path| {
        common::gpu_with(GpuOptions {
            tile_rows: Some(tile_rows),
            path,
            ..Default::default()
        })
    };
    Some((with(GpuPath::Fused)?, with(GpuPath::Loop)?))
}

#[test]
fn looped_steps_give_the_fused_steps_bits() {
    // The looped step (one workgroup a network, many steps a dispatch) sums the same tiles in
    // the same order as fused_step + fused_grad, so without clipping it gives the same bits:
    // tiles of 1, 3 and 64 rows, batches of 1, 50 and 783 rows (one tile, several, a partial
    // last one), diagonal and full covariance, relu and tanh, Gaussian and Student's t.
    use mdn::layout::{Activation, Covariance, Family};
    for (tile_rows, hidden, act, cov, family, batch) in [
        (
            1,
            vec![5, 7],
            Activation::Tanh,
            Covariance::Diagonal,
            Family::Gaussian,
            50,
        ),
        (
            3,
            vec![16, 8],
            Activation::Relu,
            Covariance::Full,
            Family::Gaussian,
            50,
        ),
        (
            64,
            vec![16, 8],
            Activation::Relu,
            Covariance::Diagonal,
            Family::StudentT,
            783,
        ),
        (
            64,
            vec![33],
            Activation::Tanh,
            Covariance::Full,
            Family::StudentT,
            1,
        ),
    ] {
        let Some((mut fused, mut looped)) = fused_and_looped(tile_rows) else {
            return;
        };
        let rows = if batch == 1 { 64 } else { 783 };
        let case = |rows, seed| match family {
            Family::Gaussian => {
                mdn::check::random_case_with(3, &hidden, act, 3, 3, rows, seed, cov)
            }
            Family::StudentT => {
                mdn::check::random_student_case(3, &hidden, act, 3, 3, rows, seed, cov)
            }
        };
        let (c, val) = (case(rows, 7), case(50, 8));
        let cfg = StepConfig {
            batch_size: batch,
            l2: 1e-3,
            ..StepConfig::default()
        };
        let what =
            format!("{tile_rows}-row tiles, hidden {hidden:?}, {cov:?}, {family:?}, batch {batch}");
        let (want, want_p, d) = common::suite::three_epochs(&mut fused, &c, &val, &cfg);
        assert_eq!(d, Some(2.0), "fused, {what}");
        let (got, got_p, d) = common::suite::three_epochs(&mut looped, &c, &val, &cfg);
        // Many steps a dispatch: all of an epoch's (these steps are far below a dispatch's
        // flop budget), or on a CPU adapter as many as its barrier bound allows.
        let (d, steps) = (d.unwrap(), rows.div_ceil(batch) as f64);
        assert!(
            d <= 1.0 && d >= 1.0 / steps,
            "looped, {what}: {d} dispatches a step"
        );
        same_bits_or_close(&looped, (&want, &want_p), (&got, &got_p), &what);
    }
}

/// The looped step's trajectory and parameters against the fused step's: the same bits on a
/// CPU adapter (lavapipe compiles both kernels' shared arithmetic alike); on a hardware GPU
/// the same bits are expected too, but a driver may contract the two pipelines' multiply-adds
/// differently, so there a difference is reported and held to the CPU-parity tolerances.
fn same_bits_or_close(
    gpu: &mdn::backend::GpuBackend,
    (want, want_p): (&[f64], &[f32]),
    (got, got_p): (&[f64], &[f32]),
    what: &str,
) {
    if want == got && want_p == got_p {
        return;
    }
    let info = &gpu.gpu().info;
    assert!(
        info.device_type != wgpu::DeviceType::Cpu,
        "looped and fused steps differ on {}, {what}",
        info.name
    );
    eprintln!(
        "NOTE: looped and fused steps are not the same bits on {}, {what}",
        info.name
    );
    mdn::check::TRAJECTORY_TOL.assert_close(&format!("NLL, {what}"), got, want);
    Tolerance::new(1e-4, 1e-3).assert_close(&format!("parameters, {what}"), got_p, want_p);
}

#[test]
fn a_looped_dispatch_of_many_barriers_lost_its_last_steps_on_lavapipe() {
    // Regression: lavapipe (Mesa 22.3.6) stopped a workgroup after about 2,000 barriers in
    // one dispatch, so with one-row tiles (10 barriers a tile, 50 tiles a step) only the
    // first 4 of an epoch's 16 steps ran (here: 20 tiles a step, 9 of 40): the later steps'
    // loss sums stayed 0 and their updates were lost, with no error. So did the shipped example's network (one tile a
    // step) after 100-110 steps. On a CPU adapter a dispatch now passes at most
    // `CPU_LOOP_MAX_BARRIERS`; the epochs give the fused step's bits.
    use mdn::layout::Activation;
    for (tile_rows, inputs, hidden, k, d, rows, batch) in [
        (1, 3, vec![5, 7], 3, 3, 800, 20),
        (64, 1, vec![64], 5, 1, 3600, 32),
    ] {
        let Some((mut fused, mut looped)) = fused_and_looped(tile_rows) else {
            return;
        };
        let c = common::random_case(inputs, &hidden, Activation::Tanh, k, d, rows, 7);
        let val = common::random_case(inputs, &hidden, Activation::Tanh, k, d, 50, 8);
        let cfg = StepConfig {
            batch_size: batch,
            ..StepConfig::default()
        };
        let what = format!("hidden {hidden:?}, {tile_rows}-row tiles, batch {batch}");
        let (want, want_p, _) = common::suite::three_epochs(&mut fused, &c, &val, &cfg);
        let (got, got_p, d) = common::suite::three_epochs(&mut looped, &c, &val, &cfg);
        assert!(d.unwrap() < 1.0, "looped, {what}: {d:?}");
        same_bits_or_close(&looped, (&want, &want_p), (&got, &got_p), &what);
    }
}

#[test]
fn lost_looped_steps_are_an_error_not_a_silent_model() {
    // With lavapipe's bound lifted (`MDN_GPU_LOOP_BARRIERS=0`), the steps it drops leave
    // their loss sums at 0, and the epoch is an error naming the looped step. A GPU without
    // the bug trains the same epoch.
    use mdn::backend::{DataRef, GpuOptions, GpuPath};
    let Some(mut unbounded) = common::gpu_with(GpuOptions {
        tile_rows: Some(1),
        path: GpuPath::Loop,
        loop_barriers: Some(0),
        ..Default::default()
    }) else {
        return;
    };
    let cpu_adapter = unbounded.gpu().info.device_type == wgpu::DeviceType::Cpu;
    let c = common::random_case(3, &[5, 7], mdn::layout::Activation::Tanh, 3, 3, 800, 7);
    let mut run = unbounded
        .start(
            &c.arch,
            &c.params,
            DataRef {
                x: &c.x,
                y: &c.y,
                rows: c.rows,
            },
            None,
        )
        .unwrap();
    let order: Vec<u32> = (0..c.rows as u32).collect();
    let cfg = StepConfig {
        batch_size: 20,
        ..StepConfig::default()
    };
    match run.train_epoch(&order, &cfg) {
        Err(e) if cpu_adapter => {
            let e = e.to_string();
            assert!(
                e.contains("looped training step lost") && e.contains("MDN_GPU_PATH=fused"),
                "{e}"
            );
        }
        Ok(s) if !cpu_adapter => assert!(s.finite),
        other => panic!(
            "CPU adapter {cpu_adapter}: {:?}",
            other.map(|s| s.train_nll)
        ),
    }
}

#[test]
fn looped_steps_clip_the_gradient_as_the_cpu_does() {
    // With clipping the looped step sums the squares in its own order (per invocation, then
    // a tree): it follows the CPU's trajectory.
    let Some(mut looped) = common::gpu_with(mdn::backend::GpuOptions {
        path: mdn::backend::GpuPath::Loop,
        ..Default::default()
    }) else {
        return;
    };
    common::suite::clipping(&mut looped);
}

#[test]
fn batches_of_one_tile_take_the_looped_step_by_default_on_a_gpu() {
    // The default path: on a GPU a batch of one tile loops (one dispatch for an epoch's
    // steps) and a larger batch takes the fused step's two dispatches; a CPU adapter
    // (lavapipe) takes the fused step for both.
    let Some(mut gpu) = common::gpu() else {
        return;
    };
    let c = common::random_case(1, &[16], mdn::layout::Activation::Tanh, 3, 1, 300, 3);
    let val = common::random_case(1, &[16], mdn::layout::Activation::Tanh, 3, 1, 50, 4);
    let tile = gpu.fused_plan(&c.arch).expect("fits a tile").tile_rows;
    let loops = gpu.tiling().loop_max_tiles > 0;
    let cpu = gpu.gpu().info.device_type == wgpu::DeviceType::Cpu;
    assert_eq!(loops, !cpu, "{:?}", gpu.tiling());
    let one_tile = if loops {
        1.0 / 300usize.div_ceil(tile) as f64
    } else {
        2.0
    };
    for (batch, want) in [(tile, one_tile), (tile + 1, 2.0)] {
        let cfg = StepConfig {
            batch_size: batch,
            ..StepConfig::default()
        };
        let (_, _, d) = common::suite::three_epochs(&mut gpu, &c, &val, &cfg);
        assert_eq!(d, Some(want), "batch {batch}, tiles of {tile} rows");
    }
}

#[test]
fn models_too_wide_for_a_tile_train_on_the_layered_path() {
    // 3,200 hidden units need more than 12 KiB a row: not even 4 rows fit 32 KiB of
    // workgroup memory (lavapipe's) or the 48 KiB the fused step declares at most (NVIDIA's),
    // so the model takes the layered path and still follows the CPU.
    let Some(mut gpu) = common::gpu() else {
        return;
    };
    let c = common::random_case(2, &[3200], mdn::layout::Activation::Relu, 2, 1, 40, 5);
    let val = common::random_case(2, &[3200], mdn::layout::Activation::Relu, 2, 1, 10, 6);
    assert_eq!(gpu.fused_plan(&c.arch), None);
    let cfg = StepConfig {
        batch_size: 16,
        ..StepConfig::default()
    };
    let (want, want_p, _) = common::suite::three_epochs(&mut CpuBackend::new(), &c, &val, &cfg);
    let (got, got_p, d) = common::suite::three_epochs(&mut gpu, &c, &val, &cfg);
    assert!(d.unwrap() > 3.0, "layered dispatches: {d:?}");
    mdn::check::TRAJECTORY_TOL.assert_close("NLL, layered fallback", &got, &want);
    Tolerance::new(1e-4, 1e-3).assert_close("parameters, layered fallback", &got_p, &want_p);
}

#[test]
fn fused_validation_in_several_chunks_matches_the_cpu() {
    // The fused validation pass sums tiles chunk by chunk (work rows x tile rows a chunk):
    // with 2-row tiles and 1,024 work rows, 5,000 validation rows are chunks of 2,048,
    // 2,048 and 904 rows (the last partial, and 904 fills no workgroup).
    let Some(mut gpu) = common::gpu_with(mdn::backend::GpuOptions {
        tile_rows: Some(2),
        path: mdn::backend::GpuPath::Fused,
        ..Default::default()
    }) else {
        return;
    };
    let c = common::random_case(2, &[8], mdn::layout::Activation::Tanh, 3, 2, 300, 21);
    let val = common::random_case(2, &[8], mdn::layout::Activation::Tanh, 3, 2, 5000, 22);
    let cfg = StepConfig {
        batch_size: 64,
        ..StepConfig::default()
    };
    let (want, _, _) = common::suite::three_epochs(&mut CpuBackend::new(), &c, &val, &cfg);
    let (got, _, d) = common::suite::three_epochs(&mut gpu, &c, &val, &cfg);
    assert_eq!(d, Some(2.0));
    mdn::check::TRAJECTORY_TOL.assert_close("train and validation NLL", &got, &want);
}

/// A process that trains many models (`--group-by`, `mdn select`, the Python package's fits,
/// a service worker) opened a device and compiled every kernel for each: 1-1.5 s a model on
/// lavapipe. A dropped backend's device now waits idle for the next backend of the same
/// adapter and options; a lost one is closed.
#[test]
fn a_process_opened_a_device_and_compiled_every_kernel_for_each_model() {
    use std::sync::Arc;
    // Options no other test uses, so that no other test takes this test's idle device.
    let options = mdn::backend::GpuOptions {
        tile_rows: Some(7),
        ..Default::default()
    };
    let Some(mut first) = common::gpu_with(options) else {
        return;
    };
    let c = common::random_case(2, &[8], mdn::layout::Activation::Relu, 2, 1, 100, 3);
    let order: Vec<u32> = (0..100).collect();
    let cfg = StepConfig {
        batch_size: 30,
        ..StepConfig::default()
    };
    let epoch = |b: &mut mdn::backend::GpuBackend| {
        let data = mdn::backend::DataRef {
            x: &c.x,
            y: &c.y,
            rows: 100,
        };
        let mut run = b.start(&c.arch, &c.params, data, None).unwrap();
        run.train_epoch(&order, &cfg).unwrap();
        run.current_params().unwrap()
    };
    let trained = epoch(&mut first);
    let device = first.gpu().readback_counter();
    drop(first);
    let mut second = common::gpu_with(options).unwrap();
    assert!(
        Arc::ptr_eq(&device, &second.gpu().readback_counter()),
        "the idle device was not reused"
    );
    assert_eq!(
        epoch(&mut second),
        trained,
        "a reused device trains to other bits"
    );
    // A backend opened while another is open has a device of its own.
    let third = common::gpu_with(options).unwrap();
    let third_device = third.gpu().readback_counter();
    assert!(!Arc::ptr_eq(&device, &third_device));
    // A lost device is closed, not kept for the next backend.
    second.gpu().device.destroy();
    drop(second);
    drop(third);
    let fourth = common::gpu_with(options).unwrap();
    assert!(!Arc::ptr_eq(&device, &fourth.gpu().readback_counter()));
    assert!(Arc::ptr_eq(&third_device, &fourth.gpu().readback_counter()));
}

#[test]
fn packed_members_are_the_single_runs_of_their_own_rows() {
    // One model per group: four networks of one shape, each on rows of its own (1, 3, 50
    // and 783 training rows, 1, 7, 50 and 120 validation rows: sizes that fill no workgroup
    // and a member whose rows run out after one step while another takes 16), trained
    // together in the same dispatches. Each member's epochs must be the bits of that network
    // alone on its rows with the same row orders and learning rate: statistics, parameters,
    // Adam moments and step count. One member sits the third epoch out; a snapshot and
    // restore in the middle must give the members back their own step counts. Diagonal and
    // full covariance, one tile a batch and several. Third: gradient-norm clipping (a norm
    // small enough that every step clips), and tiles of 2 rows, so that a validation pass is
    // two chunks of 2,048 rows for the member with 2,500 validation rows while the others'
    // rows end in the first (regression: both were untested in packed runs).
    use mdn::backend::{DataRef, GpuOptions, GpuPath};
    use mdn::check::{Case, random_case_with};
    use mdn::layout::{Activation, Covariance};
    let small = [(1, 1), (3, 7), (50, 50), (783, 120)];
    let long_val = [(5, 2500), (40, 3), (300, 700), (2, 1)];
    for (tile_rows, batch, cov, d, sizes, clip_norm) in [
        (None, 32, Covariance::Diagonal, 2, small, 0.0),
        (Some(16), 50, Covariance::Full, 3, small, 0.0),
        (Some(2), 16, Covariance::Diagonal, 1, long_val, 0.05),
    ] {
        let Some(mut gpu) = common::gpu_with(GpuOptions {
            path: GpuPath::Loop,
            tile_rows,
            ..Default::default()
        }) else {
            return;
        };
        let what = format!("{cov:?}, batch {batch}, clip_norm {clip_norm}");
        let case =
            |rows, seed| random_case_with(3, &[9, 6], Activation::Tanh, 3, d, rows, seed, cov);
        let members: Vec<(Case, Case)> = sizes
            .iter()
            .enumerate()
            .map(|(m, &(t, v))| (case(t, 10 + m as u64), case(v, 20 + m as u64)))
            .collect();
        let arch = members[0].0.arch.clone();
        assert!(members.iter().all(|(c, _)| c.arch == arch));
        fn data(c: &Case) -> DataRef<'_> {
            DataRef {
                x: &c.x,
                y: &c.y,
                rows: c.rows,
            }
        }
        // Epoch e's order of member m's rows: a rotation, reversed on odd epochs.
        let order = |rows: usize, e: usize| -> Vec<u32> {
            let mut o: Vec<u32> = (0..rows as u32)
                .map(|i| (i + e as u32 * 7) % rows as u32)
                .collect();
            if e % 2 == 1 {
                o.reverse();
            }
            o
        };
        let lrs = [1e-3f32, 3e-3, 2e-3, 5e-3];
        let cfg = StepConfig {
            batch_size: batch,
            l2: 1e-4,
            clip_norm,
            ..StepConfig::default()
        };
        let sits_out = |m: usize, e: usize| m == 1 && e == 2;
        // Each member alone.
        let mut want = Vec::new();
        for (m, (t, v)) in members.iter().enumerate() {
            let mut run = gpu.start(&arch, &t.params, data(t), Some(data(v))).unwrap();
            let mut stats = Vec::new();
            for e in (0..3).filter(|&e| !sits_out(m, e)) {
                let s = run
                    .train_epoch(&order(t.rows, e), &StepConfig { lr: lrs[m], ..cfg })
                    .unwrap();
                stats.push((e, s));
            }
            want.push((stats, run.save_state().unwrap()));
        }
        if clip_norm > 0.0 {
            // The norm is small enough to clip: without it, the member trains otherwise.
            let (t, v) = &members[2];
            let mut run = gpu.start(&arch, &t.params, data(t), Some(data(v))).unwrap();
            let free = StepConfig {
                lr: lrs[2],
                clip_norm: 0.0,
                ..cfg
            };
            for e in 0..3 {
                run.train_epoch(&order(t.rows, e), &free).unwrap();
            }
            assert_ne!(
                run.save_state().unwrap().params,
                want[2].1.params,
                "{what}: nothing clipped"
            );
        }
        // Together.
        let params: Vec<Vec<f32>> = members.iter().map(|(t, _)| t.params.clone()).collect();
        let train: Vec<DataRef> = members.iter().map(|(t, _)| data(t)).collect();
        let val: Vec<DataRef> = members.iter().map(|(_, v)| data(v)).collect();
        let mut run = gpu
            .start_packed(&arch, &params, &train, Some(&val))
            .unwrap()
            .expect("the GPU backend packs members on the looped step");
        let mut got: Vec<Vec<(usize, mdn::backend::EpochStats)>> = vec![Vec::new(); 4];
        for e in 0..3 {
            let orders: Vec<u32> = members.iter().flat_map(|(t, _)| order(t.rows, e)).collect();
            let active: Vec<bool> = (0..4).map(|m| !sits_out(m, e)).collect();
            if e == 1 {
                // An epoch run, undone and run again: the same as running it once.
                run.snapshot().unwrap();
                run.train_epoch(&orders, &cfg, &lrs, &active).unwrap();
                run.restore().unwrap();
            }
            let stats = run.train_epoch(&orders, &cfg, &lrs, &active).unwrap();
            for (m, s) in stats.into_iter().enumerate().filter(|(m, _)| active[*m]) {
                got[m].push((e, s));
            }
        }
        let states = run.save_state().unwrap();
        drop(run);
        for (m, ((stats, state), (got_stats, got_state))) in
            want.iter().zip(got.iter().zip(&states)).enumerate()
        {
            let rows = sizes[m].0;
            assert_eq!(got_stats, stats, "member {m} ({rows} rows), {what}: epochs");
            assert_eq!(
                got_state.adam.step, state.adam.step,
                "member {m}, {what}: Adam steps"
            );
            assert_eq!(
                got_state.params, state.params,
                "member {m}, {what}: parameters"
            );
            assert_eq!(
                (&got_state.adam.m, &got_state.adam.v),
                (&state.adam.m, &state.adam.v),
                "member {m}, {what}: Adam moments"
            );
        }
        eprintln!(
            "{what}: steps {:?}",
            states.iter().map(|s| s.adam.step).collect::<Vec<_>>()
        );
        // The mistakes.
        let bad = |r: mdn::error::Result<Option<Box<dyn mdn::backend::MembersRun + '_>>>| {
            r.err().map(|e| e.to_string()).unwrap_or_default()
        };
        let e = bad(gpu.start_packed(&arch, &params, &train[..3], Some(&val)));
        assert!(
            e.contains("needs each member's training and validation rows"),
            "{e}"
        );
        let empty = DataRef {
            x: &[],
            y: &[],
            rows: 0,
        };
        let mut with_empty = val.clone();
        with_empty[2] = empty;
        let e = bad(gpu.start_packed(&arch, &params, &train, Some(&with_empty)));
        assert!(
            e.contains("member 2 of a packed run has no validation rows"),
            "{e}"
        );
        // One member's rows too long and another's too short add up to the right total.
        let (mut long, mut short) = (members[1].0.x.clone(), members[2].0.x.clone());
        long.extend_from_slice(&short[..3]);
        short.truncate(short.len() - 3);
        let mut shifted = train.clone();
        shifted[1] = DataRef {
            x: &long,
            ..train[1]
        };
        shifted[2] = DataRef {
            x: &short,
            ..train[2]
        };
        let e = bad(gpu.start_packed(&arch, &params, &shifted, Some(&val)));
        assert!(e.contains("member 1's training buffers"), "{e}");
        let mut uneven = params.clone();
        uneven[3].pop();
        let e = bad(gpu.start_packed(&arch, &uneven, &train, Some(&val)));
        assert!(e.contains("member 3 of a packed run has"), "{e}");
    }
    // The CPU backend has no packed runs (its groups train side by side on threads).
    let c = mdn::check::random_case(1, &[4], Activation::Tanh, 2, 1, 5, 1);
    let d = DataRef {
        x: &c.x,
        y: &c.y,
        rows: c.rows,
    };
    assert!(
        CpuBackend::new()
            .start_packed(&c.arch, std::slice::from_ref(&c.params), &[d], None)
            .unwrap()
            .is_none()
    );
}

#[test]
fn packed_groups_train_as_each_group_alone() {
    // train_packed: three groups of the shipped example's rows (60, 150 and 400), each with
    // its own validation rows, seed and stopping (one stops early, one runs out its own
    // epoch limit, one runs a fixed number of epochs), trained together on the looped step. Each group's
    // model must be, to the bit, what `train` gives on its rows alone: parameters, history,
    // best and saved epoch, why it stopped.
    use mdn::train::{PackedGroup, train_packed};
    let Some(mut gpu) = common::gpu_with(mdn::backend::GpuOptions {
        path: mdn::backend::GpuPath::Loop,
        ..Default::default()
    }) else {
        return;
    };
    let data = asset("bishop.csv");
    let parts = [(0, 60), (60, 210), (210, 610)];
    let splits: Vec<(Dataset, Dataset)> = parts
        .iter()
        .map(|&(a, b)| {
            let rows: Vec<usize> = (a..b).collect();
            let (tr, val) = split_validation(&data.subset(&rows), 0.25, 5).unwrap();
            (tr, val.unwrap())
        })
        .collect();
    let base = TrainOptions {
        hidden: vec![16],
        components: 3,
        step: StepConfig {
            batch_size: 32,
            lr: 0.02,
            ..StepConfig::default()
        },
        ..TrainOptions::default()
    };
    let stopping = [
        Stopping::Early {
            patience: 2,
            max_epochs: 60,
        },
        Stopping::Fixed { epochs: 7 },
        Stopping::Early {
            patience: 4,
            max_epochs: 12,
        },
    ];
    let groups: Vec<PackedGroup> = splits
        .iter()
        .zip(stopping)
        .enumerate()
        .map(|(i, ((tr, val), stopping))| PackedGroup {
            train: tr,
            val: Some(val),
            opts: TrainOptions {
                seed: 11 + i as u64,
                stopping,
                ..base.clone()
            },
        })
        .collect();
    let mut epochs_heard = 0;
    let models = train_packed(&mut gpu, &groups, &mut |e| {
        epochs_heard += matches!(e, mdn::train::TrainEvent::Epoch(_)) as usize;
        true
    })
    .unwrap()
    .expect("the GPU backend packs groups");
    let mut ran = Vec::new();
    for (g, model) in groups.iter().zip(&models) {
        let alone = train(&mut gpu, g.train, g.val, &g.opts, &mut |_| true).unwrap();
        let what = format!("group of {} rows", g.train.rows);
        assert_eq!(model.params, alone.params, "{what}");
        let (a, b) = (
            model.training.as_ref().unwrap(),
            alone.training.as_ref().unwrap(),
        );
        assert_eq!(a.history, b.history, "{what}");
        assert_eq!(
            (
                a.epochs,
                a.saved_epoch,
                a.best_epoch,
                a.stop_reason.as_str()
            ),
            (
                b.epochs,
                b.saved_epoch,
                b.best_epoch,
                b.stop_reason.as_str()
            ),
            "{what}"
        );
        assert_eq!(
            (a.seed, a.train_rows, a.val_rows),
            (b.seed, b.train_rows, b.val_rows)
        );
        assert_eq!(model.x_scaler, alone.x_scaler, "{what}");
        ran.push((a.epochs, a.stop_reason.clone()));
    }
    assert_eq!(
        epochs_heard,
        ran.iter().map(|r| r.0).max().unwrap(),
        "{ran:?}"
    );
    eprintln!("groups' epochs and stops: {ran:?}");
    // Groups that cannot share a run.
    let mut other = TrainOptions {
        step: StepConfig {
            batch_size: 64,
            ..base.step
        },
        ..base.clone()
    };
    let two = |opts: &TrainOptions| {
        vec![
            PackedGroup {
                train: &splits[0].0,
                val: Some(&splits[0].1),
                opts: base.clone(),
            },
            PackedGroup {
                train: &splits[1].0,
                val: Some(&splits[1].1),
                opts: opts.clone(),
            },
        ]
    };
    let e = train_packed(&mut gpu, &two(&other), &mut |_| true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("take their steps alike"), "{e}");
    other = TrainOptions {
        components: 2,
        ..base.clone()
    };
    let e = train_packed(&mut gpu, &two(&other), &mut |_| true)
        .err()
        .unwrap();
    assert!(e.to_string().contains("have one shape"), "{e}");
    // The CPU backend has no packed runs.
    assert!(
        train_packed(&mut CpuBackend::new(), &two(&base), &mut |_| true)
            .unwrap()
            .is_none()
    );
}

#[test]
fn more_groups_than_a_packed_run_holds_train_in_several_runs() {
    // 130 groups: a run of MOST_PACKED (128), then a run of 2; every group's model is still
    // what it gives alone (checked for the first and the last).
    use mdn::train::{MOST_PACKED, PackedGroup, train_packed};
    let Some(mut gpu) = common::gpu_with(mdn::backend::GpuOptions {
        path: mdn::backend::GpuPath::Loop,
        ..Default::default()
    }) else {
        return;
    };
    let data = asset("bishop.csv");
    let n = MOST_PACKED + 2;
    let sets: Vec<Dataset> = (0..n)
        .map(|g| {
            let first = (g * 29) % (data.rows - 40);
            data.subset(&(first..first + 40).collect::<Vec<_>>())
        })
        .collect();
    let opts = |g: usize| TrainOptions {
        hidden: vec![4],
        components: 1,
        seed: g as u64,
        stopping: Stopping::Fixed { epochs: 2 },
        step: StepConfig {
            batch_size: 16,
            ..StepConfig::default()
        },
        ..TrainOptions::default()
    };
    let groups: Vec<PackedGroup> = sets
        .iter()
        .enumerate()
        .map(|(g, d)| PackedGroup {
            train: d,
            val: None,
            opts: opts(g),
        })
        .collect();
    let mut epochs = 0;
    let models = train_packed(&mut gpu, &groups, &mut |e| {
        epochs += matches!(e, mdn::train::TrainEvent::Epoch(_)) as usize;
        true
    })
    .unwrap()
    .unwrap();
    assert_eq!((models.len(), epochs), (n, 4), "two runs of two epochs");
    for g in [0, n - 1] {
        let alone = train(&mut gpu, &sets[g], None, &opts(g), &mut |_| true).unwrap();
        assert_eq!(models[g].params, alone.params, "group {g}");
    }
    // Stopped (Ctrl-C) in the first run: its groups keep their first epoch, and the groups
    // of the second run are not trained.
    let models = train_packed(&mut gpu, &groups, &mut |_| false)
        .unwrap()
        .unwrap();
    assert_eq!(models.len(), MOST_PACKED);
    let info = models[0].training.as_ref().unwrap();
    assert_eq!((info.epochs, info.stop_reason.as_str()), (1, "interrupted"));
}
