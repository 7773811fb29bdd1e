//! `.npy` input and output: round trips, float64, column names, and every malformed header
//! refused with a message (no panic, no allocation from a size field).

use std::path::Path;

use mdn::data::{ColumnChoice, TableWriter, read_data};

/// A .npy file with a hand-written header dict and raw data bytes.
fn npy(path: &Path, dict: &str, data: &[u8]) {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// Writes one malformed file.
type Maker = Box<dyn Fn(&Path)>;

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn writer_and_reader_round_trip_with_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.npy");
    let names: Vec<String> = ["a", "b", "y"].iter().map(|s| s.to_string()).collect();
    let mut w = TableWriter::create(&path, &names).unwrap();
    let values: Vec<f32> = (0..3 * 1000).map(|i| (i as f32 * 0.37).sin()).collect();
    w.write_rows(&values[..300]).unwrap();
    w.write_rows(&values[300..]).unwrap();
    assert_eq!(w.finish().unwrap(), 1000);
    let names_file: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.path().join("t.npy.columns.json")).unwrap())
            .unwrap();
    assert_eq!(names_file, names);
    let d = read_data(&path, &ColumnChoice::Default).unwrap();
    assert_eq!(
        (d.rows, d.features.clone(), d.targets.clone()),
        (
            1000,
            vec!["a".to_string(), "b".to_string()],
            vec!["y".to_string()]
        )
    );
    let x: Vec<f32> = values.chunks(3).flat_map(|r| [r[0], r[1]]).collect();
    let y: Vec<f32> = values.chunks(3).map(|r| r[2]).collect();
    assert_eq!(d.x, x);
    assert_eq!(d.y, y);
    // Columns by 0-based index as well as by name.
    let by_index = read_data(
        &path,
        &ColumnChoice::Train {
            targets: Some(vec!["0".into()]),
            features: Some(vec!["b".into()]),
        },
    )
    .unwrap();
    assert_eq!(by_index.targets, vec!["a".to_string()]);
    assert_eq!(by_index.y[1], values[3]);
}

#[test]
fn float64_and_names_by_index_without_a_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.npy");
    npy(
        &path,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
        &f64_bytes(&[1.0, 2.0, 3.0, 4.5, 5.5, 6.5]),
    );
    let d = read_data(&path, &ColumnChoice::Default).unwrap();
    assert_eq!(d.features, vec!["0".to_string(), "1".to_string()]);
    assert_eq!(d.targets, vec!["2".to_string()]);
    assert_eq!(d.x, vec![1.0, 2.0, 4.5, 5.5]);
    assert_eq!(d.y, vec![3.0, 6.5]);
}

#[test]
fn malformed_files_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.npy");
    let ok_data = f64_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let cases: Vec<(Maker, &str)> = vec![
        (
            Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
            "too short",
        ),
        (
            Box::new(|p: &Path| std::fs::write(p, b"PK\x03\x04 not numpy at all").unwrap()),
            "not a .npy file",
        ),
        (
            Box::new(|p: &Path| std::fs::write(p, b"\x93NUMPY\x09\x00\x10\x00").unwrap()),
            "version 9",
        ),
        (
            Box::new(|p: &Path| std::fs::write(p, b"\x93NUMPY\x01\x00\xff\xff{").unwrap()),
            "more than the file holds",
        ),
        (
            Box::new(move |p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }",
                    &f64_bytes(&[1.0, 2.0, 3.0, 4.0]),
                )
            }),
            "Fortran order",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                    &[0u8; 16],
                )
            }),
            "'<i4' is not supported",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 2), }",
                    &[0u8; 32],
                )
            }),
            "big-endian",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }",
                    &[0u8; 32],
                )
            }),
            "1 dimension",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 1), }",
                    &[0u8; 32],
                )
            }),
            "3 dimension",
        ),
        // A size field that claims far more than the file holds: refused, nothing allocated.
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 100000), }",
                    &[0u8; 32],
                )
            }),
            "but the file holds 32 bytes",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }",
                    &[0u8; 32],
                )
            }),
            "but the file holds 32 bytes",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (x, 2), }",
                    &[0u8; 32],
                )
            }),
            "malformed dimension",
        ),
        (
            Box::new(|p: &Path| npy(p, "{'fortran_order': False, 'shape': (2, 2), }", &[0u8; 32])),
            "no 'descr'",
        ),
        (
            Box::new(move |p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                    &f64_bytes(&[1.0, f64::NAN, 3.0, 4.0]),
                )
            }),
            "row 0, column 1",
        ),
        (
            Box::new(move |p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
                    &f64_bytes(&[1.0, 2.0, 1e300, 4.0]),
                )
            }),
            "row 1, column 0",
        ),
        (
            Box::new(|p: &Path| {
                npy(
                    p,
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 2), }",
                    &[],
                )
            }),
            "no rows",
        ),
    ];
    let _ = ok_data;
    for (make, needle) in cases {
        make(&path);
        let err = read_data(&path, &ColumnChoice::Default)
            .expect_err(needle)
            .to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }
    // A names file of the wrong length.
    npy(
        &path,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
        &f64_bytes(&[1.0, 2.0, 3.0, 4.0]),
    );
    std::fs::write(dir.path().join("bad.npy.columns.json"), "[\"a\"]").unwrap();
    let err = read_data(&path, &ColumnChoice::Default)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lists 1 column names but"), "{err}");
}
