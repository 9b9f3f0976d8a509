// tests/test_safetensors_sharded.cpp: a Kiln model's parameters written as HF safetensors (single file or shards +
// index), read back through the index, and every way an index can be wrong (kiln::Error naming file and field).
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/model/model.hpp"

namespace fs = std::filesystem;
using namespace kiln::io;
using nlohmann::json;

namespace {

using Untied = kiln::Decoder<kiln::Embedding<kiln::vocab<96>, kiln::hidden<64>, kiln::tied<false>>, kiln::layers<3>,
                             kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RoPE<500000.0>>,
                             kiln::SwiGLU<kiln::ffn<160>>, kiln::RMSNorm<1e-5>>;
using Tied = kiln::Decoder<kiln::Embedding<kiln::vocab<80>, kiln::hidden<48>, kiln::tied<true>>, kiln::layers<4>,
                           kiln::Attention<kiln::heads<3>, kiln::kv_heads<1>, kiln::head_dim<16>, kiln::RNoPE<2, 1e4>>,
                           kiln::SwiGLU<kiln::ffn<64>>>;

fs::path scratch(const char* what) {
  fs::path d = fs::temp_directory_path() / (std::string("kiln_test_") + what + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

template <class M>
std::vector<float> random_params(unsigned seed) {
  std::vector<float> p(kiln::plan::ParamPlan<M>::table.total, 0.0f);
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (const auto& e : kiln::plan::ParamPlan<M>::table.entries)
    for (size_t i = 0; i < e.count(); ++i) p[e.offset + i] = n(g);
  return p;
}

json read_json(const fs::path& p) { return json::parse(std::ifstream(p)); }
void write_json(const fs::path& p, const json& j) { std::ofstream(p) << j.dump(2); }

void expect_error(const std::string& path, std::initializer_list<const char*> needles) {
  bool threw = false;
  try {
    SafetensorsModel m(path);
  } catch (const kiln::Error& e) {
    threw = true;
    std::string msg = e.what();
    for (const char* n : needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "missing '" << n << "' in: " << msg);
  }
  CHECK_MESSAGE(threw, "expected a kiln::Error opening ", path);
}

}  // namespace

TEST_CASE("sharded safetensors: shard names") {
  CHECK(shard_file_name(2, 5) == "model-00002-of-00005.safetensors");
  CHECK(kiln::io::detail::is_shard_file_name("model-00002-of-00005.safetensors"));
  CHECK(!kiln::io::detail::is_shard_file_name("model-2-of-5.safetensors"));
  CHECK(!kiln::io::detail::is_shard_file_name("model.safetensors"));
}

TEST_CASE("sharded safetensors: Kiln parameters round trip, sharded and single") {
  fs::path dir = scratch("sharded");
  const auto src = random_params<Untied>(1);
  const auto views = param_views<Untied>(src.data());
  CHECK(views.size() == kiln::plan::ParamPlan<Untied>::table.entries.size());
  CHECK(views.back().name == "lm_head.weight");
  uint64_t bytes = 0;
  for (auto& v : views) bytes += kiln::io::detail::tensor_bytes(v);
  CHECK(bytes == kiln::plan::ParamPlan<Untied>::parameters * 4);

  // sharded: ~4 shards
  auto r = write_safetensors_sharded(dir.string(), views, bytes / 4 + 1, {{"kiln", "test"}});
  CHECK(r.sharded);
  CHECK(r.total_size == bytes);
  REQUIRE(r.files.size() >= 4);
  CHECK(r.files.back() == kIndexFileName);
  const int k = int(r.files.size()) - 1;
  for (int i = 0; i < k; ++i) CHECK(r.files[size_t(i)] == shard_file_name(i + 1, k));
  json idx = read_json(dir / kIndexFileName);
  CHECK(idx["metadata"]["total_size"] == bytes);
  CHECK(idx["weight_map"]["lm_head.weight"] == shard_file_name(k, k));
  CHECK(idx["weight_map"]["model.embed_tokens.weight"] == shard_file_name(1, k));
  {
    SafetensorsModel m(dir.string());
    CHECK(m.sharded());
    CHECK(m.total_size() == bytes);
    CHECK(m.files().size() == size_t(k));
    CHECK(m.at("model.layers.2.mlp.down_proj.weight").shape == std::vector<int64_t>{64, 160});
    CHECK(Safetensors(m.files()[0]).metadata().at("kiln") == "test");
    std::vector<float> back(src.size(), 0.0f);
    load_params<Untied>(m, back.data(), dir.string());
    CHECK(back == src);
    // also through the index path
    SafetensorsModel byindex((dir / kIndexFileName).string());
    CHECK(byindex.names().size() == views.size());
  }
  // re-export as one file into the same directory: the shards and the index are removed
  r = write_safetensors_sharded(dir.string(), views, bytes);
  CHECK(!r.sharded);
  CHECK(r.files == std::vector<std::string>{kSingleFileName});
  int n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
  CHECK(n == 1);
  {
    SafetensorsModel m(dir.string());
    CHECK(!m.sharded());
    std::vector<float> back(src.size(), 0.0f);
    load_params<Untied>(m, back.data(), dir.string());
    CHECK(back == src);
  }
  // a tensor larger than the shard limit gets a shard of its own
  r = write_safetensors_sharded(dir.string(), views, 1024);
  CHECK(r.files.size() == views.size() + 1);
  fs::remove_all(dir);
}

TEST_CASE("sharded safetensors: tied model has no lm_head; load_params checks names and shapes") {
  fs::path dir = scratch("sharded_tied");
  const auto src = random_params<Tied>(2);
  auto views = param_views<Tied>(src.data());
  for (auto& v : views) CHECK(v.name != "lm_head.weight");
  write_safetensors_sharded(dir.string(), views, 1 << 30);
  SafetensorsModel m(dir.string());
  std::vector<float> back(src.size(), 0.0f);
  load_params<Tied>(m, back.data(), "x");
  CHECK(back == src);
  // an untied model needs lm_head.weight
  // a missing tensor
  auto fewer = views;
  fewer.erase(fewer.begin() + 3);
  write_safetensors_sharded(dir.string(), fewer, 1 << 30);
  SafetensorsModel missing(dir.string());
  CHECK_THROWS_WITH_AS(load_params<Tied>(missing, back.data(), dir.string()),
                       doctest::Contains("missing tensor model.layers.0.self_attn.k_proj.weight"), kiln::Error);
  // wrong shape
  views[1].shape = {24, 2};
  write_safetensors_sharded(dir.string(), views, 1 << 30);
  SafetensorsModel bad(dir.string());
  CHECK_THROWS_WITH_AS(load_params<Tied>(bad, back.data(), dir.string()),
                       doctest::Contains("model.layers.0.input_layernorm.weight has shape [24, 2], expected [48]"),
                       kiln::Error);
  fs::remove_all(dir);
}

TEST_CASE("sharded safetensors: a bad index is a kiln::Error naming the file and the field") {
  fs::path dir = scratch("sharded_bad");
  const auto src = random_params<Untied>(3);
  const auto views = param_views<Untied>(src.data());
  int k = 0;
  auto fresh = [&] {
    fs::remove_all(dir);
    fs::create_directories(dir);
    k = int(write_safetensors_sharded(dir.string(), views, 40000).files.size()) - 1;
    REQUIRE(k >= 3);
    return read_json(dir / kIndexFileName);
  };
  const std::string d = dir.string(), ip = (dir / kIndexFileName).string();
  json j = fresh();
  j["metadata"]["total_size"] = j["metadata"]["total_size"].get<uint64_t>() + 4;
  write_json(ip, j);
  expect_error(d, {kIndexFileName, "metadata.total_size", "bytes of tensor data"});
  j = fresh();
  j.erase("metadata");
  write_json(ip, j);
  expect_error(d, {"missing field metadata.total_size"});
  j = fresh();
  j.erase("weight_map");
  write_json(ip, j);
  expect_error(d, {"missing field weight_map"});
  j = fresh();
  fs::remove(dir / shard_file_name(2, k));
  expect_error(d, {("names " + shard_file_name(2, k) + ", which does not exist").c_str()});
  j = fresh();
  j["weight_map"]["lm_head.weight"] = shard_file_name(1, k);
  write_json(ip, j);
  expect_error(d, {("lm_head.weight is in " + shard_file_name(1, k) + ", but that file has no such tensor").c_str()});
  j = fresh();
  j["weight_map"].erase("model.norm.weight");
  write_json(ip, j);
  expect_error(d, {"holds tensor model.norm.weight, which weight_map does not list"});
  j = fresh();
  j["weight_map"]["model.norm.weight"] = "../../etc/passwd";
  write_json(ip, j);
  expect_error(d, {"weight_map[\"model.norm.weight\"]", "plain file name"});
  j = fresh();
  std::ofstream(ip) << "{\"weight_map\": ";
  expect_error(d, {kIndexFileName, "not valid JSON"});
  j = fresh();
  // a truncated shard fails with the shard's own validation
  fs::resize_file(dir / shard_file_name(3, k), fs::file_size(dir / shard_file_name(3, k)) - 1);
  expect_error(d, {shard_file_name(3, k).c_str(), "truncated file"});
  fs::remove_all(dir);
  fs::create_directories(dir);
  expect_error(d, {"neither", kIndexFileName, kSingleFileName});
  fs::remove_all(dir);
}
