//! `mdn._mdn`: the compiled half of the Python package. A thin layer over the `mdn` library:
//! `fit` runs the library's training job on numpy arrays (the GIL released while it trains,
//! a Python callback and Ctrl-C checked after every epoch), and `Model` wraps a trained model
//! for predictions, log-likelihoods, samples and its JSON file. The estimator a user sees
//! (`mdn.MDN`) is plain Python in `mdn/__init__.py`.

use std::sync::atomic::{AtomicBool, Ordering};

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use mdn::backend::{Backend, DeviceChoice};
use mdn::data::Dataset;
use mdn::job::{JobEvent, TrainJob};
use mdn::train::TrainEvent;

/// A library error as the Python exception a user expects: bad input is a ValueError, a
/// missing file an OSError, anything else a RuntimeError; the command-line options the
/// library's messages name are given as the estimator's parameters.
fn py_err(e: mdn::Error) -> PyErr {
    let text = as_parameters(&e.to_string());
    match &e {
        mdn::Error::Io { .. } => PyOSError::new_err(text),
        mdn::Error::Interrupted(_) => PyKeyboardInterrupt::new_err(text),
        _ if e.exit_code() == 2 => PyValueError::new_err(text),
        _ => PyRuntimeError::new_err(text),
    }
}

/// `--val FILE` as `fit(eval_set=...)`, `--val-fraction 0` as `val_fraction=0`, `--epochs N`
/// as `epochs=N`: the library's messages name options the way the command line spells them.
fn as_parameters(message: &str) -> String {
    let mut message = message.replace("--val FILE", "fit(..., eval_set=(X_val, y_val))");
    // The estimator's options travel as JSON: where in it a bad value sat means nothing to
    // the user (" at line 1 column 38").
    if let Some(at) = message.rfind(" at line ") {
        let tail = &message[at + " at line ".len()..];
        let mut parts = tail.split(' ');
        if let (Some(line), Some("column"), Some(col), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            if line.parse::<u64>().is_ok() && col.parse::<u64>().is_ok() {
                message.truncate(at);
            }
        }
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(at) = rest.find("--") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let name_len = after[2..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len() - 2);
        let name = &after[2..2 + name_len];
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.push_str("--");
            rest = &after[2..];
            continue;
        }
        out.push_str(&name.replace('-', "_"));
        rest = &after[2 + name_len..];
        // An option's value follows it after a space: `name=value`.
        if let Some(value) = rest.strip_prefix(' ') {
            let token = value
                .split(|c: char| c == ' ' || c == ',')
                .next()
                .unwrap_or("");
            let placeholder = !token.is_empty() && token.chars().all(|c| c.is_ascii_uppercase());
            if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') || placeholder {
                out.push('=');
                rest = value;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Rows of `x` (and `y`) as a data set named `what` in messages; NaN and infinity are
/// refused with their place.
fn dataset(
    what: &str,
    x: &PyReadonlyArray2<f32>,
    y: Option<&PyReadonlyArray2<f32>>,
    features: &[String],
    targets: &[String],
) -> PyResult<Dataset> {
    let xs = x.as_array();
    let (rows, d) = (xs.nrows(), xs.ncols());
    if d != features.len() {
        return Err(PyValueError::new_err(format!(
            "{what}: {d} columns, but {} feature names",
            features.len()
        )));
    }
    let check = |name: &str, arr: &numpy::ndarray::ArrayView2<f32>, cols: &[String]| {
        for ((r, c), v) in arr.indexed_iter() {
            if !v.is_finite() {
                return Err(PyValueError::new_err(format!(
                    "{name}: row {r}, column {c} ({:?}) is {v}, not a finite number",
                    cols[c]
                )));
            }
        }
        Ok(())
    };
    // "X" and "y" for the rows predicted on; "eval_set X", "eval_set y" for others.
    let label = |part: &str| {
        if what == part || what == "X" {
            part.to_string()
        } else {
            format!("{what} {part}")
        }
    };
    check(&label("X"), &xs, features)?;
    let mut out = Dataset {
        path: what.into(),
        features: features.to_vec(),
        targets: targets.to_vec(),
        x: xs.iter().copied().collect(),
        y: Vec::new(),
        rows,
    };
    if let Some(y) = y {
        let ys = y.as_array();
        if ys.nrows() != rows {
            return Err(PyValueError::new_err(format!(
                "X has {rows} rows but y has {}",
                ys.nrows()
            )));
        }
        if ys.ncols() != targets.len() {
            return Err(PyValueError::new_err(format!(
                "{}: {} column(s), but {} target(s) ({})",
                label("y"),
                ys.ncols(),
                targets.len(),
                targets.join(", ")
            )));
        }
        check(&label("y"), &ys, targets)?;
        out.y = ys.iter().copied().collect();
    }
    Ok(out)
}

/// Trains a model: `job` is a `TrainJob` as JSON (the estimator's options), `x`/`y` the
/// training rows, `x_val`/`y_val` optional validation rows. `callback(event)` is called
/// with a dict after every epoch and for notes and warnings; returning False from it, or
/// Ctrl-C, stops training after the epoch and keeps the best model so far. Returns the
/// model and whether Ctrl-C stopped it (the caller raises KeyboardInterrupt then, having
/// kept the model).
#[pyfunction]
#[pyo3(signature = (job, x, y, features, targets, x_val=None, y_val=None, callback=None, categorical=None, left_out=0))]
#[allow(clippy::too_many_arguments)]
fn fit(
    py: Python<'_>,
    job: &str,
    x: PyReadonlyArray2<f32>,
    y: PyReadonlyArray2<f32>,
    features: Vec<String>,
    targets: Vec<String>,
    x_val: Option<PyReadonlyArray2<f32>>,
    y_val: Option<PyReadonlyArray2<f32>>,
    callback: Option<Py<PyAny>>,
    categorical: Option<&str>,
    left_out: usize,
) -> PyResult<(Model, bool)> {
    let job = TrainJob::from_json(job).map_err(py_err)?;
    // The categorical columns the rows' indicator columns come from (JSON, as in the model
    // file): kept in the model, so `mdn predict` reads the same columns' text.
    let categorical: Vec<mdn::categorical::Categorical> = match categorical {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| PyValueError::new_err(format!("categorical: {e}")))?,
        None => Vec::new(),
    };
    mdn::categorical::validate(&features, &categorical).map_err(PyValueError::new_err)?;
    let train = dataset("the training data", &x, Some(&y), &features, &targets)?;
    let val = match (&x_val, &y_val) {
        (Some(xv), Some(yv)) => Some(dataset("eval_set", xv, Some(yv), &features, &targets)?),
        (None, None) => None,
        _ => return Err(PyValueError::new_err("eval_set needs both X and y")),
    };
    let resolved = job.resolve_arrays(train, val).map_err(py_err)?;
    let cancel = AtomicBool::new(false);
    let mut failure: Option<PyErr> = None;
    let result = py.detach(|| {
        // An ensemble's member whose epochs these are.
        let mut member: Option<usize> = None;
        let mut observer = |e: &JobEvent| {
            if let JobEvent::Member { index, .. } = e {
                member = Some(*index);
            }
            let event = match e {
                JobEvent::Train(TrainEvent::Epoch(r)) => {
                    let mut v = serde_json::json!({
                        "type": "epoch", "epoch": r.epoch, "max_epochs": r.max_epochs,
                        "train_nll": r.train_nll, "val_nll": r.val_nll,
                        "best_val_nll": r.best_val_nll, "best_epoch": r.best_epoch,
                        "rows_per_sec": r.rows_per_sec, "seconds": r.seconds,
                        "eta_seconds": r.eta_seconds,
                    });
                    if let Some(i) = member {
                        v["member"] = serde_json::json!(i + 1);
                    }
                    Some(v)
                }
                JobEvent::Warning(w) => {
                    Some(serde_json::json!({"type": "warning", "message": as_parameters(w)}))
                }
                JobEvent::Note(n) => Some(serde_json::json!({"type": "note", "message": n})),
                JobEvent::Started(p) => Some(serde_json::json!({"type": "started", "plan": p})),
                _ => None,
            };
            let epoch = matches!(e, JobEvent::Train(TrainEvent::Epoch(_)));
            if event.is_none() && !epoch {
                return;
            }
            Python::attach(|py| {
                // Ctrl-C in a notebook or a terminal: stop after this epoch.
                if let Err(err) = py.check_signals() {
                    cancel.store(true, Ordering::Relaxed);
                    failure.get_or_insert(err);
                    return;
                }
                if let (Some(cb), Some(ev)) = (&callback, &event) {
                    let arg = match pythonize(py, ev) {
                        Ok(a) => a,
                        Err(err) => {
                            failure.get_or_insert(err);
                            return;
                        }
                    };
                    match cb.call1(py, (arg,)) {
                        Ok(ret) => {
                            if ret
                                .bind(py)
                                .is(false.into_pyobject(py).expect("bool").to_owned())
                            {
                                cancel.store(true, Ordering::Relaxed);
                            }
                        }
                        Err(err) => {
                            // An exception in the callback stops training and is raised.
                            cancel.store(true, Ordering::Relaxed);
                            failure.get_or_insert(err);
                        }
                    }
                }
            });
        };
        resolved.train(&mut observer, &cancel)
    });
    let model = match result {
        Ok(m) => m
            .with_categorical(&categorical)
            .with_rows_left_out(left_out),
        // Interrupted before the first epoch: the KeyboardInterrupt (or the callback's error).
        Err(e) => return Err(failure.take().unwrap_or_else(|| py_err(e))),
    };
    // A callback that raised: its exception, after the model is kept in it.
    let mut interrupted = false;
    if let Some(err) = failure {
        if !err.is_instance_of::<PyKeyboardInterrupt>(py) {
            return Err(err);
        }
        // Ctrl-C: the model so far is returned; the estimator keeps it, warns, and raises
        // KeyboardInterrupt (a loop or a search stops too).
        interrupted = true;
    }
    Ok((Model { inner: model }, interrupted))
}

/// A JSON value as the Python object `json.loads` would give.
fn pythonize<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let json = py.import("json")?;
    json.call_method1("loads", (v.to_string(),))
}

