// tools/cli/chat.cpp: `train_<recipe> chat`, compiled once into kiln_trainer_cli: a terminal chat with a checkpoint
// in the chat template (kiln/data/chat.hpp), streaming each token as it is sampled (KV-cache decoding on the CPU).
//   > What is 12 + 30?             a user's message; the answer streams until <|im_end|>
//   > /think   > /no_think          the reasoning mode from the next message on (the system message's flag)
//   > /reset                        a new conversation;   /quit (or end of input) leaves
// Defaults are SmolLM3's recommended sampling, temperature 0.6 and top-p 0.95. --message (repeatable) sends messages
// without a terminal, one after another in one conversation, and exits.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "kiln/data/chat.hpp"
#include "cli/commands.hpp"

namespace kiln::cli {

int chat_main(int argc, char** argv, const RecipeProgram& r) {
  const char* name = r.name.c_str();
  CLI::App app{std::string("Chat with a checkpoint of recipe ") + name};
  std::string checkpoint = std::string("runs/") + name + "/checkpoints", system = "You are a helpful assistant.";
  std::vector<std::string> messages;
  eval::SamplingConfig sc;  // 0.6 / 0.95
  int max_tokens = 256;
  bool no_think = false;
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory, or a checkpoints root (its newest valid one)")
      ->capture_default_str();
  app.add_option("--system", system, "the system message (the mode's flag is added to it)")->capture_default_str();
  app.add_flag("--no-think", no_think, "start in no-think mode (default: think)");
  app.add_option("--temperature", sc.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--seed", sc.seed, "sampling seed")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "the longest answer, in tokens")->capture_default_str();
  app.add_option("--message", messages, "send these messages in turn and exit (no terminal needed; repeatable)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    const ToolCheckpoint ck = open_checkpoint(checkpoint, r);
    KILN_CHECK(ck.tokenizer, ck.dir.string(), ": chat needs the checkpoint's tokenizer (a BPE with the chat tokens); "
               "this one reads byte-level ids");
    const std::string missing = data::missing_chat_tokens(*ck.tokenizer);
    KILN_CHECK(missing.empty(), ck.tokenizer_path, ": the tokenizer lacks the chat tokens ", missing);
    const int32_t im_end = *ck.tokenizer->token_to_id(data::kImEnd);
    sc.vocab_limit = ck.info.value("vocab_used", 0);
    KILN_CHECK(max_tokens > 0 && max_tokens < r.max_seq_len, "--max-tokens must lie in [1, ", r.max_seq_len - 1,
               "] (the recipe's context is ", r.max_seq_len, " tokens)");
    const bool tty = isatty(fileno(stdin)) && messages.empty();
    std::printf("kiln: chat with %s (step %lld, phase %s) | %s mode | temperature %g, top-p %g | /think, /no_think, "
                "/reset, /quit\n", ck.dir.c_str(), ck.step, std::string(r.phases[size_t(ck.phase)].shape.name).c_str(),
                no_think ? "no-think" : "think", sc.temperature, sc.top_p);
    std::vector<data::Message> history;
    size_t next_message = 0;
    for (;;) {
      std::string line;
      if (!messages.empty()) {
        if (next_message == messages.size()) break;
        line = messages[next_message++];
        std::printf("> %s\n", line.c_str());
      } else {
        if (tty) std::printf("> "), std::fflush(stdout);
        if (!std::getline(std::cin, line)) break;
      }
      if (line == "/quit" || line == "/exit") break;
      if (line == "/think" || line == "/no_think") {
        no_think = line == "/no_think";
        std::printf("(%s mode)\n", no_think ? "no-think" : "think");
        continue;
      }
      if (line == "/reset") {
        history.clear();
        std::printf("(a new conversation)\n");
        continue;
      }
      if (line.empty()) continue;
      history.push_back({"user", line});
      std::vector<data::Message> convo = {{"system", system + (no_think ? " /no_think" : " /think")}};
      convo.insert(convo.end(), history.begin(), history.end());
      const std::vector<int32_t> prompt = ck.encode(data::render_chat(convo, /*add_generation_prompt=*/true).text);
      if (no_think) std::printf("%s", data::kEmptyThink);  // what the template opened the answer with
      sc.on_token = [&](int32_t id) {
        std::fputs(ck.decode({id}).c_str(), stdout);
        std::fflush(stdout);
      };
      int dropped = 0;
      const std::vector<int32_t> answer = r.generate(ck.phase, ck.params.data(), prompt, max_tokens, sc, im_end, &dropped);
      std::printf("\n");
      if (dropped)
        std::printf("(the conversation's first %d tokens no longer fit the %d-token context beside the answer)\n",
                    dropped, r.max_seq_len);
      history.push_back({"assistant", ck.decode(answer)});
      ++sc.seed;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
