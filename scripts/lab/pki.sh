#!/bin/bash
# Certificates and keys of the lab cluster, made with openssl into $EAGLE_LAB/pki: the CA and
# the control plane's once, then a kubelet client and serving pair for each node that has none.
# Idempotent: does nothing when they all exist (down.sh --wipe removes them with the rest).
#
#   scripts/lab/pki.sh [NODE...]      (default: the lab's nodes, see lib.sh)
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
D=$EAGLE_LAB/pki
NODES=("$@")
[ ${#NODES[@]} -gt 0 ] || mapfile -t NODES < <(lab_nodes)
umask 077

# mk NAME CN O SAN EXTENDED_KEY_USAGE: NAME.key and NAME.crt in the current directory, signed by
# the CA in $CA_DIR
mk() {
  local n=$1 cn=$2 o=$3 san=$4 eku=$5 subj
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl genrsa -out "$n.key" 2048 2>/dev/null
  openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"; [ -z "$san" ] || echo "subjectAltName=$san"; } > "$n.ext"
  openssl x509 -req -in "$n.csr" -CA "$CA_DIR/ca.crt" -CAkey "$CA_DIR/ca.key" -CAcreateserial \
    -CAserial "$PWD/ca.srl" -days 3650 -sha256 -extfile "$n.ext" -out "$n.crt" 2>/dev/null
  rm -f "$n.csr" "$n.ext" ca.srl
}

if [ ! -f "$D/ca.crt" ] || [ ! -f "$D/sa.pub" ]; then
  rm -rf "$D.tmp"; mkdir -p "$D.tmp"; cd "$D.tmp"
  CA_DIR=$PWD
  openssl genrsa -out ca.key 2048 2>/dev/null
  openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=kube-eagle-lab-ca" -out ca.crt
  # every server name is loopback: nothing in the lab listens on another address
  mk apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
  mk admin admin system:masters "" clientAuth
  mk controller-manager system:kube-controller-manager "" "" clientAuth
  mk scheduler system:kube-scheduler "" "" clientAuth
  mk apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
  mk etcd-server etcd "" "IP:127.0.0.1,DNS:localhost" serverAuth
  mk apiserver-etcd-client kube-apiserver-etcd-client "" "" clientAuth
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd /; rm -rf "$D"; mv "$D.tmp" "$D"   # all or nothing: a half-made pki would never be redone
  log "pki written to $D"
fi

# Per node: the kubelet's client certificate names it (system:node:NAME, group system:nodes), as
# the Node authorizer and NodeRestriction require: a kubelet may only write its own Node and the
# status of the pods bound to it. Its serving certificate is for 127.0.0.1, where the apiserver
# reaches every kubelet (on the node's own port).
CA_DIR=$D
for n in "${NODES[@]}"; do
  [ -f "$D/kubelet-server-$n.crt" ] && [ -f "$D/kubelet-client-$n.crt" ] && continue
  rm -rf "$D/.tmp-$n"; mkdir -p "$D/.tmp-$n"; cd "$D/.tmp-$n"
  mk "kubelet-client-$n" "system:node:$n" system:nodes "" clientAuth
  mk "kubelet-server-$n" "$n" "" "IP:127.0.0.1,DNS:$n,DNS:localhost" serverAuth
  mv -- *.key *.crt "$D/"; cd /; rmdir "$D/.tmp-$n"
  log "pki: certificates of $n written"
done
