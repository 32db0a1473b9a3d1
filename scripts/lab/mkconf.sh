#!/bin/bash
# Kubeconfigs and component configs of the lab cluster, into $EAGLE_LAB: the control plane's
# (conf/, admin.kubeconfig) and each node's (node/NAME/conf/: kubelet, containerd, CNI).
# Rewritten on every up.sh: cheap, and a changed script always takes effect.
#
#   scripts/lab/mkconf.sh [NODE...]      (default: the lab's nodes, see lib.sh)
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
C=$EAGLE_LAB
P=$C/pki
NODES=("$@")
[ ${#NODES[@]} -gt 0 ] || mapfile -t NODES < <(lab_nodes)
mkdir -p "$C/conf"

# mkkc FILE USER CERT: a kubeconfig with embedded certs (the file stands alone if copied).
# Written by hand, not with `kubectl config`: Debian's kubectl 1.20 is built with Go 1.19 and a
# vendored reflect2 v1.0.1 whose map iterator crashes (nil pointer in mapiternext) in some YAML
# encodes; `kubectl config set-credentials` is one of them.
mkkc() {
  local f=$1 u=$2 n=$3
  cat > "$f.tmp" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(base64 -w0 < "$P/ca.crt")
users:
- name: $u
  user:
    client-certificate-data: $(base64 -w0 < "$P/$n.crt")
    client-key-data: $(base64 -w0 < "$P/$n.key")
contexts:
- name: lab
  context:
    cluster: lab
    user: $u
current-context: lab
preferences: {}
EOK
  chmod 600 "$f.tmp"; mv "$f.tmp" "$f"
}
mkkc "$C/admin.kubeconfig" admin admin
mkkc "$C/conf/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
mkkc "$C/conf/scheduler.kubeconfig" system:kube-scheduler scheduler

# node_conf NAME: the node's kubelet kubeconfig and config, containerd config and CNI network
node_conf() {
local n=$1 N i port healthz
N=$(node_dir "$n"); i=$(node_index "$n")
port=$(node_kubelet_port "$n"); healthz=$(node_healthz_port "$n")
mkdir -p "$N/conf" "$N/cni/net.d"
mkkc "$N/conf/kubelet.kubeconfig" "system:node:$n" "kubelet-client-$n"

# makeIPTablesUtilChains: false: the KUBE-MARK-* chains serve kube-proxy, which the lab does not
# run; without this the kubelet would write iptables rules that outlive the cluster.
cat > "$N/conf/kubelet-config.yaml" <<EOC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $P/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $P/kubelet-server-$n.crt
tlsPrivateKeyFile: $P/kubelet-server-$n.key
cgroupDriver: cgroupfs
cgroupRoot: $(node_cgroup_root "$n")
failSwapOn: false
makeIPTablesUtilChains: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# The lab's nodes share the host's disk with everything else on it (a CI run writes ~20 GiB
# of build output before the lab starts). Percentages of a large shared disk would taint every
# node with disk-pressure, or garbage-collect the images that were loaded because no registry
# can give them back, for space the lab does not use. Evict only when the disk is truly full,
# and never collect images.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "256Mi"
  imagefs.available: "256Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
featureGates:
  TTLAfterFinished: true
EOC

cat > "$N/conf/containerd.toml" <<EOC
version = 2
root = "$N/containerd/root"
state = "$N/containerd/state"
[grpc]
  address = "$N/run/containerd.sock"
[ttrpc]
  address = "$N/run/containerd.sock.ttrpc"
[debug]
  address = "$N/run/containerd-debug.sock"
  level = "info"
[metrics]
  address = ""
# the "opt" plugin would create /opt/containerd on the host
[plugins."io.containerd.internal.v1.opt"]
  path = "$N/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "lab.local/pause:3.4.1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_apparmor = true
  # the machine lacks CAP_SYS_RESOURCE: a negative oom_score_adj (pause asks for -998) makes runc
  # init fail with "can't get final child's PID from pipe: EOF"; clamp to containerd's own instead
  restrict_oom_score_adj = true
  # network namespaces under our state dir, not /run/netns: down.sh finds and unmounts them there
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "$N/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N/cni/net.d"
EOC

# CNI for pods without hostNetwork: a private bridge per node (labcniI), on a subnet of its own
# (10.244.76+I.0/24) that exists only on this machine; no gateway, no masquerade, so pod traffic
# cannot leave the host (nor reach another node's pods: no test needs it).
cat > "$N/cni/net.d/10-labnet.conflist" <<EOC
{
  "cniVersion": "0.4.0",
  "name": "labnet-$i",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "labcni$i",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.$((76 + i)).0/24"}]],
        "dataDir": "$N/cni/ipam"
      }
    }
  ]
}
EOC
}

for n in "${NODES[@]}"; do node_conf "$n"; done
