// recipes/ablations/demo_rope.hpp: demo_pretrain (the demo's pretraining) with one change, RoPE on every layer instead
// of NoPE on every 4th (SmolLM3's RNoPE). The playbook found the two equal at short context, NoPE layers better for
// long context.
#pragma once
#include "../demo_pretrain.hpp"

namespace recipes {

struct demo_rope : demo_pretrain {
  using model = kiln::with<demo_pretrain::model, kiln::RoPE<10000.0>>;
};

}  // namespace recipes
