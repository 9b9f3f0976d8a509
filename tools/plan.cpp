// tools/plan.cpp: prints a recipe's static plan without compiling any kernel (fast to build for any model size).
//   plan_<recipe>                        the whole plan: model, parameter table, FLOPs, memory, run-time defaults,
//                                        and the training step's op program with its buffers
//   plan_<recipe> --no-program           the same without the op program
//   plan_<recipe> --backend cuda         the CUDA backend's program (bf16, its kernels) instead of the CPU's
//   plan_<recipe> --summary              `key value` lines, for comparing two recipes (tools/kiln plan a.hpp b.hpp)
//   plan_<recipe> --hf-config <file>     does a Hugging Face config.json fit this recipe's model? Prints "match"
//                                        (exit 0) or every mismatching field (exit 3); tools/kiln import uses it
#include KILN_RECIPE_HEADER
#include <CLI/CLI.hpp>
#include <iostream>

#include "kiln/io/hf_config.hpp"
#include "kiln/recipe.hpp"
#include "recipe_print.hpp"

int main(int argc, char** argv) {
  static_assert(kiln::RecipeType<KILN_RECIPE>, "a recipe needs `model` (a Decoder), `stage` and `defaults()`");
  static_assert(kiln::backend::cpu::check<KILN_RECIPE::model>());  // what the CPU kernels support, in sentences
  CLI::App app{std::string("The static plan of recipe ") + KILN_RECIPE_NAME};
  bool summary = false, no_program = false;
  std::string hf_config;
  app.add_flag("--summary", summary, "print `key value` lines");
  app.add_flag("--no-program", no_program, "leave out the op program and its buffers");
  std::string backend = "cpu";
  app.add_option("--backend", backend, "whose op program to print: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
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
      for (const auto& [k, v] : kiln::recipe_summary<KILN_RECIPE>(KILN_RECIPE_NAME)) std::cout << k << " " << v << "\n";
      return 0;
    }
    kiln::print_recipe<KILN_RECIPE>(std::cout, KILN_RECIPE_NAME, !no_program, backend == "cuda");
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (JSON, filesystem)
    std::cerr << "kiln plan: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
