#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of every parser that reads hostile input: the result
# stream decoder, folded stacks, pprof profiles, a JIT's perf map, /proc/PID/cgroup. Each target runs for a
# bounded time from the seed corpus in tests/fuzz/corpus/TARGET (new inputs go to a scratch
# directory, not into the checkout). A crash fails the script and leaves its input in
# target/fuzz/artifacts/TARGET/.
#
#   scripts/fuzz.sh              every target, 20 s each
#   scripts/fuzz.sh 300 perf_map one target, 5 minutes
#
# Built on stable Rust: the coverage instrumentation is stable codegen flags (what cargo-fuzz
# passes, without the nightly-only sanitizers; the targets are safe Rust, so the checks that
# matter are panics, overflow checks and debug assertions, all on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stream_decoder folded_parse pprof_decode perf_map cgroup_path)

export CARGO_TARGET_DIR=$PWD/target/fuzz
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts, which must not be instrumented.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --target "$host" --manifest-path tests/fuzz/Cargo.toml "${targets[@]/#/--bin=}" >&2

failed=0
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)
  mkdir -p "$CARGO_TARGET_DIR/artifacts/$t"
  log="$CARGO_TARGET_DIR/$t.log"
  set +e
  "$CARGO_TARGET_DIR/$host/release/$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -timeout=10 \
    -artifact_prefix="$CARGO_TARGET_DIR/artifacts/$t/" -print_final_stats=1 \
    "$scratch" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  rm -rf "$scratch"
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+' || echo "?")
  if [ $rc -eq 0 ]; then
    echo "fuzz: $t: $runs executions in ${seconds}s, coverage $cov, 0 crashes" >&2
  else
    failed=1
    echo "fuzz: $t: FAILED after $runs executions (exit $rc); input in $CARGO_TARGET_DIR/artifacts/$t/, log $log:" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 >&2
  fi
done
exit $failed
