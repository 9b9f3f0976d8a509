// kiln/data/chat.hpp: conversations for supervised fine-tuning (SFT): the chat format, the jsonl reader, the
// tokenization with its loss mask, and the row source that packs conversations for the trainer.
//
// The format is ChatML with SmolLM3's two reasoning modes (FACTS.md "Post-training"):
//   <|im_start|>system\nYou are helpful. /no_think<|im_end|>\n
//   <|im_start|>user\nWhat is 12 + 30?<|im_end|>\n
//   <|im_start|>assistant\n<think>\n\n</think>\n42<|im_end|>\n
// The mode is the last system message's flag: its text ending in "/no_think" (no-think mode) or "/think" (think
// mode, also the default with no flag). In no-think mode every assistant turn opens with an empty think block, which
// the template writes (the model does not produce it); in think mode the assistant's content holds its own
// "<think>\n...\n</think>\n" reasoning. Messages are written verbatim, flags included.
// chat_template_jinja() is the same template in the Jinja of Hugging Face's tokenizer_config.json, so that
// transformers' apply_chat_template gives the ids Kiln trains on (tests/reference/make_chat_fixture.py checks it).
//
// Loss mask (what SFT trains on): the assistant's content and its closing <|im_end|>; not the roles, the other
// turns, the template's empty think block or the newline after <|im_end|>. The whole text is encoded at once (as
// apply_chat_template does) and a token is trained when any of its bytes lies in a trained span: the Jinja template
// marks the same spans with {% generation %}, and transformers' return_assistant_tokens_mask gives the same mask.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/row_source.hpp"
#include "kiln/data/split.hpp"
#include "kiln/data/tokenizer.hpp"
#include "kiln/io/jsonl.hpp"

