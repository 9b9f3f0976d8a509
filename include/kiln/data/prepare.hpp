// kiln/data/prepare.hpp: from a directory of text files to what the loader reads, cached.
//
// prepare_corpus(text dir, cache root, vocab[, val_every, split_digits]): every file is a source named after it (the fortunes package's ~40
// category files become ~40 sources); every val_every-th document by content hash is held out (so the split does not
// depend on file order); a byte-level BPE tokenizer with vocab entries is trained on the training documents; each
// source's training documents become one token shard <cache>/<source>.ds and all held-out ones <cache>/heldout.ds.
// The tokenizer's special tokens: the end of a document, then the chat format's (chat.hpp: <|im_start|>, <|im_end|>,
// <think>, </think>), so that a model pretrained with it can be fine-tuned on conversations (its last ids).
// The cache directory is named by a hash of the inputs (file names, sizes, mtimes, vocab, split), and a `done`
// stamp written last marks it complete, so an interrupted preparation is redone, never half-used.
#pragma once
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kiln/core/rng.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/loader.hpp"
#include "kiln/data/shards.hpp"
#include "kiln/data/text_sources.hpp"
#include "kiln/data/tokenizer.hpp"

namespace kiln::data {

struct PreparedCorpus {
  std::string dir;                                            // the cache directory
  std::string tokenizer_path;                                 // <dir>/tokenizer.json
  std::vector<std::pair<std::string, std::string>> sources;   // name -> shard prefix
  std::vector<uint64_t> source_tokens;                        // training tokens per source
  std::string heldout;                                        // shard prefix of the held-out documents
  uint64_t heldout_tokens = 0, heldout_bytes = 0;
  bool cached = false;                                        // found complete in the cache
};

inline constexpr const char* kEndOfText = "<|endoftext|>";
// What a prepared corpus holds, in its cache key: 2 = the chat tokens reserved (1: the end-of-document token only).
inline constexpr int kPreparedFormat = 2;

// The name of a cache entry made from `files` (names, sizes, modification times) and the settings' hash `seed`, as
// 16 hex digits: a changed input file or setting makes a new entry, never a stale one.
inline std::string cache_key(const std::vector<std::string>& files, uint64_t seed) {
  namespace fs = std::filesystem;
  uint64_t key = seed;
  for (const auto& f : files) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    const auto mtime = fs::last_write_time(f, ec).time_since_epoch().count();
    for (unsigned char ch : f) key = mix64(key ^ ch);
    key = mix64(key ^ uint64_t(size)) ^ mix64(uint64_t(mtime));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)key);
  return hex;
}

inline PreparedCorpus prepare_corpus(const std::vector<std::string>& text_paths, const std::string& cache_root,
                                     int vocab, int val_every, bool split_digits = false) {
  namespace fs = std::filesystem;
  KILN_CHECK(val_every >= 2, "--val-every must be at least 2, got ", val_every);
  KILN_CHECK(!text_paths.empty(), "prepare_corpus: no data path");
  const std::string& text_dir = text_paths[0];  // the one the messages name
  const std::vector<std::string> files = text_files(text_paths);
  KILN_CHECK(!files.empty(), "data path '", text_dir, "' holds no text files");
  const std::string hex =
      cache_key(files, mix64(uint64_t(vocab) * 1000003 + uint64_t(val_every) + (uint64_t(kPreparedFormat - 1) << 40) +
                             (uint64_t(split_digits) << 48)));
  PreparedCorpus p;
  p.dir = (fs::path(cache_root) / ("bpe" + std::to_string(vocab) + (split_digits ? "d-" : "-") + hex)).string();
  p.tokenizer_path = p.dir + "/tokenizer.json";
  p.heldout = p.dir + "/heldout";
  auto source_name = [](const std::string& f) { return fs::path(f).filename().string(); };

  if (fs::exists(p.dir + "/done")) {  // complete: read the counts back from the shards
    p.cached = true;
    for (const auto& f : files) {
      const std::string prefix = p.dir + "/" + source_name(f);
      if (!fs::exists(prefix + ".ds")) continue;  // a file with no training documents
      p.sources.emplace_back(source_name(f), prefix);
      p.source_tokens.push_back(ShardReader(prefix).total_tokens());
    }
    const ShardReader held(p.heldout);
    p.heldout_tokens = held.total_tokens();
    std::ifstream(p.dir + "/heldout.bytes") >> p.heldout_bytes;
    return p;
  }

  fs::remove_all(p.dir);
  fs::create_directories(p.dir);
  // Documents of each file, split into training and held-out by content hash.
  std::vector<std::vector<std::string>> train(files.size());
  std::vector<std::string> held, all_train;
  for (size_t i = 0; i < files.size(); ++i) {
    TextStream in({files[i]}, TextOptions{});
    std::string doc;
    while (in.next(doc)) {
      if (held_out_document(doc, val_every)) {
        p.heldout_bytes += doc.size();
        held.push_back(doc);
      } else {
        train[i].push_back(doc);
        all_train.push_back(doc);
      }
    }
  }
  KILN_CHECK(!all_train.empty() && !held.empty(), "data path '", text_dir, "' holds too few documents to split");
  std::vector<std::string> specials = {kEndOfText};
  for (const auto& t : chat_special_tokens()) specials.push_back(t);
  const Tokenizer tok = Tokenizer::train(all_train, vocab, specials, split_digits);
  tok.save(p.tokenizer_path);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < files.size(); ++i) {
    if (train[i].empty()) continue;
    const std::string prefix = p.dir + "/" + source_name(files[i]);
    ShardWriter w(prefix, tok.vocab_size(), std::string(tok.name()));
    w.add_source(files[i]);
    uint64_t n = 0;
    for (const auto& d : train[i]) {
      ids.clear();
      tok.encode_append(d, ids);
      w.add_document(ids);
      n += ids.size();
    }
    w.finish();
    p.sources.emplace_back(source_name(files[i]), prefix);
    p.source_tokens.push_back(n);
  }
  ShardWriter hw(p.heldout, tok.vocab_size(), std::string(tok.name()));
  for (const auto& d : held) {
    ids.clear();
    tok.encode_append(d, ids);
    hw.add_document(ids);
    p.heldout_tokens += ids.size();
  }
  hw.finish();
  std::ofstream(p.dir + "/heldout.bytes") << p.heldout_bytes << "\n";
  std::ofstream(p.dir + "/done") << "complete\n";  // written last: the cache entry is whole
  return p;
}

inline PreparedCorpus prepare_corpus(const std::string& text_dir, const std::string& cache_root, int vocab,
                                     int val_every) {
  return prepare_corpus(std::vector<std::string>{text_dir}, cache_root, vocab, val_every);
}

}  // namespace kiln::data
