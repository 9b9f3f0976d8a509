// recipes/ablations/demo_rope.hpp: the demo with one change, RoPE on every layer instead of NoPE on every 4th
// (SmolLM3's RNoPE). The playbook found the two equal at short context, NoPE layers better for long context.
#pragma once
#include "../demo.hpp"

namespace recipes {

struct demo_rope : demo {
  using model = kiln::with<demo::model, kiln::RoPE<10000.0>>;
};

}  // namespace recipes
