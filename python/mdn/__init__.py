"""Mixture Density Networks: conditional densities p(y | x), with scikit-learn's conventions.

    import mdn
    model = mdn.MDN(components=5).fit(X, y)
    model.predict(X)                     # the mixture mean (scikit-learn's point prediction)
    d = model.predict_distribution(X)    # pi, mu, sigma, mean, var, mode, quantile(q), ...
    model.score(X, y)                    # mean log-likelihood (higher is better)

Training runs the mdn library's training job, the same as `mdn train` on the same rows:
the same seed and device give the same model bits, and models are the JSON files the command
line reads and writes (`save`, `mdn.load`).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings

import numpy as np

# Mesa's Vulkan device-select layer prints "XDG_RUNTIME_DIR is invalid" whenever a GPU is
# probed without a desktop session; it only reorders adapters, which mdn picks itself. Off
# unless the user set it (the `mdn` command does the same).
os.environ.setdefault("NODEVICE_SELECT", "1")

from . import _mdn  # noqa: E402

try:  # scikit-learn's protocol (tags, clone, search, input checks) when it is installed
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import RegressorMixin as _Regressor
    from sklearn.exceptions import NotFittedError

    try:
        from sklearn.utils.validation import validate_data as _validate_data
    except ImportError:  # scikit-learn before 1.6
        def _validate_data(est, *args, **kw):
            return est._validate_data(*args, **kw)
except ImportError:  # pragma: no cover
    _Base = object
    _validate_data = None

    class _Regressor:
        pass

    class NotFittedError(ValueError, AttributeError):
        """An estimator was used before `fit` (scikit-learn's own class when it is installed)."""

__all__ = ["MDN", "Distribution", "NotFittedError", "load", "devices", "__version__"]
__version__ = _mdn.__version__

# Every option of `mdn train` that applies to arrays, by its long name (None: mdn's default,
# which for components, batch_size, patience and max_epochs adapts to the number of rows).
_OPTIONS = {
    "components": None,
    "hidden": (64,),
    "covariance": "diagonal",
    "family": "gaussian",
    "activation": "relu",
    "l2": 0.0,
    "lr": 0.001,
    "batch_size": None,
    "clip_norm": 0.0,
    "patience": None,
    "max_epochs": None,
    "epochs": None,
    "val_fraction": None,
    "seed": 0,
    "random_state": None,
    "sigma_floor": 0.0001,
    "device": "auto",
    "threads": None,
    "ensemble": 1,
    # `mdn train --transform`; named so because scikit-learn takes an estimator with a
    # `transform` attribute for a transformer.
    "target_transform": None,
    "categorical": None,
    "unknown_category": "error",
    "drop_missing": False,
}

# Options of the estimator's own, not of the training job: which DataFrame columns are
# categories, what predicting does with a category never seen in training, and whether
# `fit` leaves out rows with a missing value (done here, before the rows reach the job).
_LOCAL = ("random_state", "categorical", "unknown_category", "drop_missing")

# Options that are whole numbers (a negative one is named here, not in serde's words).
_COUNTS = ("components", "batch_size", "patience", "max_epochs", "epochs", "seed", "threads", "ensemble")

# At most this many categories in one column (as `mdn train`).
_MAX_CATEGORIES = 1000


def _missing(v) -> bool:
    """A missing value as pandas writes one (None, NaN, pd.NA, NaT)."""
    if v is None:
        return True
    try:
        return bool(v != v)
    except (TypeError, ValueError):
        return False


def _is_text(col) -> bool:
    """Whether a DataFrame column holds categories: a pandas categorical, or text (not numbers
    or booleans)."""
    dt = col.dtype
    if str(dt) == "category":
        return True
    if getattr(dt, "kind", "O") in "fiub":
        return False
    try:  # object columns of numbers are numbers
        np.asarray(col, dtype=np.float64)
        return False
    except (TypeError, ValueError):
        return True


def _learn_categories(X, forced) -> list:
    """The categorical columns of the DataFrame X ((column, sorted categories) pairs, in X's
    column order): its text and pandas-categorical columns, and those named in `forced`, as
    `mdn train` learns them from a CSV file's text."""
    cols = [str(c) for c in getattr(X, "columns", [])]
    forced = [forced] if isinstance(forced, str) else list(forced or [])
    unknown = [f for f in forced if f not in cols]
    if unknown:
        raise ValueError(f"categorical: {unknown} are not columns of X ({cols})")
    if not cols:
        if forced:
            raise ValueError("categorical: name columns of a pandas DataFrame X")
        return []
    out = []
    for c, name in zip(X.columns, cols):
        col = X[c]
        if name not in forced and not _is_text(col):
            continue
        values = sorted({str(v) for v in col if not _missing(v)})
        if len(values) > _MAX_CATEGORIES:
            raise ValueError(
                f"X: column {name!r} has {len(values)} different values: too many for a categorical "
                f"feature (at most {_MAX_CATEGORIES}); an id or free text tells the model nothing, "
                "leave the column out"
            )
        if not values:
            raise ValueError(f"X: column {name!r} has no values")
        out.append((name, values))
    return out


def _missing_rows(a) -> np.ndarray:
    """Which rows of `a` (a DataFrame, Series, array or list; 1-D or 2-D) have a missing
    value: None, NaN, pd.NA or NaT, as `mdn train --drop-missing` counts an empty cell or NA."""
    if hasattr(a, "isna"):
        m = np.asarray(a.isna())
    else:
        arr = np.asarray(a, dtype=object)
        m = np.vectorize(_missing, otypes=[bool])(arr) if arr.size else np.zeros(arr.shape, bool)
    return m.reshape(len(m), -1).any(axis=1) if m.ndim > 1 else m


def _take(a, keep: np.ndarray):
    """The rows of `a` where `keep` is true (a DataFrame or Series by position)."""
    if hasattr(a, "iloc"):
        return a.iloc[keep]
    if isinstance(a, (list, tuple)):
        return [r for r, k in zip(a, keep) if k]
    return np.asarray(a)[keep]


def _drop_missing(X, y, what: str):
    """X and y without the rows where either has a missing value, and how many were left
    out (with a warning counting them, as `mdn train --drop-missing` gives)."""
    if _shape(X) is None or _shape(y) is None or len(_shape(X)) != 2:
        return X, y, 0  # the checks that follow say what is wrong
    mx, my = _missing_rows(X), _missing_rows(y)
    if len(mx) != len(my):
        return X, y, 0
    missing = mx | my
    n = int(missing.sum())
    if n == 0:
        return X, y, 0
    if n == len(missing):
        raise ValueError(f"{what}: every row ({n}) has a missing value: no rows left")
    first = int(np.argmax(missing))
    warnings.warn(
        f"{what}: {n} of {len(missing)} rows have a missing value (the first: row {first}); "
        "left out (drop_missing=True)",
        stacklevel=3,
    )
    return _take(X, ~missing), _take(y, ~missing), n


def _encode(X, categorical, unknown="error", what="X"):
    """The DataFrame X with each categorical column replaced, in its place, by one indicator
    column per category (`column=category`, 1.0 for the row's category): the network's inputs,
    as `mdn` reads a CSV file's text. A missing value is an error; a category not in the list
    is an error, or with unknown="ignore" no indicator set (with a warning)."""
    import pandas as pd

    cats = dict(categorical)
    parts, ignored = [], []
    for c in X.columns:
        name = str(c)
        if name not in cats:
            # As numbers (a bool or nullable Int64/Float64/boolean column beside the float
            # indicators made pandas' concat an object column).
            col = X[c]
            if not _is_text(col):
                try:
                    col = col.astype("float64")
                except (TypeError, ValueError):
                    pass
            parts.append(col.to_frame())
            continue
        known = cats[name]
        index = {v: i for i, v in enumerate(known)}
        hot = np.zeros((len(X), len(known)), dtype=np.float32)
        for r, v in enumerate(X[c]):
            if _missing(v):
                raise ValueError(f"{what}: row {r}, column {name!r}: missing value ({v!r})")
            k = index.get(str(v))
            if k is None:
                if unknown == "ignore":
                    ignored.append((r, v))
                    continue
                shown = ", ".join(repr(k) for k in known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
                advice = (
                    "unknown_category='ignore' predicts such rows with no category"
                    if what == "X"
                    else "the model has no input for a category X lacks: add rows of it to X, "
                    f"or leave those rows out of {what.split()[0]}"
                )
                raise ValueError(
                    f"{what}: row {r}, column {name!r}: {str(v)!r} is not a category the model was trained "
                    f"on (it knows {shown}); {advice}"
                )
            hot[r, k] = 1.0
        parts.append(pd.DataFrame(hot, columns=[f"{name}={v}" for v in known], index=X.index))
    if ignored:
        r, v = ignored[0]
        warnings.warn(
            f"X: {len(ignored)} row(s) have a category the model was not trained on (the first: row "
            f"{r}, {v!r}); predicted with no category (unknown_category='ignore')",
            stacklevel=4,
        )
    return pd.concat(parts, axis=1) if parts else X


def devices() -> dict:
    """What `mdn devices --json` lists: the CPU, every GPU adapter, and what "auto" picks."""
    return json.loads(_mdn.devices_json())


def _names(obj, n: int, prefix: str):
    cols = getattr(obj, "columns", None)
    if cols is not None:
        return [str(c) for c in cols]
    name = getattr(obj, "name", None)
    if name is not None and n == 1:
        return [str(name)]
    return [f"{prefix}{i}" for i in range(n)]


def _widths(hidden) -> list:
    """`hidden` as the CLI takes it: 64, [64, 64], "64,64" or "none"."""
    if isinstance(hidden, str):
        text = hidden.strip().lower()
        if text in ("", "none"):
            return []
        parts = [p.strip() for p in text.split(",")]
    elif isinstance(hidden, (int, np.integer)):
        parts = [hidden]
    else:
        try:
            parts = list(hidden)
        except TypeError:
            raise ValueError(f"hidden: expected layer widths such as [64, 64] or \"64,64\", got {hidden!r}") from None
    out = []
    for p in parts:
        try:
            w = int(p)
        except (TypeError, ValueError):
            raise ValueError(f"hidden: {p!r} is not a layer width (a whole number >= 1)") from None
        if w < 1 or w != float(p):
            raise ValueError(f"hidden: {p!r} is not a layer width (a whole number >= 1)")
        out.append(w)
    return out


def _matrix(a, what: str, one_d: bool = True) -> np.ndarray:
    """A 2-D C-contiguous float32 array (pandas objects and lists accepted)."""
    if hasattr(a, "to_numpy"):
        a = a.to_numpy()
    try:
        arr = np.asarray(a)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{what}: not an array of numbers ({e})") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{what}: expected numbers, got an array of {arr.dtype}")
    if arr.ndim == 1:
        if not one_d:
            raise ValueError(
                f"{what}: expected a 2-D array (rows x columns), got a 1-D one; "
                f"use {what}.reshape(-1, 1) for a single feature"
            )
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows x columns), got {arr.ndim}-D")
    if arr.shape[0] == 0:
        raise ValueError(f"{what}: 0 samples (no rows)")
    if arr.shape[1] == 0:
        raise ValueError(f"{what}: no columns")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _text_columns(X, what: str):
    """A DataFrame's columns that hold neither numbers nor booleans: a ValueError naming them
    and a value of each (mdn takes numbers; booleans count as 0 and 1)."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return
    bad = []
    for name, dt in dtypes.items():
        kind = getattr(dt, "kind", "O")
        if kind in "fiub":
            continue
        col = X[name]
        try:  # object columns of numbers are numbers
            np.asarray(col, dtype=np.float64)
            continue
        except (TypeError, ValueError):
            pass
        first = next((v for v in col if not (isinstance(v, float) and v != v)), None)
        bad.append(f"{name!r} ({dt}, e.g. {first!r})")
    if bad:
        raise ValueError(
            f"{what}: column(s) {', '.join(bad)} are not numbers; mdn takes numeric and boolean "
            "columns here (in X given to fit, text columns are categorical features)"
        )


def _whole(v, what: str, low: int, high: int) -> int:
    """`v` as a whole number from `low` to `high`, or a ValueError naming it (not the
    OverflowError or TypeError of the conversion to Rust)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what}: expected a whole number, got {v!r}")
    if not low <= v <= high:
        raise ValueError(f"{what}: expected a whole number from {low} to {high}, got {v}")
    return int(v)


