// bench/bench_tokenizer.cpp: kiln::data::Tokenizer throughput on English text (Google Benchmark).
//   encode/warm        steady state: the per-thread word cache already holds the corpus' words (bytes/s)
//   encode/cold        a fresh tokenizer (new cache) for every pass over the corpus: every word merged once
//   encode/threads:2   the same tokenizer from 2 threads (bytes/s summed over threads)
//   pre_tokenize       the Split regex alone (PCRE2 JIT)
//   train/8192         Tokenizer::train to vocab 8192 (+3 special tokens) on the whole corpus
// Corpus: the fortune files (/usr/share/games/fortunes, Debian `fortunes`, about 2.5 MB), documents split at `%`
// lines as the trainer reads them; a generated English-like text of the same size where they are absent. The
// tokenizer is Kiln-trained on that corpus, vocab 8192.
// Run: build-tok/bench/bench_tokenizer   (or --benchmark_filter=encode)
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kiln/data/bytes.hpp"
#include "kiln/data/tokenizer.hpp"

namespace {

std::vector<std::string> load_corpus() {
  namespace fs = std::filesystem;
  std::vector<std::string> docs;
  const fs::path dir = "/usr/share/games/fortunes";
  std::error_code ec;
  if (fs::is_directory(dir, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      const auto ext = e.path().extension().string();
      if (e.is_regular_file() && !e.is_symlink() && ext != ".dat" && ext != ".u8") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& p : files) {
      std::ifstream f(p, std::ios::binary);
      std::ostringstream s;
      s << f.rdbuf();
      for (auto& d : kiln::data::split_fortunes(s.str())) docs.push_back(std::move(d));
    }
  }
  if (docs.empty()) {  // generated English-like text, about 2.5 MB
    static const char* words[] = {"the", "of", "and", "a", "to", "in", "is", "you", "that", "it", "he", "was", "for",
                                  "on", "are", "as", "with", "his", "they", "I", "at", "be", "this", "have", "from",
                                  "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when",
                                  "your", "can", "said", "there", "use", "each", "which", "she", "do", "how", "their",
                                  "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so",
                                  "fortune", "computer", "program", "1984", "don't", "it's", "Linux", "system"};
    std::mt19937 rng(7);
    size_t total = 0;
    while (total < 2'500'000) {
      std::string d;
      const int n = 20 + int(rng() % 60);
      for (int i = 0; i < n; ++i) {
        d += words[rng() % (sizeof words / sizeof *words)];
        d += (rng() % 12 == 0) ? ".\n" : (rng() % 9 == 0 ? ", " : " ");
      }
      total += d.size();
      docs.push_back(std::move(d));
    }
  }
  return docs;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> c = load_corpus();
  return c;
}
int64_t corpus_bytes() {
  int64_t n = 0;
  for (const auto& d : corpus()) n += int64_t(d.size());
  return n;
}
const kiln::data::Tokenizer& tokenizer() {
  static const kiln::data::Tokenizer t =
      kiln::data::Tokenizer::train(corpus(), 8192, {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
  return t;
}

void encode_warm(benchmark::State& state) {
  const auto& t = tokenizer();
  std::vector<int32_t> ids;
  size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (const auto& d : corpus()) {
      ids.clear();
      t.encode_append(d, ids);
      tokens += ids.size();
    }
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
  state.counters["bytes/token"] = benchmark::Counter(double(corpus_bytes()) / double(tokens), benchmark::Counter::kAvgThreads);
}
BENCHMARK(encode_warm)->Name("encode/warm")->Unit(benchmark::kMillisecond)->Threads(1)->Threads(2)->UseRealTime();

void encode_cold(benchmark::State& state) {
  const std::string json = tokenizer().to_json();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    state.PauseTiming();
    const auto t = kiln::data::Tokenizer::from_json(json);  // a new tokenizer: an empty word cache
    state.ResumeTiming();
    for (const auto& d : corpus()) {
      ids.clear();
      t.encode_append(d, ids);
    }
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
}
BENCHMARK(encode_cold)->Name("encode/cold")->Unit(benchmark::kMillisecond);

void pre_tokenize(benchmark::State& state) {
  const auto& t = tokenizer();
  size_t pieces = 0;
  for (auto _ : state) {
    pieces = 0;
    for (const auto& d : corpus()) pieces += t.pre_tokenize(d).size();
    benchmark::DoNotOptimize(pieces);
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
  state.counters["pieces"] = double(pieces);
}
BENCHMARK(pre_tokenize)->Unit(benchmark::kMillisecond);

void train(benchmark::State& state) {
  for (auto _ : state) {
    auto t = kiln::data::Tokenizer::train(corpus(), int(state.range(0)), {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
    benchmark::DoNotOptimize(t);
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
}
BENCHMARK(train)->Arg(4096)->Arg(8192)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
