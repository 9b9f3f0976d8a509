// tests/test_loader.cpp: the mixture loader: row semantics, exact continuation after save/restore, mixture
// proportions, stage switches, disjoint ranks, the repeat warning, and a state that does not grow.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kiln/data/loader.hpp"

using namespace kiln::data;

namespace {

constexpr int32_t kEod = 0;

// A source of n one-token documents whose token is base + i (so each document is identifiable in the rows).
Source ids_source(const std::string& name, int32_t base, int n) {
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < n; ++i) docs.push_back({base + i});
  return Source{name, {std::make_shared<MemorySource>(std::move(docs), name)}};
}

// A source of documents of varied lengths (1..9 tokens), tokens 1 + (doc * 7 + k) % 1000.
Source varied_source(const std::string& name, int n, int32_t base) {
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> d;
    for (int k = 0; k < 1 + i % 9; ++k) d.push_back(base + (i * 7 + k) % 1000);
    docs.push_back(d);
  }
  return Source{name, {std::make_shared<MemorySource>(std::move(docs), name)}};
}

struct Batch {
  std::vector<int32_t> tok, tgt, pos, ds;
  Batch(int B, int T) : tok(size_t(B) * T), tgt(tok.size()), pos(tok.size()), ds(tok.size()) {}
  bool operator==(const Batch&) const = default;
};

Batch next(Loader& l, int B, int T) {
  Batch b(B, T);
  l.next(B, T, b.tok.data(), b.tgt.data(), b.pos.data(), b.ds.data());
  return b;
}

// The documents (their single tokens) a loader of one-token documents emits over `rows` rows of T: the stream
// alternates doc, eod; with the carry, each row's inputs plus its last target cover the stream once.
std::vector<int32_t> drawn_ids(Loader& l, int rows, int T) {
  std::vector<int32_t> ids;
  for (int r = 0; r < rows; ++r) {
    Batch b = next(l, 1, T);
    for (int i = 0; i < T; ++i)
      if (b.tok[i] != kEod) ids.push_back(b.tok[i]);
  }
  return ids;
}

}  // namespace

TEST_CASE("rows: targets shift inputs, the carry, positions restart after eod") {
  std::vector<std::vector<int32_t>> docs{{11, 12, 13}, {21, 22}, {31, 32, 33, 34, 35}};
  Source s{"a", {std::make_shared<MemorySource>(docs, "a")}};
  Loader l({s}, {{0, {{"a", 1.0}}}}, kEod, 1, 0, 1);
  l.on_event = [](const std::string&) {};
  const int T = 8;
  Batch b1 = next(l, 1, T), b2 = next(l, 1, T);
  CHECK(b2.tok[0] == b1.tgt[T - 1]);  // the previous row's last target is the next row's first token
  for (const Batch* b : {&b1, &b2})
    for (int i = 0; i < T; ++i) {
      if (i + 1 < T) CHECK(b->tgt[i] == b->tok[i + 1]);
      CHECK(b->pos[i] == i - b->ds[i]);
      if (i > 0 && b->tok[i - 1] == kEod) CHECK(b->pos[i] == 0);
      if (i > 0 && b->tok[i - 1] != kEod) CHECK(b->ds[i] == b->ds[i - 1]);
    }
  CHECK(b1.pos[0] == 0);
  CHECK(b2.pos[0] == 0);
  // The stream is whole documents, each followed by eod.
  std::vector<int32_t> stream(b1.tok);
  stream.push_back(b1.tgt[T - 1]);
  stream.insert(stream.end(), b2.tok.begin() + 1, b2.tok.end());
  std::vector<int32_t> cur;
  std::set<std::vector<int32_t>> seen;
  for (int32_t t : stream) {
    if (t == kEod) {
      CHECK(std::find(docs.begin(), docs.end(), cur) != docs.end());
      seen.insert(cur);
      cur.clear();
    } else {
      cur.push_back(t);
    }
  }
  CHECK(seen.size() == 3);  // 13 stream tokens cover the 3 documents + 3 eods before repeating
  CHECK(l.tokens_consumed() == 2 * T);
}

