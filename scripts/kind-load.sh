#!/bin/bash
# For users with Docker and kind: build the project's images with their Dockerfiles and load
# them into a kind cluster, then point the end-to-end tests at it. (The project's own tests use
# the Docker-free lab instead: scripts/lab/e2e-up.sh.)
#
#   scripts/kind-load.sh [--name CLUSTER] [eagle-agent] [groundtruth] [java-groundtruth] [ruby-groundtruth]
#     --name CLUSTER   kind cluster (default: $KIND_CLUSTER_NAME, else "kind")
#     images           default: all four
#   then:
#     kind get kubeconfig --name CLUSTER > /tmp/kind.kubeconfig
#     EAGLE_E2E_KUBECONFIG=/tmp/kind.kubeconfig scripts/test.sh     (or cargo test ...)
#
# The images are tagged with the workspace version, never :latest, so that pods may use
# imagePullPolicy: IfNotPresent and find the loaded image instead of trying a registry.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-kind}
IMAGES=()
while [ $# -gt 0 ]; do
  case $1 in
    --name) [ $# -ge 2 ] || { echo "kind-load: --name needs a value" >&2; exit 2; }; CLUSTER=$2; shift 2 ;;
    eagle-agent|groundtruth|java-groundtruth|ruby-groundtruth) IMAGES+=("$1"); shift ;;
    *) echo "kind-load: unknown argument '$1' (usage: kind-load.sh [--name CLUSTER] [eagle-agent] [groundtruth] [java-groundtruth] [ruby-groundtruth])" >&2; exit 2 ;;
  esac
done
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(eagle-agent groundtruth java-groundtruth ruby-groundtruth)
for t in docker kind; do
  command -v "$t" >/dev/null || { echo "kind-load: $t not found on PATH" >&2; exit 1; }
done
grep -qxF "$CLUSTER" <<<"$(kind get clusters 2>/dev/null)" \
  || { echo "kind-load: no kind cluster named '$CLUSTER' (kind create cluster --name $CLUSTER)" >&2; exit 1; }
VERSION=$(awk '/^\[workspace\.package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || { echo "kind-load: no version under [workspace.package] in Cargo.toml" >&2; exit 1; }

refs=()
for i in "${IMAGES[@]}"; do
  case $i in
    eagle-agent) ref=ghcr.io/kube-eagle/eagle-agent:$VERSION; file=profiler-image/Dockerfile ;;
    groundtruth) ref=lab.local/groundtruth:$VERSION; file=images/groundtruth/Dockerfile ;;
    java-groundtruth) ref=lab.local/java-groundtruth:$VERSION; file=images/java/Dockerfile ;;
    ruby-groundtruth) ref=lab.local/ruby-groundtruth:$VERSION; file=images/ruby/Dockerfile ;;
  esac
  # BuildKit (for the cache mounts and the per-Dockerfile .dockerignore); context: the repo root
  DOCKER_BUILDKIT=1 docker build -f "$ROOT/$file" -t "$ref" "$ROOT"
  refs+=("$ref")
done
kind load docker-image --name "$CLUSTER" "${refs[@]}"
echo "loaded into kind cluster '$CLUSTER': ${refs[*]}"
echo "next: kind get kubeconfig --name $CLUSTER > /tmp/kind.kubeconfig; export EAGLE_E2E_KUBECONFIG=/tmp/kind.kubeconfig"
