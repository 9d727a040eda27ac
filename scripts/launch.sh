#!/usr/bin/env bash
# Starts N processes of `alexnet train --distributed` on this machine, with the
# environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK,
# LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), and waits for them.
#
# Usage: scripts/launch.sh N [alexnet train flags...]
#   e.g. scripts/launch.sh 2 --epochs 1 --output out-ddp
#
# Environment: ALEXNET (the binary; default build/app/alexnet), MASTER_ADDR
# (default 127.0.0.1), MASTER_PORT (default: a free port), LAUNCH_LOG_DIR (also
# write each rank's output to rank-R.log there).
#
# If one process fails, the others are stopped and the script exits with the
# first failing status. SIGINT/SIGTERM are passed on to every process, which
# then write a resumable checkpoint and exit.
set -uo pipefail

usage() { echo "usage: $0 N [alexnet train flags...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
N=$1; shift
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "error: N must be a positive integer, got '$N'" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ALEXNET:-$ROOT/build/app/alexnet}
[ -x "$BIN" ] || { echo "error: $BIN not found: build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }

ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${MASTER_PORT:-}
if [ -z "$PORT" ]; then
  # A port the kernel just handed out and released: free unless someone races us.
  PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) \
    || PORT=$((29500 + RANDOM % 1000))
fi

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
}
forward() {
  for p in "${pids[@]}"; do kill -"$1" "$p" 2>/dev/null; done
}
trap 'forward INT' INT
trap 'forward TERM' TERM

for ((r = 0; r < N; r++)); do
  if [ -n "${LAUNCH_LOG_DIR:-}" ]; then
    mkdir -p "$LAUNCH_LOG_DIR"
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=$N LOCAL_WORLD_SIZE=$N MASTER_ADDR=$ADDR MASTER_PORT=$PORT \
      "$BIN" train --distributed "$@" > >(tee "$LAUNCH_LOG_DIR/rank-$r.log") 2>&1 &
  else
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=$N LOCAL_WORLD_SIZE=$N MASTER_ADDR=$ADDR MASTER_PORT=$PORT \
      "$BIN" train --distributed "$@" &
  fi
  pids+=($!)
done

# Wait for all; the first failure stops the rest (they would otherwise wait for
# the dead rank until --dist-timeout).
status=0
remaining=$N
while [ "$remaining" -gt 0 ]; do
  wait -n -p done_pid "${pids[@]}"
  rc=$?
  [ -z "${done_pid:-}" ] && continue  # interrupted by a trapped signal
  remaining=$((remaining - 1))
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    echo "launch: a process (pid $done_pid) exited with status $rc; stopping the others" >&2
    stop_all
  fi
  done_pid=
done
exit "$status"
