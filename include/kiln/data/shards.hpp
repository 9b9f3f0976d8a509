// kiln/data/shards.hpp: tokenized documents on disk, datatrove/nanotron layout; a common DocumentSource interface.
//
// A shard is three files sharing a prefix (FACTS.md "Formats"; datatrove pipeline/tokens/tokenizer.py):
//   <prefix>.ds           raw little-endian tokens of every document back to back: u16 when vocab <= 65536, else u32
//   <prefix>.ds.index     u64 LE cumulative document END offsets, in tokens (document i is [end[i-1], end[i]), end[-1] = 0)
//   <prefix>.ds.metadata  Kiln's JSON: {"format":"kiln-shard-1","tokenizer":..., "vocab_size":..., "token_dtype":"u16"|"u32",
//                         "documents":..., "tokens":..., "sources":[...], "seed":...}
//   <prefix>.ds.loss      optional (datatrove's save_loss_metadata): one byte per token, 1 = train on it as a target,
//                         0 = no loss (a prompt); the loader turns 0 into target -1
// datatrove (TokenizedFile.write_final_metadata) writes `<prefix>.ds.metadata` as three lines of text instead:
//   "<tokenizer name or path>|<token size>"   the size (2 or 4) since datatrove 0.3.0, the name alone before; with
//                                             no name "Unknown Tokenizer|<size>|<size>"
//   "<token count>"                           tokens in this .ds
//   "<token count, humanized>"                e.g. "1.23 MT" (ignored)
// It has no vocabulary size, and its documents end with the tokenizer's EOS token (its DocumentTokenizer appends
// one). The merger also writes `<name>.ds.metadata` for the total of several shards, beside no `<name>.ds`.
// So the token size of a shard comes from Kiln's metadata, else datatrove's first line, else the caller
// (ShardReader's `token_bytes`, Source::open's, open_shards'); a given size must agree with the metadata's.
//
// Kiln stores documents WITHOUT an end-of-document token: the loader (loader.hpp) appends the configured id when
// packing, so one shard serves tokenizers whose end ids differ only by convention, and document boundaries live in the
// index. A document that ends with the id already (datatrove's, Megatron's --append-eod) gets no second one.
//
// Reading never trusts the files: the index must be non-decreasing and end exactly at the data length, the data length
// must be a whole number of tokens, the metadata must agree with both, and every token read must be below the vocab
// size. Every violation throws kiln::Error naming the file and the position. Writing streams through fixed buffers to
// temporary names (`<final>.tmp.<pid>`) and renames them into place on finish(): a half-written shard never appears
// under its final names (the metadata is renamed last, so its presence means the shard is complete).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"

namespace kiln::data {

static_assert(std::endian::native == std::endian::little,
              "kiln::data shards hold little-endian tokens read in place; big-endian hosts are not supported");

// ---------------------------------------------------------------------------------------------
// DocumentSource: what the loader and the re-sharder need from any tokenized document set.
// ---------------------------------------------------------------------------------------------
class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual uint64_t size() const = 0;                  // number of documents
  virtual uint64_t tokens_in(uint64_t doc) const = 0;  // tokens of document `doc` (no end token)
  virtual uint64_t total_tokens() const = 0;
  virtual int64_t vocab_size() const = 0;              // 0 when unknown
  virtual const std::string& name() const = 0;         // for messages: the file prefix
  // Copies tokens [begin, begin + n) of document `doc` to out as int32 (begin + n <= tokens_in(doc)).
  virtual void read(uint64_t doc, uint64_t begin, uint64_t n, int32_t* out) const = 0;
  // The file the tokens are in, for messages (a shard's .ds, a Megatron .bin).
  virtual std::string data_file() const { return name(); }
  // A loss mask (datatrove's .ds.loss): out[i] = 1 where token begin + i is trained on as a target, 0 where not.
  virtual bool has_loss_mask() const { return false; }
  virtual void read_loss_mask(uint64_t /*doc*/, uint64_t /*begin*/, uint64_t n, uint8_t* out) const {
    std::fill_n(out, n, uint8_t(1));  // no mask: every token is a target
  }
  // Replaces `out` with the whole document.
  void copy_document(uint64_t doc, std::vector<int32_t>& out) const {
    out.resize(tokens_in(doc));
    if (!out.empty()) read(doc, 0, out.size(), out.data());
  }
};