TEST_CASE("Feistel permutation is a bijection") {
  for (uint64_t n : {1ull, 2ull, 3ull, 17ull, 1000ull, 4097ull}) {
    FeistelPermutation p(n, 12345 + n);
    std::vector<int> hit(n, 0);
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t j = p(i);
      REQUIRE(j < n);
      ++hit[j];
    }
    for (int h : hit) CHECK(h == 1);
  }
}

TEST_CASE("save and restore mid-stage continue exactly") {
  std::vector<StageMix> stages{{0, {{"web", 0.7}, {"code", 0.3}}}, {5000, {{"web", 0.2}, {"code", 0.8}}}};
  auto make = [&] {
    Loader l({varied_source("web", 500, 1), varied_source("code", 300, 2000)}, stages, kEod, 7, 1, 2);
    l.on_event = [](const std::string&) {};
    return l;
  };
  const int B = 2, T = 37;
  Loader a = make();
  for (int i = 0; i < 40; ++i) next(a, B, T);  // 40 x 74 x 2 ranks = 5920 global tokens: in stage 1
  CHECK(a.stage() == 1);
  const auto bytes = a.state().to_bytes();
  std::vector<Batch> want;
  for (int i = 0; i < 50; ++i) want.push_back(next(a, B, T));

  Loader b = make();
  b.restore(LoaderState::from_bytes(bytes));
  for (int i = 0; i < 50; ++i) CHECK(next(b, B, T) == want[size_t(i)]);
  CHECK(b.state() == a.state());

  // A state from another configuration is refused with a message.
  Loader other({varied_source("web", 500, 1)}, {{0, {{"web", 1.0}}}}, kEod, 7, 1, 2);
  CHECK_THROWS_WITH_AS(other.restore(a.state()), doctest::Contains("other sources"), kiln::Error);
  Loader rank0({varied_source("web", 500, 1), varied_source("code", 300, 2000)}, stages, kEod, 7, 0, 2);
  CHECK_THROWS_WITH_AS(rank0.restore(a.state()), doctest::Contains("rank 1 of 2"), kiln::Error);
}

TEST_CASE("mixture proportions within 3 sigma over 20k documents") {
  const double p = 0.3;
  Loader l({ids_source("a", 1, 100000), ids_source("b", 200001, 100000)}, {{0, {{"a", 1 - p}, {"b", p}}}}, kEod, 3, 0,
           1);
  l.on_event = [](const std::string&) {};
  auto ids = drawn_ids(l, 1000, 40);  // 40 tokens = 20 documents per row
  REQUIRE(ids.size() >= 20000);
  ids.resize(20000);
  double nb = 0;
  for (int32_t id : ids) nb += id > 200000;
  const double n = 20000, sigma = std::sqrt(n * p * (1 - p));
  CHECK(std::abs(nb - n * p) < 3 * sigma);
}

TEST_CASE("stages switch at the right token count and are reported") {
  std::vector<StageMix> stages{{0, {{"a", 1.0}}}, {1000, {{"b", 1.0}}}, {3000, {{"a", 0.5}, {"b", 0.5}}}};
  Loader l({ids_source("a", 1, 5000), ids_source("b", 100001, 5000)}, stages, kEod, 9, 0, 1);
  std::vector<std::string> events;
  l.on_event = [&](const std::string& e) { events.push_back(e); };
  const int T = 10;
  // Stage 0 for the first 1000 tokens: only a.
  for (int r = 0; r < 100; ++r) {
    CHECK(l.stage() == 0);
    Batch b = next(l, 1, T);
    for (int i = 1; i < T; ++i)
      if (b.tok[i] != kEod) CHECK(b.tok[i] < 100000);  // token 0 may be the carried one
  }
  CHECK(l.tokens_consumed() == 1000);
  CHECK(l.stage() == 1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].find("stage 1 of 3 (planned from token 0) begins at global token 0") != std::string::npos);
  Batch b = next(l, 1, T);  // the first document drawn at 1000 tokens comes from b
  CHECK(events.size() == 2);
  CHECK(events[1].find("stage 2 of 3 (planned from token 1000) begins at global token 100") != std::string::npos);
  for (int i = 2; i < T; ++i)
    if (b.tok[i] != kEod) CHECK(b.tok[i] > 100000);
  while (l.tokens_consumed() < 3000) next(l, 1, T);
  CHECK(l.stage() == 2);
  next(l, 1, T);
  CHECK(events.back().find("stage 3 of 3 (planned from token 3000) begins at global token 300") != std::string::npos);
  CHECK(events.back().find("mixture: a 50.0% b 50.0%") != std::string::npos);

  // With world 4, global tokens are 4 x this rank's: stage 1 begins after 250 local tokens.
  Loader w({ids_source("a", 1, 5000), ids_source("b", 100001, 5000)}, stages, kEod, 9, 2, 4);
  w.on_event = [](const std::string&) {};
  for (int r = 0; r < 25; ++r) next(w, 1, T);
  CHECK(w.global_tokens() == 1000);
  CHECK(w.stage() == 1);
}

