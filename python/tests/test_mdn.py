"""The Python package against the command line: same bits, same predictions, the same model
files; scikit-learn's protocol; bad input; interruption; the GPU path on lavapipe.

MDN_BIN names the `mdn` binary (default: target/release/mdn of this repository)."""

import json
import os
import pathlib
import re
import signal
import subprocess
import warnings

import numpy as np
import pytest

import mdn

ROOT = pathlib.Path(__file__).resolve().parents[2]
MDN_BIN = os.environ.get("MDN_BIN", str(ROOT / "target" / "release" / "mdn"))


def cli(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("MDN_DEVICE", "MDN_THREADS")}
    out = subprocess.run([MDN_BIN, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def data(n=600, seed=0, d=2):
    """Generated rows as float32, and a CSV holding exactly those values."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
    y = (np.sin(3 * X[:, 0]) + 0.3 * X[:, 1] + rng.normal(0, 0.1 + 0.2 * np.abs(X[:, 0]))).astype(np.float32)
    return X, y


def write_csv(path, X, y, names=None):
    names = names or [f"x{i}" for i in range(X.shape[1])] + ["y0"]
    table = np.column_stack([X, y])
    np.savetxt(path, table, delimiter=",", header=",".join(names), comments="", fmt="%.9g")


def params(model_json):
    return np.asarray(json.loads(model_json)["params"], dtype=np.float32)


OPTS = dict(epochs=8, hidden=[16], components=3, seed=5, device="cpu", threads=1)
FLAGS = ["--epochs", 8, "--hidden", 16, "--components", 3, "--seed", 5, "--device", "cpu", "--threads", 1]


def test_fit_gives_the_bits_of_mdn_train(tmp_path):
    X, y = data()
    write_csv(tmp_path / "d.csv", X, y)
    cli("train", "--data", tmp_path / "d.csv", "--out", tmp_path / "cli.json", "--quiet", *FLAGS)
    est = mdn.MDN(**OPTS).fit(X, y)
    want = params((tmp_path / "cli.json").read_text())
    got = params(est.model_.to_json())
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"worst difference {np.max(np.abs(got - want))}"
    # float64 input: the same rows after the cast, the same model.
    assert np.array_equal(params(mdn.MDN(**OPTS).fit(X.astype(np.float64), y.astype(np.float64)).model_.to_json()), want)


def test_eval_set_is_mdn_train_val(tmp_path):
    X, y = data()
    Xv, yv = data(200, seed=1)
    write_csv(tmp_path / "d.csv", X, y)
    write_csv(tmp_path / "v.csv", Xv, yv)
    cli("train", "--data", tmp_path / "d.csv", "--val", tmp_path / "v.csv", "--out", tmp_path / "cli.json", "--quiet", *FLAGS)
    est = mdn.MDN(**OPTS).fit(X, y, eval_set=(Xv, yv))
    assert np.array_equal(params(est.model_.to_json()), params((tmp_path / "cli.json").read_text()))


def test_predict_distribution_is_mdn_predict_json(tmp_path):
    X, y = data()
    est = mdn.MDN(**OPTS).fit(X, y)
    est.save(tmp_path / "m.json")
    rows = X[:7]
    write_csv(tmp_path / "rows.csv", rows, np.zeros(7, np.float32))
    out = json.loads(cli("predict", "--model", tmp_path / "m.json", "--data", tmp_path / "rows.csv",
                         "--json", "--quantiles", "0.1,0.5,0.9", "--device", "cpu", "--threads", 1))
    d = est.predict_distribution(rows)
    want = lambda key: np.array([r[key] for r in out["rows"]])
    np.testing.assert_array_equal(d.pi, want("pi"))
    np.testing.assert_array_equal(d.mu, want("mu"))
    np.testing.assert_array_equal(d.sigma, want("sigma"))
    np.testing.assert_array_equal(d.mean, want("mean")[:, 0])
    np.testing.assert_array_equal(d.var, want("variance")[:, 0])
    np.testing.assert_array_equal(d.mode, want("mode")[:, 0])
    q = d.quantile([0.1, 0.5, 0.9])
    for i, level in enumerate(["0.1", "0.5", "0.9"]):
        np.testing.assert_array_equal(q[:, i], [r["quantiles"][level][0] for r in out["rows"]])
    np.testing.assert_array_equal(est.predict(rows), d.mean)
    lo, hi = d.interval(0.8)
    np.testing.assert_array_equal(lo, q[:, 0])
    np.testing.assert_array_equal(hi, q[:, 2])
    s = d.sample(50, seed=1)
    assert s.shape == (7, 50) and np.all(np.isfinite(s))
    # Regression (a new user): draws beyond memory aborted the interpreter (a failed
    # allocation) or raised a PanicException (capacity overflow).
    for n in [10**12, 2**62]:
        with pytest.raises(ValueError, match=rf"n={n}: {n} draws of 7 row\(s\) of 1 target\(s\) are more"):
            d.sample(n)
    # Regression: a negative count or seed was an OverflowError of the conversion, a bool a
    # count of 1.
    for bad, what in [(-1, "n"), (0, "n"), (True, "n"), (2.5, "n")]:
        with pytest.raises(ValueError, match=rf"^{what} \(draws per row\): expected a whole number"):
            d.sample(bad)
    for bad in [-1, 2**64]:
        with pytest.raises(ValueError, match=r"^seed: expected a whole number from 0"):
            d.sample(2, seed=bad)
    assert d.sample(np.int64(2), seed=np.uint64(3)).shape == (7, 2)


def test_model_files_go_both_ways(tmp_path):
    X, y = data()
    write_csv(tmp_path / "d.csv", X, y)
    cli("train", "--data", tmp_path / "d.csv", "--out", tmp_path / "cli.json", "--quiet", *FLAGS)
    loaded = mdn.load(tmp_path / "cli.json")
    assert loaded.model_.features == ["x0", "x1"] and loaded.model_.targets == ["y0"]
    est = mdn.MDN(**OPTS).fit(X, y)
    np.testing.assert_array_equal(loaded.predict(X[:20]), est.predict(X[:20]))
    est.save(tmp_path / "py.json")
    info = cli("info", tmp_path / "py.json")
    assert "K=3" in info
    ev = json.loads(cli("eval", "--model", tmp_path / "py.json", "--data", tmp_path / "d.csv", "--json", "--device", "cpu"))
    assert abs(-ev["mean_nll"] - est.score(X, y)) < 1e-9


def test_scikit_learn_protocol():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score

    X, y = data(300)
    est = mdn.MDN(epochs=5, hidden=[8], device="cpu")
    c = clone(est)
    assert c.get_params() == est.get_params() and c is not est
    grid = GridSearchCV(est, {"components": [1, 3]}, cv=3).fit(X, y)
    assert grid.best_params_["components"] in (1, 3)
    scores = cross_val_score(mdn.MDN(epochs=3, hidden=[8], device="cpu"), X, y, cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    with pytest.raises(ValueError, match="unknown option"):
        est.set_params(colour=1)


def test_pandas_names_are_kept():
    pd = pytest.importorskip("pandas")
    X, y = data(300)
    df = pd.DataFrame(X, columns=["speed", "load"])
    est = mdn.MDN(epochs=2, device="cpu").fit(df, pd.Series(y, name="power"))
    assert est.model_.features == ["speed", "load"]
    assert est.model_.targets == ["power"]
    assert list(est.feature_names_in_) == ["speed", "load"]
    assert est.predict(df).shape == (300,)


def test_drop_missing_leaves_out_the_rows_mdn_train_leaves_out(tmp_path):
    X, y = data()
    # Regression (a new user): NaN in y gave scikit-learn's "Input y contains NaN." with no
    # place; X's NaN named its row and column.
    gaps_y = y.copy()
    gaps_y[9] = np.nan
    with pytest.raises(ValueError, match=r"y: row 9, column 0 is missing \(NaN\)"):
        mdn.MDN(**OPTS).fit(X, gaps_y)
    # Regression (a new user): MDN(drop_missing=True) was refused, though the docs give every
    # `mdn train` option by name.
    X[5, 0] = np.nan
    with pytest.warns(UserWarning, match=r"X, y: 2 of 600 rows have a missing value \(the first: row 5\); "
                      r"left out \(drop_missing=True\)"):
        est = mdn.MDN(drop_missing=True, **OPTS).fit(X, gaps_y)
    assert est.training_["rows_left_out"] == 2
    write_csv(tmp_path / "gaps.csv", X, gaps_y)
    cli("train", "--data", tmp_path / "gaps.csv", "--drop-missing", *FLAGS, "--out", tmp_path / "m.json",
        "--quiet")
    np.testing.assert_array_equal(params(est.model_.to_json()), params((tmp_path / "m.json").read_text()))
    with pytest.raises(ValueError, match="every row"):
        mdn.MDN(drop_missing=True, **OPTS).fit(X[5:6], gaps_y[5:6])


def test_bad_input_raises_clear_errors():
    X, y = data(100)
    est = mdn.MDN(epochs=1, device="cpu")
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 7, column 1"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match="100 rows but y has 99"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="0 sample"):
        est.fit(X[:0], y[:0])
    with pytest.raises(ValueError, match=r"expected numbers, got an array of text \(<U1, e.g. 'a'\)"):
        est.fit(np.array([["a", "b"]] * 20), y[:20])
    with pytest.raises(ValueError, match="2-D"):
        est.fit(X.reshape(10, 10, 2), y)
    with pytest.raises(ValueError, match="lr must") as e:
        mdn.MDN(lr=-1.0, device="cpu").fit(X, y)
    assert "--" not in str(e.value), "the estimator's parameter, not the command line's option"
    # Regression (python_errors_named_cli_flags): too few rows for the defaults named
    # `--val FILE` and `--val-fraction 0 --epochs N`, which a Python user cannot pass.
    with pytest.raises(ValueError, match=r"eval_set=\(X_val, y_val\).*val_fraction=0 epochs=N"):
        mdn.MDN(device="cpu").fit(X[:9], y[:9])
    with pytest.raises(ValueError, match="covariance") as e:
        mdn.MDN(covariance="fulll", device="cpu").fit(X, y)
    assert "line 1" not in str(e.value), "where in the JSON the value sat means nothing here"
    with pytest.warns(UserWarning, match="val_fraction=0.9 holds out the others"):
        mdn.MDN(val_fraction=0.9, epochs=2, device="cpu").fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="device"):
        mdn.MDN(device="tpu").fit(X, y)
    with pytest.raises(mdn.NotFittedError, match="not fitted"):
        mdn.MDN().predict(X)
    est.fit(X, y)
    with pytest.raises(ValueError, match="X has 1 features, but MDN is expecting 2 features"):
        est.predict(X[:, :1])
    with pytest.raises(ValueError, match="quantiles"):
        est.predict_distribution(X).quantile(1.5)
    with pytest.raises(OSError):
        mdn.load("/nonexistent/model.json")


def test_stopping_fit_keeps_the_best_model():
    X, y = data()
    seen = []

    def stop_at_4(event):
        if event["type"] == "epoch":
            seen.append(event["epoch"])
            return event["epoch"] < 4

    with pytest.warns(UserWarning, match="stopped after epoch 4"):
        est = mdn.MDN(epochs=50, device="cpu", callback=stop_at_4).fit(X, y)
    assert seen == [1, 2, 3, 4]
    assert est.training_["stop_reason"] == "interrupted"
    assert np.isfinite(est.score(X, y))


def test_ctrl_c_stops_after_the_epoch_and_keeps_the_model():
    X, y = data()

    def interrupt(event):
        if event["type"] == "epoch" and event["epoch"] == 3:
            # Ctrl-C's SIGINT, raised in this thread (Python's handler has run on return).
            signal.raise_signal(signal.SIGINT)

    # Python's own Ctrl-C handler, whatever the process was started with: a test run from a
    # background job of a non-interactive shell inherits SIGINT ignored, and Python then
    # installs no handler (the run went on to its 1,000th epoch).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    est = mdn.MDN(epochs=1000, device="cpu", callback=interrupt)
    try:
        # Regression (a new user): Ctrl-C ended the fit only, so a GridSearchCV or a loop of
        # fits went on (and scored the cut-short model as a whole one). It raises now, the
        # estimator fitted with the model so far.
        with pytest.warns(UserWarning, match="stopped after epoch"):
            with pytest.raises(KeyboardInterrupt):
                est.fit(X, y)
    finally:
        signal.signal(signal.SIGINT, before)
    assert est.training_["epochs"] <= 4
    assert est.training_["stop_reason"] == "interrupted"
    assert np.isfinite(est.score(X, y))


def test_the_gpu_path_on_the_software_adapter():
    names = [a["name"] for a in mdn.devices()["adapters"] if a["device_type"] == "Cpu"]
    if not names:
        if os.environ.get("MDN_REQUIRE_GPU") == "1":
            pytest.fail("MDN_REQUIRE_GPU=1 but no software adapter")
        pytest.skip("SKIPPED: no software Vulkan adapter (apt-get install mesa-vulkan-drivers)")
    X, y = data(400)
    gpu = mdn.MDN(epochs=3, hidden=[16], device="software", seed=2).fit(X, y)
    cpu = mdn.MDN(epochs=3, hidden=[16], device="cpu", seed=2).fit(X, y)
    assert "llvmpipe" in gpu.training_["backend"] or gpu.training_["backend"] in names
    g, c = gpu.log_prob(X, y), cpu.log_prob(X, y)
    worst = np.max(np.abs(g - c))
    assert worst < 1e-3, f"GPU and CPU models differ by up to {worst} in log-likelihood"


def test_devices_lists_what_the_cli_lists():
    ours = mdn.devices()
    theirs = json.loads(cli("devices", "--json"))
    assert ours == theirs


def test_hidden_takes_the_cli_forms():
    X, y = data(200)
    for hidden, want in [("64", [64]), ("32,16", [32, 16]), ("none", []), (8, [8]), ([4, 4], [4, 4])]:
        est = mdn.MDN(hidden=hidden, epochs=1, device="cpu").fit(X, y)
        assert json.loads(est.model_.to_json())["arch"]["hidden"] == want, hidden
    for bad in ["64,x", 0, [3, -1], "1.5"]:
        with pytest.raises(ValueError, match="hidden"):
            mdn.MDN(hidden=bad, epochs=1, device="cpu").fit(X, y)


def test_dataframe_columns_are_matched_by_name():
    pd = pytest.importorskip("pandas")
    X, y = data(300)
    df = pd.DataFrame(X, columns=["a", "b"])
    est = mdn.MDN(epochs=2, device="cpu").fit(df, y)
    np.testing.assert_array_equal(est.predict(df[["b", "a"]]), est.predict(df))
    with pytest.raises(ValueError, match=r"lacks the model's feature column\(s\) \['a'\]"):
        est.predict(df.rename(columns={"a": "c"}))
    with pytest.raises(ValueError, match="1-D"):
        est.fit(X[:, 0], y)


def test_the_callback_sees_epochs_only():
    X, y = data(300)
    est = mdn.MDN(epochs=10, device="cpu", callback=lambda e: e["epoch"] < 3)
    with pytest.warns(UserWarning, match="stopped after epoch 3"):
        est.fit(X, y)


def test_an_ensemble_splits_its_variance():
    X, y = data(400)
    est = mdn.MDN(ensemble=3, epochs=5, hidden=[16], device="cpu").fit(X, y)
    d = est.predict_distribution(X[:20])
    assert d.ensemble == 3
    np.testing.assert_allclose(d.aleatoric_var + d.epistemic_var, d.var, rtol=1e-9)
    assert np.all(d.epistemic_var > 0)
    single = mdn.MDN(epochs=5, hidden=[16], device="cpu").fit(X, y).predict_distribution(X[:20])
    assert single.ensemble == 1 and np.all(single.epistemic_var == 0)


def cars(n=500, seed=3):
    """A table with text and a pandas categorical column, and the same as a CSV."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = np.round(rng.uniform(0, 15, n), 2).astype(np.float32)
    fuel = rng.choice(["diesel", "petrol", "electric"], n)
    region = pd.Categorical(rng.choice(["north", "south", "east"], n))
    price = (np.where(fuel == "electric", 35.0, 20.0) * np.exp(-0.08 * age + rng.normal(0, 0.2, n))).astype(np.float32)
    price = np.round(price, 3).astype(np.float32)
    X = pd.DataFrame({"age": age, "fuel": fuel, "region": region})
    return X, pd.Series(price, name="price")


def test_text_and_categorical_columns_are_categories_as_mdn_train_reads_them(tmp_path):
    pytest.importorskip("pandas")
    X, y = cars()
    table = X.assign(price=y)
    table.to_csv(tmp_path / "cars.csv", index=False, float_format="%.9g")
    cli("train", "--data", tmp_path / "cars.csv", "--out", tmp_path / "cli.json", "--quiet", *FLAGS)
    est = mdn.MDN(**OPTS).fit(X, y)
    cli_model = json.loads((tmp_path / "cli.json").read_text())
    mine = json.loads(est.model_.to_json())
    assert mine["categorical"] == cli_model["categorical"] == [
        {"column": "fuel", "categories": ["diesel", "electric", "petrol"]},
        {"column": "region", "categories": ["east", "north", "south"]},
    ]
    assert mine["features"] == cli_model["features"]
    assert np.array_equal(params(est.model_.to_json()), params((tmp_path / "cli.json").read_text()))
    # Predictions from the text, columns in any order, equal mdn predict on the CSV.
    est.save(tmp_path / "m.json")
    out = json.loads(cli("predict", "--model", tmp_path / "m.json", "--data", tmp_path / "cars.csv", "--json", "--device", "cpu"))
    want = np.array([r["mean"][0] for r in out["rows"]])
    got = est.predict(X[["region", "age", "fuel"]])
    assert np.allclose(got, want, rtol=1e-6, atol=0), np.max(np.abs(got - want))
    assert mdn.load(tmp_path / "cli.json").model_.categorical == [
        ("fuel", ["diesel", "electric", "petrol"]),
        ("region", ["east", "north", "south"]),
    ]
    # Unknown categories, missing values, arrays without names, numeric codes.
    new = X.head(3).copy()
    new.loc[1, "fuel"] = "hydrogen"
    with pytest.raises(ValueError, match=r"row 1, column 'fuel': 'hydrogen' is not a category the model was trained on"):
        est.predict(new)
    ignoring = mdn.load(tmp_path / "m.json").set_params(unknown_category="ignore")
    with pytest.warns(UserWarning, match="1 row"):
        assert np.isfinite(ignoring.predict(new)).all()
    gap = X.head(3).copy()
    gap.loc[2, "fuel"] = None
    with pytest.raises(ValueError, match=r"row 2, column 'fuel': missing value"):
        est.predict(gap)
    with pytest.raises(ValueError, match="give a pandas DataFrame"):
        est.predict(np.zeros((2, 3), np.float32))
    codes = X.assign(fuel=X["fuel"].map({"diesel": 1, "petrol": 2, "electric": 3}))
    coded = mdn.MDN(epochs=1, device="cpu", categorical=["fuel"]).fit(codes, y)
    assert coded.model_.categorical[0] == ("fuel", ["1", "2", "3"])
    with pytest.raises(ValueError, match=r"categorical: \['colour'\] are not columns of X"):
        mdn.MDN(epochs=1, device="cpu", categorical=["colour"]).fit(X, y)


def test_student_t_gives_the_bits_of_mdn_train_and_the_t_mixture_density(tmp_path):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 3, size=(500, 1)).astype(np.float32)
    y = (np.sin(2 * X[:, 0]) + 0.3 * rng.standard_t(3, size=500)).astype(np.float32)
    write_csv(tmp_path / "d.csv", X, y)
    cli("train", "--data", "d.csv", "--family", "student-t", "--components", "2", "--epochs", "4",
        "--val-fraction", "0", "--device", "cpu", "--out", "m.json", "--quiet", cwd=tmp_path)
    est = mdn.MDN(family="student-t", components=2, epochs=4, val_fraction=0, device="cpu").fit(X, y)
    assert json.loads(est.model_.to_json())["params"] == json.loads((tmp_path / "m.json").read_text())["params"]
    assert est.model_.family == "student-t"
    d = est.predict_distribution(X[:30])
    assert d.dof.shape == (30, 2) and np.all(d.dof > 2)
    # Each target's marginal is the mixture of t's with these locations, scales and dof.
    pi, mu, sigma, nu = d.pi, d.mu[:, :, 0], d.sigma[:, :, 0], d.dof
    at = np.full(30, 0.7)
    pdf = np.sum(pi * stats.t.pdf(0.7, nu, loc=mu, scale=sigma), axis=1)
    np.testing.assert_allclose(d.pdf(at, marginal=True), pdf, rtol=1e-9)
    cdf = np.sum(pi * stats.t.cdf(0.7, nu, loc=mu, scale=sigma), axis=1)
    np.testing.assert_allclose(d.cdf(at), cdf, rtol=1e-9, atol=1e-12)
    var = np.sum(pi * (sigma**2 * nu / (nu - 2) + mu**2), axis=1) - np.sum(pi * mu, axis=1) ** 2
    np.testing.assert_allclose(d.var, var, rtol=1e-9)
    np.testing.assert_allclose(d.cdf(d.ppf(0.975)), 0.975, atol=1e-9)
    with pytest.raises(ValueError, match="not supported"):
        mdn.MDN(family="student-t", target_transform="log", epochs=1, device="cpu").fit(X, np.abs(y) + 1)


def test_a_log_transform_gives_the_bits_of_mdn_train_and_no_mass_below_zero(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 3, size=(500, 1)).astype(np.float32)
    y = np.exp(0.6 * X[:, 0] + rng.normal(0, 0.9, size=500)).astype(np.float32)
    write_csv(tmp_path / "d.csv", X, y)
    cli("train", "--data", "d.csv", "--transform", "log", "--epochs", "4", "--val-fraction", "0",
        "--device", "cpu", "--out", "m.json", "--quiet", cwd=tmp_path)
    est = mdn.MDN(target_transform="log", epochs=4, val_fraction=0, device="cpu").fit(X, y)
    assert est.model_.transforms == ["log"]
    assert json.loads(est.model_.to_json())["params"] == json.loads((tmp_path / "m.json").read_text())["params"]
    d = est.predict_distribution(X[:30])
    # The components are of ln y; the mean is the log-normal mixture's, in units of y.
    pi, mu, sigma = d.pi, d.mu[:, :, 0], d.sigma[:, :, 0]
    np.testing.assert_allclose(d.mean, np.sum(pi * np.exp(mu + sigma**2 / 2), axis=1), rtol=1e-12)
    assert np.all(d.cdf(0.0) == 0.0) and np.all(d.ppf(1e-6) > 0)
    assert np.all(d.sample(50, seed=1) > 0)
    # The density of y is that of ln y over y.
    at = np.full(30, 2.5)
    z = (np.log(2.5) - mu) / sigma
    pdf = np.sum(pi * np.exp(-0.5 * z * z) / (sigma * np.sqrt(2 * np.pi)), axis=1) / 2.5
    np.testing.assert_allclose(d.pdf(at, marginal=True), pdf, rtol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        est.log_prob(X[:2], np.array([1.0, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match="unknown transform 'sqrt'"):
        mdn.MDN(target_transform="sqrt", epochs=1, device="cpu").fit(X, y)


def test_a_bool_column_beside_a_categorical_one_could_not_be_predicted():
    # Regression (a new user): fit worked, then predict on the same DataFrame said "X:
    # expected numbers, got an array of object" (pandas' concat of a bool or nullable column
    # with the float indicator columns).
    pd = pytest.importorskip("pandas")
    r = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "a": r.normal(size=200),
            "b": r.random(200) > 0.5,
            "n": pd.array(r.integers(0, 5, 200), dtype="Int64"),
            "f": pd.array(r.normal(size=200), dtype="Float64"),
            "c": r.choice(list("xyz"), 200),
        }
    )
    y = X["a"].to_numpy() + r.normal(size=200)
    est = mdn.MDN(epochs=2, device="cpu").fit(X, y)
    plain = X.astype({"b": "float64", "n": "float64", "f": "float64"})
    np.testing.assert_array_equal(est.predict(X), est.predict(plain))
    assert np.isfinite(est.score(X, y))


def test_a_loaded_model_had_the_default_params(tmp_path):
    # Regression (a new user): mdn.load gave MDN() whatever the file held, so clone() of a
    # loaded model, a search or a refit trained a default model instead of the saved kind.
    X, y = data()
    y2 = np.exp(np.c_[y, -y])
    est = mdn.MDN(
        components=3, hidden=(8, 8), covariance="full", lr=0.003, seed=7, l2=1e-4,
        target_transform="log", epochs=2, device="cpu",
    ).fit(X, y2)
    est.save(tmp_path / "m.json")
    loaded = mdn.load(tmp_path / "m.json")
    p = loaded.get_params()
    for k, v in dict(components=3, hidden=(8, 8), covariance="full", lr=0.003, seed=7, l2=1e-4,
                     target_transform="log", ensemble=1, family="gaussian").items():
        assert p[k] == v, (k, p[k], v)
    # What scikit-learn's clone does (without needing it installed here).
    again = mdn.MDN(**loaded.get_params()).set_params(epochs=2, device="cpu").fit(X, y2)
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    # A linear ensemble with one target's transform.
    lin = mdn.MDN(hidden="none", ensemble=2, target_transform="y0=log", epochs=2,
                  device="cpu").fit(X, y2)
    lin.save(tmp_path / "lin.json")
    p = mdn.load(tmp_path / "lin.json").get_params()
    assert (p["hidden"], p["ensemble"], p["target_transform"]) == ("none", 2, "y0=log;y1=none")
    with pytest.raises(FileNotFoundError):
        mdn.load(tmp_path / "nope.json")


def test_options_the_package_reads_itself_took_any_value():
    # Regression (a new user): unknown_category="drop" behaved as "error", and
    # drop_missing="yes" was taken, each without a word.
    X, y = data()
    for bad, words in [
        (dict(unknown_category="drop"), "unknown_category must be 'error' or 'ignore', got 'drop'"),
        (dict(drop_missing="yes"), "drop_missing must be True or False, got 'yes'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            mdn.MDN(epochs=1, device="cpu", **bad).fit(X, y)


def test_a_large_offset_feature_was_rounded_without_a_word():
    # Regression (a new user): Unix times spanning 10 minutes became 6 float32 values, with
    # no warning; a target of 1e8 plus noise was called constant.
    r = np.random.default_rng(0)
    t = 1.7e9 + r.uniform(0, 600, 500)
    y = np.sin(2 * np.pi * (t - 1.7e9) / 600) + r.normal(0, 0.2, 500)
    with pytest.warns(UserWarning, match="feature column 'x0' has values about 1.7000e9 .* subtract an offset"):
        mdn.MDN(epochs=1, device="cpu").fit(t[:, None], y)
    with pytest.raises(ValueError, match="target column 'y0' has values about 5.0000e7"):
        mdn.MDN(epochs=1, device="cpu").fit(t[:, None] - 1.7e9, 5e7 + 10 * y)


def test_messages_a_new_user_found_wrong_or_leaking():
    # Regressions (a new user): NaN options said "Out of range float values are not JSON
    # compliant"; a negative count "invalid value: integer `-1`, expected ... 0 or more"
    # though 0 is refused too; a DataFrame's NaN named column 1, not 'km'; a y of the wrong
    # width for log_prob said "X: y has 1 columns"; quantile of a 2-D list a TypeError.
    pd = pytest.importorskip("pandas")
    X, y = data()
    for k in ["lr", "l2", "sigma_floor", "clip_norm", "val_fraction"]:
        with pytest.raises(ValueError, match=rf"^{k} must be a finite number, got nan"):
            mdn.MDN(epochs=1, device="cpu", **{k: float("nan")}).fit(X, y)
    for k in ["components", "batch_size", "threads", "ensemble"]:
        with pytest.raises(ValueError, match=rf"^{k} must be at least 1, got -1"):
            mdn.MDN(epochs=1, device="cpu", **{k: -1}).fit(X, y)
    with pytest.raises(ValueError, match=r"^seed must be 0 or more, got -1"):
        mdn.MDN(epochs=1, device="cpu", seed=-1).fit(X, y)
    df = pd.DataFrame({"km": X[:, 0], "age": X[:, 1]})
    df.loc[7, "km"] = np.nan
    with pytest.raises(ValueError, match=r"X: row 7, column 'km' is missing \(NaN\).*drop_missing=True"):
        mdn.MDN(epochs=1, device="cpu").fit(df, y)
    est = mdn.MDN(epochs=1, device="cpu").fit(X, np.c_[y, -y])
    with pytest.raises(ValueError, match=r"^y: 1 column\(s\), but 2 target\(s\) \(y0, y1\)"):
        est.log_prob(X, y[:, None])
    d = est.predict_distribution(X[:3])
    with pytest.raises(ValueError, match="quantiles: a probability or a 1-D list of them"):
        d.quantile([[0.1], [0.9]])


def test_sample_gave_the_same_draws_every_call():
    # Regression (a new user): sample(n) always used seed 0, so repeated calls returned the
    # same draws, and seed=None or a numpy Generator was refused.
    X, y = data()
    d = mdn.MDN(epochs=1, device="cpu").fit(X, y).predict_distribution(X[:5])
    assert not np.array_equal(d.sample(20), d.sample(20))
    np.testing.assert_array_equal(d.sample(20, seed=3), d.sample(20, seed=3))
    a = d.sample(20, seed=np.random.default_rng(1))
    b = d.sample(20, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert d.sample(4, seed=np.random.RandomState(0)).shape == (5, 4)


def test_eval_sets_mistakes_were_told_as_xs():
    # Regression (a new user): an unknown category in eval_set said "X: row 0 ..." and
    # suggested unknown_category='ignore', which fit does not use; a column count mismatch
    # said "eval_set: 1 features and 1 targets, the training rows 2 and 1".
    pd = pytest.importorskip("pandas")
    X, y = data()
    df = pd.DataFrame({"a": X[:, 0], "c": np.where(X[:, 1] > 0, "p", "q")})
    val = pd.DataFrame({"a": [0.1], "c": ["r"]})
    with pytest.raises(ValueError, match=r"^eval_set X: row 0, column 'c': 'r' is not a category.*add rows of it to X, or leave those rows out of eval_set$"):
        mdn.MDN(epochs=1, device="cpu").fit(df, y, eval_set=(val, [0.5]))
    with pytest.raises(ValueError, match=r"^eval_set: X_val has 1 column\(s\) and y_val 1, but X has 2 and y 1"):
        mdn.MDN(epochs=1, device="cpu").fit(X, y, eval_set=(X[:, :1], y))
