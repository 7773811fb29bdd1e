#!/bin/bash
# `mdn train --group-by` on a GPU, its groups' networks one after another (MDN_GPU_PACK=0)
# against packed (the default), same binary, same run; and the CPU backend beside them.
# NGROUPS groups of 20 to 2,000 rows (most small: cross-validated epochs), the defaults
# otherwise. Checks that each group's model is the same bits both ways. ROUNDS (default 2)
# rounds; the packed run first in each.
#   bash benches/group_by_gpu.sh MDN DEVICE NGROUPS     (DEVICE: gpu, or software for lavapipe)
# lavapipe compiles the looped step (the one packed runs take) only when asked: for
# `software` the script sets MDN_GPU_PATH=loop for both GPU runs.
set -eu
MDN=$(realpath "$1"); DEVICE=${2:-gpu}; NGROUPS=${3:-64}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; cd "$dir"
NGROUPS=$NGROUPS python3 - <<'PY'
import math, os, random
random.seed(3)
n = int(os.environ["NGROUPS"])
# Sizes as a retail table's: many small groups, a few large.
sizes = [random.choice([20, 40, 60, 120, 250, 500, 2000]) for _ in range(n)]
with open("many.csv", "w") as f:
    f.write("store,x,t\n")
    for g, rows in enumerate(sizes):
        for i in range(rows):
            t = random.random()
            x = t + 0.3 * math.sin(2 * math.pi * t) + random.uniform(-0.1, 0.1)
            f.write(f"s{g},{x:.5f},{t + g % 7:.5f}\n")
print(f"{n} groups, {sum(sizes)} rows, sizes {sorted(set(sizes))}")
PY
path=""; [ "$DEVICE" = software ] && path=loop
run() { # name, env..., then mdn arguments
  local name=$1; shift
  local s=$(date +%s%N)
  env "$@" --out "$name" 2>"$name.err" || { cat "$name.err"; exit 1; }
  local e=$(date +%s%N)
  local ms=$(( (e - s) / 1000000 ))
  printf '%-8s %d.%02d s\n' "$name" $((ms / 1000)) $((ms % 1000 / 10))
}
for round in $(seq 1 "${ROUNDS:-2}"); do
  rm -rf one packed cpu
  run packed MDN_GPU_PATH=$path "$MDN" train --data many.csv --group-by store --device "$DEVICE"
  run one MDN_GPU_PATH=$path MDN_GPU_PACK=0 "$MDN" train --data many.csv --group-by store --device "$DEVICE"
  run cpu "$MDN" train --data many.csv --group-by store --device cpu
  python3 - <<'PY'
import csv, json
rows = list(csv.DictReader(open("packed/groups.csv")))
same = all(json.load(open(f"one/{r['model']}"))["params"] == json.load(open(f"packed/{r['model']}"))["params"]
           for r in rows if r["model"])
print(f"round: every group's model the same bits one after another and packed: {same}")
PY
done
grep "networks trained" packed.err || true
