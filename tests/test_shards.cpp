// tests/test_shards.cpp: datatrove-layout shards and Megatron .bin/.idx: round trips, and corrupt files, each of
// which must give a kiln::Error naming the file and the position, never a crash or garbage tokens.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kiln/data/megatron.hpp"
#include "kiln/data/shards.hpp"
#include "kiln/data/text_sources.hpp"

namespace fs = std::filesystem;
using namespace kiln::data;

namespace {

struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("kiln_test_shards_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string path(const std::string& n) const { return (dir / n).string(); }
};

std::vector<std::vector<int32_t>> sample_docs(int64_t vocab) {
  return {{1, 2, 3}, {}, {int32_t(vocab - 1), 0}, {7}, {5, 5, 5, 5, 5, 5}};
}

void write_shard(const std::string& prefix, const std::vector<std::vector<int32_t>>& docs, int64_t vocab) {
  ShardWriter w(prefix, vocab, "test-tokenizer", 42);
  w.add_source("a.txt");
  for (const auto& d : docs) w.add_document(d);
  w.finish();
}

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_all(const std::string& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// A shard as datatrove's TokenizedFile writes it (pipeline/tokens/tokenizer.py): little-endian tokens of token_bytes
// bytes, u64 document ends, and `metadata` as the .ds.metadata text ("" = no file); `loss`, if given, as .ds.loss.
void write_datatrove(const std::string& prefix, const std::vector<std::vector<int32_t>>& docs, int token_bytes,
                     const std::string& metadata, const std::string* loss = nullptr) {
  std::string data, index;
  uint64_t end = 0;
  for (const auto& d : docs) {
    for (int32_t t : d) {
      const uint32_t v = uint32_t(t);
      data.append(reinterpret_cast<const char*>(&v), size_t(token_bytes));
    }
    end += d.size();
    index.append(reinterpret_cast<const char*>(&end), 8);
  }
  write_all(prefix + ".ds", data);
  write_all(prefix + ".ds.index", index);
  if (!metadata.empty()) write_all(prefix + ".ds.metadata", metadata);
  if (loss) write_all(prefix + ".ds.loss", *loss);
}

// The message of the kiln::Error thrown by f ("" when none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("shard round trip, u16 and u32") {
  Scratch s;
  for (int64_t vocab : {300, 65536, 128256}) {
    CAPTURE(vocab);
    const auto docs = sample_docs(vocab);
    const std::string prefix = s.path("rt" + std::to_string(vocab));
    write_shard(prefix, docs, vocab);
    CHECK(fs::file_size(prefix + ".ds") == 12 * uint64_t(token_bytes_for_vocab(vocab)));
    CHECK(fs::file_size(prefix + ".ds.index") == docs.size() * 8);
    ShardReader r(prefix);
    REQUIRE(r.size() == docs.size());
    CHECK(r.total_tokens() == 12);
    CHECK(r.vocab_size() == vocab);
    CHECK(r.metadata()->tokenizer == "test-tokenizer");
    CHECK(r.metadata()->seed == 42);
    CHECK(r.metadata()->sources == std::vector<std::string>{"a.txt"});
    std::vector<int32_t> got;
    for (size_t i = 0; i < docs.size(); ++i) {
      r.copy_document(i, got);
      CHECK(got == docs[i]);
      CHECK(r.tokens_in(i) == docs[i].size());
    }
    int32_t mid[2];
    r.read(4, 2, 2, mid);
    CHECK(mid[0] == 5);
  }
  // No temporary files are left behind.
  for (const auto& e : fs::directory_iterator(s.dir)) CHECK(e.path().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("an empty shard and a shard abandoned before finish()") {
  Scratch s;
  write_shard(s.path("empty"), {}, 100);
  ShardReader r(s.path("empty"));
  CHECK(r.size() == 0);
  {
    ShardWriter w(s.path("half"), 100, "t");
    w.add_document(std::vector<int32_t>{1, 2});
  }  // destroyed without finish()
  CHECK_FALSE(fs::exists(s.path("half.ds")));
  CHECK_FALSE(fs::exists(s.path("half.ds.index")));
  for (const auto& e : fs::directory_iterator(s.dir)) CHECK(e.path().string().find("half") == std::string::npos);
}

TEST_CASE("writer refuses tokens outside the vocabulary") {
  Scratch s;
  ShardWriter w(s.path("bad"), 10, "t");
  CHECK(error_of([&] { w.add_document(std::vector<int32_t>{3, 10}); }).find("outside the vocabulary of 10") !=
        std::string::npos);
}

TEST_CASE("datatrove shard without Kiln metadata: needs the token size") {
  Scratch s;
  write_shard(s.path("dt"), sample_docs(300), 300);
  fs::remove(s.path("dt.ds.metadata"));
  CHECK(error_of([&] { ShardReader r(s.path("dt")); }).find("dt.ds.metadata is missing") != std::string::npos);
  ShardReader r(s.path("dt"), 2);
  CHECK(r.size() == 5);
  CHECK(r.vocab_size() == 0);
}

TEST_CASE("datatrove shards: datatrove's metadata text, and a token size given for what it does not say") {
  Scratch s;
  const auto docs = sample_docs(300);  // 12 tokens in 5 documents
  const std::string p = s.path("dt");
  auto read_back = [&](const ShardReader& r) {
    REQUIRE(r.size() == docs.size());
    std::vector<int32_t> got;
    for (size_t i = 0; i < docs.size(); ++i) {
      r.copy_document(i, got);
      CHECK(got == docs[i]);
    }
  };
  SUBCASE("datatrove >= 0.3.0: \"<tokenizer>|<token size>\", token count, humanized count") {
    for (int tb : {2, 4}) {
      CAPTURE(tb);
      write_datatrove(p, docs, tb, "HuggingFaceTB/SmolLM2-135M|" + std::to_string(tb) + "\n12\n12.0 T");
      ShardReader r(p);  // no token size needed: the metadata says it
      CHECK(r.token_bytes() == tb);
      CHECK(r.tokenizer() == "HuggingFaceTB/SmolLM2-135M");
      REQUIRE(r.datatrove_metadata());
      CHECK(r.datatrove_metadata()->tokens == 12);
      CHECK_FALSE(r.metadata());
      CHECK(r.vocab_size() == 0);  // datatrove does not record it
      read_back(r);
      ShardReader same(p, tb);
      CHECK(same.size() == docs.size());
      const int other = tb == 2 ? 4 : 2;
      CHECK(error_of([&] { ShardReader r2(p, other); })
                .find("dt.ds.metadata: datatrove's line 1 says " + std::to_string(tb) + "-byte tokens but " +
                      std::to_string(other) + " was asked for") != std::string::npos);
    }
    // without a tokenizer name datatrove writes the size twice
    write_datatrove(p, docs, 2, "Unknown Tokenizer|2|2\n12\n12.0 T\n");
    ShardReader r(p);
    CHECK(r.tokenizer() == "");
    CHECK(r.token_bytes() == 2);
  }
  SUBCASE("datatrove < 0.3.0: the tokenizer name alone, so the token size must be given") {
    write_datatrove(p, docs, 2, "gpt2\n12\n12.0 T");
    auto m = error_of([&] { ShardReader r(p); });
    CHECK_MESSAGE(m.find("dt.ds.metadata: datatrove's metadata gives no token size") != std::string::npos, m);
    CHECK_MESSAGE(m.find("give the token size (2 for u16, 4 for u32)") != std::string::npos, m);
    CHECK_MESSAGE(m.find("suggest 2") != std::string::npos, m);
    ShardReader r(p, 2);
    CHECK(r.tokenizer() == "gpt2");
    read_back(r);
    // a wrong size contradicts the token count
    m = error_of([&] { ShardReader r4(p, 4); });
    CHECK_MESSAGE(m.find("dt.ds.metadata: datatrove's line 2 says 12 tokens but ") != std::string::npos, m);
    CHECK_MESSAGE(m.find("holds 6 tokens of 4 bytes (24 bytes)") != std::string::npos, m);
  }
  SUBCASE("malformed datatrove metadata names the file, the line and what was expected") {
    write_datatrove(p, docs, 2, "gpt2|2\n13\n13.0 T");
    auto m = error_of([&] { ShardReader r(p); });
    CHECK_MESSAGE(m.find("dt.ds.metadata: datatrove's line 2 says 13 tokens but ") != std::string::npos, m);
    CHECK_MESSAGE(m.find("dt.ds holds 12 tokens") != std::string::npos, m);
    write_datatrove(p, docs, 2, "gpt2|3\n12\n12.0 T");
    m = error_of([&] { ShardReader r(p); });
    CHECK_MESSAGE(m.find("dt.ds.metadata: line 1 \"gpt2|3\" ends in token size 3, expected 2 (u16) or 4 (u32)") !=
                      std::string::npos, m);
    write_datatrove(p, docs, 2, "gpt2|2\ntwelve\n");
    m = error_of([&] { ShardReader r(p); });
    CHECK_MESSAGE(m.find("dt.ds.metadata: line 2 (the token count) is \"twelve\", expected a whole number") !=
                      std::string::npos, m);
    write_datatrove(p, docs, 2, "gpt2|2");
    m = error_of([&] { ShardReader r(p); });
    CHECK_MESSAGE(m.find("dt.ds.metadata: 1 lines of text, not a metadata file") != std::string::npos, m);
    CHECK_MESSAGE(m.find("Kiln's metadata is a JSON object") != std::string::npos, m);
  }
  SUBCASE("no metadata: the token size given to open_shards / Source::open's callers") {
    write_datatrove(p, docs, 4, "");
    CHECK(error_of([&] { open_shards(s.dir.string()); }).find("dt.ds.metadata is missing; give the token size") !=
          std::string::npos);
    const auto shards = open_shards(s.dir.string(), 4);
    REQUIRE(shards.size() == 1);
    CHECK(shards[0]->token_bytes() == 4);
    read_back(*shards[0]);
    CHECK(error_of([&] { open_shards(s.dir.string(), 3); }).find("token size 3 was asked for; expected 2") !=
          std::string::npos);
  }
  SUBCASE("a .ds.loss: one byte per token, 0 or 1") {
    std::string loss(12, '\1');
    loss[1] = '\0';
    write_datatrove(p, docs, 2, "gpt2|2\n12\n12.0 T", &loss);
    ShardReader r(p);
    CHECK(r.has_loss_mask());
    uint8_t mask[3];
    r.read_loss_mask(0, 0, 3, mask);
    CHECK(std::vector<uint8_t>(mask, mask + 3) == std::vector<uint8_t>{1, 0, 1});
    loss[5] = '\2';
    write_all(p + ".ds.loss", loss);
    ShardReader bad(p);
    CHECK(error_of([&] { bad.read_loss_mask(3, 0, 1, mask); })
              .find("dt.ds.loss: byte 5 (document 3, offset 0) is 2, expected 0 (no loss) or 1") != std::string::npos);
    write_all(p + ".ds.loss", loss.substr(0, 11));
    CHECK(error_of([&] { ShardReader r2(p); }).find("dt.ds.loss: size 11 bytes, expected one per token: ") !=
          std::string::npos);
    fs::remove(p + ".ds.loss");
    CHECK_FALSE(ShardReader(p).has_loss_mask());
  }
}

TEST_CASE("corrupt shards name the file and the position") {
  Scratch s;
  const std::string p = s.path("c");
  auto fresh = [&] { write_shard(p, sample_docs(300), 300); };

  SUBCASE("truncated .ds") {
    fresh();
    std::string d = read_all(p + ".ds");
    write_all(p + ".ds", d.substr(0, d.size() - 1));
    auto m = error_of([&] { ShardReader r(p); });
    CHECK(m.find("c.ds: size 23 bytes is not a multiple of the 2-byte token size") != std::string::npos);
    write_all(p + ".ds", d.substr(0, d.size() - 2));
    m = error_of([&] { ShardReader r(p); });
    CHECK(m.find("c.ds.index: index entry 4 (offset 12) is past the end of the data") != std::string::npos);
  }
  SUBCASE("index going backwards") {
    fresh();
    std::string ix = read_all(p + ".ds.index");
    uint64_t v = 1;
    std::memcpy(ix.data() + 16, &v, 8);  // entry 2: 5 -> 1, after entry 1 = 3
    write_all(p + ".ds.index", ix);
    auto m = error_of([&] { ShardReader r(p); });
    CHECK(m.find("c.ds.index: index entry 2 (offset 1) goes backwards (entry 1 is 3)") != std::string::npos);
  }
  SUBCASE("index not matching the data length") {
    fresh();
    std::string d = read_all(p + ".ds");
    write_all(p + ".ds", d + std::string(2, '\0'));
    auto m = error_of([&] { ShardReader r(p); });
    CHECK(m.find("c.ds: data file holds 13 tokens but the index ends at 12") != std::string::npos);
  }
  SUBCASE("index size not a multiple of 8") {
    fresh();
    write_all(p + ".ds.index", read_all(p + ".ds.index") + "x");
    CHECK(error_of([&] { ShardReader r(p); }).find("c.ds.index: size 41 bytes is not a multiple of 8") !=
          std::string::npos);
  }
  SUBCASE("bad metadata") {
    fresh();
    auto meta = nlohmann::json::parse(read_all(p + ".ds.metadata"));
    auto put = [&](nlohmann::json j) { write_all(p + ".ds.metadata", j.dump()); };
    auto j = meta;
    j["documents"] = 4;
    put(j);
    CHECK(error_of([&] { ShardReader r(p); }).find("c.ds.metadata: says 4 documents but") != std::string::npos);
    j = meta;
    j["tokens"] = 13;
    put(j);
    CHECK(error_of([&] { ShardReader r(p); }).find("says 13 tokens") != std::string::npos);
    j = meta;
    j["token_dtype"] = "u32";
    put(j);
    CHECK(error_of([&] { ShardReader r(p); }).find("does not fit vocab_size 300") != std::string::npos);
    j = meta;
    j["vocab_size"] = -1;
    put(j);
    CHECK(error_of([&] { ShardReader r(p); }).find("field \"vocab_size\"") != std::string::npos);
    j = meta;
    j.erase("seed");
    put(j);
    CHECK(error_of([&] { ShardReader r(p); }).find("field \"seed\" is missing") != std::string::npos);
    write_all(p + ".ds.metadata", "{not json");
    CHECK(error_of([&] { ShardReader r(p); }).find("c.ds.metadata: not valid JSON") != std::string::npos);
    write_all(p + ".ds.metadata", R"({"format": 1, "format": 1})");  // a field twice: which one counts?
    CHECK(error_of([&] { ShardReader r(p); }).find("c.ds.metadata: key \"format\" is given twice") != std::string::npos);
    j = meta;
    j["vocab_size"] = 5;  // tokens up to 299 are stored
    put(j);
    ShardReader r(p);
    std::vector<int32_t> got;
    CHECK(error_of([&] { r.copy_document(2, got); }).find("c.ds: token 3 (document 2, offset 0) is 299, outside the "
                                                          "vocabulary of 5 ids") != std::string::npos);
  }
  SUBCASE("missing files") {
    CHECK(error_of([&] { ShardReader r(s.path("none")); }).find("cannot open") != std::string::npos);
    CHECK(error_of([&] { shard_prefixes(s.path("none")); }).find("no shard at") != std::string::npos);
  }
}

TEST_CASE("Megatron round trip and re-read as documents") {
  Scratch s;
  for (int64_t vocab : {300, 128256}) {
    const auto docs = sample_docs(vocab);
    const std::string p = s.path("m" + std::to_string(vocab));
    write_megatron(p, docs, vocab);
    MegatronReader r(p, vocab);
    CHECK(r.dtype_code() == (vocab <= 65536 ? 8 : 4));
    REQUIRE(r.size() == docs.size());
    CHECK(r.total_tokens() == 12);
    std::vector<int32_t> got;
    for (size_t i = 0; i < docs.size(); ++i) {
      r.copy_document(i, got);
      CHECK(got == docs[i]);
    }
  }
}

TEST_CASE("Megatron: several sequences per document") {
  // Hand-built: 3 sequences (2, 1, 3 tokens, u16), 2 documents: {seq 0, seq 1} and {seq 2}.
  std::string idx(kMegatronMagic, 9);
  auto put = [&](auto v) { idx.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(uint64_t(1));
  put(uint8_t(8));
  put(uint64_t(3));
  put(uint64_t(3));
  for (int32_t sz : {2, 1, 3}) put(sz);
  for (int64_t p : {0, 4, 6}) put(p);
  for (int64_t d : {0, 2, 3}) put(d);
  std::vector<uint16_t> bin{10, 11, 12, 13, 14, 15};
  MegatronView v(std::as_bytes(std::span(idx.data(), idx.size())), std::as_bytes(std::span(bin)), "hand");
  REQUIRE(v.size() == 2);
  std::vector<int32_t> got;
  v.copy_document(0, got);
  CHECK(got == std::vector<int32_t>{10, 11, 12});
  v.copy_document(1, got);
  CHECK(got == std::vector<int32_t>{13, 14, 15});
}

TEST_CASE("corrupt Megatron files name the file and the position") {
  Scratch s;
  const std::string p = s.path("mg");
  write_megatron(p, sample_docs(300), 300);
  const std::string idx = read_all(p + ".idx"), bin = read_all(p + ".bin");
  auto with = [&](std::string i, std::string b) {
    write_all(p + ".idx", i);
    write_all(p + ".bin", b);
    return error_of([&] { MegatronReader r(p); });
  };
  std::string i = idx;
  i[0] = 'X';
  CHECK(with(i, bin).find("mg.idx: bad magic at byte 0") != std::string::npos);
  i = idx;
  i[9] = 2;
  CHECK(with(i, bin).find("mg.idx: version 2 at byte 9, expected 1") != std::string::npos);
  i = idx;
  i[17] = 6;
  CHECK(with(i, bin).find("mg.idx: dtype code 6 at byte 17") != std::string::npos);
  i = idx;
  i[18] = 6;  // 6 sequences
  CHECK(with(i, bin).find("sequences and 6 document indices need") != std::string::npos);
  i = idx;
  i[18] = char(0xff), i[25] = char(0x7f);  // absurd count: no overflow, a message
  CHECK(with(i, bin).find("do not fit") != std::string::npos);
  i = idx;
  i[26] = 7;  // document count 7 (6 expected)
  CHECK(with(i, bin).find("mg.idx:") != std::string::npos);
  CHECK(with(idx, bin.substr(0, bin.size() - 2)).find("mg.idx: sequence 4 ends at byte 24, past the end of") !=
        std::string::npos);
  CHECK(with(idx, bin + "xx").find("mg.bin: data file holds 26 bytes but the sequences end at byte 24") !=
        std::string::npos);
  i = idx;
  int64_t back = 1;
  std::memcpy(i.data() + 34 + 5 * 4 + 5 * 8 + 3 * 8, &back, 8);  // document index 3: 3 -> 1
  CHECK(with(i, bin).find("mg.idx: document index 3 (sequence 1) goes backwards (entry 2 is 2)") != std::string::npos);
  i = idx;
  int32_t neg = -1;
  std::memcpy(i.data() + 34 + 4, &neg, 4);
  CHECK(with(i, bin).find("mg.idx: sequence 1 has negative size -1") != std::string::npos);
  CHECK(with(idx.substr(0, 20), bin).find("shorter than the 34-byte header") != std::string::npos);
}

TEST_CASE("text sources: fortune, jsonl, lines, whole files") {
  Scratch s;
  write_all(s.path("f"), "first\nfortune\n%\nsecond\n%\n%\nthird\n");
  write_all(s.path("f.dat"), "binary");
  write_all(s.path("a.jsonl"), "{\"text\": \"hello\", \"id\": 1}\n\n{\"text\": \"w\\u00f6rld\"}\n");
  write_all(s.path("b.txt"), "line one\nline two\n");
  auto collect = [](TextStream& t) {
    std::vector<std::string> v;
    std::string d;
    while (t.next(d)) v.push_back(d);
    return v;
  };
  TextOptions o;
  {
    TextStream t({s.path("f")}, o);
    CHECK(collect(t) == std::vector<std::string>{"first\nfortune", "second", "third"});
  }
  {
    TextStream t({s.dir.string()}, o);  // a directory: .dat skipped, formats by content / extension
    auto v = collect(t);
    CHECK(v == std::vector<std::string>{"hello", "wörld", "line one\nline two\n", "first\nfortune", "second", "third"});
    CHECK(t.files().size() == 3);
  }
  o.split_lines = true;
  {
    TextStream t({s.path("b.txt")}, o);
    CHECK(collect(t) == std::vector<std::string>{"line one", "line two"});
  }
  o.field = "id";
  {
    TextStream t({s.path("a.jsonl")}, o);
    CHECK(error_of([&] { collect(t); }).find("a.jsonl:1: field \"id\" is not a string") != std::string::npos);
  }
  write_all(s.path("bad.jsonl"), "{\"text\": 1\n");
  o.field = "text";
  TextStream t({s.path("bad.jsonl")}, o);
  CHECK(error_of([&] { collect(t); }).find("bad.jsonl:1: not valid JSON") != std::string::npos);
}