// Documents held in memory (tests, small corpora).
class MemorySource final : public DocumentSource {
 public:
  MemorySource(std::vector<std::vector<int32_t>> docs, std::string name = "memory", int64_t vocab = 0)
      : docs_(std::move(docs)), name_(std::move(name)), vocab_(vocab) {
    for (auto& d : docs_) total_ += d.size();
  }
  uint64_t size() const override { return docs_.size(); }
  uint64_t tokens_in(uint64_t doc) const override { return docs_.at(doc).size(); }
  uint64_t total_tokens() const override { return total_; }
  int64_t vocab_size() const override { return vocab_; }
  const std::string& name() const override { return name_; }
  void read(uint64_t doc, uint64_t begin, uint64_t n, int32_t* out) const override {
    const auto& d = docs_.at(doc);
    KILN_CHECK(begin + n <= d.size(), name_, ": read past the end of document ", doc);
    std::copy_n(d.data() + begin, n, out);
  }

 private:
  std::vector<std::vector<int32_t>> docs_;
  std::string name_;
  int64_t vocab_;
  uint64_t total_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Files: a read-only mapping and a buffered, atomically renamed writer (kiln/core/file.hpp).
// ---------------------------------------------------------------------------------------------
namespace detail {

using core::AtomicFile;  // kiln/core/file.hpp
using core::MappedFile;
// fsyncs the directory holding `file`.
inline void fsync_dir(const std::string& file) { core::fsync_dir(std::filesystem::path(file).parent_path()); }

template <class S>
S load_le(const std::byte* p) {
  S s;
  std::memcpy(&s, p, sizeof(S));
  return s;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------
inline constexpr std::string_view kShardFormat = "kiln-shard-1";

// Bytes per token for a vocabulary: u16 holds ids < 65536.
constexpr int token_bytes_for_vocab(int64_t vocab) { return vocab <= 65536 ? 2 : 4; }

struct ShardMetadata {
  std::string tokenizer;             // the tokenizer's name (Tokenizer::name())
  int64_t vocab_size = 0;
  int token_bytes = 2;               // 2 (u16) or 4 (u32)
  uint64_t documents = 0, tokens = 0;
  std::vector<std::string> sources;  // input files the documents came from
  uint64_t seed = 0;                 // the shuffle seed of the tokenize run

  nlohmann::json to_json() const {
    return {{"format", kShardFormat}, {"tokenizer", tokenizer},  {"vocab_size", vocab_size},
            {"token_dtype", token_bytes == 2 ? "u16" : "u32"},  {"documents", documents},
            {"tokens", tokens},        {"sources", sources},      {"seed", seed}};
  }
  // Parses and checks the types of every field; `file` names the metadata file in messages.
  static ShardMetadata from_json(std::string_view text, const std::string& file) {
    const nlohmann::json j = core::parse_json(text, file);
    KILN_CHECK(j.is_object(), file, ": not a JSON object (Kiln shard metadata expected)");
    auto field = [&](const char* k) -> const nlohmann::json& {
      KILN_CHECK(j.contains(k), file, ": field \"", k, "\" is missing");
      return j.at(k);
    };
    KILN_CHECK(field("format") == kShardFormat, file, ": field \"format\" is ", field("format").dump(), ", expected \"",
               kShardFormat, "\"");
    ShardMetadata m;
    auto uint_field = [&](const char* k) -> uint64_t {
      const auto& v = field(k);
      KILN_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), file, ": field \"", k,
                 "\" is ", v.dump(), ", expected a non-negative integer");
      return v.get<uint64_t>();
    };
    KILN_CHECK(field("tokenizer").is_string(), file, ": field \"tokenizer\" must be a string");
    m.tokenizer = j.at("tokenizer").get<std::string>();
    uint64_t vocab = uint_field("vocab_size");
    KILN_CHECK(vocab >= 1 && vocab <= uint64_t(INT32_MAX), file, ": field \"vocab_size\" is ", vocab,
               ", expected 1..2^31-1");
    m.vocab_size = int64_t(vocab);
    const auto& dt = field("token_dtype");
    KILN_CHECK(dt == "u16" || dt == "u32", file, ": field \"token_dtype\" is ", dt.dump(), ", expected \"u16\" or \"u32\"");
    m.token_bytes = dt == "u16" ? 2 : 4;
    KILN_CHECK(m.token_bytes == token_bytes_for_vocab(m.vocab_size), file, ": token_dtype ", dt.dump(),
               " does not fit vocab_size ", m.vocab_size, " (u16 when vocab <= 65536, else u32)");
    m.documents = uint_field("documents");
    m.tokens = uint_field("tokens");
    m.seed = uint_field("seed");
    const auto& src = field("sources");
    KILN_CHECK(src.is_array(), file, ": field \"sources\" must be an array of strings");
    for (const auto& s : src) {
      KILN_CHECK(s.is_string(), file, ": field \"sources\" must be an array of strings");
      m.sources.push_back(s.get<std::string>());
    }
    return m;
  }
};

// datatrove's metadata text (see the top of this file).
struct DatatroveMetadata {
  std::string tokenizer;  // the tokenizer's name or path; "" when datatrove had none ("Unknown Tokenizer")
  int token_bytes = 0;    // 2 or 4; 0 when the file does not say (datatrove < 0.3.0)
  uint64_t tokens = 0;

