// tools/cli/commands.hpp: the trainer program's subcommands (tools/cli/*.cpp, compiled once into kiln_trainer_cli).
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/data/tokenizer.hpp"

#include "kiln/train/config.hpp"
#include "cli/recipe_program.hpp"

namespace kiln::cli {

// Binds every run-time field of TrainConfig to a command-line option (the recipe's value is the default).
void add_train_options(CLI::App& app, TrainConfig& c);

// A checkpoint as the tools read it (generate, eval): the newest valid one under `path` (a directory or a
// checkpoints root), checked to be of this recipe; its parameters, its phase, its data info and its tokenizer (null:
// byte-level ids, or an import without tokenizer.json: info's byte_level says which). Defined in generate.cpp.
struct ToolCheckpoint {
  std::filesystem::path dir;
  long long step = 0;
  std::vector<float> params;
  int phase = 0;
  nlohmann::json info;
  std::string tokenizer_path;
  std::shared_ptr<data::Tokenizer> tokenizer;
  std::vector<int32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
};
ToolCheckpoint open_checkpoint(const std::string& path, const RecipeProgram& r);

// `train_<recipe> generate`: continues prompts with a checkpoint's parameters (generate.cpp).
int generate_main(int argc, char** argv, const RecipeProgram& r);
// `train_<recipe> eval`: a checkpoint scored on multiple-choice tasks, CF and MCF (eval.cpp).
int eval_main(int argc, char** argv, const RecipeProgram& r);
// `train_<recipe> export` / `import`: Kiln checkpoints <-> Hugging Face model directories (hf_interop.cpp).
int hf_export_main(int argc, char** argv, const RecipeProgram& r);
int hf_import_main(int argc, char** argv, const RecipeProgram& r);
// `train_<recipe> merge`: checkpoints merged into a new one: soup, linear, task arithmetic (merge.cpp).
int merge_main(int argc, char** argv, const RecipeProgram& r);
// `train_<recipe> chat`: a terminal chat with a checkpoint in the chat template (chat.cpp).
int chat_main(int argc, char** argv, const RecipeProgram& r);

}  // namespace kiln::cli
