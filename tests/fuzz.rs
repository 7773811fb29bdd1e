//! Fuzzing the three readers of untrusted input — CSV, `.npy` and model files — with
//! proptest: random bytes and mutations of valid files. Each must return `Ok` or a typed
//! error: no panic, no hang, no allocation sized by a header field.
//!
//! CI runs a few hundred cases per reader. For a long run set `MDN_FUZZ_CASES` (for example
//! `MDN_FUZZ_CASES=200000 cargo test --release --test fuzz`); cases that ever failed are kept
//! in tests/fuzz.proptest-regressions and replayed first.

use std::path::Path;

use mdn::data::{ColumnChoice, read_csv_from, read_npy};
use mdn::model::Model;
use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("MDN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid file and a list of (position, byte) replacements, insertions or a truncation.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(pos, byte, kind) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let p = pos % v.len();
        match kind % 3 {
            0 => v[p] = byte,
            1 => v.insert(p, byte),
            _ => {
                v.remove(p);
            }
        }
    }
    if let Some(c) = cut {
        v.truncate(c % (v.len() + 1));
    }
    v
}

const CSV: &str = "x,y,t\n0.5,1e3,-2\n1.25,NaN,3\n\"4\",5 ,6\n7,8,9\n";

fn csv_choices() -> Vec<ColumnChoice> {
    vec![
        ColumnChoice::Default,
        ColumnChoice::Train {
            targets: Some(vec!["t".into()]),
            features: Some(vec!["x".into()]),
        },
        ColumnChoice::model(&["x".into(), "y".into()], &["t".into()], &[], false),
        // A categorical column, unknown categories ignored and missing values dropped.
        ColumnChoice::model(
            &["x".into(), "y=1e3".into(), "y=5".into(), "y=8".into()],
            &["t".into()],
            &[mdn::categorical::Categorical {
                column: "y".into(),
                categories: vec!["1e3".into(), "5".into(), "8".into()],
            }],
            true,
        )
        .with_unknown(mdn::categorical::UnknownCategory::Ignore)
        .with_missing(mdn::data::Missing::Drop),
    ]
}

fn npy_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.npy");
    let mut w = mdn::data::TableWriter::create(&p, &["a".into(), "b".into(), "c".into()]).unwrap();
    w.write_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    w.finish().unwrap();
    std::fs::read(&p).unwrap()
}

fn model_bytes() -> Vec<u8> {
    use mdn::layout::{Activation, Arch};
    use mdn::scaler::Scaler;
    let arch = Arch::new(1, vec![3], Activation::Tanh, 2, 1).unwrap();
    let n = arch.param_count();
    let s = || Scaler {
        mean: vec![0.5],
        std: vec![2.0],
    };
    let m = Model::new(
        arch,
        vec!["x".into()],
        vec!["t".into()],
        s(),
        s(),
        (0..n).map(|i| i as f32 * 0.01).collect(),
    );
    serde_json::to_vec(&m).unwrap()
}

fn check_npy(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.npy");
    std::fs::write(&p, bytes).unwrap();
    let _ = read_npy(&p, &ColumnChoice::Default);
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn csv_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for choice in csv_choices() {
            let _ = read_csv_from(bytes.as_slice(), Path::new("fuzz.csv"), &choice);
        }
    }

    #[test]
    fn csv_reader_survives_mutations(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8), cut in proptest::option::of(any::<usize>())) {
        let v = mutate(CSV.as_bytes(), &edits, cut);
        for choice in csv_choices() {
            let _ = read_csv_from(v.as_slice(), Path::new("fuzz.csv"), &choice);
        }
    }

    #[test]
    fn npy_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&bytes);
        check_npy(&bytes);
        check_npy(&v);
    }

    #[test]
    fn npy_reader_survives_mutations(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6), cut in proptest::option::of(any::<usize>())) {
        check_npy(&mutate(&npy_bytes(), &edits, cut));
    }

    #[test]
    fn npy_header_fields_never_drive_allocation(rows in any::<u64>(), cols in any::<u64>(), descr in prop::sample::select(vec!["<f4", "<f8", "|u1", "<f16", ""])) {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v.extend_from_slice(&[0u8; 64]);
        check_npy(&v);
    }

    #[test]
    fn model_loader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Model::from_json(&bytes);
    }

    #[test]
    fn model_loader_survives_mutations(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6), cut in proptest::option::of(any::<usize>())) {
        let v = mutate(&model_bytes(), &edits, cut);
        if let Ok(m) = Model::from_json(&v) {
            // Whatever loads is consistent enough to use.
            prop_assert!(m.validate().is_ok());
            let d = mdn::data::Dataset { path: "f".into(), features: m.features.clone(), targets: m.targets.clone(), x: vec![0.5; m.arch.inputs], y: vec![0.5; m.arch.targets], rows: 1 };
            let _ = m.loglik(&mut mdn::backend::CpuBackend::with_threads(1), &d);
        }
    }
}
