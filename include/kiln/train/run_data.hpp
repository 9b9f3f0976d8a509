// kiln/train/run_data.hpp: the data of a run, from the recipe's run-time settings:
//   tokenizer ""         byte-level tokens over the text corpus (ids 0-255, 256 ends a document)
//   tokenizer "bpe:<n>"  a byte-level BPE of n entries trained on the corpus, each text file a source in token
//                        shards (data/prepare.hpp, cached), mixed by stages: stage k starts at a fraction of the run's
//                        tokens and weighs each source by its natural share times the stage's boost ("*": default)
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "kiln/data/prepare.hpp"
#include "kiln/data/rows.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/chat_synthetic.hpp"
#include "kiln/data/pairs.hpp"
#include "kiln/data/synthetic.hpp"
#include "kiln/eval/make_tasks.hpp"
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

namespace detail {

// The sources' names.
inline std::string name_list(const std::vector<std::pair<std::string, std::vector<std::string>>>& named) {
  std::string s;
  for (size_t i = 0; i < named.size(); ++i) s += (i ? ", " : "") + named[i].first;
  return s;
}

// Training sources and stages -> the mixture loader; the held-out prefixes -> fresh evaluation streams.
inline void open_mixture(RunData& d, const TrainConfig& c, int model_vocab, long tokens_per_step,
                         const std::vector<std::pair<std::string, std::vector<std::string>>>& named,
                         const std::vector<uint64_t>& tokens, const std::vector<std::string>& heldout,
                         const std::function<void(const std::string&)>& event) {
  KILN_CHECK(named.size() <= size_t(data::LoaderState::kMaxSources), c.data, ": ", named.size(),
             " sources, but the loader mixes at most ", data::LoaderState::kMaxSources,
             " (a checkpoint's data position has one slot per source): group the files into fewer sources");
  std::vector<data::Source> sources;
  double total = 0;
  for (size_t i = 0; i < named.size(); ++i) {
    sources.push_back(data::Source::open(named[i].first, named[i].second, c.token_size));
    total += double(tokens[i]);
  }
  d.epoch_tokens = total;
  const double run_tokens = double(c.steps) * double(tokens_per_step);
  std::vector<data::StageMix> stages;
  std::vector<TrainConfig::DataStage> spec = c.stages;
  if (spec.empty() || spec.front().start > 0) spec.insert(spec.begin(), {0.0, {}, false});  // natural until then
  for (const auto& st : spec) {
    KILN_CHECK(st.start >= 0 && st.start < 1, "data stage start ", st.start, " must be a fraction of the run in [0, 1)");
    for (const auto& [name, b] : st.boost) {
      bool known = name == "*";
      for (const auto& s : named) known = known || s.first == name;
      KILN_CHECK(known, "a data stage names source '", name, "', which ", c.data, " does not have (its sources: ",
                 name_list(named), "; --stage sets the stages, --no-stages clears them)");
      KILN_CHECK(b >= 0, "data stage weight of '", name, "' is negative (", b, ")");
    }
    data::StageMix m;
    m.start_tokens = uint64_t(st.start * run_tokens);
    for (size_t i = 0; i < named.size(); ++i) {
      double w = st.absolute ? 0.0 : 1.0;
      for (const auto& [name, b] : st.boost)
        if (name == "*" || name == named[i].first) w = b;  // later entries win: "*" first, then names
      m.weights.emplace_back(named[i].first, st.absolute ? w : double(tokens[i]) * w);
    }
    stages.push_back(std::move(m));
  }
  auto loader =
      std::make_unique<data::Loader>(std::move(sources), stages, d.end_of_document, c.seed, 0, 1, model_vocab);
  loader->on_event = event;
  d.train = std::make_unique<data::MixedShards>(std::move(loader));
  const int32_t e = d.end_of_document;
  d.make_eval = [heldout, e, tb = c.token_size, model_vocab] {
    std::vector<data::Source> s;
    s.push_back(data::Source::open("heldout", heldout, tb));
    auto l = std::make_unique<data::Loader>(std::move(s), std::vector<data::StageMix>{{0, {{"heldout", 1.0}}}}, e, 0, 0,
                                            1, model_vocab);
    l->on_event = [](const std::string&) {};  // repeats of the held-out set are expected
    return std::make_unique<data::MixedShards>(std::move(l));
  };
}

inline void use_tokenizer(RunData& d, const std::string& path) {
  auto tok = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(path));
  const auto eod = tok->token_to_id(data::kEndOfText);
  KILN_CHECK(eod, path, ": no token ", data::kEndOfText, " (the end-of-document token)");
  d.end_of_document = *eod;
  d.vocab_used = tok->vocab_size();
  d.tokenizer_path = std::filesystem::absolute(path).string();  // checkpoints name it for `generate`
  d.encode = [tok](const std::string& s) { return tok->encode(s); };
  d.decode = [tok](const std::vector<int32_t>& t) { return tok->decode(t); };
}

