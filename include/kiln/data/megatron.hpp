// kiln/data/megatron.hpp: read (mmap, validated) and write Megatron-LM indexed datasets (`<prefix>.bin` + `<prefix>.idx`).
//
// Layout (megatron/core/datasets/indexed_dataset.py, _IndexWriter; FACTS.md "Formats"), all little-endian:
//   .idx: "MMIDIDX\0\0" (9 bytes) | u64 version = 1 | u8 dtype code | u64 sequence_count S | u64 document_count D
//         | i32 sizes[S] (tokens per sequence) | i64 pointers[S] (byte offset of each sequence in .bin)
//         | i64 document_indices[D] (sequence index where each document starts, plus a final sentinel: D = documents + 1,
//                                    document_indices[0] = 0, document_indices[D-1] = S)
//   .bin: the sequences' tokens back to back.
//   dtype codes: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16 (Kiln reads the integer ones).
// A document is the sequences [document_indices[i], document_indices[i+1]); Kiln requires the sequences to be stored
// contiguously in order (pointers[k] = pointers[k-1] + sizes[k-1] * itemsize, pointers[0] = 0, the last one ending at
// the .bin size), as Megatron's builder writes them, so every document is one contiguous token range. Multimodal
// indexes (a trailing `modes` array) are not supported: the .idx size must be exact.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kiln/data/shards.hpp"

namespace kiln::data {

inline constexpr char kMegatronMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

// Bytes per element of a Megatron dtype code, or 0 for codes Kiln does not read as tokens (floats, unknown).
constexpr int megatron_itemsize(uint8_t code) {
  switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: return 4;
    case 5: return 8;
    default: return 0;
  }
}

class MegatronView : public DocumentSource {
 public:
  // idx, bin: the file bytes; name: the prefix, for messages.
  MegatronView(std::span<const std::byte> idx, std::span<const std::byte> bin, std::string name, int64_t vocab = 0)
      : bin_(bin), name_(std::move(name)), vocab_(vocab) {
    const std::string ix = name_ + ".idx", bn = name_ + ".bin";
    constexpr size_t header = 9 + 8 + 1 + 8 + 8;
    KILN_CHECK(idx.size() >= header, ix, ": ", idx.size(), " bytes is shorter than the ", header, "-byte header");
    KILN_CHECK(std::memcmp(idx.data(), kMegatronMagic, 9) == 0, ix, ": bad magic at byte 0 (expected \"MMIDIDX\\0\\0\")");
    uint64_t version = detail::load_le<uint64_t>(idx.data() + 9);
    KILN_CHECK(version == 1, ix, ": version ", version, " at byte 9, expected 1");
    code_ = uint8_t(idx[17]);
    item_ = megatron_itemsize(code_);
    KILN_CHECK(item_ != 0, ix, ": dtype code ", int(code_), " at byte 17 is not an integer token type (expected 1 u8, 2 i8, "
               "3 i16, 4 i32, 5 i64 or 8 u16)");
    seqs_ = detail::load_le<uint64_t>(idx.data() + 18);
    uint64_t dcount = detail::load_le<uint64_t>(idx.data() + 26);
    KILN_CHECK(dcount >= 1, ix, ": document count ", dcount, " at byte 26 must be at least 1 (the sentinel)");
    // Expected size, with overflow guards: each count must fit the file before multiplying.
    KILN_CHECK(seqs_ <= idx.size() / 12 && dcount <= idx.size() / 8, ix, ": counts (", seqs_, " sequences, ", dcount,
               " document indices) do not fit a ", idx.size(), "-byte file");
    const uint64_t want = header + seqs_ * 4 + seqs_ * 8 + dcount * 8;
    KILN_CHECK(idx.size() == want, ix, ": ", idx.size(), " bytes, but ", seqs_, " sequences and ", dcount,
               " document indices need ", want);
    sizes_ = idx.data() + header;
    pointers_ = sizes_ + seqs_ * 4;
    docidx_ = pointers_ + seqs_ * 8;
    docs_ = dcount - 1;
    // Sequences: non-negative sizes, contiguous pointers.
    uint64_t off = 0;
    for (uint64_t k = 0; k < seqs_; ++k) {
      int32_t s = detail::load_le<int32_t>(sizes_ + 4 * k);
      int64_t p = detail::load_le<int64_t>(pointers_ + 8 * k);
      KILN_CHECK(s >= 0, ix, ": sequence ", k, " has negative size ", s);
      KILN_CHECK(p >= 0 && uint64_t(p) == off, ix, ": sequence ", k, " pointer ", p, " is not where sequence ",
                 k ? k - 1 : 0, " ends (byte ", off, "); Kiln reads contiguous sequences only");
      off += uint64_t(s) * uint64_t(item_);
      KILN_CHECK(off <= bin.size(), ix, ": sequence ", k, " ends at byte ", off, ", past the end of ", bn, " (",
                 bin.size(), " bytes)");
    }
    KILN_CHECK(off == bin.size(), bn, ": data file holds ", bin.size(), " bytes but the sequences end at byte ", off);
    tokens_ = off / uint64_t(item_);
    int64_t prev = 0;
    for (uint64_t i = 0; i < dcount; ++i) {
      int64_t d = detail::load_le<int64_t>(docidx_ + 8 * i);
      KILN_CHECK(i > 0 || d == 0, ix, ": document index 0 is ", d, ", expected 0");
      KILN_CHECK(d >= prev, ix, ": document index ", i, " (sequence ", d, ") goes backwards (entry ", i ? i - 1 : 0,
                 " is ", prev, ")");
      KILN_CHECK(uint64_t(d) <= seqs_, ix, ": document index ", i, " (sequence ", d, ") is past the ", seqs_,
                 " sequences");
      prev = d;
    }
    KILN_CHECK(uint64_t(prev) == seqs_, ix, ": the last document index is ", prev, " but there are ", seqs_,
               " sequences");
  }