def _draw_seed(seed) -> int:
    """A sampling seed: a whole number as given; drawn from a numpy Generator or RandomState;
    None for fresh entropy (each call its own draws)."""
    if seed is None:
        return int(np.random.default_rng().integers(2**63))
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(2**63))
    if isinstance(seed, np.random.RandomState):
        return int(seed.randint(2**31))
    return _whole(seed, "seed", 0, 2**64 - 1)


def _finite(a: np.ndarray, what: str, names=None, fitting: bool = False) -> None:
    """A ValueError naming the first NaN or infinite value of `a` (rows x columns): its row
    (from 0) and its column, by name when `names` (a DataFrame's columns) gives one."""
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        col = f"column {str(names[c])!r}" if names is not None and c < len(names) else f"column {c}"
        v = a[r, c]
        shown = "missing (NaN)" if v != v else f"{v} (not finite)"
        hint = (
            "; drop_missing=True leaves rows with a missing value out of fit"
            if fitting and v != v
            else ""
        )
        raise ValueError(
            f"{what}: row {r}, {col} is {shown} ({int(bad.sum())} NaN or inf value(s) in all); "
            f"mdn trains and predicts on finite numbers only{hint}"
        )


def _shape(a):
    """The shape of an array, DataFrame or list, without converting anything else."""
    s = getattr(a, "shape", None)
    if s is None and isinstance(a, (list, tuple)):
        try:
            s = np.shape(a)
        except ValueError:  # ragged
            s = None
    return tuple(s) if s is not None else None


