// kiln/data/tokenizer.hpp: a Hugging Face-compatible byte-level BPE tokenizer (load, encode, decode, train, save).
//
// Format (FACTS.md "Formats"; HF `tokenizers` tokenizer.json):
//   { "added_tokens": [{"id", "content", "special", "normalized", "single_word", "lstrip", "rstrip"}...],
//     "normalizer": null,
//     "pre_tokenizer": Sequence[Split(Regex, "Isolated"|"Removed")..., ByteLevel(use_regex false)] | ByteLevel(use_regex),
//     "decoder": ByteLevel, "post_processor": ignored (encode() is HF's encode(..., add_special_tokens=False)),
//     "model": {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...] | [["a", "b"], ...], "ignore_merges", ...} }
//
// Encoding a text (what HF `tokenizers` does, step by step):
//   1. added tokens are cut out literally, leftmost-longest (tokens with normalized=false first, then normalized=true
//      ones in the remaining segments: HF's two tries); each becomes its own id;
//   2. each remaining segment goes through the pre-tokenizer steps: Split regex pieces (PCRE2, UTF + UCP, JIT; the
//      pattern is Oniguruma's, and `\s` is widened by U+0085 to match Oniguruma's White_Space), then ByteLevel
//      (optional prefix space, optional GPT-2 regex);
//   3. each piece is a byte string; its bytes are the initial symbols (vocab ids of the GPT-2 bytes_to_unicode
//      characters: space is `Ġ`, newline `Ċ`); with ignore_merges a piece that is itself in the vocab is emitted
//      whole; otherwise the adjacent pair with the lowest merge rank is merged (leftmost first on ties) until none
//      is left: exactly HF's `Word::merge_all` order.
// Input bytes need not be UTF-8: PCRE2_MATCH_INVALID_UTF makes invalid sequences unmatched gaps, which become pieces
// of their own, so decode(encode(x)) == x for ANY byte string when all 256 byte tokens are in the vocabulary.
//
// Threads: a Tokenizer is immutable after construction; encode / decode are const and thread-safe. Per-thread
// scratch (PCRE2 match data, a word -> ids cache of this tokenizer) lives in thread_local storage.
//
// Training (Tokenizer::train): classic BPE over pre-token counts, HF BpeTrainer's rule: at each step merge the pair
// with the highest count; ties go to the smallest pair (left id, then right id), as HF's `Merge` ordering does.
// Ids: bytes first in GPT-2 order (the code-point order of their bytes_to_unicode characters, as HF's trainer sorts
// its alphabet), then merged tokens in creation order, then the special tokens (not in model.vocab, Llama-3 style).
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <fcntl.h>
#include <pcre2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"

static_assert(PCRE2_CODE_UNIT_WIDTH == 8,
              "kiln/data/tokenizer.hpp uses PCRE2's 8-bit API: include it before defining another PCRE2_CODE_UNIT_WIDTH");

namespace kiln::data {

namespace tokenizer_detail {

// The Llama-3 pre-tokenizer pattern (FACTS.md), in Oniguruma syntax as tokenizer.json stores it.
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// The same with every digit a pre-token of its own (Qwen2's choice, and Llama 2's split_digits): numbers reach the
// model a digit a token, as arithmetic wants them. Tokenizer::train's split_digits.
inline constexpr std::string_view kLlama3DigitsPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-2's pattern, used by ByteLevel(use_regex = true) (HF tokenizers `byte_level.rs`).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in byte order --------
struct ByteAlphabet {
  std::array<uint32_t, 256> cp{};      // byte -> code point
  std::array<int16_t, 324> byte{};     // code point (< 324) -> byte, -1 if not in the alphabet
  std::array<uint8_t, 256> order{};    // i-th byte in code-point order (GPT-2 / HF trainer id order)
  ByteAlphabet() {
    byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      cp[b] = printable ? uint32_t(b) : uint32_t(256 + n++);
      byte[cp[b]] = int16_t(b);
    }
    int k = 0;
    for (uint32_t c = 0; c < 324; ++c)
      if (byte[c] >= 0) order[k++] = uint8_t(byte[c]);
  }
};
inline const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

inline void append_utf8(std::string& s, uint32_t c) {
  if (c < 0x80) {
    s.push_back(char(c));
  } else if (c < 0x800) {
    s.push_back(char(0xC0 | (c >> 6)));
    s.push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    s.push_back(char(0xE0 | (c >> 12)));
    s.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    s.push_back(char(0x80 | (c & 0x3F)));
  } else {
    s.push_back(char(0xF0 | (c >> 18)));
    s.push_back(char(0x80 | ((c >> 12) & 0x3F)));
    s.push_back(char(0x80 | ((c >> 6) & 0x3F)));
    s.push_back(char(0x80 | (c & 0x3F)));
  }
}

// Length of the well-formed UTF-8 sequence at s[i], or 0 if the bytes there are not one.
inline size_t utf8_len(std::string_view s, size_t i) {
  const auto u = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t c = u(i);
  if (c < 0x80) return 1;
  const size_t n = s.size() - i;
  const auto cont = [&](size_t k) { return (u(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return n >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && u(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && u(i + 1) > 0x9F) return 0;   // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && u(i + 1) < 0x90) return 0;
    if (c == 0xF4 && u(i + 1) > 0x8F) return 0;
    return 4;
  }
  return 0;
}

// Code points of a valid UTF-8 string (nlohmann::json has validated JSON strings).
inline std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_len(s, i);
    if (n == 0) n = 1;  // not reached for JSON strings; keeps the function total
    uint32_t c = uint8_t(s[i]);
    if (n == 2) c = c & 0x1F;
    if (n == 3) c = c & 0x0F;
    if (n == 4) c = c & 0x07;
    for (size_t k = 1; k < n; ++k) c = (c << 6) | (uint8_t(s[i + k]) & 0x3F);
    out.push_back(c);
    i += n;
  }
  return out;
}

// Raw bytes of a byte-level token string ("Ġthe" -> " the"), or nullopt if a character is outside the alphabet.
inline std::optional<std::string> byte_level_decode(std::string_view token) {
  const ByteAlphabet& a = alphabet();
  std::string out;
  for (uint32_t c : code_points(token)) {
    if (c >= 324 || a.byte[c] < 0) return std::nullopt;
    out.push_back(char(uint8_t(a.byte[c])));
  }
  return out;
}

inline std::string byte_level_encode(std::string_view raw) {
  const ByteAlphabet& a = alphabet();
  std::string out;
  out.reserve(raw.size() * 2);
  for (char ch : raw) append_utf8(out, a.cp[uint8_t(ch)]);
  return out;
}

// Oniguruma's `\s` (Unicode White_Space) includes U+0085 (NEL); PCRE2's UCP `\s` (Z categories + \t\n\v\f\r) does not.
// Widen `\s` outside classes to [\s\x{85}], `\S` to [^\s\x{85}], and `\s` inside classes to \s\x{85}.
inline std::string onig_to_pcre2(std::string_view p) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      if (e == 's') out += in_class ? R"(\s\x{85})" : R"([\s\x{85}])";
      else if (e == 'S' && !in_class) out += R"([^\s\x{85}])";
      else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);  // a leading ']' is literal
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]
      const size_t end = p.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(p.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

// ---- PCRE2 -------------------------------------------------------------------------------------------------------
// Per-thread match scratch: match data (only the whole match is read) and a JIT stack large enough for long
// runs of one character class.
struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* js = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(1, nullptr);
    mc = pcre2_match_context_create(nullptr);
    js = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (mc && js) pcre2_jit_stack_assign(mc, nullptr, js);
  }
  ~MatchScratch() {
    if (md) pcre2_match_data_free(md);
    if (mc) pcre2_match_context_free(mc);
    if (js) pcre2_jit_stack_free(js);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};
inline MatchScratch& match_scratch() {
  thread_local MatchScratch s;
  return s;
}

