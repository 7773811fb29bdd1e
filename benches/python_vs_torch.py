#!/usr/bin/env python3
"""`mdn.MDN().fit` against the PyTorch MDN of shared/reference/peers on the same arrays, in the
same Python process. Prints rows/s (median of epochs 2..E), wall seconds of the whole fit,
and the held-out NLL (the last 10% of the rows) of each.

    .venv/bin/python benches/python_vs_torch.py --peers ../shared/reference/peers

Needs the mdn package (pip install ./python), numpy and torch in the same environment.
"""

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import mdn

CONFIGS = {
    # name: (data, rows, hidden, batch, epochs)
    "a": ("bishop", 100_000, "64", 256, 5),
    "a4096": ("bishop", 100_000, "64", 4096, 5),
    "b256": ("wide", 200_000, "64,64", 256, 3),
    "b": ("wide", 200_000, "64,64", 4096, 3),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", required=True, help="folder of torch_mdn.py and mdn_data.py")
    ap.add_argument("--config", default="a,a4096,b256,b")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    sys.path.insert(0, a.peers)
    import mdn_data
    import torch_mdn

    print(f"{'config':<7} {'impl':<14} {'rows/s':>10} {'fit s':>7} {'test NLL':>9}")
    for name in a.config.split(","):
        data, n, hidden, batch, epochs = CONFIGS[name]
        xs, ys = mdn_data.make(data, n, 0)
        xtr, ytr, xte, yte = mdn_data.split(xs, ys)
        with tempfile.TemporaryDirectory() as tmp:
            csv = os.path.join(tmp, "d.csv")
            mdn_data.write_csv(csv, xs, ys)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the peer prints its JSON line
                res = torch_mdn.main(["--csv-in", csv, "--epochs", str(epochs), "--batch", str(batch),
                                      "--hidden", hidden, "--threads", str(a.threads), "--quiet"])
            torch_s = time.perf_counter() - t0
        est = mdn.MDN(components=5, hidden=[int(h) for h in hidden.split(",")], batch_size=batch,
                      epochs=epochs, val_fraction=0.0, device="cpu", threads=a.threads)
        t0 = time.perf_counter()
        est.fit(xtr, ytr)
        mdn_s = time.perf_counter() - t0
        rates = [e["rows_per_sec"] for e in est.history_[1:]] or [est.history_[0]["rows_per_sec"]]
        print(f"{name:<7} {'mdn (Python)':<14} {statistics.median(rates):>10.0f} {mdn_s:>7.2f} {-est.score(xte, yte):>9.4f}")
        print(f"{'':<7} {'PyTorch':<14} {res['samples_per_s']:>10.0f} {torch_s:>7.2f} {res['test_nll']:>9.4f}")


if __name__ == "__main__":
    main()
