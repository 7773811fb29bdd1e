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

try:  # scikit-learn's protocol (tags, clone, search) when it is installed; not required
    from sklearn.base import BaseEstimator as _Base
except ImportError:  # pragma: no cover
    _Base = object

__all__ = ["MDN", "Distribution", "load", "devices", "__version__"]
__version__ = _mdn.__version__

# Every option of `mdn train` that applies to arrays, by its long name (None: mdn's default,
# which for components, batch_size, patience and max_epochs adapts to the number of rows).
_OPTIONS = {
    "components": None,
    "hidden": (64,),
    "covariance": "diagonal",
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
    "sigma_floor": 0.0001,
    "device": "auto",
    "threads": None,
    "ensemble": 1,
}


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
        raise ValueError(f"{what}: no rows")
    if arr.shape[1] == 0:
        raise ValueError(f"{what}: no columns")
    return np.ascontiguousarray(arr, dtype=np.float32)


class Distribution:
    """The predicted mixture for each row.

    pi (n, K), mu and sigma (n, K, D); mean, var and mode (n, D) per target. `cov` (n, K, D, D)
    for full-covariance models. A single-target model's mean, var and mode are (n,).
    """

    def __init__(self, model: "_mdn.Model", X: np.ndarray, parts: dict, device: str, threads):
        self._model, self._X, self._device, self._threads = model, X, device, threads
        self.pi = parts["pi"]
        self.mu = parts["mu"]
        self.sigma = parts["sigma"]
        self.cov = parts.get("cov")
        squeeze = (lambda a: a[:, 0]) if len(model.targets) == 1 else (lambda a: a)
        self._squeeze = squeeze
        self.mean = squeeze(parts["mean"])
        self.var = squeeze(parts["var"])
        self.mode = squeeze(parts["mode"])
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
        levels = np.atleast_1d(np.asarray(q, dtype=float))
        parts = self._model.predict(self._X, list(levels), self._device, self._threads)
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

    def sample(self, n: int = 1, seed: int = 0, temperature: float = 1.0, sigma_scale: float = 1.0):
        """`n` draws per row: (rows, n, D), or (rows, n) for one target."""
        s = self._model.sample(self._X, n, seed, temperature, sigma_scale, self._device, self._threads)
        return s[:, :, 0] if len(self._model.targets) == 1 else s


class MDN(_Base):
    """A Mixture Density Network estimator (scikit-learn's conventions).

    Every option of `mdn train` under its long name, with its defaults: components,
    hidden, covariance ("diagonal" or "full"), activation ("relu" or "tanh"), l2, lr,
    batch_size, clip_norm, patience, max_epochs, epochs (fixed epochs instead of early
    stopping), val_fraction, seed, sigma_floor, device ("auto", "gpu", "software", "cpu"),
    threads, ensemble (M members of a deep ensemble, seeds seed..seed+M-1). None means mdn's default, which for components, batch_size, patience and
    max_epochs adapts to the number of rows. `verbose=True` prints progress; `callback`
    is called with a dict after every epoch (return False to stop).
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
        verbose=False,
        callback=None,
    ):
        self.components = components
        self.hidden = hidden
        self.covariance = covariance
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
        self.verbose = verbose
        self.callback = callback

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
            if v is None or (k != "hidden" and v == default):
                continue
            if k == "hidden":
                v = _widths(v)
            elif isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating,)):
                v = float(v)
            job[k] = v
        try:
            return json.dumps(job, allow_nan=False)
        except ValueError as e:
            raise ValueError(f"options: {e}") from None

    def fit(self, X, y, eval_set=None, callback=None) -> "MDN":
        """Trains on rows X (n, d) and targets y (n,) or (n, D). `eval_set=(X_val, y_val)`
        validates on those rows instead of holding out `val_fraction` of X. Ctrl-C stops after
        the current epoch and keeps the best model so far (with a warning)."""
        Xa, ya = _matrix(X, "X", one_d=False), _matrix(y, "y")
        if Xa.shape[0] != ya.shape[0]:
            raise ValueError(f"X has {Xa.shape[0]} rows but y has {ya.shape[0]}")
        features = _names(X, Xa.shape[1], "x")
        targets = _names(y, ya.shape[1], "y")
        xv = yv = None
        if eval_set is not None:
            if len(eval_set) != 2:
                raise ValueError("eval_set: expected (X_val, y_val)")
            xv, yv = _matrix(eval_set[0], "eval_set X", one_d=False), _matrix(eval_set[1], "eval_set y")
            if xv.shape[1] != Xa.shape[1] or yv.shape[1] != ya.shape[1]:
                raise ValueError(
                    f"eval_set: {xv.shape[1]} features and {yv.shape[1]} targets, "
                    f"the training rows {Xa.shape[1]} and {ya.shape[1]}"
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

        model = _mdn.fit(self._job(), Xa, ya, features, targets, xv, yv, on_event)
        self.model_ = model
        self.n_features_in_ = Xa.shape[1]
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(features, dtype=object)
        self.history_ = history
        info = json.loads(model.training)
        if info and info.get("stop_reason") == "interrupted":
            warnings.warn(
                f"training was stopped after epoch {info.get('epochs')}; the model keeps "
                f"the parameters of epoch {info.get('saved_epoch')}",
                stacklevel=2,
            )
        return self

    def _check(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("this MDN is not fitted yet: call fit(X, y) first")
        return self.model_

    def _x(self, X):
        m = self._check()
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
        Xa = _matrix(X, "X", one_d=False)
        if Xa.shape[1] != len(m.features):
            raise ValueError(f"X has {Xa.shape[1]} columns; the model takes {len(m.features)} ({', '.join(m.features)})")
        return m, Xa

    def predict_distribution(self, X) -> Distribution:
        """The predicted mixture of every row (see `Distribution`)."""
        m, Xa = self._x(X)
        return Distribution(m, Xa, m.predict(Xa, None, self._device(), self.threads), self._device(), self.threads)

    def predict(self, X):
        """The mixture mean: (n,) for one target, (n, D) for several."""
        return self.predict_distribution(X).mean

    def log_prob(self, X, y):
        """Log-likelihood of each row (natural log, original units of the targets)."""
        m, Xa = self._x(X)
        ya = _matrix(y, "y")
        return m.log_prob(Xa, ya, self._device(), self.threads)

    def score(self, X, y) -> float:
        """Mean log-likelihood per row: higher is better (as GridSearchCV expects)."""
        return float(np.mean(self.log_prob(X, y)))

    def sample(self, X, n: int = 1, seed: int = 0):
        """`n` draws of the targets per row: (rows, n) or (rows, n, D)."""
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


def load(path) -> MDN:
    """An MDN from a model file written by `mdn train`, `mdn serve` or `MDN.save`."""
    model = _mdn.Model.load(str(path))
    est = MDN()
    info = json.loads(model.training) or {}
    est.model_ = model
    est.n_features_in_ = len(model.features)
    if not all(f == f"x{i}" for i, f in enumerate(model.features)):
        est.feature_names_in_ = np.asarray(model.features, dtype=object)
    est.history_ = info.get("history", [])
    return est