  uint64_t size() const override { return docs_; }
  uint64_t tokens_in(uint64_t doc) const override {
    auto [b, e] = range(doc);
    return e - b;
  }
  uint64_t total_tokens() const override { return tokens_; }
  int64_t vocab_size() const override { return vocab_; }
  const std::string& name() const override { return name_; }
  std::string data_file() const override { return name_ + ".bin"; }
  int itemsize() const { return item_; }
  uint8_t dtype_code() const { return code_; }
  uint64_t sequences() const { return seqs_; }

  void read(uint64_t doc, uint64_t begin, uint64_t n, int32_t* out) const override {
    auto [b, e] = range(doc);
    KILN_CHECK(begin <= e - b && n <= e - b - begin, name_, ": read of tokens [", begin, ", ", begin + n,
               ") past the end of document ", doc, " (", e - b, " tokens)");
    const uint64_t first = b + begin;
    const std::byte* p = bin_.data() + first * uint64_t(item_);
    for (uint64_t i = 0; i < n; ++i) {
      int64_t t = 0;
      switch (code_) {
        case 1: t = detail::load_le<uint8_t>(p + i); break;
        case 2: t = detail::load_le<int8_t>(p + i); break;
        case 3: t = detail::load_le<int16_t>(p + 2 * i); break;
        case 8: t = detail::load_le<uint16_t>(p + 2 * i); break;
        case 4: t = detail::load_le<int32_t>(p + 4 * i); break;
        case 5: t = detail::load_le<int64_t>(p + 8 * i); break;
      }
      KILN_CHECK(t >= 0 && t <= INT32_MAX && (vocab_ <= 0 || t < vocab_), name_, ".bin: token ", first + i,
                 " (document ", doc, ", offset ", begin + i, ") is ", t, ", not a token id",
                 vocab_ > 0 ? " of the vocabulary of " : "", vocab_ > 0 ? std::to_string(vocab_) : std::string());
      out[i] = int32_t(t);
    }
  }