  static DatatroveMetadata parse(std::string_view text, const std::string& file) {
    std::vector<std::string_view> lines;
    for (size_t at = 0; at <= text.size();) {
      size_t nl = text.find('\n', at);
      if (nl == std::string_view::npos) nl = text.size();
      std::string_view l = text.substr(at, nl - at);
      if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
      lines.push_back(l);
      at = nl + 1;
    }
    while (!lines.empty() && lines.back().empty()) lines.pop_back();
    const char* expected = " (Kiln's metadata is a JSON object; datatrove's is the lines \"<tokenizer>|<token size>\", "
                           "\"<token count>\", \"<count, humanized>\")";
    KILN_CHECK(lines.size() == 2 || lines.size() == 3, file, ": ", lines.size(), " lines of text, not a metadata file",
               expected);
    DatatroveMetadata m;
    std::string_view name = lines[0];
    const size_t bar = name.rfind('|');
    const std::string_view size = bar == std::string_view::npos ? std::string_view() : name.substr(bar + 1);
    if (!size.empty() && size.find_first_not_of("0123456789") == std::string_view::npos) {  // "<name>|<size>"
      KILN_CHECK(size == "2" || size == "4", file, ": line 1 \"", lines[0], "\" ends in token size ", size,
                 ", expected 2 (u16) or 4 (u32)");
      m.token_bytes = size[0] - '0';
      name = name.substr(0, bar);
      // datatrove without a tokenizer name writes "Unknown Tokenizer|<size>|<size>"
      if (name == "Unknown Tokenizer|" + std::string(size)) name = "Unknown Tokenizer";
    }
    KILN_CHECK(!name.empty(), file, ": line 1 \"", lines[0], "\" has no tokenizer name", expected);
    m.tokenizer = name == "Unknown Tokenizer" ? std::string() : std::string(name);
    const std::string_view count = lines[1];
    bool digits = !count.empty() && count.size() <= 19;
    for (char c : count) digits = digits && c >= '0' && c <= '9';
    KILN_CHECK(digits, file, ": line 2 (the token count) is \"", count, "\", expected a whole number", expected);
    for (char c : count) m.tokens = m.tokens * 10 + uint64_t(c - '0');
    return m;
  }
};

// Whichever metadata a `.ds.metadata` file holds: Kiln's JSON (it starts with '{') or datatrove's text.
struct AnyShardMetadata {
  std::optional<ShardMetadata> kiln;
  std::optional<DatatroveMetadata> datatrove;

