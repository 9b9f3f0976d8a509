// tools/recipe_print.hpp: a whole recipe printed: the model's static plan at the recipe's phase shape
// (kiln/plan/print.hpp), its op program with the CPU backend's kernels, and the run-time defaults of its
// TrainConfig; and the flat `key value` summary that `tools/kiln plan a.hpp b.hpp` compares.
#pragma once
#include <cstdio>
#include <ostream>
#include <regex>
#include <string>
#include <vector>

#include "kiln/backend/cpu_names.hpp"
#include "kiln/plan/print.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/config.hpp"

namespace kiln {

template <RecipeType Recipe>
std::vector<std::pair<std::string, std::string>> recipe_summary(const char* name) {
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  const TrainConfig c = Recipe::defaults();
  auto str = [](auto v) {
    if constexpr (std::is_floating_point_v<decltype(v)>) {
      char s[32];
      std::snprintf(s, sizeof s, "%g", double(v));
      return std::string(s);
    } else {
      return std::to_string(v);
    }
  };
  std::vector<std::pair<std::string, std::string>> kv = {{"recipe", name}};
  for (auto& p : plan::model_summary<M, S::micro_batch, S::seq_len>()) kv.push_back(std::move(p));
  const std::vector<std::pair<std::string, std::string>> train = {
      {"train.lr", str(c.lr)},
      {"train.min_lr", str(c.min_lr)},
      {"train.schedule", schedule_name(c.schedule)},
      {"train.warmup", str(c.warmup)},
      {"train.steps", str(c.steps)},
      {"train.grad_accum", str(c.grad_accum)},
      {"train.tokens_per_step", str(long(S::micro_batch) * S::seq_len * c.grad_accum)},
      {"train.weight_decay", str(c.weight_decay)},
      {"train.clip", str(c.clip)},
      {"train.betas", str(c.beta1) + "," + str(c.beta2)},
      {"train.seed", str(c.seed)},
  };
  kv.insert(kv.end(), train.begin(), train.end());
  std::string nd;
  for (const auto& p : c.no_decay) nd += (nd.empty() ? "" : ",") + p;
  kv.emplace_back("train.no_decay", nd.empty() ? "none" : nd);
  return kv;
}

// program: also print the op program (training, with the CPU kernels) and its buffers.
template <RecipeType Recipe>
void print_recipe(std::ostream& os, const char* name, bool program) {
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  const TrainConfig c = Recipe::defaults();
  std::vector<std::regex> nd;
  for (const auto& p : c.no_decay) nd.emplace_back(p);
  os << "Recipe " << name << "\n\n";
  plan::print_model<M, S::micro_batch, S::seq_len>(os, [&](const std::string& n) {
    for (const auto& re : nd)
      if (std::regex_search(n, re)) return false;
    return true;
  });
  os << "\nRun-time defaults (override on the command line; no recompile)\n";
  for (const auto& [k, v] : recipe_summary<Recipe>(name))
    if (k.rfind("train.", 0) == 0) os << "  " << k.substr(6) << " = " << v << "\n";
  if (program) {
    os << "\n";
    plan::print_program<plan::TrainProgram<M, S::micro_batch, S::seq_len>>(os, backend::cpu::kernel_name<M>);
  }
}

}  // namespace kiln
