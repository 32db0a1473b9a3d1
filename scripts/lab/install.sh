#!/bin/bash
# Install and build everything the lab cluster needs; a second run finds it all cached and
# takes seconds.
#
#   scripts/lab/install.sh
#
# Steps (each prints its time):
#   apt        Debian packages that are missing (apt-get update at most once, only when needed),
#              plus a deb-src entry for bookworm main when `apt-get source` cannot see kubernetes.
#   source     Debian's kubernetes source package, unpacked into the cache, patched
#              (patches/kubelet-allow-loopback-node-ip.patch) and completed with the generated
#              OpenAPI file the tarball lacks.
#   build      kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (GOPATH mode,
#              Debian's Go; about 8 min on 2 cores when cold).
#   kubectl    Debian's kubernetes-client .deb, extracted (not installed: /usr/bin/kubectl may
#              be another tool's dispatcher and we must not replace it).
# Cache: $EAGLE_LAB_CACHE (default /var/cache/kube-eagle/lab), keyed by the Debian version of
# the source package and by the patch's hash.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

PATCH=$LAB_DIR/patches/kubelet-allow-loopback-node-ip.patch
GOPATH_DIR=$K8S_CACHE/gopath
TREE=$GOPATH_DIR/src/k8s.io/kubernetes
# The source stamp records which patch the tree carries; the binaries are rebuilt whenever the
# stamp they were built from differs from the tree's.
SRC_KEY="$K8S_DEB_VERSION $(sha256sum "$PATCH" | cut -c1-16)"

mkdir -p "$EAGLE_LAB_CACHE" "$K8S_CACHE"

# Kubernetes 1.20 builds only in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off); module
# mode fails with "updates to go.mod needed, disabled by -mod=vendor" on Go 1.19.
go_env() {
  export GO111MODULE=off CGO_ENABLED=0 GOFLAGS="" GOPATH=$GOPATH_DIR GOCACHE=$EAGLE_LAB_CACHE/gocache
  export GOTOOLCHAIN=local   # never let a newer go fetch a toolchain (it would need the network)
}
GO=/usr/bin/go   # Debian's Go 1.19; a Go found earlier on PATH could be too new for 1.20's vendor tree

pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
# (captured, not piped into grep -q: with pipefail an early grep exit fails the pipeline)
src_visible() { local o; o=$(apt-cache showsrc kubernetes 2>/dev/null) || return 1; grep -qxF "Version: $K8S_DEB_VERSION" <<<"$o"; }
src_ready() { [ -f "$TREE/.lab-src-ready" ] && [ "$(cat "$TREE/.lab-src-ready")" = "$SRC_KEY" ]; }

