#!/bin/bash
# Kubeconfigs and component configs of the lab cluster, into $EAGLE_LAB (conf/, cni/net.d/,
# admin.kubeconfig). Rewritten on every up.sh: cheap, and a changed script always takes effect.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
C=$EAGLE_LAB
P=$C/pki
mkdir -p "$C/conf" "$C/cni/net.d"

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
mkkc "$C/conf/kubelet.kubeconfig" "system:node:$LAB_NODE" kubelet-client

# makeIPTablesUtilChains: false: the KUBE-MARK-* chains serve kube-proxy, which the lab does not
# run; without this the kubelet would write iptables rules that outlive the cluster.
cat > "$C/conf/kubelet-config.yaml" <<EOC
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $P/ca.crt
authorization:
  mode: Webhook
tlsCertFile: $P/kubelet-server.crt
tlsPrivateKeyFile: $P/kubelet-server.key
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "2%"
  imagefs.available: "2%"
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
featureGates:
  TTLAfterFinished: true
EOC

cat > "$C/conf/containerd.toml" <<EOC
version = 2
root = "$C/containerd/root"
state = "$C/containerd/state"
[grpc]
  address = "$C/run/containerd.sock"
[ttrpc]
  address = "$C/run/containerd.sock.ttrpc"
[debug]
  address = "$C/run/containerd-debug.sock"
  level = "info"
[metrics]
  address = ""
# the "opt" plugin would create /opt/containerd on the host
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/containerd/opt"
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
        Root = "$C/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/cni/net.d"
EOC

# CNI for pods without hostNetwork: a private bridge on a subnet that exists only on this
# machine; no gateway, no masquerade, so pod traffic cannot leave the host.
cat > "$C/cni/net.d/10-labnet.conflist" <<EOC
{
  "cniVersion": "0.4.0",
  "name": "labnet",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "labcni0",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.244.77.0/24"}]],
        "dataDir": "$C/cni/ipam"
      }
    }
  ]
}
EOC
