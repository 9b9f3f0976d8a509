// kiln/io/hf_config.hpp: Hugging Face config.json (kiln/io/hf_config_core.hpp: HfConfig, parse_hf_config,
// read_hf_config, write_hf_config) and its link to Kiln model types: hf_config_of<M> builds the config of a model type,
// mismatches<M> lists every field in which a checkpoint's config differs from a recipe's model.
#pragma once
#include <cmath>
#include <charconv>
#include <type_traits>

#include <algorithm>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/io/hf_config_core.hpp"
#include "kiln/model/model.hpp"

namespace kiln::io {

// ---------------------------------------------------------------------------------------------
// Kiln model type <-> HfConfig
// ---------------------------------------------------------------------------------------------

// A YaRN policy's scaling as transformers' rope_scaling {"rope_type": "yarn", "factor", "original_max_position_
// embeddings", "beta_fast", "beta_slow", and "attention_factor" / "truncate" where they are not the defaults}.
inline RopeScaling hf_rope_scaling(const kiln::RopeScaling& y) {
  RopeScaling s;
  s.type = "yarn";
  s.factor = y.factor;
  s.original_max_position_embeddings = y.original_max;
  s.extra["beta_fast"] = y.beta_fast;
  s.extra["beta_slow"] = y.beta_slow;
  if (y.attention_factor > 0) s.extra["attention_factor"] = y.attention_factor;
  if (!y.truncate) s.extra["truncate"] = false;
  return s;
}

// The config.json of a Kiln model. Fields the model type does not fix (special token ids, max_position_embeddings,
// dtype) get neutral values the caller overwrites: ids null, max_position_embeddings 4096 (a YaRN model's: factor x
// its original context, which transformers reads as the context it serves), torch_dtype "float32" (Kiln's
// parameters are fp32). A YaRN policy writes its rope_scaling.
// llama has no NoPE layers: a model with any NoPE layer must be exported as smollm3 (the error says so).
template <DecoderModel M>
HfConfig hf_config_of(std::string model_type) {
  bool known = false;
  for (auto t : kHfModelTypes) known |= (model_type == t);
  KILN_CHECK(known, "hf_config_of: model_type \"", model_type, "\" is not supported; expected one of ",
             detail::supported_model_types());
  KILN_CHECK(!M::qk_norm, "hf_config_of: the model uses QK-norm, which neither llama nor smollm3 has in HF "
                          "transformers (field q_norm/k_norm); it cannot be exported as ", model_type);
  HfConfig c;
  c.model_type = model_type;
  c.vocab_size = M::vocab;
  c.hidden_size = M::hidden;
  c.intermediate_size = M::ffn;
  c.num_hidden_layers = M::layers;
  c.num_attention_heads = M::heads;
  c.num_key_value_heads = M::kv_heads;
  c.head_dim = M::head_dim;
  c.rms_norm_eps = M::eps;
  bool any_rope = false, all_rope = true;
  for (int l = 0; l < M::layers; ++l) {
    any_rope |= M::uses_rope(l);
    all_rope &= M::uses_rope(l);
  }
  // A NoPE-only model still needs a theta in the file; transformers' default 10000 is harmless there.
  c.rope_theta = any_rope ? double(M::positional::theta) : 10000.0;
  c.tie_word_embeddings = M::tied;
  c.max_position_embeddings = 4096;
  c.torch_dtype = "float32";
  if constexpr (M::positional::scaling.yarn) {
    constexpr kiln::RopeScaling y = M::positional::scaling;
    c.rope_scaling = hf_rope_scaling(y);
    c.max_position_embeddings = int(std::lround(y.factor * y.original_max));
  }
  if (model_type == "llama") {
    KILN_CHECK(all_rope, "hf_config_of: the model has NoPE layers (positional ", M::positional::name,
               "), which model_type llama cannot express; export it as smollm3 (field no_rope_layers)");
  } else {
    for (int l = 0; l < M::layers; ++l) c.no_rope_layers.push_back(M::uses_rope(l) ? 1 : 0);
  }
  return c;
}

// Every field of `c` that differs from the model type M, as "field: checkpoint X, recipe Y" (empty: they agree).
// Only fields that change the weights or the function computed are compared (not token ids, dtype or context length).
template <DecoderModel M>
std::vector<std::string> mismatches(const HfConfig& c) {
  std::vector<std::string> out;
  auto text = [](auto v) {  // doubles in their shortest exact form (1e-06, not 9.9999999999999995e-07)
    if constexpr (std::is_floating_point_v<decltype(v)>) {
      if (v == double(static_cast<long long>(v)) && v > -1e15 && v < 1e15) return std::to_string(static_cast<long long>(v));
      char b[32];
      const auto r = std::to_chars(b, b + sizeof b, v);
      return std::string(b, r.ptr);
    } else {
      std::ostringstream s;
      s << std::boolalpha << v;
      return s.str();
    }
  };
  auto cmp = [&](std::string_view field, auto ckpt, auto recipe) {
    if (ckpt != recipe) out.push_back(std::string(field) + ": checkpoint " + text(ckpt) + ", recipe " + text(recipe));
  };
  cmp("vocab_size", c.vocab_size, M::vocab);
  cmp("hidden_size", c.hidden_size, M::hidden);
  cmp("intermediate_size", c.intermediate_size, M::ffn);
  cmp("num_hidden_layers", c.num_hidden_layers, M::layers);
  cmp("num_attention_heads", c.num_attention_heads, M::heads);
  cmp("num_key_value_heads", c.num_key_value_heads, M::kv_heads);
  cmp("head_dim", c.head_dim, M::head_dim);
  cmp("rms_norm_eps", c.rms_norm_eps, M::eps);
  cmp("tie_word_embeddings", c.tie_word_embeddings, M::tied);
  bool any_rope = false;
  for (int l = 0; l < M::layers; ++l) any_rope |= M::uses_rope(l);
  if (any_rope) cmp("rope_theta", c.rope_theta, double(M::positional::theta));
  for (int l = 0; l < std::min(c.num_hidden_layers, M::layers); ++l) {
    int ck = c.uses_rope(l) ? 1 : 0, re = M::uses_rope(l) ? 1 : 0;
    cmp("no_rope_layers[" + std::to_string(l) + "] (1 = uses RoPE)", ck, re);
  }
  if (M::qk_norm) out.push_back("qk_norm: checkpoint none (" + c.model_type + " has no QK-norm), recipe true");
  cmp("hidden_act", c.hidden_act, std::string("silu"));
  cmp("attention_bias", c.attention_bias, false);
  cmp("mlp_bias", c.mlp_bias, false);
  cmp("use_sliding_window", c.sliding_window.has_value(), false);
  // rope scaling: none on both sides, or YaRN with the same numbers (transformers' defaults filled in)
  const auto describe = [&](const std::optional<RopeScaling>& s) -> std::string {
    if (!s) return "none";
    std::string d = s->type + " x" + text(s->factor);
    if (s->original_max_position_embeddings) d += " over " + std::to_string(*s->original_max_position_embeddings);
    for (auto it = s->extra.begin(); it != s->extra.end(); ++it) d += ", " + it.key() + " " + it.value().dump();
    return d;
  };
  std::optional<RopeScaling> want;
  if constexpr (M::positional::scaling.yarn) want = hf_rope_scaling(M::positional::scaling);
  bool same = c.rope_scaling.has_value() == want.has_value();
  if (same && want) {
    const RopeScaling& g = *c.rope_scaling;
    const auto num = [&](const char* k, double dflt) {
      return g.extra.contains(k) && g.extra[k].is_number() ? g.extra[k].get<double>() : dflt;
    };
    const kiln::RopeScaling& y = M::positional::scaling;
    const bool truncate = !(g.extra.contains("truncate") && g.extra["truncate"].is_boolean()) || g.extra["truncate"].get<bool>();
    same = g.type == "yarn" && g.factor == y.factor && g.original_max_position_embeddings == y.original_max &&
           num("beta_fast", 32) == y.beta_fast && num("beta_slow", 1) == y.beta_slow &&
           num("attention_factor", 0) == y.attention_factor && truncate == y.truncate &&
           !g.extra.contains("mscale") && !g.extra.contains("mscale_all_dim");
  }
  if (!same)
    out.push_back("rope_scaling: checkpoint " + describe(c.rope_scaling) + ", recipe " + describe(want) +
                  (want ? "" : " (the recipe's positional policy has no scaling: YaRN<...> gives it one)"));
  return out;
}

}  // namespace kiln::io
