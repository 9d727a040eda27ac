#!/usr/bin/env bash
# Starts N processes of `alexnet train --distributed` on this machine, with the
# environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK,
# LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), and waits for them. On several
# machines, run it once on each with the same --nnodes, --master-addr and
# --master-port and its own --node-rank (node 0 at --master-addr): no Python needed.
#
# Usage: scripts/launch.sh [--nnodes K --node-rank R --master-addr A [--master-port P]]
#                          N [alexnet train flags...]
#   e.g. scripts/launch.sh 2 --epochs 1 --output out-ddp
#        scripts/launch.sh --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 2 --output out-ddp
# (torchrun's spellings --node_rank, --master_addr, --master_port work too.)
#
# Environment: ALEXNET (the binary; default build/app/alexnet, else the installed
# one beside this script, else alexnet on PATH), MASTER_ADDR
# (default 127.0.0.1 on one machine), MASTER_PORT (default: a free port on one
# machine, 29500 on several), LAUNCH_LOG_DIR (also write each rank's output to
# rank-R.log there).
#
# If one process fails, the others are stopped and the script exits with the
# first failing status. SIGINT/SIGTERM are passed on to every process, which
# then write a resumable checkpoint and exit.
set -uo pipefail

usage() {
  echo "usage: $0 [--nnodes K --node-rank R --master-addr A [--master-port P]] N [alexnet train flags...]" >&2
  exit 2
}
NNODES=1 NODE_RANK=0 ADDR=${MASTER_ADDR:-} PORT=${MASTER_PORT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --nnodes|--node-rank|--node_rank|--master-addr|--master_addr|--master-port|--master_port)
      [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; usage; }
      case $1 in
        --nnodes) NNODES=$2 ;;
        --node-rank|--node_rank) NODE_RANK=$2 ;;
        --master-addr|--master_addr) ADDR=$2 ;;
        *) PORT=$2 ;;
      esac
      shift 2 ;;
    --nnodes=*|--node-rank=*|--node_rank=*|--master-addr=*|--master_addr=*|--master-port=*|--master_port=*)
      v=${1#*=}
      case $1 in
        --nnodes=*) NNODES=$v ;;
        --node-rank=*|--node_rank=*) NODE_RANK=$v ;;
        --master-addr=*|--master_addr=*) ADDR=$v ;;
        *) PORT=$v ;;
      esac
      shift ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
N=$1; shift
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "error: N must be a positive integer, got '$N'" >&2; exit 2; }
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || { echo "error: --nnodes must be a positive integer, got '$NNODES'" >&2; exit 2; }
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] && [ "$NODE_RANK" -lt "$NNODES" ] \
  || { echo "error: --node-rank must be in [0, $NNODES), got '$NODE_RANK'" >&2; exit 2; }
if [ "$NNODES" -gt 1 ]; then
  [ -n "$ADDR" ] || { echo "error: --nnodes $NNODES needs --master-addr: an address of node 0 that every node reaches" >&2; exit 2; }
  PORT=${PORT:-29500}  # torchrun's default: every node must use the same one
fi
ADDR=${ADDR:-127.0.0.1}
[ -z "$PORT" ] || [[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1 && "$PORT" -le 65535 ]] \
  || { echo "error: --master-port must be a port number, got '$PORT'" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The binary: $ALEXNET, else the source tree's build, else the installed one
# (PREFIX/share/alexnet/scripts/launch.sh -> PREFIX/bin/alexnet), else PATH's.
BIN=${ALEXNET:-}
if [ -z "$BIN" ]; then
  for candidate in "$ROOT/build/app/alexnet" "$ROOT/../../bin/alexnet" "$(command -v alexnet || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && { BIN=$candidate; break; }
  done
  BIN=${BIN:-$ROOT/build/app/alexnet}
fi
[ -x "$BIN" ] || { echo "error: $BIN not found: build first (cmake -S . -B build && cmake --build build), or set ALEXNET" >&2; exit 1; }

if [ -z "$PORT" ]; then
  # A port the kernel just handed out and released: free unless someone races us.
  PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) \
    || PORT=$((29500 + RANDOM % 1000))
fi
WORLD=$((NNODES * N))

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
}
forward() {
  for p in "${pids[@]}"; do kill -"$1" "$p" 2>/dev/null; done
}
trap 'forward INT' INT
trap 'forward TERM' TERM

for ((l = 0; l < N; l++)); do
  r=$((NODE_RANK * N + l))
  if [ -n "${LAUNCH_LOG_DIR:-}" ]; then
    mkdir -p "$LAUNCH_LOG_DIR"
    RANK=$r LOCAL_RANK=$l WORLD_SIZE=$WORLD LOCAL_WORLD_SIZE=$N MASTER_ADDR=$ADDR MASTER_PORT=$PORT \
      "$BIN" train --distributed "$@" > >(tee "$LAUNCH_LOG_DIR/rank-$r.log") 2>&1 &
  else
    RANK=$r LOCAL_RANK=$l WORLD_SIZE=$WORLD LOCAL_WORLD_SIZE=$N MASTER_ADDR=$ADDR MASTER_PORT=$PORT \
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
