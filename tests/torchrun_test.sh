#!/usr/bin/env bash
# tests/torchrun_test.sh <trainer> <work dir> <mpirun>: ranks started as torchrun starts them (RANK, LOCAL_RANK,
# WORLD_SIZE, MASTER_ADDR, MASTER_PORT; no MPI), which talk over TCP through rank 0 (src/parallel/tcp.cpp):
#   1. DP 2 over TCP takes bitwise the steps of DP 2 over MPI (20 steps): rank 0 sums a + b, as MPI does for two.
#   2. A rank killed (SIGKILL) makes the other exit non-zero within seconds, naming it; a rank that hangs
#      (SIGSTOP) makes rank 0 stop after --comm-timeout (20 s), naming it.
set -euo pipefail
trainer=$1
work=$2
mpirun=$3
rm -rf "$work"
mkdir -p "$work"
source "$(dirname "$0")/parallel_lib.sh"
mpi+=(-np 2)
args=(--log-every 5 --eval-every 0 --eval-batches 2 --sample-tokens 0 --threads 1 --resume none)
port=$((20000 + RANDOM % 30000))  # free, most likely: rank 0 says so when it is not
# torchrun_like <out> <extra args...>: starts the two ranks as torchrun would (pids in p0 and p1)
torchrun_like() {
  local out=$1; shift
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$trainer" "${args[@]}" --out "$out" "$@" > "$out.rank0.log" 2>&1 &
  p0=$!
  RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    "$trainer" "${args[@]}" --out "$out" "$@" > "$out.rank1.log" 2>&1 &
  p1=$!
}

"${mpi[@]}" "$trainer" "${args[@]}" --steps 20 --out "$work/mpi" > "$work/mpi.log" 2>&1 || { cat "$work/mpi.log"; echo "FAIL: the MPI run"; exit 1; }
torchrun_like "$work/tcp" --steps 20
rc0=0 rc1=0
wait "$p0" || rc0=$?
wait "$p1" || rc1=$?
((rc0 == 0 && rc1 == 0)) || { cat "$work/tcp.rank0.log" "$work/tcp.rank1.log"; echo "FAIL: the TCP run exited $rc0 / $rc1"; exit 1; }
grep -q "data parallel over 2 ranks (TCP via rank 0)" "$work/tcp.rank0.log" \
  || { cat "$work/tcp.rank0.log"; echo "FAIL: the TCP run did not say it ran 2 ranks over TCP"; exit 1; }
losses "$work/mpi" > "$work/mpi.losses"
losses "$work/tcp" > "$work/tcp.losses"
[ "$(wc -l < "$work/tcp.losses")" -eq 20 ] || { echo "FAIL: expected 20 logged steps"; exit 1; }
cmp -s "$work/mpi.losses" "$work/tcp.losses" || { paste "$work/mpi.losses" "$work/tcp.losses"; echo "FAIL: TCP's losses are not MPI's"; exit 1; }
echo "DP 2 over TCP vs over MPI: 20 steps, bitwise the same losses"

fault() {  # fault <name> <signal>: a long run; rank 1 gets the signal after step 2
  local out=$work/$1 sig=$2
  port=$((20000 + RANDOM % 30000))  # free, most likely: rank 0 says so when it is not
  torchrun_like "$out" --steps 500 --comm-timeout 20
  for _ in $(seq 1 600); do
    [ -f "$out/metrics.jsonl" ] && grep -q '"step":2,' "$out/metrics.jsonl" && break
    sleep 0.1
  done
  local t0=$SECONDS rc=0
  kill "-$sig" "$p1"
  wait "$p0" || rc=$?
  kill -9 "$p1" 2>/dev/null || true
  wait "$p1" 2>/dev/null || true
  echo "$1: rank 1 got SIG$sig; rank 0 ended after $((SECONDS - t0)) s with exit $rc"
  ((rc != 0)) || { cat "$out.rank0.log"; echo "FAIL: $1: rank 0 exited 0"; exit 1; }
  ((SECONDS - t0 <= 60)) || { echo "FAIL: $1: it took more than 60 s"; exit 1; }
}
fault killed KILL
grep -q "rank 0 of 2 (TCP via 127.0.0.1:[0-9]*): .* rank 1 closed its connection" "$work/killed.rank0.log" \
  || { cat "$work/killed.rank0.log"; echo "FAIL: the killed rank was not named"; exit 1; }
grep -m1 "closed its connection" "$work/killed.rank0.log"
fault hung STOP
grep -q "rank 0 of 2 (TCP via 127.0.0.1:[0-9]*): .* rank 1 has not sent anything for [0-9]* s (--comm-timeout)" "$work/hung.rank0.log" \
  || { cat "$work/hung.rank0.log"; echo "FAIL: the hung rank was not named"; exit 1; }
grep -m1 "has not sent anything" "$work/hung.rank0.log"
echo "PASS: torchrun's ranks over TCP"
