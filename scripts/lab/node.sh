#!/bin/bash
# The nodes of the lab: each one a kubelet and a containerd of its own, on this one machine.
#
#   scripts/lab/node.sh start [NODE...]      start what is not running of each node (default: all),
#                                            wait until each is Ready (up.sh calls this)
#   scripts/lab/node.sh stop-kubelet NODE    stop the node's kubelet only, as if it had crashed:
#                                            its containerd and containers run on, its Node goes
#                                            NotReady (the node-failure tests)
#   scripts/lab/node.sh list                 NAME KUBELET-PORT CONTAINERD-SOCKET, one node a line
#
# What keeps the nodes apart (docs/e2e-lab.md says more):
#   - its own name (--hostname-override), kubelet client certificate (system:node:NAME), ports
#     (node_kubelet_port/node_healthz_port in lib.sh), --root-dir, and --cgroup-root
#     (/eagle-lab/NAME): its pods' cgroups are its own subtree;
#   - its own containerd: socket, root, state, runc root, CNI network (bridge labcniI, subnet
#     10.244.76+I.0/24), images;
#   - its own mount namespace, shared by its kubelet and containerd (and their shims), where
#     /var/log/pods, /var/log/containers and /var/lib/kubelet are bind mounts of the node's own
#     directories: kubelet 1.20 hard-codes those paths, and each kubelet's garbage collection
#     deletes every pod log directory of a pod it does not know, i.e. every other node's.
# Requires the control plane (up.sh starts it first). Idempotent.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
C=$EAGLE_LAB; P=$C/pki