  static AnyShardMetadata parse(std::string_view text, const std::string& file) {
    AnyShardMetadata m;
    const size_t first = text.find_first_not_of(" \t\r\n");
    if (first != std::string_view::npos && text[first] == '{') m.kiln = ShardMetadata::from_json(text, file);
    else m.datatrove = DatatroveMetadata::parse(text, file);
    return m;
  }
};

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

// A validated view of one shard. Built from mapped files (ShardReader) or from memory (parse, used by the fuzzer).
class ShardView : public DocumentSource {
 public:
  // data: the .ds bytes; index: the .ds.index bytes; meta: the parsed metadata, Kiln's, datatrove's or none;
  // token_bytes: 0 (take it from the metadata), 2 or 4 (checked against the metadata's); loss: the .ds.loss bytes if
  // there is one. name: the prefix, for messages.
  ShardView(std::span<const std::byte> data, std::span<const std::byte> index, AnyShardMetadata meta, int token_bytes,
            std::string name, std::optional<std::span<const std::byte>> loss = std::nullopt)
      : data_(data), index_(index), name_(std::move(name)) {
    const std::string ds = name_ + ".ds", ix = name_ + ".ds.index", md = name_ + ".ds.metadata";
    KILN_CHECK(token_bytes == 0 || token_bytes == 2 || token_bytes == 4, ds, ": token size ", token_bytes,
               " was asked for; expected 2 (u16 tokens) or 4 (u32), or 0 to take it from ", md);
    if (meta.kiln) {
      KILN_CHECK(token_bytes == 0 || token_bytes == meta.kiln->token_bytes, md, ": token_dtype says ",
                 meta.kiln->token_bytes, "-byte tokens but ", token_bytes, " was asked for");
      token_bytes_ = meta.kiln->token_bytes;
      vocab_ = meta.kiln->vocab_size;
    } else if (meta.datatrove) {
      const int says = meta.datatrove->token_bytes;
      KILN_CHECK(says == 0 || token_bytes == 0 || says == token_bytes, md, ": datatrove's line 1 says ", says,
                 "-byte tokens but ", token_bytes, " was asked for");
      token_bytes_ = says ? says : token_bytes;
      if (token_bytes_ == 0) {  // the size cannot be checked against the data: the caller must say it
        const uint64_t n = meta.datatrove->tokens;
        const bool hint = n > 0 && data_.size() % n == 0 && (data_.size() / n == 2 || data_.size() / n == 4);
        KILN_FAIL(md, ": datatrove's metadata gives no token size (line 1 is the tokenizer name alone, as datatrove "
                  "before 0.3.0 wrote it); give the token size (2 for u16, 4 for u32)",
                  hint ? " - the " + std::to_string(data_.size()) + " bytes of " + ds + " for its " + std::to_string(n) +
                             " tokens suggest " + std::to_string(data_.size() / n)
                       : std::string());
      }
      vocab_ = 0;
    } else {
      KILN_CHECK(token_bytes == 2 || token_bytes == 4, md,
                 " is missing; give the token size (2 for u16, 4 for u32) to read a shard without metadata");
      token_bytes_ = token_bytes;
      vocab_ = 0;
    }
    KILN_CHECK(index_.size() % 8 == 0, ix, ": size ", index_.size(), " bytes is not a multiple of 8 (u64 offsets)");
    KILN_CHECK(data_.size() % size_t(token_bytes_) == 0, ds, ": size ", data_.size(), " bytes is not a multiple of the ",
               token_bytes_, "-byte token size (truncated?)");
    docs_ = index_.size() / 8;
    tokens_ = data_.size() / size_t(token_bytes_);
    if (meta.datatrove)  // before the index: a wrong token size shows here first, with the count it contradicts
      KILN_CHECK(meta.datatrove->tokens == tokens_, md, ": datatrove's line 2 says ", meta.datatrove->tokens,
                 " tokens but ", ds, " holds ", tokens_, " tokens of ", token_bytes_, " bytes (", data_.size(),
                 " bytes)", token_bytes && !meta.datatrove->token_bytes ? "; is the token size right?" : "");
    uint64_t prev = 0;
    for (uint64_t i = 0; i < docs_; ++i) {
      uint64_t e = end(i);
      KILN_CHECK(e >= prev, ix, ": index entry ", i, " (offset ", e, ") goes backwards (entry ", i - 1, " is ", prev, ")");
      KILN_CHECK(e <= tokens_, ix, ": index entry ", i, " (offset ", e, ") is past the end of the data: ", ds, " holds ",
                 tokens_, " tokens");
      prev = e;
    }
    KILN_CHECK(prev == tokens_, ds, ": data file holds ", tokens_, " tokens but the index ends at ", prev,
               docs_ ? "" : " (empty index)");
    if (meta.kiln) {
      KILN_CHECK(meta.kiln->documents == docs_, md, ": says ", meta.kiln->documents, " documents but ", ix, " holds ", docs_);
      KILN_CHECK(meta.kiln->tokens == tokens_, md, ": says ", meta.kiln->tokens, " tokens but ", ds, " holds ", tokens_);
    }
    if (loss) {
      KILN_CHECK(loss->size() == tokens_, name_, ".ds.loss: size ", loss->size(), " bytes, expected one per token: ",
                 ds, " holds ", tokens_, " tokens");
      loss_ = *loss;
      has_loss_ = true;
    }
    meta_ = std::move(meta.kiln);
    datatrove_ = std::move(meta.datatrove);
  }
  // Kiln metadata or none (the fuzzer's and older callers' form).
  ShardView(std::span<const std::byte> data, std::span<const std::byte> index, std::optional<ShardMetadata> meta,
            int token_bytes, std::string name)
      : ShardView(data, index, AnyShardMetadata{std::move(meta), std::nullopt}, token_bytes, std::move(name)) {}