TEST_CASE("ranks draw disjoint documents within an epoch; the repeat is reported") {
  const int n = 1003, world = 4, T = 20;  // 10 documents per row
  std::set<int32_t> all;
  size_t total = 0;
  for (int r = 0; r < world; ++r) {
    Loader l({ids_source("a", 1, n)}, {{0, {{"a", 1.0}}}}, kEod, 5, r, world);
    std::vector<std::string> events;
    l.on_event = [&](const std::string& e) { events.push_back(e); };
    const size_t mine = size_t((n - r + world - 1) / world);  // positions r, r + 4, ... below n
    std::vector<int32_t> ids;
    while (ids.size() < mine) {
      for (int32_t id : drawn_ids(l, 1, T)) ids.push_back(id);
    }
    // The first `mine` draws (allow the row's carried token to repeat the previous document).
    std::vector<int32_t> uniq;
    for (int32_t id : ids)
      if (uniq.empty() || uniq.back() != id) uniq.push_back(id);
    uniq.resize(mine);
    std::set<int32_t> s(uniq.begin(), uniq.end());
    CHECK(s.size() == mine);  // no repeat within the rank's epoch
    for (int32_t id : s) CHECK(all.insert(id).second);  // and none drawn by another rank
    total += mine;
    // Keep going: epoch 1 begins and is reported.
    bool warned = false;
    for (int i = 0; i < 100 && !warned; ++i) {
      next(l, 1, T);
      for (const auto& e : events) warned |= e.find("'a' starts epoch 1") != std::string::npos;
    }
    CHECK(warned);
    CHECK(l.epoch(0) == 1);
  }
  CHECK(total == size_t(n));
  CHECK(all.size() == size_t(n));  // together the ranks cover the source exactly once
}

TEST_CASE("the state stays the same size over 1e6 draws") {
  Loader l({ids_source("a", 1, 997), ids_source("b", 2001, 13)}, {{0, {{"a", 0.5}, {"b", 0.5}}}}, kEod, 11, 0, 1);
  int repeats = 0;
  l.on_event = [&](const std::string&) { ++repeats; };
  static_assert(sizeof(LoaderState) == 88 + 16 * LoaderState::kMaxSources);
  const auto before = l.state().to_bytes().size();
  const int T = 2000;  // 1000 draws per row
  Batch b(1, T);
  for (int r = 0; r < 1000; ++r) l.next(1, T, b.tok.data(), b.tgt.data(), b.pos.data(), b.ds.data());
  CHECK(l.state().draws >= 1000000);
  CHECK(l.state().to_bytes().size() == before);
  CHECK(l.epoch(1) > 1000);  // b (13 documents) cycled many times
  CHECK(repeats > 1000);
}

TEST_CASE("loader reads shards from disk") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("kiln_test_loader_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (int k = 0; k < 2; ++k) {
    ShardWriter w((dir / ("s" + std::to_string(k))).string(), 1000, "t");
    for (int i = 0; i < 10; ++i) w.add_document(std::vector<int32_t>{1 + k * 100 + i, 500});
    w.finish();
  }
  Source s = Source::open("disk", {dir.string()});
  CHECK(s.parts.size() == 2);
  Loader l({s}, {{0, {{"disk", 1.0}}}}, 999, 1, 0, 1);
  l.on_event = [](const std::string&) {};
  std::set<int32_t> firsts;
  const int T = 30;  // 10 documents of 3 tokens (2 + eod) per row
  for (int r = 0; r < 2; ++r) {
    Batch b = next(l, 1, T);
    for (int i = 1; i < T; ++i)
      if (b.tok[i - 1] == 999) firsts.insert(b.tok[i]);
  }
  CHECK(firsts.size() >= 18);  // nearly all 20 documents seen in the first epoch
  // An eod outside the shards' vocabulary is refused.
  CHECK_THROWS_WITH_AS(Loader({s}, {{0, {{"disk", 1.0}}}}, 1000, 1, 0, 1), doctest::Contains("outside the vocabulary"),
                       kiln::Error);
  fs::remove_all(dir);
}

