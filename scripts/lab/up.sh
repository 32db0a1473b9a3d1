#!/bin/bash
# Bring up the lab Kubernetes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and
# per node (EAGLE_LAB_NODES, 1 to 5, default 3) a containerd and a kubelet of its own (node.sh),
# as separate processes, every listener on 127.0.0.1; wait until every node is Ready and pods can
# be admitted.
#
#   scripts/lab/up.sh        (after scripts/lab/install.sh)
#   EAGLE_LAB_NODES=1 scripts/lab/up.sh      one node, for quick runs
#
# Idempotent: a component already running (PID file + live process of that binary) is left
# alone, so a second up.sh on a healthy cluster only re-checks it. The number of nodes is fixed
# when the lab's state is made: to change it, scripts/lab/e2e-down.sh first. State: $EAGLE_LAB.
# Everything this changes outside $EAGLE_LAB is recorded in $EAGLE_LAB/run/ first, so that
# down.sh can restore the host exactly.
# Last line on success: KUBECONFIG=<path>.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
T0=$(date +%s)

C=$EAGLE_LAB; P=$C/pki; R=$LAB_RUN
for b in "${K8S_BINARIES[@]}"; do [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run scripts/lab/install.sh first"; done
for b in etcd containerd ctr runc unshare nsenter; do command -v "$b" >/dev/null || die "$b not installed: run scripts/lab/install.sh first"; done
check_node_count
use_lab_kubectl
mkdir -p "$LAB_LOGS" "$R" "$C/etcd-data"
chmod 700 "$C/etcd-data" "$C"
# the nodes are fixed with the state: a lab made with another count must be removed first
if [ -f "$LAB_NODE_LIST" ]; then
  [ "$(lab_node_names "$LAB_NODES")" = "$(cat "$LAB_NODE_LIST")" ] \
    || die "this lab has $(wc -l < "$LAB_NODE_LIST") node(s) and EAGLE_LAB_NODES=$LAB_NODES: run scripts/lab/e2e-down.sh first to change the number of nodes"
else
  lab_node_names "$LAB_NODES" > "$LAB_NODE_LIST"
fi

"$LAB_DIR/pki.sh"
"$LAB_DIR/mkconf.sh"

# --- record the host state we are about to change (first up only; down.sh restores and deletes)
# The kubelet rewrites these sysctls at start (protectKernelDefaults=false).
[ -f "$R/sysctl.orig" ] || sysctl -e "${LAB_SYSCTLS[@]}" > "$R/sysctl.orig"
# Paths that kubelet 1.20 / containerd 1.6 / libcni hard-code outside our state dir.
if [ ! -f "$R/host-paths.created" ]; then
  for p in "${LAB_HOST_PATHS[@]}"; do [ -e "$p" ] || echo "$p"; done > "$R/host-paths.created"
fi
# cgroup v1 hierarchies where node.sh makes the kubelets' cgroup roots (eagle-lab/NODE) and the
# kubelets their kubepods/ (cgroupfs driver)
if [ ! -f "$R/cgroups.created" ]; then
  for d in /sys/fs/cgroup/*/; do [ -e "${d}$LAB_CGROUP_PARENT" ] || echo "${d}$LAB_CGROUP_PARENT"; done > "$R/cgroups.created"
fi
# KUBE-* iptables chains that existed before (normally none; the kubelet makes none here).
if [ ! -f "$R/iptables-chains.orig" ]; then
  iptables_kube_chains > "$R/iptables-chains.orig"
fi

# 1. etcd: TLS with client certificates, loopback only
start etcd /usr/bin/etcd 2379 /usr/bin/etcd --name lab --data-dir "$C/etcd-data" \
  --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster lab=http://127.0.0.1:2380 --initial-cluster-state new \
  --listen-metrics-urls http://127.0.0.1:2381 \
  --cert-file "$P/etcd-server.crt" --key-file "$P/etcd-server.key" --client-cert-auth --trusted-ca-file "$P/ca.crt"
waitfor etcd 60 curl -sf --cacert "$P/ca.crt" --cert "$P/apiserver-etcd-client.crt" --key "$P/apiserver-etcd-client.key" https://127.0.0.1:2379/health

# 2. kube-apiserver
start kube-apiserver "$K8S_BIN/kube-apiserver" 6443 "$K8S_BIN/kube-apiserver" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 --insecure-port=0 \
  --etcd-servers=https://127.0.0.1:2379 --etcd-cafile="$P/ca.crt" \
  --etcd-certfile="$P/apiserver-etcd-client.crt" --etcd-keyfile="$P/apiserver-etcd-client.key" \
  --client-ca-file="$P/ca.crt" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
  --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-cluster-ip-range=10.96.0.0/12 \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --endpoint-reconciler-type=none \
  --feature-gates=TTLAfterFinished=true --profiling=false --v=1
waitfor kube-apiserver 120 kubectl get --raw /readyz

# 3. controller-manager and scheduler: secure ports on loopback, insecure ports off
start kube-controller-manager "$K8S_BIN/kube-controller-manager" 10257 "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$C/conf/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$C/conf/controller-manager.kubeconfig" --authorization-kubeconfig="$C/conf/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10257 --port=0 --leader-elect=false \
  --flex-volume-plugin-dir="$C/controller-manager/volume-plugins" \
  --controllers='*' --use-service-account-credentials=true \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --feature-gates=TTLAfterFinished=true --profiling=false --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" 10259 "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$C/conf/scheduler.kubeconfig" \
  --authentication-kubeconfig="$C/conf/scheduler.kubeconfig" --authorization-kubeconfig="$C/conf/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --port=0 --leader-elect=false --profiling=false --v=1

# 4. the nodes, each a containerd and a kubelet of its own (node.sh says how they are kept apart)
mapfile -t NODES < "$LAB_NODE_LIST"
"$LAB_DIR/node.sh" start "${NODES[@]}"
# pods are refused until the controller-manager has made the namespace's default service account
waitfor "service account default/default" 60 kubectl get serviceaccount default -n default
log "cluster up in $(( $(date +%s) - T0 ))s"
kubectl get nodes -o wide >&2
echo "KUBECONFIG=$C/admin.kubeconfig"
