// recipes/ablations/demo_zloss.hpp: demo_pretrain (the demo's pretraining) with one change, z-loss 1e-4 (PaLM's: 1e-4 x
// logsumexp(logits)^2 per token, which keeps the logits' scale in check). The playbook found no effect at its scale and
// left it out of SmolLM3 for its cost in throughput.
#pragma once
#include "../demo_pretrain.hpp"

namespace recipes {

struct demo_zloss : demo_pretrain {
  using model = kiln::with<demo_pretrain::model, kiln::z_loss<1e-4>>;
};

}  // namespace recipes
