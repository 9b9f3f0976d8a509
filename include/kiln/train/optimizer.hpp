// kiln/train/optimizer.hpp: AdamW over the plan's flat buffers, with per-tensor weight-decay choice by name,
// and global-norm gradient clipping folded into the update (no extra pass over the gradients).
#pragma once
#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "kernels/adamw.hpp"
#include "kiln/core/error.hpp"
#include "kiln/core/memory.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/plan/params.hpp"
#include "kiln/train/config.hpp"

namespace kiln {

struct StepStats {
  double grad_norm = 0;  // before clipping
  double lr = 0;
};

template <DecoderModel M>
class AdamW {
 public:
  using Params = plan::ParamPlan<M>;

  explicit AdamW(const TrainConfig& c) : m_(Params::table.total), v_(Params::table.total) {
    std::vector<std::regex> patterns;
    for (const auto& p : c.no_decay) {
      try {
        patterns.emplace_back(p);
      } catch (const std::regex_error& e) {
        KILN_FAIL("--no-decay pattern '", p, "' is not a valid regular expression: ", e.what());
      }
    }
    for (const auto& e : Params::table.entries) {
      std::string name(e.name.view());
      bool nd = false;
      for (const auto& re : patterns) nd = nd || std::regex_search(name, re);
      decay_.push_back(!nd);
    }
  }

  // Global L2 norm of the gradients (before clipping), deterministic.
  static double grad_norm(const float* grads) { return std::sqrt(kernels::sum_squares(grads, Params::table.total)); }

  // One update with the mean gradient over the global batch; the clip (c.clip <= 0: off) is folded into the update.
  StepStats step(float* params, const float* grads, const TrainConfig& c, double lr, double norm) {
    KILN_CHECK(std::isfinite(norm), "AdamW: the gradient norm is not finite at update ", t_ + 1,
               " (the trainer's guard skips such steps; lower --lr or check the data)");
    ++t_;
    const double scale = (c.clip > 0 && norm > c.clip) ? c.clip / norm : 1.0;
    for (int i = 0; i < Params::count; ++i) {
      const auto& e = Params::table.entries[i];
      kernels::adamw_update(params + e.offset, grads + e.offset, m_.data() + e.offset, v_.data() + e.offset, e.count(), lr,
                            c.beta1, c.beta2, c.adam_eps, decay_[i] ? c.weight_decay : 0.0, t_, scale);
    }
    return {norm, lr};
  }
  StepStats step(float* params, const float* grads, const TrainConfig& c, double lr) {
    return step(params, grads, c, lr, grad_norm(grads));
  }

  // State for checkpoints: the moments (same layout as the parameters) and the update count.
  float* m() { return m_.data(); }
  float* v() { return v_.data(); }
  const float* m() const { return m_.data(); }
  const float* v() const { return v_.data(); }
  long& updates() { return t_; }

  bool decays(int i) const { return decay_[i]; }

 private:
  Buffer<float> m_, v_;  // first and second moments, same layout as the parameters
  std::vector<bool> decay_;
  long t_ = 0;
};

// Seeded initialisation: matrices and embeddings ~ N(0, std^2), norm weights 1. A value depends only on
// (seed, tensor index, element index), so it is the same for any thread count.
template <DecoderModel M>
void init_parameters(float* params, double std, uint64_t seed) {
  using Params = plan::ParamPlan<M>;
  for (int i = 0; i < Params::count; ++i) {
    const auto& e = Params::table.entries[i];
    float* p = params + e.offset;
    const long n = long(e.count());
    if (e.role == plan::Role::norm) {
      for (long j = 0; j < n; ++j) p[j] = 1.0f;
      continue;
    }
#pragma omp parallel for schedule(static)
    for (long j = 0; j < n; ++j) p[j] = float(std * normal01(seed, uint64_t(i), uint64_t(j)));
  }
}

}  // namespace kiln
