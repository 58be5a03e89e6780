#!/usr/bin/env bash
# Builds the `qron:dev` container image without pulling anything: FROM scratch
# with qron-server, qron-worker and qronctl, the shared libraries `ldd` lists,
# the dynamic loader, and a static busybox as /bin/sh (shell jobs need one).
# The binaries come from the same cargo profile as the tests (no second
# RocksDB build).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
if ! command -v busybox >/dev/null && [ ! -x /bin/busybox ]; then
  echo "build-image: installing busybox-static for the image's /bin/sh" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq busybox-static >/dev/null
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/qron-target}"
cargo build --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/debug"

ctx="$(mktemp -d -t qron-image-XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/tmp" "$root/data" "$root/etc"
for b in qron-server qron-worker qronctl; do
  cp "$BIN/$b" "$root/usr/local/bin/$b"
  ldd "$BIN/$b" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
mkdir -p "$root/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
bb="$(command -v busybox || echo /bin/busybox)"
cp "$bb" "$root/bin/busybox"
for tool in sh echo date sleep cat true false; do ln -sf busybox "$root/bin/$tool"; done
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
chmod 1777 "$root/tmp"
cp deploy/Dockerfile "$ctx/Dockerfile"
docker build -q -t qron:dev "$ctx" >/dev/null
echo "built image qron:dev"
