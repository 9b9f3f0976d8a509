// tests/recipes/demo_tp2.hpp: the demo recipe with a tensor-parallel degree of 2, for the per-rank plan only
// (tests: plan.ranks_tp2): the trainer's tensor parallelism is not built, so no trainer is made of it.
#pragma once
#include "recipes/demo.hpp"

namespace recipes {

struct demo_tp2 : demo {
  using layout = kiln::Layout<kiln::DP<kiln::rest>, kiln::TP<2>>;
};

}  // namespace recipes
