// kiln/train/run_data.hpp: the data of a run, from the recipe's run-time settings:
//   tokenizer ""         byte-level tokens over the text corpus (ids 0-255, 256 ends a document)
//   tokenizer "bpe:<n>"  a byte-level BPE of n entries trained on the corpus, each text file a source in token
//                        shards (data/prepare.hpp, cached), mixed by stages: stage k starts at a fraction of the run's
//                        tokens and weighs each source by its natural share times the stage's boost ("*": default)
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "kiln/data/prepare.hpp"
#include "kiln/data/rows.hpp"
#include "kiln/train/config.hpp"

namespace kiln {

struct RunData {
  std::unique_ptr<data::RowSource> train;
  std::function<std::unique_ptr<data::RowSource>()> make_eval;
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  int32_t end_of_document = -1;
  int vocab_used = 0;           // ids the data can hold (<= the model's vocabulary)
  double bytes_per_token = 1;   // of the held-out text, for bits per byte
  double epoch_tokens = 0;      // training tokens in one pass
  std::string tokenizer_path;   // "" for byte-level
  std::string summary;
};

inline RunData open_run_data(const TrainConfig& c, int model_vocab, long tokens_per_step,
                             const std::function<void(const std::string&)>& event) {
  RunData d;
  if (c.tokenizer.empty()) {
    auto corpus = std::make_shared<const data::Corpus>(data::load_fortunes(c.data, c.val_every));
    d.train = std::make_unique<data::PackedBytes>(&corpus->train, c.seed, true);
    d.make_eval = [corpus] { return std::make_unique<data::PackedBytes>(&corpus->val, 0, false); };
    d.encode = [](const std::string& s) { return data::ByteTokenizer::encode(s); };
    d.decode = [](const std::vector<int32_t>& t) { return data::ByteTokenizer::decode(t); };
    d.end_of_document = data::ByteTokenizer::end_of_document;
    d.vocab_used = data::ByteTokenizer::vocab_used;
    d.epoch_tokens = double(corpus->train_bytes + corpus->train.size());
    char s[256];
    std::snprintf(s, sizeof s, "%s | %zu files | %zu train documents (%.2f MB), %zu held out | byte tokens",
                  c.data.c_str(), corpus->files, corpus->train.size(), corpus->train_bytes / 1e6, corpus->val.size());
    d.summary = s;
  } else {
    KILN_CHECK(c.tokenizer.rfind("bpe:", 0) == 0, "--tokenizer '", c.tokenizer,
               "': expected \"\" (byte-level) or bpe:<vocabulary size>");
    const int vocab = std::stoi(c.tokenizer.substr(4));
    KILN_CHECK(vocab > 256 && vocab <= model_vocab, "--tokenizer ", c.tokenizer, ": the vocabulary must be in (256, ",
               model_vocab, "] (the model's embedding has ", model_vocab, " rows)");
    const auto t0 = std::chrono::steady_clock::now();
    const data::PreparedCorpus p = data::prepare_corpus(c.data, c.cache, vocab, c.val_every);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto tok = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(p.tokenizer_path));
    const auto eod = tok->token_to_id(data::kEndOfText);
    KILN_CHECK(eod, p.tokenizer_path, ": no token ", data::kEndOfText, " (the end-of-document token)");
    d.end_of_document = *eod;
    d.vocab_used = tok->vocab_size();
    d.tokenizer_path = p.tokenizer_path;
    d.encode = [tok](const std::string& s) { return tok->encode(s); };
    d.decode = [tok](const std::vector<int32_t>& t) { return tok->decode(t); };
    d.bytes_per_token = p.heldout_tokens ? double(p.heldout_bytes) / double(p.heldout_tokens) : 1.0;
    // Sources and stages: weights are natural shares times the stage's boost.
    std::vector<data::Source> sources;
    double total = 0;
    for (size_t i = 0; i < p.sources.size(); ++i) {
      sources.push_back(data::Source::open(p.sources[i].first, {p.sources[i].second}));
      total += double(p.source_tokens[i]);
    }
    d.epoch_tokens = total;
    const double run_tokens = double(c.steps) * double(tokens_per_step);
    std::vector<data::StageMix> stages;
    std::vector<TrainConfig::DataStage> spec = c.stages;
    if (spec.empty()) spec.push_back({0.0, {}});
    for (const auto& st : spec) {
      KILN_CHECK(st.start >= 0 && st.start < 1, "data stage start ", st.start, " must be a fraction of the run in [0, 1)");
      data::StageMix m;
      m.start_tokens = uint64_t(st.start * run_tokens);
      for (size_t i = 0; i < p.sources.size(); ++i) {
        double boost = 1;
        for (const auto& [name, b] : st.boost)
          if (name == "*" || name == p.sources[i].first) boost = b;  // later entries win: "*" first, then names
        m.weights.emplace_back(p.sources[i].first, double(p.source_tokens[i]) * boost);
      }
      for (const auto& [name, b] : st.boost) {
        bool known = name == "*";
        for (const auto& s : p.sources) known = known || s.first == name;
        KILN_CHECK(known, "data stage boost names source '", name, "', which ", c.data, " does not have");
      }
      stages.push_back(std::move(m));
    }
    auto loader = std::make_unique<data::Loader>(std::move(sources), stages, d.end_of_document, c.seed, 0, 1);
    loader->on_event = event;
    d.train = std::make_unique<data::MixedShards>(std::move(loader));
    const std::string held = p.heldout;
    const int32_t e = d.end_of_document;
    d.make_eval = [held, e] {
      std::vector<data::Source> s;
      s.push_back(data::Source::open("heldout", {held}));
      auto l = std::make_unique<data::Loader>(std::move(s), std::vector<data::StageMix>{{0, {{"heldout", 1.0}}}}, e, 0, 0, 1);
      l->on_event = [](const std::string&) {};  // repeats of the held-out set are expected
      return std::make_unique<data::MixedShards>(std::move(l));
    };
    char s[512];
    std::snprintf(s, sizeof s,
                  "%s | %zu sources | %.2fM training tokens, %llu held out | BPE %d (%s, %s in %.1f s) | %.2f bytes/token",
                  c.data.c_str(), p.sources.size(), total / 1e6, (unsigned long long)p.heldout_tokens, vocab,
                  p.tokenizer_path.c_str(), p.cached ? "cached" : "trained and tokenized", secs, d.bytes_per_token);
    d.summary = s;
  }
  return d;
}

}  // namespace kiln
