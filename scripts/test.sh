#!/usr/bin/env bash
# Sets up and runs every test of kube-eagle: formatting, lints, unit and fixture tests, the
# local end-to-end tests on real eBPF, and the cluster end-to-end tests on a real Kubernetes
# (built from Debian's packages and cached in /var/cache/kube-eagle, see docs/e2e-lab.md).
#
#   scripts/test.sh                     everything
#   EAGLE_SKIP_E2E=1 scripts/test.sh    skip the cluster end-to-end tests
#   EAGLE_E2E_KUBECONFIG=~/.kube/config scripts/test.sh   run them against another cluster
#   EAGLE_FUZZ_SECONDS=60 scripts/test.sh  fuzz each parser longer (default 15 s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
t0=$(date +%s)
stamp() { echo "== $1 (+$(( $(date +%s) - t0 ))s)" >&2; }

stamp setup
scripts/setup.sh
stamp "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
stamp build
cargo build --workspace --bins --locked
stamp "arm64 CLI and agent, cross-built and started under qemu-user"
scripts/cross-arm64.sh
stamp "unit, fixture and local end-to-end tests"
# Here and in CI every capability the tests need is set up (eBPF, the toolchains, py-spy,
# jattach): a test that cannot run fails rather than skips (eagle_tests::skip). Skips allowed by
# hand (EAGLE_TESTS_REQUIRE_BPF=0) are counted in this file and reported below.
export EAGLE_TESTS_REQUIRE_BPF=${EAGLE_TESTS_REQUIRE_BPF:-1}
skips=target/debug/eagle-skips.txt
rm -f "$skips"
report_skips() {
  if [ -s "$skips" ]; then
    echo "skipped tests: $(wc -l < "$skips")" >&2
    cat "$skips" >&2
    return 1
  fi
  echo "skipped tests: 0" >&2
}
cargo nextest run --workspace --locked --no-fail-fast
report_skips
stamp "fuzzing the parsers of hostile input"
scripts/fuzz.sh "${EAGLE_FUZZ_SECONDS:-15}"

if [ "${EAGLE_SKIP_E2E:-0}" = 1 ]; then
  echo "cluster end-to-end tests skipped: EAGLE_SKIP_E2E=1" >&2
else
  cluster_t0=$(date +%s)
  if [ -z "${EAGLE_E2E_KUBECONFIG:-}" ]; then
    stamp "lab cluster up (${EAGLE_LAB_NODES:-3} nodes)"
    trap 'stamp "lab cluster down"; scripts/lab/e2e-down.sh >&2 || true' EXIT
    EAGLE_E2E_KUBECONFIG=$(scripts/lab/e2e-up.sh | tail -n 1)
    export EAGLE_E2E_KUBECONFIG
  fi
  tests_t0=$(date +%s)
  stamp "cluster end-to-end tests against $EAGLE_E2E_KUBECONFIG"
  # One at a time: each test measures CPU shares of busy pods on a small cluster.
  if ! cargo nextest run -p eagle-tests --locked --run-ignored only --no-fail-fast --test-threads 1; then
    # CI is read from its log alone: say what state the cluster and the host were in.
    echo "== cluster end-to-end tests failed; the cluster and the host as they are now:" >&2
    df -h / /var/lib /tmp >&2 || true
    (k=$EAGLE_E2E_KUBECONFIG; . scripts/lab/env.sh; export KUBECONFIG=$k; kubectl get nodes -o wide && kubectl describe nodes | grep -E -A12 '^(Name|Conditions|Taints):' \
      && kubectl get pods -A -o wide) >&2 || true
    exit 1
  fi
  echo "== cluster part: $(( $(date +%s) - cluster_t0 ))s (cluster up $(( tests_t0 - cluster_t0 ))s, tests $(( $(date +%s) - tests_t0 ))s)" >&2
  report_skips
fi
stamp done