namespace {

// A datatrove shard (u16 tokens, u64 document ends; `metadata` as the .ds.metadata text, "" = none; `loss` as .ds.loss).
void write_datatrove(const std::string& prefix, const std::vector<std::vector<int32_t>>& docs,
                     const std::string& metadata, const std::string& loss = "") {
  std::string data, index;
  uint64_t end = 0;
  for (const auto& d : docs) {
    for (int32_t t : d) {
      const uint16_t v = uint16_t(t);
      data.append(reinterpret_cast<const char*>(&v), 2);
    }
    end += d.size();
    index.append(reinterpret_cast<const char*>(&end), 8);
  }
  auto put = [](const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; };
  put(prefix + ".ds", data);
  put(prefix + ".ds.index", index);
  if (!metadata.empty()) put(prefix + ".ds.metadata", metadata);
  if (!loss.empty()) put(prefix + ".ds.loss", loss);
}

}  // namespace

TEST_CASE("the model's vocabulary: shards over it are refused at open, tokens over it while packing") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("kiln_test_loader_vocab_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string kiln_prefix = (dir / "kiln" / "a").string(), dt_prefix = (dir / "dt" / "b").string();
  fs::create_directories(dir / "kiln");
  fs::create_directories(dir / "dt");
  {
    ShardWriter w(kiln_prefix, 1000, "t");
    w.add_document(std::vector<int32_t>{1, 2});
    w.finish();
  }
  const std::vector<StageMix> mix = {{0, {{"s", 1.0}}}};
  Source k = Source::open("s", {(dir / "kiln").string()});
  // Today's behaviour without a model vocabulary; with one, a shard of a larger vocabulary is refused at once.
  CHECK_NOTHROW(Loader({k}, mix, 999, 1, 0, 1));
  CHECK_NOTHROW(Loader({k}, mix, 999, 1, 0, 1, 1000));
  CHECK_THROWS_WITH_AS(Loader({k}, mix, 3, 1, 0, 1, 500),
                       doctest::Contains(("source 's': " + kiln_prefix + ".ds holds tokens of a 1000-id vocabulary "
                                          "(its metadata's vocab_size), more than the model's vocabulary of 500 ids")
                                             .c_str()),
                       kiln::Error);
  CHECK_THROWS_WITH_AS(Loader({k}, mix, 500, 1, 0, 1, 500),
                       doctest::Contains("end-of-document id 500 is outside the model's vocabulary of 500 ids"),
                       kiln::Error);

  // A datatrove shard has no vocab_size: a token over the model's vocabulary is found while packing.
  write_datatrove(dt_prefix, {{1, 2, 3}, {4, 700, 6}}, "gpt2|2\n6\n6 T");
  Source d = Source::open("s", {(dir / "dt").string()});
  Loader unchecked({d}, mix, 0, 1, 0, 1);
  unchecked.on_event = [](const std::string&) {};
  CHECK_NOTHROW(next(unchecked, 2, 8));  // today's behaviour: not checked
  Loader l({d}, mix, 0, 1, 0, 1, 500);
  l.on_event = [](const std::string&) {};
  CHECK_THROWS_WITH_AS(next(l, 2, 8),
                       doctest::Contains((dt_prefix + ".ds: document 1, position 1: token 700 is outside the model's "
                                                      "vocabulary of 500 ids (source 's')")
                                             .c_str()),
                       kiln::Error);
  fs::remove_all(dir);
}