// The retrieval documents of c (TrainConfig::retrieval_documents) as a fortune-format file in the cache, made once:
// its directory is named by a hash of the corpus's files (names, sizes, times) and the settings, and the file is
// written atomically, so the prepared corpus that includes it stays cached too. Filler: the corpus's training
// documents only (the held-out ones stay unseen).
inline std::string retrieval_file(const TrainConfig& c, const std::vector<std::string>& texts) {
  namespace fs = std::filesystem;
  const std::string hex = data::cache_key(texts, mix64(uint64_t(c.retrieval_documents) * 1000003 +
                                                       uint64_t(c.retrieval_max_chars) * 7919 +
                                                       uint64_t(c.val_every) * 131 + uint64_t(data::kRetrievalFormat)));
  const fs::path dir = fs::path(c.cache) / (std::string("retrieval-") + hex);
  const std::string path = (dir / "retrieval").string();
  if (fs::exists(path)) return path;
  std::vector<std::string> filler;
  data::TextStream in(texts, data::TextOptions{});
  for (std::string d; in.next(d);)
    if (!data::held_out_document(d, c.val_every)) filler.push_back(d);
  data::RetrievalOptions o;
  o.max_chars = c.retrieval_max_chars;
  std::string text;
  for (const auto& d : data::retrieval_documents(filler, c.retrieval_documents, o)) text += d + "\n%\n";
  fs::create_directories(dir);
  core::write_text_atomic(path, text);
  return path;
}


// The reasoning documents of c (TrainConfig::reasoning_documents), made once in the cache like the retrieval file.
inline std::string reasoning_file(const TrainConfig& c) {
  namespace fs = std::filesystem;
  const uint64_t key = mix64(uint64_t(c.reasoning_documents) * 1000003 + uint64_t(c.chat_digits) * 7919 +
                             uint64_t(data::kChatSyntheticFormat));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key));
  const fs::path dir = fs::path(c.cache) / (std::string("reasoning-") + hex);
  const std::string path = (dir / "reasoning").string();
  if (fs::exists(path)) return path;
  std::string text;
  for (const auto& d : data::reasoning_documents(c.reasoning_documents, c.chat_digits, 7)) text += d + "%\n";
  fs::create_directories(dir);
  core::write_text_atomic(path, text);
  return path;
}