class Regex {
 public:
  // Throws kiln::Error (message starts with `what`) when PCRE2 rejects the pattern.
  Regex(std::string_view pattern, bool literal, const std::string& what) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    std::string p = literal ? std::string(pattern) : onig_to_pcre2(pattern);
    if (literal) opts |= PCRE2_LITERAL;
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(), opts, &err, &off, nullptr);
    if (!c) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      KILN_FAIL(what, ": PCRE2 cannot compile the pattern at offset ", off, ": ", reinterpret_cast<const char*>(buf));
    }
    code_.reset(c, pcre2_code_free);
    jit_ = pcre2_jit_compile(c, PCRE2_JIT_COMPLETE) == 0;
  }
  bool jit() const { return jit_; }

  // First match at or after `start` in s: {begin, end}; nullopt if none. A match error (JIT stack or heap limit)
  // retries with the interpreter and then gives up on the rest (`error` set): callers treat the rest as a gap.
  std::optional<std::pair<size_t, size_t>> find(std::string_view s, size_t start, bool& error) const {
    MatchScratch& m = match_scratch();
    const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    int rc = pcre2_match(code_.get(), subject, s.size(), start, 0, m.md, m.mc);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) rc = pcre2_match(code_.get(), subject, s.size(), start, PCRE2_NO_JIT, m.md, m.mc);
    if (rc == PCRE2_ERROR_NOMATCH) return std::nullopt;
    if (rc < 0) {
      error = true;
      return std::nullopt;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
    return std::pair<size_t, size_t>{ov[0], ov[1]};
  }

 private:
  std::shared_ptr<pcre2_code> code_;
  bool jit_ = false;
};

