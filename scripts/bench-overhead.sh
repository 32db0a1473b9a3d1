#!/usr/bin/env bash
# How much does profiling slow the target down, per runtime?
#
# Each runtime's groundtruth (images/) does a fixed amount of work (`--rounds N`) and reports
# its CPU time and the time its rounds took (`groundtruth: cpu S s wall S s`), so the
# profiler's own start-up and the writing of its output are not counted: only what the target
# itself lost. For each runtime, each repetition runs, in turn:
#
#   base      the groundtruth alone                                    (the reference)
#   eagle-99  kubectl-eagle profile -f 99 -o ... -- groundtruth ...     (the default rate)
# and for native code also
#   eagle-999 kubectl-eagle profile -f 999 -o ... -- groundtruth ...
#   eagle-fp-99, eagle-fp-999   the same with EAGLE_UNWIND=frame-pointers: user stacks walked
#             by frame pointers only, as before the .eh_frame unwinder (the cost it adds)
#   perf-99   perf record -F 99  -g -o ... -- groundtruth ...           (where perf works)
#   perf-999  perf record -F 999 -g -o ... -- groundtruth ...
# and for `chains` (images/chains: C built with plain -O2, no frame pointers, whose stacks only
# an unwinder with tables gets right) the reference a user would otherwise reach for:
#   perf-dwarf-99, perf-dwarf-999   perf record --call-graph dwarf (copies 8 KiB of stack per
#             sample and unwinds them afterwards)
#
# and for `switches` (images/runq `pingpong`: two threads handing a byte back and forth over
# pipes on one CPU, about 50,000 context switches a second), the cost of following the scheduler
# beside CPU mode, with the minimum-duration filter on (the default 1 ms) and off:
#   offcpu-1ms, offcpu-0   kubectl-eagle profile --mode off-cpu --min-block 1ms|0 -- runq ...
#   wall-1ms, wall-0       kubectl-eagle profile --mode wall -f 99 --min-block 1ms|0 -- runq ...
# (runq prints its switch rate, `runq: N switches per second`, shown per variant.) Where the
# kernel has sched_exit_tp (Linux 6.16+) a known stop site is compared at the switch in (with a
# minimum above 0: offcpu-0 and wall-0 compare at the switch out, as every stop counts);
# EAGLE_OFFCPU_CHECK_SITES=switch-out measures the way of older kernels, and a two-line wrapper
# that sets it and execs this build, given as BEFORE=, measures both in one run.
#
# What is measured is each runtime's sampler: eBPF for native code (and for Node.js, whose JIT
# frames are named from the perf map that `node --perf-basic-prof` writes; `base` runs with the
# same flags), JDK Flight Recorder attached through jattach for Java (started plainly), py-spy's
# and rbspy's libraries for Python and Ruby (both read the interpreter's memory, pausing it for
# each read); eBPF counts every process on the CPU clock besides.
#
# JVM_ATTACH=1 (the default when java is measured) adds what attaching costs a JVM: a Java
# thread that notes every gap in its own progress runs alone and while it is profiled, and the
# longest pause, the gaps over 1 ms and the JVM's CPU time are compared.
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
#   scripts/bench-overhead.sh                 native chains go python java node ruby switches, 7 repetitions each
#   RUNTIMES=switches scripts/bench-overhead.sh   the scheduler's events only (off-CPU and wall modes)
#   RUNTIMES="native java" REPS=11 scripts/bench-overhead.sh
#   ROUNDS=2000 THREADS=2 RUNTIMES=native scripts/bench-overhead.sh   a two-thread native target
#   RT=0 scripts/bench-overhead.sh            normal scheduling (an idle machine)
#   BUILD=debug scripts/bench-overhead.sh     the debug binaries (see below)
#   BEFORE=/tmp/kubectl-eagle-main scripts/bench-overhead.sh   every profiled variant also run with
#             another build, as `before:VARIANT`, interleaved with the rest: a change's effect
#             measured in one run, beside the same base
#   PROGRAM_STATS=1 scripts/bench-overhead.sh   and the kernel's timing of each eBPF program per
#             run (EAGLE_PROGRAM_STATS=1; the timing itself costs the target a little: for
#             telling the programs' cost from the rest, not for the ratios)
#
# Runtimes whose toolchain (go, python3, java/javac, node, ruby) or helper (jattach: see
# scripts/setup.sh) is missing are skipped with a note. Needs root (or CAP_BPF and
# CAP_PERFMON), clang-19 or clang, python3 (the paired intervals) and a Rust toolchain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REPS=${REPS:-7}
THREADS=${THREADS:-1}
RT=${RT:-1}
read -r -a RUNTIMES <<<"${RUNTIMES:-native chains go python java node ruby switches}"
# Rounds of about 2.5 s each on this machine, per runtime; ROUNDS overrides them all.
declare -A rounds=([native]=1000 [chains]=1200 [go]=800 [python]=200 [java]=500 [node]=800 [ruby]=400 [switches]=60000)

