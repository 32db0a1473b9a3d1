#!/usr/bin/env bash
# What watching the network costs a server (issue #19): the HTTP server of images/http serves
# REQUESTS requests, one at a time (the client sends the next when the answer is read), as fast
# as it can, over CONNS keep-alive connections; its throughput is what the client measured.
#
# Each repetition starts one server and loads it in turn:
#
#   base   not watched                                               (the reference)
#   net    while `kubectl-eagle net pid/SERVER` watches it (TCP counters, HTTP capture)
#   base   not watched again
#   ref    while REF_BIN's `kubectl-eagle net` watches it, when REF_BIN is set (main's build,
#          side by side with this one)
#   base   not watched again (when REF_BIN is set)
#
# (net and ref in turn first, from one repetition to the next.)
#
# so that every watched load lies between two unwatched loads of the same server process, a few
# seconds apart: a watched load is compared with the mean of the two around it, which cancels
# the machine's drift over those seconds, and no comparison spans two server processes (each
# Python has its own hash seed and memory layout, which moved a run's speed by more than the
# cost being measured). Each figure is the client's requests per second and the server's CPU
# time per request (all its threads: the eBPF programs run in its system calls and are counted
# there). The client is never watched. Under RT=1 (the default when root) server, client and
# kubectl-eagle run under `chrt -f 10`, as scripts/bench-overhead.sh does, so that other work on
# a shared machine blurs less; under PIN=1 (the default) the server runs on CPU 0 and the client
# on CPU 1.
#
#   scripts/bench-net.sh                     (root; EAGLE_BIN=target/debug/kubectl-eagle to
#                                             measure a debug build; REF_BIN=PATH to compare
#                                             with another build's kubectl-eagle)
set -euo pipefail
# A failing client or server inside $(...) must stop the bench, not record an empty figure.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
REPS=${REPS:-15}
# 20,000 requests: loads of 2 to 5 s; with 2,000 a load lasted half a second and the unwatched
# server alone spread 2.5x between runs.
REQUESTS=${REQUESTS:-20000}
CONNS=${CONNS:-4}
RT=${RT:-$([ "$(id -u)" = 0 ] && echo 1 || echo 0)}
BIN=${EAGLE_BIN:-target/release/kubectl-eagle}
REF_BIN=${REF_BIN:-}
# Seconds between starting `net` and the load: its programs are attached and the server added
# well within this (about 0.3 s here); the report must then have seen every request.
ATTACH_S=${ATTACH_S:-1.5}
WATCHERS=(net); [ -n "$REF_BIN" ] && WATCHERS+=(ref)
if [ -z "${EAGLE_BIN:-}" ]; then
  cargo build --release -p kube-eagle --bin kubectl-eagle >&2
