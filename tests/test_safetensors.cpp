// tests/test_safetensors.cpp: kiln::io safetensors reader/writer: round trip, the Python fixture, and
// malformed files (each must give a kiln::Error whose message names the problem, never a crash).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/core/bf16.hpp"
#include "kiln/io/safetensors.hpp"

#ifndef KILN_TEST_FIXTURES
#define KILN_TEST_FIXTURES "tests/fixtures"
#endif

namespace fs = std::filesystem;
using kiln::io::Dtype;
using kiln::io::Safetensors;
using kiln::io::TensorView;
using kiln::io::write_safetensors;

namespace {

fs::path scratch_dir() {
  fs::path d = fs::temp_directory_path() / ("kiln_test_safetensors_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s;
}

// A file with the given header text (length taken from it unless `n` is given) and `data_bytes` zero bytes.
std::string make_file(const std::string& header, size_t data_bytes, std::optional<uint64_t> n = std::nullopt) {
  return u64le(n.value_or(header.size())) + header + std::string(data_bytes, '\0');
}

// Opening `bytes` must throw kiln::Error whose message contains every one of `needles`.
void expect_error(const std::string& bytes, std::initializer_list<const char*> needles) {
  fs::path p = scratch_dir() / "bad.safetensors";
  write_bytes(p, bytes);
  bool threw = false;
  try {
    Safetensors st(p.string());
  } catch (const kiln::Error& e) {
    threw = true;
    std::string msg = e.what();
    INFO("message: ", msg);
    CHECK(msg.find(p.string()) != std::string::npos);  // names the file
    for (const char* n : needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "expected \"", n, "\" in: ", msg);
  }
  CHECK_MESSAGE(threw, "no kiln::Error for a malformed file");
}

}  // namespace

TEST_CASE("safetensors: dtype helpers") {
  CHECK(kiln::io::dtype_size(Dtype::BF16) == 2);
  CHECK(kiln::io::dtype_size(Dtype::F64) == 8);
  CHECK(kiln::io::dtype_size(Dtype::BOOL) == 1);
  CHECK(kiln::io::dtype_name(Dtype::I32) == "I32");
  for (Dtype d : kiln::io::kAllDtypes) CHECK(kiln::io::dtype_from_name(kiln::io::dtype_name(d)) == d);
  CHECK(!kiln::io::dtype_from_name("F8_E4M3").has_value());
  CHECK(kiln::io::detail::half_to_float(0x3c00) == 1.0f);
  CHECK(kiln::io::detail::half_to_float(0xc000) == -2.0f);
  CHECK(kiln::io::detail::half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(kiln::io::detail::half_to_float(0x7bff) == 65504.0f);
}

TEST_CASE("safetensors: round trip") {
  fs::path p = scratch_dir() / "rt.safetensors";
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, 7.0f};  // (2, 3)
  std::vector<kiln::bf16> b = {kiln::bf16(1.0f), kiln::bf16(-0.5f), kiln::bf16(3.0f)};
  std::vector<int32_t> c = {7, -9, 11, 13};
  std::vector<uint8_t> d = {1, 2, 3};  // odd size: the next tensor is unaligned in the data region
  std::vector<double> e = {3.141592653589793, -1e300};
  std::vector<int64_t> f = {};  // empty tensor
  write_safetensors(p.string(),
                    {TensorView{"a", Dtype::F32, {2, 3}, a.data()}, TensorView{"b", Dtype::BF16, {3}, b.data()},
                     TensorView{"c", Dtype::I32, {2, 2}, c.data()}, TensorView{"d", Dtype::U8, {3}, d.data()},
                     TensorView{"e", Dtype::F64, {2}, e.data()}, TensorView{"f", Dtype::I64, {0, 4}, f.data()}},
                    {{"note", "hello"}});
  CHECK(fs::file_size(p) % 8 == (8 + 6 * 4 + 3 * 2 + 4 * 4 + 3 + 2 * 8) % 8);
  for (auto& it : fs::directory_iterator(p.parent_path()))  // no temporary left behind
    CHECK(it.path().filename().string().find(".tmp.") == std::string::npos);

  Safetensors st(p.string());
  CHECK(st.metadata().at("format") == "pt");
  CHECK(st.metadata().at("note") == "hello");
  REQUIRE(st.tensors().size() == 6);
  CHECK(st.tensors()[0].name == "a");  // file order
  CHECK(st.tensors()[5].name == "f");
  CHECK(st.contains("c"));
  CHECK(!st.contains("z"));
  CHECK(st.at("a").shape == std::vector<int64_t>{2, 3});
  CHECK(st.at("a").dtype == Dtype::F32);
  CHECK(st.at("a").nbytes == 24);
  CHECK(st.to_vector<float>("a") == a);
  CHECK(st.to_vector<float>("b") == std::vector<float>{1.0f, -0.5f, 3.0f});
  CHECK(st.to_vector<int32_t>("c") == c);
  CHECK(st.to_vector<double>("c") == std::vector<double>{7, -9, 11, 13});
  CHECK(st.to_vector<int>("d") == std::vector<int>{1, 2, 3});
  CHECK(st.to_vector<double>("e") == e);
  CHECK(st.to_vector<int64_t>("f").empty());
  std::vector<float> dst(4);
  st.copy_to("c", dst.data(), dst.size());
  CHECK(dst == std::vector<float>{7, -9, 11, 13});
  CHECK_THROWS_AS(st.copy_to("c", dst.data(), 3), kiln::Error);
  try {
    st.at("missing");
    FAIL("expected an error");
  } catch (const kiln::Error& err) {
    CHECK(std::string(err.what()).find("no tensor named missing") != std::string::npos);
  }

  // Moving keeps the mapping alive and the pointers valid.
  Safetensors moved(std::move(st));
  CHECK(moved.to_vector<float>("a") == a);
  Safetensors other(p.string());
  other = std::move(moved);
  CHECK(other.to_vector<int32_t>("c") == c);

  // Rewriting replaces the file atomically; an explicit format is kept.
  std::vector<float> g = {42.0f};
  write_safetensors(p.string(), {TensorView{"g", Dtype::F32, {1}, g.data()}}, {{"format", "kiln"}});
  Safetensors st2(p.string());
  CHECK(st2.metadata().at("format") == "kiln");
  CHECK(st2.tensors().size() == 1);
  CHECK(other.to_vector<int32_t>("c") == c);  // the old mapping still reads the old (unlinked) file
}

TEST_CASE("safetensors: writer rejects bad input") {
  fs::path p = scratch_dir() / "w.safetensors";
  float x = 0;
  CHECK_THROWS_AS(write_safetensors(p.string(), {TensorView{"x", Dtype::F32, {-1}, &x}}, {}), kiln::Error);
  CHECK_THROWS_AS(
      write_safetensors(p.string(), {TensorView{"x", Dtype::F32, {1}, &x}, TensorView{"x", Dtype::F32, {1}, &x}}, {}),
      kiln::Error);
  CHECK_THROWS_AS(write_safetensors((scratch_dir() / "no/such/dir/w.safetensors").string(),
                                    {TensorView{"x", Dtype::F32, {1}, &x}}, {}),
                  kiln::Error);
}

TEST_CASE("safetensors: reads the Python reference fixture") {
  const std::string path = std::string(KILN_TEST_FIXTURES) + "/tiny_rnope.safetensors";
  Safetensors st(path);
  CHECK(st.metadata().at("format") == "pt");
  auto cfg = nlohmann::json::parse(st.metadata().at("config"));
  CHECK(cfg.at("vocab") == 96);
  CHECK(cfg.at("hidden") == 64);
  CHECK(cfg.at("layers") == 4);
  CHECK(cfg.at("positional") == "rnope");
  CHECK(cfg.at("interval") == 2);
  CHECK(cfg.at("tied") == true);
  CHECK(cfg.at("qk_norm") == false);
  CHECK(st.at("model.embed_tokens.weight").shape == std::vector<int64_t>{96, 64});
  CHECK(st.at("model.layers.0.self_attn.k_proj.weight").shape == std::vector<int64_t>{32, 64});
  CHECK(st.at("out.logits").shape == std::vector<int64_t>{2, 24, 96});
  CHECK(st.at("out.loss").dtype == Dtype::F64);
  CHECK(st.at("batch.tokens").dtype == Dtype::I32);
  CHECK(!st.contains("lm_head.weight"));
  CHECK(st.contains("grad.model.layers.3.mlp.down_proj.weight"));
  auto loss = st.to_vector<double>("out.loss");
  REQUIRE(loss.size() == 1);
  CHECK(loss[0] > 1.0);
  CHECK(loss[0] < 10.0);
  auto pos = st.to_vector<int32_t>("batch.position_ids");
  CHECK(pos[0] == 0);
}

TEST_CASE("safetensors: malformed files give kiln::Error naming the problem") {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  SUBCASE("sanity: the well-formed base case opens") {
    fs::path p = scratch_dir() / "good.safetensors";
    write_bytes(p, make_file("{" + ok_entry + "}", 8));
    Safetensors st(p.string());
    CHECK(st.at("t").nbytes == 8);
  }
  SUBCASE("truncated file (shorter than the length prefix)") { expect_error(std::string("\x05\x00\x00", 3), {"truncated"}); }
  SUBCASE("empty file") { expect_error("", {"truncated"}); }
  SUBCASE("header length beyond the end of the file") {
    expect_error(make_file("{" + ok_entry + "}", 8, 4096), {"header length 4096", "beyond the end of the file"});
  }
  SUBCASE("header too large") { expect_error(make_file("{}", 0, 200'000'000), {"header too large"}); }
  SUBCASE("data truncated") { expect_error(make_file("{" + ok_entry + "}", 4), {"tensor t", "beyond the data region"}); }
  SUBCASE("invalid JSON") { expect_error(make_file("{\"t\": [1, 2", 0), {"not valid JSON"}); }
  SUBCASE("non-object JSON") { expect_error(make_file("[1,2,3]", 0), {"must be a JSON object", "array"}); }
  SUBCASE("unknown dtype") {
    expect_error(make_file(R"({"t":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", 8),
                 {"tensor t", "unknown dtype \"F12\"", "BF16"});
  }
  SUBCASE("size mismatch with shape") {
    expect_error(make_file(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
                 {"tensor t", "size mismatch", "needs 12 bytes"});
  }
  SUBCASE("overlapping offsets") {
    expect_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           12),
                 {"tensor b", "overlap", "tensor a"});
  }
  SUBCASE("hole between tensors") {
    expect_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                           12),
                 {"tensor b", "hole of 4 bytes"});
  }
  SUBCASE("a key given twice") {  // nlohmann::json keeps one of them: this read as "hole of 4 bytes"
    expect_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           8),
                 {"duplicate tensor name a in the header"});
    expect_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"dtype":"F16","data_offsets":[0,4]}})", 4),
                 {"tensor a", "field dtype is given twice"});
    expect_error(make_file(R"({"__metadata__":{"k":"1","k":"2"}})", 0), {"__metadata__ key \"k\" is given twice"});
    expect_error(make_file(R"({"__metadata__":{},"__metadata__":{}})", 0), {"__metadata__ is given twice"});
  }
  SUBCASE("hole at the end (trailing bytes)") { expect_error(make_file("{" + ok_entry + "}", 16), {"hole of 8 bytes"}); }
  SUBCASE("negative dimension") {
    expect_error(make_file(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
                 {"tensor t", "non-negative integers"});
  }
  SUBCASE("non-integer dimension") {
    expect_error(make_file(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8), {"tensor t", "shape"});
  }
  SUBCASE("shape product overflows") {
    expect_error(make_file(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
                 {"tensor t", "size mismatch"});
  }
  SUBCASE("begin > end") {
    expect_error(make_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), {"tensor t", "begin > end"});
  }
  SUBCASE("missing data_offsets") {
    expect_error(make_file(R"({"t":{"dtype":"F32","shape":[2]}})", 8), {"tensor t", "data_offsets"});
  }
  SUBCASE("entry not an object") { expect_error(make_file(R"({"t":5})", 0), {"tensor t", "must be an object"}); }
  SUBCASE("metadata not string -> string") {
    expect_error(make_file(R"({"__metadata__":{"n":3}})", 0), {"__metadata__", "\"n\"", "must be a string"});
    expect_error(make_file(R"({"__metadata__":[1]})", 0), {"__metadata__", "must be an object"});
  }
  SUBCASE("not a regular file") {
    bool threw = false;
    try {
      Safetensors st(scratch_dir().string());
    } catch (const kiln::Error&) {
      threw = true;
    }
    CHECK(threw);
  }
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(Safetensors("/nonexistent/kiln.safetensors"),
                         doctest::Contains("/nonexistent/kiln.safetensors: cannot open"), kiln::Error);
  }
}
