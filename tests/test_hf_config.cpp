// tests/test_hf_config.cpp: config.json reading (transformers v4 and v5 forms), contradictions and missing fields
// (each a kiln::Error naming the field), atomic writing, and Kiln model type <-> HfConfig.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "kiln/io/hf_config.hpp"
#include "kiln/model/model.hpp"

namespace fs = std::filesystem;
using kiln::io::HfConfig;
using kiln::io::parse_hf_config;
using nlohmann::json;

namespace {

// SmolLM3-3B's config.json as published (huggingface.co/HuggingFaceTB/SmolLM3-3B), transformers v4 form.
json smollm3_v4() {
  json nr = json::array();
  for (int i = 0; i < 36; ++i) nr.push_back(int((i + 1) % 4 != 0));
  return json{{"architectures", {"SmolLM3ForCausalLM"}}, {"attention_bias", false}, {"attention_dropout", 0.0},
              {"bos_token_id", nullptr}, {"eos_token_id", 128012}, {"hidden_act", "silu"}, {"hidden_size", 2048},
              {"initializer_range", 0.02}, {"intermediate_size", 11008}, {"max_position_embeddings", 65536},
              {"mlp_bias", false}, {"model_type", "smollm3"}, {"no_rope_layer_interval", 4}, {"no_rope_layers", nr},
              {"num_attention_heads", 16}, {"num_hidden_layers", 36}, {"num_key_value_heads", 4},
              {"pad_token_id", 128004}, {"rms_norm_eps", 1e-06}, {"rope_scaling", nullptr}, {"rope_theta", 5000000.0},
              {"sliding_window", nullptr}, {"tie_word_embeddings", true}, {"torch_dtype", "bfloat16"},
              {"use_sliding_window", false}, {"vocab_size", 128256}};
}

// The same model as transformers v5 writes it: rope_parameters and dtype.
json smollm3_v5() {
  json j = smollm3_v4();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j.erase("torch_dtype");
  j["rope_parameters"] = {{"rope_theta", 5000000.0}, {"rope_type", "default"}};
  j["dtype"] = "bfloat16";
  return j;
}

HfConfig parse(const json& j) { return parse_hf_config(j.dump(), "test/config.json"); }

void expect_error(const json& j, std::initializer_list<const char*> needles) {
  bool threw = false;
  try {
    parse(j);
  } catch (const kiln::Error& e) {
    threw = true;
    std::string msg = e.what();
    CHECK_MESSAGE(msg.find("test/config.json") != std::string::npos, msg);
    for (const char* n : needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "missing '" << n << "' in: " << msg);
  }
  CHECK_MESSAGE(threw, "expected a kiln::Error for ", j.dump());
}

using Smol = kiln::Decoder<kiln::Embedding<kiln::vocab<128256>, kiln::hidden<2048>, kiln::tied<true>>, kiln::layers<36>,
                           kiln::Attention<kiln::heads<16>, kiln::kv_heads<4>, kiln::head_dim<128>,
                                           kiln::RNoPE<4, 5000000.0>>,
                           kiln::SwiGLU<kiln::ffn<11008>>, kiln::RMSNorm<1e-6>>;
using Llamaish = kiln::Decoder<kiln::Embedding<kiln::vocab<96>, kiln::hidden<64>, kiln::tied<false>>, kiln::layers<3>,
                               kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RoPE<500000.0>>,
                               kiln::SwiGLU<kiln::ffn<160>>, kiln::RMSNorm<1e-5>>;
using WithQkNorm = kiln::Decoder<kiln::Embedding<kiln::vocab<96>, kiln::hidden<64>>, kiln::layers<2>,
                                 kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::qk_norm<true>>,
                                 kiln::SwiGLU<kiln::ffn<160>>>;

}  // namespace

