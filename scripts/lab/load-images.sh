#!/bin/bash
# Import image tarballs into the lab's containerd, namespace k8s.io (the one the kubelet uses
# through CRI). Nothing can be pulled in the lab: pods use these images with
# imagePullPolicy: Never, or IfNotPresent with a tag other than :latest.
#
#   scripts/lab/load-images.sh [NAME|TARBALL...]
#     NAME     an image built by build-images.sh (pause busybox eagle-agent groundtruth python-groundtruth)
#     TARBALL  any docker-archive (RepoTags set) or OCI archive (ref name annotation)
#   No argument: every image build-images.sh has built.
# Output: one line per image: "REF loaded" or "REF unchanged".
# An image is imported again only when its tarball changed since the last import into this
# cluster's state (a marker per image under $EAGLE_LAB/images-loaded).
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
IMG=$EAGLE_LAB_CACHE/images
MARK=$EAGLE_LAB/images-loaded
timeout 3 ctr --address "$CTR_SOCK" version >/dev/null 2>&1 \
  || die "the lab's containerd is not running ($CTR_SOCK): run scripts/lab/up.sh"
mkdir -p "$MARK"

ARGS=("$@")
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

present=$(ctr_lab images ls -q)
for a in "${ARGS[@]}"; do
  t=$a
  case $a in */*|*.tar) ;; *) t=$IMG/$a.tar ;; esac
  [ -f "$t" ] || die "no image tarball $t (run scripts/lab/build-images.sh${a:+ $a})"
  ref=$(ref_of "$t") || die "cannot read the image reference in $t"
  # build-images.sh's content key when there is one, else the tarball's hash
  key=$(cat "${t%.tar}.key" 2>/dev/null || sha256sum "$t" | cut -c1-64)
  m=$MARK/$(tr '/:' '__' <<<"$ref")
  if [ "$(cat "$m" 2>/dev/null)" = "$key" ] && grep -qxF "$ref" <<<"$present"; then
    echo "$ref unchanged"; continue
  fi
  s=$(date +%s)
  ctr_lab images import "$t" >/dev/null || die "ctr images import $t failed"
  # docker.io/library/ refs come back fully qualified; ours (lab.local/, ghcr.io/) as written
  grep -qxF "$ref" <<<"$(ctr_lab images ls -q)" || die "imported $t but containerd does not list $ref"
  echo "$key" > "$m"
  log "loaded $ref in $(( $(date +%s) - s ))s"
  echo "$ref loaded"
done
