# shellcheck shell=bash
# Source me to use the lab cluster from a shell:  . scripts/lab/env.sh
# Sets KUBECONFIG to the lab's admin kubeconfig, puts the lab's kubectl (Debian's 1.20 client,
# matching the server) first on PATH, and EAGLE_E2E_KUBECONFIG for the end-to-end tests.
_eagle_lab_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export EAGLE_LAB_CACHE=${EAGLE_LAB_CACHE:-/var/cache/kube-eagle/lab}
export EAGLE_LAB=${EAGLE_LAB:-/var/lib/kube-eagle/lab}
export KUBECONFIG=$EAGLE_LAB/admin.kubeconfig
export EAGLE_E2E_KUBECONFIG=$KUBECONFIG
_eagle_kubectl=$(bash -c '. "$1/lib.sh" && dirname "$KUBECTL"' _ "$_eagle_lab_dir")
case ":$PATH:" in *":$_eagle_kubectl:"*) ;; *) export PATH=$_eagle_kubectl:$PATH ;; esac
[ -f "$KUBECONFIG" ] || echo "env.sh: $KUBECONFIG does not exist yet: run scripts/lab/e2e-up.sh" >&2
unset _eagle_lab_dir _eagle_kubectl
