#!/usr/bin/env bash
# Cross-builds the Linux arm64 CLI and agent (static, musl) on an x86-64 machine, and starts
# both under qemu-user: what a release's arm64 archive and image hold, checked without arm64
# hardware. clang-19 compiles their C (ring) and the eBPF objects for arm64, lld links against
# Rust's own musl; scripts/setup.sh installs lld-19, qemu-user, linux-libc-dev-arm64-cross and
# the Rust target. eBPF cannot run under qemu-user: sampling on arm64 needs an arm64 kernel.
#   scripts/cross-arm64.sh              debug build (what scripts/test.sh runs)
#   scripts/cross-arm64.sh --release    what a release ships
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=aarch64-unknown-linux-musl
profile=debug
args=()
if [ "${1:-}" = --release ]; then profile=release; args+=(--release); fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=clang-19
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-arg=--target=$target -C link-arg=-fuse-ld=lld"
export CC_aarch64_unknown_linux_musl=clang-19
export CFLAGS_aarch64_unknown_linux_musl="--target=$target"
export AR_aarch64_unknown_linux_musl=llvm-ar-19
# Named, clang is never skipped: a missing eBPF toolchain fails the build instead of leaving a
# stub object in the arm64 agent.
export EAGLE_CLANG=clang-19
cargo build --locked --target "$target" -p kube-eagle -p eagle-agent --bins "${args[@]}"

for bin in kubectl-eagle eagle-agent; do
  path="target/$target/$profile/$bin"
  file -b "$path" | grep -q "ARM aarch64, .*statically linked" \
    || { echo "cross-arm64: $path is not a static arm64 executable: $(file -b "$path")" >&2; exit 1; }
  version=$(qemu-aarch64 "$path" --version)
  [ "$version" = "$bin $(cargo pkgid -p kube-eagle | sed 's/.*[#@]//')" ] \
    || { echo "cross-arm64: $path --version under qemu-aarch64 said: $version" >&2; exit 1; }
  echo "cross-arm64: $path ($(du -h "$path" | cut -f1)) under qemu-aarch64: $version" >&2
done
