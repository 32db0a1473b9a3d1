#!/bin/bash
# Ctrl-C at random moments of cluster runs, N times in a row: what issue #16 asks to be shown on
# a real cluster. Each run of `kubectl eagle profile deployment/groundtruth -d 60s` gets SIGINT
# after a random 1 to 25 s (before, while and after its agents start) and must:
#   - exit 7 with a graph labelled PARTIAL, or exit 6 saying no node delivered anything when
#     interrupted before any agent sampled;
#   - have created exactly one agent pod per node it planned (never a replacement pod);
#   - leave no Job and no pod of its run behind (checked for SETTLE_S seconds after it exits,
#     default 30; the `gone` column says when the last went). A pod's object can outlive its
#     container: on the lab, agent pods whose container had exited and whose volume was torn
#     down stayed Terminating for up to about a minute before their kubelet deleted them
#     (SETTLE_S=120 waits that out).
#
#   scripts/lab/demo-ctrl-c.sh [N]      (default 20; the lab must be up: scripts/lab/e2e-up.sh)
# Uses $KUBECONFIG when set, else the lab's. One line per run, then a summary; exit 1 if any run
# broke a rule. Needs kubectl-eagle built (target/debug, else target/release, else $EAGLE_BIN).
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N=${1:-20}
ROOT=$(cd "$LAB_DIR/../.." && pwd)
BIN=${EAGLE_BIN:-}
for b in "$ROOT/target/debug/kubectl-eagle" "$ROOT/target/release/kubectl-eagle"; do
  [ -n "$BIN" ] || { [ -x "$b" ] && BIN=$b; }
done
[ -n "$BIN" ] || die "no kubectl-eagle binary: cargo build --bins first, or set EAGLE_BIN"
export KUBECONFIG=${KUBECONFIG:-$EAGLE_LAB/admin.kubeconfig}
use_lab_kubectl
VERSION=$(workspace_version)
NS=eagle-demo-ctrl-c
WORK=$(mktemp -d /tmp/eagle-demo-ctrl-c.XXXXXX)
WATCH_PID=
cleanup() {
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS" >/dev/null
sed -e "s/@VERSION@/$VERSION/g" -e "s/namespace: eagle-e2e/namespace: $NS/" "$LAB_DIR/tests/deploy-groundtruth.yaml" \
  | kubectl apply -f - >/dev/null
kubectl rollout status -n "$NS" deploy/groundtruth --timeout=120s >/dev/null || die "groundtruth did not roll out in $NS"
"$BIN" init --kubeconfig "$KUBECONFIG" >/dev/null 2>&1 || true

# Every agent pod ever created in the locked namespace, with its run and node: a replacement pod
# would show here even if it lived a second.
kubectl get pods -n kube-eagle -l app.kubernetes.io/managed-by=kube-eagle -w --no-headers \
  -o 'custom-columns=NAME:.metadata.name,RUN:.metadata.labels.kube-eagle\.io/run,NODE:.spec.nodeName' \
  >"$WORK/pods" 2>/dev/null &
WATCH_PID=$!
sleep 1

bad=0
declare -A codes=()
printf '%-4s %-6s %-5s %-10s %-7s %-6s %-5s %s\n' run after exit graph pods jobs gone verdict
for ((i = 1; i <= N; i++)); do
  after=$(( (RANDOM % 25) + 1 ))
  out=$WORK/run$i.svg err=$WORK/run$i.err
  "$BIN" profile deployment/groundtruth -n "$NS" -d 60s -f 199 -o "$out" --kubeconfig "$KUBECONFIG" 2>"$err" &
  cli=$!
  sleep "$after"
  kill -INT "$cli" 2>/dev/null || true
  set +e; wait "$cli"; code=$?; set -e
  codes[$code]=$(( ${codes[$code]:-0} + 1 ))
  run=$(sed -n 's/.*run \([0-9a-z]\{6,\}\).*/\1/p' "$err" | head -n1)
  graph=none
  [ -s "$out" ] && { grep -q PARTIAL "$out" && graph=PARTIAL || graph=whole; }
  # Nothing of the run may be left SETTLE_S seconds after the CLI exited.
  left=?
  for ((t = 0; t < ${SETTLE_S:-30}; t++)); do
    left=$(kubectl get jobs,pods -n kube-eagle -l "kube-eagle.io/run=$run" --no-headers 2>/dev/null | wc -l)
    [ "$left" = 0 ] && break
    sleep 1
  done
  pods=$(awk -v r="$run" '$2 == r {print $1}' "$WORK/pods" | sort -u | wc -l)
  nodes=$(awk -v r="$run" '$2 == r && $3 != "<none>" {print $3}' "$WORK/pods" | sort -u | wc -l)
  verdict=ok
  if [ -z "$run" ]; then verdict="no run id in stderr: $(tail -n1 "$err")"
  elif [ "$code" = 7 ] && [ "$graph" != PARTIAL ]; then verdict="exit 7 without a PARTIAL graph"
  elif [ "$code" = 6 ] && ! grep -q "no node delivered" "$err"; then verdict="exit 6 without saying why: $(tail -n1 "$err")"
  elif [ "$code" != 7 ] && [ "$code" != 6 ]; then verdict="exit $code: $(tail -n1 "$err")"
  elif [ "$pods" != "$nodes" ]; then verdict="$pods pods on $nodes nodes: a replacement pod"
  elif [ "$left" != 0 ]; then verdict="$left Jobs/pods left after ${SETTLE_S:-30} s"
  fi
  gone="${t}s"; [ "$left" = 0 ] || gone=-
  [ "$verdict" = ok ] || bad=$((bad + 1))
  printf '%-4s %-6s %-5s %-10s %-7s %-6s %-5s %s\n' "$i" "${after}s" "$code" "$graph" "$pods/$nodes" "$left" "$gone" "$verdict"
done
summary=""
for c in "${!codes[@]}"; do summary+=" exit $c: ${codes[$c]};"; done
echo "$N runs interrupted;$summary $bad broke a rule (outputs in $WORK)"
[ "$bad" = 0 ]
