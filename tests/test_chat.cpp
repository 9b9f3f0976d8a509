// The chat format and SFT's data (kiln/data/chat.hpp, chat_synthetic.hpp): rendering, ids and loss mask equal to
// transformers' apply_chat_template (fixture: tests/reference/make_chat_fixture.py), the jsonl reader's errors,
// packing whole conversations with targets on the assistant's tokens only, and the gradient's independence of
// every token that feeds no assistant token.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "kiln/backend/cpu.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/chat_synthetic.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/optimizer.hpp"
#include "kiln/train/trainer.hpp"

using namespace kiln;
using namespace kiln::data;

namespace {

const std::string kChatFx = std::string(KILN_TEST_FIXTURES) + "/chat";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string write_temp(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / ("kiln_test_chat_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string p = (dir / name).string();
  std::ofstream(p) << text;
  return p;
}

}  // namespace

TEST_CASE("chat: text, ids and assistant mask equal transformers' apply_chat_template (fixture)") {
  const Tokenizer tok = Tokenizer::load(kChatFx + "/tokenizer.json");
  REQUIRE(missing_chat_tokens(tok).empty());
  std::ifstream f(kChatFx + "/expected.json");
  const nlohmann::json exp = nlohmann::json::parse(f);
  CHECK(exp["template"].get<std::string>() == chat_template_jinja());  // the fixture was made from this template
  for (const char* name : {"conversations", "prompts"}) {
    const bool gen = std::string(name) == "prompts";
    const auto convs = read_conversations(kChatFx + "/" + name + ".jsonl", !gen);
    REQUIRE(convs.size() == exp[name].size());
    for (size_t i = 0; i < convs.size(); ++i) {
      CAPTURE(convs[i].where);
      const ChatText text = render_chat(convs[i].messages, gen);
      CHECK(text.text == exp[name][i]["text"].get<std::string>());
      const ChatTokens t = tokenize_chat(tok, text);
      CHECK(t.ids == exp[name][i]["ids"].get<std::vector<int32_t>>());
      CHECK(std::vector<int>(t.trained.begin(), t.trained.end()) == exp[name][i]["mask"].get<std::vector<int>>());
      if (!gen) CHECK(t.trained_count() > 0);
    }
  }
}

TEST_CASE("chat: think modes") {
  CHECK(think_mode({{"user", "x /no_think"}}) == ThinkMode::think);  // a user's flag is text
  CHECK(think_mode({{"system", "a /no_think \n"}}) == ThinkMode::no_think);
  CHECK(think_mode({{"system", "a /no_think"}, {"system", "b /think"}}) == ThinkMode::think);
  const ChatText nt = render_chat({{"system", "/no_think"}, {"user", "q"}, {"assistant", "a"}});
  CHECK(nt.text == "<|im_start|>system\n/no_think<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
                   "<think>\n\n</think>\na<|im_end|>\n");
  REQUIRE(nt.trained.size() == 1);
  CHECK(nt.text.substr(nt.trained[0].first, nt.trained[0].second - nt.trained[0].first) == "a<|im_end|>");
  CHECK(render_chat({{"user", "q"}}, true).text == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
}

TEST_CASE("chat: malformed conversations are named by file, line and field") {
  auto err = [](const std::string& line) {
    const std::string p = write_temp("bad.jsonl", "\n" + line + "\n");
    return error_of([&] { read_conversations(p); });
  };
  CHECK(err("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}").find("bad.jsonl:2: the conversation has no "
                                                                            "assistant turn") != std::string::npos);
  CHECK(err("{\"messages\": [{\"role\": \"tool\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}")
            .find("bad.jsonl:2: field messages[0].role = \"tool\": the chat template knows system, user and assistant") !=
        std::string::npos);
  CHECK(err("{\"messages\": [{\"role\": \"assistant\", \"content\": 3}]}").find("bad.jsonl:2: field messages[0].content is "
                                                                           "missing or not a string") != std::string::npos);
  CHECK(err("{\"messages\": [{\"role\": \"assistant\", \"content\": \"\"}]}").find("an assistant turn with no text") !=
        std::string::npos);
  CHECK(err("{\"conversation\": []}").find("bad.jsonl:2: field messages is missing") != std::string::npos);
  CHECK(err("{\"messages\": [").find("bad.jsonl:2: not valid JSON") != std::string::npos);
  CHECK(error_of([] { read_conversations("/nonexistent/chat.jsonl"); }).find("cannot open") != std::string::npos);
}

TEST_CASE("chat: a conversation longer than the phase's rows is an error naming it") {
  const Tokenizer tok = Tokenizer::load(kChatFx + "/tokenizer.json");
  const auto convs = read_conversations(kChatFx + "/conversations.jsonl");
  const std::string e = error_of([&] { tokenize_conversations(tok, convs, 16, 20); });
  CHECK(e.find("conversations.jsonl:1: the conversation is ") != std::string::npos);
  CHECK(e.find("longer than the phase's rows of 16") != std::string::npos);
}

TEST_CASE("chat: rows pack whole conversations, targets only where the next token is the assistant's") {
  const Tokenizer tok = Tokenizer::load(kChatFx + "/tokenizer.json");
  const auto convs = read_conversations(kChatFx + "/conversations.jsonl");
  auto set = std::make_shared<std::vector<ChatGroup>>();
  for (const auto& c : convs) set->push_back({tokenize_chat(tok, render_chat(c.messages))});
  constexpr int B = 3, T = 160;
  std::vector<int32_t> tk(B * T), tg(B * T), ps(B * T), ds(B * T);
  ChatRows rows(set, 0, 5, false);
  rows.next(B, T, tk.data(), tg.data(), ps.data(), ds.data());
  // in order, unshuffled: conversation k starts where the previous one ended, or at the next row
  size_t conv = 0;
  for (int b = 0; b < B; ++b) {
    int at = 0;
    while (conv < set->size() && at + int((*set)[conv][0].ids.size()) <= T) {
      const ChatTokens& c = (*set)[conv][0];
      for (size_t i = 0; i < c.ids.size(); ++i) {
        const size_t k = size_t(b) * T + size_t(at) + i;
        CHECK(tk[k] == c.ids[i]);
        CHECK(ps[k] == int(i));
        CHECK(ds[k] == at);
        CHECK(tg[k] == (i + 1 < c.ids.size() && c.trained[i + 1] ? c.ids[i + 1] : -1));
      }
      at += int(c.ids.size());
      ++conv;
    }
    for (int i = at; i < T; ++i) CHECK(tg[size_t(b) * T + size_t(i)] == -1);  // padding: no loss
  }
  CHECK(conv > 1);
  // the state restores the stream exactly
  ChatRows a(set, 0, 9, true), b2(set, 0, 9, true);
  for (int i = 0; i < 3; ++i) a.next(B, T, tk.data(), tg.data(), ps.data(), ds.data());
  b2.restore(a.state());
  std::vector<int32_t> t1(B * T), t2(B * T), x(B * T), y(B * T), z(B * T);
  a.next(B, T, t1.data(), x.data(), y.data(), z.data());
  b2.next(B, T, t2.data(), x.data(), y.data(), z.data());
  CHECK(t1 == t2);
  CHECK(error_of([&] { a.restore(std::vector<uint8_t>(3)); }).find("a chat stream's state") != std::string::npos);
}

namespace {
struct chat_tiny {
  using model = Decoder<Embedding<vocab<704>, hidden<32>, tied<true>>, layers<2>,
                        Attention<heads<2>, kv_heads<1>, RNoPE<2, 10000.0>>, SwiGLU<ffn<64>>, RMSNorm<1e-6>>;
  using stage = Stage<micro_batch<2>, seq_len<160>>;
  static TrainConfig defaults() { return {}; }
};
}  // namespace

TEST_CASE("chat: the gradient does not depend on tokens that feed no assistant token, and does on the prompt") {
  using M = chat_tiny::model;
  constexpr int B = 2, T = 160;
  const Tokenizer tok = Tokenizer::load(kChatFx + "/tokenizer.json");
  const auto convs = read_conversations(kChatFx + "/conversations.jsonl");
  auto set = std::make_shared<std::vector<ChatGroup>>();
  for (const auto& c : convs) set->push_back({tokenize_chat(tok, render_chat(c.messages))});
  HostBatch<B, T> mb;
  ChatRows rows(set, 0, 1, false);
  mb.fill(rows);
  backend::cpu::State<M> state;
  state.init(0.05, 3);
  auto exec = std::make_unique<backend::cpu::Executor<M, B, T>>();
  auto grads = [&](const HostBatch<B, T>& batch) {
    state.zero_grad();
    exec->forward_backward(state, batch.view(), 1.0f / float(batch.count_targets()));
    const float* g = state.host(backend::Tensor::grads);
    return std::vector<float>(g, g + plan::ParamPlan<M>::table.total);
  };
  const std::vector<float> g0 = grads(mb);
  // Positions after the last trained target of their document (the newline after the last <|im_end|>, the
  // padding) feed no assistant token: any token there leaves the gradient bitwise as it was.
  HostBatch<B, T> after = mb, prompt = mb;
  int changed_after = 0, changed_prompt = 0;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) {
      const size_t k = size_t(b) * T + size_t(i);
      bool feeds = false;  // a trained target at i or later in the same document
      for (int j = i; j < T && mb.doc_start[size_t(b) * T + size_t(j)] == mb.doc_start[k]; ++j)
        feeds = feeds || mb.targets[size_t(b) * T + size_t(j)] >= 0;
      if (!feeds) after.tokens[k] = (mb.tokens[k] + 17) % 700, ++changed_after;
      else if (mb.targets[k] < 0 && changed_prompt == 0 && i > mb.doc_start[k])
        prompt.tokens[k] = (mb.tokens[k] + 17) % 700, ++changed_prompt;
    }
  REQUIRE(changed_after > 0);
  REQUIRE(changed_prompt == 1);
  CHECK(grads(after) == g0);
  CHECK(grads(prompt) != g0);  // a prompt token feeds the assistant's: the gradient sees it
}

TEST_CASE("chat: generated conversations") {
  CHECK(addition_steps(67, 576) == "7+6=13\n6+7+1=14\n0+5+1=6\n");
  CHECK(addition_steps(0, 0).empty());
  const auto think = addition_chat(67, 576, true), direct = addition_chat(67, 576, false);
  CHECK(think[2].content.ends_with("</think>\n643"));
  CHECK(direct[2].content == "643");
  CHECK(think_mode(think) == ThinkMode::think);
  CHECK(think_mode(direct) == ThinkMode::no_think);
  std::vector<std::pair<std::string, std::string>> docs;
  for (int i = 0; i < 40; ++i) {
    docs.push_back({"computer text " + std::to_string(i), "computers"});
    docs.push_back({"love text " + std::to_string(i), "love"});
    docs.push_back({"food text " + std::to_string(i), "food"});
    docs.push_back({"not a topic " + std::to_string(i), "zippy"});
  }
  ChatSyntheticOptions o;
  o.instructions = 30, o.arithmetic = 20;
  const auto a = synthetic_chats(docs, o), b = synthetic_chats(docs, o);
  REQUIRE(a.size() == 50);
  int adds = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i][2].content == b[i][2].content);  // deterministic
    if (a[i][1].content.starts_with("What is ")) {
      ++adds;
      long x = 0, y = 0;
      REQUIRE(std::sscanf(a[i][1].content.c_str(), "What is %ld + %ld?", &x, &y) == 2);
      CHECK(a[i][2].content.ends_with(std::to_string(x + y)));
    } else {
      const std::string& q = a[i][1].content;
      const std::string& ans = a[i][2].content;
      CHECK(ans.find("not a topic") == std::string::npos);
      CHECK(((q.find("computers") != std::string::npos) == (ans.find("computer text") != std::string::npos)));
    }
  }
  CHECK(adds == 20);
  {  // the held-out additions: never in the generated data, the only ones the probe and the held-out pairs ask
    ChatSyntheticOptions o2;
    o2.instructions = 0, o2.arithmetic = 400, o2.digits = 2;
    int held = 0;
    for (long x = 10; x < 100; ++x)
      for (long y = 10; y < 100; ++y) held += held_out_addition(x, y);
    CHECK(held > 8100 / 10);  // about one in 8
    CHECK(held < 8100 / 6);
    for (const auto& conv : synthetic_chats(docs, o2)) {
      long x = 0, y = 0;
      REQUIRE(std::sscanf(conv[1].content.c_str(), "What is %ld + %ld?", &x, &y) == 2);
      CHECK(!held_out_addition(x, y));
      CHECK((x >= 10 && x < 100 && y >= 10 && y < 100));  // exactly 2 digits each
    }
    o2.held_out = true;
    for (const auto& p : synthetic_pairs(docs, o2)) {
      long x = 0, y = 0;
      REQUIRE(std::sscanf(p.prompt[1].content.c_str(), "What is %ld + %ld?", &x, &y) == 2);
      CHECK(held_out_addition(x, y));
    }
    Rng rng(3);
    for (int i = 0; i < 50; ++i) {
      const auto [x, y] = draw_addition(rng, 3, true);
      CHECK(held_out_addition(x, y));
    }
    const auto docs2 = reasoning_documents(6, 2, 1);
    REQUIRE(docs2.size() == 6);
    CHECK(docs2[0].starts_with("<|im_start|>system\nYou are a helpful assistant. /think<|im_end|>\n<|im_start|>user\nWhat is "));
    CHECK(docs2[0].find("<think>\n") != std::string::npos);
    CHECK(docs2[1].find("/no_think") != std::string::npos);
    CHECK(docs2[1].ends_with("<|im_end|>\n"));
  }
  {  // the preference task: chosen against rejected, in a seeded order, closed by <|im_end|>
    ChatSyntheticOptions o3;
    o3.instructions = 5, o3.arithmetic = 5, o3.digits = 2, o3.held_out = true;
    const auto pt = preference_task(docs, o3);
    REQUIRE(pt.size() == 10);
    int labels = 0;
    for (const auto& r : pt) {
      REQUIRE(r["endings"].size() == 2);
      labels += r["label"].get<int>();
      const std::string right = r["endings"][r["label"].get<int>()], wrong = r["endings"][1 - r["label"].get<int>()];
      CHECK(right.ends_with("<|im_end|>"));
      CHECK(right != wrong);
      if (r["source"] == "addition") {
        long x = 0, y = 0;
        const std::string ctx = r["ctx"];
        REQUIRE(std::sscanf(ctx.substr(ctx.find("What is ")).c_str(), "What is %ld + %ld?", &x, &y) == 2);
        CHECK(right.ends_with(std::to_string(x + y) + "<|im_end|>"));
      }
    }
    CHECK(labels > 0);
    CHECK(labels < 10);
  }
  const auto task = instruction_task(docs, 10, 3, 300, 4);
  REQUIRE(task.size() == 10);
  for (const auto& r : task) {
    CHECK(r["endings"].size() == 3);
    CHECK(r["target_delimiter"] == "");
    CHECK(r["ctx"].get<std::string>().ends_with("<|im_start|>assistant\n<think>\n\n</think>\n"));
    const std::string right = r["endings"][r["label"].get<int>()];
    CHECK(right.starts_with(r["source"] == "computers" ? "computer" : r["source"] == "love" ? "love" : "food"));
  }
}
