// kiln/io/hf_config_core.hpp: Hugging Face config.json for the decoders Kiln trains (model_type `llama` or `smollm3`).
//
// Reading accepts both spellings transformers has used (FACTS.md "Formats"):
//   v4: "rope_theta": x, "rope_scaling": {"type"|"rope_type": ..., "factor": ..., ...} | null, "torch_dtype": "bfloat16"
//   v5: "rope_parameters": {"rope_theta": x, "rope_type": "default"|"yarn"|..., "factor": ..., ...}, "dtype": "bfloat16"
// A file that gives both forms must agree with itself. smollm3's `no_rope_layers[i]` is 1 when layer i USES RoPE
// (FACTS.md); when it is absent, `no_rope_layer_interval` n gives no_rope_layers[i] = int((i+1) % n != 0), as
// transformers' SmolLM3Config does. A llama config has no NoPE layers (no_rope_layers stays empty).
//
// Defaults follow transformers where a field is optional there: num_key_value_heads = num_attention_heads,
// head_dim = hidden_size / num_attention_heads, tie_word_embeddings false (llama) / true (smollm3),
// max_position_embeddings 2048 (llama) / 32768 (smollm3). Fields that fix the architecture (vocab_size, hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, rms_norm_eps, the rope theta) are required.
//
// An explicit head_dim with head_dim * num_attention_heads != hidden_size is legal (transformers' LlamaAttention
// projects hidden -> heads * head_dim; Kiln's head_dim<> does the same), so it is not an error; head_dim must then be
// positive, and even where any layer uses RoPE. Without head_dim, hidden_size must be divisible by the heads.
//
// Writing produces the v4 form (read by transformers 4.x and 5.x) atomically: path.tmp.<pid>, fsync, rename, fsync(dir).
// Every error is a kiln::Error naming the file (or the origin given to parse_hf_config), the field, and what was
// expected.
// This part does not depend on the model DSL, so it also compiles where the DSL does not (the libFuzzer target is
// built with clang 14, which lacks floating-point template parameters); kiln/io/hf_config.hpp adds hf_config_of<M>
// and mismatches<M>.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"

namespace kiln::io {

// The model types Kiln reads and writes; anything else fails with this list.
inline constexpr std::string_view kHfModelTypes[] = {"llama", "smollm3"};

struct RopeScaling {
  std::string type;                                      // "yarn", "linear", "dynamic", "llama3", ...
  double factor = 1.0;
  std::optional<int> original_max_position_embeddings;  // absent for e.g. "linear"
  nlohmann::json extra = nlohmann::json::object();       // other keys (beta_fast, low_freq_factor, ...), kept as given
  bool operator==(const RopeScaling&) const = default;
};

struct HfConfig {
  std::string model_type;  // "llama" | "smollm3"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // always filled (hidden_size / num_attention_heads when the file omits it)
  double rms_norm_eps = 0;
  double rope_theta = 0;
  bool tie_word_embeddings = false;
  int max_position_embeddings = 0;
  std::vector<int> no_rope_layers;  // smollm3: one entry per layer, 1 = uses RoPE, 0 = NoPE; empty for llama
  std::optional<RopeScaling> rope_scaling;
  std::string torch_dtype;  // "bfloat16", "float32", ...; empty when the file gives none
  std::optional<int> bos_token_id;           // null in some configs (SmolLM3-3B)
  std::optional<int> eos_token_id;           // the first one when the file gives a list
  std::vector<int> extra_eos_token_ids;      // the rest of that list (Llama-3.1-Instruct style), written back as a list
  std::optional<int> pad_token_id;
  // Architecture switches Kiln cannot represent; read so that `mismatches` can report them.
  std::string hidden_act = "silu";
  bool attention_bias = false;
  bool mlp_bias = false;
  std::optional<int> sliding_window;  // window size when use_sliding_window is true (Kiln attends to the whole context)

