#!/usr/bin/env bash
# tests/cuda_parallel_simt_test.sh <simt demo trainer> <simt demo_tp2 trainer> <simt demo_zero1 trainer> <work dir>
# <mpirun>: the CUDA backend's data parallelism, ZeRO-1 and tensor parallelism, built by g++ over the SIMT layer (its kernels on the CPU; its device
# collectives through the host communicator, parallel::HostDeviceCollectives, where a GPU build has NCCL), on 2
# MPI ranks. The trainers are the GPU trainers' code: the groups split off with their own device collectives, the
# sums on the state's stream, the norm, the gathered checkpoints.
#   1. DP 2 against one process over 4 steps: the same global batch; the step's gradients are summed over the ranks
#      in fp32 where one process adds its micro-batches in turn, so the losses agree within 1e-4 (bf16 activations
#      are the same: each micro-batch runs whole on one rank).
#   2. TP 2 against one process over 4 steps: each rank holds half of every matrix, the embedding and the LM head;
#      the sums of o_proj's and down_proj's halves are taken in fp32 and rounded to bf16 once, where one process
#      rounds its full product: within bf16's tolerance (2e-2, the CPU-vs-CUDA test's 1.5% and a margin).
#   3. TP 2's checkpoint (the full model's tensors, gathered) resumes in one process and continues one process's
#      own run from the same checkpoint of one process within bf16's tolerance.
#   4. ZeRO-1 on 2 ranks against DP 2, bitwise: the reduce-scatter of two ranks adds as the all-reduce does, the
#      norm's chunk sums are each one rank's, the update of a shard is the update of its floats.
#   5. ZeRO-1's checkpoint (each rank's moments in a shard file) resumes in one process, continuing DP 2's losses
#      within 1e-4.
set -euo pipefail
simt=$1
tp=$2
zero=$3
work=$4
mpirun=$5
rm -rf "$work"
mkdir -p "$work"
source "$(dirname "$0")/parallel_lib.sh"
mpi+=(-np 2)
base=(--log-every 1 --eval-every 0 --eval-batches 1 --sample-tokens 0 --threads 1)
args=(--steps 4 "${base[@]}" --checkpoint-every 2 --resume none --grad-accum 2)

run "$work/one" "$simt" "${args[@]}"
grep -q "backend cuda" "$work/one.log" || { cat "$work/one.log"; echo "FAIL: the SIMT trainer did not report the CUDA backend"; exit 1; }
run "$work/dp" "${mpi[@]}" "$simt" --steps 4 "${base[@]}" --checkpoint-every 2 --resume none --global-batch 2
run "$work/tp" "${mpi[@]}" "$tp" "${args[@]}"
grep -q "tensor parallel over 2 ranks" "$work/tp.log" \
  || { cat "$work/tp.log"; echo "FAIL: the TP run did not say it ran TP 2"; exit 1; }
losses "$work/one" > "$work/one.losses"
losses "$work/dp" > "$work/dp.losses"
losses "$work/tp" > "$work/tp.losses"
[ "$(wc -l < "$work/tp.losses")" -eq 4 ] || { echo "FAIL: expected 4 logged steps"; exit 1; }
compare "$work/one.losses" "$work/dp.losses" 1e-4 "CUDA backend (SIMT): DP 2 vs one process"
compare "$work/one.losses" "$work/tp.losses" 2e-2 "CUDA backend (SIMT): TP 2 vs one process"

run "$work/tp_to_one" "$simt" --steps 4 "${base[@]}" --grad-accum 2 --resume "$work/tp/checkpoints/step_00000002"
losses "$work/tp_to_one" > "$work/tp_to_one.losses"
awk '$1 > 2' "$work/one.losses" > "$work/one.late"
compare "$work/one.late" "$work/tp_to_one.losses" 2e-2 "CUDA backend (SIMT): TP 2's checkpoint resumed in one process"
run "$work/zero" "${mpi[@]}" "$zero" --steps 4 "${base[@]}" --checkpoint-every 2 --resume none --global-batch 2
grep -q "each rank holds 1/2 of the AdamW moments" "$work/zero.log" || { cat "$work/zero.log"; echo "FAIL: the ZeRO-1 run did not say it sharded"; exit 1; }
for f in adam_m-shard-00000-of-00002 adam_v-shard-00001-of-00002; do
  [ -s "$work/zero/checkpoints/step_00000002/$f.safetensors" ] || { echo "FAIL: the ZeRO-1 checkpoint has no $f"; exit 1; }
done
losses "$work/zero" > "$work/zero.losses"
compare "$work/dp.losses" "$work/zero.losses" 0 "CUDA backend (SIMT): ZeRO-1 on 2 vs DP 2"
run "$work/zero_to_one" "$simt" --steps 4 "${base[@]}" --grad-accum 2 --resume "$work/zero/checkpoints/step_00000002"
losses "$work/zero_to_one" > "$work/zero_to_one.losses"
awk '$1 > 2' "$work/dp.losses" > "$work/dp.late"
compare "$work/dp.late" "$work/zero_to_one.losses" 1e-4 "CUDA backend (SIMT): ZeRO-1's checkpoint resumed in one process"
echo "PASS: the CUDA backend's data parallelism, ZeRO-1 and tensor parallelism over 2 MPI ranks (SIMT build)"
