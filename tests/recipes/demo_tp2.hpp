// tests/recipes/demo_tp2.hpp: demo_pretrain (the demo's pretraining) with a tensor-parallel degree of 2 (tests:
// parallel.tp2 trains it on 2 MPI ranks against the demo in one process; plan.ranks_tp2 prints its per-rank plan).
#pragma once
#include "recipes/demo_pretrain.hpp"

namespace recipes {

struct demo_tp2 : demo_pretrain {
  using layout = kiln::Layout<kiln::DP<kiln::rest>, kiln::TP<2>>;
};

}  // namespace recipes
