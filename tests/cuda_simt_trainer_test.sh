#!/usr/bin/env bash
# tests/cuda_simt_trainer_test.sh <cpu trainer> <simt trainer> <work dir> [steps (3)] [trainer args...]: a recipe's
# trainer built with the CUDA backend (bf16 storage; here over the SIMT layer, so on the CPU) trains the same steps
# as the CPU trainer: the same data and initialisation, so its per-step losses stay within bf16's tolerance of the
# CPU's (1.5%), and its held-out loss is reported the same way. Preference steps also log the pairs' reward margin
# (beta x the log-ratios against the reference, small numbers that the weighted backward moves): within 15% of the
# CPU's, plus 0.001.
set -euo pipefail
cpu=$1
simt=$2
work=$3
steps=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
rm -rf "$work"
mkdir -p "$work"
args=(--steps 3 --log-every 1 --eval-every 0 --eval-batches 1 --sample-tokens 0 --threads 2 "$@")
# step, loss, reward margin ("-" where the step logs none)
losses() { awk 'match($0, /"loss":[^,}]*/) { l = substr($0, RSTART + 7, RLENGTH - 7);
                 match($0, /"step":[0-9]+/); s = substr($0, RSTART + 7, RLENGTH - 7);
                 m = "-"; if (match($0, /"rewards\/margins":[^,}]*/)) m = substr($0, RSTART + 18, RLENGTH - 18);
                 if (l != "null") print s, l, m }' "$1/metrics.jsonl" | sort -n; }
"$cpu" "${args[@]}" --out "$work/cpu" > "$work/cpu.log" 2>&1 || { cat "$work/cpu.log"; exit 1; }
"$simt" "${args[@]}" --out "$work/simt" > "$work/simt.log" 2>&1 || { cat "$work/simt.log"; exit 1; }
grep -q "backend cuda" "$work/simt.log" || { echo "FAIL: the SIMT trainer did not report the CUDA backend"; exit 1; }
losses "$work/cpu" > "$work/cpu.losses"
losses "$work/simt" > "$work/simt.losses"
paste "$work/cpu.losses" "$work/simt.losses"
[ "$(wc -l < "$work/cpu.losses")" -eq "$steps" ] || { echo "FAIL: expected $steps logged steps"; exit 1; }
awk 'function abs(x) { return x < 0 ? -x : x }
     { if ($1 != $4 || abs($5 - $2) > 0.015 * $2) { bad = 1; print "FAIL: step " $1 ": cpu " $2 ", cuda (simt) " $5 }
       if (($3 == "-") != ($6 == "-") || ($3 != "-" && abs($6 - $3) > 0.15 * abs($3) + 0.001)) {
         bad = 1; print "FAIL: step " $1 ": reward margin cpu " $3 ", cuda (simt) " $6 } }
     END { exit bad }' <(paste "$work/cpu.losses" "$work/simt.losses")
echo "cuda_simt_trainer: the CUDA backend's losses are within 1.5% of the CPU's (reward margins within 15% + 0.001)"
