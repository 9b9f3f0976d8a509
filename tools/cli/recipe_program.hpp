// tools/cli/recipe_program.hpp: one compiled recipe as the trainer program sees it.
//
// A dedicated trainer is two kinds of code. What depends on the recipe (the trainer's step loop over the backend's
// kernels, the KV-cache decoder, the plan printer, the model's HF config) is compiled for it, in two translation
// units that build in parallel: tools/train.cpp (make_trainer and the fields below it) and tools/train_tools.cpp
// (generate, logits, hf_config, hf_mismatches, print). Everything else (the command line, data, tokenizers,
// checkpoints, metrics, TensorBoard, HF import and export) is in tools/cli/*.cpp, compiled once into the library
// kiln_trainer_cli that every trainer links, and reaches the recipe only through a RecipeProgram.
#pragma once
#include <functional>

#include "kiln/backend/batch.hpp"
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/eval/generate.hpp"  // SamplingConfig (the sampler itself is a template on the model)
#include "kiln/parallel/comm.hpp"
#include "kiln/plan/params.hpp"
#include "kiln/train/config.hpp"
#include "kiln/train/trainer_base.hpp"

namespace kiln::io {
struct HfConfig;
}

namespace kiln {

struct PhaseInfo {
  PhaseShape shape;
  std::string positional;  // the model's positional policy in this phase (name) and its RoPE theta
  double theta;
  double memory_bytes;     // the trainer's backend's total (parameters, optimizer, arena, ...) at this phase's shape
  double train_flops_per_token;  // forward + backward, causal attention over the whole row (plan/flops.hpp)
};

struct RecipeProgram {
  // ---- tools/train.cpp
  std::string name;    // recipes::<name>
  std::string backend = "cpu";  // the backend this trainer was built for (cpu, cuda)
  std::string header;  // the recipe header this trainer was built from
  std::vector<PhaseInfo> phases;
  int max_seq_len;                          // the longest phase's sequence length: generation's context
  std::span<const plan::ParamEntry> table;  // the parameter table every phase shares
  size_t table_floats, parameters;          // floats per flat buffer (padding included); parameters a user counts
  int layers, hidden, heads, kv_heads, vocab;
  int tp = 1;  // the layout's tensor-parallel degree (the data-parallel degree is the world / tp)
  TrainConfig (*defaults)(int phase);
  std::unique_ptr<TrainerBase> (*make_trainer)(std::vector<TrainConfig> configs, TrainerBase::DataFor data_for);
  // GPU ranks' collectives (NCCL) over the host communicator, on this node's GPU local_rank: set in CUDA trainers
  // built with NCCL, else nullptr (more than one rank is then refused).
  std::unique_ptr<parallel::DeviceCollectives> (*make_device_comm)(parallel::Communicator& host, int local_rank,
                                                                   double timeout_s, parallel::HangHandler on_hang) =
      nullptr;

  // ---- tools/train_tools.cpp
  // Up to n new tokens after `prompt` with the parameters `params` (host, table layout), at phase `phase`'s model.
  std::vector<int32_t> (*generate)(int phase, const float* params, const std::vector<int32_t>& prompt, int n,
                                   const eval::SamplingConfig& sampling, int32_t stop_token, int* dropped);
  // Evaluation: a runner of phase `phase`'s evaluation program on the CPU over `params` (copied), for (B, T)
  // batches of that phase's shape (set in *B, *T): the per-token log p(target) into its second argument.
  std::function<void(const backend::Batch&, float*)> (*make_scorer)(int phase, const float* params, int* B, int* T);
  // The logits (T x vocab) at positions 0..T-1 of `ids`.
  std::vector<float> (*logits)(int phase, const float* params, const std::vector<int32_t>& ids);
  // The HF config.json of phase `phase`'s model ("auto": smollm3 when it has NoPE layers, else llama).
  io::HfConfig (*hf_config)(int phase, const std::string& model_type);
  // Every field in which an HF config differs from the first phase's model (empty: it fits).
  std::vector<std::string> (*hf_mismatches)(const io::HfConfig& config);
  // The static plan of every phase (program: with its op program).
  void (*print)(std::ostream& os, bool program);

  std::vector<PhaseShape> shapes() const {
    std::vector<PhaseShape> s;
    for (const auto& p : phases) s.push_back(p.shape);
    return s;
  }
  int find_phase(std::string_view phase) const {
    for (size_t i = 0; i < phases.size(); ++i)
      if (phases[i].shape.name == phase) return int(i);
    return -1;
  }
  std::string phase_list() const {
    std::string s;
    for (const auto& p : phases) s += (s.empty() ? "" : ", ") + std::string(p.shape.name);
    return s;
  }
};

// Filled by tools/train_tools.cpp, the second translation unit of the same recipe.
void fill_recipe_tools(RecipeProgram& program);

namespace cli {
// The trainer program: `train_<recipe> [options]`, `generate`, `export`, `import` (tools/cli/*.cpp).
int trainer_main(int argc, char** argv, const RecipeProgram& program);
}  // namespace cli

}  // namespace kiln
