#!/usr/bin/env bash
# tests/tp_test.sh <demo trainer> <demo_tp2 trainer> <work dir> <mpirun>: tensor parallelism on 2 CPU ranks (the
# demo with Layout<DP<rest>, TP<2>>, tests/recipes/demo_tp2.hpp): each rank holds half of every matrix, the
# embedding and the LM head (Megatron's cut), and the group sums after o_proj and down_proj, the column-parallel
# input gradients, the vocabulary-parallel embedding and the loss's statistics.
#   1. TP 2 reproduces one process over 20 steps within 1e-5 relative: the same initial weights (a rank's slices of
#      one process's), the same batches; only fp32 summation orders differ (o_proj's and down_proj's outputs summed
#      over two halves, the softmax's statistics over two vocabulary halves).
#   2. A checkpoint of TP 2 (the full model's tensors, gathered) resumes in one process, and one of one process
#      under TP 2, each continuing the other's losses within 1e-5.
#   3. TP 2 with --resume of DP 2 x TP 2 is not tested here (4 ranks on this machine's 2 cores): plan.ranks_tp2
#      prints that layout.
set -euo pipefail
demo=$1
tp=$2
work=$3
mpirun=$4
rm -rf "$work"
mkdir -p "$work"
source "$(dirname "$0")/parallel_lib.sh"
mpi+=(-np 2)
base=(--log-every 5 --eval-every 0 --eval-batches 2 --sample-tokens 0 --threads 1)
args=(--steps 20 "${base[@]}" --checkpoint-every 10 --resume none)

run "$work/one" "$demo" "${args[@]}"
run "$work/tp" "${mpi[@]}" "$tp" "${args[@]}"
grep -q "layout Layout<DP<rest>, TP<2>>: tensor parallel over 2 ranks" "$work/tp.log" \
  || { cat "$work/tp.log"; echo "FAIL: the TP run did not say it ran TP 2"; exit 1; }
losses "$work/one" > "$work/one.losses"
losses "$work/tp" > "$work/tp.losses"
[ "$(wc -l < "$work/tp.losses")" -eq 20 ] || { echo "FAIL: expected 20 logged steps"; exit 1; }
compare "$work/one.losses" "$work/tp.losses" 1e-5 "TP 2 vs one process"
heldout() { grep -o "held-out loss [0-9.]* nats" "$1"; }
echo "held-out: one process '$(heldout "$work/one.log")', TP 2 '$(heldout "$work/tp.log")'"

run "$work/tp_to_one" "$demo" --steps 20 "${base[@]}" --resume "$work/tp/checkpoints/step_00000010"
run "$work/one_to_tp" "${mpi[@]}" "$tp" --steps 20 "${base[@]}" --resume "$work/one/checkpoints/step_00000010"
losses "$work/tp_to_one" > "$work/tp_to_one.losses"
losses "$work/one_to_tp" > "$work/one_to_tp.losses"
awk '$1 > 10' "$work/one.losses" > "$work/one.late"
compare "$work/one.late" "$work/tp_to_one.losses" 1e-5 "TP 2's checkpoint resumed in one process"
compare "$work/one.late" "$work/one_to_tp.losses" 1e-5 "one process's checkpoint resumed under TP 2"
echo "PASS: tensor parallelism over 2 MPI ranks"
