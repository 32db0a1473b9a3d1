#!/bin/bash
# Smoke test of a lab (or any) cluster, the things kubectl-eagle relies on:
#   1. a privileged hostPID Job in the locked namespace kube-eagle runs and sees host PID 1,
#      and `kubectl logs -f` on it returns its output;
#   2. a 2-replica Deployment of lab.local/groundtruth:VERSION reaches Running, with
#      containerd:// container IDs;
#   3. (when loaded) the eagle-agent image starts and its py-spy runs.
#
#   scripts/lab/tests/smoke.sh [--keep]     (--keep: leave the objects for a look)
# Uses $KUBECONFIG when set, else the lab's. Exits non-zero with one line on the first failure.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
T=$LAB_DIR/tests
VERSION=$(workspace_version)
KC=${KUBECONFIG:-$EAGLE_LAB/admin.kubeconfig}
use_lab_kubectl
export KUBECONFIG=$KC
T0=$(date +%s)

phase_of() { kubectl get pods -n "$1" -l "$2" -o jsonpath='{.items[0].status.phase}' 2>/dev/null || true; }
# kubectl 1.20 `logs -f` prints nothing and exits 0 on a Pending pod, and errors while the
# container is created: wait for a phase where logs exist (a short pod may never show Ready)
wait_started() { # NS SELECTOR
  local i ph
  for ((i = 0; i < 120; i++)); do
    ph=$(phase_of "$1" "$2")
    case $ph in Running|Succeeded|Failed) echo "$ph"; return 0 ;; esac
    sleep 1
  done
  die "pod $2 in $1 not started after 120s (phase '${ph:-none}'): $(kubectl get events -n "$1" --sort-by=.lastTimestamp 2>/dev/null | tail -n 3 | tr -s ' \n' ' ')"
}

for ns in kube-eagle eagle-e2e; do
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
done
# what a 1.25+ cluster enforces; harmless on 1.20, which has no PodSecurity admission
kubectl label namespace kube-eagle --overwrite pod-security.kubernetes.io/enforce=privileged >/dev/null

# 1. hostPID privileged Job
kubectl delete job hostpid-probe -n kube-eagle --ignore-not-found --wait=true >/dev/null
kubectl apply -f "$T/job-hostpid.yaml" >/dev/null
ph=$(wait_started kube-eagle job-name=hostpid-probe)
out=$(kubectl logs -f job/hostpid-probe -n kube-eagle)
grep -qx pid1-visible <<<"$out" || die "hostPID Job (phase $ph) did not see host PID 1; its log: $out"
kubectl wait -n kube-eagle --for=condition=complete job/hostpid-probe --timeout=60s >/dev/null \
  || die "hostPID Job did not complete"
log "ok: privileged hostPID Job ran and saw host PID 1"

# 2. groundtruth Deployment, 2 replicas
sed "s/@VERSION@/$VERSION/g" "$T/deploy-groundtruth.yaml" | kubectl apply -f - >/dev/null
kubectl rollout status -n eagle-e2e deploy/groundtruth --timeout=120s >/dev/null \
  || die "deployment groundtruth not rolled out: $(kubectl get pods -n eagle-e2e -o wide | tail -n +2 | tr -s ' \n' ' ')"
running=$(kubectl get pods -n eagle-e2e -l app=groundtruth --field-selector=status.phase=Running -o name | wc -l)
[ "$running" = 2 ] || die "expected 2 Running groundtruth pods, found $running"
ids=$(kubectl get pods -n eagle-e2e -l app=groundtruth -o jsonpath='{range .items[*]}{.status.containerStatuses[0].containerID}{"\n"}{end}')
[ "$(grep -c '^containerd://[0-9a-f]\{64\}$' <<<"$ids")" = 2 ] || die "unexpected container IDs: $ids"
log "ok: 2 groundtruth pods Running ($(tr '\n' ' ' <<<"$ids"))"

# 3. the profiler image; skipped when the lab's containerd does not have it (SMOKE_SKIP_AGENT=1
#    skips it on another cluster)
passed=2 skipped=0
agent_ref=ghcr.io/kube-eagle/eagle-agent:$VERSION
if [ "${SMOKE_SKIP_AGENT:-0}" = 1 ] \
   || { [ "$KC" = "$EAGLE_LAB/admin.kubeconfig" ] && ! grep -qxF "$agent_ref" <<<"$(ctr_node "$(lab_nodes | head -n1)" images ls -q 2>/dev/null)"; }; then
  log "skipped: $agent_ref is not loaded in the cluster"; skipped=1
else
  kubectl delete job agent-image-probe -n kube-eagle --ignore-not-found --wait=true >/dev/null
  sed "s/@VERSION@/$VERSION/g" "$T/job-agent-image.yaml" | kubectl apply -f - >/dev/null
  wait_started kube-eagle job-name=agent-image-probe >/dev/null
  out=$(kubectl logs -f job/agent-image-probe -n kube-eagle)
  grep -q '^py-spy [0-9]' <<<"$out" || die "py-spy did not run in the eagle-agent image; its log: $out"
  log "ok: $agent_ref runs ($out)"; passed=3
fi

if [ "${1:-}" != --keep ]; then
  kubectl delete namespace eagle-e2e --wait=false >/dev/null
  kubectl delete job hostpid-probe agent-image-probe -n kube-eagle --ignore-not-found >/dev/null
fi
log "smoke test passed in $(( $(date +%s) - T0 ))s"
echo "$passed passed, 0 failed, $skipped skipped"
