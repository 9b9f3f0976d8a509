// kiln/model/components.hpp: the parts of a decoder-only transformer, as types that hold their settings.
//
//   Embedding<vocab<V>, hidden<H>, tied<bool>>      token table (V, H); tied: the LM head reuses it
//   RMSNorm<eps>                                    y = x / sqrt(mean(x^2) + eps) * w   (pre-norm, no bias)
//   Attention<heads<NH>, kv_heads<NKV>, head_dim<HD>, Positional, qk_norm<bool>>
//                                                   MHA (NKV == NH), GQA, MQA (NKV == 1); causal, intra-document
//   RoPE<theta> | NoPE | RNoPE<interval, theta>     positional policies (HF rotate_half convention)
//   YaRN<RoPE or RNoPE, factor, original_max, ...>   its RoPE layers' frequencies scaled for a longer context
//   SwiGLU<ffn<F>>                                  down(silu(gate(x)) * up(x))
#pragma once
#include "kiln/core/rope_scaling.hpp"
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
  static constexpr RopeScaling scaling{};  // plain frequencies
};

// No positional encoding anywhere: causality alone tells positions apart.
struct NoPE {
  using kind = tag::positional;
  static constexpr double theta = 0;
  static constexpr int interval = 1;  // every layer is NoPE
  static constexpr bool any_rope = false;
  static constexpr bool uses_rope(int, int) { return false; }
  static constexpr const char* name = "NoPE";
  static constexpr RopeScaling scaling{};
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
  static constexpr RopeScaling scaling{};
};

// YaRN (transformers' rope_scaling {"rope_type": "yarn", ...}; kiln/core/rope_scaling.hpp has the math): Base's
// RoPE layers (a RoPE or RNoPE policy: its theta and NoPE layers stay) with frequencies blended between
// extrapolation (the fast dimensions, beta_fast rotations or more over OriginalMax positions) and interpolation by
// Factor (the slow ones, beta_slow rotations or fewer), and cos / sin scaled by the attention factor (0: 0.1
// ln(Factor) + 1). SmolLM3 reaches 128k at inference as YaRN<RNoPE<4, 5'000'000.0>, 2.0, 65536>. Truncate false:
// the correction range is not rounded to whole dimensions (transformers' `truncate`). The parameter table is
// Base's, so a phase or an export may switch it on.
template <class Base, double Factor, int OriginalMax, double BetaFast = 32.0, double BetaSlow = 1.0,
          double AttentionFactor = 0.0, bool Truncate = true>
struct YaRN {
  using kind = tag::positional;
  static_assert(std::is_same_v<typename Base::kind, tag::positional> && Base::any_rope && !Base::scaling.yarn,
                "YaRN<Base, ...>: Base must be a RoPE or RNoPE policy (the layers whose frequencies it scales)");
  static_assert(Factor > 1, "YaRN<Base, factor, ...>: factor (the context's stretch) must be above 1");
  static_assert(OriginalMax > 0, "YaRN<Base, factor, original_max>: original_max (the trained context) must be positive");
  static_assert(BetaFast > BetaSlow && BetaSlow > 0, "YaRN<...>: expected beta_fast > beta_slow > 0 (defaults 32 and 1)");
  static_assert(AttentionFactor >= 0, "YaRN<...>: attention_factor must be positive (or 0: 0.1 ln(factor) + 1)");
  static constexpr int interval = Base::interval;
  static constexpr double theta = Base::theta;
  static constexpr bool any_rope = true;
  static constexpr bool uses_rope(int layer, int layers) { return Base::uses_rope(layer, layers); }
  static constexpr const char* name = "YaRN";
  static constexpr RopeScaling scaling{true, Factor, OriginalMax, BetaFast, BetaSlow, AttentionFactor, Truncate};
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