 private:
  // Token range [begin, end) of a document in the .bin.
  std::pair<uint64_t, uint64_t> range(uint64_t doc) const {
    KILN_CHECK(doc < docs_, name_, ": document ", doc, " out of range (", docs_, " documents)");
    uint64_t s0 = uint64_t(detail::load_le<int64_t>(docidx_ + 8 * doc));
    uint64_t s1 = uint64_t(detail::load_le<int64_t>(docidx_ + 8 * (doc + 1)));
    auto start = [&](uint64_t s) {
      return s == seqs_ ? tokens_ : uint64_t(detail::load_le<int64_t>(pointers_ + 8 * s)) / uint64_t(item_);
    };
    return {start(s0), start(s1)};
  }

  std::span<const std::byte> bin_;
  std::string name_;
  int64_t vocab_;
  uint8_t code_ = 0;
  int item_ = 0;
  uint64_t seqs_ = 0, docs_ = 0, tokens_ = 0;
  const std::byte *sizes_ = nullptr, *pointers_ = nullptr, *docidx_ = nullptr;
};

// A Megatron dataset opened from `<prefix>.idx` and `<prefix>.bin` (mmap). vocab 0: token ids are not range-checked
// beyond int32.
class MegatronReader final : public MegatronView {
 public:
  explicit MegatronReader(const std::string& prefix, int64_t vocab = 0) : MegatronReader(open(prefix), prefix, vocab) {}

 private:
  struct Files {
    detail::MappedFile idx, bin;
  };
  static std::shared_ptr<Files> open(const std::string& prefix) {
    auto f = std::make_shared<Files>();
    f->idx = detail::MappedFile(prefix + ".idx");
    f->bin = detail::MappedFile(prefix + ".bin");
    return f;
  }
  MegatronReader(std::shared_ptr<Files> f, const std::string& prefix, int64_t vocab)
      : MegatronView(f->idx.bytes(), f->bin.bytes(), prefix, vocab), files_(std::move(f)) {}
  std::shared_ptr<Files> files_;
};

// Writes a Megatron dataset, one sequence per document, u16 tokens when vocab <= 65536 (code 8) else i32 (code 4).
// For tests and interchange; documents are held by the caller.
inline void write_megatron(const std::string& prefix, const std::vector<std::vector<int32_t>>& docs, int64_t vocab) {
  const bool small = vocab <= 65536;
  const uint8_t code = small ? 8 : 4;
  const uint64_t item = small ? 2 : 4;
  detail::AtomicFile bin(prefix + ".bin"), idx(prefix + ".idx");
  for (const auto& d : docs)
    for (int32_t t : d) {
      KILN_CHECK(t >= 0 && t < vocab, prefix, ": token ", t, " outside the vocabulary of ", vocab, " ids");
      if (small) {
        uint16_t v = uint16_t(t);
        bin.write(&v, 2);
      } else {
        bin.write(&t, 4);
      }
    }
  const uint64_t version = 1, S = docs.size(), D = docs.size() + 1;
  idx.write(kMegatronMagic, 9);
  idx.write(&version, 8);
  idx.write(&code, 1);
  idx.write(&S, 8);
  idx.write(&D, 8);
  for (const auto& d : docs) {
    KILN_CHECK(d.size() <= size_t(INT32_MAX), prefix, ": a document of ", d.size(), " tokens exceeds Megatron's i32 sizes");
    int32_t s = int32_t(d.size());
    idx.write(&s, 4);
  }
  int64_t p = 0;
  for (const auto& d : docs) {
    idx.write(&p, 8);
    p += int64_t(d.size() * item);
  }
  for (uint64_t i = 0; i < D; ++i) {
    int64_t v = int64_t(i);
    idx.write(&v, 8);
  }
  bin.commit();
  idx.commit();
}

}  // namespace kiln::data
