#!/bin/bash
# Bring up the single-node lab Kubernetes (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet as separate processes, every listener on 127.0.0.1) and wait
# until node lab-node is Ready and pods can be admitted.
#
#   scripts/lab/up.sh        (after scripts/lab/install.sh)
#
# Idempotent: a component already running (PID file + live process of that binary) is left
# alone, so a second up.sh on a healthy cluster only re-checks it. State: $EAGLE_LAB.
# Everything this changes outside $EAGLE_LAB is recorded in $EAGLE_LAB/run/ first, so that
# down.sh can restore the host exactly.
# Last line on success: KUBECONFIG=<path>.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
T0=$(date +%s)

C=$EAGLE_LAB; P=$C/pki; L=$C/logs; R=$C/run
for b in "${K8S_BINARIES[@]}"; do [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run scripts/lab/install.sh first"; done
for b in etcd containerd ctr runc; do command -v "$b" >/dev/null || die "$b not installed: run scripts/lab/install.sh first"; done
use_lab_kubectl
mkdir -p "$L" "$R" "$C/etcd-data" "$C/containerd" "$C/kubelet" "$C/cni/ipam"
chmod 700 "$C/etcd-data" "$C"

"$LAB_DIR/pki.sh"
"$LAB_DIR/mkconf.sh"

# --- record the host state we are about to change (first up only; down.sh restores and deletes)
# The kubelet rewrites these sysctls at start (protectKernelDefaults=false).
[ -f "$R/sysctl.orig" ] || sysctl -e "${LAB_SYSCTLS[@]}" > "$R/sysctl.orig"
# Paths that kubelet 1.20 / containerd 1.6 / libcni hard-code outside our state dir.
if [ ! -f "$R/host-paths.created" ]; then
  for p in "${LAB_HOST_PATHS[@]}"; do [ -e "$p" ] || echo "$p"; done > "$R/host-paths.created"
fi
# cgroup v1 hierarchies where the kubelet will create kubepods/ (cgroupfs driver)
if [ ! -f "$R/cgroups.created" ]; then
  for d in /sys/fs/cgroup/*/; do [ -e "${d}kubepods" ] || echo "${d}kubepods"; done > "$R/cgroups.created"
fi
# KUBE-* iptables chains that existed before (normally none; the kubelet makes none here).
if [ ! -f "$R/iptables-chains.orig" ]; then
  iptables_kube_chains > "$R/iptables-chains.orig"
fi

running() { # NAME: PID file names a live process running that component's binary
  local pid
  [ -f "$R/$1.pid" ] || return 1
  pid=$(cat "$R/$1.pid")
  kill -0 "$pid" 2>/dev/null && grep -qF -- "$2" <<<"$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"
}
port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
start() { # NAME MATCH PORT CMD...: start CMD in its own session, logging to logs/NAME.log
  local n=$1 match=$2 port=$3; shift 3
  if running "$n" "$match"; then log "$n already running (pid $(cat "$R/$n.pid"))"; return; fi
  [ "$port" = - ] || port_free "$port" \
    || die "port 127.0.0.1:$port is taken by another process (not this lab's $n): stop it or run scripts/lab/down.sh"
  echo "=== $(date -Is) starting $n: $*" >> "$L/$n.log"
  # setsid: own process group, so down.sh can stop exactly what it started
  setsid "$@" >> "$L/$n.log" 2>&1 < /dev/null &
  echo $! > "$R/$n.pid"
  log "started $n (pid $!)"
}
waitfor() { # DESC TIMEOUT CMD...
  local d=$1 t=$2 i; shift 2
  for ((i = 0; i < t; i++)); do
    if "$@" >/dev/null 2>&1; then log "$d: ok after ${i}s"; return 0; fi
    sleep 1
  done
  die "timed out after ${t}s waiting for $d (logs: $L)"
}

# 1. etcd: TLS with client certificates, loopback only
start etcd /usr/bin/etcd 2379 /usr/bin/etcd --name lab --data-dir "$C/etcd-data" \
  --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster lab=http://127.0.0.1:2380 --initial-cluster-state new \
  --listen-metrics-urls http://127.0.0.1:2381 \
  --cert-file "$P/etcd-server.crt" --key-file "$P/etcd-server.key" --client-cert-auth --trusted-ca-file "$P/ca.crt"
waitfor etcd 60 curl -sf --cacert "$P/ca.crt" --cert "$P/apiserver-etcd-client.crt" --key "$P/apiserver-etcd-client.key" https://127.0.0.1:2379/health

# 2. containerd with its CRI plugin: private root, state and socket under $C
start containerd "$C/conf/containerd.toml" - /usr/bin/containerd --config "$C/conf/containerd.toml"
waitfor containerd 60 timeout 3 ctr --address "$CTR_SOCK" version
# the sandbox (pause) image must be there before the first pod; nothing can be pulled
"$LAB_DIR/load-images.sh" pause >/dev/null

# 3. kube-apiserver
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

# 4. controller-manager and scheduler: secure ports on loopback, insecure ports off
start kube-controller-manager "$K8S_BIN/kube-controller-manager" 10257 "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$C/conf/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$C/conf/controller-manager.kubeconfig" --authorization-kubeconfig="$C/conf/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10257 --port=0 --leader-elect=false \
  --flex-volume-plugin-dir="$C/kubelet/volume-plugins" \
  --controllers='*' --use-service-account-credentials=true \
  --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --feature-gates=TTLAfterFinished=true --profiling=false --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" 10259 "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$C/conf/scheduler.kubeconfig" \
  --authentication-kubeconfig="$C/conf/scheduler.kubeconfig" --authorization-kubeconfig="$C/conf/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --port=0 --leader-elect=false --profiling=false --v=1

# 5. kubelet, patched to accept a loopback node IP (patches/): the apiserver reaches it at
#    127.0.0.1:10250 and the node advertises no external address.
#    AWS_EC2_METADATA_DISABLED=true, always: else the in-tree ECR credential provider probes
#    169.254.169.254 at start, traffic that must never leave this machine.
#    --cert-dir and --volume-plugin-dir (and the controller-manager's --flex-volume-plugin-dir)
#    keep files out of /var/lib/kubelet and /usr/libexec/kubernetes; the kubelet still makes
#    /var/lib/kubelet/device-plugins, /var/log/pods and /var/log/containers whatever its flags
#    say, and down.sh removes them. LAB_STRACE=1 runs it under strace (network syscalls to
#    logs/kubelet.strace) to audit that claim.
TRACE=()
if [ "${LAB_STRACE:-0}" = 1 ]; then
  # shellcheck disable=SC2054  # the commas belong to strace's -e argument
  TRACE=(strace -f -qq -e trace=connect,sendto,sendmsg -o "$L/kubelet.strace")
fi
start kubelet "$K8S_BIN/kubelet" 10250 "${TRACE[@]}" env KUBELET_ALLOW_LOOPBACK_NODE_IP=1 AWS_EC2_METADATA_DISABLED=true \
  "$K8S_BIN/kubelet" \
  --config="$C/conf/kubelet-config.yaml" --kubeconfig="$C/conf/kubelet.kubeconfig" \
  --hostname-override="$LAB_NODE" --node-ip=127.0.0.1 \
  --container-runtime=remote --container-runtime-endpoint="unix://$CTR_SOCK" \
  --image-service-endpoint="unix://$CTR_SOCK" --runtime-request-timeout=5m \
  --root-dir="$C/kubelet" --cert-dir="$C/kubelet/pki" --volume-plugin-dir="$C/kubelet/volume-plugins" --v=1

# Ready, as reported by THIS kubelet: with the etcd data of an earlier run kept (down.sh without
# --wipe) the node object still says Ready from before, until its heartbeat times out.
KUBELET_SINCE=$(stat -c %Y "$R/kubelet.pid")
node_ready() {
  local st hb
  st=$(kubectl get node "$LAB_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  hb=$(date -d "${st#* }" +%s) || return 1
  [ "${st%% *}" = True ] && [ "$hb" -ge "$KUBELET_SINCE" ] && curl -sf http://127.0.0.1:10248/healthz >/dev/null
}
waitfor "node $LAB_NODE Ready" 120 node_ready
# pods are refused until the controller-manager has made the namespace's default service account
waitfor "service account default/default" 60 kubectl get serviceaccount default -n default
log "cluster up in $(( $(date +%s) - T0 ))s"
kubectl get nodes -o wide >&2
echo "KUBECONFIG=$C/admin.kubeconfig"
