// recipes/ablations/demo_untied.hpp: demo_pretrain (the demo's pretraining) with one change, an LM head of its own
// instead of the embedding table (2048 x 192 = 393,216 more parameters, 11%). The playbook found tied embeddings, with
// the parameters spent on depth, better.
#pragma once
#include "../demo_pretrain.hpp"

namespace recipes {

struct demo_untied : demo_pretrain {
  using model = kiln::with<demo_pretrain::model, kiln::tied<false>>;
};

}  // namespace recipes