  uint64_t size() const override { return docs_; }
  uint64_t begin_of(uint64_t doc) const { return doc == 0 ? 0 : end(doc - 1); }
  uint64_t tokens_in(uint64_t doc) const override {
    KILN_CHECK(doc < docs_, name_, ": document ", doc, " out of range (", docs_, " documents)");
    return end(doc) - begin_of(doc);
  }
  uint64_t total_tokens() const override { return tokens_; }
  int64_t vocab_size() const override { return vocab_; }
  const std::string& name() const override { return name_; }
  int token_bytes() const { return token_bytes_; }
  const std::optional<ShardMetadata>& metadata() const { return meta_; }          // Kiln's
  const std::optional<DatatroveMetadata>& datatrove_metadata() const { return datatrove_; }
  // The tokenizer the metadata names ("" when none does).
  std::string tokenizer() const { return meta_ ? meta_->tokenizer : datatrove_ ? datatrove_->tokenizer : std::string(); }
  std::string data_file() const override { return name_ + ".ds"; }
  bool has_loss_mask() const override { return has_loss_; }
  void read_loss_mask(uint64_t doc, uint64_t begin, uint64_t n, uint8_t* out) const override {
    if (!has_loss_) return DocumentSource::read_loss_mask(doc, begin, n, out);
    const uint64_t len = tokens_in(doc);
    KILN_CHECK(begin <= len && n <= len - begin, name_, ".ds.loss: read of [", begin, ", ", begin + n,
               ") past the end of document ", doc, " (", len, " tokens)");
    const uint64_t first = begin_of(doc) + begin;
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t v = uint8_t(loss_[first + i]);
      KILN_CHECK(v <= 1, name_, ".ds.loss: byte ", first + i, " (document ", doc, ", offset ", begin + i, ") is ", int(v),
                 ", expected 0 (no loss) or 1");
      out[i] = v;
    }
  }

