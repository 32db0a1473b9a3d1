#!/usr/bin/env bash
# What watching the network costs a server (issue #19): the HTTP server of images/http serves
# REQUESTS requests, one at a time (the client sends the next when the answer is read), as fast
# as it can, over CONNS keep-alive connections; its throughput is what the client measured.
# Each repetition runs, in turn:
#
#   base   python3 images/http/server.py alone                      (the reference)
#   net    kubectl-eagle net -o ... -- python3 images/http/server.py (TCP counters, HTTP capture)
#   ref    the same under REF_BIN, when set: another build (main's) side by side with this one
#
# interleaved, so that drift in the machine's load hits both alike; each is summarised by its
# median requests per second, `net` as a ratio to `base` from the same run. The client is never
# watched. Under RT=1 (the default when root) server and client run under `chrt -f 10`, as
# scripts/bench-overhead.sh does, so that other work on a shared machine blurs less.
#
#   scripts/bench-net.sh                     (root; EAGLE_BIN=target/debug/kubectl-eagle to
#                                             measure a debug build; REF_BIN=PATH to compare
#                                             with another build's kubectl-eagle)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-7}
# 20,000 requests: runs of 4 to 5 s; with 2,000 a run lasted half a second and the unwatched
# server alone spread 2.5x between runs.
REQUESTS=${REQUESTS:-20000}
CONNS=${CONNS:-4}
RT=${RT:-$([ "$(id -u)" = 0 ] && echo 1 || echo 0)}
BIN=${EAGLE_BIN:-target/release/kubectl-eagle}
REF_BIN=${REF_BIN:-}
VARIANTS=(base net); [ -n "$REF_BIN" ] && VARIANTS+=(ref)
if [ -z "${EAGLE_BIN:-}" ]; then
  cargo build --release -p kube-eagle --bin kubectl-eagle >&2
fi
[ -x "$BIN" ] || { echo "bench-net: $BIN missing" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rt=(); [ "$RT" = 1 ] && rt=(chrt -f 10)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {
  for _ in $(seq 1 400); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "bench-net: the server did not start" >&2; exit 1
}

# CPU time of a process so far (all its threads), in clock ticks (USER_HZ, 100 a second).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Ticks over the run as microseconds per request.
per_request() { awk -v t="$1" -v n="$REQUESTS" 'BEGIN {printf "%.1f", t * 10000 / n}'; }

# One run of a variant: prints the client's requests per second, the server's CPU per request
# (its own threads: the eBPF programs run in its system calls and are counted there) and, under
# `net`, the CPU of kubectl-eagle itself per request (the agent's reader, in-process), in µs.
run() {
  local variant=$1 port ready; port=$(free_port); ready=$WORK/ready-$variant-$RANDOM
  local server=(python3 images/http/server.py --port "$port" --delay-ms 0 --error-every 0 --slow-every 0 --ready-file "$ready")
  case $variant in
    base) "${rt[@]}" "${server[@]}" & ;;
    net) "${rt[@]}" "$BIN" net -o "$WORK/net.json" -- "${server[@]}" 2>"$WORK/net.err" & ;;
    ref) "${rt[@]}" "$REF_BIN" net -o "$WORK/net.json" -- "${server[@]}" 2>"$WORK/net.err" & ;;
  esac
  local holder=$!
  wait_ready "$ready"
  local rate spid s0 a0 s1 a1
  spid=$(cat "$ready"); s0=$(cpu_ticks "$spid"); a0=$(cpu_ticks "$holder")
  rate=$("${rt[@]}" python3 images/http/load.py --port "$port" --requests "$REQUESTS" --rate 1e9 --connections "$CONNS" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["rate_per_s"])')
  s1=$(cpu_ticks "$spid"); a1=$(cpu_ticks "$holder")
  kill -TERM "$spid"
  wait "$holder" || true
  if [ "$variant" != base ]; then
    # The window must have seen every request: else it did not watch the whole run.
    python3 - "$WORK/net.json" "$REQUESTS" <<'EOF' || { cat "$WORK/net.err" >&2; exit 1; }
import json, sys
report = json.load(open(sys.argv[1]))
seen = sum(r["requests"] for r in report["http"])
assert seen == int(sys.argv[2]), f"the network view saw {seen} of {sys.argv[2]} requests"
EOF
  fi
  local agent=0; [ "$variant" != base ] && agent=$(per_request $((a1 - a0)))
  echo "$rate $(per_request $((s1 - s0))) $agent"
}

median() { cut -d' ' -f"${1:-1}" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

for v in "${VARIANTS[@]}"; do run "$v" >/dev/null; done # warm-up, uncounted
for v in "${VARIANTS[@]}"; do : >"$WORK/$v"; done
for i in $(seq 1 "$REPS"); do
  for v in "${VARIANTS[@]}"; do run "$v" >>"$WORK/$v"; done
  echo "bench-net: repetition $i of $REPS done" >&2
done
base=$(median <"$WORK/base"); net=$(median <"$WORK/net")
ratio() { awk -v n="$1" -v b="$2" 'BEGIN {printf "%.3f", n/b}'; }
echo "| variant | requests/s, median | of base |"
echo "|---|---:|---:|"
echo "| base (not watched) | $(printf %.0f "$base") | 1.000 |"
echo "| \`kubectl-eagle net\` ($BIN) | $(printf %.0f "$net") | $(ratio "$net" "$base") |"
for v in "${VARIANTS[@]}"; do
  echo "$v: server CPU $(median 2 <"$WORK/$v") µs per request, kubectl-eagle's own $(median 3 <"$WORK/$v") µs (medians)"
done
if [ -n "$REF_BIN" ]; then
  ref=$(median <"$WORK/ref")
  echo "| \`kubectl-eagle net\` ($REF_BIN) | $(printf %.0f "$ref") | $(ratio "$ref" "$base") |"
  echo "net over ref: $(ratio "$net" "$ref")"
fi
# Paired: each repetition's net/base, taken a few seconds apart, so that the machine's drift
# between repetitions cancels; their median with a distribution-free 95 % interval (order
# statistics of the binomial, as for any median: no assumption on the spread's shape).
python3 - "$WORK/base" "$WORK/net" <<'EOF'
import math, sys
base = [float(x.split()[0]) for x in open(sys.argv[1])]
net = [float(x.split()[0]) for x in open(sys.argv[2])]
r = sorted(n / b for n, b in zip(net, base))
n = len(r)
med = (r[(n - 1) // 2] + r[n // 2]) / 2
# Largest k with P(Binomial(n, 1/2) < k) <= 2.5 %: [r[k-1], r[n-k]] covers the median at >= 95 %.
cdf, k = 0.0, 0
while k < n and cdf + math.comb(n, k) / 2**n <= 0.025:
    cdf += math.comb(n, k) / 2**n
    k += 1
interval = f"[{r[k - 1]:.3f}, {r[n - k]:.3f}] (>= 95 %)" if k >= 1 else "(too few repetitions for a 95 % interval)"
print(f"paired net/base over {n} repetitions: median {med:.3f}, {interval}")
EOF
for v in "${VARIANTS[@]}"; do echo "$v runs (requests/s, server µs/request, kubectl-eagle µs/request): $(tr '\n' ',' <"$WORK/$v")" >&2; done
