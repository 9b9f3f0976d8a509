// kiln/train/optimizer.hpp: AdamW's bookkeeping (its math is kernels/adamw.hpp, run by a backend): which parameters
// decay, as sorted ranges of the flat buffer computed once from the parameter table, and the step's hyper-parameters
// with the global-norm clip folded into the gradient scale (no extra pass over the gradients).
#pragma once
#include <cmath>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kiln/core/adamw_step.hpp"
#include "kiln/core/error.hpp"
#include "kiln/plan/params.hpp"
#include "kiln/train/config.hpp"

namespace kiln {

// Sorted ranges [begin, end) covering the flat buffer, each with one weight-decay choice: a tensor whose HF name
// matches one of `no_decay` (ECMAScript regexes, searched) gets none; neighbours with the same choice merge, and
// padding joins the range before it. Compiled once (src/train/optimizer.cpp): the regex engine is not instantiated
// in every trainer.
std::vector<plan::DecayRange> decay_ranges(std::span<const plan::ParamEntry> table, size_t total,
                                           const std::vector<std::string>& no_decay);
template <DecoderModel M>
std::vector<plan::DecayRange> decay_ranges(const std::vector<std::string>& no_decay) {
  return decay_ranges(plan::ParamPlan<M>::table.entries, plan::ParamPlan<M>::table.total, no_decay);
}

// Whether a parameter name gets weight decay under `no_decay` (the same patterns; for printing a plan).
std::function<bool(const std::string& name)> decays(const std::vector<std::string>& no_decay);

// The step's AdamW arguments: a.step is the 1-based update count; the clip (c.clip <= 0: off) becomes the scale.
inline AdamWStep adamw_step(const TrainConfig& c, double lr, double norm, long update) {
  KILN_CHECK(std::isfinite(norm), "AdamW: the gradient norm is not finite at update ", update,
             " (the trainer's guard skips such steps; lower --lr or check the data)");
  const double scale = (c.clip > 0 && norm > c.clip) ? c.clip / norm : 1.0;
  return {lr, c.beta1, c.beta2, c.adam_eps, c.weight_decay, update, scale};
}

}  // namespace kiln
