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
# Tests: real interpreters and their samplers' helpers (jattach starts Flight Recorder in a JVM);
# iproute2 and iptables make net_loss's two network namespaces, their veth pair and the loss.
[ "$minimal" = --minimal ] || pkgs+=(bpftool util-linux binutils python3 python3-pip jattach ruby iproute2 iptables)
if [ "$minimal" != --minimal ]; then
  command -v javac >/dev/null || pkgs+=(openjdk-17-jdk-headless)
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v go >/dev/null || pkgs+=(golang-go)
  # The arm64 CLI and agent, cross-built and started under qemu-user by scripts/test.sh:
  # clang-19 compiles their C (ring) and eBPF objects for arm64 (with arm64's kernel headers),
  # lld links against Rust's own musl (scripts/cross-arm64.sh).
  pkgs+=(lld-19 qemu-user linux-libc-dev-arm64-cross)
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
  rustup target list --installed 2>/dev/null | grep -q "^aarch64-unknown-linux-musl$" \
    || rustup target add aarch64-unknown-linux-musl
  command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
  # py-spy's program reads Python's native frames (`--native`; the agent reads Python through
  # py-spy's library otherwise, and Ruby through rbspy's); its PyPI wheel carries a static binary.
  command -v py-spy >/dev/null || python3 -m pip install --quiet --break-system-packages py-spy 2>/dev/null \
    || python3 -m pip install --quiet py-spy
fi
