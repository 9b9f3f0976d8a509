// kiln/data/pairs.hpp: preference pairs (a prompt, a chosen and a rejected answer) for preference optimisation
// (train/preference.hpp), read from jsonl in TRL's two layouts, one pair a line:
//   standard        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}
//                   (the prompt is a user's message, each answer the assistant's)
//   conversational  {"prompt": [{"role": "system", ...}, {"role": "user", ...}],
//                    "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", ...}]}
// Each answer is rendered after the prompt with the chat template (chat.hpp; a system message's /think or /no_think
// sets the mode) and only the answer's tokens are scored: its log-probability is the sum over them. A pair's two
// sequences share a row (ChatRows groups), so both are in the same micro-batch.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/split.hpp"
#include "kiln/io/jsonl.hpp"

namespace kiln::data {

struct Pair {
  std::vector<Message> prompt, chosen, rejected;
  std::string where;  // "file:line"
};

namespace detail {
inline std::vector<Message> pair_messages(const nlohmann::json& v, const std::string& where, const char* field,
                                          bool answer) {
  KILN_CHECK(!v.is_null(), where, ": field ", field, " is missing");
  if (v.is_string()) {
    KILN_CHECK(!v.get<std::string>().empty(), where, ": field ", field, " is empty");
    return {{answer ? "assistant" : "user", v.get<std::string>()}};
  }
  KILN_CHECK(v.is_array() && !v.empty(), where, ": field ", field, " = ", v.dump().substr(0, 80),
             ": expected a string or a non-empty list of {role, content}");
  std::vector<Message> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = std::string(field) + "[" + std::to_string(i) + "]";
    Message msg = read_message(v[i], where, at);
    KILN_CHECK(!answer || msg.role == "assistant", where, ": field ", at, ".role = \"", msg.role,
               "\": an answer's messages are the assistant's");
    KILN_CHECK(!answer || !msg.content.empty(), where, ": field ", at, ".content: an empty answer");
    out.push_back(std::move(msg));
  }
  return out;
}
}  // namespace detail

inline std::vector<Pair> read_pairs(const std::string& path) {
  std::vector<Pair> out;
  io::read_jsonl(path, "the preference pairs (jsonl: {\"prompt\", \"chosen\", \"rejected\"} a line)",
                 [&](const nlohmann::json& j, const std::string& where) {
    KILN_CHECK(j.is_object(), where, ": not a JSON object");
    Pair p;
    p.where = where;
    auto field = [&](const char* f) { return j.contains(f) ? j[f] : nlohmann::json(); };
    p.prompt = detail::pair_messages(field("prompt"), where, "prompt", false);
    p.chosen = detail::pair_messages(field("chosen"), where, "chosen", true);
    p.rejected = detail::pair_messages(field("rejected"), where, "rejected", true);
    bool same = p.chosen.size() == p.rejected.size();
    for (size_t i = 0; same && i < p.chosen.size(); ++i) same = p.chosen[i].content == p.rejected[i].content;
    KILN_CHECK(!same, where, ": the chosen and the rejected answer are the same (the pair prefers nothing)");
    out.push_back(std::move(p));
  });
  KILN_CHECK(!out.empty(), path, ": no pairs");
  return out;
}

// A pair's two sequences: prompt + chosen, prompt + rejected, each trained (scored) on the answer's tokens.
inline ChatGroup tokenize_pair(const Tokenizer& tok, const Pair& p) {
  ChatGroup g;
  for (const auto* answer : {&p.chosen, &p.rejected}) {
    std::vector<Message> m = p.prompt;
    m.insert(m.end(), answer->begin(), answer->end());
    g.push_back(tokenize_chat(tok, render_chat(m, false, p.prompt.size())));
  }
  return g;
}

// Tokenized pairs split into training and held-out ones by content (the prompt and the chosen answer); a pair whose
// two sequences together exceed the phase's rows (`max_tokens`) is an error naming it, or with drop_long (pairs the
// run generated itself) left out and counted.
struct PairSet {
  std::vector<ChatGroup> train, val;
  long train_tokens = 0;
  long dropped = 0;  // drop_long: pairs longer than a row
};
inline PairSet tokenize_pairs(const Tokenizer& tok, const std::vector<Pair>& pairs, int max_tokens, int val_every,
                              bool drop_long = false) {
  PairSet s;
  for (const auto& p : pairs) {
    ChatGroup g = tokenize_pair(tok, p);
    const size_t n = g[0].ids.size() + g[1].ids.size();
    if (drop_long && n > size_t(max_tokens)) {
      ++s.dropped;
      continue;
    }
    KILN_CHECK(n <= size_t(max_tokens), p.where, ": the pair's chosen and rejected sequences are ", g[0].ids.size(),
               " + ", g[1].ids.size(), " tokens, longer than the phase's rows of ", max_tokens, " (they share a row)");
    std::string key;
    for (const auto& m : p.prompt) key += m.content + "\n";
    for (const auto& m : p.chosen) key += m.content + "\n";
    if (held_out_document(key, val_every)) {
      s.val.push_back(std::move(g));
    } else {
      s.train_tokens += long(n);
      s.train.push_back(std::move(g));
    }
  }
  return s;
}

}  // namespace kiln::data
