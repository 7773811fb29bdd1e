#!/usr/bin/env bash
# Prepares, on the development machine, what benches/gpu_device.sh needs on a lent GPU
# machine (which has no Rust toolchain, no Vulkan loader and no network): the stripped
# release binary and GPU test binaries, the reference peers and the data they share, in
# .device/; the Vulkan loader packages in .gl/. Both folders are git-ignored and travel with
# `carry`. Then, with the device tool:
#   run(command="bash benches/gpu_device.sh", carry=[".device", ".gl"], timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo /.device/ >> .git/info/exclude
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
rm -rf .device && mkdir -p .device/tests .device/peers
cargo build --release --bin mdn
strip -o .device/mdn target/release/mdn
# The GPU suites, built as test binaries (each one file; the newest build of each).
cargo test --release --no-run --test backend_gpu --test backend_gpu_layered --test ensemble --test streaming 2>&1 |
    grep -o 'target/release/deps/[a-z_]*-[0-9a-f]*' | sort -u | while read -r t; do
        strip -o ".device/tests/$(basename "$t" | sed 's/-[0-9a-f]*$//')" "$t"
    done
# benches/packed.rs, built as a bench binary.
strip -o .device/packed_bench "$(cargo bench --no-run --bench packed 2>&1 |
    grep -o 'target/release/deps/packed-[0-9a-f]*' | tail -1)"
cp ../shared/reference/peers/*.py .device/peers/
pwd > .device/built_in
if [ ! -d .gl ] || [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd .gl && apt-get $o download libvulkan1)
fi
du -sh .device .gl