TEST_CASE("hf_config: SmolLM3-3B v4 config") {
  HfConfig c = parse(smollm3_v4());
  CHECK(c.model_type == "smollm3");
  CHECK(c.vocab_size == 128256);
  CHECK(c.hidden_size == 2048);
  CHECK(c.intermediate_size == 11008);
  CHECK(c.num_hidden_layers == 36);
  CHECK(c.num_attention_heads == 16);
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 128);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_theta == 5e6);
  CHECK(!c.rope_scaling);
  CHECK(c.tie_word_embeddings);
  CHECK(c.max_position_embeddings == 65536);
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(!c.bos_token_id);
  CHECK(c.eos_token_id == 128012);
  CHECK(c.pad_token_id == 128004);
  REQUIRE(c.no_rope_layers.size() == 36);
  int nope = 0;
  for (int i = 0; i < 36; ++i) {
    CHECK(c.uses_rope(i) == ((i + 1) % 4 != 0));
    nope += !c.uses_rope(i);
  }
  CHECK(nope == 9);  // FACTS.md: 9 of 36 layers are NoPE
  CHECK(kiln::io::mismatches<Smol>(c).empty());
}

TEST_CASE("hf_config: the v5 form (rope_parameters, dtype) reads the same as v4") {
  CHECK(parse(smollm3_v5()) == parse(smollm3_v4()));
  // YaRN as FACTS.md gives it, in both forms
  json v4 = smollm3_v4();
  v4["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 65536}};
  json v5 = smollm3_v5();
  v5["rope_parameters"] = {{"rope_theta", 5000000.0}, {"rope_type", "yarn"}, {"factor", 2.0},
                           {"original_max_position_embeddings", 65536}};
  HfConfig a = parse(v4), b = parse(v5);
  REQUIRE(a.rope_scaling);
  CHECK(a.rope_scaling->type == "yarn");
  CHECK(a.rope_scaling->factor == 2.0);
  CHECK(a.rope_scaling->original_max_position_embeddings == 65536);
  CHECK(a == b);
  // both forms in one file, agreeing, are fine
  json both = v4;
  both["rope_parameters"] = v5["rope_parameters"];
  both["dtype"] = "bfloat16";
  CHECK(parse(both) == a);
  auto m = kiln::io::mismatches<Smol>(a);
  REQUIRE(m.size() == 1);
  CHECK(m[0].find("rope_scaling: checkpoint yarn") == 0);
}

TEST_CASE("hf_config: smollm3 without no_rope_layers uses no_rope_layer_interval; llama has no NoPE layers") {
  json j = smollm3_v4();
  j.erase("no_rope_layers");
  CHECK(parse(j) == parse(smollm3_v4()));
  json l = smollm3_v4();
  l["model_type"] = "llama";
  l.erase("no_rope_layers");
  l.erase("tie_word_embeddings");
  HfConfig c = parse(l);
  CHECK(c.no_rope_layers.empty());
  CHECK(c.uses_rope(35));
  CHECK(!c.tie_word_embeddings);  // llama's default
  // eos as a list (Llama-3.1-Instruct)
  l["eos_token_id"] = {128001, 128008, 128009};
  c = parse(l);
  CHECK(c.eos_token_id == 128001);
  CHECK(c.extra_eos_token_ids == std::vector<int>{128008, 128009});
}

TEST_CASE("hf_config: errors name the file, the field and what was expected") {
  json j;
  j = smollm3_v4(); j["model_type"] = "mistral";
  expect_error(j, {"model_type", "mistral", "llama, smollm3"});
  j = smollm3_v4(); j.erase("model_type");
  expect_error(j, {"missing field model_type"});
  j = smollm3_v4(); j.erase("hidden_size");
  expect_error(j, {"missing field hidden_size"});
  j = smollm3_v4(); j["num_key_value_heads"] = 5;
  expect_error(j, {"num_attention_heads 16", "num_key_value_heads 5"});
  j = smollm3_v4(); j["no_rope_layers"] = {1, 1, 1, 0};
  expect_error(j, {"no_rope_layers has 4 entries", "num_hidden_layers = 36"});
  j = smollm3_v4(); j["no_rope_layers"][0] = 2;
  expect_error(j, {"no_rope_layers[0]", "0 (NoPE) or 1"});
  j = smollm3_v4(); j["no_rope_layers"][3] = 1;
  expect_error(j, {"no_rope_layers[3]", "no_rope_layer_interval = 4"});
  j = smollm3_v4(); j["rope_parameters"] = {{"rope_theta", 50000.0}, {"rope_type", "default"}};
  expect_error(j, {"rope_theta", "contradicts rope_parameters.rope_theta"});
  j = smollm3_v4(); j.erase("rope_theta");
  expect_error(j, {"missing rope theta", "rope_parameters.rope_theta"});
  j = smollm3_v4(); j["dtype"] = "float32";
  expect_error(j, {"torch_dtype", "contradicts dtype"});
  j = smollm3_v4(); j["rope_scaling"] = {{"type", "yarn"}};
  expect_error(j, {"rope_scaling.factor is missing"});
  j = smollm3_v4(); j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  j["rope_parameters"] = {{"rope_theta", 5000000.0}, {"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error(j, {"rope_scaling", "contradicts rope_parameters"});
  j = smollm3_v4(); j.erase("head_dim"); j["hidden_size"] = 2050;
  expect_error(j, {"no head_dim given", "2050", "divisible by num_attention_heads 16"});
  j = smollm3_v4(); j["head_dim"] = 127;
  expect_error(j, {"head_dim 127", "even"});
  j = smollm3_v4(); j["rms_norm_eps"] = -1;
  expect_error(j, {"rms_norm_eps", "positive"});
  j = smollm3_v4(); j["vocab_size"] = "many";
  expect_error(j, {"vocab_size", "integer"});
  j = smollm3_v4(); j["rope_parameters"] = {{"full_attention", {{"rope_theta", 1e4}}}};
  expect_error(j, {"rope_parameters.full_attention", "per-attention-type"});
  j = smollm3_v4(); j.erase("no_rope_layers"); j.erase("no_rope_layer_interval");
  expect_error(j, {"neither no_rope_layers nor no_rope_layer_interval"});
  CHECK_THROWS_WITH_AS(parse_hf_config("{\"model_type\": ", "x/config.json"), doctest::Contains("x/config.json: not valid JSON"),
                       kiln::Error);
  CHECK_THROWS_WITH_AS(parse_hf_config("[1]", "x/config.json"), doctest::Contains("JSON object"), kiln::Error);
  // a field given twice: which value counts would be up to the parser (nlohmann keeps one silently)
  CHECK_THROWS_WITH_AS(parse_hf_config(R"({"model_type": "llama", "hidden_size": 64, "hidden_size": 128})", "x/config.json"),
                       doctest::Contains("x/config.json: key \"hidden_size\" is given twice in the top-level object"),
                       kiln::Error);
  CHECK_THROWS_WITH_AS(parse_hf_config(R"({"model_type": "llama", "rope_scaling": {"factor": 2, "factor": 4}})",
                                       "x/config.json"),
                       doctest::Contains("key \"factor\" is given twice in object rope_scaling"), kiln::Error);
  CHECK_THROWS_WITH_AS(kiln::io::read_hf_config("/nonexistent/config.json"),
                       doctest::Contains("/nonexistent/config.json: cannot open"), kiln::Error);
}

TEST_CASE("hf_config: write (v4 form, atomic) and read back") {
  fs::path dir = fs::temp_directory_path() / ("kiln_test_hf_config_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  HfConfig c = parse(smollm3_v4());
  c.rope_scaling = kiln::io::RopeScaling{"yarn", 2.0, 65536, json{{"beta_fast", 32}}};
  c.extra_eos_token_ids = {7, 9};
  const std::string path = (dir / "config.json").string();
  kiln::io::write_hf_config(path, c);
  CHECK(kiln::io::read_hf_config(path) == c);
  int entries = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++entries;
  CHECK(entries == 1);  // no temp file left behind
  json w = json::parse(std::ifstream(path));
  CHECK(w["rope_theta"] == 5000000.0);
  CHECK(w.contains("torch_dtype"));
  CHECK(!w.contains("rope_parameters"));
  CHECK(w["eos_token_id"] == json{128012, 7, 9});
  HfConfig bad = c;
  bad.model_type = "llama";  // llama cannot hold NoPE layers
  CHECK_THROWS_WITH_AS(kiln::io::write_hf_config(path, bad), doctest::Contains("use smollm3"), kiln::Error);
  fs::remove_all(dir);
}

TEST_CASE("hf_config: hf_config_of and mismatches against Kiln model types") {
  HfConfig s = kiln::io::hf_config_of<Smol>("smollm3");
  HfConfig published = parse(smollm3_v4());
  CHECK(s.no_rope_layers == published.no_rope_layers);
  CHECK(kiln::io::mismatches<Smol>(s).empty());
  CHECK_THROWS_WITH_AS(kiln::io::hf_config_of<Smol>("llama"), doctest::Contains("export it as smollm3"), kiln::Error);
  CHECK_THROWS_WITH_AS(kiln::io::hf_config_of<Smol>("gpt2"), doctest::Contains("llama, smollm3"), kiln::Error);
  CHECK_THROWS_WITH_AS(kiln::io::hf_config_of<WithQkNorm>("llama"), doctest::Contains("QK-norm"), kiln::Error);

  HfConfig l = kiln::io::hf_config_of<Llamaish>("llama");
  CHECK(l.no_rope_layers.empty());
  CHECK(l.head_dim == 16);
  CHECK(l.rope_theta == 500000.0);
  CHECK(!l.tie_word_embeddings);
  CHECK(kiln::io::mismatches<Llamaish>(l).empty());
  // the same model as smollm3: all layers use RoPE
  HfConfig ls = kiln::io::hf_config_of<Llamaish>("smollm3");
  CHECK(ls.no_rope_layers == std::vector<int>{1, 1, 1});
  CHECK(kiln::io::mismatches<Llamaish>(ls).empty());

  HfConfig d = l;
  d.num_key_value_heads = 4;
  d.rope_theta = 10000;
  d.model_type = "smollm3";
  d.no_rope_layers = {1, 0, 1};
  auto m = kiln::io::mismatches<Llamaish>(d);
  REQUIRE(m.size() == 3);
  CHECK(m[0] == "num_key_value_heads: checkpoint 4, recipe 2");
  CHECK(m[1] == "rope_theta: checkpoint 10000, recipe 500000");
  CHECK(m[2] == "no_rope_layers[1] (1 = uses RoPE): checkpoint 0, recipe 1");
  // mismatches on a Smol checkpoint for a differently sized recipe
  auto m2 = kiln::io::mismatches<Llamaish>(published);
  CHECK(m2.size() > 8);
}

TEST_CASE("hf_config: a YaRN policy writes transformers' rope_scaling, reads back, and differs from plain RoPE") {
  // SmolLM3 at 128k: YaRN factor 2 over 65536 on its RNoPE layers
  using SmolYarn = kiln::with<Smol, kiln::YaRN<kiln::RNoPE<4, 5'000'000.0>, 2.0, 65536>>;
  const HfConfig c = kiln::io::hf_config_of<SmolYarn>("smollm3");
  REQUIRE(c.rope_scaling);
  CHECK(c.rope_scaling->type == "yarn");
  CHECK(c.rope_scaling->factor == 2.0);
  CHECK(c.rope_scaling->original_max_position_embeddings == 65536);
  CHECK(c.max_position_embeddings == 131072);  // transformers' context: factor x original
  CHECK(c.no_rope_layers == parse(smollm3_v4()).no_rope_layers);
  // written (v4: rope_scaling with rope_type and type) and read back
  const json written = json::parse(kiln::io::hf_config_json(c).dump());
  CHECK(written["rope_scaling"]["rope_type"] == "yarn");
  CHECK(written["rope_scaling"]["beta_fast"] == 32.0);
  const HfConfig back = parse(written);
  CHECK(kiln::io::mismatches<SmolYarn>(back).empty());
  // the same scaling in transformers v5's form, defaults left out
  json v5 = smollm3_v5();
  v5["rope_parameters"] = {{"rope_theta", 5000000.0}, {"rope_type", "yarn"}, {"factor", 2.0},
                           {"original_max_position_embeddings", 65536}};
  CHECK(kiln::io::mismatches<SmolYarn>(parse(v5)).empty());
  // against plain RNoPE, and another factor: named
  const auto plain = kiln::io::mismatches<Smol>(back);
  REQUIRE(plain.size() == 1);
  CHECK(plain[0].find("rope_scaling: checkpoint yarn x2 over 65536") == 0);
  CHECK(plain[0].find("recipe none") != std::string::npos);
  CHECK(kiln::io::mismatches<SmolYarn>(parse(smollm3_v4())).at(0).find("checkpoint none, recipe yarn x2") != std::string::npos);
  v5["rope_parameters"]["factor"] = 4.0;
  CHECK(kiln::io::mismatches<SmolYarn>(parse(v5)).size() == 1);
  v5["rope_parameters"]["factor"] = 2.0;
  v5["rope_parameters"]["beta_fast"] = 16;
  CHECK(kiln::io::mismatches<SmolYarn>(parse(v5)).size() == 1);
}
