#!/usr/bin/env bash
# Everything a lent GPU machine should run for the fused training step (issue 22), in one
# call of about 9 minutes; prepared by benches/gpu_device_prepare.sh. Writes its logs to
# $OUT (the device tool brings them back) and prints a summary at the end:
#  1. mdn devices, mdn check --device gpu (parity with the CPU, kernel by kernel);
#  2. the GPU suites on the GPU (fused and layered paths, ensembles, streaming);
#  3. mdn bench --devices gpu,cpu --threads 16 --ensemble 5 (fused, and config a32 looped),
#     the same on the layered path for the before/after, the looped step against the fused
#     step (small batches, 32-network ensembles), and a sweep of the fused tiling;
#  4. wider models (hidden 64,64 / 256,256 / 1024) fused against layered;
#  5. many small networks each on rows of its own, one after another and packed
#     (benches/packed.rs); the JAX (jit + scan) and PyTorch CUDA peers on the same configs
#     (a32 too); `mdn train --group-by` packed and one after another (benches/group_by_gpu.sh);
#  6. the backend_gpu suite at 16 test threads, three times (the hang seen on an H200).
#
# DRY=1 runs the same steps on the software adapter with tiny sizes (to try the script on a
# machine without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/device-out}
# Scratch files (generated data, models) live here and go when the script ends.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ "${DRY:-0}" = 1 ]; then
    G=software; TEST_DEVICE=software; ROWS="--rows 3000 --epochs 2"; SWEEP_ROWS=3000; PEER_N=3000
    WIDE_ROWS=20000
else
    G=gpu; TEST_DEVICE=gpu; ROWS=""; SWEEP_ROWS=200000; PEER_N=""
    WIDE_ROWS=200000
fi
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The test binaries find assets/ and tests/fixtures/ through the path they were built in.
built_in=$(cat .device/built_in)
if [ "$built_in" != "$PWD" ] && [ ! -e "$built_in" ]; then
    mkdir -p "$(dirname "$built_in")"
    ln -sfn "$PWD" "$built_in"
fi
if [ $G = gpu ] && ! ./.device/mdn devices | grep -q '^gpu'; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
M=./.device/mdn
step() { echo "=== $* ($(date +%T))"; }
step devices; $M devices | tee "$OUT/devices.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv | tee -a "$OUT/devices.txt"
step check; timeout 120 $M check --device $G > "$OUT/check.txt" 2>&1; tail -3 "$OUT/check.txt"
step suites
for t in backend_gpu backend_gpu_layered ensemble streaming; do
    MDN_TEST_DEVICE=$TEST_DEVICE MDN_REQUIRE_GPU=1 timeout 120 ./.device/tests/$t --test-threads 8 \
        > "$OUT/test_$t.txt" 2>&1
    echo "$t: exit $? $(grep 'test result' "$OUT/test_$t.txt")"
done
step bench fused; timeout 200 $M bench --devices $G,cpu --threads 16 --ensemble 5 $ROWS \
    --config a,a4096,a32,b256,b \
    > "$OUT/bench_fused.txt" 2>&1; cat "$OUT/bench_fused.txt" | grep -v '^config .* on .*: [0-9]* rows'
step bench layered; MDN_GPU_PATH=layered timeout 60 $M bench --devices $G --config a,a4096,b256,b $ROWS \
    > "$OUT/bench_layered.txt" 2>&1; grep -E '^(a|b)' "$OUT/bench_layered.txt"
step looped against fused
# Which path should small batches and many-network ensembles take? (rows/s counts every
# member's rows; dispatches a step below 1 is the looped step.)
summ='import json,sys; print(" ".join("%s x%d %.3gM (%.3g dispatches a step)" % (r["config"], r["members"], r["rows_per_sec"]/1e6, r["dispatches_per_step"] or 0) for r in json.load(sys.stdin)["results"]))'
for p in fused loop; do
    line=$(MDN_GPU_PATH=$p timeout 60 $M bench --devices $G --config a32,a,b256 --rows $SWEEP_ROWS --epochs 3 \
        --json 2>/dev/null | python3 2>/dev/null -c "$summ")
    echo "$p: $line" | tee -a "$OUT/looped.txt"
    line=$(MDN_GPU_PATH=$p timeout 60 $M bench --devices $G --config a32,a --ensemble 32 --rows $SWEEP_ROWS \
        --epochs 3 --json 2>/dev/null | python3 2>/dev/null -c "$summ")
    echo "$p, 32 networks: $line" | tee -a "$OUT/looped.txt"
