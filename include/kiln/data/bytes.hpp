// kiln/data/bytes.hpp: byte-level tokens, a document corpus from text files, and packing into training rows.
//
// The byte-level path (`--tokenizer ""`): a token is a byte (0..255) and id 256 ends a document.
// Packing: documents (each followed by its end token) are concatenated in a seeded order per epoch and cut into
// rows of T + 1 tokens; inputs are row[0..T), targets row[1..T]. A token's document starts after the previous end
// token or at the row start; attention stays inside the document and positions restart at 0 there.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/packing.hpp"
#include "kiln/data/split.hpp"

namespace kiln::data {

struct ByteTokenizer {
  static constexpr int32_t end_of_document = 256;
  static constexpr int vocab_used = 257;
  static std::vector<int32_t> encode(std::string_view s) {
    std::vector<int32_t> t(s.size());
    for (size_t i = 0; i < s.size(); ++i) t[i] = int32_t(uint8_t(s[i]));
    return t;
  }
  static std::string decode(const std::vector<int32_t>& t) {
    std::string s;
    for (int32_t id : t) {
      if (id >= 0 && id < 256) s.push_back(char(uint8_t(id)));
      else if (id == end_of_document) s += "<|end|>";
    }
    return s;
  }
};

struct Corpus {
  std::vector<std::vector<int32_t>> train, val;  // token ids of each document, no end token
  size_t files = 0, train_bytes = 0, val_bytes = 0;
};

// Splits a fortune-format file (documents separated by lines holding just `%`).
inline std::vector<std::string> split_fortunes(const std::string& text) {
  std::vector<std::string> docs;
  std::string cur;
  std::istringstream in(text);
  std::string line;
  auto flush = [&] {
    while (!cur.empty() && (cur.back() == '\n' || cur.back() == ' ')) cur.pop_back();
    if (!cur.empty()) docs.push_back(cur);
    cur.clear();
  };
  while (std::getline(in, line)) {
    if (line == "%") flush();
    else cur += line + "\n";
  }
  flush();
  return docs;
}

// Reads a file or every data file of a directory in the fortune format (strfile's .dat indexes and the .u8
// links are skipped). Every val_every-th document by content hash is held out, so the split does not depend on
// file order.
inline Corpus load_fortunes(const std::string& path, int val_every) {
  namespace fs = std::filesystem;
  KILN_CHECK(val_every >= 2, "--val-every must be at least 2, got ", val_every);
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path)) {
      const auto ext = e.path().extension().string();
      if (!e.is_regular_file() || e.is_symlink() || ext == ".dat" || ext == ".u8") continue;
      files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
  } else if (fs::is_regular_file(path, ec)) {
    files.push_back(path);
  }
  KILN_CHECK(!files.empty(), "data path '", path,
             "' is not a readable file or a directory with text files (the demo corpus comes from the Debian package "
             "'fortunes': apt-get install fortunes)");
  Corpus c;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    KILN_CHECK(in, "cannot read data file '", f.string(), "'");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (auto& d : split_fortunes(text)) {
      const bool held_out = held_out_document(d, val_every);
      (held_out ? c.val_bytes : c.train_bytes) += d.size();
      (held_out ? c.val : c.train).push_back(ByteTokenizer::encode(d));
    }
    ++c.files;
  }
  KILN_CHECK(!c.train.empty() && !c.val.empty(), "data path '", path, "' holds too few documents to split (",
             c.train.size() + c.val.size(), " found)");
  return c;
}

// Where a packer is in its stream: a small value a checkpoint can hold.
struct PackerState {
  uint64_t epoch = 0, doc = 0, offset = 0;  // next token: document `doc` of epoch `epoch`'s order, at `offset`
  int32_t carry = 0;                        // the previous row's last target, which starts the next row
  bool has_carry = false;
};

// An endless stream of rows over a document set, reshuffled each epoch (or kept in order for evaluation).
class Packer {
 public:
  Packer(const std::vector<std::vector<int32_t>>* docs, uint64_t seed, bool shuffle)
      : docs_(docs), seed_(seed), shuffle_(shuffle) {
    order_.resize(docs_->size());
    reorder();
  }

  const PackerState& state() const { return st_; }
  uint64_t epoch() const { return st_.epoch; }
  // Continues exactly where `s` was taken (same documents, seed and shuffle).
  void restore(const PackerState& s) {
    KILN_CHECK(s.doc < order_.size(), "data state: document ", s.doc, " is beyond the corpus (", order_.size(),
               " documents): it belongs to another corpus");
    st_ = s;
    reorder();
  }

  // Fills B rows: tokens/targets/positions/doc_start, each (B, T) (packing.hpp).
  void next(int B, int T, int32_t* tokens, int32_t* targets, int32_t* positions, int32_t* doc_start) {
    row_.resize(size_t(T) + 1);
    for (int b = 0; b < B; ++b) {
      const size_t o = size_t(b) * T;
      cut_row(T, ByteTokenizer::end_of_document, st_.carry, st_.has_carry, row_.data(),
              [&](size_t from, size_t n) {
                for (size_t i = from; i < from + n; ++i) row_[i] = next_token();
              },
              tokens + o, targets + o, positions + o, doc_start + o);
    }
  }

 private:
  // The stream: documents in this epoch's order, each followed by the end-of-document id.
  int32_t next_token() {
    const auto& d = (*docs_)[order_[st_.doc]];
    int32_t t = st_.offset < d.size() ? d[st_.offset] : ByteTokenizer::end_of_document;
    if (++st_.offset > d.size()) {  // the end token was emitted: next document
      st_.offset = 0;
      if (++st_.doc == order_.size()) {
        st_.doc = 0;
        ++st_.epoch;
        reorder();
      }
    }
    return t;
  }

  void reorder() {
    std::iota(order_.begin(), order_.end(), 0);
    if (!shuffle_) return;
    Rng rng(seed_ ^ mix64(st_.epoch + 1));
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.below(i)]);  // Fisher-Yates
  }

  const std::vector<std::vector<int32_t>>* docs_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<uint32_t> order_;
  std::vector<int32_t> row_;  // (T + 1) scratch row
  PackerState st_;
};

}  // namespace kiln::data
