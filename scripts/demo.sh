#!/usr/bin/env bash
# The embedded default: set up, build, and profile a sample workload with a known CPU split
# (images/groundtruth: 60% cpu_60, 30% cpu_30, 10% cpu_10) on this machine, no cluster needed.
# Writes out/flamegraph.svg (open it in a browser: search, zoom, tooltips).
#   scripts/demo.sh [extra kubectl-eagle profile flags]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --minimal
cargo build --release --bin kubectl-eagle
mkdir -p out
clang-19 -O2 -g -fno-omit-frame-pointer -static -pthread -o out/groundtruth images/groundtruth/groundtruth.c
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"   # eBPF sampling needs root (or CAP_BPF + CAP_PERFMON)
$sudo target/release/kubectl-eagle profile -d 5s -f 99 -o out/flamegraph.svg "$@" -- out/groundtruth --threads 2
echo "open out/flamegraph.svg"
