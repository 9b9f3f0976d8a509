#!/usr/bin/env bash
# tests/zero_test.sh <demo trainer> <demo_zero1 trainer> <work dir> <mpirun>: ZeRO-1 on 2 CPU ranks (the demo with
# Layout<DP<rest>, ZeRO<1>>, tests/recipes/demo_zero1.hpp) against the demo's DP 2:
#   1. ZeRO-1 takes bitwise DP's steps over 20 steps: the gradients are reduce-scattered (two ranks: a + b, as in
#      the all-reduce), the norm adds the same chunk sums in the same order, AdamW is elementwise and the weights are
#      all-gathered as they are. Each rank's checkpoint shard is there, and no whole moments.
#   2. Checkpoints change layout: ZeRO-1's step 10 resumes under DP 2 and DP 2's under ZeRO-1, each bitwise on the
#      other's losses; ZeRO-1's resumes in one process (--grad-accum 2: the same global batches) within 1e-6
#      relative (tests/dp_test.sh says why one process is not bitwise DP).
set -euo pipefail
demo=$1
zero=$2
work=$3
mpirun=$4
rm -rf "$work"
mkdir -p "$work"
source "$(dirname "$0")/parallel_lib.sh"
mpi+=(-np 2)
base=(--log-every 5 --eval-every 0 --eval-batches 2 --sample-tokens 0 --threads 1 --data /usr/share/games/fortunes)
args=(--steps 20 "${base[@]}" --checkpoint-every 10 --resume none)

run "$work/dp" "${mpi[@]}" "$demo" "${args[@]}"
run "$work/zero" "${mpi[@]}" "$zero" "${args[@]}"
grep -q "layout Layout<DP<rest>, ZeRO<1>>: each rank holds 1/2 of the AdamW moments" "$work/zero.log" \
  || { cat "$work/zero.log"; echo "FAIL: the ZeRO-1 run did not say it shards the moments"; exit 1; }
losses "$work/dp" > "$work/dp.losses"
losses "$work/zero" > "$work/zero.losses"
[ "$(wc -l < "$work/zero.losses")" -eq 20 ] || { echo "FAIL: expected 20 logged steps"; exit 1; }
compare "$work/dp.losses" "$work/zero.losses" 0 "ZeRO-1 on 2 ranks vs DP 2 (bitwise)"
ck=$work/zero/checkpoints/step_00000010
for f in adam_m-shard-00000-of-00002 adam_m-shard-00001-of-00002 adam_v-shard-00000-of-00002 adam_v-shard-00001-of-00002 parameters; do
  [ -s "$ck/$f.safetensors" ] || { ls -l "$ck"; echo "FAIL: $ck/$f.safetensors is not there"; exit 1; }
done
[ ! -e "$ck/adam_m.safetensors" ] || { echo "FAIL: the ZeRO-1 checkpoint holds whole moments too"; exit 1; }
grep -q '"adam_m-shard-00001-of-00002.safetensors"' "$ck/manifest.json" || { echo "FAIL: rank 1's shard is not in the manifest"; exit 1; }

awk '$1 > 10' "$work/dp.losses" > "$work/dp.late"
run "$work/zero_to_dp" "${mpi[@]}" "$demo" --steps 20 "${base[@]}" --resume "$ck"
run "$work/dp_to_zero" "${mpi[@]}" "$zero" --steps 20 "${base[@]}" --resume "$work/dp/checkpoints/step_00000010"
run "$work/zero_to_one" "$demo" --steps 20 "${base[@]}" --grad-accum 2 --resume "$ck"
grep -q "the checkpoint is of recipe demo_zero1: the same model and phases, written under Layout<DP<rest>, ZeRO<1>> on 2" \
  "$work/zero_to_dp.log" || { cat "$work/zero_to_dp.log"; echo "FAIL: the resume did not say whose checkpoint it was"; exit 1; }
losses "$work/zero_to_dp" > "$work/zero_to_dp.losses"
losses "$work/dp_to_zero" > "$work/dp_to_zero.losses"
losses "$work/zero_to_one" > "$work/zero_to_one.losses"
compare "$work/dp.late" "$work/zero_to_dp.losses" 0 "ZeRO-1's checkpoint resumed under DP 2 (bitwise)"
compare "$work/dp.late" "$work/dp_to_zero.losses" 0 "DP 2's checkpoint resumed under ZeRO-1 (bitwise)"
compare "$work/dp.late" "$work/zero_to_one.losses" 1e-6 "ZeRO-1's checkpoint resumed in one process"
echo "PASS: ZeRO-1 over 2 MPI ranks"