  bool uses_rope(int layer) const {
    return no_rope_layers.empty() || no_rope_layers.at(size_t(layer)) != 0;
  }
  bool operator==(const HfConfig&) const = default;
};

namespace detail {

inline std::string supported_model_types() {
  std::string s;
  for (auto t : kHfModelTypes) s += (s.empty() ? "" : ", ") + std::string(t);
  return s;
}

// Field access with errors that name the origin and the field.
struct ConfigReader {
  const nlohmann::json& j;
  const std::string& origin;

  const nlohmann::json* find(std::string_view key) const {
    auto it = j.find(std::string(key));
    return it == j.end() ? nullptr : &*it;
  }
  const nlohmann::json* find_nonnull(std::string_view key) const {
    auto p = find(key);
    return p && !p->is_null() ? p : nullptr;
  }
  static std::optional<int64_t> as_int(const nlohmann::json& v) {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {  // 4096.0 is still 4096 (some exporters write integers as floats)
      double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
    }
    return std::nullopt;
  }
  int int_value(const nlohmann::json& v, std::string_view key, int64_t min) const {
    auto i = as_int(v);
    KILN_CHECK(i && *i >= min && *i <= INT32_MAX, origin, ": field ", key, " = ", v.dump(), ": expected an integer >= ",
               min);
    return int(*i);
  }
  int req_int(std::string_view key, int64_t min = 1) const {
    auto p = find_nonnull(key);
    KILN_CHECK(p, origin, ": missing field ", key, " (expected an integer >= ", min, ")");
    return int_value(*p, key, min);
  }
  std::optional<int> opt_int(std::string_view key, int64_t min = 0) const {
    auto p = find_nonnull(key);
    if (!p) return std::nullopt;
    return int_value(*p, key, min);
  }
  static std::optional<double> as_double(const nlohmann::json& v) {
    if (v.is_number()) return v.get<double>();
    return std::nullopt;
  }
  double positive_double(const nlohmann::json& v, std::string_view key) const {
    auto d = as_double(v);
    KILN_CHECK(d && std::isfinite(*d) && *d > 0, origin, ": field ", key, " = ", v.dump(),
               ": expected a positive finite number");
    return *d;
  }
  std::optional<double> opt_positive(std::string_view key) const {
    auto p = find_nonnull(key);
    if (!p) return std::nullopt;
    return positive_double(*p, key);
  }
  std::optional<bool> opt_bool(std::string_view key) const {
    auto p = find_nonnull(key);
    if (!p) return std::nullopt;
    KILN_CHECK(p->is_boolean(), origin, ": field ", key, " = ", p->dump(), ": expected true or false");
    return p->get<bool>();
  }
  std::optional<std::string> opt_string(std::string_view key) const {
    auto p = find_nonnull(key);
    if (!p) return std::nullopt;
    KILN_CHECK(p->is_string(), origin, ": field ", key, " = ", p->dump(), ": expected a string");
    return p->get<std::string>();
  }
};

// Rope scaling from a v4 `rope_scaling` object or the scaling part of a v5 `rope_parameters` object.
// Returns nullopt for type "default" (no scaling). `field` is the JSON field name, for messages.
inline std::optional<RopeScaling> parse_rope_scaling(const nlohmann::json& v, const std::string& origin,
                                                     const std::string& field) {
  if (v.is_null()) return std::nullopt;
  KILN_CHECK(v.is_object(), origin, ": field ", field, " = ", v.dump(), ": expected an object or null");
  ConfigReader r{v, origin};
  auto t1 = r.opt_string("rope_type"), t2 = r.opt_string("type");
  KILN_CHECK(!(t1 && t2 && *t1 != *t2), origin, ": field ", field, " gives rope_type \"", *t1, "\" and type \"",
             t2.value_or(""), "\": expected them to agree");
  KILN_CHECK(t1 || t2, origin, ": field ", field, " has no rope_type (or type): expected e.g. \"default\" or \"yarn\"");
  RopeScaling s;
  s.type = t1 ? *t1 : *t2;
  if (s.type == "default") return std::nullopt;
  auto f = r.find_nonnull("factor");
  KILN_CHECK(f, origin, ": field ", field, ".factor is missing (rope type \"", s.type, "\" needs a scaling factor)");
  s.factor = r.positive_double(*f, field + ".factor");
  if (auto o = r.find_nonnull("original_max_position_embeddings"))
    s.original_max_position_embeddings = r.int_value(*o, field + ".original_max_position_embeddings", 1);
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    if (k == "rope_type" || k == "type" || k == "factor" || k == "original_max_position_embeddings" ||
        k == "rope_theta")
      continue;
    s.extra[k] = it.value();
  }
  return s;
}

}  // namespace detail