// A BPE text corpus's inputs: the vocabulary of "bpe:<n>[:digits]", the corpus's text files (each a source; the
// retrieval and the reasoning documents' files added when asked for) and the paths prepare_corpus keys its cache by.
struct BpeInputs {
  int vocab = 0;
  bool split_digits = false;  // bpe:<n>:digits
  std::vector<std::string> texts, paths;
};
inline BpeInputs bpe_inputs(const TrainConfig& c, int model_vocab) {
  BpeInputs in;
  std::string digits = c.tokenizer.substr(4);
  if (digits.size() > 7 && digits.substr(digits.size() - 7) == ":digits") {
    in.split_digits = true;
    digits.resize(digits.size() - 7);
  }
  KILN_CHECK(!digits.empty() && digits.size() <= 9 && digits.find_first_not_of("0123456789") == std::string::npos,
             "--tokenizer ", c.tokenizer, ": expected bpe:<n>[:digits] with n a whole number of vocabulary entries, "
             "e.g. bpe:2048 (:digits: every digit a token of its own)");
  in.vocab = std::stoi(digits);
  KILN_CHECK(in.vocab > 256 && in.vocab <= model_vocab, "--tokenizer ", c.tokenizer, ": the vocabulary must be in (256, ",
             model_vocab, "] (the model's embedding has ", model_vocab, " rows)");
  // Each text file becomes a source: more than the loader mixes is refused before the tokenizer is trained.
  in.texts = data::text_files({c.data});
  in.paths = {c.data};
  if (c.retrieval_documents > 0 && !in.texts.empty()) {
    for (const auto& f : in.texts)
      KILN_CHECK(std::filesystem::path(f).filename() != "retrieval", "--retrieval-docs adds the source \"retrieval\", "
                 "and ", f, " is a source of that name already: rename the file");
    in.paths.push_back(retrieval_file(c, in.texts));
    in.texts.push_back(in.paths.back());
  }
  if (c.reasoning_documents > 0 && !in.texts.empty()) {
    for (const auto& f : in.texts)
      KILN_CHECK(std::filesystem::path(f).filename() != "reasoning", "--reasoning-docs adds the source \"reasoning\", "
                 "and ", f, " is a source of that name already: rename the file");
    in.paths.push_back(reasoning_file(c));
    in.texts.push_back(in.paths.back());
  }
  KILN_CHECK(in.texts.size() <= size_t(data::LoaderState::kMaxSources), "--data ", c.data, " holds ", in.texts.size(),
             " text files; with --tokenizer bpe:<n> each is a source, and the loader mixes at most ",
             data::LoaderState::kMaxSources, ": group them into fewer files, or train a tokenizer with tools/kiln "
             "tokenizer train and make shards with tools/kiln tokenize (a source per output)");
  return in;
}