def _checked(est, X, y=None, reset=True, fitting=False, encoded=False):
    """X (and y) as float32 rows x columns, checked the way scikit-learn checks estimator
    input when it is installed (and `n_features_in_`, `feature_names_in_` set by `fit` and
    compared by the other methods), else by `_matrix`. `encoded`: X is a categorical model's
    input with its categories made indicator columns, its own columns already checked by
    name (scikit-learn's names are the DataFrame's, not the indicators')."""
    _text_columns(X, "X")
    if isinstance(X, np.ndarray) and X.dtype.kind in "USV" and X.size:
        raise ValueError(
            f"X: expected numbers, got an array of text ({X.dtype}, e.g. {str(X.flat[0])!r}); "
            "give a pandas DataFrame, whose text columns are read as categories"
        )
    if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 2:
        # An object array (a DataFrame's `.values` with a text column): the first text cell.
        for (i, j), v in np.ndenumerate(X):
            if isinstance(v, str):
                raise ValueError(
                    f"X: column {j} holds text ({v!r} in row {i}): give a pandas DataFrame, "
                    "whose text columns are read as categories (not its .values)"
                )
    shape = _shape(X) or ()
    if len(shape) == 1:
        raise ValueError(
            "X: expected a 2-D array (rows x columns), got a 1-D one. Reshape your data: "
            "X.reshape(-1, 1) for a single feature, X.reshape(1, -1) for a single row"
        )
    if len(shape) > 2:
        raise ValueError(f"X: expected a 2-D array (rows x columns), got a {len(shape)}-D one")
    y_rows = (_shape(y) or (None,))[0] if y is not None else None
    if y_rows is not None and len(shape) > 1 and shape[0] != y_rows:
        raise ValueError(f"X has {shape[0]} rows but y has {y_rows}")
    if _validate_data is None or encoded:
        Xa = _matrix(X, "X", one_d=False)
        ya = None if y is None else _matrix(y, "y")
        if fitting and y is None:
            raise ValueError("fit needs the targets y")
    else:
        kw = dict(reset=reset, dtype=[np.float64, np.float32], ensure_all_finite=False)

        def validate():
            if fitting:
                return _validate_data(est, X, y, multi_output=True, y_numeric=True, **kw)
            return _validate_data(est, X, **kw), None

        try:
            try:
                Xa, ya = validate()
            except TypeError as e:
                if "ensure_all_finite" not in str(e):
                    raise
                kw["force_all_finite"] = kw.pop("ensure_all_finite")  # scikit-learn before 1.6
                Xa, ya = validate()
        except ValueError as e:
            # scikit-learn checks y's values itself, without their place ("Input y contains
            # NaN."): ours names the row and column.
            if y is not None and str(e).startswith("Input y contains"):
                _finite(_matrix(y, "y"), "y")
            raise
        if ya is not None and ya.ndim == 1:
            ya = ya.reshape(-1, 1)
    Xa = np.ascontiguousarray(Xa, dtype=np.float32)
    columns = getattr(X, "columns", None)
    _finite(Xa, "X", None if encoded else columns, fitting)
    if ya is not None:
        ya = np.ascontiguousarray(ya, dtype=np.float32)
        _finite(ya, "y", getattr(y, "columns", None), fitting)
    return Xa, ya


