#!/usr/bin/env python3
"""Inference speed of one model three ways, in one run on one machine: `mdn predict` (the
command line, CSV in and out), the exported ONNX graph in ONNX Runtime, and the Python
package's `MDN.predict_distribution`, on the same rows (default 1M of the wide data set).

    python3 benches/inference.py --mdn target/release/mdn --rows 1000000

Needs numpy, onnxruntime and the `mdn` package in the Python running it. Prints rows/s of
each (whole calls, best of --repeat), and how far ONNX Runtime's means are from mdn's.
Not part of the test suite.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def run(*args, cwd):
    p = subprocess.run(list(map(str, args)), capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        sys.exit(f"{args[0]} {args[1]} failed:\n{p.stderr}")
    return p.stdout


def best(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mdn", default="target/release/mdn")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    mdn_bin = os.path.abspath(a.mdn)
    import mdn
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        run(mdn_bin, "generate", "--kind", "wide", "--rows", 20_000, "--out", "train.csv", cwd=tmp)
        run(mdn_bin, "generate", "--kind", "wide", "--rows", a.rows, "--seed", 1, "--out", "rows.csv", cwd=tmp)
        header = open(os.path.join(tmp, "train.csv")).readline().strip().split(",")
        targets = [c for c in header if c.startswith("y")]
        run(mdn_bin, "train", "--data", "train.csv", "--target", ",".join(targets), "--hidden", "64,64",
            "--epochs", 5, "--device", "cpu", "--quiet", cwd=tmp)
        run(mdn_bin, "export", "model.json", "--out", "model.onnx", cwd=tmp)
        features = [c for c in header if c not in targets]
        X = np.loadtxt(os.path.join(tmp, "rows.csv"), delimiter=",", skiprows=1, dtype=np.float32,
                       usecols=[header.index(f) for f in features])
        print(f"{a.rows} rows of {len(features)} features, {len(targets)} targets, hidden 64,64, "
              f"K=5; {a.threads} threads", file=sys.stderr)

        t_cli, _ = best(lambda: run(mdn_bin, "predict", "--data", "rows.csv", "--out", "pred.csv",
                                    "--device", "cpu", "--threads", a.threads, cwd=tmp), a.repeat)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        session = ort.InferenceSession(os.path.join(tmp, "model.onnx"), opts,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        t_ort, out = best(lambda: dict(zip(names, session.run(None, {"x": X}))), a.repeat)
        est = mdn.load(os.path.join(tmp, "model.json"))
        est.set_params(device="cpu", threads=a.threads)
        t_py, dist = best(lambda: est.predict_distribution(X), a.repeat)
        scale = np.std(dist.mean, axis=0)
        worst = np.max(np.abs(out["mean"] - dist.mean) / (np.abs(dist.mean) + scale))

    print("| how | rows/s | seconds |")
    print("|---|---|---|")
    for name, t in (("`mdn predict` (CSV in, CSV out)", t_cli),
                    ("ONNX Runtime " + ort.__version__ + " (arrays)", t_ort),
                    ("`mdn.MDN.predict_distribution` (arrays)", t_py)):
        print(f"| {name} | {a.rows / t / 1e6:.2f}M | {t:.2f} |")
    print(f"\nlargest difference of ONNX Runtime's means from mdn's: {worst:.2e} "
          "(relative to the mean plus the targets' scale)")


if __name__ == "__main__":
    main()
