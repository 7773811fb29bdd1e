//! Streamed training: the same model as in memory when the shuffle is the same (CPU and GPU,
//! with device chunks much smaller than the data), quality on a sorted file, the validation
//! split, and stopping midway.

mod common;

use std::path::Path;

use mdn::backend::{Backend, CpuBackend, StepConfig};
use mdn::data::{ColumnChoice, Dataset, NpySource, TableWriter, read_data};
use mdn::model::Model;
use mdn::train::{
    Stopping, StreamOptions, TrainEvent, TrainOptions, ValidationSplit, split_validation, train,
    train_stream,
};

fn asset(name: &str) -> Dataset {
    read_data(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(name),
        &ColumnChoice::Default,
    )
    .unwrap()
}

fn opts(epochs: usize, batch: usize) -> TrainOptions {
    TrainOptions {
        stopping: Stopping::Fixed { epochs },
        step: StepConfig {
            batch_size: batch,
            ..StepConfig::default()
        },
        ..TrainOptions::default()
    }
}

/// One chunk holding every row and a window of one chunk: the same row order as in memory.
fn whole(val_fraction: f64) -> StreamOptions {
    StreamOptions {
        chunk_rows: 1 << 30,
        window_chunks: 1,
        max_val_rows: 1 << 30,
        val_fraction,
        device_chunk_rows: None,
    }
}

fn mean_nll(m: &Model, d: &Dataset) -> f64 {
    let ll = m.loglik(&mut CpuBackend::new(), d).unwrap();
    -ll.iter().sum::<f64>() / ll.len() as f64
}

#[test]
fn streamed_equals_in_memory_on_the_cpu() {
    let data = asset("bishop.csv");
    let o = opts(3, 128);
    let (tr, val) = split_validation(&data, 0.1, o.seed).unwrap();
    let a = train(&mut CpuBackend::new(), &tr, val.as_ref(), &o, &mut |_| true).unwrap();
    let mut source = data.clone();
    let b = train_stream(
        &mut CpuBackend::new(),
        &mut source,
        None,
        &whole(0.1),
        &o,
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(a.x_scaler, b.x_scaler);
    assert_eq!(a.y_scaler, b.y_scaler);
    assert_eq!(
        a.training.as_ref().unwrap().train_rows,
        b.training.as_ref().unwrap().train_rows
    );
    assert_eq!(
        a.training.as_ref().unwrap().history,
        b.training.as_ref().unwrap().history
    );
    assert_eq!(a.params, b.params, "streamed and in-memory models differ");
    assert_eq!(
        a.training.as_ref().unwrap().history,
        b.training.as_ref().unwrap().history
    );
}

#[test]
fn streamed_from_npy_equals_in_memory_on_the_gpu_with_small_device_chunks() {
    let Some(mut gpu) = common::gpu_backend() else {
        return;
    };
    streamed_from_npy_equals_in_memory(gpu.as_mut());
}

#[test]
fn the_looped_step_streams_as_it_trains_in_memory() {
    // The looped step reads each chunk buffer through its own bind group, steps from the
    // chunk's records.
    let Some(mut gpu) = common::gpu_with(mdn::backend::GpuOptions {
        path: mdn::backend::GpuPath::Loop,
        ..Default::default()
    }) else {
        return;
    };
    streamed_from_npy_equals_in_memory(&mut gpu);
}

/// The bishop data streamed from a `.npy` file 512 rows at a time trains the model the
/// in-memory run on `gpu` trains.
fn streamed_from_npy_equals_in_memory(gpu: &mut dyn mdn::backend::Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = asset("bishop.csv");
    let path = dir.path().join("b.npy");
    let mut w = TableWriter::create(&path, &["x".to_string(), "t".to_string()]).unwrap();
    let rows: Vec<f32> = data
        .x
        .iter()
        .zip(&data.y)
        .flat_map(|(&x, &y)| [x, y])
        .collect();
    w.write_rows(&rows).unwrap();
    w.finish().unwrap();
    let o = opts(2, 64);
    let (tr, val) = split_validation(&data, 0.1, o.seed).unwrap();
    let a = train(gpu, &tr, val.as_ref(), &o, &mut |_| true).unwrap();
    // The GPU receives the epoch 512 rows at a time, alternating between its two chunk buffers.
    let mut source = NpySource::open(&path, &ColumnChoice::Default).unwrap();
    let s = StreamOptions {
        device_chunk_rows: Some(512),
        ..whole(0.1)
    };
    let b = train_stream(gpu, &mut source, None, &s, &o, &mut |_| true).unwrap();
    assert_eq!(
        a.params, b.params,
        "streamed and in-memory GPU models differ"
    );
}

#[test]
fn full_covariance_streams_like_in_memory_on_cpu_and_gpu() {
    let data = mdn::synth::generate(mdn::synth::Kind::Correlated, 3000, 1);
    let o = TrainOptions {
        covariance: mdn::layout::Covariance::Full,
        components: 2,
        ..opts(2, 64)
    };
    let (tr, val) = split_validation(&data, 0.1, o.seed).unwrap();
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new())];
    backends.extend(common::gpu_backend());
    for mut b in backends {
        let a = train(b.as_mut(), &tr, val.as_ref(), &o, &mut |_| true).unwrap();
        let s = StreamOptions {
            device_chunk_rows: Some(512),
            ..whole(0.1)
        };
        let mut source = data.clone();
        let c = train_stream(b.as_mut(), &mut source, None, &s, &o, &mut |_| true).unwrap();
        assert_eq!(a.arch.covariance, mdn::layout::Covariance::Full);
        assert_eq!(
            a.params,
            c.params,
            "{}: streamed and in-memory differ",
            b.name()
        );
    }
}

