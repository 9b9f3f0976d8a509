#!/usr/bin/env bash
# tests/preference_dp_test.sh <train_post_tiny> <work dir> <mpirun>: a preference phase (APO-zero with TRL's
# rpo_alpha) under data parallelism: DP 2 (a micro-batch of pairs on each rank) takes the steps of one process with
# --grad-accum 2 (both --global-batch 2): the losses within 1e-6 relative (the sums' order differs: dp_test.sh), and
# the logged statistics (reward margin, accuracy, nll_loss) are the global batch's on both, not rank 0's pairs alone.
set -euo pipefail
trainer=$1
work=$2
mpirun=$3
rm -rf "$work"
mkdir -p "$work"
source "$(dirname "$0")/parallel_lib.sh"
args=(--steps 4 --log-every 1 --eval-every 0 --eval-batches 2 --sample-tokens 0 --threads 1 --resume none
      --global-batch 2 --rpo-alpha 1 --cache "$work/cache")
run "$work/one" "$trainer" "${args[@]}"
run "$work/dp" "${mpi[@]}" -np 2 "$trainer" "${args[@]}"
grep -q "data parallel over 2 ranks" "$work/dp.log" || { echo "FAIL: the DP run did not say it ran 2 ranks"; exit 1; }
losses "$work/one" > "$work/one.losses"
losses "$work/dp" > "$work/dp.losses"
compare "$work/one.losses" "$work/dp.losses" 1e-6 "DP 2 against one process (every phase)"
# the APO steps' statistics: step, margin, accuracy, nll_loss
stats() { awk '/"phase":"apo"/ && /"rewards\/margins"/ && !/val_/ {
                 match($0, /"step":[0-9]+/); s = substr($0, RSTART + 7, RLENGTH - 7)
                 match($0, /"rewards\/margins":[^,}]*/); m = substr($0, RSTART + 18, RLENGTH - 18)
                 match($0, /"rewards\/accuracies":[^,}]*/); a = substr($0, RSTART + 21, RLENGTH - 21)
                 match($0, /"nll_loss":[^,}]*/); n = substr($0, RSTART + 11, RLENGTH - 11)
                 print s, m, a, n }' "$1/metrics.jsonl" | sort -n; }
stats "$work/one" > "$work/one.stats"
stats "$work/dp" > "$work/dp.stats"
paste "$work/one.stats" "$work/dp.stats"
[ "$(wc -l < "$work/one.stats")" -eq 4 ] || { echo "FAIL: expected 4 APO steps with statistics"; exit 1; }
awk 'function abs(x) { return x < 0 ? -x : x }
     { if ($1 != $5 || abs($2 - $6) > 1e-4 || $3 != $7 || abs($4 - $8) > 1e-6 * $4) { bad = 1; print "FAIL: step " $1 } }
     END { exit bad }' <(paste "$work/one.stats" "$work/dp.stats")
echo "PASS: a preference phase under DP 2 takes one process's steps, and logs the global batch's statistics"
