// tools/cli/generate.cpp: `train_<recipe> generate`, compiled once into kiln_trainer_cli: a checkpoint's
// parameters continue prompts through the recipe's KV-cache decoder (RecipeProgram::generate).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "kiln/data/bytes.hpp"
#include "kiln/data/tokenizer.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/train/checkpointing.hpp"
#include "cli/commands.hpp"

namespace kiln::cli {

ToolCheckpoint open_checkpoint(const std::string& path, const RecipeProgram& r) {
  ToolCheckpoint t;
  t.dir = resolve_checkpoint(path, [](const std::string& w) { std::fprintf(stderr, "kiln: warning: %s\n", w.c_str()); });
  const io::Checkpoint ck(t.dir);
  check_checkpoint_recipe(ck, r.name.c_str());
  t.step = (long long)ck.step();
  t.params.assign(r.table_floats, 0.0f);
  io::load_params(r.table, ck.blob("parameters"), t.params.data(), t.dir.string() + "/parameters.safetensors");
  t.phase = checkpoint_phase(ck, r.shapes());  // the checkpoint's phase model
  t.info = ck.state().extra.value("data", nlohmann::json::object());
  t.tokenizer_path = t.info.value("tokenizer", std::string());
  if (!t.tokenizer_path.empty()) t.tokenizer = std::make_shared<data::Tokenizer>(data::Tokenizer::load(t.tokenizer_path));
  return t;
}
std::vector<int32_t> ToolCheckpoint::encode(const std::string& text) const {
  return tokenizer ? tokenizer->encode(text) : data::ByteTokenizer::encode(text);
}
std::string ToolCheckpoint::decode(const std::vector<int32_t>& ids) const {
  return tokenizer ? tokenizer->decode(ids) : data::ByteTokenizer::decode(ids);
}

// `train_<recipe> generate`: continues prompts with a checkpoint's parameters (KV-cache generation on the CPU).
int generate_main(int argc, char** argv, const RecipeProgram& r) {
  const char* name = r.name.c_str();
  const int MaxT = r.max_seq_len;
  CLI::App app{std::string("Generate text with a checkpoint of recipe ") + name};
  std::string checkpoint = std::string("runs/") + name + "/checkpoints";
  std::vector<std::string> prompts;
  eval::SamplingConfig sc;
  int tokens = 200;
  app.add_option("--checkpoint", checkpoint, "a checkpoint directory, or a checkpoints root (its newest valid one)")
      ->capture_default_str();
  app.add_option("--prompt", prompts, "prompt to continue (repeatable)")->required();
  app.add_option("--tokens", tokens, "tokens to generate per prompt")->capture_default_str();
  app.add_option("--temperature", sc.temperature, "0: greedy")->capture_default_str();
  app.add_option("--top-p", sc.top_p, "nucleus sampling mass")->capture_default_str();
  app.add_option("--seed", sc.seed, "sampling seed")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    const ToolCheckpoint ck = open_checkpoint(checkpoint, r);
    const bool tok = ck.tokenizer != nullptr;
    if (!tok && !ck.info.value("byte_level", true))
      std::fprintf(stderr, "kiln: warning: %s has no tokenizer and its ids are not bytes (imported without "
                   "tokenizer.json): the text below is its ids read as bytes\n", ck.dir.c_str());
    const int32_t eod = ck.info.value("end_of_document", tok ? -1 : data::ByteTokenizer::end_of_document);
    sc.vocab_limit = ck.info.value("vocab_used", 0);
    std::printf("kiln: %s at step %lld | %s\n", ck.dir.c_str(), ck.step,
                tok ? ("tokenizer " + ck.tokenizer_path).c_str() : "byte-level tokens");
    for (const auto& p : prompts) {
      const auto ids = ck.encode(p);
      int dropped = 0;
      const auto out = r.generate(ck.phase, ck.params.data(), ids, tokens, sc, eod, &dropped);
      if (dropped)
        std::printf("kiln: the prompt's first %d tokens were dropped: prompt + %d new tokens exceed the %d-token "
                    "context\n", dropped, tokens, MaxT);
      std::printf("---\n%s%s\n", p.c_str(), ck.decode(out).c_str());
      ++sc.seed;
    }
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (filesystem, JSON): a message, not a crash
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