// The training (or the held-out) documents of the text corpus with their file names (the generators' topics).
inline std::vector<std::pair<std::string, std::string>> named_documents(const TrainConfig& c,
                                                                        const std::vector<std::string>& texts,
                                                                        bool held_out = false) {
  std::vector<std::pair<std::string, std::string>> docs;
  for (const auto& f : texts) {
    data::TextStream in({f}, data::TextOptions{});
    for (std::string doc; in.next(doc);)
      if (data::held_out_document(doc, c.val_every) == held_out)
        docs.emplace_back(doc, std::filesystem::path(f).filename().string());
  }
  return docs;
}
// Records generated from the text corpus's training documents (so held-out fortunes stay unseen; held_out: from the
// held-out ones, for evaluation data) as jsonl in the cache, made once and atomically: <cache>/<kind>-<key>/<kind>.jsonl,
// keyed like the retrieval file by the corpus's files and the generator's settings. `option` names the setting that
// gives a file instead, for the message.
inline std::string generated_file(const TrainConfig& c, const std::string& kind, const char* option, uint64_t salt,
                                  const std::function<std::vector<nlohmann::json>(
                                      const std::vector<std::pair<std::string, std::string>>&,
                                      const data::ChatSyntheticOptions&)>& make,
                                  bool held_out = false, const data::ChatSyntheticOptions& base = {}) {
  namespace fs = std::filesystem;
  const std::vector<std::string> texts = data::text_files({c.data});
  KILN_CHECK(!texts.empty(), option, " \"\" generates ", kind, " from the text corpus, and --data ", c.data,
             " holds no text files: give ", option, " <", kind, ".jsonl>");
  data::ChatSyntheticOptions o = base;
  o.digits = c.chat_digits;
  o.held_out = held_out;
  const std::string hex = data::cache_key(texts, mix64(uint64_t(o.instructions) * 1000003 + uint64_t(o.arithmetic) * 7919 +
                                                       uint64_t(o.digits) * 131 + uint64_t(c.val_every) * 17 +
                                                       uint64_t(data::kChatSyntheticFormat) + salt + held_out));
  const fs::path dir = fs::path(c.cache) / (kind + "-" + hex);
  const std::string path = (dir / (kind + ".jsonl")).string();
  if (fs::exists(path)) return path;
  std::string text;
  for (const auto& r : make(named_documents(c, texts, held_out), o)) text += r.dump() + "\n";
  fs::create_directories(dir);
  core::write_text_atomic(path, text);
  return path;
}
inline nlohmann::json messages_json(const std::vector<data::Message>& ms) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& m : ms) j.push_back({{"role", m.role}, {"content", m.content}});
  return j;
}
// The conversations an SFT phase generates (TrainConfig::chat ""): fortune requests and additions.
inline std::string synthetic_chat_file(const TrainConfig& c) {
  data::ChatSyntheticOptions counts;
  counts.instructions = c.chat_instructions, counts.arithmetic = c.chat_additions;
  return generated_file(
      c, "chat", "--chat", 0,
      [](const auto& docs, const auto& o) {
        std::vector<nlohmann::json> out;
        for (const auto& conv : data::synthetic_chats(docs, o)) out.push_back({{"messages", messages_json(conv)}});
        return out;
      },
      false, counts);
}
// The pairs a preference phase generates (TrainConfig::pairs ""): right against wrong, on topic against off.
inline std::string synthetic_pairs_file(const TrainConfig& c) {
  return generated_file(c, "pairs", "--pairs", 0xbeef, [](const auto& docs, const auto& o) {
    std::vector<nlohmann::json> out;
    for (const auto& p : data::synthetic_pairs(docs, o))
      out.push_back({{"prompt", messages_json(p.prompt)}, {"chosen", messages_json({{"assistant", p.chosen}})},
                     {"rejected", messages_json({{"assistant", p.rejected}})}});
    return out;
  });
}
// The run's tokenizer for chat data (as pretraining prepares or names it), which must hold the chat tokens.
inline std::shared_ptr<const data::Tokenizer> chat_tokenizer(RunData& d, const TrainConfig& c, int model_vocab,
                                                             const char* what) {
  KILN_CHECK(!c.tokenizer.empty(), "a", what, " phase needs a tokenizer with the chat tokens (", data::kImStart, ", ",
             data::kImEnd, ", ", data::kThinkOpen, ", ", data::kThinkClose, "); byte-level data (--tokenizer \"\") has "
             "none: use --tokenizer bpe:<n> or a tokenizer.json");
  if (c.tokenizer.rfind("bpe:", 0) == 0) {
    const BpeInputs in = bpe_inputs(c, model_vocab);
    const data::PreparedCorpus p = data::prepare_corpus(in.paths, c.cache, in.vocab, c.val_every, in.split_digits);
    use_tokenizer(d, p.tokenizer_path);
  } else {
    use_tokenizer(d, c.tokenizer);
    KILN_CHECK(d.vocab_used <= model_vocab, c.tokenizer, ": ", d.vocab_used, " tokens do not fit the model's ", model_vocab,
               "-row embedding");
  }
  auto tok = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(d.tokenizer_path));
  const std::string missing = data::missing_chat_tokens(*tok);
  KILN_CHECK(missing.empty(), d.tokenizer_path, ": the tokenizer lacks the chat tokens ", missing, " (a BPE that "
             "--tokenizer bpe:<n> trains reserves them; for another tokenizer.json add them as special added tokens)");
  d.bytes_per_token = 0;  // the loss is on the assistant's tokens: no bits per byte of a text
  return tok;
}
// Training and held-out groups -> the phase's streams.
inline void chat_streams(RunData& d, const TrainConfig& c, std::vector<data::ChatGroup> train,
                         std::vector<data::ChatGroup> val) {
  auto t = std::make_shared<const std::vector<data::ChatGroup>>(std::move(train));
  auto v = std::make_shared<const std::vector<data::ChatGroup>>(std::move(val));
  const int32_t pad = d.end_of_document;
  d.train = std::make_unique<data::ChatRows>(t, pad, c.seed, true);
  d.make_eval = [v, pad] { return std::make_unique<data::ChatRows>(v, pad, 0, false); };
}
}  // namespace detail

