// tests/test_checkpoint.cpp: XXH64 against the reference implementation's values, checkpoint write/read round trip,
// corrupt and partial checkpoints skipped with a warning naming the problem (never a crash), keep-K pruning.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kiln/core/json.hpp"
#include "kiln/io/checkpoint.hpp"
#include "kiln/io/optimizer_shards.hpp"
#include "kiln/io/safetensors_sharded.hpp"  // param_views, load_params
#include "kiln/model/model.hpp"

namespace fs = std::filesystem;
using namespace kiln::io;

namespace {

using Tiny = kiln::Decoder<kiln::Embedding<kiln::vocab<80>, kiln::hidden<48>, kiln::tied<true>>, kiln::layers<2>,
                           kiln::Attention<kiln::heads<3>, kiln::kv_heads<1>, kiln::head_dim<16>, kiln::RNoPE<2, 1e4>>,
                           kiln::SwiGLU<kiln::ffn<64>>>;
using Plan = kiln::plan::ParamPlan<Tiny>;

fs::path scratch(const char* what) {
  fs::path d = fs::temp_directory_path() / (std::string("kiln_test_") + what + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

struct Run {
  std::vector<float> params, m, v;
  explicit Run(unsigned seed) : params(Plan::table.total), m(Plan::table.total), v(Plan::table.total) {
    std::mt19937 g(seed);
    std::normal_distribution<float> n;
    for (auto* b : {&params, &m, &v})
      for (const auto& e : Plan::table.entries)
        for (size_t i = 0; i < e.count(); ++i) (*b)[e.offset + i] = n(g);
  }
  std::vector<CheckpointBlob> blobs() const {
    return {{"parameters", param_views<Tiny>(params.data())},
            {"adam_m", param_views<Tiny>(m.data())},
            {"adam_v", param_views<Tiny>(v.data())}};
  }
};

CheckpointState state_at(int64_t step) {
  CheckpointState s;
  s.step = step;
  s.schedule_step = step + 1;
  s.tokens_seen = step * 4096;
  s.data_state = {0, 1, 2, 0xfe, 0xff, uint8_t(step)};
  s.config = {{"lr", 2e-4}, {"recipe", "tiny"}};
  s.extra = {{"note", "hello"}};
  return s;
}

struct Warnings {
  std::vector<std::string> all;
  CheckpointWarning fn() {
    return [this](const std::string& s) { all.push_back(s); };
  }
  bool any_contains(const std::string& needle) const {
    for (auto& s : all)
      if (s.find(needle) != std::string::npos) return true;
    return false;
  }
};

void flip_byte(const fs::path& p, uint64_t at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(std::streamoff(at));
  char c;
  f.get(c);
  f.seekp(std::streamoff(at));
  f.put(char(c ^ 0x10));
}

}  // namespace

TEST_CASE("xxh64: values of the reference implementation (python xxhash 3.x, seed 0)") {
  auto h = [](const std::string& s) { return hex64(xxh64(s.data(), s.size())); };
  CHECK(h("") == "ef46db3751d8e999");
  CHECK(h("a") == "d24ec4f1a98c6e5b");
  CHECK(h("abc") == "44bc2cf5ad770999");
  CHECK(h("123456789") == "8cb841db40e6ae83");
  CHECK(h(std::string(31, '\0')) == "faf43dd52deb083a");
  CHECK(h(std::string(32, '\0')) == "f6e9be5d70632cf5");
  CHECK(h(std::string(33, '\0')) == "1dcdf75a2320fb61");
  CHECK(h(std::string(40, '\0')) == "f628aee62df1d172");
  CHECK(h(std::string(100, '\0')) == "17bb1103c92c502f");
  std::string s;
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < 256; ++i) s.push_back(char(i));
  s += "xyz";
  CHECK(h(s) == "e921a1b45bd779f8");
  CHECK(hex64(xxh64("abc", 3, 0x9E3779B1)) == "1318df30094a85fd");
  // streaming in uneven pieces equals one shot
  for (size_t piece : {1u, 7u, 31u, 32u, 33u, 100u}) {
    Xxh64 x;
    for (size_t i = 0; i < s.size(); i += piece) x.update(s.data() + i, std::min(piece, s.size() - i));
    CHECK(hex64(x.digest()) == "e921a1b45bd779f8");
  }
}

TEST_CASE("core::parse_json: a key given twice is an error naming where; the DOM equals json::parse's") {
  using kiln::core::parse_json;
  const std::string text = R"({"a": [1, {"b": null, "c": [true, 2.5, "s"]}], "d": {"e": {}}})";
  CHECK(parse_json(text, "t.json") == nlohmann::json::parse(text));
  auto err = [](const std::string& t) {
    try {
      parse_json(t, "t.json");
    } catch (const kiln::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK_MESSAGE(err(R"({"a": 1, "a": 2})").find("t.json: key \"a\" is given twice in the top-level object") !=
                    std::string::npos, err(R"({"a": 1, "a": 2})"));
  const std::string nested = err(R"({"a": [0, {"x": {"y": 1, "y": 1}}]})");
  CHECK_MESSAGE(nested.find("key \"y\" is given twice in object a[1].x") != std::string::npos, nested);
  CHECK(err(R"({"a": 1, "b": {"a": 2}})") == "(no error)");  // the same key in two objects is fine
  CHECK(err(R"({"a": )").find("t.json: not valid JSON") != std::string::npos);
  CHECK(err(R"({"a": 1} x)").find("t.json: not valid JSON") != std::string::npos);  // trailing text
}

TEST_CASE("checkpoint: hex bytes") {
  std::vector<uint8_t> b = {0, 15, 16, 255};
  CHECK(to_hex(b) == "000f10ff");
  CHECK(from_hex("000F10ff") == b);
  CHECK(!from_hex("abc"));
  CHECK(!from_hex("zz"));
}

TEST_CASE("checkpoint: write and read back") {
  fs::path root = scratch("ckpt_rt");
  Run run(1);
  Warnings w;
  CheckpointInfo info = write_checkpoint(root.string(), state_at(123), run.blobs(), 3, w.fn());
  CHECK(info.step == 123);
  CHECK(info.dir == root / "step_00000123");
  CHECK(w.all.empty());
  for (const char* f : {"parameters.safetensors", "adam_m.safetensors", "adam_v.safetensors", "state.json", "manifest.json"})
    CHECK_MESSAGE(fs::is_regular_file(info.dir / f), f);
  int n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(root)) ++n;
  CHECK(n == 1);  // no temp directory left
  auto latest = find_latest_valid(root.string(), w.fn());
  REQUIRE(latest);
  CHECK(latest->step == 123);
  CHECK(w.all.empty());

  Checkpoint c(*latest);
  CHECK(c.step() == 123);
  CHECK(c.state() == state_at(123));
  CHECK(c.blob_names() == std::vector<std::string>{"adam_m", "adam_v", "parameters"});
  std::vector<float> p(Plan::table.total, 0.0f), m(Plan::table.total, 0.0f), v(Plan::table.total, 0.0f);
  load_params<Tiny>(c.blob("parameters"), p.data(), c.dir().string());
  load_params<Tiny>(c.blob("adam_m"), m.data(), c.dir().string());
  load_params<Tiny>(c.blob("adam_v"), v.data(), c.dir().string());
  CHECK(p == run.params);
  CHECK(m == run.m);
  CHECK(v == run.v);
  CHECK(c.blob("parameters").at("model.layers.1.self_attn.k_proj.weight").shape == std::vector<int64_t>{16, 48});
  CHECK_THROWS_WITH_AS(c.blob("ema"), doctest::Contains("no blob named ema (it has: adam_m, adam_v, parameters)"),
                       kiln::Error);
  // the manifest is plain JSON an operator can read
  auto mj = nlohmann::json::parse(std::ifstream(info.dir / "manifest.json"));
  CHECK(mj["checksum"] == "xxh64");
  CHECK(mj["files"]["state.json"]["size"] == fs::file_size(info.dir / "state.json"));
  CHECK(mj["files"]["parameters.safetensors"]["xxh64"] ==
        hex64(digest_file((info.dir / "parameters.safetensors").string()).xxh64));

  // rewriting the same step replaces it
  Run run2(2);
  write_checkpoint(root.string(), state_at(123), run2.blobs(), 3);
  Checkpoint c2(root / "step_00000123");
  load_params<Tiny>(c2.blob("parameters"), p.data(), "x");
  CHECK(p == run2.params);

  CHECK_THROWS_WITH_AS(write_checkpoint(root.string(), state_at(1), {{"bad/name", {}}}, 3),
                       doctest::Contains("blob name \"bad/name\""), kiln::Error);
  CHECK_THROWS_WITH_AS(write_checkpoint(root.string(), state_at(1), {}, 0), doctest::Contains("keep_last = 0"),
                       kiln::Error);
  CHECK(!find_latest_valid((root / "nonexistent").string(), w.fn()));
  fs::remove_all(root);
}

TEST_CASE("checkpoint: a corrupt or partial newest checkpoint is skipped with a warning naming the problem") {
  struct Case {
    const char* what;
    std::function<void(const fs::path&)> damage;
    const char* problem;
  };
  const std::vector<Case> cases = {
      {"truncated blob", [](const fs::path& d) {
         fs::resize_file(d / "adam_v.safetensors", fs::file_size(d / "adam_v.safetensors") - 100);
       }, "adam_v.safetensors: size"},
      {"flipped byte", [](const fs::path& d) { flip_byte(d / "parameters.safetensors", 5000); },
       "parameters.safetensors: xxh64"},
      {"missing manifest", [](const fs::path& d) { fs::remove(d / "manifest.json"); }, "manifest.json: missing"},
      {"garbage manifest", [](const fs::path& d) { std::ofstream(d / "manifest.json") << "{\"files\": [1, 2"; },
       "manifest.json: not valid JSON"},
      {"manifest of another step", [](const fs::path& d) {
         auto j = nlohmann::json::parse(std::ifstream(d / "manifest.json"));
         j["step"] = 7;
         std::ofstream(d / "manifest.json") << j.dump();
       }, "field step does not match"},
      {"missing state", [](const fs::path& d) { fs::remove(d / "state.json"); }, "state.json: missing"},
      {"empty blob file", [](const fs::path& d) { fs::resize_file(d / "adam_m.safetensors", 0); },
       "adam_m.safetensors: size 0 bytes"},
  };
  Run run(3);
  for (const Case& k : cases) {
    CAPTURE(k.what);
    fs::path root = scratch("ckpt_bad");
    write_checkpoint(root.string(), state_at(10), run.blobs(), 5);
    CheckpointInfo newest = write_checkpoint(root.string(), state_at(20), run.blobs(), 5);
    k.damage(newest.dir);
    Warnings w;
    auto got = find_latest_valid(root.string(), w.fn());
    REQUIRE(got);
    CHECK(got->step == 10);
    REQUIRE(w.all.size() == 1);
    CHECK_MESSAGE(w.all[0].find("skipping checkpoint " + newest.dir.string()) == 0, w.all[0]);
    CHECK_MESSAGE(w.all[0].find(k.problem) != std::string::npos, w.all[0]);
    CHECK_THROWS_AS(Checkpoint{newest.dir}, kiln::Error);
    // all of them damaged: none, still no exception
    k.damage(root / "step_00000010");
    w.all.clear();
    CHECK(!find_latest_valid(root.string(), w.fn()));
    CHECK(w.all.size() == 2);
    fs::remove_all(root);
  }
}

TEST_CASE("checkpoint: stray temp directory, size-only verification, garbage state") {
  fs::path root = scratch("ckpt_stray");
  Run run(4);
  write_checkpoint(root.string(), state_at(1), run.blobs(), 5);
  CheckpointInfo two = write_checkpoint(root.string(), state_at(2), run.blobs(), 5);
  // an interrupted write of step 3: a temp directory with part of the files (as a crash would leave it)
  fs::path stray = root / ".tmp.step_00000003.99999";
  fs::create_directories(stray);
  fs::copy_file(two.dir / "parameters.safetensors", stray / "parameters.safetensors");
  Warnings w;
  auto got = find_latest_valid(root.string(), w.fn());
  REQUIRE(got);
  CHECK(got->step == 2);
  CHECK(w.any_contains(".tmp.step_00000003.99999: partial checkpoint"));
  // the next write removes it
  w.all.clear();
  write_checkpoint(root.string(), state_at(3), run.blobs(), 5, w.fn());
  CHECK(!fs::exists(stray));
  CHECK(w.any_contains("removing " + stray.string()));

  // a flipped byte keeps the size: Verify::sizes accepts it, Verify::checksums does not
  flip_byte(root / "step_00000003" / "adam_m.safetensors", 3000);
  CHECK(find_latest_valid(root.string(), {}, Verify::sizes)->step == 3);
  CHECK(find_latest_valid(root.string(), {}, Verify::checksums)->step == 2);

  // state.json that matches its manifest entry but is not a valid state (a writer bug) is still caught
  fs::path d2 = root / "step_00000002";
  std::ofstream(d2 / "state.json") << "{\"step\": 2}";
  auto m = nlohmann::json::parse(std::ifstream(d2 / "manifest.json"));
  auto dg = digest_file((d2 / "state.json").string());
  m["files"]["state.json"] = {{"size", dg.size}, {"xxh64", hex64(dg.xxh64)}};
  std::ofstream(d2 / "manifest.json") << m.dump();
  w.all.clear();
  got = find_latest_valid(root.string(), w.fn());
  REQUIRE(got);
  CHECK(got->step == 1);
  CHECK(w.any_contains("field schedule_step missing"));
  fs::remove_all(root);
}

TEST_CASE("checkpoint: keep the newest K, prune only after the new one is in place") {
  fs::path root = scratch("ckpt_keep");
  Run run(5);
  for (int s = 100; s <= 600; s += 100) write_checkpoint(root.string(), state_at(s), run.blobs(), 2);
  auto all = list_checkpoints(root.string());
  REQUIRE(all.size() == 2);
  CHECK(all[0].step == 500);
  CHECK(all[1].step == 600);
  // resuming from 500 and writing 550: 600 (a newer, abandoned future) is left alone with a warning; 500 is kept
  Warnings w;
  write_checkpoint(root.string(), state_at(550), run.blobs(), 2, w.fn());
  all = list_checkpoints(root.string());
  REQUIRE(all.size() == 3);
  CHECK(all[0].step == 500);
  CHECK(all[1].step == 550);
  CHECK(all[2].step == 600);
  CHECK(w.any_contains("newer than the checkpoint just written"));
  write_checkpoint(root.string(), state_at(560), run.blobs(), 1);
  all = list_checkpoints(root.string());
  REQUIRE(all.size() == 2);
  CHECK(all[0].step == 560);
  fs::remove_all(root);
}

// ZeRO-1's optimizer shards (kiln/io/optimizer_shards.hpp): written by 3 ranks (cut inside tensors), read back whole,
// by 2 ranks and by 5; and the whole form read by shards. Bad shard sets are errors naming the file.
TEST_CASE("checkpoint: optimizer shards written by n ranks read back under any other sharding") {
  const fs::path root = scratch("shards");
  const Run a(11);
  const size_t floats = Plan::table.total;
  const std::span<const kiln::plan::ParamEntry> table = Plan::table.entries;
  const auto write_sharded = [&](int n, int keep_ranks, int64_t step) {
    std::vector<std::vector<float>> parts;
    std::vector<CheckpointBlob> blobs = {{"parameters", param_views<Tiny>(a.params.data())}};
    for (int r = 0; r < keep_ranks; ++r) {
      const auto s = kiln::parallel::shard_of(floats, r, n, 64);
      parts.emplace_back(a.m.begin() + long(s.begin), a.m.begin() + long(s.end));
    }
    for (int r = 0; r < keep_ranks; ++r)
      blobs.push_back(shard_blob(table, floats, "adam_m", parts[size_t(r)].data(), kiln::parallel::shard_of(floats, r, n, 64), r, n));
    return write_checkpoint(root.string(), state_at(step), blobs, 5);
  };
  const Checkpoint ck(write_sharded(3, 3, 1).dir);
  CHECK(ck.has_blob("adam_m-shard-00001-of-00003"));
  const auto s1 = kiln::parallel::shard_of(floats, 1, 3, 64);
  CHECK((s1.begin % 64 == 0 && s1.begin > 0 && s1.end > s1.begin));
  bool cut_inside = false;  // some tensor is split between two ranks
  for (const auto& e : Plan::table.entries) cut_inside |= e.offset < s1.begin && s1.begin < e.offset + e.count();
  CHECK(cut_inside);
  for (int n : {1, 2, 5}) {
    std::vector<float> got(floats, -1.0f);
    for (int r = 0; r < n; ++r) {
      const auto s = kiln::parallel::shard_of(floats, r, n, 64);
      std::vector<float> part(s.size());
      load_sharded(table, floats, ck, "adam_m", part.data(), s);
      std::copy(part.begin(), part.end(), got.begin() + long(s.begin));
    }
    CHECK(std::memcmp(got.data(), a.m.data(), floats * 4) == 0);
  }
  // the whole form, read in shards
  const Checkpoint whole(write_checkpoint(root.string(), state_at(2), a.blobs(), 5).dir);
  const auto s = kiln::parallel::shard_of(floats, 1, 2, 64);
  std::vector<float> part(s.size());
  load_sharded(table, floats, whole, "adam_m", part.data(), s);
  CHECK(std::memcmp(part.data(), a.m.data() + s.begin, s.size() * 4) == 0);
  // a rank's shard missing
  const Checkpoint two(write_sharded(3, 2, 3).dir);
  CHECK_THROWS_WITH_AS(load_sharded(table, floats, two, "adam_m", part.data(), s),
                       doctest::Contains("2 shards of adam_m where 3 ranks wrote one each"), kiln::Error);
  CHECK_THROWS_WITH_AS(load_sharded(table, floats, two, "adam_v", part.data(), s),
                       doctest::Contains("no blob adam_v"), kiln::Error);
  fs::remove_all(root);
}
