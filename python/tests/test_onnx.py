"""`mdn export --format onnx` run by ONNX Runtime, against `mdn predict --json` on the same
rows (extremes included), for every kind of model mdn trains."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

if os.environ.get("MDN_REQUIRE_PYTHON") == "1":  # CI: a missing onnxruntime fails, never skips
    import onnxruntime as ort
else:
    ort = pytest.importorskip("onnxruntime")

ROOT = pathlib.Path(__file__).resolve().parents[2]
MDN_BIN = os.environ.get("MDN_BIN", str(ROOT / "target" / "release" / "mdn"))

# Relative tolerance, and an absolute one in each output's own scale (a value that cancels
# to near zero, such as a mean near 0, is compared with its scale, not with itself).
RTOL = 1e-5


def cli(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("MDN_DEVICE", "MDN_THREADS")}
    out = subprocess.run([MDN_BIN, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def table(path, X, Y):
    names = [f"x{i}" for i in range(X.shape[1])] + [f"y{j}" for j in range(Y.shape[1])]
    np.savetxt(path, np.column_stack([X, Y]), delimiter=",", header=",".join(names), comments="", fmt="%.9g")
    return ",".join(names[X.shape[1]:])


def rows(d, seed=0, n=600, targets=1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, d)).astype(np.float32)
    Y = np.column_stack(
        [np.sin(3 * X[:, 0] + j) + 0.5 * X[:, -1] * rng.normal(size=n) + 0.1 * rng.normal(size=n) for j in range(targets)]
    ).astype(np.float32)
    return X, Y


def extremes(d):
    """Ordinary rows, the training range's edges and far beyond it, and zeros."""
    rng = np.random.default_rng(9)
    X = rng.uniform(-1, 1, size=(40, d))
    X = np.vstack([X, np.full((1, d), -1.0), np.full((1, d), 1.0), np.full((1, d), 25.0), np.full((1, d), -40.0), np.zeros((1, d))])
    return X.astype(np.float32)


def close(name, got, want, scale):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, mdn predict {want.shape}"
    err = np.abs(got - want)
    bound = RTOL * np.abs(want) + RTOL * scale
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (
        f"{name}: worst element {worst}: onnxruntime {got[worst]!r}, mdn predict {want[worst]!r} "
        f"(difference {err[worst]:.3g}, allowed {bound[worst]:.3g})"
    )


KINDS = {
    "diagonal": (2, 1, ["--components", 3]),
    "tanh deep": (3, 2, ["--activation", "tanh", "--hidden", "32,32,16", "--components", 4]),
    "full covariance": (2, 3, ["--covariance", "full", "--components", 2]),
    "full covariance, one target": (1, 1, ["--covariance", "full", "--components", 2]),
    "ensemble": (2, 2, ["--ensemble", 3, "--components", 2]),
    "full covariance ensemble": (2, 2, ["--ensemble", 2, "--covariance", "full", "--components", 2]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_onnxruntime_gives_what_mdn_predict_gives(tmp_path, kind):
    d, targets, flags = KINDS[kind]
    X, Y = rows(d, targets=targets)
    target = table(tmp_path / "train.csv", X, Y)
    cli("train", "--data", "train.csv", "--target", target, "--epochs", 30, "--device", "cpu", "--quiet",
        "--seed", 3, *flags, cwd=tmp_path)
    cli("export", "model.json", "--out", "model.onnx", cwd=tmp_path)
    Xe = extremes(d)
    table(tmp_path / "rows.csv", Xe, np.zeros((len(Xe), targets), np.float32))
    want = json.loads(cli("predict", "--data", "rows.csv", "--json", "--device", "cpu", cwd=tmp_path))["rows"]

    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["features"]) == [f"x{i}" for i in range(d)]
    assert json.loads(meta["targets"]) == target.split(",")
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"x": Xe})))
    full = "full" in kind
    assert names == ["pi", "mu", "sigma"] + (["scale_tril"] if full else []) + ["mean", "variance"]
    y_scale = np.std(Y, axis=0)
    close("pi", got["pi"], [r["pi"] for r in want], 1.0)
    close("mu", got["mu"], [r["mu"] for r in want], y_scale)
    close("sigma", got["sigma"], [r["sigma"] for r in want], y_scale)
    close("mean", got["mean"], [r["mean"] for r in want], y_scale)
    close("variance", got["variance"], [r["variance"] for r in want], y_scale**2)
    if full:
        # Each component's covariance, L L^T, against what mdn predict --json reports.
        L = got["scale_tril"].astype(np.float64)
        assert np.all(np.triu(L, 1) == 0), "the Cholesky factors are lower triangular"
        cov = L @ np.swapaxes(L, -1, -2)
        if "cov" in want[0]:
            close("cov", cov, [r["cov"] for r in want], np.outer(y_scale, y_scale))
        np.testing.assert_allclose(np.sqrt(np.einsum("nkjj->nkj", cov)), got["sigma"], rtol=1e-5)


def test_export_refuses_what_it_cannot_do(tmp_path):
    X, Y = rows(1)
    table(tmp_path / "train.csv", X, Y)
    cli("train", "--data", "train.csv", "--epochs", 2, "--device", "cpu", "--quiet", cwd=tmp_path)
    for args, message in [
        (["export", "missing.json"], "missing.json"),
        (["export", "model.json", "--out", "model.json"], "is the --model file"),
        (["export", "model.json", "--format", "tflite"], "tflite"),
        (["export", "model.json", "--out", "nowhere/m.onnx"], "nowhere"),
    ]:
        out = subprocess.run([MDN_BIN, *args], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        assert message in out.stderr, (args, out.stderr)
        assert "panicked" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "train.csv"]
    # The default name: the model's, with .onnx.
    cli("export", cwd=tmp_path)
    assert (tmp_path / "model.onnx").stat().st_size > 0
