#!/bin/bash
# Many small models: a shell loop of one `mdn train` per group's file (OLD build) against one
# `mdn train --group-by` (NEW build), 12 groups of 400 rows, on lavapipe (--epochs 30) and
# the CPU backend (defaults), two rounds each; checks that both give the same parameters.
#   bash benches/group_by.sh OLD_MDN NEW_MDN
set -eu
OLD=$(realpath "$1"); NEW=$(realpath "$2")
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; cd "$dir"
python3 - <<'PY'
import math, random
random.seed(2)
rows = {g: [] for g in range(12)}
with open("many.csv", "w") as f:
    f.write("store,x,t\n")
    for i in range(400):
        for g in range(12):
            t = random.random()
            x = t + 0.3 * math.sin(2 * math.pi * t) + random.uniform(-0.1, 0.1)
            f.write(f"s{g},{x:.5f},{t + g:.5f}\n")
            rows[g].append(f"{x:.5f},{t + g:.5f}\n")
for g, r in rows.items():
    with open(f"s{g}.csv", "w") as f:
        f.write("x,t\n" + "".join(r))
PY
# On the CPU --group-by trains the groups side by side, one thread each on this machine's
# cores, so its models are the bits of `mdn train --threads 1` on each group: the loop runs
# both ways, with the default threads and with --threads 1 (whose parameters it checks).
for dev in software cpu; do
  extra=""; [ "$dev" = software ] && extra="--epochs 30"
  for round in 1 2; do
    rm -rf o o1 models; mkdir o o1
    s=$(date +%s.%N)
    for g in $(seq 0 11); do "$OLD" train --data "s$g.csv" --device $dev $extra -q --out "o/s$g.json"; done
    m=$(date +%s.%N)
    if [ "$dev" = cpu ]; then
      for g in $(seq 0 11); do "$OLD" train --data "s$g.csv" --device cpu --threads 1 -q --out "o1/s$g.json"; done
    fi
    m1=$(date +%s.%N)
    "$NEW" train --data many.csv --group-by store --device $dev $extra -q
    e=$(date +%s.%N)
    ref=o; [ "$dev" = cpu ] && ref=o1
    same=$(python3 -c "
import json
print(all(json.load(open(f'$ref/s{g}.json'))['params'] == json.load(open(f'models/s{g}.json'))['params'] for g in range(12)))")
    one=""; [ "$dev" = cpu ] && one=$(printf ', with --threads 1 %.2f s' "$(echo "$m1 - $m" | bc)")
    printf '%s round %s: loop of 12 processes %.2f s%s, --group-by %.2f s, same parameters: %s\n' \
      $dev $round "$(echo "$m - $s" | bc)" "$one" "$(echo "$e - $m1" | bc)" "$same"
  done
done
