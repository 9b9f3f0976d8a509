// kiln/model/components.hpp: the parts of a decoder-only transformer, as types that hold their settings.
//
//   Embedding<vocab<V>, hidden<H>, tied<bool>>      token table (V, H); tied: the LM head reuses it
//   RMSNorm<eps>                                    y = x / sqrt(mean(x^2) + eps) * w   (pre-norm, no bias)
//   Attention<heads<NH>, kv_heads<NKV>, head_dim<HD>, Positional, qk_norm<bool>>
//                                                   MHA (NKV == NH), GQA, MQA (NKV == 1); causal, intra-document
//   RoPE<theta> | NoPE | RNoPE<interval, theta>     positional policies (HF rotate_half convention)
//   SwiGLU<ffn<F>>                                  down(silu(gate(x)) * up(x))
#pragma once
#include "kiln/model/settings.hpp"

namespace kiln {

// ---- positional policies ---------------------------------------------------------------------
// Rotary embedding on every layer; dimension i is paired with i + head_dim/2 (HF rotate_half).
template <double Theta = 10000.0>
struct RoPE {
  using kind = tag::positional;
  static_assert(Theta > 0, "RoPE<theta>: theta must be positive");
  static constexpr double theta = Theta;
  static constexpr int interval = 0;  // no NoPE layers
  static constexpr bool any_rope = true;
  static constexpr bool uses_rope(int /*layer*/, int /*layers*/) { return true; }
  static constexpr const char* name = "RoPE";
};

// No positional encoding anywhere: causality alone tells positions apart.
struct NoPE {
  using kind = tag::positional;
  static constexpr double theta = 0;
  static constexpr int interval = 1;  // every layer is NoPE
  static constexpr bool any_rope = false;
  static constexpr bool uses_rope(int, int) { return false; }
  static constexpr const char* name = "NoPE";
};

// SmolLM3's mix: layer i (0-indexed) uses RoPE iff (i + 1) % interval != 0, so every interval-th layer is NoPE.
// HF writes it as no_rope_layers[i] = int((i+1) % interval != 0) (1 = uses RoPE); nanotron as no_rope_layer: interval.
template <int Interval, double Theta = 10000.0>
struct RNoPE {
  using kind = tag::positional;
  static_assert(Interval >= 2, "RNoPE<interval>: interval must be at least 2 (interval 1 would make every layer NoPE: use NoPE)");
  static_assert(Theta > 0, "RNoPE<interval, theta>: theta must be positive");
  static constexpr int interval = Interval;
  static constexpr double theta = Theta;
  static constexpr bool any_rope = true;
  static constexpr bool uses_rope(int layer, int /*layers*/) { return (layer + 1) % Interval != 0; }
  static constexpr const char* name = "RNoPE";
};


// ---- components ------------------------------------------------------------------------------
template <class... S>
struct Embedding {
  using kind = tag::embedding;
  using accepts = kinds<tag::vocab, tag::hidden, tag::tied>;
  static_assert(kinds_unique<S...>, "Embedding<...>: a setting is given twice");
  static_assert(has_setting<tag::vocab, S...>, "Embedding<...> needs vocab<V>");
  static_assert(has_setting<tag::hidden, S...>, "Embedding<...> needs hidden<H>");
  static constexpr int vocab = value_or<tag::vocab, 0, S...>;
  static constexpr int hidden = value_or<tag::hidden, 0, S...>;
  static constexpr bool tied = value_or<tag::tied, true, S...>;
  static_assert(vocab > 0, "Embedding: vocab must be positive");
  static_assert(hidden > 0, "Embedding: hidden must be positive");
};

template <double Eps = 1e-6>
struct RMSNorm {
  using kind = tag::norm;
  static_assert(Eps > 0, "RMSNorm<eps>: eps must be positive");
  static constexpr double eps = Eps;
};

template <class... S>
struct Attention {
  using kind = tag::attention;
  using accepts = kinds<tag::heads, tag::kv_heads, tag::head_dim, tag::positional, tag::qk_norm>;
  static_assert(kinds_unique<S...>, "Attention<...>: a setting is given twice");
  static_assert(has_setting<tag::heads, S...>, "Attention<...> needs heads<N>");
  static constexpr int heads = value_or<tag::heads, 0, S...>;
  static constexpr int kv_heads = value_or<tag::kv_heads, heads, S...>;   // default: MHA
  static constexpr int head_dim = value_or<tag::head_dim, 0, S...>;       // 0: hidden / heads (the decoder decides)
  static constexpr bool qk_norm = value_or<tag::qk_norm, false, S...>;
  using positional = find_t<tag::positional, RoPE<>, S...>;
  static_assert(heads > 0, "Attention: heads must be positive");
  static_assert(kv_heads > 0, "Attention: kv_heads must be positive");
  static_assert(heads % kv_heads == 0,
                "Attention: heads must be divisible by kv_heads (each KV head serves heads / kv_heads query heads)");
};

template <class... S>
struct SwiGLU {
  using kind = tag::mlp;
  using accepts = kinds<tag::ffn>;
  static_assert(kinds_unique<S...>, "SwiGLU<...>: a setting is given twice");
  static_assert(has_setting<tag::ffn, S...>, "SwiGLU<...> needs ffn<F> (the intermediate size)");
  static constexpr int ffn = value_or<tag::ffn, 0, S...>;
  static_assert(ffn > 0, "SwiGLU: ffn must be positive");
};

}  // namespace kiln