// The first max_bytes or so of the text corpus's held-out documents, one a line ("" for token shards).
inline std::string heldout_sample(const TrainConfig& c, size_t max_bytes) {
  const std::vector<std::string> texts = data::text_files({c.data});
  std::string text;
  for (const auto& [doc, source] : detail::named_documents(c, texts, /*held_out=*/true)) {
    if (text.size() >= max_bytes) break;
    text += doc + "\n";
  }
  return text;
}

// The evaluation tasks a run generates from the corpus's held-out documents (--eval-task generated:<kind>), in
// HellaSwag's layout (kiln/eval/tasks.hpp reads them; `tools/kiln eval --task` takes the cached file too):
//   completion    a held-out fortune's beginning, its true ending against 3 others' (kiln/eval/make_tasks.hpp)
//   instructions  a request for a topic, a held-out fortune of that topic against 3 of others (chat_synthetic.hpp)
//   preferences   held-out pairs (requests and held-out additions), chosen against rejected
inline constexpr const char* kGeneratedTasks = "completion, instructions, preferences";
inline std::string generated_task_file(const TrainConfig& c, const std::string& kind) {
  constexpr int kCompletion = 120, kInstructions = 80, kPreferences = 40;  // each; preferences: of each kind
  if (kind == "completion")
    return detail::generated_file(c, "task-completion", "--eval-task", 0xc0 + kCompletion * 1000, [](const auto& docs, const auto&) {
      eval::CompletionOptions o;
      o.count = kCompletion, o.seed = 5;
      return eval::completion_task(docs, o);
    }, /*held_out=*/true);
  if (kind == "instructions")
    return detail::generated_file(c, "task-instructions", "--eval-task", 0x1e + kInstructions * 1000, [](const auto& docs, const auto& o) {
      return data::instruction_task(docs, kInstructions, 4, o.max_chars, 6);
    }, /*held_out=*/true);
  if (kind == "preferences")
    return detail::generated_file(c, "task-preferences", "--eval-task", 0x9f + kPreferences * 1000, [](const auto& docs, auto o) {
      o.instructions = o.arithmetic = kPreferences, o.seed = 8;
      return data::preference_task(docs, o);
    }, /*held_out=*/true);
  KILN_FAIL("--eval-task generated:", kind, ": no such generated task (the generated ones: ", kGeneratedTasks, ")");
}

