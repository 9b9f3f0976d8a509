#!/usr/bin/env bash
# tests/dp_test.sh <trainer> <work dir> <mpirun>: data parallelism on CPU ranks (kiln/parallel, Open MPI), the demo
# recipe's trainer as a user starts it with mpirun:
#   1. DP 2 (micro-batches of one each, all-reduced) takes the steps of one process with --grad-accum 2 (both given
#      --global-batch 2, which each shares out among its ranks; a global batch of 3 is refused on 2): the same
#      global batches (every rank reads the one global stream), losses equal within 1e-6 relative over 20 steps. Not
#      bitwise: one process adds the second micro-batch's gradients into the first's inside its kernels, DP adds two
#      finished gradients in the all-reduce; fp32 rounds the two orders differently (about 1e-7 of a gradient), and
#      20 steps of AdamW keep the losses within ~1e-8 relative (measured: printed below).
#      The held-out loss (its batches shared out among the ranks) is the same to the 4 decimals printed.
#   2. DP 2 twice: bitwise the same losses (the all-reduce's order is fixed).
#   3. A checkpoint of DP 2 resumes in one process (--grad-accum 2), and one of one process resumes under DP 2, each
#      continuing with the other's losses (within 1e-6).
#   4. A rank killed (SIGKILL) ends the job non-zero, naming the rank, within seconds; a rank that hangs (SIGSTOP)
#      makes the others stop after --comm-timeout (20 s here: a loaded CI machine must not trip it before), naming it.
#   5. Ranks started with different settings stop at once, each with the error.
set -euo pipefail
trainer=$1
work=$2
mpirun=$3
rm -rf "$work"
mkdir -p "$work"
source "$(dirname "$0")/parallel_lib.sh"
base=(--log-every 5 --eval-every 0 --eval-batches 2 --sample-tokens 0 --threads 1)
args=(--steps 20 "${base[@]}" --checkpoint-every 10 --resume none)

run "$work/one" "$trainer" "${args[@]}" --global-batch 2  # --grad-accum 2 here,
run "$work/dp" "${mpi[@]}" -np 2 "$trainer" "${args[@]}" --global-batch 2  # and 1 on each of the 2 ranks
grep -q "1 micro-batches of 8 x 256" "$work/dp.log" || { echo "FAIL: --global-batch 2 on 2 ranks is not 1 each"; exit 1; }
grep -q "data parallel over 2 ranks" "$work/dp.log" || { echo "FAIL: the DP run did not say it ran 2 ranks"; exit 1; }
[ "$(grep -c '^step' "$work/dp.log")" -eq 5 ] || { echo "FAIL: rank 0 alone should print the 5 step lines"; exit 1; }
losses "$work/one" > "$work/one.losses"
losses "$work/dp" > "$work/dp.losses"
[ "$(wc -l < "$work/dp.losses")" -eq 20 ] || { echo "FAIL: expected 20 logged steps"; exit 1; }
compare "$work/one.losses" "$work/dp.losses" 1e-6 "DP 2 vs one process with --grad-accum 2"
# the held-out loss: its batches shared out among the ranks, the same mean (to the 4 decimals printed)
heldout() { grep -o "held-out loss [0-9.]* nats" "$1"; }
[ "$(heldout "$work/one.log")" = "$(heldout "$work/dp.log")" ] && [ -n "$(heldout "$work/dp.log")" ] \
  || { echo "FAIL: held-out loss: one process '$(heldout "$work/one.log")', DP 2 '$(heldout "$work/dp.log")'"; exit 1; }
echo "held-out: $(heldout "$work/dp.log") in both"

run "$work/dp_again" "${mpi[@]}" -np 2 "$trainer" "${args[@]}" --grad-accum 1
losses "$work/dp_again" > "$work/dp_again.losses"
compare "$work/dp.losses" "$work/dp_again.losses" 0 "DP 2 run twice (bitwise)"

