// kiln/train/optimizer.hpp: AdamW's bookkeeping (its math is kernels/adamw.hpp, run by a backend): which parameters
// decay, as sorted ranges of the flat buffer computed once from the parameter table, and the step's hyper-parameters
// with the global-norm clip folded into the gradient scale (no extra pass over the gradients).
#pragma once
#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "kiln/core/adamw_step.hpp"
#include "kiln/core/error.hpp"
#include "kiln/plan/params.hpp"
#include "kiln/train/config.hpp"

namespace kiln {

// Sorted ranges [begin, end) covering the flat buffer, each with one weight-decay choice: a tensor whose HF name
// matches one of `no_decay` (ECMAScript regexes, searched) gets none; neighbours with the same choice merge, and
// padding joins the range before it.
template <DecoderModel M>
std::vector<plan::DecayRange> decay_ranges(const std::vector<std::string>& no_decay) {
  using Params = plan::ParamPlan<M>;
  std::vector<std::regex> patterns;
  for (const auto& p : no_decay) {
    try {
      patterns.emplace_back(p);
    } catch (const std::regex_error& e) {
      KILN_FAIL("--no-decay pattern '", p, "' is not a valid regular expression: ", e.what());
    }
  }
  std::vector<plan::DecayRange> out;
  for (const auto& e : Params::table.entries) {
    const std::string name(e.name.view());
    bool nd = false;
    for (const auto& re : patterns) nd = nd || std::regex_search(name, re);
    if (!out.empty() && out.back().decay == !nd) {
      out.back().end = e.offset + e.count();
      continue;
    }
    if (!out.empty()) out.back().end = e.offset;  // padding before this tensor joins the previous range
    out.push_back({out.empty() ? 0 : e.offset, e.offset + e.count(), !nd});
  }
  out.back().end = Params::table.total;
  return out;
}

// The step's AdamW arguments: a.step is the 1-based update count; the clip (c.clip <= 0: off) becomes the scale.
inline AdamWStep adamw_step(const TrainConfig& c, double lr, double norm, long update) {
  KILN_CHECK(std::isfinite(norm), "AdamW: the gradient norm is not finite at update ", update,
             " (the trainer's guard skips such steps; lower --lr or check the data)");
  const double scale = (c.clip > 0 && norm > c.clip) ? c.clip / norm : 1.0;
  return {lr, c.beta1, c.beta2, c.adam_eps, c.weight_decay, update, scale};
}

}  // namespace kiln
