// tools/tokenize.cpp (kiln_tokenize; `tools/kiln tokenize`): text or Megatron data -> shuffled Kiln shards.
//
// Inputs: text files (one document per file, or per line with --split-lines), jsonl (the "text" field, --field),
// fortune-format files (documents between `%` lines; directories such as /usr/share/games/fortunes, whose .dat indexes
// and .u8 links are skipped), and Megatron datasets (`x.idx`/`x.bin`, named as x, x.idx or x.bin: re-sharded as is).
// Output: <output>.ds/.ds.index/.ds.metadata, or <output>.NNNNN.ds... with --max-shard-tokens (data/shards.hpp).
// Documents are stored WITHOUT an end-of-document token: the loader appends it when packing (data/loader.hpp).
//
// Method:
//   pass 1  documents are read in chunks (--chunk-mib of text, at most 65536 documents), encoded in parallel
//           (--threads; each document independently, results kept in input order, so the output does not depend on
//           the thread count) and streamed to a temporary unshuffled shard next to the output.
//   pass 2  (unless --no-shuffle) a permutation of all documents is drawn with Fisher-Yates from kiln::Rng(--seed) and the
//           documents are copied from the mmapped temporary shard in that order into the output shards; the temporary
//           is removed. This is a full shuffle of document order, not a windowed one.
// Memory bound: one chunk of text plus its tokens (about 2 x --chunk-mib, 4 bytes per token), 8 bytes per document for
// the permutation, and 1 MiB write buffers per open file. The token data itself is only ever on disk / in page cache.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/megatron.hpp"
#include "kiln/data/shards.hpp"
#include "kiln/data/text_sources.hpp"
#include "kiln/data/tokenizer.hpp"

namespace fs = std::filesystem;
using namespace kiln::data;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Output shards: a new one whenever the next document would pass max_tokens (0: one shard, named <output>.ds).
class OutputShards {
 public:
  OutputShards(std::string output, uint64_t max_tokens, int64_t vocab, std::string tokenizer, uint64_t seed,
               std::vector<std::string> sources)
      : output_(std::move(output)), max_(max_tokens), vocab_(vocab), tokenizer_(std::move(tokenizer)), seed_(seed),
        sources_(std::move(sources)) {}

  void add(std::span<const int32_t> doc) {
    if (!w_ || (max_ > 0 && w_->documents() > 0 && w_->tokens() + doc.size() > max_)) rotate();
    w_->add_document(doc);
    ++docs_;
    tokens_ += doc.size();
  }
  void finish() {
    if (!w_) rotate();  // an empty input still gives one (empty) shard
    w_->finish();
    w_.reset();
  }
  const std::vector<std::string>& written() const { return written_; }
  uint64_t documents() const { return docs_; }
  uint64_t tokens() const { return tokens_; }

 private:
  void rotate() {
    if (w_) w_->finish();
    char num[16];
    std::snprintf(num, sizeof num, ".%05zu", written_.size());
    std::string prefix = max_ > 0 ? output_ + num : output_;
    w_ = std::make_unique<ShardWriter>(prefix, vocab_, tokenizer_, seed_);
    for (const auto& s : sources_) w_->add_source(s);
    written_.push_back(prefix);
  }
  std::string output_;
  uint64_t max_;
  int64_t vocab_;
  std::string tokenizer_;
  uint64_t seed_;
  std::vector<std::string> sources_, written_;
  std::unique_ptr<ShardWriter> w_;
  uint64_t docs_ = 0, tokens_ = 0;
};

// A progress line on stderr, at most once a second (and once at the end).
struct Progress {
  Clock::time_point start = Clock::now(), last = start;
  bool quiet = false;
  void show(const char* what, uint64_t bytes, uint64_t docs, uint64_t tokens, bool final = false) {
    if (quiet) return;
    if (!final && seconds_since(last) < 1.0) return;
    last = Clock::now();
    const double t = std::max(seconds_since(start), 1e-9);
    std::fprintf(stderr, "\r%s: %.1f MiB in %.1f s (%.2f MiB/s), %llu docs, %llu tokens (%.0f tokens/s)%s", what,
                 double(bytes) / 1048576.0, t, double(bytes) / 1048576.0 / t, (unsigned long long)docs,
                 (unsigned long long)tokens, double(tokens) / t, final ? "\n" : "   ");
    std::fflush(stderr);
  }
};

