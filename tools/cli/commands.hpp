// tools/cli/commands.hpp: the trainer program's subcommands (tools/cli/*.cpp, compiled once into kiln_trainer_cli).
#pragma once
#include <CLI/CLI.hpp>

#include "kiln/train/config.hpp"
#include "cli/recipe_program.hpp"

namespace kiln::cli {

// Binds every run-time field of TrainConfig to a command-line option (the recipe's value is the default).
void add_train_options(CLI::App& app, TrainConfig& c);

// `train_<recipe> generate`: continues prompts with a checkpoint's parameters (generate.cpp).
int generate_main(int argc, char** argv, const RecipeProgram& r);
// `train_<recipe> eval`: a checkpoint scored on multiple-choice tasks, CF and MCF (eval.cpp).
int eval_main(int argc, char** argv, const RecipeProgram& r);
// `train_<recipe> export` / `import`: Kiln checkpoints <-> Hugging Face model directories (hf_interop.cpp).
int hf_export_main(int argc, char** argv, const RecipeProgram& r);
int hf_import_main(int argc, char** argv, const RecipeProgram& r);

}  // namespace kiln::cli