// ---- pair -> (rank, new id): open addressing, the hot lookup of encoding ----------------------------------------
class MergeMap {
 public:
  struct Value {
    int32_t rank, id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, Value{0, 0});
    mask_ = cap - 1;
  }
  // Later inserts of the same pair overwrite earlier ones (HF collects merges into a HashMap: the last one wins).
  void insert(int32_t a, int32_t b, Value v) {
    const uint64_t k = key(a, b);
    size_t i = slot(k);
    while (keys_[i] != kEmpty && keys_[i] != k) i = (i + 1) & mask_;
    keys_[i] = k;
    vals_[i] = v;
  }
  const Value* find(int32_t a, int32_t b) const {
    const uint64_t k = key(a, b);
    size_t i = slot(k);
    while (true) {
      if (keys_[i] == k) return &vals_[i];
      if (keys_[i] == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t slot(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> 29) & mask_; }
  std::vector<uint64_t> keys_;
  std::vector<Value> vals_;
  size_t mask_ = 0;
};

// ---- literal matcher for added tokens: leftmost-longest, as HF's aho-corasick (MatchKind::LeftmostLongest) -------
class LiteralTrie {
 public:
  void add(std::string_view s, int32_t id) {
    int32_t n = 0;
    for (char ch : s) {
      const uint8_t c = uint8_t(ch);
      int32_t next = -1;
      for (auto [k, child] : nodes_[n].children)
        if (k == c) next = child;
      if (next < 0) {
        next = int32_t(nodes_.size());
        nodes_[n].children.push_back({c, next});
        nodes_.push_back({});
      }
      n = next;
    }
    nodes_[n].id = id;
    first_[uint8_t(s[0])] = true;
    ++count_;
  }
  bool empty() const { return count_ == 0; }
  // Longest token starting at s[i]: {length, id}, length 0 if none.
  std::pair<size_t, int32_t> longest_at(std::string_view s, size_t i) const {
    size_t best = 0;
    int32_t best_id = -1;
    int32_t n = 0;
    for (size_t k = i; k < s.size(); ++k) {
      int32_t next = -1;
      for (auto [c, child] : nodes_[n].children)
        if (c == uint8_t(s[k])) next = child;
      if (next < 0) break;
      n = next;
      if (nodes_[n].id >= 0) {
        best = k + 1 - i;
        best_id = nodes_[n].id;
      }
    }
    return {best, best_id};
  }
  // Calls fn(piece, id) for each segment: id = token id for a match, -1 for the text between matches.
  template <class Fn>
  void split(std::string_view s, Fn&& fn) const {
    if (empty()) {
      if (!s.empty()) fn(s, -1);
      return;
    }
    size_t last = 0;
    for (size_t i = 0; i < s.size();) {
      if (!first_[uint8_t(s[i])]) {
        ++i;
        continue;
      }
      auto [len, id] = longest_at(s, i);
      if (len == 0) {
        ++i;
        continue;
      }
      if (i > last) fn(s.substr(last, i - last), -1);
      fn(s.substr(i, len), id);
      i += len;
      last = i;
    }
    if (last < s.size()) fn(s.substr(last), -1);
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t id = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_{};
  size_t count_ = 0;
};

// ---- pre-tokenizer steps --------------------------------------------------------------------------------------
struct Step {
  enum Kind { kSplit, kByteLevel } kind = kSplit;
  std::shared_ptr<const Regex> regex;  // Split pattern, or ByteLevel's GPT-2 regex when use_regex
  bool remove_matches = false;         // Split behavior "Removed" (else "Isolated")
  bool add_prefix_space = false;       // ByteLevel
  std::string pattern;                 // Split: the pattern as tokenizer.json spells it
  bool literal = false;                // Split: {"String": ...} rather than {"Regex": ...}
  bool trim_offsets = true;            // ByteLevel: offsets only; kept for to_json()
};

// Splits s by a regex: matches and the gaps between them (Isolated), or only the gaps (Removed). Empty matches are
// skipped. Calls fn(piece) in order.
template <class Fn>
void regex_split(const Regex& re, bool remove_matches, std::string_view s, Fn&& fn) {
  size_t last = 0, pos = 0;
  bool error = false;
  while (pos <= s.size()) {
    auto m = re.find(s, pos, error);
    if (!m) break;
    auto [b, e] = *m;
    if (e == b) {  // empty match: step one character on
      const size_t n = b < s.size() ? std::max<size_t>(1, utf8_len(s, b)) : 1;
      pos = b + n;
      continue;
    }
    if (b > last) fn(s.substr(last, b - last));
    if (!remove_matches) fn(s.substr(b, e - b));
    last = pos = e;
  }
  if (last < s.size()) fn(s.substr(last));
}

// ---- per-thread word cache --------------------------------------------------------------------------------------
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct WordCache {
  uint64_t owner = 0;  // Impl::uid of the tokenizer the entries belong to
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, SvHash, std::equal_to<>> map;  // -> (offset, n)
  std::vector<int32_t> ids;
  void clear() {
    map.clear();
    ids.clear();
  }
};
inline constexpr size_t kCacheMaxWord = 48;        // bytes; longer pieces are merged every time
inline constexpr size_t kCacheMaxEntries = 1 << 18;
inline constexpr size_t kCacheMaxIds = size_t(1) << 22;  // bounds a cache's memory on adversarial input

inline WordCache& word_cache(uint64_t uid) {
  thread_local std::array<WordCache, 4> caches;
  thread_local size_t victim = 0;
  for (WordCache& c : caches)
    if (c.owner == uid) return c;
  WordCache& c = caches[victim];
  victim = (victim + 1) % caches.size();
  c.clear();
  c.owner = uid;
  return c;
}

inline uint64_t fnv1a(uint64_t h, std::string_view s) {
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return (h ^ 0xff) * 0x100000001b3ull;  // separator so that ("ab","c") != ("a","bc")
}

inline uint64_t next_uid() {
  static std::atomic<uint64_t> n{0};
  return ++n;
}

// ---- reading tokenizer.json in one pass --------------------------------------------------------------------------
// model.merges is most of a tokenizer.json (Llama-3: 280k merges). As a JSON DOM each ["a", "b"] pair costs about
// 150 bytes, so the reader below never builds it: a merge entry is checked and converted as soon as it is read, into
// MergeList (the two strings back to back, 16 bytes of index), and when model.vocab came first (HF's key order) its
// tokens are looked up at once. model.type, model.vocab and model.merges are type-checked when they are read too. So
// a malformed file fails at its first bad entry, after reading only that far, and before any table is built.

// The merges of a tokenizer.json in file order: entry i is (a, b), stored as a then b in one buffer, so that the
// merged token a + b is a view too; with the model.vocab ids of a, b and a + b when the reader knew them (else -1).
class MergeList {
 public:
  struct Ids {
    int32_t a, b, merged;
  };
  void add(std::string_view a, std::string_view b) { add(a, b, Ids{-1, -1, -1}); }
  void add(std::string_view a, std::string_view b, Ids ids) {
    entries_.push_back({uint64_t(text_.size()), uint32_t(a.size()), uint32_t(b.size()), ids});
    text_.append(a);
    text_.append(b);
  }
  size_t size() const { return entries_.size(); }
  const Ids& ids(size_t i) const { return entries_[i].ids; }
  std::string_view first(size_t i) const { return view(i, 0, entries_[i].a); }
  std::string_view second(size_t i) const { return view(i, entries_[i].a, entries_[i].b); }
  std::string_view merged(size_t i) const { return view(i, 0, uint64_t(entries_[i].a) + entries_[i].b); }

 private:
  struct Entry {
    uint64_t offset;
    uint32_t a, b;  // byte lengths
    Ids ids;
  };
  std::string_view view(size_t i, uint64_t from, uint64_t n) const {
    return std::string_view(text_).substr(entries_[i].offset + from, n);
  }
  std::string text_;
  std::vector<Entry> entries_;
};

// nlohmann SAX handler: the DOM of the whole file except model.merges' entries, which go to a MergeList. A key given
// twice in one object is an error (core::JsonDom), as in every JSON file Kiln reads.
class TokenizerJsonReader {
 public:
  using json = nlohmann::json;
  TokenizerJsonReader(json& root, MergeList& merges, const std::string& origin)
      : dom_(root), entry_(entry_root_), merges_(merges), origin_(origin) {}

  bool null() { return scalar(json(nullptr)); }
  bool boolean(bool v) { return scalar(json(v)); }
  bool number_integer(json::number_integer_t v) { return scalar(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return scalar(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return scalar(json(v)); }
  bool string(json::string_t& s) { return scalar(json(std::move(s))); }
  bool binary(json::binary_t& b) { return scalar(json(json::binary_t(std::move(b)))); }

  bool start_object(std::size_t) { return start(true); }
  bool start_array(std::size_t) { return start(false); }
  bool key(json::string_t& k) {
    if (entry_depth_ > 0) {
      entry_.key(k);  // a merge entry that is an object is refused whole by take_merge
      return true;
    }
    if (!dom_.key(k)) {
      const std::string at = dom_.path();
      fail(at.empty() ? k : at + "." + k, "' is given twice");
    }
    path_.back().key = std::move(k);
    return true;
  }
  bool end_object() { return end(); }
  bool end_array() { return end(); }

  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& e) {
    throw e;  // a json::exception: from_json reports it as invalid JSON
  }

 private:
  enum class Role : uint8_t { kOther, kTop, kModel, kMerges };
  struct Frame {
    Role role;
    std::string key;  // the last key read in this object
  };

  // The role of the value about to be read, and its field name when it is one of model's.
  bool in_model() const { return !path_.empty() && path_.back().role == Role::kModel; }
  bool in_merges() const { return !path_.empty() && path_.back().role == Role::kMerges; }

  template <class... A>
  [[noreturn]] void fail(const A&... a) const {
    KILN_FAIL("tokenizer '", origin_, "': field '", a...);
  }

  bool scalar(json&& v) {
    if (entry_depth_ > 0) {
      entry_.put(std::move(v));
      return true;
    }
    if (in_merges()) {
      take_merge(v);
      return true;
    }
    if (in_model()) {
      const std::string& k = path_.back().key;
      if (k == "type") {
        if (!v.is_string()) fail("model.type' is missing; Kiln supports \"BPE\"");
        if (v != "BPE") fail("model.type' is \"", v.get<std::string>(), "\"; Kiln supports only \"BPE\" (byte-level BPE)");
      } else if (k == "vocab") {
        fail("model.vocab' must be an object {token: id}, found ", v.type_name());
      } else if (k == "merges" && !v.is_null()) {
        fail("model.merges' must be an array, found ", v.type_name());
      }
    }
    dom_.put(std::move(v));
    return true;
  }

  bool start(bool object) {
    if (entry_depth_ > 0 || in_merges()) {  // a merge entry (["a", "b"] or something malformed): built on its own
      ++entry_depth_;
      entry_.start(object ? json::object() : json::array());
      return true;
    }
    Role role = Role::kOther;
    if (path_.empty()) {
      role = object ? Role::kTop : Role::kOther;
    } else if (path_.back().role == Role::kTop && path_.back().key == "model") {
      role = object ? Role::kModel : Role::kOther;
    } else if (in_model() && path_.back().key == "vocab" && !object) {
      fail("model.vocab' must be an object {token: id}, found array");
    } else if (in_model() && path_.back().key == "merges") {
      if (object) fail("model.merges' must be an array, found object");
      role = Role::kMerges;
    }
    dom_.start(object ? json::object() : json::array());
    path_.push_back({role, {}});
    return true;
  }

  bool end() {
    if (entry_depth_ > 0) {
      entry_.end();
      if (--entry_depth_ == 0) take_merge(entry_root_);
      return true;
    }
    const json* closed = dom_.end();
    path_.pop_back();
    if (in_model() && path_.back().key == "vocab") {  // complete: the merges after it are checked as they are read
      vocab_ids_.reserve(closed->size());
      for (auto it = closed->begin(); it != closed->end(); ++it) {
        const json& v = it.value();  // a bad id is reported by Tokenizer::build, which checks every vocab entry first
        const bool ok = v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < (int64_t(1) << 24);
        vocab_ids_.emplace(std::string_view(it.key()), ok ? int32_t(v.get<int64_t>()) : -1);
      }
      vocab_known_ = true;
    }
    return true;
  }

  static std::string shown(const json& e) {
    std::string s = e.dump();
    return s.size() <= 200 ? s : s.substr(0, 200) + "...";
  }

  // Checks entry i of model.merges ("a b" or ["a", "b"]) and appends it.
  void take_merge(const json& e) {
    const std::string at = "model.merges[" + std::to_string(merges_.size()) + "]";
    std::string_view a, b;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (!(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos && sp > 0 && sp + 1 < s.size()))
        fail(at, "' is ", shown(e), "; expected two tokens \"a b\"");
      a = std::string_view(s).substr(0, sp);
      b = std::string_view(s).substr(sp + 1);
    } else {
      if (!(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()))
        fail(at, "' is ", shown(e), "; expected a pair of strings [\"a\", \"b\"] or \"a b\"");
      a = e[0].get_ref<const std::string&>();
      b = e[1].get_ref<const std::string&>();
    }
    if (!vocab_known_) {  // model.vocab comes later: Tokenizer::build looks the tokens up
      merges_.add(a, b);
      return;
    }
    auto id = [&](std::string_view t, const char* what) {
      auto it = vocab_ids_.find(t);
      if (it == vocab_ids_.end()) fail(at, "': ", what, "\"", t, "\" is not in model.vocab");
      return it->second;
    };
    const int32_t ia = id(a, "token "), ib = id(b, "token ");
    std::string ab;
    ab.reserve(a.size() + b.size());
    ab.append(a).append(b);
    merges_.add(a, b, {ia, ib, id(ab, "merged token ")});
  }

  core::JsonDom dom_;
  std::vector<Frame> path_;  // the DOM containers being read, innermost last
  json entry_root_;
  core::JsonDom entry_;      // the merge entry being read, when it is a container
  int entry_depth_ = 0;      // > 0: inside a merge entry
  MergeList& merges_;
  const std::string& origin_;
  // model.vocab's token -> id (-1: not a valid id) once it is read completely; the keys are views of the DOM's,
  // which stay in place.
  std::unordered_map<std::string_view, int32_t, SvHash, std::equal_to<>> vocab_ids_;
  bool vocab_known_ = false;
};

}  // namespace tokenizer_detail

class Tokenizer {
 public:
  // Maps the file (read in place: a file that fails early is read only that far).
  static Tokenizer load(const std::string& path) {
    std::error_code ec;
    KILN_CHECK(std::filesystem::is_regular_file(path, ec), "tokenizer file '", path, "' cannot be read: ",
               std::filesystem::exists(path, ec) ? "not a regular file" : "no such file");
    const core::MappedFile f(path);  // mapped, not copied: a large file is read once, as it is parsed
    const auto b = f.bytes();
    return from_json(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), path);
  }

  // Parses and checks in one pass (tokenizer_detail::TokenizerJsonReader): a bad merge entry, a model.type other
  // than BPE, or a model.vocab / model.merges of the wrong type fails when it is read, before the rest is parsed.
  static Tokenizer from_json(std::string_view json, const std::string& origin = "<memory>") {
    nlohmann::json j;
    tokenizer_detail::MergeList merges;
    try {
      tokenizer_detail::TokenizerJsonReader reader(j, merges, origin);
      nlohmann::json::sax_parse(json.begin(), json.end(), &reader);
    } catch (const nlohmann::json::exception& e) {
      KILN_FAIL("tokenizer '", origin, "': invalid JSON: ", e.what());
    }
    try {
      return Tokenizer(build(j, merges, origin));
    } catch (const nlohmann::json::exception& e) {  // a type mismatch no explicit check caught
      KILN_FAIL("tokenizer '", origin, "': unexpected JSON content: ", e.what());
    }
  }

  // A byte-level BPE of vocab_size entries over the Llama-3 pre-tokenizer (split_digits: every digit alone).
  static Tokenizer train(const std::vector<std::string>& texts, int vocab_size,
                         const std::vector<std::string>& special_tokens, bool split_digits = false);

  // Written atomically (kiln/core/file.hpp): an interrupted save leaves the old file, never half a tokenizer.
  void save(const std::string& path) const { core::write_text_atomic(path, to_json()); }

  std::string to_json() const {
    const Impl& m = *impl_;
    nlohmann::ordered_json j;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    nlohmann::ordered_json added = nlohmann::ordered_json::array();
    for (const AddedToken& t : m.added)
      added.push_back({{"id", t.id}, {"content", t.content}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", t.normalized}, {"special", t.special}});
    j["added_tokens"] = added;
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = m.pre_tokenizer_json;
    j["post_processor"] = m.post_processor_json;
    j["decoder"] = m.decoder_json;
    nlohmann::ordered_json model;
    model["type"] = "BPE";
    model["dropout"] = nullptr;
    model["unk_token"] = m.unk_id >= 0 ? nlohmann::ordered_json(m.model_token[m.unk_id]) : nlohmann::ordered_json();
    model["continuing_subword_prefix"] = nullptr;
    model["end_of_word_suffix"] = nullptr;
    model["fuse_unk"] = m.fuse_unk;
    model["byte_fallback"] = false;
    model["ignore_merges"] = m.ignore_merges;
    nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
    for (size_t id = 0; id < m.model_token.size(); ++id)
      if (m.in_model[id]) vocab[m.model_token[id]] = int32_t(id);
    model["vocab"] = vocab;
    nlohmann::ordered_json merges = nlohmann::ordered_json::array();
    for (auto [a, b] : m.merge_list) merges.push_back({m.model_token[a], m.model_token[b]});
    model["merges"] = merges;
    j["model"] = model;
    return j.dump(1, ' ', false);
  }

  std::vector<int32_t> encode(std::string_view text) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    encode_append(text, out);
    return out;
  }

  void encode_append(std::string_view text, std::vector<int32_t>& out) const {
    const Impl& m = *impl_;
    tokenizer_detail::WordCache& cache = tokenizer_detail::word_cache(m.uid);
    m.split_added(text, [&](std::string_view seg, int32_t id) {
      if (id >= 0) {
        out.push_back(id);
        return;
      }
      m.run_steps(0, seg, false, [&](std::string_view piece) { m.bpe(piece, out, cache); });
    });
  }

  std::string decode(const int32_t* ids, size_t n) const {
    const Impl& m = *impl_;
    std::string out;
    out.reserve(n * 4);
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = ids[i];
      KILN_CHECK(id >= 0 && size_t(id) < m.bytes_off.size() - 1 && m.known(id), "tokenizer ", m.name,
                 ": decode: id ", id, " (position ", i, ") is not in the vocabulary (ids 0..", vocab_size() - 1, ")");
      out.append(m.bytes.data() + m.bytes_off[id], m.bytes_off[id + 1] - m.bytes_off[id]);
    }
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const { return decode(ids.data(), ids.size()); }

  int vocab_size() const { return int(impl_->bytes_off.size() - 1); }

  std::optional<int32_t> token_to_id(std::string_view token) const {
    const Impl& m = *impl_;
    if (auto it = m.added_by_content.find(token); it != m.added_by_content.end()) return it->second;
    if (auto it = m.vocab.find(token); it != m.vocab.end()) return it->second;
    return std::nullopt;
  }

  // The token's string as tokenizer.json spells it (byte-level characters for model tokens, raw text for added
  // tokens). Throws kiln::Error for an id outside the vocabulary.
  std::string id_to_token(int32_t id) const {
    const Impl& m = *impl_;
    KILN_CHECK(id >= 0 && id < vocab_size() && m.known(id), "tokenizer ", m.name, ": id ", id,
               " is not in the vocabulary (ids 0..", vocab_size() - 1, ")");
    if (m.added_index[id] >= 0) return m.added[m.added_index[id]].content;
    return m.model_token[id];
  }

  // "bpe-<vocab size>-<16 hex digits of FNV-1a over vocab, merges, added tokens, pre-tokenizer>".
  std::string_view name() const { return impl_->name; }

  // The pieces encode() hands to BPE, as views into `text`: added tokens (one piece each) and the pre-tokenizer's
  // pieces of the text between them. (ByteLevel's add_prefix_space is not applied: the views stay inside `text`.)
  std::vector<std::string_view> pre_tokenize(std::string_view text) const {
    const Impl& m = *impl_;
    std::vector<std::string_view> out;
    m.split_added(text, [&](std::string_view seg, int32_t id) {
      if (id >= 0) out.push_back(seg);
      else m.run_steps(0, seg, true, [&](std::string_view piece) { out.push_back(piece); });
    });
    return out;
  }

  // Whether the Split regexes run JIT-compiled (PCRE2 built with JIT support).
  bool regex_jit() const {
    for (const auto& s : impl_->steps)
      if (s.regex && !s.regex->jit()) return false;
    return true;
  }

 private:
  struct AddedToken {
    int32_t id;
    std::string content;
    bool special, normalized;
  };

  struct Impl {
    uint64_t uid = tokenizer_detail::next_uid();
    std::string name;
    // model
    std::vector<std::string> model_token;  // id -> token string as in tokenizer.json ("" if not a model id)
    std::vector<uint8_t> in_model;         // id -> 1 if a model vocab id
    std::unordered_map<std::string, int32_t, tokenizer_detail::SvHash, std::equal_to<>> vocab;  // token string -> id
    std::unordered_map<std::string, int32_t, tokenizer_detail::SvHash, std::equal_to<>> vocab_by_bytes;  // raw bytes
    std::array<int32_t, 256> byte_id{};  // byte -> id of its single-character token, -1 if absent
    tokenizer_detail::MergeMap merges;
    std::vector<std::pair<int32_t, int32_t>> merge_list;  // in file order (rank = index)
    bool ignore_merges = false, fuse_unk = false;
    int32_t unk_id = -1;
    // added tokens
    std::vector<AddedToken> added;
    std::vector<int32_t> added_index;  // id -> index in `added`, -1 if none
    std::unordered_map<std::string, int32_t, tokenizer_detail::SvHash, std::equal_to<>> added_by_content;
    tokenizer_detail::LiteralTrie trie_raw, trie_normalized;  // normalized=false tokens, normalized=true tokens
    // pre-tokenizer and the JSON parts re-emitted by to_json()
    std::vector<tokenizer_detail::Step> steps;
    nlohmann::ordered_json pre_tokenizer_json, post_processor_json, decoder_json;
    // decode: id -> bytes
    std::string bytes;
    std::vector<uint32_t> bytes_off;  // size max id + 2
    std::vector<uint8_t> known_id;

    bool known(int32_t id) const { return known_id[id] != 0; }

    template <class Fn>
    void split_added(std::string_view text, Fn&& fn) const {
      trie_raw.split(text, [&](std::string_view seg, int32_t id) {
        if (id >= 0) fn(seg, id);
        else trie_normalized.split(seg, fn);
      });
    }

    // Applies steps[k..] to `piece`; fn(final piece). `views_only`: skip the prefix space (pre_tokenize()).
    template <class Fn>
    void run_steps(size_t k, std::string_view piece, bool views_only, Fn&& fn) const {
      if (piece.empty()) return;
      if (k == steps.size()) {
        fn(piece);
        return;
      }
      const tokenizer_detail::Step& s = steps[k];
      auto next = [&](std::string_view p) { run_steps(k + 1, p, views_only, fn); };
      if (s.kind == tokenizer_detail::Step::kSplit) {
        tokenizer_detail::regex_split(*s.regex, s.remove_matches, piece, next);
        return;
      }
      // ByteLevel: HF prepends a space to each piece that does not start with one, then the GPT-2 regex.
      std::string prefixed;
      if (s.add_prefix_space && !views_only && piece[0] != ' ') {
        prefixed.reserve(piece.size() + 1);
        prefixed.push_back(' ');
        prefixed.append(piece);
        piece = prefixed;
      }
      if (s.regex) tokenizer_detail::regex_split(*s.regex, false, piece, next);
      else next(piece);
    }

    // BPE of one piece (raw bytes), appended to out.
    void bpe(std::string_view piece, std::vector<int32_t>& out, tokenizer_detail::WordCache& cache) const {
      if (ignore_merges) {
        if (auto it = vocab_by_bytes.find(piece); it != vocab_by_bytes.end()) {
          out.push_back(it->second);
          return;
        }
      }
      if (piece.size() == 1 && byte_id[uint8_t(piece[0])] >= 0) {
        out.push_back(byte_id[uint8_t(piece[0])]);
        return;
      }
      const bool cacheable = piece.size() <= tokenizer_detail::kCacheMaxWord;
      if (cacheable) {
        if (auto it = cache.map.find(piece); it != cache.map.end()) {
          out.insert(out.end(), cache.ids.begin() + it->second.first,
                     cache.ids.begin() + it->second.first + it->second.second);
          return;
        }
      }
      const size_t start = out.size();
      merge_word(piece, out);
      if (cacheable) {
        if (cache.map.size() >= tokenizer_detail::kCacheMaxEntries || cache.ids.size() >= tokenizer_detail::kCacheMaxIds)
          cache.clear();
        const uint32_t off = uint32_t(cache.ids.size());
        cache.ids.insert(cache.ids.end(), out.begin() + start, out.end());
        cache.map.emplace(std::string(piece), std::pair<uint32_t, uint32_t>{off, uint32_t(out.size() - start)});
      }
    }

    void merge_word(std::string_view piece, std::vector<int32_t>& out) const {
      // Initial symbols: one per byte. A byte without a token becomes unk (fused if fuse_unk) or is dropped, as in HF.
      thread_local std::vector<int32_t> sym;
      sym.clear();
      bool last_unk = false;
      for (char ch : piece) {
        const int32_t id = byte_id[uint8_t(ch)];
        if (id >= 0) {
          sym.push_back(id);
          last_unk = false;
        } else if (unk_id >= 0) {
          if (!(fuse_unk && last_unk)) sym.push_back(unk_id);
          last_unk = true;
        }
      }
      if (sym.size() <= 64) merge_small(sym);
      else merge_large(sym);
      out.insert(out.end(), sym.begin(), sym.end());
    }

    // O(n^2) scan: merge the lowest-rank adjacent pair, leftmost on ties, until none is left.
    void merge_small(std::vector<int32_t>& sym) const {
      constexpr int32_t kNone = INT32_MAX;
      int32_t rank[64], nid[64];
      size_t n = sym.size();
      auto look = [&](size_t i) {
        const auto* v = merges.find(sym[i], sym[i + 1]);
        rank[i] = v ? v->rank : kNone;
        nid[i] = v ? v->id : -1;
      };
      for (size_t i = 0; i + 1 < n; ++i) look(i);
      while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; ++i)
          if (rank[i] < rank[best]) best = i;
        if (rank[best] == kNone) break;
        sym[best] = nid[best];
        for (size_t i = best + 1; i + 1 < n; ++i) {
          sym[i] = sym[i + 1];
          rank[i] = rank[i + 1];
          nid[i] = nid[i + 1];
        }
        --n;
        if (best > 0) look(best - 1);
        if (best + 1 < n) look(best);
      }
      sym.resize(n);
    }

    // HF's Word::merge_all: a linked list over the symbols and a min-heap of (rank, position).
    void merge_large(std::vector<int32_t>& sym) const {
      struct S {
        int32_t id, prev, next;
        bool alive;
      };
      const int32_t n = int32_t(sym.size());
      std::vector<S> s(n);
      for (int32_t i = 0; i < n; ++i) s[i] = {sym[i], i - 1, i + 1 < n ? i + 1 : -1, true};
      using Entry = std::pair<int32_t, int32_t>;  // (rank, position), smallest first
      std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
      for (int32_t i = 0; i + 1 < n; ++i)
        if (const auto* v = merges.find(s[i].id, s[i + 1].id)) heap.push({v->rank, i});
      while (!heap.empty()) {
        auto [rank, pos] = heap.top();
        heap.pop();
        if (!s[pos].alive || s[pos].next < 0) continue;
        const int32_t nx = s[pos].next;
        const auto* v = merges.find(s[pos].id, s[nx].id);
        if (!v || v->rank != rank) continue;  // the pair changed since it was queued
        s[pos].id = v->id;
        s[pos].next = s[nx].next;
        s[nx].alive = false;
        if (s[pos].next >= 0) s[s[pos].next].prev = pos;
        if (s[pos].prev >= 0)
          if (const auto* w = merges.find(s[s[pos].prev].id, s[pos].id)) heap.push({w->rank, s[pos].prev});
        if (s[pos].next >= 0)
          if (const auto* w = merges.find(s[pos].id, s[s[pos].next].id)) heap.push({w->rank, pos});
      }
      sym.clear();
      for (int32_t i = 0; i >= 0 && i < n; i = s[i].next) sym.push_back(s[i].id);
    }
  };

  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

  // ---- loading ------------------------------------------------------------------------------------------------
  using json = nlohmann::json;

  static const char* type_name(const json& v) { return v.type_name(); }

  static bool get_bool(const json& obj, const char* key, bool dflt, const std::string& origin, const std::string& at) {
    if (!obj.contains(key) || obj[key].is_null()) return dflt;
    KILN_CHECK(obj[key].is_boolean(), "tokenizer '", origin, "': field '", at, ".", key, "' must be true or false, not ",
               type_name(obj[key]));
    return obj[key].get<bool>();
  }

  static int32_t get_id(const json& v, const std::string& origin, const std::string& at) {
    KILN_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < (int64_t(1) << 24),
               "tokenizer '", origin, "': field '", at, "' must be a token id (integer in [0, 2^24)), found ", v.dump());
    return int32_t(v.get<int64_t>());
  }

  // Parses the pre_tokenizer into steps; returns the JSON to re-emit.
  static void parse_pre_tokenizer(const json& j, const std::string& origin, Impl& m) {
    using tokenizer_detail::Step;
    KILN_CHECK(j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object(), "tokenizer '", origin,
               "': field 'pre_tokenizer' must be an object (ByteLevel, or a Sequence of Split... then ByteLevel); "
               "byte-level BPE without a ByteLevel pre-tokenizer is not supported");
    const json& pt = j["pre_tokenizer"];
    auto type_of = [&](const json& o, const std::string& at) {
      KILN_CHECK(o.is_object() && o.contains("type") && o["type"].is_string(), "tokenizer '", origin, "': field '", at,
                 ".type' must be a string");
      return o["type"].get<std::string>();
    };
    auto byte_level = [&](const json& o, const std::string& at) {
      Step s;
      s.kind = Step::kByteLevel;
      s.add_prefix_space = get_bool(o, "add_prefix_space", true, origin, at);
      s.trim_offsets = get_bool(o, "trim_offsets", true, origin, at);
      if (get_bool(o, "use_regex", true, origin, at))
        s.regex = std::make_shared<const tokenizer_detail::Regex>(tokenizer_detail::kGpt2Pattern, false,
                                                                  "tokenizer '" + origin + "': GPT-2 regex");
      return s;
    };
    auto split = [&](const json& o, const std::string& at) {
      Step s;
      s.kind = Step::kSplit;
      KILN_CHECK(o.contains("pattern") && o["pattern"].is_object() && o["pattern"].size() == 1, "tokenizer '", origin,
                 "': field '", at, ".pattern' must be {\"Regex\": ...} or {\"String\": ...}");
      const json& p = o["pattern"];
      const bool literal = p.contains("String");
      KILN_CHECK(literal || p.contains("Regex"), "tokenizer '", origin, "': field '", at,
                 ".pattern' must be {\"Regex\": ...} or {\"String\": ...}, found ", p.dump());
      const json& pv = literal ? p["String"] : p["Regex"];
      KILN_CHECK(pv.is_string() && !pv.get<std::string>().empty(), "tokenizer '", origin, "': field '", at,
                 ".pattern' must hold a non-empty string");
      s.pattern = pv.get<std::string>();
      s.literal = literal;
      s.regex = std::make_shared<const tokenizer_detail::Regex>(pv.get<std::string>(), literal,
                                                                "tokenizer '" + origin + "': field '" + at + ".pattern'");
      const std::string behavior = o.contains("behavior") && o["behavior"].is_string() ? o["behavior"].get<std::string>() : "";
      KILN_CHECK(behavior == "Isolated" || behavior == "Removed", "tokenizer '", origin, "': field '", at,
                 ".behavior' is \"", behavior, "\"; Kiln supports \"Isolated\" and \"Removed\"");
      s.remove_matches = behavior == "Removed";
      KILN_CHECK(!get_bool(o, "invert", false, origin, at), "tokenizer '", origin, "': field '", at,
                 ".invert' is true; Kiln supports only invert false");
      return s;
    };
    const std::string t = type_of(pt, "pre_tokenizer");
    if (t == "ByteLevel") {
      m.steps.push_back(byte_level(pt, "pre_tokenizer"));
    } else if (t == "Sequence") {
      KILN_CHECK(pt.contains("pretokenizers") && pt["pretokenizers"].is_array(), "tokenizer '", origin,
                 "': field 'pre_tokenizer.pretokenizers' must be an array");
      const json& seq = pt["pretokenizers"];
      for (size_t i = 0; i < seq.size(); ++i) {
        const std::string at = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
        const std::string ti = type_of(seq[i], at);
        if (ti == "Split") {
          m.steps.push_back(split(seq[i], at));
        } else if (ti == "ByteLevel") {
          KILN_CHECK(i + 1 == seq.size(), "tokenizer '", origin, "': field '", at,
                     "': ByteLevel must be the last pre-tokenizer of the Sequence");
          m.steps.push_back(byte_level(seq[i], at));
        } else {
          KILN_FAIL("tokenizer '", origin, "': field '", at, ".type' is \"", ti,
                    "\"; Kiln supports Split and ByteLevel inside a Sequence");
        }
      }
      KILN_CHECK(!m.steps.empty() && m.steps.back().kind == Step::kByteLevel, "tokenizer '", origin,
                 "': field 'pre_tokenizer.pretokenizers' must end with ByteLevel (byte-level BPE)");
    } else {
      KILN_FAIL("tokenizer '", origin, "': field 'pre_tokenizer.type' is \"", t,
                "\"; Kiln supports ByteLevel and Sequence[Split..., ByteLevel]");
    }
    m.pre_tokenizer_json = pre_tokenizer_to_json(m.steps);
  }

  // The canonical JSON of the parsed steps (what to_json() writes and name() hashes).
  static nlohmann::ordered_json pre_tokenizer_to_json(const std::vector<tokenizer_detail::Step>& steps) {
    using tokenizer_detail::Step;
    nlohmann::ordered_json seq = nlohmann::ordered_json::array();
    for (const Step& s : steps) {
      if (s.kind == Step::kSplit)
        seq.push_back({{"type", "Split"},
                       {"pattern", {{s.literal ? "String" : "Regex", s.pattern}}},
                       {"behavior", s.remove_matches ? "Removed" : "Isolated"},
                       {"invert", false}});
      else
        seq.push_back({{"type", "ByteLevel"},
                       {"add_prefix_space", s.add_prefix_space},
                       {"trim_offsets", s.trim_offsets},
                       {"use_regex", s.regex != nullptr}});
    }
    if (seq.size() == 1) return seq[0];
    return {{"type", "Sequence"}, {"pretokenizers", seq}};
  }

  // j: the file without model.merges' entries, which are in `merges` (read by TokenizerJsonReader).
  static std::shared_ptr<const Impl> build(const json& j, const tokenizer_detail::MergeList& merges,
                                           const std::string& origin) {
    auto impl = std::make_shared<Impl>();
    Impl& m = *impl;
    KILN_CHECK(j.is_object(), "tokenizer '", origin, "': the top level must be a JSON object, found ", type_name(j));

    // normalizer: none (an empty Sequence is none too)
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      const json& n = j["normalizer"];
      const bool empty_seq = n.is_object() && n.value("type", json()).is_string() && n["type"] == "Sequence" &&
                             n.contains("normalizers") && n["normalizers"].is_array() && n["normalizers"].empty();
      KILN_CHECK(empty_seq, "tokenizer '", origin, "': field 'normalizer' is ",
                 n.is_object() && n.contains("type") ? n["type"].dump() : n.dump(),
                 "; Kiln supports only null (no normalizer)");
    }
    parse_pre_tokenizer(j, origin, m);

    // decoder: ByteLevel (null accepted: decode is byte-level either way)
    if (j.contains("decoder") && !j["decoder"].is_null()) {
      const json& d = j["decoder"];
      KILN_CHECK(d.is_object() && d.contains("type") && d["type"] == "ByteLevel", "tokenizer '", origin,
                 "': field 'decoder.type' is ", d.is_object() && d.contains("type") ? d["type"].dump() : d.dump(),
                 "; Kiln supports only \"ByteLevel\"");
      m.decoder_json = nlohmann::ordered_json::parse(d.dump());
    }
    if (j.contains("post_processor")) m.post_processor_json = nlohmann::ordered_json::parse(j["post_processor"].dump());

    // model
    KILN_CHECK(j.contains("model") && j["model"].is_object(), "tokenizer '", origin, "': field 'model' is missing or not an object");
    const json& mo = j["model"];
    KILN_CHECK(mo.contains("type") && mo["type"].is_string(), "tokenizer '", origin,
               "': field 'model.type' is missing; Kiln supports \"BPE\"");
    KILN_CHECK(mo["type"] == "BPE", "tokenizer '", origin, "': field 'model.type' is \"", mo["type"].get<std::string>(),
               "\"; Kiln supports only \"BPE\" (byte-level BPE)");
    if (mo.contains("dropout") && !mo["dropout"].is_null())
      KILN_CHECK(mo["dropout"].is_number() && mo["dropout"].get<double>() == 0.0, "tokenizer '", origin,
                 "': field 'model.dropout' is ", mo["dropout"].dump(), "; Kiln supports only null (no BPE dropout)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (mo.contains(k) && !mo[k].is_null())
        KILN_CHECK(mo[k] == "", "tokenizer '", origin, "': field 'model.", k, "' is ", mo[k].dump(),
                   "; Kiln supports only null");
    KILN_CHECK(!get_bool(mo, "byte_fallback", false, origin, "model"), "tokenizer '", origin,
               "': field 'model.byte_fallback' is true; Kiln supports byte-level BPE (byte_fallback false) only");
    m.ignore_merges = get_bool(mo, "ignore_merges", false, origin, "model");
    m.fuse_unk = get_bool(mo, "fuse_unk", false, origin, "model");

    KILN_CHECK(mo.contains("vocab"), "tokenizer '", origin, "': field 'model.vocab' is missing");
    KILN_CHECK(mo["vocab"].is_object(), "tokenizer '", origin, "': field 'model.vocab' must be an object {token: id}, found ",
               type_name(mo["vocab"]));
    const json& vocab = mo["vocab"];

    // ids must be dense enough for id-indexed tables
    int64_t max_id = -1;
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
      max_id = std::max<int64_t>(max_id, get_id(it.value(), origin, "model.vocab[\"" + it.key() + "\"]"));
    const json added_j = j.contains("added_tokens") && !j["added_tokens"].is_null() ? j["added_tokens"] : json::array();
    KILN_CHECK(added_j.is_array(), "tokenizer '", origin, "': field 'added_tokens' must be an array");
    for (size_t i = 0; i < added_j.size(); ++i) {
      KILN_CHECK(added_j[i].is_object() && added_j[i].contains("id"), "tokenizer '", origin, "': field 'added_tokens[", i,
                 "]' must be an object with an id");
      max_id = std::max<int64_t>(max_id, get_id(added_j[i]["id"], origin, "added_tokens[" + std::to_string(i) + "].id"));
    }
    const int64_t count = int64_t(vocab.size() + added_j.size());
    KILN_CHECK(max_id < 4 * count + 1024, "tokenizer '", origin, "': ids are too sparse (max id ", max_id, " for ",
               count, " tokens); Kiln keeps id-indexed tables");
    const size_t nid = size_t(max_id + 1);
    m.model_token.assign(nid, std::string());
    m.in_model.assign(nid, 0);
    m.added_index.assign(nid, -1);
    m.known_id.assign(nid, 0);
    m.byte_id.fill(-1);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t id = int32_t(it.value().get<int64_t>());
      KILN_CHECK(!m.in_model[id], "tokenizer '", origin, "': field 'model.vocab': id ", id, " is given to both \"",
                 m.model_token[id], "\" and \"", it.key(), "\"");
      m.in_model[id] = 1;
      m.model_token[id] = it.key();
      m.vocab.emplace(it.key(), id);
      if (auto raw = tokenizer_detail::byte_level_decode(it.key())) {
        if (raw->size() == 1) m.byte_id[uint8_t((*raw)[0])] = id;
        m.vocab_by_bytes.emplace(*raw, id);
      }
    }

    if (mo.contains("unk_token") && !mo["unk_token"].is_null()) {
      KILN_CHECK(mo["unk_token"].is_string(), "tokenizer '", origin, "': field 'model.unk_token' must be a string or null");
      auto it = m.vocab.find(mo["unk_token"].get<std::string>());
      KILN_CHECK(it != m.vocab.end(), "tokenizer '", origin, "': field 'model.unk_token' ", mo["unk_token"].dump(),
                 " is not in model.vocab");
      m.unk_id = it->second;
    }

    // merges: "a b" (old) or ["a", "b"] (tokenizers >= 0.20), checked in shape and, when model.vocab came before them,
    // against it by TokenizerJsonReader; the entries are not in j (model.merges there is empty)
    if (mo.contains("merges") && !mo["merges"].is_null())
      KILN_CHECK(mo["merges"].is_array(), "tokenizer '", origin, "': field 'model.merges' must be an array, found ",
                 type_name(mo["merges"]));
    m.merges.reserve(merges.size());
    m.merge_list.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      if (const auto& r = merges.ids(i); r.a >= 0 && r.b >= 0 && r.merged >= 0) {  // looked up while reading
        m.merges.insert(r.a, r.b, {int32_t(i), r.merged});
        m.merge_list.push_back({r.a, r.b});
        continue;
      }
      auto ia = m.vocab.find(merges.first(i)), ib = m.vocab.find(merges.second(i)), iab = m.vocab.find(merges.merged(i));
      auto at = [&] { return "model.merges[" + std::to_string(i) + "]"; };
      KILN_CHECK(ia != m.vocab.end(), "tokenizer '", origin, "': field '", at(), "': token \"", merges.first(i),
                 "\" is not in model.vocab");
      KILN_CHECK(ib != m.vocab.end(), "tokenizer '", origin, "': field '", at(), "': token \"", merges.second(i),
                 "\" is not in model.vocab");
      KILN_CHECK(iab != m.vocab.end(), "tokenizer '", origin, "': field '", at(), "': merged token \"", merges.merged(i),
                 "\" is not in model.vocab");
      m.merges.insert(ia->second, ib->second, {int32_t(i), iab->second});
      m.merge_list.push_back({ia->second, ib->second});
    }

    // added tokens; ids must be those HF `tokenizers` assigns on load (AddedVocabulary::add_tokens), since HF
    // ignores the ids in the file: the model id if the content is in model.vocab, else the next free id.
    int64_t max_added = -1;
    const int64_t model_size = int64_t(vocab.size());
    for (size_t i = 0; i < added_j.size(); ++i) {
      const json& t = added_j[i];
      const std::string at = "added_tokens[" + std::to_string(i) + "]";
      KILN_CHECK(t.contains("content") && t["content"].is_string() && !t["content"].get<std::string>().empty(),
                 "tokenizer '", origin, "': field '", at, ".content' must be a non-empty string");
      AddedToken a{int32_t(t["id"].get<int64_t>()), t["content"].get<std::string>(),
                   get_bool(t, "special", false, origin, at), false};
      a.normalized = get_bool(t, "normalized", !a.special, origin, at);
      for (const char* k : {"single_word", "lstrip", "rstrip"})
        KILN_CHECK(!get_bool(t, k, false, origin, at), "tokenizer '", origin, "': field '", at, ".", k,
                   "' is true; Kiln supports only false");
      KILN_CHECK(!m.added_by_content.count(a.content), "tokenizer '", origin, "': field '", at, ".content' \"",
                 a.content, "\" is listed twice");
      int64_t hf_id;
      if (auto it = m.vocab.find(a.content); it != m.vocab.end()) hf_id = it->second;
      else if (max_added < 0) hf_id = model_size;
      else hf_id = (max_added >= model_size || model_size == 0) ? max_added + 1 : model_size;
      KILN_CHECK(hf_id == a.id, "tokenizer '", origin, "': field '", at, ".id' is ", a.id, " but HF tokenizers gives \"",
                 a.content, "\" id ", hf_id, " on load; Kiln refuses the ambiguity");
      max_added = std::max<int64_t>(max_added, a.id);
      KILN_CHECK(m.added_index[a.id] < 0, "tokenizer '", origin, "': field '", at, ".id' ", a.id, " is used twice");
      m.added_index[a.id] = int32_t(m.added.size());
      m.added_by_content.emplace(a.content, a.id);
      (a.normalized ? m.trie_normalized : m.trie_raw).add(a.content, a.id);
      m.added.push_back(std::move(a));
    }

    // decode table: added tokens decode to their content; model tokens through the byte alphabet, or (a character
    // outside it) to their UTF-8 text, as HF's ByteLevel decoder does.
    m.bytes_off.assign(nid + 1, 0);
    for (size_t id = 0; id < nid; ++id) {
      m.bytes_off[id] = uint32_t(m.bytes.size());
      if (m.added_index[id] >= 0) {
        m.bytes += m.added[m.added_index[id]].content;
        m.known_id[id] = 1;
      } else if (m.in_model[id]) {
        auto raw = tokenizer_detail::byte_level_decode(m.model_token[id]);
        m.bytes += raw ? *raw : m.model_token[id];
        m.known_id[id] = 1;
      }
    }
    m.bytes_off[nid] = uint32_t(m.bytes.size());

    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t id = 0; id < nid; ++id) h = tokenizer_detail::fnv1a(h, m.model_token[id]);
    for (auto [a, b] : m.merge_list) h = tokenizer_detail::fnv1a(h, std::to_string(a) + " " + std::to_string(b));
    for (const AddedToken& a : m.added) h = tokenizer_detail::fnv1a(h, std::to_string(a.id) + a.content);
    h = tokenizer_detail::fnv1a(h, m.pre_tokenizer_json.dump());
    h = tokenizer_detail::fnv1a(h, m.ignore_merges ? "im" : "");
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    m.name = "bpe-" + std::to_string(nid) + "-" + hex;
    return impl;
  }

  std::shared_ptr<const Impl> impl_;
};

