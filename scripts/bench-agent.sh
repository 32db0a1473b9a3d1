#!/usr/bin/env bash
# What one agent costs its node, and how big its result stream is: the two limits a cluster run
# lives within (the kubelet rotates a pod log at 10 MiB; the agent shares the node with the
# workloads it profiles).
#
#   stream   100 groundtruth processes (2 threads each), sampled at 999 Hz for 60 s: bytes of
#            the whole stream (what the pod log holds), of its payload lines, samples, stacks
#   node     every process of this machine, as a node-wide run sees them, at 99 Hz for 30 s:
#            the agent's peak RSS and CPU (user + system) as a share of one core
#
#   scripts/bench-agent.sh                 both
#   WINDOW_S=10 PROCS=20 scripts/bench-agent.sh stream
#   REFERENCE=/tmp/eagle-agent.main ROUNDS=2 scripts/bench-agent.sh node
#                                          the node case with another build of the agent (say,
#                                          main's) and this one, alternately, ROUNDS times each:
#                                          before and after side by side on the same load
#
#   HEAVY=1 REFERENCE=... scripts/bench-agent.sh node
#                                          the node case with two more processes of the kind a
#                                          build machine runs, started before the first round:
#                                          python3 mapping the LLVM libraries (unwind tables of
#                                          a million rows and more) and the debug build of
#                                          kubectl-eagle converting a big profile in a loop
#                                          (DWARF in many units)
#
# The agent measured is the one the image ships: the static musl release build (its allocator
# gives freed memory back at once, glibc's keeps it in its arenas: on HEAVY's load the glibc
# build's peak was 12 MiB higher). LIBC=gnu measures the host's glibc build instead.
#
# EAGLE_UNWIND=frame-pointers (passed on to the agent) leaves out the unwind tables, to tell
# their cost from the rest; EAGLE_DWARF_MAX_BYTES=0 leaves out DWARF.
#
# Run it while the machine is busy (a build, the other benchmarks): that is the case it is for.
# Needs root, a Rust toolchain and clang-19 (for the groundtruth).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
what=${1:-all}
procs=${PROCS:-100}
[ "$(id -u)" = 0 ] || { echo "bench-agent: needs root (eBPF)" >&2; exit 4; }
if [ "${LIBC:-musl}" = gnu ]; then
  cargo build --release --locked --bin eagle-agent >&2
  agent=$PWD/target/release/eagle-agent
else
  musl=$(uname -m)-unknown-linux-musl
  rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl" >&2
  cargo build --release --locked --target "$musl" -p eagle-agent --bin eagle-agent >&2
  agent=$PWD/target/$musl/release/eagle-agent
fi
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
clang-19 -O2 -g -fno-omit-frame-pointer -pthread -o "$work/groundtruth" images/groundtruth/groundtruth.c

# run NAME ARGS...: the agent ($bin, else this build's) with its stdout in $work/NAME.stream,
# /usr/bin/time's figures in $work/NAME.time (peak RSS in KiB, user s, system s, wall s)
run() {
  local name=$1; shift
  /usr/bin/time -f '%M %U %S %e' -o "$work/$name.time" "${bin:-$agent}" "$@" >"$work/$name.stream" 2>"$work/$name.err" || {
    echo "bench-agent: the agent failed:" >&2; tail -n 5 "$work/$name.err" >&2; return 1; }
}
report() {
  local name=$1 window=$2 rss user sys wall
  read -r rss user sys wall <"$work/$name.time"
  local total payload samples stacks
  total=$(stat -c %s "$work/$name.stream")
  payload=$(grep '^EAGLE1 D ' "$work/$name.stream" | wc -c)
  samples=$(grep -o '"samples":[0-9]*' "$work/$name.stream" | tail -n1 | cut -d: -f2)
  stacks=$(grep '^EAGLE1 T ' "$work/$name.stream" | grep -o '"stacks":[0-9]*' | cut -d: -f2)
  awk -v n="$name" -v t="$total" -v p="$payload" -v s="$samples" -v k="$stacks" -v r="$rss" -v u="$user" \
    -v y="$sys" -v w="$wall" -v win="$window" 'BEGIN {
      printf "%s: stream %d bytes (%.2f MiB; payload lines %d bytes), %s samples in %s stacks; agent peak RSS %.1f MiB, CPU %.2f s user + %.2f s system in %.1f s wall = %.2f %% of one core over the %d s window\n",
        n, t, t / 1048576, p, s, k, r / 1024, u, y, w, (u + y) * 100 / win, win }'
}

