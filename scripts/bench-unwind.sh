#!/usr/bin/env bash
# What the .eh_frame unwinder changes for real binaries, and what it costs to get ready.
#
# 1. The share of samples whose native stack reaches `main`, walked by frame pointers only
#    (EAGLE_UNWIND=frame-pointers, as before the unwinder) and unwound with tables, in one run:
#      xz      Debian's /usr/bin/xz -9, compressing a big file (C, built without frame pointers)
#      python  Debian's /usr/bin/python3 running images/python/groundtruth.py --zlib, sampled
#              natively (--runtime native: CPython's own C frames and zlib under them);
#              and with --native, where py-spy unwinds (its own unwinder, unchanged here)
#      eagle   this project's release binary (Rust, release profile) converting a big profile
# 2. For a process mapping a lot of code (python3 with libLLVM 14, 15 and 19 and libclang-cpp
#    loaded: about 400 MB of executable mappings), the time from the launch of
#    `kubectl-eagle profile pid/N` until the process's tables are loaded (its samples are unwound
#    from then on), and the CLI's peak RSS (the agent runs in it in local mode), REPS times
#    (default 3) each, interleaved: with frame pointers only, with the table builder on one
#    thread (EAGLE_UNWIND_BUILD_THREADS=1), with its default threads, and, when REFERENCE names
#    another build of kubectl-eagle (an earlier commit's), with that build.
#
#   scripts/bench-unwind.sh              needs root, clang-19, xz, python3
#   PARTS=2 REFERENCE=/tmp/old/kubectl-eagle scripts/bench-unwind.sh    part 2 only, against a reference
set -euo pipefail
parts=${PARTS:-12}
reps=${REPS:-3}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d /tmp/eagle-bench-unwind.XXXXXX)
trap 'rm -rf "$work"; [ -n "${big:-}" ] && kill "$big" 2>/dev/null || true' EXIT

echo "building release binaries..." >&2
cargo build --release --workspace --bins --quiet
eagle=$PWD/target/release/kubectl-eagle

# share FILE: "whole/total (percent)" of the samples in a folded FILE whose stack is whole: it
# reaches `main` or the C library's start of the process or of a thread (the outermost frames of
# a stripped binary have no names of their own, libc's have).
share() {
  awk '{ n = $NF; total += n; if ($0 ~ /;(main|_start|__libc_start_main|__libc_start_main_impl|__libc_start_call_main|start_thread|clone|clone3);/) reach += n }
       END { printf "%d/%d (%.1f%%)", reach, total, total ? 100 * reach / total : 0 }' "$1"
}

# measure NAME ARGS...: one profile per mode; prints a table row.
measure() {
  local name=$1; shift
  local fp tables
  EAGLE_UNWIND=frame-pointers "$eagle" profile -o "$work/$name-fp.folded" "$@" 2>"$work/$name-fp.log" || { cat "$work/$name-fp.log" >&2; return 1; }
  "$eagle" profile -o "$work/$name-tables.folded" "$@" 2>"$work/$name-tables.log" || { cat "$work/$name-tables.log" >&2; return 1; }
  fp=$(share "$work/$name-fp.folded")
  tables=$(share "$work/$name-tables.folded")
  printf '%-36s %-24s %-24s\n' "$name" "$fp" "$tables"
}

echo "machine: $(nproc) CPUs, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $parts == *1* ]]; then
echo
printf '%-36s %-24s %-24s\n' "whole stacks (down to main/start)" "frame pointers" ".eh_frame tables"
head -c 64M /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 >"$work/input" 2>/dev/null || head -c 64M /dev/urandom >"$work/input"
measure "xz -9 (Debian)" -d 8s -f 499 -- sh -c "exec /usr/bin/xz -9 -T1 -k -c $work/input >/dev/null"
measure "python3 --runtime native (Debian)" -d 6s -f 499 --runtime native -- /usr/bin/python3 images/python/groundtruth.py --zlib
measure "python3 --native (py-spy)" -d 6s -f 499 --native -- /usr/bin/python3 images/python/groundtruth.py --zlib
# A big profile to convert, made by the release binary itself.
awk 'BEGIN { srand(1); for (i = 0; i < 300000; i++) { s = "root"; d = 5 + int(rand() * 30); for (j = 0; j < d; j++) s = s ";f" int(rand() * 2000); print s, 1 + int(rand() * 100) } }' >"$work/big.folded"
measure "kubectl-eagle convert (release)" -d 8s -f 499 -- sh -c "while :; do $eagle convert $work/big.folded -o $work/big.svg; done"
fi

[[ $parts == *2* ]] || exit 0
echo

# A process that maps a lot of code and then spins in Python.
libs=$(ls /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1 /usr/lib/x86_64-linux-gnu/libclang-cpp.so.19.1 2>/dev/null | tr '\n' ' ')
/usr/bin/python3 -c "
import ctypes, sys
for p in sys.argv[1:]:
    ctypes.CDLL(p)
while True:
    pass
" $libs &
big=$!
sleep 2
code=0
while read -r range perms _; do
  [[ $perms == *x* ]] && code=$((code + 0x${range#*-} - 0x${range%-*}))
done </proc/$big/maps
code=$((code / 1048576))
echo "a process with $code MiB of executable mappings (python3 + $libs); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "each row: from the CLI's launch to the process's tables loaded; CLI's peak RSS"

# since_launch CMD...: runs CMD, each line of its stderr prefixed with the seconds since launch.
since_launch() {
  python3 -c '
import subprocess, sys, time
start = time.monotonic()
child = subprocess.Popen(sys.argv[1:], stderr=subprocess.PIPE, text=True)
for line in child.stderr:
    sys.stderr.write("%.3f %s" % (time.monotonic() - start, line))
sys.exit(child.wait())' "$@"
}

variants="frame-pointers one-thread threads"
[ -n "${REFERENCE:-}" ] && variants="reference $variants"
for rep in $(seq "$reps"); do
  for variant in $variants; do
    binary=$eagle; env=(EAGLE_UNWIND_DEBUG=1)
    case $variant in
      reference) binary=$REFERENCE ;;
      frame-pointers) env+=(EAGLE_UNWIND=frame-pointers) ;;
      one-thread) env+=(EAGLE_UNWIND_BUILD_THREADS=1) ;;
    esac
    log=$work/big-$variant-$rep.log
    (export "${env[@]}"; since_launch /usr/bin/time -f "peak RSS %M KiB" "$binary" profile -o "$work/big.folded" -d 5s -f 99 --runtime native "pid/$big" 2>"$log") || { cat "$log" >&2; exit 1; }
    ready=$(grep -m1 "unwind: .* pid $big (generation" "$log" | awk '{ print $1 " s" }' || true)
    split=$(grep -m1 "unwind: .* pid $big (generation" "$log" | sed -n 's/.*built in \([0-9.]*\)s (\(.*\)); \([0-9]*\) tables, \([0-9]*\) rows.*/built in \1 s (\2); \3 tables, \4 rows/p; s/.*built in \([0-9.]*\)s; \([0-9]*\) tables, \([0-9]*\) rows.*/built in \1 s; \2 tables, \3 rows/p' || true)
    printf '%-15s rep %d: tables ready %-9s peak RSS %6.1f MiB  %s\n' "$variant" "$rep" "${ready:--}" \
      "$(sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' "$log" | awk '{ print $1 / 1024 }')" "$split"
  done
done
