#!/usr/bin/env python3
"""Generates Bishop's inverse problem, the example data mdn ships with (stdlib only).

    t ~ U(0, 1);  x = t + 0.3 sin(2 pi t) + U(-0.1, 0.1);  predict t from x.

p(t | x) has up to three branches, so a single Gaussian fits it badly (held-out NLL about
-0.32) and a mixture fits it well. The files were generated once and are committed:

    python3 assets/generate_bishop.py          # writes bishop.csv (4000) and bishop_test.csv (1000)
"""
import math
import os
import random


def rows(n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        t = rng.uniform(0.0, 1.0)
        x = t + 0.3 * math.sin(2.0 * math.pi * t) + rng.uniform(-0.1, 0.1)
        yield x, t


def write(path, n, seed):
    with open(path, "w") as f:
        f.write("x,t\n")
        for x, t in rows(n, seed):
            f.write(f"{x:.7g},{t:.7g}\n")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    write(os.path.join(here, "bishop.csv"), 4000, 1)
    write(os.path.join(here, "bishop_test.csv"), 1000, 2)
