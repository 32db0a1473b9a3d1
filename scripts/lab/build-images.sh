#!/bin/bash
# Build the lab's container images without Docker or a registry: make a root filesystem, pack
# it as an OCI image with umoci, write it as a docker-archive tarball with skopeo (loadable by
# `ctr images import`, `docker load` and `kind load image-archive` alike).
#
#   scripts/lab/build-images.sh [NAME...]     NAME: pause busybox eagle-agent groundtruth
#                                             python-groundtruth java-groundtruth ruby-groundtruth
#                                             (default: all seven)
# Images (VERSION = version of [workspace.package] in Cargo.toml):
#   pause        lab.local/pause:3.4.1                   sandbox image, from Kubernetes' pause.c
#   busybox      lab.local/busybox:1.35                  busybox-static with its applets
#   eagle-agent  ghcr.io/kube-eagle/eagle-agent:VERSION  /eagle-agent (static, musl) +
#                                                        /usr/local/bin/py-spy, writable /tmp
#   groundtruth  lab.local/groundtruth:VERSION           /groundtruth, static, from
#                                                        images/groundtruth/groundtruth.c
#   python-groundtruth  lab.local/python-groundtruth:VERSION  Debian's python3.11, images/python
#   java-groundtruth    lab.local/java-groundtruth:VERSION    jlink of Debian's OpenJDK 17, images/java
#   ruby-groundtruth    lab.local/ruby-groundtruth:VERSION    Debian's ruby 3.1, images/ruby
# Environment:
#   EAGLE_AGENT_BIN     pack this static eagle-agent instead of building it with cargo (musl)
#   GROUNDTRUTH_SRC     C source of the groundtruth binary (default images/groundtruth/groundtruth.c)
#   EAGLE_PY_SPY_VERSION  py-spy wheel to take the static binary from (default 0.4.3)
#   EAGLE_IMAGE_VERSION   tag of the project's images (default: the workspace version)
# Output: one line "REF TARBALL" per image on stdout; tarballs live in $EAGLE_LAB_CACHE/images/.
# An image is repacked only when the hash of its root filesystem (binaries included), its
# reference or this script changed, so a second run takes a second or two.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root   # umoci unpack/repack keep root ownership only as root

OUT=$EAGLE_LAB_CACHE/images
VERSION=${EAGLE_IMAGE_VERSION:-$(workspace_version)}
[ -n "$VERSION" ] || die "no version = \"...\" under [workspace.package] in $REPO_ROOT/Cargo.toml"
PY_SPY_VERSION=${EAGLE_PY_SPY_VERSION:-0.4.3}
MUSL=x86_64-unknown-linux-musl
for t in umoci skopeo; do command -v "$t" >/dev/null || die "$t missing: run scripts/lab/install.sh"; done

