#!/usr/bin/env bash
# Sets up and runs every test of kube-eagle: formatting, lints, unit and fixture tests, the
# local end-to-end tests on real eBPF, and the cluster end-to-end tests on a real Kubernetes
# (built from Debian's packages and cached in /var/cache/kube-eagle, see docs/e2e-lab.md).
#
#   scripts/test.sh                     everything
#   EAGLE_SKIP_E2E=1 scripts/test.sh    skip the cluster end-to-end tests
#   EAGLE_E2E_KUBECONFIG=~/.kube/config scripts/test.sh   run them against another cluster
#   EAGLE_LAB_NODES=1 scripts/test.sh   a one-node lab (quicker; the node-level tests skip)
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
stamp "unit, fixture and local end-to-end tests"
# Here and in CI eBPF is available: a test that cannot load it fails rather than skips.
export EAGLE_TESTS_REQUIRE_BPF=${EAGLE_TESTS_REQUIRE_BPF:-1}
cargo nextest run --workspace --locked --no-fail-fast

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
  cargo nextest run -p eagle-tests --locked --run-ignored only --no-fail-fast --test-threads 1
  echo "== cluster part: $(( $(date +%s) - cluster_t0 ))s (cluster up $(( tests_t0 - cluster_t0 ))s, tests $(( $(date +%s) - tests_t0 ))s)" >&2
fi
stamp done