  void read(uint64_t doc, uint64_t begin, uint64_t n, int32_t* out) const override {
    const uint64_t len = tokens_in(doc);
    KILN_CHECK(begin <= len && n <= len - begin, name_, ": read of tokens [", begin, ", ", begin + n,
               ") past the end of document ", doc, " (", len, " tokens)");
    const uint64_t first = begin_of(doc) + begin;
    const std::byte* p = data_.data() + first * uint64_t(token_bytes_);
    uint32_t bad = 0;
    bool any_bad = false;
    if (token_bytes_ == 2) {
      for (uint64_t i = 0; i < n; ++i) out[i] = int32_t(detail::load_le<uint16_t>(p + 2 * i));
    } else {
      for (uint64_t i = 0; i < n; ++i) {
        uint32_t t = detail::load_le<uint32_t>(p + 4 * i);
        if (t > uint32_t(INT32_MAX)) any_bad = true, bad = t;
        out[i] = int32_t(t);
      }
    }
    if (vocab_ > 0 || any_bad) {
      for (uint64_t i = 0; i < n; ++i)
        if (out[i] < 0 || (vocab_ > 0 && out[i] >= vocab_)) {
          int64_t v = any_bad ? int64_t(bad) : out[i];
          KILN_FAIL(name_, ".ds: token ", first + i, " (document ", doc, ", offset ", begin + i, ") is ", v,
                    ", outside the vocabulary of ", vocab_, " ids");
        }
    }
  }

 private:
  uint64_t end(uint64_t i) const { return detail::load_le<uint64_t>(index_.data() + 8 * i); }

  std::span<const std::byte> data_, index_, loss_;
  std::string name_;
  int token_bytes_ = 2;
  int64_t vocab_ = 0;
  uint64_t docs_ = 0, tokens_ = 0;
  bool has_loss_ = false;
  std::optional<ShardMetadata> meta_;
  std::optional<DatatroveMetadata> datatrove_;
};

// A shard opened from its files (mmap). `token_bytes` 0: from the metadata (Kiln's, or datatrove's when it records
// one); 2 or 4: for a shard without metadata or with datatrove's that has no token size, and checked against the
// metadata's when it has one. A `.ds.loss` beside it is its loss mask.
class ShardReader final : public ShardView {
 public:
  explicit ShardReader(const std::string& prefix, int token_bytes = 0)
      : ShardReader(open(prefix), prefix, token_bytes) {}

  // The documents will be read in shuffled order: no large read-ahead.
  void advise_random() const {
    files_->data.advise_random();
    files_->loss.advise_random();
  }

  static bool exists(const std::string& prefix) {
    std::error_code ec;
    return std::filesystem::is_regular_file(prefix + ".ds", ec) && std::filesystem::is_regular_file(prefix + ".ds.index", ec);
  }

 private:
  struct Files {
    detail::MappedFile data, index, loss;
    AnyShardMetadata meta;
    bool has_loss = false;
  };
  static std::shared_ptr<Files> open(const std::string& prefix) {
    auto f = std::make_shared<Files>();
    f->data = detail::MappedFile(prefix + ".ds");
    f->index = detail::MappedFile(prefix + ".ds.index");
    const std::string md = prefix + ".ds.metadata";
    std::error_code ec;
    if (std::filesystem::exists(md, ec)) {
      detail::MappedFile m(md);
      auto b = m.bytes();
      f->meta = AnyShardMetadata::parse(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), md);
    }
    if (std::filesystem::exists(prefix + ".ds.loss", ec)) {
      f->loss = detail::MappedFile(prefix + ".ds.loss");
      f->has_loss = true;
    }
    return f;
  }
  ShardReader(std::shared_ptr<Files> f, const std::string& prefix, int token_bytes)
      : ShardView(f->data.bytes(), f->index.bytes(), f->meta, token_bytes, prefix,
                  f->has_loss ? std::optional(f->loss.bytes()) : std::nullopt),
        files_(std::move(f)) {}

  std::shared_ptr<Files> files_;  // the mappings the view points into
};

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

