// kernels/step.cuh: a training step's end on the device, so that the host never waits for it:
//   loss sum   acc += sum_r loss[r] over a micro-batch's R per-token losses: one block, each thread's strided
//              slice in double, then the block's fixed-order tree (the same bits every run)
//   decision   one thread: loss = loss_sum / targets, the loss guard's verdict on its window (ring and counters in
//              device memory), the update count and the AdamW constants of core/step_rule.hpp's decide_step, the
//              record the host reads a step later; the constants' `apply` is 0 when the step is skipped, and the
//              AdamW kernel that follows (kernels/adamw.cuh) then changes nothing
// Everything a step needs from the host is DeviceStep::args, uploaded before the step's graph replays.
#pragma once
#include <cstddef>

#include "kernels/adamw.cuh"
#include "kernels/device.hpp"
#include "kiln/core/step_rule.hpp"

namespace kiln::kernels::cuda {

// The step's device-side state (one block of device memory, its size fixed by plan::kStepBlockBytes).
struct DeviceStep {
  StepArgs args;         // the host's, per step
  GuardCounters guard;   // the loss guard's counters
  long updates;          // AdamW updates done
  double loss_sum;       // the micro-batches' summed losses (zeroed at the step's start)
  float norm_scale[2];   // the gradient norm (grad_norm writes it; the clip is decide_step's)
  AdamWConstants adamw;  // the update decide_step chose (apply = 0: none)
  StepRecord record;     // what the host reads
  double ring[kMaxSpikeWindow];  // the guard's window of accepted losses
};

namespace detail {

inline constexpr unsigned kLossSumThreads = 256;

template <class Acc>  // double: a template, so that this header defines no non-inline kernel
KILN_GLOBAL void sum_losses_kernel(const float* loss, int n, Acc* acc) {
  Acc s = 0;
  for (int r = int(threadIdx.x); r < n; r += int(kLossSumThreads)) s += Acc(loss[r]);
  s = dev::block_sum(s);
  if (threadIdx.x == 0) *acc += s;
}

template <class Step>  // DeviceStep
KILN_GLOBAL void decide_kernel(Step* d) {
  if (threadIdx.x != 0) return;
  AdamWStep u{};
  d->record = decide_step(d->args, d->loss_sum, double(d->norm_scale[0]), d->ring, d->guard, d->updates, &u);
  if (d->record.verdict == int(Verdict::ok)) {
    d->adamw = adamw_constants(u);
  } else {
    d->adamw = AdamWConstants{};
    d->adamw.apply = 0;
  }
}

}  // namespace detail

// *acc += the sum of loss[0, n) (device memory).
inline void sum_losses(const float* loss, int n, double* acc, gpu::Stream stream) {
  auto* kernel = &detail::sum_losses_kernel<double>;
  KILN_LAUNCH(kernel, dim3(1), dim3(detail::kLossSumThreads), 0, stream)(loss, n, acc);
}

// The decision of a step whose loss_sum and norm_scale[0] are in d.
inline void decide(DeviceStep* d, gpu::Stream stream) {
  auto* kernel = &detail::decide_kernel<DeviceStep>;
  KILN_LAUNCH(kernel, dim3(1), dim3(32), 0, stream)(d);
}

}  // namespace kiln::kernels::cuda
