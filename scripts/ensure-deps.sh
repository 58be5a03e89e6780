#!/usr/bin/env bash
# Installs what building qron needs and a fresh machine lacks: libclang (RocksDB's
# bindgen, through clang-sys) and a C/C++ compiler. protoc comes from the vendored
# `protoc-bin-vendored` crate, so it is not needed here. Safe to run again: it
# only installs what is missing.
#
#   bash scripts/ensure-deps.sh           # install what is missing
#   bash scripts/ensure-deps.sh --check   # print "libclang: found <path>" or
#                                         # "libclang: missing"; exit 0 / 1; install nothing
#
# QRON_DEPS_ROOT (tests only) makes the libclang search look under that
# directory instead of `/`, and ignores LIBCLANG_PATH and llvm-config, so the
# detection can be run against a fake file tree.
set -euo pipefail

root="${QRON_DEPS_ROOT:-}"

# What clang-sys (build/dynamic.rs, without its `runtime` feature) accepts:
# a file named `libclang.so` or `libclang-<version>.so`. It does NOT accept
# `libclang-cpp.so*` (the C++ API, shipped by libclang-cpp<N> without -dev) nor
# a bare `libclang.so.<N>` (the runtime library without the -dev symlink):
# a machine with only those fails to build with "couldn't find any valid shared
# libraries matching: ['libclang.so', 'libclang-*.so']".
is_libclang_name() {
  case "$1" in
    libclang-cpp*) return 1 ;;
    libclang.so) return 0 ;;
    libclang-*.so) return 0 ;;
    *) return 1 ;;
  esac
}

# Prints the first libclang clang-sys would find, or nothing.
find_libclang() {
  local dirs=()
  if [ -z "$root" ]; then
    if [ -n "${LIBCLANG_PATH:-}" ]; then
      if [ -f "$LIBCLANG_PATH" ]; then dirs+=("$(dirname "$LIBCLANG_PATH")"); else dirs+=("$LIBCLANG_PATH"); fi
    fi
    if command -v llvm-config >/dev/null 2>&1; then
      dirs+=("$(llvm-config --libdir 2>/dev/null || true)")
    fi
  fi
  # clang-sys's Linux search directories, in its order.
  local pattern d f
  shopt -s nullglob
  # Quoted: each pattern is expanded below, under $root, not here against `/`.
  for pattern in '/usr/local/llvm*/lib*' '/usr/local/lib*/*/*' '/usr/local/lib*/*' '/usr/local/lib*' \
    '/usr/lib*/*/*' '/usr/lib*/*' '/usr/lib*' '/lib*/*'; do
    for d in $root$pattern; do dirs+=("$d"); done
  done
  for d in "${dirs[@]}"; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    for f in "$d"/libclang*.so; do
      if is_libclang_name "$(basename "$f")" && [ -e "$f" ]; then
        echo "$f"
        return 0
      fi
    done
  done
  return 0
}

libclang="$(find_libclang)"

if [ "${1:-}" = "--check" ]; then
  if [ -n "$libclang" ]; then
    echo "libclang: found $libclang"
    exit 0
  fi
  echo "libclang: missing"
  exit 1
fi

missing=()
[ -n "$libclang" ] || missing+=(libclang-dev)
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)

if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  libclang="$(find_libclang)"
  if [ -z "$libclang" ]; then
    echo "ensure-deps: libclang-dev was installed but no libclang.so was found;" \
      "set LIBCLANG_PATH to the directory that holds it" >&2
    exit 1
  fi
  echo "ensure-deps: libclang at $libclang" >&2
fi

if ! command -v cargo >/dev/null; then
  echo "ensure-deps: cargo is not on PATH; install Rust with rustup first" >&2
  exit 1
fi
