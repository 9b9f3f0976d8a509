// tests/recipes/demo_zero1.hpp: demo_pretrain (the demo's pretraining) with its optimizer state sharded over its
// data-parallel ranks (ZeRO-1): the layout is the one thing that changes, so its checkpoints resume under the demo's
// trainer and back (the same program). tests/dp_test.sh runs it on 2 MPI ranks against the demo's DP 2.
#pragma once
#include "recipes/demo_pretrain.hpp"

namespace recipes {

struct demo_zero1 : demo_pretrain {
  using layout = kiln::Layout<kiln::DP<kiln::rest>, kiln::ZeRO<1>>;
};

}  // namespace recipes
