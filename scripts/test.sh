#!/usr/bin/env bash
# Runs qron's whole test suite: unit and property tests, openraft's storage
# suite, and the process-level cluster tests (which start real qron-server
# processes on OS-chosen ports). Ends with the test runner's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/qron-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The cluster tests run the built binaries: build them first, in the same profile.
cargo build --workspace --bins --locked

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