usage() { die "usage: node.sh start [NODE...] | stop-kubelet NODE | list"; }
[ $# -ge 1 ] || usage
cmd=$1; shift
nodes_or_all() { if [ $# -gt 0 ]; then printf '%s\n' "$@"; else lab_nodes; fi; }

# Paths kubelet 1.20 hard-codes, bound to the node's own directories in its mount namespace.
NODE_BINDS=(/var/log/pods:log/pods /var/log/containers:log/containers /var/lib/kubelet:var-lib-kubelet)

is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# mount_namespace NAME: create the node's mount namespace unless it exists. It is kept alive by
# a bind mount of its nsfs file under $C/run/ns, which must be a private mount (a namespace file
# on a shared mount could end up mounted inside its own namespace); down.sh unmounts both.
mount_namespace() {
  local n=$1 N f b
  N=$(node_dir "$n"); f=$(node_mntns "$n")
  is_mounted "$f" && return 0
  mkdir -p "$LAB_RUN/ns"
  if ! is_mounted "$LAB_RUN/ns"; then
    mount --bind "$LAB_RUN/ns" "$LAB_RUN/ns"
    mount --make-private "$LAB_RUN/ns"
  fi
  : > "$f"
  local script=""
  for b in "${NODE_BINDS[@]}"; do
    mkdir -p "${b%%:*}" "$N/${b#*:}"   # the host side stays an empty directory
    script+="mount --bind '$N/${b#*:}' '${b%%:*}' && "
  done
  # slave: mounts made in the node's namespace (container root filesystems, volumes, network
  # namespaces) never show on the host nor in another node
  unshare --mount="$f" --propagation slave sh -c "${script}true" \
    || die "cannot make the mount namespace of $n (unshare --mount=$f)"
}

start_runtime() { # NAME: mount namespace, containerd
  local n=$1 N
  N=$(node_dir "$n")
  mkdir -p "$N/run" "$N/containerd" "$N/kubelet" "$N/cni/ipam"
  mount_namespace "$n"
  start "containerd-$n" "$N/conf/containerd.toml" - \
    nsenter --mount="$(node_mntns "$n")" -- /usr/bin/containerd --config "$N/conf/containerd.toml"
}

start_kubelet() { # NAME
  local n=$1 N port trace=()
  N=$(node_dir "$n"); port=$(node_kubelet_port "$n")
  # The cgroup root must exist in every hierarchy before the kubelet starts (it checks).
  for d in /sys/fs/cgroup/*/; do mkdir -p "$d$LAB_CGROUP_PARENT/$n"; done
  # CPU weight: a kubelet gives its kubepods the weight of its allocatable CPUs (1024 a CPU), at
  # the root of a real node. Here every node's tree sits under eagle-lab, whose default weight
  # (1024, one busy process's) would give all nodes together one CPU's worth against the rest
  # of a busy machine: weigh each node as its kubepods, and eagle-lab as all of them.
  local cpu=/sys/fs/cgroup/cpu weight
  weight=$(( 1024 * $(nproc) ))
  if [ -f "$cpu/$LAB_CGROUP_PARENT/cpu.shares" ]; then
    echo "$weight" > "$cpu/$LAB_CGROUP_PARENT/$n/cpu.shares"
    echo $(( weight * $(lab_nodes | wc -l) )) > "$cpu/$LAB_CGROUP_PARENT/cpu.shares"
  fi
  # Patched to accept a loopback node IP (patches/): the apiserver reaches it at
  # 127.0.0.1:PORT and the node advertises no external address.
  # AWS_EC2_METADATA_DISABLED=true, always: else the in-tree ECR credential provider probes
  # 169.254.169.254 at start, traffic that must never leave this machine.
  # --cert-dir and --volume-plugin-dir (and the controller-manager's --flex-volume-plugin-dir)
  # keep files out of /var/lib/kubelet and /usr/libexec/kubernetes.
  # LAB_STRACE=1 runs it under strace (network syscalls to logs/kubelet-NAME.strace).
  if [ "${LAB_STRACE:-0}" = 1 ]; then
    # shellcheck disable=SC2054  # the commas belong to strace's -e argument
    trace=(strace -f -qq -e trace=connect,sendto,sendmsg -o "$LAB_LOGS/kubelet-$n.strace")
  fi
  local labels=()
  [ "$(node_hostname_label "$n")" = "$n" ] || labels=(--node-labels="kubernetes.io/hostname=$(node_hostname_label "$n")")
  start "kubelet-$n" "$N/conf/kubelet-config.yaml" "$port" \
    nsenter --mount="$(node_mntns "$n")" -- "${trace[@]}" \
    env KUBELET_ALLOW_LOOPBACK_NODE_IP=1 AWS_EC2_METADATA_DISABLED=true \
    "$K8S_BIN/kubelet" \
    --config="$N/conf/kubelet-config.yaml" --kubeconfig="$N/conf/kubelet.kubeconfig" \
    --hostname-override="$n" --node-ip=127.0.0.1 "${labels[@]}" \
    --container-runtime=remote --container-runtime-endpoint="unix://$(node_ctr_sock "$n")" \
    --image-service-endpoint="unix://$(node_ctr_sock "$n")" --runtime-request-timeout=5m \
    --root-dir="$N/kubelet" --cert-dir="$N/kubelet/pki" --volume-plugin-dir="$N/kubelet/volume-plugins" --v=1
}

# node_ready NAME SINCE: Ready as reported by the kubelet started at SINCE. With the etcd data of
# an earlier run kept (down.sh without --wipe), or after stop-kubelet, the Node object still says
# Ready from before until its heartbeat times out.
node_ready() {
  local st hb
  st=$(kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  hb=$(date -d "${st#* }" +%s) || return 1
  [ "${st%% *}" = True ] && [ "$hb" -ge "$2" ] && curl -sf "http://127.0.0.1:$(node_healthz_port "$1")/healthz" >/dev/null
}

case $cmd in
  start)
    mapfile -t NODES < <(nodes_or_all "$@")
    for b in kubelet; do [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run scripts/lab/install.sh first"; done
    use_lab_kubectl
    mkdir -p "$LAB_LOGS" "$LAB_RUN"
    "$LAB_DIR/pki.sh" "${NODES[@]}"
    "$LAB_DIR/mkconf.sh" "${NODES[@]}"
    for n in "${NODES[@]}"; do start_runtime "$n"; done
    for n in "${NODES[@]}"; do
      waitfor "containerd of $n" 60 timeout 3 ctr --address "$(node_ctr_sock "$n")" version
    done
    # the sandbox (pause) image must be there before the first pod; nothing can be pulled
    "$LAB_DIR/load-images.sh" "${NODES[@]/#/--node=}" pause >/dev/null
    for n in "${NODES[@]}"; do start_kubelet "$n"; done
    for n in "${NODES[@]}"; do
      waitfor "node $n Ready" 120 node_ready "$n" "$(stat -c %Y "$LAB_RUN/kubelet-$n.pid")"
    done
    ;;
  stop-kubelet)
    [ $# = 1 ] || usage
    n=$1; node_index "$n" >/dev/null
    f=$LAB_RUN/kubelet-$n.pid
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null || die "the kubelet of $n is not running"
    pid=$(cat "$f")
    # its process group: strace too, when LAB_STRACE=1 started it
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; }
    rm -f "$f"
    log "stopped the kubelet of $n (pid $pid); its containers run on; node.sh start $n brings it back"
    ;;
  list)
    while read -r n; do echo "$n $(node_kubelet_port "$n") $(node_ctr_sock "$n")"; done < <(lab_nodes)
    ;;
  *) usage ;;
esac
