#!/usr/bin/env bash
# tests/resume_test.sh <trainer> <work dir> [trainer args...]: a run stopped by SIGTERM (after step 15), and one
# killed with SIGKILL (after step 25), then resumed (--resume auto), must log bitwise the same loss at every step as
# a run never stopped (CPU backend, same threads). The extra arguments follow the test's own (--steps 40 unless they
# give --steps; --checkpoint-every 10 unless they give it).
# SIGTERM saves a checkpoint and exits 143; SIGKILL loses the steps since the last checkpoint, which are redone.
set -euo pipefail
trainer=$1
work=$2
shift 2
rm -rf "$work"
mkdir -p "$work"
args=(--log-every 10 --eval-every 0 --eval-batches 1 --sample-tokens 0 --threads 2 --resume auto "$@")
[[ " $* " == *" --steps "* ]] || args+=(--steps 40)  # (a program of two phases gives --steps 20: 20 a phase)
[[ " $* " == *" --checkpoint-every "* ]] || args+=(--checkpoint-every 10)

# step -> loss, the last record of each step (steps redone after SIGKILL appear twice)
losses() { awk 'match($0, /"loss":[^,}]*/) { l = substr($0, RSTART + 7, RLENGTH - 7);
                  match($0, /"step":[0-9]+/); s = substr($0, RSTART + 7, RLENGTH - 7); last[s] = l }
                END { for (s in last) print s, last[s] }' "$1/metrics.jsonl" | sort -n; }

# Starts a run, waits until it has logged step $2, sends signal $3, waits for it to end.
interrupt() {
  local out=$1 at=$2 sig=$3
  "$trainer" "${args[@]}" --out "$out" > "$out.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do
    if [ -f "$out/metrics.jsonl" ] && grep -q "\"step\":$at," "$out/metrics.jsonl"; then break; fi
    sleep 0.05
  done
  kill "-$sig" "$pid" 2> /dev/null \
    || { echo "FAIL: the run ended before step $at's signal could reach it (steps too fast for this test: more work a step)"; exit 1; }
  local rc=0
  wait "$pid" || rc=$?
  echo "run $out: signal $sig after step $at, exit $rc"
  tail -n 2 "$out.log"
}

# KILN_RESUME_AT="<term step> <kill step>" moves the interruptions (default 15 and 25): into a later phase, say.
read -r term_at kill_at <<< "${KILN_RESUME_AT:-15 25}"
"$trainer" "${args[@]}" --out "$work/straight" > "$work/straight.log" 2>&1
interrupt "$work/term" "$term_at" TERM
"$trainer" "${args[@]}" --out "$work/term" > "$work/term.resumed.log" 2>&1
grep -q "resumed from" "$work/term.resumed.log" || { echo "FAIL: the SIGTERM run did not resume"; exit 1; }
interrupt "$work/kill" "$kill_at" KILL
"$trainer" "${args[@]}" --out "$work/kill" > "$work/kill.resumed.log" 2>&1
grep -q "resumed from" "$work/kill.resumed.log" || { echo "FAIL: the SIGKILL run did not resume"; exit 1; }

losses "$work/straight" > "$work/straight.losses"
steps=$(wc -l < "$work/straight.losses")
[ "$steps" -gt "$kill_at" ] || { echo "FAIL: the straight run logged $steps steps, fewer than the interruptions need"; exit 1; }
for run in term kill; do
  losses "$work/$run" > "$work/$run.losses"
  if ! diff -u "$work/straight.losses" "$work/$run.losses"; then
    echo "FAIL: the $run run's losses differ from the uninterrupted run's"
    exit 1
  fi
done
echo "PASS: SIGTERM (after step $term_at) and SIGKILL (after step $kill_at) runs resumed bitwise identical to the uninterrupted run ($steps steps)"
