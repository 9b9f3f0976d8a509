// tools/registry/entry.hpp: one recipe in the recipe registry (kiln_recipes): what the driver needs to know of a
// recipe without building its trainer: its name and header, its plan summary (`key value` lines: model, shape,
// memory, run-time defaults; what `tools/kiln plan a.hpp b.hpp` compares) and whether a Hugging Face config.json
// fits its model (what `tools/kiln import` matches). kiln_add_registry() (cmake/KilnTrainer.cmake) generates one
// small translation unit per recipe that fills an entry with registry_entry<Recipe>, and the list of them.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace kiln::io {
struct HfConfig;
}

namespace kiln {

struct RegistryEntry {
  std::string name;    // recipes::<name>
  std::string header;  // absolute path of the recipe header
  std::vector<std::pair<std::string, std::string>> summary;
  // Every field in which a config.json differs from the recipe's first phase's model (empty: it fits).
  std::vector<std::string> (*hf_mismatches)(const io::HfConfig& config);
};

namespace registry {
// The registry's command line (tools/registry/main.cpp, compiled once): list, match, diff, checkpoint.
int main(int argc, char** argv, const std::vector<RegistryEntry>& recipes);
}  // namespace registry

}  // namespace kiln

#ifdef KILN_REGISTRY_RECIPE  // the generated translation unit of one recipe
#include "kiln/io/hf_config.hpp"
#include "kiln/recipe.hpp"
#include "recipe_print.hpp"

namespace kiln {
template <RecipeType Recipe>
RegistryEntry registry_entry(const char* name, const char* header) {
  return {name, header, recipe_summary<Recipe>(name),
          [](const io::HfConfig& c) { return io::mismatches<phase_model<Recipe, 0>>(c); }};
}
}  // namespace kiln
#endif