done
step tiling sweep
for wg in 64 256; do for r in 16 32; do
    line=$(MDN_GPU_PATH=fused MDN_GPU_WORKGROUP=$wg MDN_GPU_TILE_ROWS=$r timeout 40 $M bench \
        --devices $G --config a,b256,b --rows $SWEEP_ROWS --epochs 3 --json 2>/dev/null |
        python3 2>/dev/null -c 'import json,sys; print(" ".join("%s %.3gM" % (r["config"], r["rows_per_sec"]/1e6) for r in json.load(sys.stdin)["results"]))')
    echo "workgroup $wg, rows $r: $line" | tee -a "$OUT/sweep.txt"
done; done
step wide models, fused against layered
# A wider model has fewer rows a tile and more partial gradients per step: where does the
# fused step stop paying? (mdn train on 200,000 generated wide rows, third epoch's rows/s.)
$M generate --kind wide --rows ${WIDE_ROWS} --out $TMP/wide.npy > /dev/null 2>&1
for hidden in 64,64 256,256 1024; do for path in fused layered; do
    [ "${DRY:-0}" = 1 ] && [ $hidden = 1024 ] && continue
    r=$(MDN_GPU_PATH=$path timeout 60 $M train --data $TMP/wide.npy --target y0,y1 \
        --device $G --hidden $hidden --batch-size 4096 --epochs 3 --out $TMP/wide.json 2>&1 |
        grep -o '[0-9.]*[kM] rows/s' | tail -1)
    echo "hidden $hidden, $path: $r" | tee -a "$OUT/wide.txt"
done; done
step packed groups
# One model per group: 256 small networks each on rows of its own, one run after another
# against packed runs (Backend::start_packed, 128 networks a dispatch), and whether each is
# the same bits both ways.
# (A CPU adapter compiles the looped step only with MDN_GPU_PATH=loop.)
MDN_GPU_PATH=$([ $G = software ] && echo loop || echo auto) MDN_BENCH_DEVICE=$G \
    MDN_BENCH_GROUPS=$([ "${DRY:-0}" = 1 ] && echo 8 || echo 256) \
    MDN_BENCH_EPOCHS=20 timeout 120 ./.device/packed_bench 2>&1 | tee "$OUT/packed.txt"
step peers
cd .device/peers
for c in "bishop 100000 5 64 32" "bishop 100000 5 64 256" "bishop 100000 5 64 4096" "wide 1000000 2 64,64 256" "wide 1000000 2 64,64 4096"; do
    set -- $c
    [ -n "$PEER_N" ] && set -- $1 $PEER_N $3 $4 $5
    timeout 90 python3 jax_mdn.py --platform ${G/software/cpu} --data $1 --n $2 --epochs $3 --hidden $4 --batch $5 --quiet \
        2>/dev/null | tail -1 | sed "s/^/jax $1 b$5: /" | tee -a "$OUT/peers.txt"
    timeout 60 python3 torch_mdn.py --device $([ $G = gpu ] && echo cuda || echo cpu) --data $1 --n $2 --epochs $3 --hidden $4 --batch $5 --quiet \
        2>/dev/null | tail -1 | sed "s/^/torch $1 b$5: /" | tee -a "$OUT/peers.txt"
done
cd ../..
step group-by
# mdn train --group-by on 32 groups of 20 to 2,000 rows: packed, one after another
# (MDN_GPU_PACK=0) and on the CPU backend, the same bits both ways.
ROUNDS=1 timeout 150 bash benches/group_by_gpu.sh $M $G $([ "${DRY:-0}" = 1 ] && echo 3 || echo 32) \
    2>&1 | tee "$OUT/group_by.txt"
step hang check
for i in 1 2 3; do
    MDN_TEST_DEVICE=$TEST_DEVICE MDN_REQUIRE_GPU=1 timeout 60 ./.device/tests/backend_gpu --test-threads 16 \
        > "$OUT/threads16_$i.txt" 2>&1
    echo "16 threads, run $i: exit $? $(grep 'test result' "$OUT/threads16_$i.txt")"
done
step done