if [ "${PROGRAM_STATS:-0}" = 1 ]; then
  export EAGLE_PROGRAM_STATS=1
fi
if [ -n "${BEFORE:-}" ] && ! [ -x "$BEFORE" ]; then
  echo "bench-overhead: BEFORE=$BEFORE is not an executable kubectl-eagle" >&2
  exit 2
fi
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

# BUILD=debug measures the debug binaries (no release build at hand): the kernel side, which is
# what a target pays for, is the same eBPF program either way; the agent's own threads are slower.
if [ "${BUILD:-release}" = debug ]; then
  echo "building debug binaries..." >&2
  cargo build --workspace --bins --quiet
  eagle=target/debug/kubectl-eagle
else
  echo "building release binaries..." >&2
  cargo build --release --workspace --bins --quiet
  eagle=target/release/kubectl-eagle
fi

# Sets `target` to the runtime's fixed-work command line; fails (with the reason on stdout)
# when the runtime cannot be measured here.
prepare() {
  local n=${ROUNDS:-${rounds[$1]}}
  case $1 in
    native)
      local clang; clang=$(command -v clang-19 || command -v clang || true)
      [ -n "$clang" ] || { echo "needs clang-19 or clang to build groundtruth"; return 1; }
      "$clang" -O2 -g -fno-omit-frame-pointer -static -pthread -o "$work/groundtruth" images/groundtruth/groundtruth.c
      target=("$work/groundtruth" --rounds "$n" --threads "$THREADS" --report-cpu) ;;
    chains)
      local clang; clang=$(command -v clang-19 || command -v clang || true)
      [ -n "$clang" ] || { echo "needs clang-19 or clang to build chains"; return 1; }
      "$clang" -O2 -g -o "$work/chains" images/chains/chains.c
      target=("$work/chains" --rounds "$n" --report-cpu) ;;
    go)
      command -v go >/dev/null || { echo "needs go (scripts/setup.sh installs golang-go)"; return 1; }
      (cd images/go && GOFLAGS=-mod=mod go build -o "$work/groundtruth-go" .)
      target=("$work/groundtruth-go" --rounds "$n") ;;
    python)
      command -v python3 >/dev/null || { echo "needs python3"; return 1; }
      target=(python3 images/python/groundtruth.py --rounds "$n") ;;
    java)
      command -v javac >/dev/null || { echo "needs a JDK (javac)"; return 1; }
      command -v jattach >/dev/null || { echo "needs jattach (scripts/setup.sh)"; return 1; }
      javac -d "$work/java" images/java/GroundTruth.java
      target=(java -cp "$work/java" GroundTruth --rounds "$n") ;;
    node)
      command -v node >/dev/null || { echo "needs node"; return 1; }
      target=(node --perf-basic-prof --interpreted-frames-native-stack images/node/groundtruth.js --rounds "$n") ;;
    ruby)
      command -v ruby >/dev/null || { echo "needs ruby"; return 1; }
      target=(ruby images/ruby/groundtruth.rb --rounds "$n") ;;
    switches)
      local clang; clang=$(command -v clang-19 || command -v clang || true)
      [ -n "$clang" ] || { echo "needs clang-19 or clang to build runq"; return 1; }
      "$clang" -O2 -g -pthread -o "$work/runq" images/runq/runq.c
      target=("$work/runq" pingpong --rounds "$n" --cpu 1) ;;
    *) echo "unknown runtime (known: native chains go python java node ruby switches)"; return 1 ;;
  esac
}

