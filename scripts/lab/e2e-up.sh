#!/bin/bash
# The one entry point for end-to-end tests: a running lab cluster with the project's images.
#
#   scripts/lab/e2e-up.sh
#   KUBECONFIG=$(scripts/lab/e2e-up.sh)      # stdout carries only the kubeconfig path
#
# = install.sh (cached: seconds after the first run) + build-images.sh (repacks only what
# changed) + up.sh (idempotent) + load-images.sh (imports only what changed).
# Environment: EAGLE_LAB, EAGLE_LAB_CACHE, EAGLE_LAB_NODES (1 to 5, default 3; see lib.sh),
# EAGLE_AGENT_BIN, GROUNDTRUTH_SRC (see
# build-images.sh), EAGLE_LAB_IMAGES: the images to build and load (default
# "pause busybox groundtruth python-groundtruth java-groundtruth ruby-groundtruth eagle-agent"; drop eagle-agent to skip the cargo musl build).
# Progress and timings go to stderr; the last line on stdout is the admin kubeconfig's path.
# On failure: non-zero exit, and the last line on stderr says which step failed and why.
# Tear down with scripts/lab/e2e-down.sh.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
read -r -a IMAGES <<<"${EAGLE_LAB_IMAGES:-pause busybox groundtruth python-groundtruth java-groundtruth ruby-groundtruth eagle-agent}"
ERR=$(mktemp /tmp/eagle-lab-e2e.XXXXXX)
trap 'rc=$?; rm -f "$ERR"; lab_exit_report $rc' EXIT

# step NAME CMD...: run a lab script with all its output on stderr; on failure, die with the
# script's own error line, so that the last line names both the step and the cause
step() {
  local name=$1 s rc cause; shift
  s=$(date +%s)
  set +e
  "$@" 2>&1 | tee "$ERR" >&2
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    cause=$(grep '^lab: error: ' "$ERR" | tail -n1 | sed 's/^lab: error: //')
    die "e2e-up: $name failed after $(( $(date +%s) - s ))s: ${cause:-exit $rc, see the output above}"
  fi
  log "e2e-up: $name $(( $(date +%s) - s ))s"
}

T0=$(date +%s)
# The nodes share the host's disk: say how much is left, for a failure read from a CI log.
log "e2e-up: host disk: $(df -h --output=avail,pcent / | tail -n 1 | awk '{print $1 " free, " $2 " used"}')"
step install "$LAB_DIR/install.sh"
step build-images "$LAB_DIR/build-images.sh" "${IMAGES[@]}"
step up "$LAB_DIR/up.sh"
step load-images "$LAB_DIR/load-images.sh" "${IMAGES[@]}"
log "e2e-up: lab ready in $(( $(date +%s) - T0 ))s; . scripts/lab/env.sh to use it, scripts/lab/e2e-down.sh to remove it"
echo "$EAGLE_LAB/admin.kubeconfig"