TEST_CASE("datatrove shards through Source::open: a token size for shards without it, and the loss mask") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("kiln_test_loader_dt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string prefix = (dir / "c").string();
  write_datatrove(prefix, {{10, 11, 12}, {20, 21}}, "");  // no metadata at all
  CHECK_THROWS_WITH_AS(Source::open("s", {dir.string()}), doctest::Contains("c.ds.metadata is missing"), kiln::Error);
  Source s = Source::open("s", {dir.string()}, 2);
  REQUIRE(s.parts.size() == 1);
  CHECK(s.parts[0]->total_tokens() == 5);

  // .ds.loss: no loss where a token's mask is 0 (tokens 11 and 20); the appended eod is always a target.
  write_datatrove(prefix, {{10, 11, 12}, {20, 21}}, "x|2\n5\n5 T", std::string("\1\0\1\0\1", 5));
  Source m = Source::open("s", {dir.string()});
  REQUIRE(m.parts[0]->has_loss_mask());
  Loader l({m}, {{0, {{"s", 1.0}}}}, 0, 1, 0, 1);
  l.on_event = [](const std::string&) {};
  const int T = 14;  // the stream is 2 documents + 2 eods = 7 tokens, twice (in some order)
  Batch b = next(l, 1, T);
  int masked = 0;
  for (int i = 0; i + 1 < T; ++i) {  // target i is token i + 1 (the last one is the next row's first input)
    const int32_t t = b.tok[size_t(i) + 1];
    CAPTURE(i);
    CAPTURE(t);
    CHECK(b.tgt[i] == (t == 11 || t == 20 ? -1 : t));
    masked += b.tgt[i] == -1;
  }
  CHECK(masked >= 3);  // 11 and 20 each appear twice among tokens 1..13
  Loader unmasked({Source{"s", {std::make_shared<MemorySource>(std::vector<std::vector<int32_t>>{{10, 11, 12}, {20, 21}},
                                                                 "mem")}}},
                  {{0, {{"s", 1.0}}}}, 0, 1, 0, 1);
  unmasked.on_event = [](const std::string&) {};
  for (int32_t t : next(unmasked, 1, T).tgt) CHECK(t >= 0);  // no mask: every position is a target
  fs::remove_all(dir);
}

TEST_CASE("documents that end with the eod id already (datatrove, Megatron) get no second one") {
  constexpr int32_t eod = 9;
  // as datatrove writes them: each document ends with the tokenizer's EOS; an empty document and one without it too
  const std::vector<std::vector<int32_t>> docs{{1, 2, eod}, {3, eod}, {}, {4, 5}};
  Loader l({Source{"s", {std::make_shared<MemorySource>(docs, "mem")}}}, {{0, {{"s", 1.0}}}}, eod, 1, 0, 1);
  l.on_event = [](const std::string&) {};
  const int T = 9;  // one epoch is 1 2 e 3 e e 4 5 e (some order): 9 tokens, 4 eods
  Batch b = next(l, 1, T);
  std::vector<int32_t> stream(b.tok);
  stream.push_back(b.tgt[T - 1]);
  CAPTURE(doctest::toString(stream));
  int eods = 0;
  for (size_t i = 0; i < stream.size(); ++i) {
    eods += stream[i] == eod;
    // two eods in a row only around the empty document (a single eod of its own): never three
    if (i >= 2) CHECK_FALSE((stream[i] == eod && stream[i - 1] == eod && stream[i - 2] == eod));
  }
  CHECK(std::count(stream.begin(), stream.begin() + T, eod) == 4);  // the first epoch: one eod per document
  CHECK(eods >= 4);
}

TEST_CASE("configuration errors are sentences") {
  auto a = ids_source("a", 1, 10);
  CHECK_THROWS_WITH_AS(Loader({a}, {{0, {{"x", 1.0}}}}, 0, 1, 0, 1), doctest::Contains("'x', which is not one of: a"),
                       kiln::Error);
  CHECK_THROWS_WITH_AS(Loader({a}, {{5, {{"a", 1.0}}}}, 0, 1, 0, 1), doctest::Contains("first stage starts at 5"),
                       kiln::Error);
  CHECK_THROWS_WITH_AS(Loader({a}, {{0, {{"a", 1.0}}}}, 0, 1, 0, 16), doctest::Contains("fewer than the 16 ranks"),
                       kiln::Error);
  CHECK_THROWS_WITH_AS(Loader({a}, {{0, {{"a", 0.0}}}}, 0, 1, 0, 1), doctest::Contains("no source a positive weight"),
                       kiln::Error);
}