// The data of an SFT phase: the run's tokenizer and the conversations, packed whole into rows of seq_len with the
// loss on the assistant's tokens (data/chat.hpp).
inline RunData open_chat_data(const TrainConfig& c, int model_vocab, int seq_len) {
  RunData d;
  const auto tok = detail::chat_tokenizer(d, c, model_vocab, "n SFT");
  const std::string path = c.chat.empty() ? detail::synthetic_chat_file(c) : c.chat;
  const auto convs = data::read_conversations(path);
  // generated conversations that do not fit the phase's rows are left out (counted); a file's stop the run, named
  data::ChatSet set = data::tokenize_conversations(*tok, convs, seq_len, c.val_every, /*drop_long=*/c.chat.empty());
  KILN_CHECK(!set.train.empty() && !set.val.empty(), path, ": ", convs.size(), " conversations split into ",
             set.train.size(), " for training and ", set.val.size(), " held out (every ", c.val_every, "th by content): "
             "both are needed");
  d.epoch_tokens = double(set.train_tokens);  // (rows also hold padding: an epoch takes a little more)
  char s[512];
  std::snprintf(s, sizeof s, "%s | %zu conversations, %zu held out%s | %.2fM tokens, %.2fM of them assistant tokens "
                "(the loss's) | tokenizer %s", path.c_str(), set.train.size(), set.val.size(),
                set.dropped ? (" (" + std::to_string(set.dropped) + " longer than a row left out)").c_str() : "",
                double(set.train_tokens) / 1e6, double(set.trained_tokens) / 1e6, d.tokenizer_path.c_str());
  d.summary = s;
  detail::chat_streams(d, c, data::singletons(std::move(set.train)), data::singletons(std::move(set.val)));
  return d;
}

// The data of a preference phase: pairs, each pair's chosen and rejected sequences in one row (data/pairs.hpp).
inline RunData open_pair_data(const TrainConfig& c, int model_vocab, int seq_len) {
  RunData d;
  const auto tok = detail::chat_tokenizer(d, c, model_vocab, " preference");
  const std::string path = c.pairs.empty() ? detail::synthetic_pairs_file(c) : c.pairs;
  const auto pairs = data::read_pairs(path);
  data::PairSet set = data::tokenize_pairs(*tok, pairs, seq_len, c.val_every, /*drop_long=*/c.pairs.empty());
  KILN_CHECK(!set.train.empty() && !set.val.empty(), path, ": ", pairs.size(), " pairs split into ", set.train.size(),
             " for training and ", set.val.size(), " held out (every ", c.val_every, "th by content): both are needed");
  d.epoch_tokens = double(set.train_tokens);
  char s[512];
  std::snprintf(s, sizeof s, "%s | %zu pairs, %zu held out%s | %.2fM tokens | tokenizer %s", path.c_str(),
                set.train.size(), set.val.size(),
                set.dropped ? (" (" + std::to_string(set.dropped) + " longer than a row left out)").c_str() : "",
                double(set.train_tokens) / 1e6, d.tokenizer_path.c_str());
  d.summary = s;
  detail::chat_streams(d, c, std::move(set.train), std::move(set.val));
  return d;
}