# Runs one variant once; prints "WALL CPU" as groundtruth measured them.
run() {
  local log="$work/$1.log" eagle=$eagle
  if [[ $1 == before:* ]]; then
    eagle=$BEFORE
    set -- "${1#before:}" "$1"
    log="$work/$2.log"
  fi
  case $1 in
    base) "${policy[@]}" "${target[@]}" 2>"$log" ;;
    eagle-fp-*) EAGLE_UNWIND=frame-pointers "${policy[@]}" "$eagle" profile -f "${1#eagle-fp-}" -o "$work/out.folded" -- "${target[@]}" 2>"$log" ;;
    eagle-*) "${policy[@]}" "$eagle" profile -f "${1#eagle-}" -o "$work/out.folded" -- "${target[@]}" 2>"$log" ;;
    offcpu-*) "${policy[@]}" "$eagle" profile --mode off-cpu --min-block "${1#offcpu-}" -o "$work/out.folded" -- "${target[@]}" 2>"$log" ;;
    wall-*) "${policy[@]}" "$eagle" profile --mode wall -f 99 --min-block "${1#wall-}" -o "$work/out.folded" -- "${target[@]}" 2>"$log" ;;
    perf-dwarf-*) "${policy[@]}" perf record -q -F "${1#perf-dwarf-}" --call-graph dwarf -o "$work/perf.data" -- "${target[@]}" 2>"$log" >/dev/null ;;
    perf-*) "${policy[@]}" perf record -q -F "${1#perf-}" -g -o "$work/perf.data" -- "${target[@]}" 2>"$log" >/dev/null ;;
  esac
  awk '/^runq: .* switches per second/ { print $2 }' "$log" >>"$work/${2:-$1}.rate"
  # EAGLE_PROGRAM_STATS's line: "... offcpu_switch N runs, X ns each; ..."
  sed -n 's/.*offcpu_switch [0-9]* runs, \([0-9]*\) ns each.*/\1/p' "$log" >>"$work/${2:-$1}.switch_ns"
  sed -n 's/.*offcpu_wakeup [0-9]* runs, \([0-9]*\) ns each.*/\1/p' "$log" >>"$work/${2:-$1}.wakeup_ns"
  # offcpu_switch_in runs where the kernel has sched_exit_tp (Linux 6.16+) and --min-block is above
  # 0: part of a switch's cost.
  sed -n 's/.*offcpu_switch_in [0-9]* runs, \([0-9]*\) ns each.*/\1/p' "$log" >>"$work/${2:-$1}.switch_in_ns"
  awk '/^groundtruth: cpu/ { print $6, $3 }' "$log"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# "MEDIAN [LOW, HIGH]" of the ratios of two lists of times taken in the same repetitions.
paired() {
  paste -d' ' <(tr ' ' '\n' <<<"$1" | grep .) <(tr ' ' '\n' <<<"$2" | grep .) \
    | awk 'BEGIN { printf "r" } { printf " %s", $1 / $2 } END { print "" }' \
    | python3 scripts/median_interval.py | cut -d' ' -f2-
}

echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "${policy[*]:-normal scheduling}; $REPS repetitions per runtime, variants interleaved; medians"
for runtime in "${RUNTIMES[@]}"; do
  if ! prepare "$runtime" >"$work/why"; then
    echo; echo "$runtime: skipped: $(cat "$work/why")"; continue
  fi
  variants=(base eagle-99)
  if [ "$runtime" = switches ]; then
    variants+=(offcpu-1ms offcpu-0 wall-1ms wall-0)
  fi
  if [ -n "${BEFORE:-}" ]; then
    for v in "${variants[@]}"; do
      [ "$v" = base ] || variants+=("before:$v")
    done
  fi
  rm -f "$work"/*.rate "$work"/*_ns
  if [ "$runtime" = native ] || [ "$runtime" = chains ]; then
    variants+=(eagle-999 eagle-fp-99 eagle-fp-999)
    if perf record -F 99 -g -o "$work/probe.data" -- true >/dev/null 2>&1; then
      if [ "$runtime" = native ]; then variants+=(perf-99 perf-999); else variants+=(perf-dwarf-99 perf-dwarf-999); fi
    else
      echo "perf record does not work here: comparing with perf skipped" >&2
    fi
  fi
  for v in "${variants[@]}"; do
    run "$v" >/dev/null || true
  done
  unset walls cpus
  declare -A walls cpus
  for ((rep = 1; rep <= REPS; rep++)); do
    for v in "${variants[@]}"; do
      read -r wall cpu < <(run "$v") || { echo "bench-overhead: $runtime $v printed no timing; see $work/$v.log" >&2; cat "$work/$v.log" >&2; exit 1; }
      walls[$v]+="$wall "
      cpus[$v]+="$cpu "
    done
    echo "$runtime: repetition $rep/$REPS done" >&2
  done
  base_wall=$(median <<<"${walls[base]}")
  base_cpu=$(median <<<"${cpus[base]}")
  echo
  echo "$runtime: ${target[*]/#$work\//}"
  printf '%-20s %10s %10s %10s %10s  %s\n' variant "wall (s)" "cpu (s)" "wall/base" "cpu/base" "all walls (s)"
  for v in "${variants[@]}"; do
    w=$(median <<<"${walls[$v]}")
    c=$(median <<<"${cpus[$v]}")
    rate=""
    [ -s "$work/$v.rate" ] && rate="  $(median <"$work/$v.rate") switches/s;"
    [ -s "$work/$v.switch_ns" ] && rate+=" offcpu_switch $(median <"$work/$v.switch_ns") ns, offcpu_wakeup $(median <"$work/$v.wakeup_ns") ns per run;"
    [ -s "$work/$v.switch_in_ns" ] && rate+=" offcpu_switch_in $(median <"$work/$v.switch_in_ns") ns per run;"
    printf '%-20s %10.3f %10.3f %10.3f %10.3f %s %s\n' "$v" "$w" "$c" "$(awk -v a="$w" -v b="$base_wall" 'BEGIN { print a / b }')" \
      "$(awk -v a="$c" -v b="$base_cpu" 'BEGIN { print a / b }')" "$rate" "${walls[$v]}"
  done
  # The medians above come from different repetitions; these ratios are taken within one
  # repetition (the variants ran seconds apart), which cancels the machine's drift between
  # repetitions: each variant over base, and this build over BEFORE's for the same variant.
  echo "paired by repetition: median ratio with its distribution-free 95 % interval"
  printf '%-20s %-24s %-24s\n' variant "wall / base" "cpu / base"
  for v in "${variants[@]}"; do
    [ "$v" = base ] && continue
    w=$(paired "${walls[$v]}" "${walls[base]}")
    c=$(paired "${cpus[$v]}" "${cpus[base]}")
    printf '%-20s %-24s %-24s\n' "$v" "$w" "$c"
  done
  for v in "${variants[@]}"; do
    [[ $v == before:* ]] || continue
    printf '%-20s %-24s %-24s\n' "this/${v#before:}" "$(paired "${walls[${v#before:}]}" "${walls[$v]}")" \
      "$(paired "${cpus[${v#before:}]}" "${cpus[$v]}")"
  done
done

# --- What attaching costs a JVM (JVM_ATTACH=1, the default when java is measured) ---------------
if [[ " ${RUNTIMES[*]} " == *" java "* ]] && [ "${JVM_ATTACH:-1}" = 1 ] && command -v javac >/dev/null \
  && command -v jattach >/dev/null; then
  mkdir -p "$work/hiccup"
  cat >"$work/hiccup/Hiccup.java" <<'JAVA'
// Spins for the given seconds, noting every gap in its own progress: a safepoint or a suspension
// of the JVM shows as a gap. Prints the longest, the count over 1 ms, and the JVM's CPU time.
public class Hiccup {
    public static void main(String[] args) {
        long end = System.nanoTime() + Long.parseLong(args[0]) * 1_000_000_000L;
        long last = System.nanoTime(), longest = 0, over1ms = 0, x = 1;
        for (long now = last; now < end; now = System.nanoTime()) {
            long gap = now - last;
            longest = Math.max(longest, gap);
            if (gap > 1_000_000) over1ms++;
            last = now;
            for (int i = 0; i < 2000; i++) x = x * 6364136223846793005L + 1;
        }
        long cpu = ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean()).getProcessCpuTime();
        System.err.printf("hiccup: longest %.3f ms, over 1 ms %d, cpu %.3f s (%d)%n", longest / 1e6, over1ms, cpu / 1e9, x & 1);
    }
}
JAVA
  javac -d "$work/hiccup" "$work/hiccup/Hiccup.java"
  # Runs the JVM for 10 s; with a profile of seconds 3 to 8 when $1 is a rate.
  hiccup() {
    "${policy[@]}" java -cp "$work/hiccup" Hiccup 10 2>"$work/hiccup.log" &
    local jvm=$!
    if [ -n "${1:-}" ]; then
      sleep 3
      "$eagle" profile "pid/$jvm" -d 5s -f "$1" -o "$work/hiccup.folded" 2>"$work/hiccup-eagle.log" || true
    fi
    wait "$jvm"
    # hiccup: longest L ms, over 1 ms N, cpu C s (x)
    awk '/^hiccup:/ { print $3, $8 + 0, $10 }' "$work/hiccup.log"
  }
  echo
  echo "java attach: a spinning JVM for 10 s, alone (base) and profiled from 3 to 8 s; medians of $REPS"
  printf '%-10s %14s %14s %10s %10s\n' variant "longest (ms)" "gaps > 1 ms" "cpu (s)" "cpu/base"
  for v in base 99 499; do
    unset longest over cpu
    for ((rep = 1; rep <= REPS; rep++)); do
      read -r l o c < <(hiccup "${v#base}")
      longest+="$l "; over+="$o "; cpu+="$c "
    done
    l=$(median <<<"$longest"); o=$(median <<<"$over"); c=$(median <<<"$cpu")
    [ "$v" = base ] && base_cpu=$c
    name=$v; [ "$v" = base ] || name="eagle-$v"
    printf '%-10s %14.3f %14s %10.3f %10.3f  longest: %s\n' "$name" "$l" "$o" "$c" "$(awk -v a="$c" -v b="$base_cpu" 'BEGIN { print a / b }')" "$longest"
  done
fi