#[test]
fn a_sorted_file_streams_to_the_quality_of_a_shuffled_run() {
    // The worst case for chunked shuffling: rows sorted by x, so each chunk covers a narrow
    // slice of the input range. Chunk order is shuffled every epoch and rows are shuffled
    // within windows of 4 chunks (8% of the data). The gap is a random quantity: over seeds
    // 0..3 and 1..16 CPU threads it ranged from 0.04 to 0.17 nats, mean 0.09 (one seed at
    // 16 threads, on a real GPU machine, broke an earlier one-run bound of 0.1). The
    // threads are pinned so that the outcome does not depend on the machine's cores.
    let mut data = mdn::synth::bishop(20_000, 5);
    let mut idx: Vec<usize> = (0..data.rows).collect();
    idx.sort_by(|&a, &b| data.x[a].total_cmp(&data.x[b]));
    data = data.subset(&idx);
    let test = asset("bishop_test.csv");
    let mut gaps = Vec::new();
    for seed in 0..3 {
        let o = TrainOptions {
            stopping: Stopping::Early {
                patience: 10,
                max_epochs: 60,
            },
            seed,
            ..TrainOptions::default()
        };
        let (tr, val) = split_validation(&data, 0.1, o.seed).unwrap();
        let cpu = || CpuBackend::with_threads(2);
        let shuffled = train(&mut cpu(), &tr, val.as_ref(), &o, &mut |_| true).unwrap();
        let s = StreamOptions {
            chunk_rows: 400,
            window_chunks: 4,
            max_val_rows: 1 << 30,
            val_fraction: 0.1,
            device_chunk_rows: None,
        };
        let streamed =
            train_stream(&mut cpu(), &mut data.clone(), None, &s, &o, &mut |_| true).unwrap();
        let (a, b) = (mean_nll(&shuffled, &test), mean_nll(&streamed, &test));
        assert!(b < -0.95, "seed {seed}: streamed model's held-out NLL {b}");
        gaps.push(b - a);
    }
    // Stated in docs/training.md (large data sets): on average within 0.12 nats per row of the fully shuffled run,
    // never worse than 0.2.
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(
        mean < 0.12 && gaps.iter().all(|g| *g < 0.2),
        "held-out NLL gaps, streamed from a sorted file minus fully shuffled: {gaps:?}"
    );
}

#[test]
fn validation_rows_are_held_out_and_capped() {
    let data = mdn::synth::bishop(10_000, 1);
    let o = opts(1, 64);
    let s = StreamOptions {
        chunk_rows: 1000,
        window_chunks: 2,
        max_val_rows: 300,
        val_fraction: 0.1,
        device_chunk_rows: None,
    };
    let m = train_stream(
        &mut CpuBackend::new(),
        &mut data.clone(),
        None,
        &s,
        &o,
        &mut |_| true,
    )
    .unwrap();
    let info = m.training.unwrap();
    // 10% would be 1000 rows; the cap holds out 300 and trains on every other row.
    assert_eq!(info.val_rows, 300);
    assert_eq!(info.train_rows + info.val_rows, 10_000);
    let split = ValidationSplit::new(o.seed, 300.0 / 10_000.0, 10_000);
    let expected_val = (0..10_000u64).filter(|&r| split.contains(r)).count();
    assert_eq!(info.val_rows, expected_val);
}

