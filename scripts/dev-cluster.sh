#!/usr/bin/env bash
# Starts a local three-node qron cluster and one worker as processes, creates a
# demo app and a demo job, runs it once, and prints how to talk to it. Data and logs go to a temp directory
# (or $QRON_DEV_DIR); Ctrl-C stops every process.
#
#   bash scripts/dev-cluster.sh            # ports 7700/7701, 7710/7711, 7720/7721
#   QRON_DEV_BASE_PORT=9700 bash scripts/dev-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/qron-target}"
cargo build --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/debug"

base="${QRON_DEV_BASE_PORT:-7700}"
dir="${QRON_DEV_DIR:-$(mktemp -d -t qron-dev-XXXXXX)}"
mkdir -p "$dir"

cluster=""
seeds=""
for i in 1 2 3; do
  grpc=$((base + (i - 1) * 10 + 1))
  cluster+="${cluster:+,}$i=127.0.0.1:$grpc"
  seeds+="${seeds:+,}127.0.0.1:$grpc"
done

pids=()
cleanup() {
  echo
  echo "stopping qron (logs kept in $dir)"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  http=$((base + (i - 1) * 10))
  grpc=$((http + 1))
  "$BIN/qron-server" --node-id "$i" --http "127.0.0.1:$http" --grpc "127.0.0.1:$grpc" \
    --data-dir "$dir/node$i" --initial-cluster "$cluster" >"$dir/node$i.log" 2>&1 &
  pids+=($!)
done

endpoints="http://127.0.0.1:$base,http://127.0.0.1:$((base + 10)),http://127.0.0.1:$((base + 20))"
ctl() { "$BIN/qronctl" --endpoints "$endpoints" "$@"; }

echo "waiting for a leader..."
for _ in $(seq 1 100); do
  # /cluster is answered locally even without a leader: wait until it names one.
  if ctl -o json cluster status 2>/dev/null | grep -Eq '"leader_id": *[0-9]'; then break; fi
  sleep 0.2
done
ctl cluster status

ctl app create demo --secret demo-secret 2>/dev/null || true
ctl job create --app demo --name hello --cron '*/10 * * * * *' \
  --shell 'echo "hello from instance $QRON_INSTANCE_ID on $QRON_WORKER_ID"' 2>/dev/null || true
ctl job list --app demo

# A worker: any server's gRPC address is a seed; it finds the leader itself.
"$BIN/qron-worker" --seeds "$seeds" --app demo --secret demo-secret --worker-id demo-worker-1 \
  >"$dir/worker1.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  if ctl -o json worker list --app demo 2>/dev/null | grep -q '"connected": true'; then break; fi
  sleep 0.2
done
ctl worker list --app demo
echo
echo "running the demo job once:"
inst=$(ctl -o json job run 1 | sed -n 's/^  "id": \([0-9]*\),*$/\1/p' | head -n 1)
ctl instance logs --follow "$inst" || true   # returns once the instance finished
ctl instance get "$inst" || true

cat <<MSG

qron is running: three nodes and a worker, data and logs in $dir
  API:      http://127.0.0.1:$base/api/v1/cluster  (any node answers; writes go to the leader)
  qronctl:  $BIN/qronctl --endpoints $endpoints cluster status
  run:      $BIN/qronctl --endpoints $endpoints job run 1 && $BIN/qronctl --endpoints $endpoints instance list
  worker:   $BIN/qron-worker --seeds $seeds --app demo --secret demo-secret   (start more)
  logs:     tail -f $dir/node*.log $dir/worker1.log
Press Ctrl-C to stop.
MSG
wait
