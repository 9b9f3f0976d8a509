// kiln/plan/flops.hpp: floating-point operations per token, the numerator of MFU.
//   matmul forward  = 2 * (L * (H*QKV + Q*H + 3*H*F) + V*H)     (every weight used once per token; the LM head)
//   attention fwd   = L * 2 * Q * (T + 1)                         (q.k and p.v over the mean causal context (T+1)/2)
//   training        = 3 * forward                                 (backward costs two forwards)
// Document masking shortens the context; the figure is the causal upper bound, as nanotron and llm.c report.
#pragma once
#include "kiln/model/model.hpp"

namespace kiln::plan {

template <DecoderModel M, class S>
struct Flops {
  static constexpr double matmul_forward_per_token =
      2.0 * (double(M::layers) * (double(M::hidden) * M::qkv_dim + double(M::q_dim) * M::hidden +
                                  3.0 * M::hidden * M::ffn) +
             double(M::vocab) * M::hidden);
  static constexpr double attention_forward_per_token = double(M::layers) * 2.0 * M::q_dim * (S::seq_len + 1.0);
  static constexpr double forward_per_token = matmul_forward_per_token + attention_forward_per_token;
  static constexpr double train_per_token = 3.0 * forward_per_token;
};

}  // namespace kiln::plan
