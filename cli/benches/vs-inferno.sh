#!/bin/bash
# Merge + render of 1 M folded lines: kubectl-eagle against inferno-flamegraph on the same input,
# in one run (cli/benches/render.rs). Installs inferno-flamegraph, the same inferno release the
# CLI links, into a cache when it is not on PATH (the tests never install anything).
#
#   cli/benches/vs-inferno.sh            # EAGLE_BENCH_LINES=1000000 EAGLE_BENCH_RUNS=5 by default
#
# The figures go to docs/performance.md ("Flame graph rendering against inferno").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${EAGLE_CACHE:-$HOME/.cache/kube-eagle}
VERSION=$(awk '/^name = "inferno"$/{getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")
[ -n "$VERSION" ] || { echo "vs-inferno: no inferno in Cargo.lock" >&2; exit 1; }

if [ -z "${INFERNO_FLAMEGRAPH:-}" ]; then
  if command -v inferno-flamegraph >/dev/null; then
    INFERNO_FLAMEGRAPH=$(command -v inferno-flamegraph)
  else
    INFERNO_FLAMEGRAPH=$CACHE/inferno-$VERSION/bin/inferno-flamegraph
    if [ ! -x "$INFERNO_FLAMEGRAPH" ]; then
      echo "vs-inferno: installing inferno $VERSION into $CACHE/inferno-$VERSION (a few minutes, once)" >&2
      cargo install --locked --quiet --root "$CACHE/inferno-$VERSION" "inferno@$VERSION"
    fi
  fi
fi
export INFERNO_FLAMEGRAPH
echo "inferno-flamegraph: $INFERNO_FLAMEGRAPH (inferno $VERSION)"
cd "$ROOT"
cargo bench -p kube-eagle --bench render
