// kiln/core/rope_scaling.hpp: RoPE's frequencies, plain and YaRN-scaled (transformers' rope_type "yarn",
// modeling_rope_utils._compute_yarn_parameters; the YaRN paper, arXiv 2309.00071), shared by the model DSL (which
// names a policy's scaling), the kernels' tables (which compute cos / sin from them) and the HF config writer.
//
// For head_dim d, base theta, i = 0 .. d/2 - 1:
//   plain:  inv_freq_i = theta^(-2i/d)
//   YaRN (factor s over the original context L, beta_fast, beta_slow):
//     extrapolation e_i = theta^(-2i/d), interpolation e_i / s
//     correction dim of b rotations: c(b) = d ln(L / (2 pi b)) / (2 ln theta)
//     low = max(floor(c(beta_fast)), 0), high = min(ceil(c(beta_slow)), d - 1)   (truncate; else unrounded)
//     ramp_i = clamp((i - low) / (high - low), 0, 1)   (high += 0.001 when low == high)
//     inv_freq_i = e_i / s * ramp_i + e_i * (1 - ramp_i)      (low dims extrapolate, high dims interpolate)
//     attention factor m = 0.1 ln s + 1 unless given; cos and sin are multiplied by it, so attention logits
//     scale by m^2
// transformers computes these in float32; Kiln in double (its tables then round once): they agree to float32's
// precision (tests/fixtures/yarn.json, made by tests/reference/make_yarn_fixture.py).
#pragma once
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

namespace kiln {

struct RopeScaling {
  bool yarn = false;  // false: plain RoPE (the fields below are unused)
  double factor = 1.0;
  int original_max = 0;  // the context the model was trained at (HF original_max_position_embeddings)
  double beta_fast = 32.0, beta_slow = 1.0;
  double attention_factor = 0.0;  // 0: 0.1 ln(factor) + 1
  bool truncate = true;
  constexpr bool operator==(const RopeScaling&) const = default;

  double attention() const {
    if (!yarn) return 1.0;
    if (attention_factor > 0) return attention_factor;
    return factor <= 1 ? 1.0 : 0.1 * std::log(factor) + 1.0;
  }
};

// The inverse frequencies of head_dim d (d / 2 of them) for base theta under `s`.
inline std::vector<double> rope_inv_freq(int d, double theta, const RopeScaling& s) {
  std::vector<double> f(size_t(d / 2));
  for (int i = 0; i < d / 2; ++i) f[size_t(i)] = std::pow(theta, -2.0 * i / d);
  if (!s.yarn) return f;
  const auto correction_dim = [&](double rotations) {
    return d * std::log(double(s.original_max) / (rotations * 2 * std::numbers::pi)) / (2 * std::log(theta));
  };
  double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
  if (s.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, double(d - 1));
  if (low == high) high += 0.001;  // no singularity
  for (int i = 0; i < d / 2; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    f[size_t(i)] = f[size_t(i)] / s.factor * ramp + f[size_t(i)] * (1 - ramp);
  }
  return f;
}

}  // namespace kiln
