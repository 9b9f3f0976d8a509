// kiln/model/decoder.hpp: a decoder-only language model as one type, and the static checks that make a bad one
// fail to compile with one sentence.
//
//   x = Embedding[tokens]                                          // (B, T, H)
//   for layer i < L:  x = x + Attention_i(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
//   logits = RMSNorm(x) W^T   (W = embedding if tied, else lm_head)  // never stored whole: fused with the loss
//   loss = mean over targets of [ CE(logits, target) + z_loss * logsumexp(logits)^2 ]
#pragma once
#include "kiln/model/components.hpp"

namespace kiln {

template <class... S>
struct Decoder {
  using kind = tag::decoder;
  using accepts = kinds<tag::embedding, tag::layers, tag::attention, tag::mlp, tag::norm, tag::z_loss>;
  static_assert(kinds_unique<S...>, "Decoder<...>: a component is given twice");
  static_assert(has_setting<tag::embedding, S...>, "Decoder<...> needs Embedding<vocab<V>, hidden<H>>");
  static_assert(has_setting<tag::layers, S...>, "Decoder<...> needs layers<N>");
  static_assert(has_setting<tag::attention, S...>, "Decoder<...> needs Attention<heads<N>, ...>");
  static_assert(has_setting<tag::mlp, S...>, "Decoder<...> needs SwiGLU<ffn<F>>");

  using embedding = find_t<tag::embedding, void, S...>;
  using attention = find_t<tag::attention, void, S...>;
  using mlp = find_t<tag::mlp, void, S...>;
  using norm = find_t<tag::norm, RMSNorm<>, S...>;
  using positional = typename attention::positional;

  static constexpr int vocab = embedding::vocab;
  static constexpr int hidden = embedding::hidden;
  static constexpr bool tied = embedding::tied;
  static constexpr int layers = value_or<tag::layers, 0, S...>;
  static constexpr int heads = attention::heads;
  static constexpr int kv_heads = attention::kv_heads;
  static constexpr int head_dim = attention::head_dim ? attention::head_dim : hidden / heads;
  static constexpr bool qk_norm = attention::qk_norm;
  static constexpr int ffn = mlp::ffn;
  static constexpr double eps = norm::eps;
  static constexpr double z_loss = value_or<tag::z_loss, 0.0, S...>;

  static constexpr int q_dim = heads * head_dim;      // query width
  static constexpr int kv_dim = kv_heads * head_dim;  // key (and value) width
  static constexpr int qkv_dim = q_dim + 2 * kv_dim;  // packed [q | k | v] projection width

  static constexpr bool uses_rope(int layer) { return positional::uses_rope(layer, layers); }

  static_assert(layers > 0, "Decoder: layers must be positive");
  static_assert(attention::head_dim != 0 || hidden % heads == 0,
                "Decoder: hidden must be divisible by heads when head_dim is not given (head_dim = hidden / heads)");
  static_assert(!positional::any_rope || head_dim % 2 == 0,
                "Decoder: RoPE needs an even head_dim (rotate_half pairs dimension i with i + head_dim / 2)");
  static_assert(positional::interval == 0 || layers % (positional::interval ? positional::interval : 1) == 0,
                "Decoder: the RNoPE interval must divide the layer count (so the NoPE layers fall evenly)");
  static_assert(z_loss >= 0, "Decoder: z_loss coefficient must be non-negative");
};

template <class T> struct is_decoder : std::false_type {};
template <class... S> struct is_decoder<Decoder<S...>> : std::true_type {};
template <class T> concept DecoderModel = is_decoder<T>::value;

}  // namespace kiln
