// tools/train.cpp: one dedicated trainer per recipe, the half that builds the training step. kiln_add_trainer()
// compiles this file and tools/train_tools.cpp with KILN_RECIPE_HEADER (the recipe's path), KILN_RECIPE (its type,
// recipes::<stem>) and KILN_RECIPE_NAME, and links the recipe-independent trainer program (tools/cli, compiled once).
// The backend: the CPU's (default), or with KILN_BACKEND_CUDA the CUDA backend: compiled by nvcc for the GPU
// (kiln_add_trainer(... BACKEND cuda)), or by g++ over the SIMT layer (BACKEND simt: the CUDA backend's code on the
// CPU, for tests).
#include KILN_RECIPE_HEADER
#if defined(KILN_BACKEND_CUDA)
#include "kiln/backend/cuda.hpp"
#else
#include "kiln/backend/cpu.hpp"
#endif
#include "kiln/recipe.hpp"
#include "kiln/train/trainer.hpp"
#include "cli/recipe_program.hpp"

namespace {

using Recipe = KILN_RECIPE;
static_assert(kiln::RecipeType<Recipe>, "a recipe needs `model` (a Decoder), `stage` or `phases`, and `defaults()`");
#if defined(KILN_BACKEND_CUDA)
using Backend = kiln::backend::Cuda;
#else
using Backend = kiln::backend::Cpu;
#endif

// A rank's memory at phase I: under TP<t>, of the model it holds (tp_local: its heads, ffn and vocabulary share);
// a preference phase's reference model besides.
template <int I>
constexpr size_t phase_memory() {
  constexpr int tp = kiln::layout_of<Recipe>::tp;
  using PM = kiln::phase_model<Recipe, I>;
  using Local = std::conditional_t<(tp > 1), kiln::tp_local<PM, tp>, PM>;
  using Mem = kiln::plan::MemoryPlan<Local, kiln::phase_stage<Recipe, I>::micro_batch,
                                     kiln::phase_stage<Recipe, I>::seq_len, Backend::precision>;
  constexpr bool preference = kiln::phase_t<Recipe, I>::objective == kiln::Objective::preference;
  return Mem::total + (preference ? Mem::reference : 0);
}

std::unique_ptr<kiln::TrainerBase> make_trainer(std::vector<kiln::TrainConfig> configs,
                                                kiln::TrainerBase::DataFor data_for) {
#if defined(KILN_BACKEND_CUDA)
  size_t most = 0;  // the largest phase: the state is shared, one phase's executor lives at a time
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((most = std::max(most, phase_memory<I>())), ...);
  }(std::make_integer_sequence<int, kiln::phases_of<Recipe>::count>{});
  kiln::backend::cuda::require_device(most, "recipe " KILN_RECIPE_NAME);
#endif
  return std::make_unique<kiln::Trainer<Recipe, Backend>>(std::move(configs), std::move(data_for));
}

kiln::TrainConfig defaults(int phase) { return kiln::phase_defaults<Recipe>(phase); }

kiln::RecipeProgram program() {
  using M = typename Recipe::model;
  using P = kiln::plan::ParamPlan<M>;
  kiln::RecipeProgram r;
  r.name = KILN_RECIPE_NAME;
  r.backend = Backend::name;
  r.header = KILN_RECIPE_HEADER;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (r.phases.push_back(kiln::PhaseInfo{
         {kiln::phases_of<Recipe>::names[I], kiln::phase_stage<Recipe, I>::micro_batch,
          kiln::phase_stage<Recipe, I>::seq_len, kiln::phase_t<Recipe, I>::objective,
          kiln::phase_t<Recipe, I>::preference_loss},
         kiln::phase_model<Recipe, I>::positional::name,
         double(kiln::phase_model<Recipe, I>::positional::theta),
         double(phase_memory<I>()),
         kiln::plan::Flops<kiln::phase_model<Recipe, I>, kiln::phase_stage<Recipe, I>>::train_per_token}),
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
  r.tp = kiln::layout_of<Recipe>::tp;
#if defined(KILN_BACKEND_CUDA) && defined(KILN_HAVE_NCCL) && defined(__CUDACC__)
  r.make_device_comm = &kiln::parallel::make_nccl;
#elif defined(KILN_BACKEND_CUDA) && !defined(__CUDACC__)
  // over the SIMT layer device memory is host memory: the host communicator sums it (data and tensor parallelism
  // of the CUDA backend's code under mpirun on CPU ranks)
  r.make_device_comm = [](kiln::parallel::Communicator& host, int, double,
                          kiln::parallel::HangHandler) -> std::unique_ptr<kiln::parallel::DeviceCollectives> {
    return std::make_unique<kiln::parallel::HostDeviceCollectives>(host);
  };
#endif
  kiln::fill_recipe_tools(r);
  return r;
}

}  // namespace

int main(int argc, char** argv) { return kiln::cli::trainer_main(argc, argv, program()); }
