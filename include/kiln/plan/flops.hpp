// kiln/plan/flops.hpp: floating-point operations per token, the numerator of MFU.
//   matmul forward  = 2 * (L * (H*QKV + Q*H + 3*H*F) + V*H)     (every weight used once per token; the LM head)
//   attention fwd   = L * 2 * Q * (T + 1)                         (q.k and p.v over the mean causal context (T+1)/2)
//   training        = 3 * forward                                 (backward costs two forwards)
// Document masking shortens the context; the per-token figure is the causal upper bound, as nanotron and llm.c
// report. The trainer counts the work it really did: train_flops(tokens, context) with the batch's summed context.
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
  // Attention FLOPs of one query with `context` visible keys: q.k and p.v, 2 * Q each, per layer.
  static constexpr double attention_forward_per_context = double(M::layers) * 4.0 * M::q_dim;
  // Training FLOPs of `tokens` tokens whose visible contexts sum to `context` (forward + backward).
  static constexpr double train_flops(double tokens, double context) {
    return 3.0 * (matmul_forward_per_token * tokens + attention_forward_per_context * context);
  }
};

}  // namespace kiln::plan
