// kiln/data/chat_synthetic.hpp: conversations generated from text on the machine (no public chat set can be
// downloaded here), deterministic for the same documents, options and seed.
//
// Two kinds, mixed:
//   instructions  "Tell me a fortune about computers." answered by a fortune of that category (the fortunes' file
//                 names are the topics: kChatTopics), in no-think mode (the system message's /no_think). What the
//                 model must learn: to follow the request's topic, and to stop (<|im_end|>).
//   arithmetic    "What is 347 + 285?" with an answer that can be checked. Half the conversations are in think mode:
//                 the reasoning is the column addition, digit by digit from the right with its carries, in the
//                 think block, then the sum; the other half in no-think mode give the sum alone. So think mode has
//                 the worked steps to lean on and no-think mode must add in one go (eval: arithmetic_accuracy).
// instruction_task() makes the instruction-following probe from held-out fortunes: a request for a topic, scored
// (kiln/eval) over four fortunes, one of that topic and three of others: HellaSwag's layout, so --eval-task takes it.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/synthetic.hpp"

namespace kiln::data {

// Fortune files whose name is a topic one can ask for, and how a request names it.
inline constexpr std::pair<const char*, const char*> kChatTopics[] = {
    {"computers", "computers"}, {"linux", "Linux"},       {"love", "love"},         {"food", "food"},
    {"science", "science"},     {"sports", "sports"},     {"pets", "pets"},         {"politics", "politics"},
    {"law", "the law"},         {"medicine", "medicine"}, {"work", "work"},         {"education", "education"},
    {"kids", "children"},       {"literature", "books"},  {"wisdom", "wisdom"},     {"art", "art"},
    {"magic", "magic"},         {"men-women", "men and women"}, {"startrek", "Star Trek"}, {"perl", "Perl"},
};
inline constexpr const char* kInstructionForms[] = {
    "Tell me a fortune about %s.", "Give me a saying about %s.", "Share a quote about %s.",
    "I would like a fortune on the topic of %s."};
// The generator's version: part of the cached file's key (train/run_data.hpp), so a changed generator makes a new file.
// 3: the additions the probe asks (held_out_addition) never trained on, addends of exactly their digits, compact
// steps; the reasoning documents.
inline constexpr int kChatSyntheticFormat = 3;
inline constexpr const char* kNoThinkSystem = "You are a helpful assistant. /no_think";
inline constexpr const char* kThinkSystem = "You are a helpful assistant. /think";

struct ChatSyntheticOptions {
  int instructions = 3000;  // fortune requests
  int arithmetic = 3000;    // additions, half in think mode
  int digits = 3;           // of each addend
  int max_chars = 300;      // fortunes longer than this (folded) are not used as answers
  bool held_out = false;    // the additions among the held-out ones (evaluation data), not the training ones
  uint64_t seed = 11;
};

inline std::string format_request(const char* form, const char* topic) {
  char b[160];
  std::snprintf(b, sizeof b, form, topic);
  return b;
}

// The worked column addition of a + b (the think block's body): a line a column, from the units, each the column's
// digits plus the carry coming in, and their sum (its last digit is written, its first carried): 47 + 38 gives
// "7+8=15\n4+3+1=8\n". Compact, so that the steps cost few tokens.
inline std::string addition_steps(long a, long b) {
  std::string s;
  long x = a, y = b;
  int carry = 0;
  while (x > 0 || y > 0) {
    const int da = int(x % 10), db = int(y % 10), t = da + db + carry;
    s += std::to_string(da) + "+" + std::to_string(db) + (carry ? "+1" : "") + "=" + std::to_string(t) + "\n";
    carry = t >= 10;
    x /= 10, y /= 10;
  }
  return s;
}
// One addition in 8 (by a hash of a and b) is held out: the generated conversations, pairs and reasoning documents
// never hold it, and the reasoning probe (kiln/eval/chat_probes.hpp) asks only those, so a right answer is computed,
// not recalled.
inline bool held_out_addition(long a, long b) { return mix64(uint64_t(a) * 1000003 + uint64_t(b) + 0x5eed) % 8 == 0; }
// An addition of `digits`-digit addends: a training one, or (held_out) one of the held-out ones.
// Both addends have exactly that many digits (one digit: 0 to 9), so the columns sit where the model expects them.
inline std::pair<long, long> draw_addition(Rng& rng, int digits, bool held_out = false) {
  long top = 1;
  for (int i = 0; i < digits; ++i) top *= 10;
  const long low = digits > 1 ? top / 10 : 0;
  for (;;) {
    const long a = low + long(rng.below(uint64_t(top - low))), b = low + long(rng.below(uint64_t(top - low)));
    if (held_out_addition(a, b) == held_out) return {a, b};
  }
}
inline std::vector<Message> addition_chat(long a, long b, bool think) {
  const std::string q = "What is " + std::to_string(a) + " + " + std::to_string(b) + "?";
  const std::string answer = std::to_string(a + b);
  std::string content = think ? std::string(kThinkOpen) + "\n" + addition_steps(a, b) + kThinkClose + "\n" + answer : answer;
  return {{"system", think ? kThinkSystem : kNoThinkSystem}, {"user", q}, {"assistant", content}};
}

// Documents by topic: (text, file name) pairs -> the folded texts of each topic in kChatTopics, at most max_chars.
inline std::map<std::string, std::vector<std::string>> by_topic(const std::vector<std::pair<std::string, std::string>>& docs,
                                                               int max_chars) {
  std::map<std::string, std::vector<std::string>> t;
  for (const auto& [text, source] : docs)
    for (const auto& [file, name] : kChatTopics)
      if (source == file) {
        std::string f = fold_spaces(text);
        if (!f.empty() && int(f.size()) <= max_chars) t[file].push_back(std::move(f));
      }
  return t;
}

// docs: the training documents with their file names. Instructions and additions interleaved in a seeded order.
inline std::vector<std::vector<Message>> synthetic_chats(const std::vector<std::pair<std::string, std::string>>& docs,
                                                         const ChatSyntheticOptions& o) {
  KILN_CHECK(o.instructions >= 0 && o.arithmetic >= 0 && o.digits >= 1 && o.digits <= 9,
             "synthetic chats: counts >= 0 and 1 <= digits <= 9");
  const auto topics = by_topic(docs, o.max_chars);
  KILN_CHECK(o.instructions == 0 || topics.size() >= 2, "synthetic chats: the documents cover ", topics.size(),
             " of the topics (fortune files named computers, linux, love, ...): at least 2 are needed");
  std::vector<std::string> names;
  for (const auto& [k, v] : topics) names.push_back(k);
  Rng rng(o.seed);
  std::vector<std::vector<Message>> out;
  int ni = 0, na = 0;
  while (ni < o.instructions || na < o.arithmetic) {
    // interleave in proportion, so any prefix holds both kinds
    const bool instr = na >= o.arithmetic || (ni < o.instructions && long(ni) * o.arithmetic <= long(na) * o.instructions);
    if (instr) {
      const std::string& file = names[rng.below(names.size())];
      const char* topic = "";
      for (const auto& [f, name] : kChatTopics)
        if (file == f) topic = name;
      const auto& pool = topics.at(file);
      const std::string q = format_request(kInstructionForms[rng.below(std::size(kInstructionForms))], topic);
      out.push_back({{"system", kNoThinkSystem}, {"user", q}, {"assistant", pool[rng.below(pool.size())]}});
      ++ni;
    } else {
      const auto [a, b] = draw_addition(rng, o.digits, o.held_out);
      out.push_back(addition_chat(a, b, na % 2 == 0));
      ++na;
    }
  }
  return out;
}

// Column addition that forgets every carry (a wrong answer that looks like an answer): its steps and sum. Where
// a + b has no carry it would be right, so then its last digit is off by one.
inline std::string careless_steps(long a, long b, long* sum) {
  std::string s;
  long x = a, y = b, out = 0, place = 1;
  bool carried = false;
  while (x > 0 || y > 0) {
    const int da = int(x % 10), db = int(y % 10), t = da + db;
    carried = carried || t >= 10;
    s += std::to_string(da) + "+" + std::to_string(db) + "=" + std::to_string(t) + "\n";
    out += long(t % 10) * place;
    place *= 10, x /= 10, y /= 10;
  }
  if (!carried) out = out - out % 10 + (out % 10 + 1) % 10;
  *sum = out;
  return s;
}

struct PairSpec {
  std::vector<Message> prompt;
  std::string chosen, rejected;
};

// Preference pairs whose chosen answer is right and follows the request and whose rejected one does not:
//   a fortune request: chosen = a fortune of the topic asked for, rejected = one of another topic
//   an addition (half in think mode): chosen = the sum (with its worked steps in think mode), rejected = the
//   carry-forgetting sum (careless_steps, with its steps in think mode)
inline std::vector<PairSpec> synthetic_pairs(const std::vector<std::pair<std::string, std::string>>& docs,
                                             const ChatSyntheticOptions& o) {
  const auto topics = by_topic(docs, o.max_chars);
  KILN_CHECK(o.instructions == 0 || topics.size() >= 2, "synthetic pairs: the documents cover ", topics.size(),
             " of the topics: at least 2 are needed");
  std::vector<std::string> names;
  for (const auto& [k, v] : topics) names.push_back(k);
  Rng rng(o.seed ^ 0x9a3b);
  std::vector<PairSpec> out;
  int ni = 0, na = 0;
  while (ni < o.instructions || na < o.arithmetic) {
    const bool instr = na >= o.arithmetic || (ni < o.instructions && long(ni) * o.arithmetic <= long(na) * o.instructions);
    if (instr) {
      const size_t k = rng.below(names.size());
      size_t other = rng.below(names.size() - 1);
      if (other >= k) ++other;
      const char* topic = "";
      for (const auto& [f, name] : kChatTopics)
        if (names[k] == f) topic = name;
      const auto &pool = topics.at(names[k]), &wrong = topics.at(names[other]);
      const std::string q = format_request(kInstructionForms[rng.below(std::size(kInstructionForms))], topic);
      out.push_back({{{"system", kNoThinkSystem}, {"user", q}}, pool[rng.below(pool.size())], wrong[rng.below(wrong.size())]});
      ++ni;
    } else {
      const auto [a, b] = draw_addition(rng, o.digits, o.held_out);
      const bool think = na % 2 == 0;
      long bad = 0;
      const std::string bad_steps = careless_steps(a, b, &bad);
      const auto right = addition_chat(a, b, think);
      const std::string rejected = think ? std::string(kThinkOpen) + "\n" + bad_steps + kThinkClose + "\n" +
                                               std::to_string(bad)
                                         : std::to_string(bad);
      out.push_back({{right[0], right[1]}, right[2].content, rejected});
      ++na;
    }
  }
  return out;
}

// The preference probe: held-out pairs (give held-out documents and o.held_out) in HellaSwag's layout, the prompt
// rendered with its generation prompt as ctx, chosen and rejected (each closed by <|im_end|>) as the two endings in
// a seeded order. Scored by the sum of log-probabilities (CF acc), it is the share of pairs whose chosen answer the
// model itself prefers: measurable at any phase's end, unlike DPO's rewards, which are relative to a reference.
inline std::vector<nlohmann::json> preference_task(const std::vector<std::pair<std::string, std::string>>& docs,
                                                   const ChatSyntheticOptions& o) {
  Rng rng(o.seed ^ 0x7a5c);
  std::vector<nlohmann::json> out;
  for (const PairSpec& p : synthetic_pairs(docs, o)) {
    const int label = int(rng.below(2));
    nlohmann::json endings = nlohmann::json::array();
    endings.push_back((label == 0 ? p.chosen : p.rejected) + kImEnd);
    endings.push_back((label == 0 ? p.rejected : p.chosen) + kImEnd);
    out.push_back({{"ctx", render_chat(p.prompt, true).text}, {"endings", endings}, {"label", label},
                   {"target_delimiter", ""}, {"source", p.prompt.back().content.rfind("What is", 0) == 0 ? "addition" : "request"}});
  }
  return out;
}

// Reasoning documents for pretraining's last stage (SmolLM3's mid-training on reasoning data, in miniature): each
// an addition conversation rendered in the chat template (think and no-think mode alternating), trained on whole.
inline std::vector<std::string> reasoning_documents(int count, int digits, uint64_t seed) {
  KILN_CHECK(count >= 0 && digits >= 1 && digits <= 9, "reasoning documents: count >= 0 and 1 <= digits <= 9");
  Rng rng(seed ^ 0x3ea50);
  std::vector<std::string> out;
  for (int n = 0; n < count; ++n) {
    const auto [a, b] = draw_addition(rng, digits);
    out.push_back(render_chat(addition_chat(a, b, n % 2 == 0), false).text);
  }
  return out;
}

// The instruction-following probe: `count` requests, each over `choices` held-out fortunes (one of the requested
// topic, the others of other topics, of similar length), in HellaSwag's layout with the prompt as ctx (rendered
// with the chat template and its generation prompt) and the fortunes, each closed by <|im_end|>, as endings.
inline std::vector<nlohmann::json> instruction_task(const std::vector<std::pair<std::string, std::string>>& docs,
                                                    int count, int choices, int max_chars, uint64_t seed) {
  const auto topics = by_topic(docs, max_chars);
  KILN_CHECK(int(topics.size()) >= choices, "instruction task: the documents cover ", topics.size(),
             " topics; ", choices, " choices need that many");
  std::vector<std::string> names;
  for (const auto& [k, v] : topics) names.push_back(k);
  Rng rng(seed);
  std::vector<nlohmann::json> out;
  for (int n = 0; n < count; ++n) {
    const size_t right = rng.below(names.size());
    std::vector<size_t> picked = {right};
    while (int(picked.size()) < choices) {
      const size_t k = rng.below(names.size());
      if (std::find(picked.begin(), picked.end(), k) == picked.end()) picked.push_back(k);
    }
    const char* topic = "";
    for (const auto& [f, name] : kChatTopics)
      if (names[right] == f) topic = name;
    const std::vector<Message> prompt = {
        {"system", kNoThinkSystem},
        {"user", format_request(kInstructionForms[rng.below(std::size(kInstructionForms))], topic)}};
    const int label = int(rng.below(uint64_t(choices)));
    std::swap(picked[0], picked[size_t(label)]);
    nlohmann::json endings = nlohmann::json::array();
    for (size_t k : picked) {
      const auto& pool = topics.at(names[k]);
      endings.push_back(pool[rng.below(pool.size())] + kImEnd);
    }
    out.push_back({{"ctx", render_chat(prompt, true).text}, {"endings", endings}, {"label", label},
                   {"target_delimiter", ""}, {"source", names[right]}});
  }
  return out;
}

}  // namespace kiln::data