// A Megatron prefix if the path names one (x with x.idx, or x.idx / x.bin), else nullopt.
std::optional<std::string> megatron_prefix(const std::string& p) {
  std::error_code ec;
  if (fs::is_directory(p, ec)) return std::nullopt;
  for (const char* ext : {".idx", ".bin"})
    if (p.ends_with(ext)) {
      std::string q = p.substr(0, p.size() - 4);
      if (fs::is_regular_file(q + ".idx", ec) && fs::is_regular_file(q + ".bin", ec)) return q;
    }
  if (fs::is_regular_file(p + ".idx", ec) && fs::is_regular_file(p + ".bin", ec)) return p;
  return std::nullopt;
}

int run(int argc, char** argv) {
  CLI::App app{"Tokenize text (files, directories, jsonl, fortune files) or re-shard Megatron .bin/.idx into shuffled "
               "Kiln shards (<output>.ds, .ds.index, .ds.metadata). Documents are stored without an end token."};
  std::vector<std::string> inputs;
  std::string tokenizer_path, output, format = "auto", field = "text";
  bool split_lines = false, no_shuffle = false, quiet = false;
  uint64_t seed = 0, max_shard_tokens = 0;
  int threads = std::max(1, omp_get_num_procs());
  int64_t vocab_override = 0;
  double chunk_mib = 64;
  app.add_option("inputs", inputs, "text files, directories, .jsonl files, fortune files, Megatron prefixes (x for "
                                   "x.idx/x.bin)")->required();
  app.add_option("--tokenizer", tokenizer_path, "tokenizer.json (needed for text inputs)");
  app.add_option("-o,--output", output, "output prefix: writes <output>.ds, .ds.index, .ds.metadata")->required();
  app.add_option("--format", format, "text input format")->check(CLI::IsMember({"auto", "text", "jsonl", "fortune"}))
      ->capture_default_str();
  app.add_option("--field", field, "jsonl field holding the document")->capture_default_str();
  app.add_flag("--split-lines", split_lines, "text files: one document per non-empty line (default: per file)");
  app.add_option("--seed", seed, "seed of the document shuffle")->capture_default_str();
  app.add_flag("--no-shuffle", no_shuffle, "keep the input order (one pass, no temporary shard)");
  app.add_option("--threads", threads, "encoding threads")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--max-shard-tokens", max_shard_tokens,
                 "start a new shard (<output>.NNNNN.ds) before one would pass this many tokens; 0: one shard")
      ->capture_default_str();
  app.add_option("--chunk-mib", chunk_mib, "text read and encoded per parallel chunk (bounds memory)")
      ->check(CLI::Range(0.001, 65536.0))->capture_default_str();
  app.add_option("--vocab-size", vocab_override, "vocabulary size for Megatron inputs without --tokenizer");
  app.add_flag("-q,--quiet", quiet, "no progress line");
  CLI11_PARSE(app, argc, argv);

  // Sort the inputs into Megatron datasets and text paths.
  std::vector<std::string> megatron, text_paths;
  for (const auto& p : inputs) {
    if (auto m = megatron_prefix(p)) megatron.push_back(*m);
    else text_paths.push_back(p);
  }
  TextOptions topt{format, field, split_lines};
  std::unique_ptr<TextStream> texts;
  if (!text_paths.empty()) texts = std::make_unique<TextStream>(text_paths, topt);
  std::optional<Tokenizer> tok;
  if (!tokenizer_path.empty()) tok = Tokenizer::load(tokenizer_path);
  KILN_CHECK(tok || !texts, "text inputs need --tokenizer tokenizer.json");
  int64_t vocab = tok ? tok->vocab_size() : vocab_override;
  KILN_CHECK(vocab > 0, "Megatron inputs without --tokenizer need --vocab-size");
  KILN_CHECK(!tok || vocab_override == 0 || vocab_override == vocab, "--vocab-size ", vocab_override,
             " differs from the tokenizer's ", vocab);
  const std::string tok_name = tok ? std::string(tok->name()) : std::string("unknown");
  std::vector<std::string> sources = megatron;
  if (texts) sources.insert(sources.end(), texts->files().begin(), texts->files().end());
  KILN_CHECK(!sources.empty(), "no input files found in: ", [&] {
    std::string s;
    for (auto& i : inputs) s += (s.empty() ? "" : ", ") + i;
    return s;
  }());
  if (auto dir = fs::path(output).parent_path(); !dir.empty()) fs::create_directories(dir);

  const std::string tmp_prefix = output + ".unshuffled." + std::to_string(::getpid());
  std::unique_ptr<ShardWriter> tmp;
  std::unique_ptr<OutputShards> out;
  if (no_shuffle) out = std::make_unique<OutputShards>(output, max_shard_tokens, vocab, tok_name, seed, sources);
  else tmp = std::make_unique<ShardWriter>(tmp_prefix, vocab, tok_name, seed);
  auto sink = [&](std::span<const int32_t> d) {
    if (out) out->add(d);
    else tmp->add_document(d);
  };

  Progress prog;
  prog.quiet = quiet;
  uint64_t bytes = 0, docs = 0, tokens = 0;
  std::vector<int32_t> buf;
  // Megatron inputs: copied as they are (ids checked against the vocabulary).
  for (const auto& m : megatron) {
    MegatronReader r(m, vocab);
    for (uint64_t i = 0; i < r.size(); ++i) {
      r.copy_document(i, buf);
      sink(buf);
      ++docs;
      tokens += buf.size();
      bytes += buf.size() * uint64_t(r.itemsize());
      prog.show("tokenize", bytes, docs, tokens);
    }
  }
  // Text inputs: chunked parallel encoding.
  if (texts) {
    const uint64_t chunk_bytes = uint64_t(chunk_mib * 1048576.0);
    std::vector<std::string> chunk;
    std::vector<std::vector<int32_t>> enc;
    std::string doc;
    bool more = true;
    while (more) {
      chunk.clear();
      uint64_t cb = 0;
      while (cb < chunk_bytes && chunk.size() < 65536) {
        if (!texts->next(doc)) {
          more = false;
          break;
        }
        cb += doc.size();
        chunk.push_back(std::move(doc));
      }
      enc.resize(chunk.size());
      const Tokenizer& t = *tok;
#pragma omp parallel for schedule(dynamic, 8) num_threads(threads)
      for (size_t i = 0; i < chunk.size(); ++i) {
        enc[i].clear();
        t.encode_append(chunk[i], enc[i]);
      }
      for (size_t i = 0; i < chunk.size(); ++i) {
        sink(enc[i]);
        tokens += enc[i].size();
      }
      docs += chunk.size();
      bytes += cb;
      prog.show("tokenize", texts->bytes_read(), docs, tokens);
    }
    bytes = texts->bytes_read();
  }
  prog.show("tokenize", bytes, docs, tokens, true);

  if (tmp) {
    // Pass 2: shuffled copy from the temporary shard.
    tmp->finish();
    tmp.reset();
    const auto t0 = Clock::now();
    auto remove_tmp = [&] {
      std::error_code ec;
      for (const char* ext : {".ds", ".ds.index", ".ds.metadata"}) fs::remove(tmp_prefix + ext, ec);
    };
    try {
      ShardReader r(tmp_prefix);
      r.advise_random();
      std::vector<uint64_t> order(r.size());
      std::iota(order.begin(), order.end(), uint64_t(0));
      kiln::Rng rng(seed);
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);  // Fisher-Yates
      out = std::make_unique<OutputShards>(output, max_shard_tokens, vocab, tok_name, seed, sources);
      for (uint64_t i = 0; i < order.size(); ++i) {
        r.copy_document(order[i], buf);
        out->add(buf);
      }
    } catch (...) {
      remove_tmp();
      throw;
    }
    remove_tmp();
    if (!quiet) std::fprintf(stderr, "shuffle: %llu documents in %.2f s (seed %llu)\n", (unsigned long long)docs,
                             seconds_since(t0), (unsigned long long)seed);
  }
  out->finish();
  for (const auto& p : out->written()) std::printf("%s.ds\n", p.c_str());
  std::fprintf(stderr, "wrote %zu shard%s: %llu documents, %llu tokens, %s tokens, vocab %lld (%s)\n",
               out->written().size(), out->written().size() == 1 ? "" : "s", (unsigned long long)out->documents(),
               (unsigned long long)out->tokens(), token_bytes_for_vocab(vocab) == 2 ? "u16" : "u32", (long long)vocab,
               tok_name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "\nkiln_tokenize: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nkiln_tokenize: error: %s\n", e.what());
    return 1;
  }
}
