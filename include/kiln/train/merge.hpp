// kiln/train/merge.hpp: model merging over flat parameter buffers of one plan, as SmolLM3's post-training ended (a
// uniform soup of APO checkpoints, then 0.9 of it with 0.1 of the mid-training checkpoint; FACTS.md).
//   soup             theta = (1/n) sum_i theta_i                       (the "model soup", uniform)
//   linear           theta = sum_i w_i theta_i / sum_i w_i             (mergekit's linear, normalised)
//   task arithmetic  theta = base + sum_i w_i (theta_i - base)         (Ilharco et al.'s task vectors; w_i unnormalised)
// Each value is computed in double from the fp32 inputs, in input order, and rounded once to fp32: the same inputs
// give the same bits, and a merge of one model with weight 1 is that model.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"

namespace kiln {

enum class MergeMethod { soup, linear, task_arithmetic };
inline const char* merge_method_name(MergeMethod m) {
  return m == MergeMethod::soup ? "soup" : m == MergeMethod::linear ? "linear" : "task-arithmetic";
}

// inputs: n buffers of `floats` each; weights: n (soup: ignored); base: task arithmetic's (else nullptr).
inline std::vector<float> merge_params(MergeMethod m, const std::vector<const float*>& inputs,
                                       const std::vector<double>& weights, const float* base, size_t floats) {
  const size_t n = inputs.size();
  KILN_CHECK(n >= 1, "merge: no models to merge");
  KILN_CHECK(m == MergeMethod::soup || weights.size() == n, "merge: ", n, " models but ", weights.size(), " weights");
  KILN_CHECK((m == MergeMethod::task_arithmetic) == (base != nullptr),
             m == MergeMethod::task_arithmetic ? "merge: task arithmetic needs a base model (--base)"
                                               : "merge: a base model is for task arithmetic only");
  std::vector<double> w(n, 1.0 / double(n));
  if (m != MergeMethod::soup) {
    double sum = 0;
    for (double x : weights) {
      KILN_CHECK(std::isfinite(x), "merge: a weight is not a finite number");
      sum += x;
    }
    if (m == MergeMethod::linear) {
      KILN_CHECK(sum > 0, "merge: linear weights must sum to a positive number, got ", sum);
      for (size_t i = 0; i < n; ++i) w[i] = weights[i] / sum;
    } else {
      w = weights;
    }
  }
  std::vector<float> out(floats);
  for (size_t k = 0; k < floats; ++k) {
    double v = base ? double(base[k]) : 0.0;
    for (size_t i = 0; i < n; ++i) v += w[i] * (double(inputs[i][k]) - (base ? double(base[k]) : 0.0));
    out[k] = float(v);
  }
  return out;
}

}  // namespace kiln
