// tools/tokstats.cpp (kiln_tokstats; `tools/kiln tokstats`): compares tokenizers on a text set (FACTS.md "Tokenizer metrics").
//
// Definitions:
//   word       a maximal run of letters and combining marks, or of digits: PCRE2 `[\p{L}\p{M}]+|\p{N}+` (UTF, UCP), so
//              "don't" is two words and punctuation, spaces and symbols are not words.
//   tokens     every token of encode(document) (added-token matching, pre-tokenizer and BPE as in training), including
//              tokens of spaces and punctuation.
//   fertility  tokens / words over the whole set (mean tokens per word).
//   continued  the share of words covered by 2 or more tokens, in context: token byte spans come from decoding each id
//              (byte-level BPE decodes to exactly its bytes), and a word counts the tokens whose spans overlap it.
//              Documents whose tokens do not decode back to their bytes (ids missing from the vocabulary) are counted
//              in `undecodable` and left out of the continued-word share only.
// Llama-3 on English gives about 1.48 / 0.32 (FACTS.md).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <omp.h>
#include <pcre2.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/data/text_sources.hpp"
#include "kiln/data/tokenizer.hpp"

using namespace kiln::data;

namespace {

// Word spans [begin, end) of a text.
class WordSplitter {
 public:
  WordSplitter() {
    static const char* kPattern = "[\\p{L}\\p{M}]+|\\p{N}+";
    int err = 0;
    PCRE2_SIZE off = 0;
    re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    KILN_CHECK(re_, "tokstats: cannot compile the word regex (PCRE2 error ", err, ")");
    pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
  }
  ~WordSplitter() { pcre2_code_free(re_); }
  WordSplitter(const WordSplitter&) = delete;
  WordSplitter& operator=(const WordSplitter&) = delete;

