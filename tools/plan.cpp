// tools/plan.cpp: prints a recipe's static plan without compiling any kernel (fast to build for any model size).
//   plan_<recipe>            the whole plan: model, parameter table, FLOPs, memory, run-time defaults
//   plan_<recipe> --summary  `key value` lines, for comparing two recipes (tools/kiln plan a.hpp b.hpp)
#include KILN_RECIPE_HEADER
#include <cstring>
#include <iostream>

#include "kiln/plan/print.hpp"
#include "kiln/recipe.hpp"

int main(int argc, char** argv) {
  static_assert(kiln::RecipeType<KILN_RECIPE>, "a recipe needs `model` (a Decoder), `stage` and `defaults()`");
  if (argc > 1 && std::strcmp(argv[1], "--summary") == 0) {
    for (const auto& [k, v] : kiln::plan::plan_summary<KILN_RECIPE>(KILN_RECIPE_NAME)) std::cout << k << " " << v << "\n";
    return 0;
  }
  if (argc > 1) {
    std::cerr << "usage: " << argv[0] << " [--summary]\n";
    return 2;
  }
  kiln::plan::print_plan<KILN_RECIPE>(std::cout, KILN_RECIPE_NAME);
  return 0;
}