NAMES=("$@"); [ ${#NAMES[@]} -gt 0 ] || NAMES=(pause busybox eagle-agent groundtruth python-groundtruth java-groundtruth ruby-groundtruth)
WORK=$(mktemp -d /tmp/eagle-lab-images.XXXXXX)
trap 'rc=$?; rm -rf "$WORK"; lab_exit_report $rc' EXIT
mkdir -p "$OUT"
SELF_HASH=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)

# (No "cmd | grep -q" anywhere in the lab scripts: with pipefail, grep's early exit can kill
# cmd with SIGPIPE and fail the pipeline; capture first, then grep.)
is_static() { local h; h=$(readelf -lW "$1" 2>/dev/null) || return 1; ! grep -q 'program interpreter' <<<"$h"; }

# mkimage NAME REF ROOTFS entrypoint|cmd ARGV...: pack ROOTFS as REF into $OUT/NAME.tar
mkimage() {
  local name=$1 ref=$2 rootfs=$3 kind=$4; shift 4
  local tag=${ref##*:} key lay=$WORK/$name-oci bundle=$WORK/$name-bundle a
  # the key: everything that ends up in the image (content, modes, links), the ref, the recipe
  key=$( { echo "$ref $kind $* $SELF_HASH"
           tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . | sha256sum; } \
         | sha256sum | cut -c1-64)
  if [ -f "$OUT/$name.tar" ] && [ "$(cat "$OUT/$name.key" 2>/dev/null)" = "$key" ]; then
    log "$name: unchanged ($ref)"; echo "$ref $OUT/$name.tar"; return
  fi
  umoci init --layout "$lay"
  umoci new --image "$lay:$tag"
  umoci unpack --image "$lay:$tag" "$bundle" >/dev/null
  cp -a "$rootfs/." "$bundle/rootfs/"
  umoci repack --image "$lay:$tag" "$bundle"
  local cfg=(--image "$lay:$tag" --os linux --architecture amd64 --config.workingdir /
             --config.env PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
             --config.label "org.opencontainers.image.source=https://github.com/kube-eagle/kube-eagle"
             --config.label "org.opencontainers.image.version=$tag")
  for a in "$@"; do cfg+=("--config.$kind" "$a"); done
  umoci config "${cfg[@]}"
  umoci gc --layout "$lay"
  rm -f "$OUT/$name.tar.tmp"
  skopeo copy --quiet "oci:$lay:$tag" "docker-archive:$OUT/$name.tar.tmp:$ref"
  mv "$OUT/$name.tar.tmp" "$OUT/$name.tar"
  echo "$ref" > "$OUT/$name.ref"
  echo "$key" > "$OUT/$name.key"
  log "$name: built $ref ($(du -h "$OUT/$name.tar" | cut -f1))"
  echo "$ref $OUT/$name.tar"
}

build_pause() { # statically compiled from the cached Kubernetes source (install.sh)
  local src=$K8S_CACHE/gopath/src/k8s.io/kubernetes/build/pause/linux/pause.c r=$WORK/pause-root
  [ -f "$src" ] || die "$src missing: run scripts/lab/install.sh"
  mkdir -p "$r"
  gcc -Os -Wall -Werror -static -DVERSION=v3.4.1-lab -o "$r/pause" "$src"
  strip "$r/pause"
  mkimage pause lab.local/pause:3.4.1 "$r" entrypoint /pause
}

build_busybox() { # Debian's busybox-static with a symlink per applet
  local r=$WORK/busybox-root a
  { [ -x /bin/busybox ] && is_static /bin/busybox; } || die "/bin/busybox missing or not static: apt-get install busybox-static"
  mkdir -p "$r"/{bin,tmp,etc,proc,sys,dev,root}
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"
  echo 'root:x:0:' > "$r/etc/group"
  mkimage busybox lab.local/busybox:1.35 "$r" cmd sh
}

# py-spy's static(-pie) binary, from its PyPI wheel; the wheel is cached (no download next time).
# Sets PYSPY_BIN (a global, not echoed: die inside $(...) would only end the subshell).
py_spy_binary() {
  local d=$EAGLE_LAB_CACHE/py-spy/$PY_SPY_VERSION whl
  if ! ls "$d"/py_spy-*.whl >/dev/null 2>&1; then
    mkdir -p "$d"
    # --platform: the x86_64 manylinux wheel whatever machine runs this (the image is amd64)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_5_x86_64 \
      --platform manylinux1_x86_64 "py-spy==$PY_SPY_VERSION" -d "$d" >&2 \
      || die "pip download py-spy==$PY_SPY_VERSION failed"
  fi
  whl=$(ls "$d"/py_spy-*.whl | head -n1)
  if [ ! -x "$d/py-spy" ]; then
    rm -rf "$d/x"; mkdir "$d/x"
    unzip -q -o "$whl" 'py_spy-*.data/scripts/py-spy' -d "$d/x" || die "no py_spy-*.data/scripts/py-spy in $whl"
    mv "$d"/x/py_spy-*.data/scripts/py-spy "$d/py-spy"; rm -rf "$d/x"
    chmod 755 "$d/py-spy"
  fi
  is_static "$d/py-spy" || die "$d/py-spy is not a static binary"
  PYSPY_BIN=$d/py-spy
}

# eagle-agent, static for FROM-scratch: EAGLE_AGENT_BIN, or one musl release build of the crate.
# Sets AGENT_BIN.
eagle_agent_binary() {
  if [ -n "${EAGLE_AGENT_BIN:-}" ]; then
    [ -x "$EAGLE_AGENT_BIN" ] || die "EAGLE_AGENT_BIN=$EAGLE_AGENT_BIN is not an executable file"
    AGENT_BIN=$EAGLE_AGENT_BIN; return
  fi
  command -v cargo >/dev/null || die "cargo not found: install Rust, or set EAGLE_AGENT_BIN to a static eagle-agent"
  if ! grep -qx "$MUSL" <<<"$(rustup target list --installed 2>/dev/null)"; then
    log "adding the rust target $MUSL"
    rustup target add "$MUSL" >&2 || die "rustup target add $MUSL failed; or set EAGLE_AGENT_BIN to a static eagle-agent"
  fi
  local tdir s
  tdir=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) \
    || tdir=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
  s=$(date +%s)
  log "cargo build --release --target $MUSL -p eagle-agent --bin eagle-agent"
  (cd "$REPO_ROOT" && cargo build --release --target "$MUSL" -p eagle-agent --bin eagle-agent >&2) \
    || die "eagle-agent does not build for $MUSL (cargo output above); fix the crate or set EAGLE_AGENT_BIN to a static eagle-agent"
  log "cargo build: $(( $(date +%s) - s ))s"
  AGENT_BIN=$tdir/$MUSL/release/eagle-agent
}

# install_with_libs BIN ROOT DEST: BIN at ROOT/DEST, and every shared library it loads at its
# own path under ROOT, so it runs in an image with no distribution in it.
install_with_libs() {
  local bin=$1 root=$2 dest=$3
  install -D -m 755 "$bin" "$root$dest"
  install_libs_of "$root" "$bin"
}

# install_libs_of ROOT FILE...: every shared library the FILEs load, at its own path under ROOT,
# but those found under ROOT itself (their $ORIGIN neighbours, already there). One ldd for all:
# it costs a quarter of a second a call on a loaded machine.
install_libs_of() {
  local root=$1 lib; shift
  for lib in $(ldd "$@" 2>/dev/null | grep -o '/[^ ]*' || true); do
    case $lib in "$root"/*) continue ;; esac
    # 755: the kernel refuses to exec a binary whose ELF interpreter (ld-linux) is not executable
    [ -f "$lib" ] && install -D -m 755 "$lib" "$root$lib"
  done
}

build_eagle_agent() {
  local r=$WORK/eagle-agent-root
  eagle_agent_binary; py_spy_binary
  [ -x "$AGENT_BIN" ] || die "no eagle-agent binary at $AGENT_BIN"
  is_static "$AGENT_BIN" || die "$AGENT_BIN is dynamically linked: a FROM-scratch image needs a static binary (musl)"
  mkdir -p "$r/usr/local/bin" "$r/tmp"
  chmod 1777 "$r/tmp"   # samplers write scratch files (perf maps, py-spy dumps); mount an emptyDir there when the root is read-only
  install -m 755 "$AGENT_BIN" "$r/eagle-agent"
  # its DWARF (debug = 1 in the release profile) is for us, not for the nodes: -75 % image size;
  # the symbol table stays, so a panic's backtrace still names functions
  strip --strip-debug "$r/eagle-agent"
  install -m 755 "$PYSPY_BIN" "$r/usr/local/bin/py-spy"
  # jattach (starts Flight Recorder in JVMs, asks them for their perf map) is dynamically
  # linked: it comes with the libraries it loads. Ruby is read through rbspy's library, in the
  # agent.
  local bin; bin=$(command -v jattach || true)
  if [ -n "$bin" ]; then install_with_libs "$bin" "$r" /usr/local/bin/jattach; else log "jattach not found: the image goes without it"; fi
  mkimage eagle-agent "ghcr.io/kube-eagle/eagle-agent:$VERSION" "$r" entrypoint /eagle-agent
}

# Python ground truth (images/python/groundtruth.py) on Debian's interpreter, packed with the
# libraries it loads and its standard library (tests and caches left out): a Python workload
# for the runtime end-to-end tests without a registry.
build_python_groundtruth() {
  local r=$WORK/python-groundtruth-root py=/usr/bin/python3.11
  [ -x $py ] || die "$py missing: apt-get install python3"
  mkdir -p "$r/tmp" "$r/usr/lib"; chmod 1777 "$r/tmp"
  install_with_libs $py "$r" /usr/bin/python3.11
  cp -a /usr/lib/python3.11 "$r/usr/lib/" || die "copying the Python standard library failed"
  find "$r/usr/lib/python3.11" -depth -type d \( -name __pycache__ -o -name test -o -name tests -o -name idlelib \
    -o -name tkinter -o -name ensurepip -o -name lib2to3 \) -exec rm -rf {} +
  install -m 644 "$REPO_ROOT/images/python/groundtruth.py" "$r/groundtruth.py"
  mkimage python-groundtruth "lab.local/python-groundtruth:$VERSION" "$r" entrypoint /usr/bin/python3.11 /groundtruth.py
}

# Java ground truth (images/java/GroundTruth.java) on Debian's own OpenJDK 17, started plainly
# (no profiling flag), as user 65534: the agent attaches Flight Recorder at run time. The
# runtime is a jlink image of Debian's JDK with only the modules the workload and the agent's
# requests need (java.base; jdk.jfr, which answers JFR.start/JFR.stop; jdk.management for the
# workload's CPU clock), with the JDK's own native libraries unstripped (eBPF names the JVM's
# own threads from them); about a fifth of the whole JRE. Cached per JDK release: jlink's output
# is not byte-for-byte the same twice, and the image key must not change for nothing.
JAVA_MODULES=java.base,jdk.jfr,jdk.management
java_runtime() {
  local jdk release dir
  jdk=$(dirname "$(dirname "$(readlink -f "$(command -v javac 2>/dev/null || echo /nonexistent)")")")
  [ -x "$jdk/bin/jlink" ] && [ -d "$jdk/jmods" ] || die "no JDK with jlink and jmods ($jdk): apt-get install openjdk-17-jdk-headless (scripts/setup.sh)"
  release=$(sed -n 's/^JAVA_RUNTIME_VERSION="\(.*\)"$/\1/p' "$jdk/release")
  dir=$EAGLE_LAB_CACHE/jre/$release-$(sha256sum <<<"$JAVA_MODULES" | cut -c1-8)
  if [ ! -x "$dir/bin/java" ]; then
    rm -rf "$dir" "$dir.tmp"; mkdir -p "$(dirname "$dir")"
    "$jdk/bin/jlink" --module-path "$jdk/jmods" --add-modules "$JAVA_MODULES" --output "$dir.tmp" \
      --strip-java-debug-attributes --no-header-files --no-man-pages >&2 || die "jlink of $jdk failed"
    mv "$dir.tmp" "$dir"
  fi
  JAVA_RUNTIME=$dir JDK_HOME=$jdk
}

build_java_groundtruth() {
  local r=$WORK/java-groundtruth-root
  java_runtime
  mkdir -p "$r/tmp" "$r/opt" "$r/app"; chmod 1777 "$r/tmp"   # the JVM's attach socket and the recording go to /tmp
  cp -a "$JAVA_RUNTIME" "$r/opt/java"
  # the C libraries the runtime's binaries and libraries load, at their own paths
  install_libs_of "$r" "$r"/opt/java/bin/* "$r"/opt/java/lib/*.so "$r"/opt/java/lib/server/libjvm.so
  # compiled for the image's runtime (17), reproducibly (no debug tables, a fixed time)
  "$JDK_HOME/bin/javac" --release 17 -g:none -d "$r/app" "$REPO_ROOT/images/java/GroundTruth.java" \
    || die "javac images/java/GroundTruth.java failed"
  touch -d @0 "$r/app"/*.class
  mkimage java-groundtruth "lab.local/java-groundtruth:$VERSION" "$r" entrypoint /opt/java/bin/java -cp /app GroundTruth
}

# Ruby ground truths (images/ruby: groundtruth.rb, the entrypoint, and threads.rb) on Debian's
# ruby 3.1 with the libraries it loads, its standard library and its default gems'
# specifications (RubyGems reads them at start); no documentation, caches or bundled gems.
build_ruby_groundtruth() {
  local r=$WORK/ruby-groundtruth-root rb exts arch=/usr/lib/x86_64-linux-gnu/ruby/3.1.0
  rb=$(readlink -f /usr/bin/ruby 2>/dev/null || true)
  [ -x "$rb" ] && [ -d /usr/lib/ruby/3.1.0 ] && [ -d $arch ] || die "Debian's ruby 3.1 missing: apt-get install ruby (scripts/setup.sh)"
  mkdir -p "$r/tmp" "$r/usr/lib/ruby/gems/3.1.0/specifications" "$(dirname "$r$arch")"; chmod 1777 "$r/tmp"
  install_with_libs "$rb" "$r" /usr/bin/ruby
  cp -a /usr/lib/ruby/3.1.0 /usr/lib/ruby/vendor_ruby "$r/usr/lib/ruby/"
  cp -a /usr/lib/ruby/gems/3.1.0/specifications/default "$r/usr/lib/ruby/gems/3.1.0/specifications/"
  cp -a $arch "$r$arch"
  mapfile -t exts < <(find "$r$arch" -name '*.so')
  install_libs_of "$r" "${exts[@]}"
  install -m 644 "$REPO_ROOT/images/ruby/groundtruth.rb" "$r/groundtruth.rb"
  install -m 644 "$REPO_ROOT/images/ruby/threads.rb" "$r/threads.rb"   # per-thread weighting: `ruby /threads.rb`
  mkimage ruby-groundtruth "lab.local/ruby-groundtruth:$VERSION" "$r" entrypoint /usr/bin/ruby /groundtruth.rb
}

build_groundtruth() { # static, frame pointers and DWARF kept: the e2e tests check symbolized stacks
  local src=${GROUNDTRUTH_SRC:-$REPO_ROOT/images/groundtruth/groundtruth.c} r=$WORK/groundtruth-root
  [ -f "$src" ] || die "$src missing (set GROUNDTRUTH_SRC to another C file)"
  command -v clang-19 >/dev/null || die "clang-19 missing: apt-get install clang-19"
  mkdir -p "$r/tmp"; chmod 1777 "$r/tmp"
  # compiled from the repository root with a relative path, so DWARF names the file the same
  # way on every machine and the binary (hence the image key) is reproducible
  src=$(realpath "$src")
  (cd "$REPO_ROOT" && clang-19 -O2 -g -fno-omit-frame-pointer -static -o "$r/groundtruth" \
     "$(realpath --relative-to="$REPO_ROOT" "$src")") || die "clang-19 failed to compile $src"
  mkimage groundtruth "lab.local/groundtruth:$VERSION" "$r" entrypoint /groundtruth
}

for n in "${NAMES[@]}"; do
  case $n in
    pause) timed "image pause" build_pause ;;
    busybox) timed "image busybox" build_busybox ;;
    eagle-agent) timed "image eagle-agent" build_eagle_agent ;;
    groundtruth) timed "image groundtruth" build_groundtruth ;;
    python-groundtruth) timed "image python-groundtruth" build_python_groundtruth ;;
    java-groundtruth) timed "image java-groundtruth" build_java_groundtruth ;;
    ruby-groundtruth) timed "image ruby-groundtruth" build_ruby_groundtruth ;;
    *) die "unknown image '$n' (known: pause busybox eagle-agent groundtruth python-groundtruth java-groundtruth ruby-groundtruth)" ;;
  esac
done
