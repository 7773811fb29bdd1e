#!/usr/bin/env python3
"""The CPU backend against the JAX and PyTorch peers, in one run, on the same machine.

Times `mdn bench --devices cpu` (one or more builds, to compare them) and the reference
peers in `shared/reference/peers` (JAX jit + scan, PyTorch eager) on the README's configs, at
each thread count, in rounds that alternate all of them (this machine's timings swing by
+-30-50% from one run to the next, so only figures from the same round compare). Prints a
Markdown table of rows/s per round, and each build's ratio to the best peer.

    python3 benches/cpu_peers.py --mdn target/release/mdn \\
        --jax /path/to/venv-with-jax/bin/python --torch /path/to/venv-with-torch/bin/python

`--mdn NAME=PATH` names a build (`--mdn before=/tmp/mdn-old --mdn now=target/release/mdn`).
A peer whose Python is not given is left out. Not part of the test suite.
"""
import argparse
import json
import os
import subprocess
import sys

# mdn bench's configurations and the peers' arguments for the same model and data.
CONFIGS = {
    "a": dict(data="bishop", n=100_000, epochs=5, batch=256, hidden="64"),
    "a4096": dict(data="bishop", n=100_000, epochs=5, batch=4096, hidden="64"),
    "b256": dict(data="wide", n=1_000_000, epochs=2, batch=256, hidden="64,64"),
    "b": dict(data="wide", n=1_000_000, epochs=2, batch=4096, hidden="64,64"),
}


def peers_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    for up in ("../../shared/reference/peers", "../shared/reference/peers"):
        d = os.path.normpath(os.path.join(here, up))
        if os.path.isdir(d):
            return d
    sys.exit("cpu_peers: shared/reference/peers not found beside the repository")


def run_mdn(path, configs, threads):
    out = subprocess.run(
        [path, "bench", "--devices", "cpu", "--config", ",".join(configs),
         "--threads", ",".join(map(str, threads)), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    res = json.loads(out)
    got = {}
    for r in res["results"]:
        t = int(r["backend"].split(",")[1].split()[0])
        got[(r["config"], t)] = r["rows_per_sec"]
    return got, res.get("cpu_isa")


def run_peer(python, script, config, threads):
    c = CONFIGS[config]
    args = [python, script, "--data", c["data"], "--n", str(c["n"]), "--epochs",
            str(c["epochs"]), "--batch", str(c["batch"]), "--hidden", c["hidden"],
            "--threads", str(threads), "--quiet"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        print(f"{os.path.basename(script)} {config} {threads}t failed:\n{p.stderr[-2000:]}",
              file=sys.stderr)
        return None
    line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)["samples_per_s"]


def fmt(v):
    if v is None:
        return "-"
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mdn", action="append", default=[],
                    help="NAME=PATH of an mdn build (repeatable); default target/release/mdn")
    ap.add_argument("--jax", help="a Python with jax installed")
    ap.add_argument("--torch", help="a Python with torch installed")
    ap.add_argument("--configs", default="a,a4096,b256,b")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    builds = []
    for m in a.mdn or ["mdn=target/release/mdn"]:
        name, _, path = m.rpartition("=")
        builds.append((name or "mdn", path))
    configs = a.configs.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    peers = peers_dir()
    table = {}  # (round, who, config, threads) -> rows/s
    for rnd in range(a.rounds):
        for name, path in builds:
            print(f"round {rnd + 1}: mdn {name}", file=sys.stderr)
            got, isa = run_mdn(path, configs, threads)
            for (c, t), v in got.items():
                table[(rnd, name, c, t)] = v
        for who, python, script in (("JAX", a.jax, "jax_mdn.py"),
                                    ("PyTorch", a.torch, "torch_mdn.py")):
            if not python:
                continue
            for c in configs:
                for t in threads:
                    print(f"round {rnd + 1}: {who} {c} {t}t", file=sys.stderr)
                    table[(rnd, who, c, t)] = run_peer(python, os.path.join(peers, script), c, t)
    who_all = [b[0] for b in builds] + [w for w, p in (("JAX", a.jax), ("PyTorch", a.torch)) if p]
    print(f"\nCPU instruction set: {isa}; rows/s, round " +
          " / round ".join(str(r + 1) for r in range(a.rounds)) + "\n")
    print("| config | threads | " + " | ".join(who_all) + " |")
    print("|---|---|" + "---|" * len(who_all))
    for c in configs:
        for t in threads:
            cells = [", ".join(fmt(table.get((r, w, c, t))) for r in range(a.rounds))
                     for w in who_all]
            print(f"| ({c}) | {t} | " + " | ".join(cells) + " |")
    peer_names = [w for w in who_all if w in ("JAX", "PyTorch")]
    if peer_names:
        print("\nEach build against the best peer in the same round (same threads):\n")
        print("| config | threads | " + " | ".join(b[0] for b in builds) + " |")
        print("|---|---|" + "---|" * len(builds))
        for c in configs:
            for t in threads:
                cells = []
                for name, _ in builds:
                    ratios = []
                    for r in range(a.rounds):
                        best = max((table.get((r, p, c, t)) or 0) for p in peer_names)
                        mine = table.get((r, name, c, t))
                        if best and mine:
                            ratios.append(mine / best)
                    cells.append(", ".join(f"{x:.2f}x" for x in ratios) or "-")
                print(f"| ({c}) | {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
