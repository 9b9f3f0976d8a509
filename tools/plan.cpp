// tools/plan.cpp: prints a recipe's static plan without compiling any kernel (fast to build for any model size).
//   plan_<recipe>                        the whole plan: model, parameter table, FLOPs, memory, run-time defaults
//   plan_<recipe> --summary              `key value` lines, for comparing two recipes (tools/kiln plan a.hpp b.hpp)
//   plan_<recipe> --hf-config <file>     does a Hugging Face config.json fit this recipe's model? Prints "match"
//                                        (exit 0) or every mismatching field (exit 3); tools/kiln import uses it
#include KILN_RECIPE_HEADER
#include <CLI/CLI.hpp>
#include <iostream>

#include "kiln/io/hf_config.hpp"
#include "kiln/plan/print.hpp"
#include "kiln/recipe.hpp"

int main(int argc, char** argv) {
  static_assert(kiln::RecipeType<KILN_RECIPE>, "a recipe needs `model` (a Decoder), `stage` and `defaults()`");
  CLI::App app{std::string("The static plan of recipe ") + KILN_RECIPE_NAME};
  bool summary = false;
  std::string hf_config;
  app.add_flag("--summary", summary, "print `key value` lines");
  app.add_option("--hf-config", hf_config, "check a Hugging Face config.json against this recipe's model");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!hf_config.empty()) {
      const auto diffs = kiln::io::mismatches<KILN_RECIPE::model>(kiln::io::read_hf_config(hf_config));
      if (diffs.empty()) {
        std::cout << "match\n";
        return 0;
      }
      for (const auto& d : diffs) std::cout << d << "\n";
      return 3;
    }
    if (summary) {
      for (const auto& [k, v] : kiln::plan::plan_summary<KILN_RECIPE>(KILN_RECIPE_NAME)) std::cout << k << " " << v << "\n";
      return 0;
    }
    kiln::plan::print_plan<KILN_RECIPE>(std::cout, KILN_RECIPE_NAME);
  } catch (const kiln::Error& e) {
    std::cerr << "kiln plan: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