// Parse config.json text; `origin` names it in messages (a path, or "<fuzz input>").
inline HfConfig parse_hf_config(std::string_view text, const std::string& origin) {
  using nlohmann::json;
  const json j = core::parse_json(text, origin);
  KILN_CHECK(j.is_object(), origin, ": expected a JSON object at the top level, got ", j.type_name());
  detail::ConfigReader r{j, origin};
  HfConfig c;

  auto mt = r.opt_string("model_type");
  KILN_CHECK(mt, origin, ": missing field model_type (expected one of ", detail::supported_model_types(), ")");
  bool known = false;
  for (auto t : kHfModelTypes) known |= (*mt == t);
  KILN_CHECK(known, origin, ": model_type \"", *mt, "\" is not supported; expected one of ",
             detail::supported_model_types());
  c.model_type = *mt;
  const bool smollm3 = c.model_type == "smollm3";

  c.vocab_size = r.req_int("vocab_size");
  c.hidden_size = r.req_int("hidden_size");
  c.intermediate_size = r.req_int("intermediate_size");
  c.num_hidden_layers = r.req_int("num_hidden_layers");
  c.num_attention_heads = r.req_int("num_attention_heads");
  c.num_key_value_heads = r.opt_int("num_key_value_heads", 1).value_or(c.num_attention_heads);
  KILN_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, origin, ": num_attention_heads ",
             c.num_attention_heads, " is not a multiple of num_key_value_heads ", c.num_key_value_heads,
             " (grouped-query attention shares each KV head among a whole number of query heads)");
  if (auto hd = r.opt_int("head_dim", 1)) {
    c.head_dim = *hd;
  } else {
    KILN_CHECK(c.hidden_size % c.num_attention_heads == 0, origin, ": no head_dim given and hidden_size ",
               c.hidden_size, " is not divisible by num_attention_heads ", c.num_attention_heads,
               " (expected head_dim, or hidden_size = heads * head_dim)");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  {
    auto p = r.find_nonnull("rms_norm_eps");
    KILN_CHECK(p, origin, ": missing field rms_norm_eps (expected a positive number, e.g. 1e-06)");
    c.rms_norm_eps = r.positive_double(*p, "rms_norm_eps");
  }

  // ---- rope: v4 (rope_theta + rope_scaling) and/or v5 (rope_parameters) ----
  std::optional<double> theta4 = r.opt_positive("rope_theta");
  std::optional<double> theta5;
  std::optional<RopeScaling> scaling4, scaling5;
  bool has4_scaling = false, has5 = false;
  if (auto p = r.find("rope_scaling")) {
    has4_scaling = !p->is_null();
    scaling4 = detail::parse_rope_scaling(*p, origin, "rope_scaling");
  }
  if (auto p = r.find_nonnull("rope_parameters")) {
    KILN_CHECK(p->is_object(), origin, ": field rope_parameters = ", p->dump(), ": expected an object");
    for (auto it = p->begin(); it != p->end(); ++it)
      KILN_CHECK(!it.value().is_object(), origin, ": field rope_parameters.", it.key(),
                 " is an object: per-attention-type rope parameters are not supported for ", c.model_type,
                 " (expected one flat {rope_theta, rope_type, ...})");
    has5 = true;
    detail::ConfigReader rp{*p, origin};
    if (auto t = rp.find_nonnull("rope_theta")) theta5 = rp.positive_double(*t, "rope_parameters.rope_theta");
    if (rp.find_nonnull("rope_type") || rp.find_nonnull("type"))
      scaling5 = detail::parse_rope_scaling(*p, origin, "rope_parameters");
  }
  KILN_CHECK(theta4 || theta5, origin,
             ": missing rope theta: expected field rope_theta (transformers v4) or rope_parameters.rope_theta (v5)");
  KILN_CHECK(!(theta4 && theta5) || *theta4 == *theta5, origin, ": field rope_theta = ", theta4.value_or(0),
             " contradicts rope_parameters.rope_theta = ", theta5.value_or(0), " (expected one value)");
  c.rope_theta = theta4 ? *theta4 : *theta5;
  if (has4_scaling && has5) {
    KILN_CHECK(scaling4 == scaling5, origin, ": field rope_scaling = ", j["rope_scaling"].dump(),
               " contradicts rope_parameters = ", j["rope_parameters"].dump(), " (expected the same scaling)");
  }
  c.rope_scaling = has4_scaling ? scaling4 : scaling5;

  // ---- positional: smollm3 NoPE layers ----
  if (smollm3) {
    if (auto p = r.find_nonnull("no_rope_layers")) {
      KILN_CHECK(p->is_array(), origin, ": field no_rope_layers = ", p->dump(), ": expected an array of 0/1");
      KILN_CHECK(p->size() == size_t(c.num_hidden_layers), origin, ": field no_rope_layers has ", p->size(),
                 " entries, expected num_hidden_layers = ", c.num_hidden_layers);
      for (size_t i = 0; i < p->size(); ++i) {
        auto v = detail::ConfigReader::as_int((*p)[i]);
        if (!v && (*p)[i].is_boolean()) v = (*p)[i].get<bool>() ? 1 : 0;
        KILN_CHECK(v && (*v == 0 || *v == 1), origin, ": field no_rope_layers[", i, "] = ", (*p)[i].dump(),
                   ": expected 0 (NoPE) or 1 (uses RoPE)");
        c.no_rope_layers.push_back(int(*v));
      }
      if (auto n = r.opt_int("no_rope_layer_interval", 1)) {
        for (int i = 0; i < c.num_hidden_layers; ++i)
          KILN_CHECK(c.no_rope_layers[size_t(i)] == int((i + 1) % *n != 0), origin, ": field no_rope_layers[", i,
                     "] = ", c.no_rope_layers[size_t(i)], " contradicts no_rope_layer_interval = ", *n,
                     " (expected int((i+1) % interval != 0) = ", int((i + 1) % *n != 0), ")");
      }
    } else {
      auto n = r.opt_int("no_rope_layer_interval", 1);
      KILN_CHECK(n, origin, ": smollm3 config has neither no_rope_layers nor no_rope_layer_interval (expected one)");
      for (int i = 0; i < c.num_hidden_layers; ++i) c.no_rope_layers.push_back(int((i + 1) % *n != 0));
    }
  }
  bool any_rope = c.no_rope_layers.empty();
  for (int v : c.no_rope_layers) any_rope |= v != 0;
  KILN_CHECK(!any_rope || c.head_dim % 2 == 0, origin, ": head_dim ", c.head_dim,
             " is odd, but RoPE pairs dimension i with i + head_dim/2 (expected an even head_dim)");

  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings").value_or(smollm3);
  c.max_position_embeddings = r.opt_int("max_position_embeddings", 1).value_or(smollm3 ? 32768 : 2048);

  auto d4 = r.opt_string("torch_dtype"), d5 = r.opt_string("dtype");
  KILN_CHECK(!(d4 && d5 && *d4 != *d5), origin, ": field torch_dtype = \"", d4.value_or(""), "\" contradicts dtype = \"",
             d5.value_or(""), "\" (expected one value)");
  c.torch_dtype = d4 ? *d4 : d5.value_or("");

  c.bos_token_id = r.opt_int("bos_token_id");
  c.pad_token_id = r.opt_int("pad_token_id");
  if (auto p = r.find_nonnull("eos_token_id")) {
    if (p->is_array()) {
      for (size_t i = 0; i < p->size(); ++i) {
        int id = r.int_value((*p)[i], "eos_token_id[" + std::to_string(i) + "]", 0);
        if (i == 0) c.eos_token_id = id;
        else c.extra_eos_token_ids.push_back(id);
      }
    } else {
      c.eos_token_id = r.int_value(*p, "eos_token_id", 0);
    }
  }

  c.hidden_act = r.opt_string("hidden_act").value_or("silu");
  c.attention_bias = r.opt_bool("attention_bias").value_or(false);
  c.mlp_bias = r.opt_bool("mlp_bias").value_or(false);
  if (r.opt_bool("use_sliding_window").value_or(false)) c.sliding_window = r.opt_int("sliding_window", 1);
  return c;
}

