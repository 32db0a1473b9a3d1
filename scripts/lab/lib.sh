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

# The one node of the lab and the containerd namespace the CRI plugin uses.
LAB_NODE=lab-node
CTR_NS=k8s.io
CTR_SOCK=$EAGLE_LAB/run/containerd.sock

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

ctr_lab() { ctr --address "$CTR_SOCK" -n "$CTR_NS" "$@"; }

# Sysctls the kubelet sets at start (setupKernelTunables); up.sh saves them, down.sh restores.
LAB_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Host paths outside $EAGLE_LAB that kubelet 1.20, containerd 1.6 or libcni create whatever
# their flags say (/var/log/pods and /var/log/containers are hard-coded in the kubelet; libcni
# keeps its cache in /var/lib/cni; the containerd shims put their sockets in /run/containerd).
# up.sh records which did not exist; down.sh removes exactly those.
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
