// tools/train_tools.cpp: the second half of a dedicated trainer, built beside tools/train.cpp (in parallel): the
// KV-cache decoder for generation and logits, the model's HF config, and the plan printer of the recipe.
#include KILN_RECIPE_HEADER
#include <ostream>

#include "kiln/backend/cpu.hpp"
#include "kiln/eval/generate.hpp"
#include "kiln/io/hf_config.hpp"
#include "kiln/recipe.hpp"
#include "cli/recipe_program.hpp"
#include "recipe_print.hpp"

namespace {

using Recipe = KILN_RECIPE;
constexpr int MaxT = kiln::max_seq_len<Recipe>;

std::vector<int32_t> generate(int phase, const float* params, const std::vector<int32_t>& prompt, int n,
                              const kiln::eval::SamplingConfig& sampling, int32_t stop_token, int* dropped) {
  return kiln::with_phase<Recipe>(phase, [&]<int I>() {
    using PM = kiln::phase_model<Recipe, I>;
    return kiln::eval::generate<PM, MaxT, kiln::backend::cpu::Decoder<PM, MaxT>>(params, prompt, n, sampling,
                                                                                stop_token, dropped);
  });
}

// Evaluation: phase I's evaluation program on the CPU over a copy of `params` (kiln/eval/score.hpp runs it).
std::function<void(const kiln::backend::Batch&, float*)> make_scorer(int phase, const float* params, int* B, int* T) {
  return kiln::with_phase<Recipe>(phase, [&]<int I>() -> std::function<void(const kiln::backend::Batch&, float*)> {
    using PM = kiln::phase_model<Recipe, I>;
    using S = kiln::phase_stage<Recipe, I>;
    *B = S::micro_batch, *T = S::seq_len;
    auto state = std::make_shared<kiln::backend::cpu::State<PM>>();
    std::copy_n(params, kiln::plan::ParamPlan<PM>::table.total, state->host_mut(kiln::backend::Tensor::params));
    auto exec = std::make_shared<kiln::backend::cpu::Executor<PM, S::micro_batch, S::seq_len>>();
    return [state, exec](const kiln::backend::Batch& b, float* logp) {
      exec->forward(*state, b);
      std::copy_n(exec->token_logp(), S::micro_batch * S::seq_len, logp);
    };
  });
}

// The KV-cache forward, which tests/test_generate.cpp checks against the training forward position by position.
std::vector<float> logits(int phase, const float* params, const std::vector<int32_t>& ids) {
  KILN_CHECK(int(ids.size()) <= MaxT, "logits: ", ids.size(), " tokens do not fit the recipe's context of ", MaxT);
  return kiln::with_phase<Recipe>(phase, [&]<int I>() {
    using PM = kiln::phase_model<Recipe, I>;
    auto gen = std::make_unique<kiln::backend::cpu::Decoder<PM, MaxT>>();
    std::vector<float> out(ids.size() * size_t(PM::vocab));
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* l = gen->step(params, ids[i]);
      std::copy_n(l, PM::vocab, out.data() + i * PM::vocab);
    }
    return out;
  });
}

kiln::io::HfConfig hf_config(int phase, const std::string& model_type) {
  return kiln::with_phase<Recipe>(phase, [&]<int I>() {
    using PM = kiln::phase_model<Recipe, I>;
    std::string type = model_type;
    if (type == "auto") {
      bool any_nope = false;
      for (int l = 0; l < PM::layers; ++l) any_nope |= !PM::uses_rope(l);
      type = any_nope ? "smollm3" : "llama";
    }
    return kiln::io::hf_config_of<PM>(type);
  });
}

std::vector<std::string> hf_mismatches(const kiln::io::HfConfig& c) {
  return kiln::io::mismatches<kiln::phase_model<Recipe, 0>>(c);
}

void print(std::ostream& os, bool program) { kiln::print_recipe<Recipe>(os, KILN_RECIPE_NAME, program); }

}  // namespace

void kiln::fill_recipe_tools(RecipeProgram& r) {
  r.generate = &generate;
  r.logits = &logits;
  r.make_scorer = &make_scorer;
  r.hf_config = &hf_config;
  r.hf_mismatches = &hf_mismatches;
  r.print = &print;
}
