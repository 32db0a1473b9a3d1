# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are used by the scripts that source this file
# Shared settings and helpers for the lab scripts. Sourced, never run.
#
# Two folders, both outside the checkout so that `git clean`, a fresh clone or a second
# worktree never throws away (or duplicates) ten minutes of Go build:
#   EAGLE_LAB_CACHE (default /var/cache/kube-eagle/lab): what is built once and reused:
#       the patched Kubernetes source and its four binaries (keyed by the Debian version),
#       the Go build cache, Debian's kubectl, py-spy's wheel, the image tarballs.
#   EAGLE_LAB (default /var/lib/kube-eagle/lab): the running cluster's state: pki, configs,
#       etcd data, containerd root, kubelet root, logs, pid files. down.sh --wipe empties it.

EAGLE_LAB_CACHE=${EAGLE_LAB_CACHE:-/var/cache/kube-eagle/lab}
EAGLE_LAB=${EAGLE_LAB:-/var/lib/kube-eagle/lab}
export EAGLE_LAB_CACHE EAGLE_LAB

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_DIR/../.." && pwd)

# Debian's source package of Kubernetes (bookworm ships 1.20.2 under this version). Pinned so
# that the cache key does not move under us when the mirror changes; override to try another.
K8S_DEB_VERSION=${EAGLE_LAB_K8S_DEB_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}
K8S_UPSTREAM=v${K8S_DEB_VERSION##*really}; K8S_UPSTREAM=${K8S_UPSTREAM%-*}   # v1.20.2
K8S_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56                    # upstream v1.20.2
K8S_CACHE=$EAGLE_LAB_CACHE/kubernetes-$K8S_DEB_VERSION    # src/, bin/, kubectl/
K8S_BIN=$K8S_CACHE/bin
KUBECTL=$K8S_CACHE/kubectl/usr/bin/kubectl
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

# The nodes: EAGLE_LAB_NODES of them (1 to 5, default 3), named lab-node-1..N, each with its own
# kubelet and containerd (see node.sh). up.sh records the names in $EAGLE_LAB/nodes.list: the
# scripts that act on a running lab read that list, not the setting, so that down.sh stops every
# node whatever EAGLE_LAB_NODES says now.
LAB_NODES=${EAGLE_LAB_NODES:-3}
LAB_NODE_LIST=$EAGLE_LAB/nodes.list
# The containerd namespace the CRI plugin uses.
CTR_NS=k8s.io

# Apt packages the lab needs (see docs/e2e-lab.md for what each is for).
LAB_APT_PACKAGES=(golang-go etcd-server containerd runc containernetworking-plugins umoci skopeo
  busybox-static iptables conntrack socat openssl curl dpkg-dev python3 unzip)

log() { printf '[lab] %s\n' "$*" >&2; }

# Error reporting: every failure ends with exactly one "lab: error: ..." line. The outermost
# lab script makes a small file that nested scripts share; a failing script whose child (or
# itself, through die) already said what went wrong adds nothing, else it names itself.
if [ -z "${LAB_ERRLOG:-}" ]; then
  LAB_ERRLOG=$(mktemp /tmp/eagle-lab-err.XXXXXX); LAB_ERRLOG_OWNER=$$
  export LAB_ERRLOG
fi
# die: one clear line on stderr, non-zero exit.
die() { printf 'lab: error: %s\n' "$*" | tee -a "$LAB_ERRLOG" >&2; exit 1; }
lab_exit_report() {
  local rc=$1
  if [ "$rc" != 0 ] && [ ! -s "$LAB_ERRLOG" ]; then
    printf 'lab: error: %s failed (exit %s)%s\n' "$(basename "$0")" "$rc" \
      "${LAB_STEP:+ in step $LAB_STEP; see the output above}" | tee -a "$LAB_ERRLOG" >&2
  fi
  [ "${LAB_ERRLOG_OWNER:-}" != $$ ] || rm -f "$LAB_ERRLOG"
}
trap 'lab_exit_report $?' EXIT

# timed NAME CMD...: run CMD, print how long it took (date +%s deltas, as the docs quote them).
# Not "CMD || ...": bash would switch errexit off inside CMD if it is a function.
timed() {
  local name=$1 s; shift
  s=$(date +%s)
  LAB_STEP=$name
  "$@"
  LAB_STEP=
  log "step $name: $(( $(date +%s) - s ))s"
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (starts kubelet, containerd, mounts, sysctls)"; }

# Workspace version, from [workspace.package] in Cargo.toml: tags the images we build.
workspace_version() {
  awk '/^\[workspace\.package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' \
    "$REPO_ROOT/Cargo.toml"
}

# The lab's kubectl (Debian's 1.20 client, extracted by install.sh) in front of PATH:
# /usr/bin/kubectl here may be a google-cloud-sdk dispatcher of another version.
use_lab_kubectl() {
  [ -x "$KUBECTL" ] || die "kubectl missing at $KUBECTL: run scripts/lab/install.sh"
  PATH=$(dirname "$KUBECTL"):$PATH
  export PATH
  export KUBECONFIG=$EAGLE_LAB/admin.kubeconfig
}

# --- starting components (up.sh, node.sh)
LAB_RUN=$EAGLE_LAB/run     # PID files, sockets, records of host state
LAB_LOGS=$EAGLE_LAB/logs   # one log per component, appended across runs
# running NAME MATCH: its PID file names a live process whose command line holds MATCH
running() {
  local pid
  [ -f "$LAB_RUN/$1.pid" ] || return 1
  pid=$(cat "$LAB_RUN/$1.pid")
  kill -0 "$pid" 2>/dev/null && grep -qF -- "$2" <<<"$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"
}
port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
# start NAME MATCH PORT CMD...: start CMD in its own session, logging to logs/NAME.log, unless it
# runs already; PORT (or -) must be free
start() {
  local n=$1 match=$2 port=$3; shift 3
  if running "$n" "$match"; then log "$n already running (pid $(cat "$LAB_RUN/$n.pid"))"; return; fi
  [ "$port" = - ] || port_free "$port" \
    || die "port 127.0.0.1:$port is taken by another process (not this lab's $n): stop it or run scripts/lab/down.sh"
  echo "=== $(date -Is) starting $n: $*" >> "$LAB_LOGS/$n.log"
  # setsid: own process group, so down.sh can stop exactly what it started
  setsid "$@" >> "$LAB_LOGS/$n.log" 2>&1 < /dev/null &
  echo $! > "$LAB_RUN/$n.pid"
  log "started $n (pid $!)"
}
# waitfor DESC TIMEOUT CMD...: until CMD succeeds, at most TIMEOUT seconds
waitfor() {
  local d=$1 t=$2 i; shift 2
  for ((i = 0; i < t; i++)); do
    if "$@" >/dev/null 2>&1; then log "$d: ok after ${i}s"; return 0; fi
    sleep 1
  done
  die "timed out after ${t}s waiting for $d (logs: $LAB_LOGS)"
}

# --- nodes
# lab_node_names N: the names of an N-node lab
lab_node_names() { local i; for ((i = 1; i <= $1; i++)); do echo "lab-node-$i"; done; }
# lab_nodes: the nodes of this lab: those up.sh recorded, else those EAGLE_LAB_NODES asks for
lab_nodes() {
  if [ -f "$LAB_NODE_LIST" ]; then cat "$LAB_NODE_LIST"; else lab_node_names "$LAB_NODES"; fi
}
check_node_count() {
  [[ $LAB_NODES =~ ^[1-5]$ ]] || die "EAGLE_LAB_NODES=$LAB_NODES: the lab runs 1 to 5 nodes"
}
# node_index NAME: i of lab-node-i (1..5)
node_index() {
  [[ $1 =~ ^lab-node-([1-5])$ ]] || die "no such lab node: $1 (the nodes are: $(lab_nodes | tr '\n' ' '))"
  echo "${BASH_REMATCH[1]}"
}
# Everything of one node lives under node_dir: its containerd's root, state and socket, its
# kubelet's root dir, its pod logs, its CNI leases, its configs.
node_dir() { echo "$EAGLE_LAB/node/$1"; }
# The kubelet's ports: 10250/10248 for lab-node-1, 10350/10348 for lab-node-2, ...
node_kubelet_port() { echo $(( 10150 + 100 * $(node_index "$1") )); }
node_healthz_port() { echo $(( 10148 + 100 * $(node_index "$1") )); }
node_ctr_sock() { echo "$(node_dir "$1")/run/containerd.sock"; }
# The node's mount namespace (see node.sh): a bind mount of its nsfs file, under a private mount.
node_mntns() { echo "$EAGLE_LAB/run/ns/$1"; }
# The kubelet's --cgroup-root: every node's pods under a cgroup subtree of their own.
LAB_CGROUP_PARENT=eagle-lab
node_cgroup_root() { echo "/$LAB_CGROUP_PARENT/$1"; }
# The kubernetes.io/hostname label of a node: its name, except on the last node of a lab of 2 or
# more, whose label differs from its name (as on clouds where the node is named after its
# instance or DNS name): the plugin must place its Jobs by node name, not by this label.
node_hostname_label() {
  local n
  n=$(lab_nodes | wc -l)
  if [ "$n" -ge 2 ] && [ "$(node_index "$1")" = "$n" ]; then echo "lab-host-$(node_index "$1")"; else echo "$1"; fi
}
# ctr_node NAME ARGS...: ctr against one node's containerd, in the CRI's namespace
ctr_node() { local n=$1; shift; ctr --address "$(node_ctr_sock "$n")" -n "$CTR_NS" "$@"; }

# Sysctls the kubelet sets at start (setupKernelTunables); up.sh saves them, down.sh restores.
LAB_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Host paths outside $EAGLE_LAB that kubelet 1.20, containerd 1.6 or libcni create whatever
# their flags say (/var/log/pods and /var/log/containers are hard-coded in the kubelet; libcni
# keeps its cache in /var/lib/cni; the containerd shims put their sockets in /run/containerd).
# up.sh records which did not exist; down.sh removes exactly those.
# (Inside each node's mount namespace, /var/log/pods, /var/log/containers and /var/lib/kubelet
# are bind mounts of the node's own directories: on the host they stay empty mount points.)
LAB_HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd
  /var/lib/containerd /opt/containerd /run/netns /etc/cni /opt/cni /usr/libexec/kubernetes /var/lib/dockershim)

# "FAMILY TABLE CHAIN" for every KUBE-* iptables chain (IPv4 and IPv6).
iptables_kube_chains() {
  local fam t
  for fam in iptables ip6tables; do
    command -v "$fam-save" >/dev/null || continue
    for t in filter nat mangle; do
      "$fam-save" -t "$t" 2>/dev/null | sed -n "s/^:\(KUBE-[^ ]*\) .*/$fam $t \1/p"
    done
  done
}