fi
[ -x "$BIN" ] || { echo "bench-net: $BIN missing" >&2; exit 1; }
WORK=$(mktemp -d)
SERVER=
trap '[ -n "$SERVER" ] && kill -TERM "$SERVER" 2>/dev/null; rm -rf "$WORK"' EXIT
rt=(); [ "$RT" = 1 ] && rt=(chrt -f 10)
# The server on the first CPU and the client on the second: left to the scheduler, the two
# were put now on one CPU, now on two, and the unwatched server's throughput jumped between
# two levels 25 % apart within one repetition.
pin_server=(); pin_client=()
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then pin_server=(taskset -c 0); pin_client=(taskset -c 1); fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU time of a process so far (all its threads, ended ones too), in clock ticks (USER_HZ, 100
# a second).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# One load of the server on PORT (pid SERVER): prints the client's requests per second, the
# server's CPU per request and that of process WATCHER (when given: kubectl-eagle, its agent
# in-process) in µs.
load() {
  local port=$1 watcher=${2:-} s0 s1 w0=0 w1=0 rate
  s0=$(cpu_ticks "$SERVER")
  [ -n "$watcher" ] && w0=$(cpu_ticks "$watcher")
  rate=$("${pin_client[@]}" "${rt[@]}" python3 images/http/load.py --port "$port" --requests "$REQUESTS" --rate 1e9 --connections "$CONNS" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate_per_s"])')
  s1=$(cpu_ticks "$SERVER")
  [ -n "$watcher" ] && w1=$(cpu_ticks "$watcher")
  [[ $rate =~ ^[0-9.e+]+$ ]] || { echo "bench-net: the client measured no rate: '$rate'" >&2; exit 1; }
  awk -v r="$rate" -v t="$((s1 - s0))" -v w="$((w1 - w0))" -v n="$REQUESTS" \
    'BEGIN {printf "%s %.1f %.1f\n", r, t * 10000 / n, w * 10000 / n}'
}

# One load while BINARY's `net` watches the server; checks that the window saw every request.
watched_load() {
  local binary=$1 port=$2 holder result
  rm -f "$WORK/net.json"
  "${rt[@]}" "$binary" net "pid/$SERVER" -d 10m -o "$WORK/net.json" >/dev/null 2>"$WORK/net.err" &
  holder=$!
  sleep "$ATTACH_S"
  result=$(load "$port" "$holder")
  kill -INT "$holder"
  # Stopped by a signal, it says so in its exit code and still writes the window's report.
  wait "$holder" || true
  python3 - "$WORK/net.json" "$REQUESTS" <<'EOF' || { cat "$WORK/net.err" >&2; exit 1; }
import json, sys
report = json.load(open(sys.argv[1]))
seen = sum(r["requests"] for r in report["http"])
assert seen == int(sys.argv[2]), f"the network view saw {seen} of {sys.argv[2]} requests"
EOF
  echo "$result"
}

# One repetition: a server, loaded base / watched / base (/ watched by REF_BIN / base).
repetition() {
  local port ready; port=$(free_port); ready=$WORK/ready-$RANDOM
  # taskset and chrt exec: $! is python's pid, as its ready file says.
  "${pin_server[@]}" "${rt[@]}" python3 images/http/server.py --port "$port" --delay-ms 0 --error-every 0 --slow-every 0 --ready-file "$ready" &
  SERVER=$!
  for _ in $(seq 1 400); do [ -s "$ready" ] && break; sleep 0.05; done
  [ -s "$ready" ] || { echo "bench-net: the server did not start" >&2; exit 1; }
  load "$port" >/dev/null # warm-up: the server's first connections and imports, uncounted
  local before; before=$(load "$port")
  local order=("${WATCHERS[@]}")
  # With REF_BIN, this build and REF_BIN's watch first by turns: neither always meets the
  # server later in its life.
  [ "${#order[@]}" = 2 ] && [ $(($1 % 2)) = 0 ] && order=(ref net)
  for w in "${order[@]}"; do
    local bin=$BIN; [ "$w" = ref ] && bin=$REF_BIN
    local watched after; watched=$(watched_load "$bin" "$port"); after=$(load "$port")
    echo "$before $watched $after" >>"$WORK/$w"
    before=$after
  done
  kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
}

for w in "${WATCHERS[@]}"; do : >"$WORK/$w"; done
for i in $(seq 1 "$REPS"); do
  repetition "$i"
  echo "bench-net: repetition $i of $REPS done" >&2
done

# Each watched load over the mean of the unwatched loads just before and after it, on the same
# server; the median of those ratios with a distribution-free 95 % interval (order statistics
# of the binomial, as for any median: no assumption on the spread's shape). For the client's
# throughput and for the server's CPU per request; and REF_BIN's over this build's.
python3 -B - scripts "$WORK" "$REPS" "${WATCHERS[@]}" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
from median_interval import median, median_interval
work, reps, watchers = sys.argv[2], int(sys.argv[3]), sys.argv[4:]
# Per line: before, watched, after; each: requests/s, server µs/request, watcher µs/request.
runs = {w: [[float(f) for f in line.split()] for line in open(f"{work}/{w}")] for w in watchers}

def normalised(rows):
    """Each watched load over the mean of the unwatched loads around it: (throughput, CPU)."""
    rate = [r[3] / ((r[0] + r[6]) / 2) for r in rows]
    cpu = [r[4] / ((r[1] + r[7]) / 2) for r in rows if r[1] + r[7] > 0]
    return rate, cpu

print(f"{reps} repetitions: medians; ratios paired within a server, with 95 % intervals")
print("| watched by | requests/s unwatched | watched | throughput, watched / unwatched | server µs/request unwatched | watched | CPU per request, watched / unwatched | kubectl-eagle µs/request |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for w in watchers:
    rows = runs[w]
    rate, cpu = normalised(rows)
    print(f"| {w} | {median([(r[0] + r[6]) / 2 for r in rows]):.0f} | {median([r[3] for r in rows]):.0f} "
          f"| {median_interval(rate)} | {median([(r[1] + r[7]) / 2 for r in rows]):.1f} | {median([r[4] for r in rows]):.1f} "
          f"| {median_interval(cpu)} | {median([r[5] for r in rows]):.1f} |")
if "ref" in runs:
    (net_rate, net_cpu), (ref_rate, ref_cpu) = normalised(runs["net"]), normalised(runs["ref"])
    print(f"this build over REF_BIN's, each against its own unwatched loads: throughput "
          f"{median_interval([a / b for a, b in zip(net_rate, ref_rate)])}, CPU per request "
          f"{median_interval([a / b for a, b in zip(net_cpu, ref_cpu)])}")
EOF
for w in "${WATCHERS[@]}"; do echo "$w (before, watched, after: requests/s, server and kubectl-eagle µs/request): $(tr '\n' ';' <"$WORK/$w")" >&2; done
