#!/usr/bin/env bash
# Installs what building and testing kube-eagle needs on Debian/Ubuntu, only what is missing:
# clang (the eBPF program), libbpf headers, rustfmt/clippy, cargo-nextest.
#   scripts/setup.sh            build + test needs
#   scripts/setup.sh --minimal  only what building and running the demo needs
set -euo pipefail
minimal=${1:-}
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
pkgs=(clang-19 libbpf-dev linux-libc-dev pkg-config)
# Tests: real interpreters and their samplers' helpers (jattach asks a JVM for its perf map).
[ "$minimal" = --minimal ] || pkgs+=(bpftool util-linux binutils python3 python3-pip jattach ruby)
if [ "$minimal" != --minimal ]; then
  command -v javac >/dev/null || pkgs+=(openjdk-17-jdk-headless)
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v go >/dev/null || pkgs+=(golang-go)
fi
missing=()
for p in "${pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
if [ "$minimal" != --minimal ]; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
  command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
  # py-spy samples Python; its PyPI wheel carries a static binary.
  command -v py-spy >/dev/null || python3 -m pip install --quiet --break-system-packages py-spy 2>/dev/null \
    || python3 -m pip install --quiet py-spy
  # rbspy samples Ruby; crates.io is its only reachable source, so it is built once and cached
  # outside the checkout (the agent finds it through EAGLE_RBSPY or PATH).
  tools=/var/cache/kube-eagle/tools
  if ! command -v rbspy >/dev/null && [ ! -x $tools/bin/rbspy ]; then
    echo "setup: building rbspy into $tools (once)" >&2
    $sudo mkdir -p $tools && cargo install rbspy --locked --root $tools --quiet
  fi
fi