  void split(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& out) const {
    out.clear();
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_, nullptr);
    size_t pos = 0;
    while (pos < text.size()) {
      int rc = pcre2_match(re_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md, nullptr);
      if (rc < 0) break;  // PCRE2_ERROR_NOMATCH (invalid UTF-8 is skipped by MATCH_INVALID_UTF)
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {
        pos = ov[1] + 1;
        continue;
      }
      out.emplace_back(uint32_t(ov[0]), uint32_t(ov[1]));
      pos = ov[1];
    }
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* re_ = nullptr;
};

struct Stats {
  uint64_t words = 0, tokens = 0, continued = 0, counted_words = 0, undecodable = 0, docs = 0;
};

struct Entry {
  std::string path;
  Tokenizer tok;
  std::vector<uint32_t> len;  // bytes of each id's decoding (0: not decodable alone)
  Stats st;
};

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"Compare tokenizers on a text set: fertility (tokens per word) and the share of words split into 2+ "
               "tokens (FACTS.md \"Tokenizer metrics\"); words are runs of letters/marks or of digits."};
  std::vector<std::string> tokenizers, inputs;
  std::string format = "auto", field = "text";
  bool split_lines = false;
  uint64_t max_docs = 0;
  int threads = std::max(1, omp_get_num_procs());
  app.add_option("-t,--tokenizer", tokenizers, "tokenizer.json (repeat to compare several)")->required();
  app.add_option("inputs", inputs, "text files, directories, .jsonl, fortune files")->required();
  app.add_option("--format", format, "text input format")->check(CLI::IsMember({"auto", "text", "jsonl", "fortune"}))
      ->capture_default_str();
  app.add_option("--field", field, "jsonl field holding the document")->capture_default_str();
  app.add_flag("--split-lines", split_lines, "text files: one document per non-empty line");
  app.add_option("--max-docs", max_docs, "stop after this many documents (0: all)");
  app.add_option("--threads", threads, "threads")->check(CLI::Range(1, 1024))->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::vector<std::unique_ptr<Entry>> entries;
  for (const auto& p : tokenizers) {
    auto e = std::make_unique<Entry>(Entry{p, Tokenizer::load(p), {}, {}});
    e->len.resize(size_t(e->tok.vocab_size()));
    for (int32_t id = 0; id < e->tok.vocab_size(); ++id) {
      try {
        e->len[size_t(id)] = uint32_t(e->tok.decode(&id, 1).size());
      } catch (const kiln::Error&) {
        e->len[size_t(id)] = 0;  // a hole in the id range
      }
    }
    entries.push_back(std::move(e));
  }
  WordSplitter words;
  TextStream texts(inputs, TextOptions{format, field, split_lines});
  std::vector<std::string> chunk;
  std::string doc;
  uint64_t total_docs = 0;
  bool more = true;
  while (more) {
    chunk.clear();
    uint64_t bytes = 0;
    while (bytes < (64u << 20) && chunk.size() < 16384 && (max_docs == 0 || total_docs + chunk.size() < max_docs)) {
      if (!texts.next(doc)) {
        more = false;
        break;
      }
      bytes += doc.size();
      chunk.push_back(std::move(doc));
    }
    if (max_docs && total_docs + chunk.size() >= max_docs) more = false;
    total_docs += chunk.size();
    for (auto& e : entries) {
      uint64_t w = 0, t = 0, c = 0, cw = 0, bad = 0;
#pragma omp parallel num_threads(threads) reduction(+ : w, t, c, cw, bad)
      {
        std::vector<std::pair<uint32_t, uint32_t>> spans;
        std::vector<int32_t> ids;
        std::vector<uint64_t> ends;
#pragma omp for schedule(dynamic, 16)
        for (size_t i = 0; i < chunk.size(); ++i) {
          const std::string& d = chunk[i];
          words.split(d, spans);
          ids.clear();
          e->tok.encode_append(d, ids);
          w += spans.size();
          t += ids.size();
          ends.clear();
          uint64_t off = 0;
          for (int32_t id : ids) ends.push_back(off += (id >= 0 && size_t(id) < e->len.size()) ? e->len[size_t(id)] : 0);
          if (off != d.size()) {
            ++bad;
            continue;
          }
          size_t k = 0;  // first token ending after the word's start
          for (auto [s, en] : spans) {
            while (k < ends.size() && ends[k] <= s) ++k;
            size_t j = k, n = 0;
            while (j < ends.size() && (j == 0 ? 0 : ends[j - 1]) < en) ++n, ++j;
            c += n >= 2;
            ++cw;
          }
        }
      }
      e->st.words += w;
      e->st.tokens += t;
      e->st.continued += c;
      e->st.counted_words += cw;
      e->st.undecodable += bad;
      e->st.docs += chunk.size();
    }
  }
  std::printf("text: %llu documents, %llu bytes from %zu file%s; word = [\\p{L}\\p{M}]+ | \\p{N}+\n",
              (unsigned long long)total_docs, (unsigned long long)texts.bytes_read(), texts.files().size(),
              texts.files().size() == 1 ? "" : "s");
  size_t wname = 9;
  for (auto& e : entries) wname = std::max(wname, e->path.size());
  std::printf("%-*s  %8s  %11s  %11s  %9s  %11s\n", int(wname), "tokenizer", "vocab", "words", "tokens", "fertility",
              "continued %");
  for (auto& e : entries) {
    const Stats& s = e->st;
    std::printf("%-*s  %8d  %11llu  %11llu  %9.3f  %11.2f", int(wname), e->path.c_str(), e->tok.vocab_size(),
                (unsigned long long)s.words, (unsigned long long)s.tokens, s.words ? double(s.tokens) / double(s.words) : 0.0,
                s.counted_words ? 100.0 * double(s.continued) / double(s.counted_words) : 0.0);
    if (s.undecodable) std::printf("  (%llu undecodable documents left out of continued %%)", (unsigned long long)s.undecodable);
    std::printf("\n");
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln_tokstats: error: %s\n", e.what());
    return 1;
  }
}