inline HfConfig read_hf_config(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), path, ": cannot open config.json for reading");
  std::ostringstream s;
  s << f.rdbuf();
  KILN_CHECK(!f.bad(), path, ": read failed");
  return parse_hf_config(s.str(), path);
}

// The v4-form JSON of a config (what write_hf_config writes).
inline nlohmann::ordered_json hf_config_json(const HfConfig& c) {
  nlohmann::ordered_json j;
  const bool smollm3 = c.model_type == "smollm3";
  j["architectures"] = {smollm3 ? "SmolLM3ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = c.hidden_act;
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = c.mlp_bias;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling) {
    nlohmann::ordered_json s;
    s["rope_type"] = c.rope_scaling->type;
    s["type"] = c.rope_scaling->type;  // older readers look for "type"
    s["factor"] = c.rope_scaling->factor;
    if (c.rope_scaling->original_max_position_embeddings)
      s["original_max_position_embeddings"] = *c.rope_scaling->original_max_position_embeddings;
    for (auto it = c.rope_scaling->extra.begin(); it != c.rope_scaling->extra.end(); ++it) s[it.key()] = it.value();
    j["rope_scaling"] = s;
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (smollm3) {
    j["no_rope_layers"] = c.no_rope_layers;
  }
  j["use_sliding_window"] = c.sliding_window.has_value();
  if (c.sliding_window) j["sliding_window"] = *c.sliding_window;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["max_position_embeddings"] = c.max_position_embeddings;
  auto id = [](const std::optional<int>& v) { return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr); };
  j["bos_token_id"] = id(c.bos_token_id);
  if (c.extra_eos_token_ids.empty()) {
    j["eos_token_id"] = id(c.eos_token_id);
  } else {
    nlohmann::ordered_json l = nlohmann::ordered_json::array();
    if (c.eos_token_id) l.push_back(*c.eos_token_id);
    for (int e : c.extra_eos_token_ids) l.push_back(e);
    j["eos_token_id"] = l;
  }
  j["pad_token_id"] = id(c.pad_token_id);
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  return j;
}

inline void write_hf_config(const std::string& path, const HfConfig& c) {
  bool known = false;
  for (auto t : kHfModelTypes) known |= (c.model_type == t);
  KILN_CHECK(known, path, ": cannot write model_type \"", c.model_type, "\"; expected one of ",
             detail::supported_model_types());
  KILN_CHECK(c.model_type == "smollm3" || c.no_rope_layers.empty() ||
                 std::count(c.no_rope_layers.begin(), c.no_rope_layers.end(), 0) == 0,
             path, ": model_type llama cannot express NoPE layers (no_rope_layers has zeros); use smollm3");
  KILN_CHECK(c.model_type != "smollm3" || c.no_rope_layers.size() == size_t(c.num_hidden_layers), path,
             ": field no_rope_layers has ", c.no_rope_layers.size(), " entries, expected num_hidden_layers = ",
             c.num_hidden_layers);
  core::write_text_atomic(path, hf_config_json(c).dump(2) + "\n");
}

}  // namespace kiln::io
