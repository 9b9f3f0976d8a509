// tools/train.cpp: one dedicated trainer per recipe, the half that builds the training step. kiln_add_trainer()
// compiles this file and tools/train_tools.cpp with KILN_RECIPE_HEADER (the recipe's path), KILN_RECIPE (its type,
// recipes::<stem>) and KILN_RECIPE_NAME, and links the recipe-independent trainer program (tools/cli, compiled once).
#include KILN_RECIPE_HEADER
#include "kiln/backend/cpu.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/trainer.hpp"
#include "cli/recipe_program.hpp"

namespace {

using Recipe = KILN_RECIPE;
static_assert(kiln::RecipeType<Recipe>, "a recipe needs `model` (a Decoder), `stage` or `phases`, and `defaults()`");

std::unique_ptr<kiln::TrainerBase> make_trainer(std::vector<kiln::TrainConfig> configs,
                                                kiln::TrainerBase::DataFor data_for) {
  return std::make_unique<kiln::Trainer<Recipe>>(std::move(configs), std::move(data_for));
}

kiln::TrainConfig defaults(int phase) { return kiln::phase_defaults<Recipe>(phase); }

kiln::RecipeProgram program() {
  using M = typename Recipe::model;
  using P = kiln::plan::ParamPlan<M>;
  kiln::RecipeProgram r;
  r.name = KILN_RECIPE_NAME;
  r.header = KILN_RECIPE_HEADER;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (r.phases.push_back(kiln::PhaseInfo{
         {kiln::phases_of<Recipe>::names[I], kiln::phase_stage<Recipe, I>::micro_batch,
          kiln::phase_stage<Recipe, I>::seq_len},
         kiln::phase_model<Recipe, I>::positional::name,
         double(kiln::phase_model<Recipe, I>::positional::theta),
         double(kiln::plan::MemoryPlan<kiln::phase_model<Recipe, I>, kiln::phase_stage<Recipe, I>::micro_batch,
                                       kiln::phase_stage<Recipe, I>::seq_len, kiln::plan::Fp32>::total)}),
     ...);
  }(std::make_integer_sequence<int, kiln::phases_of<Recipe>::count>{});
  r.max_seq_len = kiln::max_seq_len<Recipe>;
  r.table = P::table.entries;
  r.table_floats = P::table.total;
  r.parameters = P::parameters;
  r.layers = M::layers;
  r.hidden = M::hidden;
  r.heads = M::heads;
  r.kv_heads = M::kv_heads;
  r.vocab = M::vocab;
  r.defaults = &defaults;
  r.make_trainer = &make_trainer;
  kiln::fill_recipe_tools(r);
  return r;
}

}  // namespace

int main(int argc, char** argv) { return kiln::cli::trainer_main(argc, argv, program()); }
