#!/usr/bin/env bash
# How much does profiling slow the target down?
#
# groundtruth does a fixed amount of work (`--rounds N`) and reports the time from its start to
# its exit (`--report-cpu`), so the profiler's own start-up and the writing of its output are not
# counted: only what the target itself lost. Each repetition runs, in turn:
#
#   base      groundtruth --rounds N                                  (the reference)
#   eagle-99  kubectl-eagle profile -f 99  -o ... -- groundtruth ...  (sampled from exec to exit)
#   eagle-999 kubectl-eagle profile -f 999 -o ... -- groundtruth ...
#   perf-99   perf record -F 99  -g -o ... -- groundtruth ...         (where perf works)
#   perf-999  perf record -F 999 -g -o ... -- groundtruth ...
#
# The variants are interleaved, so that drift in the machine's load hits them all alike, and
# each is summarised by its median, as a ratio to the median of `base` measured in the same run.
# Two figures per variant: the target's wall time (what a user waits) and its CPU time (the
# sampling interrupts run on the target's CPU and are charged to it). On a shared machine other
# work would blur wall times far more than sampling costs, so every variant runs under a
# real-time policy (`chrt -f 10`, when root; RT=0 turns it off): the target then gets its CPU
# whenever it is runnable, and its wall time is its own CPU time plus what sampling took from it.
# The profilers' own threads run real-time too, on whatever CPU is free. Every variant runs once,
# uncounted, to warm caches up.
#
#   scripts/bench-overhead.sh                 7 repetitions of 1000 rounds (about 3 s each)
#   REPS=11 ROUNDS=2000 scripts/bench-overhead.sh
#   THREADS=2 scripts/bench-overhead.sh       a two-thread target
#   RT=0 scripts/bench-overhead.sh            normal scheduling (an idle machine)
#
# Needs root (or CAP_BPF and CAP_PERFMON), clang-19 or clang, and a Rust toolchain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REPS=${REPS:-7}
ROUNDS=${ROUNDS:-1000}
THREADS=${THREADS:-1}
RT=${RT:-1}

policy=()
if [ "$RT" = 1 ]; then
  if chrt -f 10 true 2>/dev/null; then
    policy=(chrt -f 10)
  else
    echo "bench-overhead: cannot use a real-time policy (not root?): wall times will be noisier" >&2
  fi
fi
work=$(mktemp -d /tmp/eagle-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "building release binaries..." >&2
cargo build --release --workspace --bins --quiet
eagle=target/release/kubectl-eagle
clang=$(command -v clang-19 || command -v clang || true)
[ -n "$clang" ] || { echo "bench-overhead: needs clang-19 or clang to build groundtruth" >&2; exit 1; }
"$clang" -O2 -g -fno-omit-frame-pointer -static -pthread -o "$work/groundtruth" images/groundtruth/groundtruth.c
target=("$work/groundtruth" --rounds "$ROUNDS" --threads "$THREADS" --report-cpu)

variants=(base eagle-99 eagle-999)
if perf record -F 99 -g -o "$work/probe.data" -- true >/dev/null 2>&1; then
  variants+=(perf-99 perf-999)
else
  echo "perf record does not work here: comparing with perf skipped" >&2
fi

# Runs one variant once; prints "WALL CPU" as groundtruth measured them.
run() {
  local log="$work/$1.log"
  case $1 in
    base) "${policy[@]}" "${target[@]}" 2>"$log" ;;
    eagle-*) "${policy[@]}" "$eagle" profile -f "${1#eagle-}" -o "$work/out.folded" -- "${target[@]}" 2>"$log" ;;
    perf-*) "${policy[@]}" perf record -q -F "${1#perf-}" -g -o "$work/perf.data" -- "${target[@]}" 2>"$log" >/dev/null ;;
  esac
  awk '/^groundtruth: cpu/ { print $6, $3 }' "$log"
}

for v in "${variants[@]}"; do
  run "$v" >/dev/null || true
done
declare -A walls cpus
for ((rep = 1; rep <= REPS; rep++)); do
  for v in "${variants[@]}"; do
    read -r wall cpu < <(run "$v") || { echo "bench-overhead: $v printed no timing; see $work/$v.log" >&2; cat "$work/$v.log" >&2; exit 1; }
    walls[$v]+="$wall "
    cpus[$v]+="$cpu "
  done
  echo "repetition $rep/$REPS done" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

base_wall=$(median <<<"${walls[base]}")
base_cpu=$(median <<<"${cpus[base]}")
echo
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "target: groundtruth --rounds $ROUNDS --threads $THREADS; ${policy[*]:-normal scheduling}; $REPS repetitions, interleaved; medians"
printf '%-10s %10s %10s %10s %10s  %s\n' variant "wall (s)" "cpu (s)" "wall/base" "cpu/base" "all walls (s)"
for v in "${variants[@]}"; do
  w=$(median <<<"${walls[$v]}")
  c=$(median <<<"${cpus[$v]}")
  printf '%-10s %10.3f %10.3f %10.3f %10.3f  %s\n' "$v" "$w" "$c" "$(awk -v a="$w" -v b="$base_wall" 'BEGIN { print a / b }')" \
    "$(awk -v a="$c" -v b="$base_cpu" 'BEGIN { print a / b }')" "${walls[$v]}"
done
