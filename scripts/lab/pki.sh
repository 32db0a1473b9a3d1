#!/bin/bash
# Certificates and keys of the lab cluster, made with openssl into $EAGLE_LAB/pki.
# Idempotent: does nothing when the CA exists (down.sh --wipe removes it with the rest).
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
D=$EAGLE_LAB/pki
[ -f "$D/ca.crt" ] && [ -f "$D/sa.pub" ] && exit 0
rm -rf "$D.tmp"; mkdir -p "$D.tmp"; cd "$D.tmp"
umask 077
openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=kube-eagle-lab-ca" -out ca.crt
# mk NAME CN O SAN EXTENDED_KEY_USAGE
mk() {
  local n=$1 cn=$2 o=$3 san=$4 eku=$5 subj
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl genrsa -out "$n.key" 2048 2>/dev/null
  openssl req -new -key "$n.key" -subj "$subj" -out "$n.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"; [ -z "$san" ] || echo "subjectAltName=$san"; } > "$n.ext"
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
    -extfile "$n.ext" -out "$n.crt" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
}
# every server name is loopback: nothing in the lab listens on another address
mk apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$LAB_NODE,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
mk admin admin system:masters "" clientAuth
mk controller-manager system:kube-controller-manager "" "" clientAuth
mk scheduler system:kube-scheduler "" "" clientAuth
mk kubelet-client "system:node:$LAB_NODE" system:nodes "" clientAuth
mk kubelet-server "$LAB_NODE" "" "IP:127.0.0.1,DNS:$LAB_NODE,DNS:localhost" serverAuth
mk apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
mk etcd-server etcd "" "IP:127.0.0.1,DNS:localhost" serverAuth
mk apiserver-etcd-client kube-apiserver-etcd-client "" "" clientAuth
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
cd /; rm -rf "$D"; mv "$D.tmp" "$D"   # all or nothing: a half-made pki would never be redone
log "pki written to $D"