/// A trained model.
#[pyclass(module = "mdn._mdn", frozen)]
struct Model {
    inner: mdn::model::Model,
}

/// The device by name (checked while the GIL is held).
fn device(name: &str) -> PyResult<DeviceChoice> {
    name.parse()
        .map_err(|e: String| PyValueError::new_err(format!("device: {e}")))
}

/// Opens a backend (inside `detach`: a backend stays on the thread that made it).
fn open(choice: DeviceChoice, threads: Option<usize>) -> mdn::Result<Box<dyn Backend>> {
    Ok(mdn::backend::open(choice, threads)?.0)
}

#[pymethods]
impl Model {
    /// Reads a model file written by `mdn train` or `Model.save`.
    #[staticmethod]
    fn load(path: std::path::PathBuf) -> PyResult<Model> {
        Ok(Model {
            inner: mdn::model::Model::load(&path).map_err(py_err)?,
        })
    }

    /// The model from its JSON text.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Model> {
        Ok(Model {
            inner: mdn::model::Model::from_json(text.as_bytes())
                .map_err(|m| PyValueError::new_err(format!("model: {m}")))?,
        })
    }

    /// Writes the model file (the format `mdn train` writes), atomically.
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        self.inner.save(&path).map_err(py_err)
    }

    /// The model file's JSON text.
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    #[getter]
    fn features(&self) -> Vec<String> {
        self.inner.features.clone()
    }

    #[getter]
    fn targets(&self) -> Vec<String> {
        self.inner.targets.clone()
    }

    /// The feature columns read as categories: (column, categories) pairs, the categories
    /// in the order of the column's indicator inputs in `features`.
    #[getter]
    fn categorical(&self) -> Vec<(String, Vec<String>)> {
        self.inner
            .categorical
            .iter()
            .map(|c| (c.column.clone(), c.categories.clone()))
            .collect()
    }

    /// Per target, the transform the mixture was fitted through ("none", "log" or
    /// "logit:LOW,HIGH"): the components' mu and sigma are in its units.
    #[getter]
    fn transforms(&self) -> Vec<String> {
        (0..self.inner.targets.len())
            .map(|j| mdn::transform::of(&self.inner.transforms, j).to_string())
            .collect()
    }

    /// The components' family: "gaussian" or "student-t".
    #[getter]
    fn family(&self) -> String {
        self.inner.arch.family.name().to_string()
    }

    /// The data columns the model reads, in order (a categorical column once, by its name).
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.inner.columns()
    }

    #[getter]
    fn components(&self) -> usize {
        self.inner.arch.components
    }

    /// How it was trained (the model file's `training` record) as JSON text.
    #[getter]
    fn training(&self) -> PyResult<String> {
        serde_json::to_string(&self.inner.training)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// The mixture per row: dict of pi (n, K), mu and sigma (n, K, D), and per target mean,
    /// var and mode (n, D); `quantiles` (levels) adds quantiles (n, L, D).
    #[pyo3(signature = (x, quantiles=None, device="cpu", threads=None, mode=true))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<f32>,
        quantiles: Option<Vec<f64>>,
        device: &str,
        threads: Option<usize>,
        mode: bool,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let m = &self.inner;
        let data = dataset("X", &x, None, &m.features, &[])?;
        let choice = self::device(device)?;
        let pred = py
            .detach(|| m.predict(open(choice, threads)?.as_mut(), &data))
            .map_err(py_err)?;
        let (n, k, d) = (pred.rows, pred.k, pred.d);
        let out = pyo3::types::PyDict::new(py);
        let arr2 = |v: Vec<f64>, c: usize| -> PyResult<Bound<'py, PyArray2<f64>>> {
            PyArray1::from_vec(py, v).reshape([n, c])
        };
        let arr3 = |v: Vec<f64>, a: usize, c: usize| -> PyResult<Bound<'py, PyArray3<f64>>> {
            PyArray1::from_vec(py, v).reshape([n, a, c])
        };
        out.set_item("pi", arr2(pred.pi.clone(), k)?)?;
        out.set_item("mu", arr3(pred.mu.clone(), k, d)?)?;
        out.set_item("sigma", arr3(pred.sigma.clone(), k, d)?)?;
        if !pred.dof.is_empty() {
            out.set_item("dof", arr2(pred.dof.clone(), k)?)?;
        }
        let with_mode = mode;
        let (mut mean, mut var, mut modes) = (Vec::new(), Vec::new(), Vec::new());
        let levels = quantiles.unwrap_or_default();
        if let Some(q) = levels.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
            return Err(PyValueError::new_err(format!(
                "quantiles must be between 0 and 1 (exclusive), got {q}"
            )));
        }
        let mut qs = vec![0.0; n * levels.len() * d];
        for r in 0..n {
            for j in 0..d {
                let mm = pred.marginal(r, j);
                mean.push(mm.mean());
                var.push(mm.variance());
                if with_mode {
                    modes.push(mm.mode());
                }
                for (l, q) in levels.iter().enumerate() {
                    qs[(r * levels.len() + l) * d + j] = mm.quantile(*q);
                }
            }
        }
        out.set_item("mean", arr2(mean, d)?)?;
        out.set_item("var", arr2(var, d)?)?;
        if with_mode {
            out.set_item("mode", arr2(modes, d)?)?;
        }
        if !levels.is_empty() {
            out.set_item("quantiles", arr3(qs, levels.len(), d)?)?;
        }
        let members = m.ensemble_size();
        if members > 1 {
            let (aleatoric, epistemic) = pred.variance_split(members);
            out.set_item("aleatoric_var", arr2(aleatoric, d)?)?;
            out.set_item("epistemic_var", arr2(epistemic, d)?)?;
            out.set_item("ensemble", members)?;
        }
        if !pred.scale_tril.is_empty() {
            let mut cov = Vec::with_capacity(n * k * d * d);
            for r in 0..n {
                for c in 0..k {
                    cov.extend(pred.covariance(r, c));
                }
            }
            out.set_item("cov", PyArray1::from_vec(py, cov).reshape([n, k, d, d])?)?;
        }
        Ok(out)
    }

    /// Each target's marginal distribution at `y` (rows x D, original units): its CDF,
    /// its density and the CRPS of `y` under it, each rows x D.
    #[pyo3(signature = (x, y, device="cpu", threads=None))]
    fn marginals<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<f32>,
        y: PyReadonlyArray2<f64>,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let m = &self.inner;
        let d = m.targets.len();
        let data = dataset("X", &x, None, &m.features, &[])?;
        if y.shape() != [data.rows, d] {
            return Err(PyValueError::new_err(format!(
                "y: expected {} rows x {d} targets, got {:?}",
                data.rows,
                y.shape()
            )));
        }
        let y = y.as_array();
        let choice = self::device(device)?;
        let pred = py
            .detach(|| m.predict(open(choice, threads)?.as_mut(), &data))
            .map_err(py_err)?;
        let n = pred.rows;
        let (mut cdf, mut pdf, mut crps) = (
            Vec::with_capacity(n * d),
            Vec::with_capacity(n * d),
            Vec::with_capacity(n * d),
        );
        for r in 0..n {
            for j in 0..d {
                let mm = pred.marginal(r, j);
                let v = y[[r, j]];
                cdf.push(mm.cdf(v));
                pdf.push(mm.pdf(v));
                crps.push(mm.crps(v));
            }
        }
        let out = pyo3::types::PyDict::new(py);
        for (name, v) in [("cdf", cdf), ("pdf", pdf), ("crps", crps)] {
            out.set_item(name, PyArray1::from_vec(py, v).reshape([n, d])?)?;
        }
        Ok(out)
    }

    /// Log-likelihood of each row (natural log, original units of the targets).
    #[pyo3(signature = (x, y, device="cpu", threads=None))]
    fn log_prob<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<f32>,
        y: PyReadonlyArray2<f32>,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let m = &self.inner;
        let data = dataset("X", &x, Some(&y), &m.features, &m.targets)?;
        let choice = self::device(device)?;
        let ll = py
            .detach(|| m.loglik(open(choice, threads)?.as_mut(), &data))
            .map_err(py_err)?;
        Ok(ll.into_pyarray(py))
    }

    /// `n` samples of the targets per row: (rows, n, D).
    #[pyo3(signature = (x, n=1, seed=0, temperature=1.0, sigma_scale=1.0, device="cpu", threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<f32>,
        n: usize,
        seed: u64,
        temperature: f64,
        sigma_scale: f64,
        device: &str,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray3<f64>>> {
        if n == 0 {
            return Err(PyValueError::new_err("n must be at least 1"));
        }
        let m = &self.inner;
        let data = dataset("X", &x, None, &m.features, &[])?;
        let choice = self::device(device)?;
        let s = py
            .detach(|| {
                m.sample(
                    open(choice, threads)?.as_mut(),
                    &data,
                    n,
                    seed,
                    temperature,
                    sigma_scale,
                )
            })
            .map_err(py_err)?;
        PyArray1::from_vec(py, s).reshape([data.rows, n, m.targets.len()])
    }
}

/// What `mdn devices --json` prints, as JSON text.
#[pyfunction]
fn devices_json() -> String {
    mdn::backend::devices_report().to_string()
}

#[pymodule]
fn _mdn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(devices_json, m)?)?;
    m.add_class::<Model>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
