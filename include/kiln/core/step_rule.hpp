// kiln/core/step_rule.hpp: what a training step decides once its gradients are summed, written once for the host
// (the CPU backend, the trainer's loss guard) and the device (the CUDA backend decides on the GPU, so that a step is
// skipped without the host waiting for its loss):
//   loss     = loss_sum / targets (0 when the global batch has no target)
//   z        = (loss - mean) / sd over the window of accepted losses (0 until two are there); sd with n - 1
//   verdict  not_finite when loss or the gradient norm is NaN or Inf; spike when the window is full and
//            z > spike_zscore (> 0); else ok. ok: the loss joins the ring, the run of bad steps ends; else it grows
//   update   when ok: the update count grows by one and AdamW runs with the step's lr, betas, eps, weight decay,
//            the bias corrections of that count and the clip folded into the gradient scale (clip / norm when
//            clip > 0 and norm > clip, else 1)
// The sums use fma explicitly, so the host and the device get the same bits and take the same decisions.
#pragma once
#include <cmath>

#include "kiln/core/adamw_step.hpp"
#include "kiln/core/hd.hpp"

namespace kiln {

enum class Verdict : int { ok = 0, not_finite = 1, spike = 2 };

// The longest spike window a backend keeps (a device reserves the ring in its fixed memory plan).
inline constexpr int kMaxSpikeWindow = 4096;

// The guard's counters beside its ring of `window` accepted losses (ring[count % window] is the next to go).
struct GuardCounters {
  double spike_zscore;  // 0: spikes are not judged
  int window;
  int bad_in_a_row;
  long count;  // accepted losses seen
};

// What the host knows when it starts a step.
struct StepArgs {
  double lr, beta1, beta2, eps, weight_decay, clip;
  double targets;  // the global batch's targets: the loss's divisor
};

// What the step decided, for the host to read (one step later on a device).
struct StepRecord {
  double loss, grad_norm, zscore, lr;
  long updates;  // AdamW updates done after this step
  int verdict;   // Verdict
  int bad_in_a_row;
};

KILN_HD inline bool is_finite(double x) { return x - x == 0.0; }  // false for NaN and both infinities

KILN_HD inline double guard_zscore(const double* ring, const GuardCounters& g, double loss) {
  const long n = g.count < long(g.window) ? g.count : long(g.window);
  if (n < 2) return 0;
  double mean = 0, var = 0;
  for (long i = 0; i < n; ++i) mean += ring[i];
  mean /= double(n);
  for (long i = 0; i < n; ++i) var = ::fma(ring[i] - mean, ring[i] - mean, var);
  const double sd = ::sqrt(var / double(n - 1));
  return sd > 0 ? (loss - mean) / sd : 0;
}

// Judges a step and records it in the ring and counters.
KILN_HD inline Verdict guard_judge(double* ring, GuardCounters& g, double loss, double norm) {
  Verdict v = Verdict::ok;
  if (!is_finite(loss) || !is_finite(norm)) v = Verdict::not_finite;
  else if (g.spike_zscore > 0 && g.count >= long(g.window) && guard_zscore(ring, g, loss) > g.spike_zscore)
    v = Verdict::spike;
  if (v == Verdict::ok) {
    ring[g.count % long(g.window)] = loss;
    ++g.count;
    g.bad_in_a_row = 0;
  } else {
    ++g.bad_in_a_row;
  }
  return v;
}

// The whole decision: the record, and in *update the AdamW step to run when the verdict is ok.
KILN_HD inline StepRecord decide_step(const StepArgs& a, double loss_sum, double norm, double* ring, GuardCounters& g,
                                      long& updates, AdamWStep* update) {
  StepRecord r{};
  r.loss = a.targets > 0 ? loss_sum / a.targets : 0.0;
  r.grad_norm = norm;
  r.zscore = guard_zscore(ring, g, r.loss);
  r.lr = a.lr;
  const Verdict v = guard_judge(ring, g, r.loss, norm);
  if (v == Verdict::ok) {
    ++updates;
    const double scale = a.clip > 0 && norm > a.clip ? a.clip / norm : 1.0;
    *update = AdamWStep{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, updates, scale};
  }
  r.verdict = int(v);
  r.updates = updates;
  r.bad_in_a_row = g.bad_in_a_row;
  return r;
}

}  // namespace kiln