inline RunData open_run_data(const TrainConfig& c, int model_vocab, long tokens_per_step,
                             const std::function<void(const std::string&)>& event) {
  RunData d;
  KILN_CHECK(c.retrieval_documents == 0 || c.tokenizer.rfind("bpe:", 0) == 0, "--retrieval-docs adds documents to "
             "a text corpus tokenized with --tokenizer bpe:<n>, not to ", c.tokenizer.empty() ? "byte-level data" : "token shards");
  KILN_CHECK(c.reasoning_documents == 0 || c.tokenizer.rfind("bpe:", 0) == 0, "--reasoning-docs adds documents to "
             "a text corpus tokenized with --tokenizer bpe:<n>, not to ", c.tokenizer.empty() ? "byte-level data" : "token shards");
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
    std::snprintf(s, sizeof s, "%s | %zu files | %zu train documents (%.2f MB), %zu held out | byte tokens%s",
                  c.data.c_str(), corpus->files, corpus->train.size(), corpus->train_bytes / 1e6, corpus->val.size(),
                  c.stages.empty() ? "" : " (the data stages are for token sources: not used)");
    d.summary = s;
  } else if (c.tokenizer.rfind("bpe:", 0) == 0) {
    const detail::BpeInputs in = detail::bpe_inputs(c, model_vocab);
    const std::vector<std::string>& paths = in.paths;
    const int vocab = in.vocab;
    {  // a stage naming a source that is not there, before any work too
      std::vector<std::pair<std::string, std::vector<std::string>>> named;
      for (const auto& f : in.texts) named.push_back({std::filesystem::path(f).filename().string(), {}});
      for (const auto& st : c.stages)
        for (const auto& [name, b] : st.boost) {
          bool known = name == "*";
          for (const auto& n : named) known = known || n.first == name;
          KILN_CHECK(known, "a data stage names source '", name, "', which ", c.data, " does not have (its sources: ",
                     detail::name_list(named), "; --stage sets the stages, --no-stages clears them)");
        }
    }
    const auto t0 = std::chrono::steady_clock::now();
    const data::PreparedCorpus p = data::prepare_corpus(paths, c.cache, vocab, c.val_every, in.split_digits);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    detail::use_tokenizer(d, p.tokenizer_path);
    d.bytes_per_token = p.heldout_tokens ? double(p.heldout_bytes) / double(p.heldout_tokens) : 1.0;
    std::vector<std::pair<std::string, std::vector<std::string>>> named;
    for (const auto& [name, prefix] : p.sources) named.push_back({name, {prefix}});
    detail::open_mixture(d, c, model_vocab, tokens_per_step, named, p.source_tokens, {p.heldout}, event);
    char s[512];
    std::snprintf(s, sizeof s,
                  "%s | %zu sources | %.2fM training tokens, %llu held out | BPE %d (%s, %s in %.1f s) | %.2f bytes/token",
                  c.data.c_str(), p.sources.size(), d.epoch_tokens / 1e6, (unsigned long long)p.heldout_tokens, vocab,
                  p.tokenizer_path.c_str(), p.cached ? "cached" : "trained and tokenized", secs, d.bytes_per_token);
    d.summary = s;
  } else {
    // Token shards made with this tokenizer: <data>/<source>[.<part>].ds; the source "heldout" is for evaluation.
    namespace fs = std::filesystem;
    KILN_CHECK(fs::is_directory(c.data), "--data '", c.data, "' must be a directory of token shards (<source>.ds) when ",
               "--tokenizer names a tokenizer.json");
    detail::use_tokenizer(d, c.tokenizer);
    KILN_CHECK(d.vocab_used <= model_vocab, c.tokenizer, ": ", d.vocab_used, " tokens do not fit the model's ", model_vocab,
               "-row embedding");
    std::map<std::string, std::vector<std::string>> by_name;
    for (const auto& e : fs::directory_iterator(c.data))
      if (e.path().extension() == ".ds") {
        const std::string file = e.path().filename().string();
        by_name[file.substr(0, file.find('.'))].push_back((e.path().parent_path() / e.path().stem()).string());
      }
    KILN_CHECK(by_name.count("heldout"), c.data, ": no held-out shard (heldout.ds): make one with tools/kiln tokenize");
    std::vector<std::string> heldout = by_name["heldout"];
    by_name.erase("heldout");
    KILN_CHECK(!by_name.empty(), c.data, ": no training shards (<source>.ds) besides heldout.ds");
    std::vector<std::pair<std::string, std::vector<std::string>>> named;
    std::vector<uint64_t> tokens;
    for (auto& [name, prefixes] : by_name) {
      std::sort(prefixes.begin(), prefixes.end());
      uint64_t n = 0;
      for (const auto& p : prefixes) n += data::ShardReader(p, c.token_size).total_tokens();
      named.push_back({name, prefixes});
      tokens.push_back(n);
    }
    detail::open_mixture(d, c, model_vocab, tokens_per_step, named, tokens, heldout, event);
    d.bytes_per_token = 0;  // unknown: the shards do not say how many bytes they came from
    char s[512];
    std::snprintf(s, sizeof s, "%s | %zu sources | %.2fM training tokens | tokenizer %s (%d tokens)", c.data.c_str(),
                  named.size(), d.epoch_tokens / 1e6, c.tokenizer.c_str(), d.vocab_used);
    d.summary = s;
  }
  return d;
}

}  // namespace kiln