step_apt() {
  local missing=() p updated=0
  for p in "${LAB_APT_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  local need_src=0
  if ! src_ready && { [ ! -d "$K8S_CACHE/debsrc" ] || ! ls "$K8S_CACHE"/debsrc/*.dsc >/dev/null 2>&1; }; then
    need_src=1
  fi
  if [ ${#missing[@]} = 0 ] && [ "$need_src" = 0 ]; then log "apt: nothing missing"; return; fi

  if [ "$need_src" = 1 ] && ! src_visible; then
    # `apt-get source` needs a deb-src entry; the stock bookworm image has only binary ones.
    if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "apt: adding a deb-src entry for bookworm main"
      cat > /etc/apt/sources.list.d/kube-eagle-lab-src.sources <<'SRC'
# Added by kube-eagle scripts/lab/install.sh: `apt-get source kubernetes` needs a deb-src entry.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    apt-get update -qq; updated=1
    src_visible || die "apt cannot see source package kubernetes=$K8S_DEB_VERSION (set EAGLE_LAB_K8S_DEB_VERSION to one that \`apt-cache showsrc kubernetes\` lists)"
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$updated" = 1 ] || { apt-get update -qq; updated=1; }
    log "apt: installing ${missing[*]}"
    # No service may start from a postinst (etcd, containerd would grab our ports and sockets):
    # policy-rc.d exit 101 says "not allowed"; add one only for the install if there is none.
    local rcd_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; rcd_added=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || { [ "$rcd_added" = 0 ] || rm -f /usr/sbin/policy-rc.d; die "apt-get install ${missing[*]} failed"; }
    [ "$rcd_added" = 0 ] || rm -f /usr/sbin/policy-rc.d
  fi
}

step_source() {
  if src_ready; then log "source: cached in $TREE"; return; fi
  # 1. download the source package once (34 MB); keep it so a re-extract needs no network
  if ! ls "$K8S_CACHE"/debsrc/*.dsc >/dev/null 2>&1; then
    rm -rf "$K8S_CACHE/debsrc.tmp"; mkdir -p "$K8S_CACHE/debsrc.tmp"
    # (as root apt warns that it downloads "unsandboxed": expected, filtered out)
    (cd "$K8S_CACHE/debsrc.tmp" && { apt-get source -qq --download-only "kubernetes=$K8S_DEB_VERSION" 2>&1 || true; } \
       | { grep -v 'unsandboxed as root' || true; } >&2)
    ls "$K8S_CACHE"/debsrc.tmp/*.dsc >/dev/null 2>&1 || die "apt-get source kubernetes=$K8S_DEB_VERSION downloaded nothing"
    mv "$K8S_CACHE/debsrc.tmp" "$K8S_CACHE/debsrc"
  fi
  # 2. unpack (applies Debian's own patches) straight into GOPATH: no symlink for go to trip on
  rm -rf "$TREE" "$TREE.tmp"; mkdir -p "$(dirname "$TREE")"
  dpkg-source --no-check -x "$(ls "$K8S_CACHE"/debsrc/*.dsc)" "$TREE.tmp" >/dev/null
  # 3. our patch: the kubelet accepts --node-ip=127.0.0.1 when KUBELET_ALLOW_LOOPBACK_NODE_IP=1
  patch -d "$TREE.tmp" -p1 --forward --quiet < "$PATCH" || die "patch $PATCH does not apply to kubernetes $K8S_DEB_VERSION"
  mv "$TREE.tmp" "$TREE"
  # 4. the tarball lacks pkg/generated/openapi/zz_generated.openapi.go that kube-apiserver needs
  gen_openapi
  echo "$SRC_KEY" > "$TREE/.lab-src-ready"
}

# Replicates the KUBE target of Makefile.generated_files (about 16 s).
gen_openapi() {
  go_env
  cd "$TREE"
  nice -n 10 "$GO" build -o "$GOPATH_DIR/bin/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
  # every dir with go files (staging named as vendor/...), without _*, .*, ./vendor, ./debian
  local dirs tagfiles inputs
  dirs=$(find -H . -not \( \( -path './_*' -o -path './.*' -o -path ./vendor -o -path ./debian \) -prune \) -type f -name '*.go' \
    | sed 's|^./staging/src|vendor|; s|/[^/]*$||; s|^./||' | LC_ALL=C sort -u)
  # shellcheck disable=SC2086  # word splitting of the dir list is intended
  tagfiles=$(for d in $dirs; do find "$d" -maxdepth 1 -type f -name '*.go'; done | xargs grep --color=never -l '^// *+k8s:' \
    | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/')
  # shellcheck disable=SC2086
  inputs=$(grep --color=never -l '+k8s:openapi-gen=' $tagfiles | xargs -n1 dirname | LC_ALL=C sort -u \
    | sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
  log "openapi: $(tr ',' '\n' <<<"$inputs" | wc -l) input packages"
  nice -n 10 "$GOPATH_DIR/bin/openapi-gen" --logtostderr=false -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$K8S_CACHE/openapi-violations.report"
  [ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "openapi-gen produced no zz_generated.openapi.go"
  cd - >/dev/null
}

step_build() {
  go_env
  local ldf="-s -w" p c s built=0
  for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_UPSTREAM -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitCommit=$K8S_GIT_COMMIT"
    ldf="$ldf -X $p.gitTreeState=clean -X $p.buildDate=2021-01-13T13:20:00Z"
  done
  mkdir -p "$K8S_BIN"
  for c in "${K8S_BINARIES[@]}"; do
    if [ -x "$K8S_BIN/$c" ] && [ "$(cat "$K8S_BIN/.$c.key" 2>/dev/null)" = "$SRC_KEY" ]; then continue; fi
    s=$(date +%s)
    # nice: the 2 cores are shared with other builds; the Go build cache makes a rebuild cheap
    (cd "$TREE" && nice -n 10 "$GO" build -ldflags "$ldf" -o "$K8S_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c") \
      || die "go build of $c failed (tree: $TREE)"
    mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
    echo "$SRC_KEY" > "$K8S_BIN/.$c.key"
    log "built $c in $(( $(date +%s) - s ))s"; built=1
  done
  [ "$built" = 1 ] || log "build: the four binaries are cached in $K8S_BIN"
}

step_kubectl() {
  if [ -x "$KUBECTL" ]; then log "kubectl: cached ($("$KUBECTL" version --client --short 2>/dev/null || true))"; return; fi
  local d=$K8S_CACHE/debs
  mkdir -p "$d"
  if ! ls "$d"/kubernetes-client_*.deb >/dev/null 2>&1; then
    # the binary package of the same source version; fall back to apt's candidate
    (cd "$d" && { apt-get download -qq "kubernetes-client=$K8S_DEB_VERSION" 2>/dev/null \
                  || { apt-get update -qq && apt-get download -qq "kubernetes-client=$K8S_DEB_VERSION"; } \
                  || apt-get download -qq kubernetes-client; }) 2>&1 | grep -v 'unsandboxed as root' >&2 || true
  fi
  ls "$d"/kubernetes-client_*.deb >/dev/null 2>&1 || die "could not download Debian's kubernetes-client .deb"
  rm -rf "$K8S_CACHE/kubectl"
  dpkg-deb -x "$(ls "$d"/kubernetes-client_*.deb | head -n1)" "$K8S_CACHE/kubectl"
  [ -x "$KUBECTL" ] || die "kubernetes-client .deb holds no usr/bin/kubectl"
}

T0=$(date +%s)
timed apt step_apt
timed source step_source
timed build step_build
timed kubectl step_kubectl
for c in "${K8S_BINARIES[@]}"; do [ -x "$K8S_BIN/$c" ] || die "missing $K8S_BIN/$c after the build"; done
log "install done in $(( $(date +%s) - T0 ))s: binaries in $K8S_BIN, kubectl $KUBECTL"