if [ "$what" = all ] || [ "$what" = stream ]; then
  window=${WINDOW_S:-60}
  targets=()
  for _ in $(seq "$procs"); do
    nice -n 10 "$work/groundtruth" --threads 2 >/dev/null 2>&1 &
    pids+=($!); targets+=(--target "pid:$!")
  done
  sleep 1
  run stream "${targets[@]}" --frequency 999 --duration-ms $((window * 1000)) --node bench || exit 1
  report stream "$window"
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()
fi
if [ "$what" = all ] || [ "$what" = node ]; then
  window=${WINDOW_S:-30}
  if [ -n "${HEAVY:-}" ]; then
    cargo build --locked --bin kubectl-eagle >&2
    cp target/debug/kubectl-eagle "$work/kubectl-eagle-debug"
    awk 'BEGIN { srand(1); for (i = 0; i < 100000; i++) { s = "root"; d = 5 + int(rand() * 30); for (j = 0; j < d; j++) s = s ";f" int(rand() * 2000); print s, 1 + int(rand() * 100) } }' >"$work/big.folded"
    sh -c "while :; do '$work/kubectl-eagle-debug' convert '$work/big.folded' -o '$work/big.svg' 2>/dev/null; done" &
    pids+=($!)
    libs=$(ls /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1 2>/dev/null | tr '\n' ' ')
    # shellcheck disable=SC2086
    python3 -c 'import ctypes, sys, time
for p in sys.argv[1:]:
    ctypes.CDLL(p)
while True:
    time.sleep(0.001)' $libs &
    pids+=($!)
    sleep 11 # a target must have lived 10 s
  fi
  agents=("this=$agent")
  if [ -n "${REFERENCE:-}" ]; then
    [ -x "$REFERENCE" ] || { echo "bench-agent: REFERENCE=$REFERENCE is no executable" >&2; exit 2; }
    agents=("reference=$REFERENCE" "this=$agent")
  fi
  for round in $(seq "${ROUNDS:-1}"); do
    for a in "${agents[@]}"; do
      name="node-${a%%=*}-$round"
      for attempt in 1 2 3; do
        # Processes that have lived 10 s or more: a node-wide run's containers are
        # long-lived, and a pid that is gone when the agent starts is an error (as a target
        # that does not exist); one that exits meanwhile all the same makes another attempt.
        targets=()
        now=$(awk '{print int($1 * 100)}' /proc/uptime)
        for p in /proc/[0-9]*; do
          stat=$(cat "$p/stat" 2>/dev/null) || continue
          # The fields after the name, which may hold spaces: state is the first, start time
          # the twentieth. A zombie is no target (the agent finds no such process).
          read -r -a fields <<<"${stat##*) }"
          [ "${fields[0]:-Z}" != Z ] && [ $((now - ${fields[19]:-now})) -ge 1000 ] && targets+=(--target "pid:${p#/proc/}")
        done
        echo "bench-agent: $name: ${#targets[@]} processes" >&2
        if bin=${a#*=} run "$name" "${targets[@]}" --frequency 99 --duration-ms $((window * 1000)) --node bench; then
          break
        fi
        grep -q 'no such process' "$work/$name.err" && [ "$attempt" -lt 3 ] || exit 1
      done
      report "$name" "$window"
    done
  done
fi
