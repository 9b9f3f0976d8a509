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
    const std::filesystem::path dir = resolve_checkpoint(checkpoint, [](const std::string& w) {
      std::fprintf(stderr, "kiln: warning: %s\n", w.c_str());
    });
    const io::Checkpoint ck(dir);
    check_checkpoint_recipe(ck, name);
    std::vector<float> params(r.table_floats, 0.0f);
    io::load_params(r.table, ck.blob("parameters"), params.data(), dir.string() + "/parameters.safetensors");
    const int phase = checkpoint_phase(ck, r.shapes());  // the checkpoint's phase model
    const nlohmann::json info = ck.state().extra.value("data", nlohmann::json::object());
    const std::string tok_path = info.value("tokenizer", std::string());
    std::shared_ptr<data::Tokenizer> tok;
    if (!tok_path.empty()) tok = std::make_shared<data::Tokenizer>(data::Tokenizer::load(tok_path));
    else if (!info.value("byte_level", true))
      std::fprintf(stderr, "kiln: warning: %s has no tokenizer and its ids are not bytes (imported without "
                   "tokenizer.json): the text below is its ids read as bytes\n", dir.c_str());
    const int32_t eod = info.value("end_of_document", tok ? -1 : data::ByteTokenizer::end_of_document);
    sc.vocab_limit = info.value("vocab_used", 0);
    std::printf("kiln: %s at step %lld | %s\n", dir.c_str(), (long long)ck.step(),
                tok ? ("tokenizer " + tok_path).c_str() : "byte-level tokens");
    for (const auto& p : prompts) {
      const auto ids = tok ? tok->encode(p) : data::ByteTokenizer::encode(p);
      int dropped = 0;
      const auto out = r.generate(phase, params.data(), ids, tokens, sc, eod, &dropped);
      if (dropped)
        std::printf("kiln: the prompt's first %d tokens were dropped: prompt + %d new tokens exceed the %d-token "
                    "context\n", dropped, tokens, MaxT);
      std::printf("---\n%s%s\n", p.c_str(), (tok ? tok->decode(out) : data::ByteTokenizer::decode(out)).c_str());
      ++sc.seed;
    }
    return 0;
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (filesystem, JSON): a message, not a crash
    std::fprintf(stderr, "kiln: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace kiln::cli
