#!/usr/bin/env bash
# Installs what building qron needs and a fresh machine lacks: libclang (RocksDB's
# bindgen). protoc comes from the vendored `protoc-bin-vendored` crate, so it is
# not needed here. Safe to run again: it only installs what is missing.
set -euo pipefail

have_libclang() {
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && return 0
  compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null && return 0
  compgen -G '/usr/lib/x86_64-linux-gnu/libclang*.so*' >/dev/null && return 0
  return 1
}

missing=()
have_libclang || missing+=(libclang-dev)
command -v cc >/dev/null || missing+=(build-essential)

if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "ensure-deps: cargo is not on PATH; install Rust with rustup first" >&2
  exit 1
fi
