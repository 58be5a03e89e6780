#!/usr/bin/env bash
# Runs qron's whole test suite: unit and property tests, openraft's storage
# suite, the process-level cluster tests (which start real qron-server
# processes on OS-chosen ports), and the container scenarios where Docker is
# available. Ends with the test runner's summary line.
#
# The container scenarios (chaos-tests/tests/docker.rs) are `#[ignore]`d: they
# need a Docker engine and docker-compose. Where both answer, they run
# (`--run-ignored all`; in this workspace `#[ignore]` means "needs Docker" and
# nothing else). Where not, a line before the run says how many are skipped and
# why, and the runner's summary counts them as skipped: never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/qron-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The cluster tests run the built binaries: build them first, in the same profile.
cargo build --workspace --bins --locked

# Why the Docker tests cannot run here, or nothing if they can.
docker_missing=""
if ! docker info >/dev/null 2>&1; then
  docker_missing="no Docker engine (\`docker info\` failed)"
elif ! docker-compose version >/dev/null 2>&1; then
  docker_missing="no docker-compose (\`docker-compose version\` failed)"
fi

if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --locked --no-fail-fast)
  if [ -z "$docker_missing" ]; then
    runner+=(--run-ignored all)
  else
    # The runner's own count of what it will leave out (this builds the tests,
    # which the run needs anyway).
    n=$(cargo nextest list --workspace --locked --run-ignored only -E 'binary(docker)' \
          --message-format oneline 2>/dev/null | grep -c . || true)
    echo "skipping ${n} docker tests: ${docker_missing}"
  fi
  exec "${runner[@]}" "$@"
else
  if [ -z "$docker_missing" ]; then
    # libtest's flag goes after the (first) `--`: add one unless the caller did.
    sep=(--)
    for a in "$@"; do
      if [ "$a" = "--" ]; then sep=(); fi
    done
    exec cargo test --workspace --locked --no-fail-fast "$@" ${sep[@]+"${sep[@]}"} --include-ignored
  fi
  n=$(grep -c '^#\[ignore = "needs a Docker engine' chaos-tests/tests/docker.rs || true)
  echo "skipping ${n} docker tests: ${docker_missing}"
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
