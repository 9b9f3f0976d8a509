// tests/recipes/ablate_tiny_mqa.hpp: ablate_tiny with one KV head (the ablation runner's test).
#pragma once
#include "ablate_tiny.hpp"

namespace recipes {

struct ablate_tiny_mqa : ablate_tiny {
  using model = kiln::with<ablate_tiny::model, kiln::kv_heads<1>>;
};

}  // namespace recipes