// ---- training ---------------------------------------------------------------------------------------------------
inline Tokenizer Tokenizer::train(const std::vector<std::string>& texts, int vocab_size,
                                  const std::vector<std::string>& special_tokens, bool split_digits) {
  namespace td = tokenizer_detail;
  KILN_CHECK(vocab_size >= 256 + int(special_tokens.size()), "Tokenizer::train: vocab_size ", vocab_size,
             " must be at least 256 (the bytes) + ", special_tokens.size(), " (the special tokens)");
  KILN_CHECK(vocab_size < (1 << 24), "Tokenizer::train: vocab_size ", vocab_size, " must be below 2^24");
  td::LiteralTrie specials;
  for (size_t i = 0; i < special_tokens.size(); ++i) {
    KILN_CHECK(!special_tokens[i].empty(), "Tokenizer::train: special token ", i, " is empty");
    for (size_t k = 0; k < i; ++k)
      KILN_CHECK(special_tokens[k] != special_tokens[i], "Tokenizer::train: special token \"", special_tokens[i],
                 "\" is listed twice");
    specials.add(special_tokens[i], int32_t(i));
  }

  // 1. pre-token counts (special tokens are cut out of the texts first and not counted)
  const std::string_view pattern = split_digits ? td::kLlama3DigitsPattern : td::kLlama3Pattern;
  const td::Regex re(pattern, false, "Tokenizer::train: Llama-3 regex");
  std::unordered_map<std::string, int64_t, td::SvHash, std::equal_to<>> counts;
  for (const std::string& t : texts)
    specials.split(t, [&](std::string_view seg, int32_t id) {
      if (id >= 0) return;
      td::regex_split(re, false, seg, [&](std::string_view piece) {
        if (auto it = counts.find(piece); it != counts.end()) ++it->second;
        else counts.emplace(std::string(piece), 1);
      });
    });

  // 2. words as id sequences; ids 0..255 are the bytes in code-point order of their characters
  const td::ByteAlphabet& abc = td::alphabet();
  std::array<int32_t, 256> byte_to_id{};
  std::vector<std::string> tok_bytes(256);  // id -> raw bytes
  for (int i = 0; i < 256; ++i) {
    byte_to_id[abc.order[i]] = i;
    tok_bytes[i] = std::string(1, char(abc.order[i]));
  }
  std::vector<std::pair<std::string_view, int64_t>> sorted;
  sorted.reserve(counts.size());
  for (const auto& [w, c] : counts) sorted.push_back({w, c});
  std::sort(sorted.begin(), sorted.end());  // deterministic word order
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> wcount(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (char ch : sorted[w].first) words[w].push_back(byte_to_id[uint8_t(ch)]);
    wcount[w] = sorted[w].second;
  }

  // 3. pair counts and where each pair occurs (word lists may hold stale or repeated entries; checked on use)
  auto key = [](int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); };
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (size_t w = 0; w < words.size(); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t k = key(words[w][i], words[w][i + 1]);
      pair_count[k] += wcount[w];
      auto& lw = pair_words[k];
      if (lw.empty() || lw.back() != int32_t(w)) lw.push_back(int32_t(w));
    }
  // Max-heap: highest count, then the smallest pair (left id, right id) -- HF BpeTrainer's `Merge` order.
  struct Cand {
    int64_t count;
    uint64_t pair;
    bool operator<(const Cand& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Cand> heap;
  for (const auto& [k, c] : pair_count)
    if (c > 0) heap.push({c, k});

  std::unordered_map<std::string, int32_t> id_of_bytes;
  for (int i = 0; i < 256; ++i) id_of_bytes.emplace(tok_bytes[i], i);
  std::vector<std::pair<int32_t, int32_t>> merges;
  const size_t target = size_t(vocab_size) - special_tokens.size();
  std::vector<int32_t> touched;
  std::unordered_map<uint64_t, int64_t> delta;
  while (tok_bytes.size() < target && !heap.empty()) {
    const Cand top = heap.top();
    heap.pop();
    const int64_t cur = pair_count[top.pair];
    if (cur != top.count) {  // stale entry: requeue with the current count
      if (cur > 0) heap.push({cur, top.pair});
      continue;
    }
    if (cur < 1) break;
    const int32_t a = int32_t(top.pair >> 32), b = int32_t(top.pair & 0xffffffffu);
    // The new token; a merge whose string already exists (e.g. (ab,c) after (a,bc)) reuses its id, as HF does.
    std::string nb = tok_bytes[a] + tok_bytes[b];
    int32_t nid;
    if (auto it = id_of_bytes.find(nb); it != id_of_bytes.end()) {
      nid = it->second;
    } else {
      nid = int32_t(tok_bytes.size());
      id_of_bytes.emplace(nb, nid);
      tok_bytes.push_back(std::move(nb));
    }
    merges.push_back({a, b});

    touched = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    delta.clear();
    for (int32_t w : touched) {
      std::vector<int32_t>& s = words[w];
      const int64_t c = wcount[w];
      bool changed = false;
      // Left to right, non-overlapping (HF Word::merge): "a a a" with (a,a) -> "aa a".
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        if (s[i] != a || s[i + 1] != b) continue;
        changed = true;
        delta[key(a, b)] -= c;
        if (i > 0) {
          delta[key(s[i - 1], a)] -= c;
          delta[key(s[i - 1], nid)] += c;
          pair_words[key(s[i - 1], nid)].push_back(w);
        }
        if (i + 2 < s.size()) {
          delta[key(b, s[i + 2])] -= c;
          delta[key(nid, s[i + 2])] += c;
          pair_words[key(nid, s[i + 2])].push_back(w);
        }
        s[i] = nid;
        s.erase(s.begin() + ptrdiff_t(i) + 1);
      }
      (void)changed;
    }
    for (const auto& [k, d] : delta) {
      if (d == 0) continue;
      int64_t& pc = pair_count[k];
      pc += d;
      if (d > 0) heap.push({pc, k});  // counts that fell are requeued lazily when their stale entry surfaces
    }
  }

  // 4. tokenizer.json, loaded back through the same validating parser that reads HF files
  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (size_t i = 0; i < special_tokens.size(); ++i)
    added.push_back({{"id", int32_t(tok_bytes.size() + i)}, {"content", special_tokens[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}});
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", std::string(pattern)}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  std::vector<std::string> tok_str(tok_bytes.size());
  for (size_t id = 0; id < tok_bytes.size(); ++id) {
    tok_str[id] = td::byte_level_encode(tok_bytes[id]);
    vocab[tok_str[id]] = int32_t(id);
  }
  nlohmann::ordered_json mj = nlohmann::ordered_json::array();
  for (auto [a, b] : merges) mj.push_back({tok_str[a], tok_str[b]});
  j["model"] = {{"type", "BPE"},           {"dropout", nullptr},       {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                {"byte_fallback", false},  {"ignore_merges", false},   {"vocab", vocab},
                {"merges", mj}};
  return from_json(j.dump(), "<trained>");
}

}  // namespace kiln::data