// Streams documents into one shard. Memory: two 1 MiB write buffers, whatever the shard size.
class ShardWriter {
 public:
  ShardWriter(std::string prefix, int64_t vocab_size, std::string tokenizer, uint64_t seed = 0)
      : prefix_(std::move(prefix)), data_(prefix_ + ".ds"), index_(prefix_ + ".ds.index") {
    KILN_CHECK(vocab_size >= 1 && vocab_size <= int64_t(INT32_MAX), "shard ", prefix_, ": vocab size ", vocab_size,
               " out of range 1..2^31-1");
    meta_.tokenizer = std::move(tokenizer);
    meta_.vocab_size = vocab_size;
    meta_.token_bytes = token_bytes_for_vocab(vocab_size);
    meta_.seed = seed;
    scratch_.reserve(4096);
  }

  void add_source(std::string file) { meta_.sources.push_back(std::move(file)); }

  void add_document(std::span<const int32_t> tokens) {
    KILN_CHECK(!finished_, "shard ", prefix_, ": add_document after finish()");
    for (size_t base = 0; base < tokens.size(); base += 2048) {
      size_t n = std::min<size_t>(2048, tokens.size() - base);
      scratch_.clear();
      for (size_t i = 0; i < n; ++i) {
        int32_t t = tokens[base + i];
        KILN_CHECK(t >= 0 && t < meta_.vocab_size, "shard ", prefix_, ": document ", meta_.documents, " token ", base + i,
                   " is ", t, ", outside the vocabulary of ", meta_.vocab_size, " ids");
        if (meta_.token_bytes == 2) {
          uint16_t v = uint16_t(t);
          scratch_.insert(scratch_.end(), reinterpret_cast<char*>(&v), reinterpret_cast<char*>(&v) + 2);
        } else {
          uint32_t v = uint32_t(t);
          scratch_.insert(scratch_.end(), reinterpret_cast<char*>(&v), reinterpret_cast<char*>(&v) + 4);
        }
      }
      data_.write(scratch_.data(), scratch_.size());
    }
    meta_.tokens += tokens.size();
    uint64_t end = meta_.tokens;
    index_.write(&end, 8);
    ++meta_.documents;
  }

  uint64_t documents() const { return meta_.documents; }
  uint64_t tokens() const { return meta_.tokens; }
  const std::string& prefix() const { return prefix_; }

  // Renames data and index into place, then writes the metadata (last: it marks a complete shard).
  void finish() {
    KILN_CHECK(!finished_, "shard ", prefix_, ": finish() called twice");
    finished_ = true;
    data_.commit();
    index_.commit();
    detail::AtomicFile m(prefix_ + ".ds.metadata");
    std::string text = meta_.to_json().dump(2) + "\n";
    m.write(text.data(), text.size());
    m.commit();
    detail::fsync_dir(prefix_ + ".ds");
  }

 private:
  std::string prefix_;
  detail::AtomicFile data_, index_;
  ShardMetadata meta_;
  std::vector<char> scratch_;
  bool finished_ = false;
};

// The shards named by a path: a prefix (`x` for x.ds), a `.ds` file, or a directory (all `*.ds` in it, sorted).
inline std::vector<std::string> shard_prefixes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> out;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".ds") out.push_back((e.path().parent_path() / e.path().stem()).string());
    std::sort(out.begin(), out.end());
    KILN_CHECK(!out.empty(), "directory '", path, "' holds no .ds shards");
    return out;
  }
  std::string p = path;
  if (p.size() > 3 && p.ends_with(".ds")) p.resize(p.size() - 3);
  KILN_CHECK(ShardReader::exists(p), "no shard at '", path, "' (expected ", p, ".ds and ", p, ".ds.index)");
  out.push_back(p);
  return out;
}

// Opens every shard named by a path (as shard_prefixes). token_bytes: as ShardReader's (0: from each shard's metadata;
// 2 or 4: for datatrove shards whose metadata does not give it, or that have none).
inline std::vector<std::shared_ptr<const ShardReader>> open_shards(const std::string& path, int token_bytes = 0) {
  std::vector<std::shared_ptr<const ShardReader>> out;
  for (const auto& prefix : shard_prefixes(path)) out.push_back(std::make_shared<const ShardReader>(prefix, token_bytes));
  return out;
}

}  // namespace kiln::data
