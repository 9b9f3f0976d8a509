// tests/recipes/demo_zero1.hpp: the demo recipe with its optimizer state sharded over its data-parallel ranks
// (ZeRO-1): the layout is the one thing that changes, so its checkpoints resume under the demo's trainer and back
// (the same program). tests/dp_test.sh runs it on 2 MPI ranks against the demo's DP 2.
#pragma once
#include "recipes/demo.hpp"

namespace recipes {

struct demo_zero1 : demo {
  using layout = kiln::Layout<kiln::DP<kiln::rest>, kiln::ZeRO<1>>;
};

}  // namespace recipes