#[test]
fn stopping_midway_keeps_the_last_completed_epoch() {
    let data = mdn::synth::bishop(8_000, 2);
    let o = opts(5, 64);
    let s = StreamOptions {
        chunk_rows: 500,
        window_chunks: 2,
        max_val_rows: 1 << 30,
        val_fraction: 0.1,
        device_chunk_rows: None,
    };
    let mut be = CpuBackend::new();
    let m = train_stream(
        &mut be,
        &mut data.clone(),
        None,
        &s,
        &o,
        &mut |e| !matches!(e, TrainEvent::Rows { epoch: 2, done, .. } if *done > 3000),
    )
    .unwrap();
    let info = m.training.as_ref().unwrap();
    assert_eq!(
        (info.epochs, info.saved_epoch, info.stop_reason.as_str()),
        (1, 1, "interrupted")
    );
    // Stopping while reading the data writes nothing.
    let err = train_stream(&mut be, &mut data.clone(), None, &s, &o, &mut |e| {
        !matches!(e, TrainEvent::Rows { epoch: 0, .. })
    })
    .unwrap_err();
    assert!(err.to_string().contains("no model was written"), "{err}");
    assert_eq!(err.exit_code(), 130);
    // Progress reports rows within each epoch, up to the epoch's training rows.
    let mut last = (0, 0);
    train_stream(
        &mut be,
        &mut data.clone(),
        None,
        &s,
        &opts(1, 64),
        &mut |e| {
            if let TrainEvent::Rows {
                epoch: 1,
                done,
                total,
            } = e
            {
                assert!(*done >= last.0 && done <= total);
                last = (*done, *total);
            }
            true
        },
    )
    .unwrap();
    assert!(last.0 > 0 && last.0 <= last.1);
    let _ = be.name();
}

#[test]
fn val_fraction_held_out_a_random_number_of_rows() {
    // Regression: each row was held out on its own with probability --val-fraction, so 2,000
    // rows at 0.1 held out anywhere from 174 to 217 depending on the seed. Now exactly
    // round(fraction * rows), the same rows in memory and streamed.
    for (rows, fraction, expected) in [
        (2000usize, 0.1, 200usize),
        (40, 0.5, 20),
        (783, 0.1, 78),
        (3, 0.5, 2),
        (1, 0.4, 0),
    ] {
        for seed in 0..4 {
            let split = ValidationSplit::new(seed, fraction, rows);
            let held = (0..rows as u64).filter(|&r| split.contains(r)).count();
            assert_eq!(held, expected, "{rows} rows at {fraction}, seed {seed}");
        }
    }
    let data = mdn::synth::bishop(50, 1);
    let (tr, val) = split_validation(&data, 0.1, 3).unwrap();
    assert_eq!((tr.rows, val.unwrap().rows), (45, 5));
    // Different seeds hold out different rows.
    let rows = |seed| {
        let s = ValidationSplit::new(seed, 0.1, 2000);
        (0..2000u64).filter(|&r| s.contains(r)).collect::<Vec<_>>()
    };
    assert_ne!(rows(0), rows(1));
}

#[test]
fn checkpoints_from_before_the_exact_split_resumed_on_other_rows() {
    // Checkpoints written before the exact split record no `exact_split`; a run resumed from
    // one must hold out the rows it started with, by the old per-row rule. The old rule's
    // counts on 2,000 rows at 0.1, seeds 0 to 3, as the build before the change held out.
    for (seed, held) in [(0u64, 217usize), (1, 203), (2, 193), (3, 174)] {
        let split = ValidationSplit::per_row(seed, 0.1);
        assert_eq!(
            (0..2000u64).filter(|&r| split.contains(r)).count(),
            held,
            "seed {seed}"
        );
    }
    let old: TrainOptions = serde_json::from_value({
        let mut v = serde_json::to_value(TrainOptions::default()).unwrap();
        v.as_object_mut().unwrap().remove("exact_split");
        v
    })
    .unwrap();
    assert!(
        !old.exact_split,
        "a checkpoint without the field is an old one"
    );
    let (a, b) = (
        old.validation_split(0.1, 2000),
        ValidationSplit::per_row(0, 0.1),
    );
    assert!((0..2000u64).all(|r| a.contains(r) == b.contains(r)));
    assert!(TrainOptions::default().exact_split);
}
