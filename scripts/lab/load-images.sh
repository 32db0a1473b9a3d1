#!/bin/bash
# Import image tarballs into the containerd of every lab node (each node has its own, as a real
# node has), namespace k8s.io (the one the kubelet uses through CRI). Nothing can be pulled in
# the lab: pods use these images with imagePullPolicy: Never, or IfNotPresent with a tag other
# than :latest.
#
#   scripts/lab/load-images.sh [--node=NODE...] [NAME|TARBALL...]
#     --node   only into this node (repeatable; default: every node of the lab)
#     NAME     an image built by build-images.sh (pause busybox eagle-agent groundtruth python-groundtruth java-groundtruth ruby-groundtruth)
#     TARBALL  any docker-archive (RepoTags set) or OCI archive (ref name annotation)
#   No image argument: every image build-images.sh has built.
# Output: one line per image and node: "REF loaded NODE" or "REF unchanged NODE".
# An image is imported again only when its tarball changed since the last import into that
# node (a marker per image under $EAGLE_LAB/node/NODE/images-loaded). The nodes are loaded in
# parallel.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
IMG=$EAGLE_LAB_CACHE/images

NODES=() ARGS=()
for a in "$@"; do
  case $a in
    --node=*) node_index "${a#--node=}" >/dev/null; NODES+=("${a#--node=}") ;;
    -*) die "usage: load-images.sh [--node=NODE...] [NAME|TARBALL...]" ;;
    *) ARGS+=("$a") ;;
  esac
done
[ ${#NODES[@]} -gt 0 ] || mapfile -t NODES < <(lab_nodes)
for n in "${NODES[@]}"; do
  timeout 3 ctr --address "$(node_ctr_sock "$n")" version >/dev/null 2>&1 \
    || die "the containerd of lab node $n is not running ($(node_ctr_sock "$n")): run scripts/lab/up.sh"
done

if [ ${#ARGS[@]} = 0 ]; then
  for t in "$IMG"/*.tar; do [ -e "$t" ] && ARGS+=("$t"); done
  [ ${#ARGS[@]} -gt 0 ] || die "no image in $IMG: run scripts/lab/build-images.sh"
fi

# ref_of TARBALL: the reference the archive carries
ref_of() {
  local t=$1
  if [ -f "${t%.tar}.ref" ]; then cat "${t%.tar}.ref"; return; fi
  tar -xOf "$t" manifest.json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])' 2>/dev/null \
    || tar -xOf "$t" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])'
}

# load_node NODE: every image into one node's containerd
load_node() {
  local n=$1 present a t ref key m s
  mkdir -p "$(node_dir "$n")/images-loaded"
  present=$(ctr_node "$n" images ls -q)
  for a in "${ARGS[@]}"; do
    t=$a
    case $a in */*|*.tar) ;; *) t=$IMG/$a.tar ;; esac
    [ -f "$t" ] || die "no image tarball $t (run scripts/lab/build-images.sh${a:+ $a})"
    ref=$(ref_of "$t") || die "cannot read the image reference in $t"
    # build-images.sh's content key when there is one, else the tarball's hash
    key=$(cat "${t%.tar}.key" 2>/dev/null || sha256sum "$t" | cut -c1-64)
    m=$(node_dir "$n")/images-loaded/$(tr '/:' '__' <<<"$ref")
    if [ "$(cat "$m" 2>/dev/null)" = "$key" ] && grep -qxF "$ref" <<<"$present"; then
      echo "$ref unchanged $n"; continue
    fi
    s=$(date +%s)
    ctr_node "$n" images import "$t" >/dev/null || die "ctr images import $t into $n failed"
    # docker.io/library/ refs come back fully qualified; ours (lab.local/, ghcr.io/) as written
    grep -qxF "$ref" <<<"$(ctr_node "$n" images ls -q)" || die "imported $t into $n but its containerd does not list $ref"
    echo "$key" > "$m"
    log "loaded $ref into $n in $(( $(date +%s) - s ))s"
    echo "$ref loaded $n"
  done
}

pids=()
for n in "${NODES[@]}"; do load_node "$n" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ "$rc" = 0 ] || exit 1   # the failing import said why (lab: error: ...)