# layouts swap at a checkpoint: step 10 of DP 2 -> one process, step 10 of one process -> DP 2
run "$work/dp_to_one" "$trainer" --steps 20 "${base[@]}" --grad-accum 2 --resume "$work/dp/checkpoints/step_00000010"
run "$work/one_to_dp" "${mpi[@]}" -np 2 "$trainer" --steps 20 "${base[@]}" --grad-accum 1 \
  --resume "$work/one/checkpoints/step_00000010"
losses "$work/dp_to_one" > "$work/dp_to_one.losses"
losses "$work/one_to_dp" > "$work/one_to_dp.losses"
awk '$1 > 10' "$work/dp.losses" > "$work/dp.late"
awk '$1 > 10' "$work/one.losses" > "$work/one.late"
compare "$work/dp.late" "$work/dp_to_one.losses" 1e-6 "DP 2's checkpoint resumed in one process"
compare "$work/one.late" "$work/one_to_dp.losses" 1e-6 "one process's checkpoint resumed under DP 2"

# a rank that dies, and one that hangs
rank_pid() {  # the pid of rank $2 of the run writing to $1
  local p
  for p in $(pgrep -f -- "--out $1( |$)" || true); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return; fi
  done
}
fault() {  # fault <name> <signal>: starts a long DP 2 run, sends the signal to rank 1 after step 2, waits
  local out=$work/$1 sig=$2
  "${mpi[@]}" -np 2 "$trainer" --steps 500 "${base[@]}" --resume none --comm-timeout 20 --out "$out" > "$out.log" 2>&1 &
  local job=$! pid=""
  for _ in $(seq 1 600); do
    if [ -f "$out/metrics.jsonl" ] && grep -q '"step":2,' "$out/metrics.jsonl"; then pid=$(rank_pid "$out" 1); fi
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || { kill -9 "$job"; cat "$out.log"; echo "FAIL: $1: rank 1 was not found running"; exit 1; }
  local t0=$SECONDS rc=0
  kill "-$sig" "$pid"
  wait "$job" || rc=$?
  kill -9 "$pid" 2>/dev/null || true
  echo "$1: rank 1 got SIG$sig; the job ended after $((SECONDS - t0)) s with exit $rc"
  ((rc != 0)) || { cat "$out.log"; echo "FAIL: $1: the job exited 0"; exit 1; }
  ((SECONDS - t0 <= 60)) || { echo "FAIL: $1: it took more than 60 s"; exit 1; }
}
fault killed KILL
grep -Eq "rank 1|rank \[\[[0-9]+,[0-9]+\],1\]|Process name: \[\[[0-9]+,[0-9]+\],1\]" "$work/killed.log" \
  || { cat "$work/killed.log"; echo "FAIL: the killed rank was not named"; exit 1; }
fault hung STOP
grep -q "rank 0 of 2: .* has waited [0-9]* s (--comm-timeout) .* ranks that did not reach it: 1" "$work/hung.log" \
  || { cat "$work/hung.log"; echo "FAIL: the hung rank was not named"; exit 1; }
grep -m1 "has waited" "$work/hung.log"

# a global batch that does not split among the ranks
rc=0
"${mpi[@]}" -np 2 "$trainer" "${args[@]}" --global-batch 3 --out "$work/odd" > "$work/odd.log" 2>&1 || rc=$?
((rc != 0)) && grep -q -- "--global-batch 3: 3 micro-batches do not split among 2 data-parallel ranks" "$work/odd.log" \
  || { cat "$work/odd.log"; echo "FAIL: --global-batch 3 on 2 ranks was not refused"; exit 1; }

# different settings on the two ranks: every rank says so and the job fails
rc=0
"${mpi[@]}" -np 1 "$trainer" "${args[@]}" --lr 1e-3 --out "$work/mixed" : -np 1 "$trainer" "${args[@]}" --lr 2e-3 \
  --out "$work/mixed" > "$work/mixed.log" 2>&1 || rc=$?
((rc != 0)) || { echo "FAIL: ranks with different settings ran"; exit 1; }
grep -q "different settings" "$work/mixed.log" || { cat "$work/mixed.log"; echo "FAIL: no error about the settings"; exit 1; }
echo "PASS: data parallelism over 2 MPI ranks"