namespace kiln::data {

inline constexpr const char* kImStart = "<|im_start|>";
inline constexpr const char* kImEnd = "<|im_end|>";
inline constexpr const char* kThinkOpen = "<think>";
inline constexpr const char* kThinkClose = "</think>";
// The tokens the chat format needs besides the text: a tokenizer trained for chat reserves them (prepare.hpp).
inline const std::vector<std::string>& chat_special_tokens() {
  static const std::vector<std::string> t = {kImStart, kImEnd, kThinkOpen, kThinkClose};
  return t;
}
// The empty think block of no-think mode.
inline constexpr const char* kEmptyThink = "<think>\n\n</think>\n";

struct Message {
  std::string role, content;  // role: system, user or assistant
};
struct Conversation {
  std::vector<Message> messages;
  std::string where;  // "file:line", for messages
};

enum class ThinkMode { think, no_think };

// The mode a conversation's system messages set (the last flag wins; none: think).
inline ThinkMode think_mode(const std::vector<Message>& messages) {
  ThinkMode m = ThinkMode::think;
  for (const auto& msg : messages) {
    if (msg.role != "system") continue;
    std::string_view c = msg.content;
    while (!c.empty() && (c.back() == ' ' || c.back() == '\n' || c.back() == '\t' || c.back() == '\r')) c.remove_suffix(1);
    if (c.ends_with("/no_think")) m = ThinkMode::no_think;
    else if (c.ends_with("/think")) m = ThinkMode::think;
  }
  return m;
}

// The rendered text and the byte spans of it that are trained.
struct ChatText {
  std::string text;
  std::vector<std::pair<size_t, size_t>> trained;  // [begin, end) byte offsets, in order
};

// Renders messages; with add_generation_prompt, ends with the opening of an assistant turn (what a chat program
// feeds the model before it answers).
// Assistant messages before index `train_from` are context, not trained (a preference pair's earlier turns).
inline ChatText render_chat(const std::vector<Message>& messages, bool add_generation_prompt = false,
                            size_t train_from = 0) {
  const bool no_think = think_mode(messages) == ThinkMode::no_think;
  ChatText out;
  for (size_t k = 0; k < messages.size(); ++k) {
    const Message& m = messages[k];
    out.text += kImStart;
    out.text += m.role;
    out.text += '\n';
    const bool assistant = m.role == "assistant";
    if (assistant && no_think && !m.content.starts_with(kThinkOpen)) out.text += kEmptyThink;
    const size_t begin = out.text.size();
    out.text += m.content;
    out.text += kImEnd;
    if (assistant && k >= train_from) out.trained.emplace_back(begin, out.text.size());
    out.text += '\n';
  }
  if (add_generation_prompt) {
    out.text += kImStart;
    out.text += "assistant\n";
    if (no_think) out.text += kEmptyThink;
  }
  return out;
}

// The template above in Jinja (tokenizer_config.json's chat_template), for transformers' apply_chat_template.
inline std::string chat_template_jinja() {
  return "{%- set ns = namespace(no_think=false) -%}"
         "{%- for message in messages -%}{%- if message['role'] == 'system' -%}"
         "{%- set flag = message['content'].rstrip(' \\n\\t\\r') -%}"
         "{%- if flag.endswith('/no_think') -%}{%- set ns.no_think = true -%}"
         "{%- elif flag.endswith('/think') -%}{%- set ns.no_think = false -%}{%- endif -%}"
         "{%- endif -%}{%- endfor -%}"
         "{%- for message in messages -%}"
         "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
         "{%- if message['role'] == 'assistant' and ns.no_think and not message['content'].startswith('<think>') -%}"
         "{{- '<think>\\n\\n</think>\\n' -}}{%- endif -%}"
         "{%- if message['role'] == 'assistant' -%}"
         "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}"
         "{%- else -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
         "{%- endfor -%}"
         "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
         "{%- if ns.no_think -%}{{- '<think>\\n\\n</think>\\n' -}}{%- endif -%}{%- endif -%}";
}

// The chat tokens a tokenizer lacks ("" when it has them all), for an error message.
inline std::string missing_chat_tokens(const Tokenizer& tok) {
  std::string missing;
  for (const auto& t : chat_special_tokens())
    if (!tok.token_to_id(t)) missing += (missing.empty() ? "" : ", ") + t;
  return missing;
}

// A conversation's ids and, for each, whether it is trained (1) or context (0).
struct ChatTokens {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;
  long trained_count() const { return long(std::count(trained.begin(), trained.end(), uint8_t(1))); }
};

inline ChatTokens tokenize_chat(const Tokenizer& tok, const ChatText& c) {
  ChatTokens t;
  t.ids = tok.encode(c.text);
  t.trained.resize(t.ids.size());
  size_t at = 0, span = 0;
  for (size_t i = 0; i < t.ids.size(); ++i) {
    const size_t end = at + tok.decode(&t.ids[i], 1).size();
    while (span < c.trained.size() && c.trained[span].second <= at) ++span;
    t.trained[i] = span < c.trained.size() && c.trained[span].first < end && at < c.trained[span].second;
    at = end;
  }
  KILN_CHECK(at == c.text.size(), "tokenize_chat: the tokens decode to ", at, " bytes, the text has ", c.text.size(),
             " (the tokenizer does not round-trip this text)");
  return t;
}

// One message of a record: {"role": "system" | "user" | "assistant", "content": "..."}, its field named `at`.
inline Message read_message(const nlohmann::json& m, const std::string& where, const std::string& at) {
  KILN_CHECK(m.is_object() && m.contains("role") && m["role"].is_string(), where, ": field ", at,
             ".role is missing or not a string");
  KILN_CHECK(m.contains("content") && m["content"].is_string(), where, ": field ", at,
             ".content is missing or not a string");
  Message msg{m["role"].get<std::string>(), m["content"].get<std::string>()};
  KILN_CHECK(msg.role == "system" || msg.role == "user" || msg.role == "assistant", where, ": field ", at,
             ".role = \"", msg.role, "\": the chat template knows system, user and assistant");
  return msg;
}

// Conversations from jsonl, one a line: {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}]}.
// Every record needs an assistant turn with content (unless !need_answer: prompts); blank lines are skipped;
// anything else malformed is an error naming the file, the line and the field.
inline std::vector<Conversation> read_conversations(const std::string& path, bool need_answer = true) {
  std::vector<Conversation> out;
  io::read_jsonl(path, "the conversations file (jsonl: {\"messages\": [{\"role\", \"content\"}...]} a line)",
                 [&](const nlohmann::json& j, const std::string& where) {
    KILN_CHECK(j.is_object() && j.contains("messages"), where, ": field messages is missing (expected {\"messages\": "
               "[{\"role\": ..., \"content\": ...}, ...]})");
    const auto& ms = j["messages"];
    KILN_CHECK(ms.is_array() && !ms.empty(), where, ": field messages = ", ms.dump().substr(0, 80),
               ": expected a non-empty list of {role, content}");
    Conversation c;
    c.where = where;
    bool answered = false;
    for (size_t i = 0; i < ms.size(); ++i) {
      const std::string at = "messages[" + std::to_string(i) + "]";
      Message msg = read_message(ms[i], where, at);
      if (msg.role == "assistant") {
        KILN_CHECK(!msg.content.empty(), where, ": field ", at, ".content: an assistant turn with no text");
        answered = true;
      }
      c.messages.push_back(std::move(msg));
    }
    KILN_CHECK(answered || !need_answer, where, ": the conversation has no assistant turn (SFT trains on the assistant's tokens only, "
               "so it would teach nothing)");
    out.push_back(std::move(c));
  });
  KILN_CHECK(!out.empty(), path, ": no conversations");
  return out;
}

// Tokenized conversations, split into training and held-out ones by content (held_out_document on the rendered
// text, as the pretraining data splits). A conversation longer than the phase's rows (`max_tokens`) is an error, or
// with drop_long (data the run generated itself) left out and counted.
struct ChatSet {
  std::vector<ChatTokens> train, val;
  long train_tokens = 0, trained_tokens = 0;
  long dropped = 0;  // drop_long: conversations longer than a row
};
inline ChatSet tokenize_conversations(const Tokenizer& tok, const std::vector<Conversation>& cs, int max_tokens,
                                      int val_every, bool drop_long = false) {
  ChatSet s;
  for (const auto& c : cs) {
    const ChatText text = render_chat(c.messages);
    ChatTokens t = tokenize_chat(tok, text);
    if (drop_long && t.ids.size() > size_t(max_tokens)) {
      ++s.dropped;
      continue;
    }
    KILN_CHECK(t.ids.size() <= size_t(max_tokens), c.where, ": the conversation is ", t.ids.size(), " tokens, longer "
               "than the phase's rows of ", max_tokens, " (shorten it, drop it, or train the phase at a longer seq_len)");
    if (held_out_document(text.text, val_every)) {
      s.val.push_back(std::move(t));
    } else {
      s.train_tokens += long(t.ids.size());
      s.trained_tokens += t.trained_count();
      s.train.push_back(std::move(t));
    }
  }
  return s;
}

// The position of a ChatRows stream (a checkpoint stores it).
struct ChatRowsState {
  uint64_t epoch = 0, next = 0;  // the next conversation's index in this epoch's order
};

// Sequences that share a row: a conversation (SFT), or a preference pair's chosen and rejected answers (their
// log-probabilities are compared within one micro-batch).
using ChatGroup = std::vector<ChatTokens>;
inline std::vector<ChatGroup> singletons(std::vector<ChatTokens> v) {
  std::vector<ChatGroup> g;
  g.reserve(v.size());
  for (auto& t : v) g.push_back({std::move(t)});
  return g;
}

// Packs whole groups into rows: each sequence is one document (its positions restart, attention stays inside it), a
// group that does not fit the rest of a row starts the next one, and the gap is padding (no loss). Targets are the
// next tokens where those are trained, -1 elsewhere. Training streams reshuffle the groups each epoch.
class ChatRows final : public RowSource {
 public:
  ChatRows(std::shared_ptr<const std::vector<ChatGroup>> groups, int32_t pad, uint64_t seed, bool shuffle)
      : convs_(std::move(groups)), pad_(pad), seed_(seed), shuffle_(shuffle) {
    KILN_CHECK(!convs_->empty(), "ChatRows: no conversations");
    reorder();
  }
  void next(int B, int T, int32_t* tokens, int32_t* targets, int32_t* positions, int32_t* doc_start) override {
    for (int b = 0; b < B; ++b) {
      const size_t o = size_t(b) * T;
      int at = 0;
      for (;;) {
        const ChatGroup& g = (*convs_)[order_[st_.next]];
        int n = 0;
        for (const auto& c : g) n += int(c.ids.size());
        KILN_CHECK(n <= T, "ChatRows: ", g.size() == 1 ? "a conversation" : "a group of sequences", " of ", n,
                   " tokens does not fit a row of ", T);
        if (at + n > T) break;
        for (const auto& c : g) {
          const int len = int(c.ids.size());
          for (int i = 0; i < len; ++i) {
            tokens[o + at + i] = c.ids[size_t(i)];
            targets[o + at + i] = i + 1 < len && c.trained[size_t(i) + 1] ? c.ids[size_t(i) + 1] : -1;
            positions[o + at + i] = i;
            doc_start[o + at + i] = at;
          }
          at += len;
        }
        advance();
        if (at == T) break;
      }
      for (int i = at; i < T; ++i) {  // padding: a document of its own, no loss
        tokens[o + i] = pad_, targets[o + i] = -1, positions[o + i] = i - at, doc_start[o + i] = at;
      }
    }
  }
  std::vector<uint8_t> state() const override {
    std::vector<uint8_t> b(sizeof st_);
    std::memcpy(b.data(), &st_, sizeof st_);
    return b;
  }
  void restore(std::span<const uint8_t> b) override {
    KILN_CHECK(b.size() == sizeof(ChatRowsState), "data state holds ", b.size(), " bytes, expected ",
               sizeof(ChatRowsState), " (a chat stream's state)");
    ChatRowsState s;
    std::memcpy(&s, b.data(), sizeof s);
    KILN_CHECK(s.next < convs_->size(), "data state: conversation ", s.next, " is beyond the set (", convs_->size(),
               "): it belongs to other data");
    st_ = s;
    reorder();
  }
  std::string where() const override { return "epoch " + std::to_string(st_.epoch); }

 private:
  void advance() {
    if (++st_.next == convs_->size()) {
      st_.next = 0;
      ++st_.epoch;
      reorder();
    }
  }
  void reorder() {
    order_.resize(convs_->size());
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    if (!shuffle_) return;
    Rng rng(mix64(seed_ ^ (0x5f7a2b9d3c1e4a68ull + st_.epoch)));
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[size_t(rng.below(i))]);
  }

  std::shared_ptr<const std::vector<ChatGroup>> convs_;
  int32_t pad_;
  uint64_t seed_;
  bool shuffle_;
  ChatRowsState st_;
  std::vector<size_t> order_;
};

}  // namespace kiln::data