class Distribution:
    """The predicted mixture for each row.

    pi (n, K), mu and sigma (n, K, D); mean, var, std and mode (n, D) per target. `cov`
    (n, K, D, D) for full-covariance models. A single-target model's mean, var, std and mode
    are (n,). At given target values y (one per row, or one for every row): `cdf`, `sf`,
    `pdf` and `logpdf` (joint, or per target with `marginal=True`), `crps`; `quantile` (or
    `ppf`) and `interval` at given probabilities; `sample`.

        d = model.predict_distribution(X)
        low, high = d.interval(0.9)        # a 90% prediction interval per row
        p_over = d.sf(100.0)               # P(y > 100) per row
    """

    def __init__(self, model: "_mdn.Model", X: np.ndarray, parts: dict, device: str, threads):
        self._model, self._X, self._device, self._threads = model, X, device, threads
        self.pi = parts["pi"]
        self.mu = parts["mu"]
        self.sigma = parts["sigma"]
        self.cov = parts.get("cov")
        # Student's t components: each one's degrees of freedom (n, K); sigma and cov are
        # then the components' scales, not their standard deviations.
        self.dof = parts.get("dof")
        squeeze = (lambda a: a[:, 0]) if len(model.targets) == 1 else (lambda a: a)
        self._squeeze = squeeze
        self.mean = squeeze(parts["mean"])
        self.var = squeeze(parts["var"])
        self._mode = squeeze(parts["mode"]) if "mode" in parts else None
        # A deep ensemble (ensemble=M): the variance split into what each member sees as
        # noise (aleatoric) and where the members disagree (epistemic); they add up to var.
        self.ensemble = int(parts.get("ensemble", 1))
        self.aleatoric_var = squeeze(parts["aleatoric_var"]) if "aleatoric_var" in parts else self.var
        self.epistemic_var = (
            squeeze(parts["epistemic_var"]) if "epistemic_var" in parts else np.zeros_like(self.var)
        )

    def quantile(self, q):
        """Exact quantiles of each target's marginal mixture: (n,) for one level and one
        target, (n, L) for L levels, (n, L, D) with several targets."""
        try:
            levels = np.atleast_1d(np.asarray(q, dtype=float))
        except (TypeError, ValueError):
            raise ValueError(f"quantiles: probabilities between 0 and 1, got {q!r}") from None
        if levels.ndim != 1:
            raise ValueError(
                f"quantiles: a probability or a 1-D list of them, got an array of shape {levels.shape}"
            )
        parts = self._model.predict(self._X, list(levels), self._device, self._threads, False)
        out = parts["quantiles"]  # (n, L, D)
        if len(self._model.targets) == 1:
            out = out[:, :, 0]
        return out[:, 0] if np.ndim(q) == 0 else out

    def interval(self, level: float = 0.9):
        """The central interval of probability `level`: (low, high)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be between 0 and 1, got {level}")
        tail = (1.0 - level) / 2.0
        both = self.quantile([tail, 1.0 - tail])
        return both[:, 0], both[:, 1]

    def sample(self, n: int = 1, seed=None, temperature: float = 1.0, sigma_scale: float = 1.0):
        """`n` draws per row: (rows, n, D), or (rows, n) for one target. `seed`: a whole number
        for the same draws every time, a numpy Generator or RandomState to draw it from, or
        None (the default) for fresh draws, as numpy and scipy do."""
        n = _whole(n, "n (draws per row)", 1, 2**63 - 1)
        seed = _draw_seed(seed)
        s = self._model.sample(self._X, n, seed, temperature, sigma_scale, self._device, self._threads)
        return s[:, :, 0] if len(self._model.targets) == 1 else s

    @property
    def mode(self):
        """Each target's highest-density point (of its marginal), computed when first asked
        for (an iteration from every component's mean: the costliest part of a prediction)."""
        if self._mode is None:
            parts = self._model.predict(self._X, None, self._device, self._threads, True)
            self._mode = self._squeeze(parts["mode"])
        return self._mode

    @property
    def std(self):
        """Each target's standard deviation: (n,) for one target, (n, D) for several."""
        return np.sqrt(self.var)

    def ppf(self, q):
        """The quantile function, scipy's name for `quantile`."""
        return self.quantile(q)

    def _at(self, y, what: str) -> np.ndarray:
        """`y` as (rows, D) float64: a value per row and target ((n,) for one target, (n, D)),
        or the same for every row (a number, or D values)."""
        d, n = len(self._model.targets), self._X.shape[0]
        a = np.asarray(y, dtype=np.float64)
        if a.ndim == 0 or (a.ndim == 1 and a.shape[0] == d and (d > 1 or n != 1)):
            a = np.broadcast_to(a, (n, d)) if a.ndim == 0 or d > 1 else a
        if a.ndim == 1 and d == 1:
            a = a.reshape(-1, 1)
        if a.ndim == 2 and a.shape == (1, d):
            a = np.broadcast_to(a, (n, d))
        if a.shape != (n, d):
            raise ValueError(
                f"{what}: expected {n} row(s) of {d} target value(s), or one value for every row, "
                f"got shape {np.shape(y)}"
            )
        return np.ascontiguousarray(a)

    def _marginals(self, y, what):
        parts = self._model.marginals(self._X, self._at(y, what), self._device, self._threads)
        return {k: self._squeeze(v) for k, v in parts.items()}

    def cdf(self, y):
        """P(Y_j <= y_j) under each target's marginal mixture: (n,) for one target, (n, D)."""
        return self._marginals(y, "cdf")["cdf"]

    def sf(self, y):
        """P(Y_j > y_j), the survival function: 1 - cdf(y)."""
        return 1.0 - self.cdf(y)

    def pdf(self, y, marginal: bool = False):
        """The density at y: of the joint distribution of all targets, (n,), or with
        `marginal=True` each target's marginal density, (n,) for one target, (n, D)."""
        if marginal:
            return self._marginals(y, "pdf")["pdf"]
        return np.exp(self.logpdf(y))

    def logpdf(self, y, marginal: bool = False):
        """The log density at y (natural log): joint, (n,), or each target's marginal with
        `marginal=True`. The joint one is the model's log-likelihood (`MDN.log_prob`)."""
        if marginal:
            with np.errstate(divide="ignore"):
                return np.log(self._marginals(y, "logpdf")["pdf"])
        at = self._at(y, "logpdf").astype(np.float32)
        return self._model.log_prob(self._X, at, self._device, self._threads)

    def crps(self, y):
        """The continuous ranked probability score of y under each target's marginal (lower is
        better; in the targets' units): (n,) for one target, (n, D)."""
        return self._marginals(y, "crps")["crps"]


class MDN(_Regressor, _Base):
    """A Mixture Density Network estimator (scikit-learn's conventions).

    Every option of `mdn train` under its long name, with its defaults: components,
    hidden, covariance ("diagonal" or "full"), family ("gaussian", or "student-t" for heavy
    tails: each component a multivariate t whose degrees of freedom `dof`, above 2, are
    learnt), activation ("relu" or "tanh"), l2, lr,
    batch_size, clip_norm, patience, max_epochs, epochs (fixed epochs instead of early
    stopping), val_fraction, seed, sigma_floor, device ("auto", "gpu", "software", "cpu"),
    threads, ensemble (M members of a deep ensemble, seeds seed..seed+M-1), target_transform
    (`mdn train --transform`: "log"
    for positive targets, "logit:LOW,HIGH" for bounded ones, or per target
    "price=log;share=logit:0,1"; densities, scores and quantiles stay in y's units, while the
    components' mu and sigma are of the transformed target). None means mdn's
    default, which for components, batch_size, patience and max_epochs adapts to the number
    of rows. `random_state` is scikit-learn's name for the seed: when given (an int, or a
    numpy RandomState to draw one from) it is used instead of `seed`. `verbose=True` prints
    progress; `callback` is called with a dict after every epoch (return False to stop), and
    `history_` keeps those dicts (a deep ensemble's with `member`, 1 to M).

    A fitted MDN pickles (through its model file: unpickled, it predicts the same bits) and
    passes scikit-learn's estimator checks.
    """

    def __init__(
        self,
        components=None,
        hidden=(64,),
        covariance="diagonal",
        activation="relu",
        l2=0.0,
        lr=0.001,
        batch_size=None,
        clip_norm=0.0,
        patience=None,
        max_epochs=None,
        epochs=None,
        val_fraction=None,
        seed=0,
        sigma_floor=0.0001,
        device="auto",
        threads=None,
        ensemble=1,
        target_transform=None,
        verbose=False,
        callback=None,
        random_state=None,
        categorical=None,
        unknown_category="error",
        family="gaussian",
        drop_missing=False,
    ):
        self.components = components
        self.hidden = hidden
        self.covariance = covariance
        self.family = family
        self.activation = activation
        self.l2 = l2
        self.lr = lr
        self.batch_size = batch_size
        self.clip_norm = clip_norm
        self.patience = patience
        self.max_epochs = max_epochs
        self.epochs = epochs
        self.val_fraction = val_fraction
        self.seed = seed
        self.sigma_floor = sigma_floor
        self.device = device
        self.threads = threads
        self.ensemble = ensemble
        self.target_transform = target_transform
        self.verbose = verbose
        self.callback = callback
        self.random_state = random_state
        self.categorical = categorical
        self.unknown_category = unknown_category
        self.drop_missing = drop_missing

    # -- scikit-learn's protocol --

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in list(_OPTIONS) + ["verbose", "callback"]}

    def set_params(self, **params) -> "MDN":
        for k, v in params.items():
            if k not in _OPTIONS and k not in ("verbose", "callback"):
                raise ValueError(f"unknown option {k!r}; the options are {', '.join(_OPTIONS)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        changed = [f"{k}={getattr(self, k)!r}" for k, d in _OPTIONS.items() if getattr(self, k) != d]
        return f"MDN({', '.join(changed)})"

    def _job(self) -> str:
        job = {}
        for k, default in _OPTIONS.items():
            v = getattr(self, k)
            if k in _LOCAL:
                continue
            if k == "seed" and self.random_state is not None:
                v = self._seed()
            if v is None or (k != "hidden" and v == default):
                continue
            if k == "hidden":
                v = _widths(v)
            elif isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating,)):
                v = float(v)
            # What the job's JSON cannot say, or says as serde's words: named here.
            if isinstance(v, float) and not np.isfinite(v):
                raise ValueError(f"{k} must be a finite number, got {v}")
            if k in _COUNTS and isinstance(v, int) and not isinstance(v, bool) and v < 0:
                raise ValueError(f"{k} must be {'0 or more' if k == 'seed' else 'at least 1'}, got {v}")
            job["transform" if k == "target_transform" else k] = v
        try:
            return json.dumps(job, allow_nan=False)
        except ValueError as e:
            raise ValueError(f"options: {e}") from None

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool):
            if rs < 0:
                raise ValueError(f"random_state must be a non-negative integer, got {rs}")
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(np.iinfo(np.int32).max))
        raise ValueError(f"random_state must be an int or a numpy RandomState, got {rs!r}")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.allow_nan = False
        # `score` is the mean log-likelihood, not R^2, so scikit-learn's check that a
        # regressor's score exceeds 0.5 (an R^2 threshold) does not apply; the tests check
        # the R^2 of `predict` on the same data instead.
        tags.regressor_tags.poor_score = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def __getstate__(self):
        # The model travels as its file's JSON text (the native handle does not pickle).
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        if "model_" in state:
            state["model_"] = state["model_"].to_json()
        return state

    def __setstate__(self, state):
        state = dict(state)
        if isinstance(state.get("model_"), str):
            state["model_"] = _mdn.Model.from_json(state["model_"])
        if hasattr(super(), "__setstate__"):
            super().__setstate__(state)
        else:
            self.__dict__.update(state)

    def fit(self, X, y, eval_set=None, callback=None) -> "MDN":
        """Trains on rows X (n, d) and targets y (n,) or (n, D). `eval_set=(X_val, y_val)`
        validates on those rows instead of holding out `val_fraction` of X. Ctrl-C stops after
        the current epoch, keeps the best model so far in the estimator (with a warning), and
        raises KeyboardInterrupt, so that a loop or a search of fits stops too; a callback
        returning False stops training the same way without raising. A DataFrame's text
        and pandas-categorical columns (and those named in `categorical`) are categorical
        features, one indicator input per category, kept in the model as `mdn train` keeps
        them. With `drop_missing=True` rows of X and y (and of eval_set) with a missing value
        (None, NaN, pd.NA) are left out, with a warning counting them, as `mdn train
        --drop-missing` leaves them out; the model records how many
        (`training_["rows_left_out"]`)."""
        self._check_local()
        left_out = 0
        if self.drop_missing:
            X, y, left_out = _drop_missing(X, y, "X, y")
            if eval_set is not None and len(eval_set) == 2:
                xv, yv, n = _drop_missing(eval_set[0], eval_set[1], "eval_set")
                eval_set, left_out = (xv, yv), left_out + n
        cats = _learn_categories(X, self.categorical)
        # scikit-learn's convention: the columns given, not the indicators made of them.
        given = [str(c) for c in X.columns] if cats else None
        if cats:
            X = _encode(X, cats)
            if eval_set is not None and len(eval_set) == 2:
                eval_set = (_encode(eval_set[0], cats, what="eval_set X"), eval_set[1])
        Xa, ya = _checked(self, X, y, reset=True, fitting=True)
        if Xa.shape[0] < 2:
            raise ValueError(
                f"X has {Xa.shape[0]} sample (n_samples={Xa.shape[0]}): an MDN learns a "
                "distribution from at least 2 rows"
            )
        features = _names(X, Xa.shape[1], "x")
        targets = _names(y, ya.shape[1], "y")
        xv = yv = None
        if eval_set is not None:
            if len(eval_set) != 2:
                raise ValueError("eval_set: expected (X_val, y_val)")
            _text_columns(eval_set[0], "eval_set X")
            xv, yv = _matrix(eval_set[0], "eval_set X", one_d=False), _matrix(eval_set[1], "eval_set y")
            _finite(xv, "eval_set X")
            _finite(yv, "eval_set y")
            if xv.shape[1] != Xa.shape[1] or yv.shape[1] != ya.shape[1]:
                raise ValueError(
                    f"eval_set: X_val has {xv.shape[1]} column(s) and y_val {yv.shape[1]}, "
                    f"but X has {Xa.shape[1]} and y {ya.shape[1]}"
                )
        user = callback or self.callback
        history = []

        def on_event(event):
            if event.get("type") == "epoch":
                history.append(event)
                if self.verbose:
                    val = event.get("val_nll")
                    print(
                        f"epoch {event['epoch']}/{event['max_epochs']}  train {event['train_nll']:.4f}"
                        + (f"  val {val:.4f}" if val is not None else "")
                        + f"  {event['rows_per_sec']:.0f} rows/s",
                        file=sys.stderr,
                        flush=True,
                    )
            elif self.verbose and event.get("type") in ("warning", "note"):
                print(event["message"], file=sys.stderr, flush=True)
            if event.get("type") == "warning":
                warnings.warn(event["message"], stacklevel=3)
            # The user's callback sees the epochs (notes and warnings go to `verbose` and
            # the warnings module).
            if user is not None and event.get("type") == "epoch":
                return user(event)
            return None

        model, interrupted = _mdn.fit(
            self._job(),
            Xa,
            ya,
            features,
            targets,
            xv,
            yv,
            on_event,
            json.dumps([{"column": c, "categories": v} for c, v in cats]) if cats else None,
            left_out,
        )
        self.model_ = model
        self.n_features_in_ = Xa.shape[1]
        if given is not None:
            self.n_features_in_ = len(given)
            self.feature_names_in_ = np.asarray(given, dtype=object)
        elif _validate_data is None:  # else scikit-learn's checks set (or removed) it
            if hasattr(X, "columns"):
                self.feature_names_in_ = np.asarray(features, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        self.history_ = history
        info = json.loads(model.training)
        if info and info.get("stop_reason") == "interrupted":
            warnings.warn(
                f"training was stopped after epoch {info.get('epochs')}; the model keeps "
                f"the parameters of epoch {info.get('saved_epoch')}",
                stacklevel=2,
            )
        if interrupted:
            # The estimator is fitted (with the model so far); a loop or a search of fits
            # stops too, as Ctrl-C stops any Python code.
            raise KeyboardInterrupt
        return self

    def _check_local(self):
        """The options the package itself reads (the others are checked by mdn's job)."""
        if self.unknown_category not in ("error", "ignore"):
            raise ValueError(
                f"unknown_category must be 'error' or 'ignore', got {self.unknown_category!r}"
            )
        if not isinstance(self.drop_missing, (bool, np.bool_)):
            raise ValueError(f"drop_missing must be True or False, got {self.drop_missing!r}")

    def _check(self):
        self._check_local()
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "This MDN instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )
        return self.model_

    def _x(self, X):
        m = self._check()
        if m.categorical:
            # The categorical columns' text, as the model file says: a DataFrame by name.
            cols = getattr(X, "columns", None)
            if cols is None:
                raise ValueError(
                    f"X: the model reads {[c for c, _ in m.categorical]} as categories: give a pandas "
                    f"DataFrame with the columns {m.columns}"
                )
            names = [str(c) for c in cols]
            missing = [c for c in m.columns if c not in names]
            if missing:
                raise ValueError(f"X lacks the model's column(s) {missing}; the model takes {m.columns}, X has {names}")
            X = _encode(X[[cols[names.index(c)] for c in m.columns]], m.categorical, self.unknown_category)
            Xa, _ = _checked(self, X, reset=False, encoded=True)
            return m, Xa
        cols = getattr(X, "columns", None)
        if cols is not None and not all(f == f"x{i}" for i, f in enumerate(m.features)):
            # Columns by name, as the command line reads them: reordered columns are put in
            # the model's order; missing or unknown ones are an error.
            names = [str(c) for c in cols]
            missing = [f for f in m.features if f not in names]
            if missing:
                raise ValueError(
                    f"X lacks the model's feature column(s) {missing}; the model takes {m.features}, X has {names}"
                )
            if names != m.features:
                X = X[m.features]
        Xa, _ = _checked(self, X, reset=False)
        if Xa.shape[1] != len(m.features):
            raise ValueError(
                f"X has {Xa.shape[1]} features, but MDN is expecting {len(m.features)} features "
                f"as input ({', '.join(m.features)})"
            )
        return m, Xa

    def predict_distribution(self, X) -> Distribution:
        """The predicted mixture of every row (see `Distribution`)."""
        m, Xa = self._x(X)
        parts = m.predict(Xa, None, self._device(), self.threads, False)
        return Distribution(m, Xa, parts, self._device(), self.threads)

    def predict(self, X, return_std: bool = False):
        """The mixture mean: (n,) for one target, (n, D) for several; with `return_std=True`
        also each target's predictive standard deviation, as GaussianProcessRegressor gives."""
        d = self.predict_distribution(X)
        return (d.mean, d.std) if return_std else d.mean

    def log_prob(self, X, y):
        """Log-likelihood of each row (natural log, original units of the targets)."""
        m, Xa = self._x(X)
        ya = _matrix(y, "y")
        _finite(ya, "y")
        return m.log_prob(Xa, ya, self._device(), self.threads)

    def score(self, X, y) -> float:
        """Mean log-likelihood per row: higher is better (as GridSearchCV expects)."""
        return float(np.mean(self.log_prob(X, y)))

    def sample(self, X, n: int = 1, seed=None):
        """`n` draws of the targets per row: (rows, n) or (rows, n, D). `seed` as for
        `Distribution.sample` (None: fresh draws)."""
        return self.predict_distribution(X).sample(n, seed)

    def _device(self) -> str:
        # Predictions run on the CPU backend unless a device was named explicitly.
        return "cpu" if self.device in (None, "auto") else self.device

    def save(self, path) -> None:
        """Writes the model file (the format `mdn train` writes; `mdn predict` reads it)."""
        self._check().save(str(path))

    @property
    def training_(self) -> dict:
        """How the model was trained (the model file's `training` record)."""
        return json.loads(self._check().training)


def _params_of(model) -> dict:
    """The estimator options that train this model's kind again (clone, a search, a refit):
    its architecture, family, transforms, members and the training record's settings."""
    m = json.loads(model.to_json())
    a, t = m.get("arch", {}), m.get("training") or {}
    p = {
        "components": a.get("components"),
        "hidden": tuple(a.get("hidden", [])) or "none",
        "activation": a.get("activation", "relu"),
        "covariance": a.get("covariance", "diagonal"),
        "family": a.get("family", "gaussian"),
        "sigma_floor": a.get("sigma_floor", 0.0001),
        "ensemble": 1 + len(m.get("members") or []),
    }
    # (Not the batch size: by default it adapts to the rows, and the record has the one used.)
    for k in ("seed", "lr", "l2", "clip_norm"):
        if k in t:
            p[k] = t[k]
    transforms = m.get("transforms")
    if transforms and any(x != "none" for x in transforms):
        targets = m.get("targets", [])
        if len(set(transforms)) == 1:
            p["target_transform"] = transforms[0]
        else:
            p["target_transform"] = ";".join(f"{n}={x}" for n, x in zip(targets, transforms))
    if m.get("categorical"):
        p["categorical"] = [c["column"] for c in m["categorical"]]
    # Only what differs from the defaults (the repr shows those).
    defaults = MDN().get_params()
    return {k: v for k, v in p.items() if defaults.get(k) != v}


def load(path) -> MDN:
    """An MDN from a model file written by `mdn train`, `mdn serve` or `MDN.save`."""
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, "no such model file", str(path))
    model = _mdn.Model.load(str(path))
    est = MDN(**_params_of(model))
    info = json.loads(model.training) or {}
    est.model_ = model
    est.n_features_in_ = len(model.features)
    if model.categorical:
        # The columns it takes, not the indicators made of its categories.
        est.n_features_in_ = len(model.columns)
        est.feature_names_in_ = np.asarray(model.columns, dtype=object)
    elif not all(f == f"x{i}" for i, f in enumerate(model.features)):
        est.feature_names_in_ = np.asarray(model.features, dtype=object)
    est.history_ = info.get("history", [])
    return est
