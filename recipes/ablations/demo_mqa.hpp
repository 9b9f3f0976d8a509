// recipes/ablations/demo_mqa.hpp: demo_pretrain (the demo's pretraining) with one change, multi-query attention (1 KV
// head for its 4 query heads instead of 2). The playbook found MQA underperform GQA and MHA at 1B. `tools/kiln ablate`
// compares it.
#pragma once
#include "../demo_pretrain.hpp"

namespace recipes {

struct demo_mqa : demo_pretrain {
  using model = kiln::with<demo_pretrain::model, kiln::kv_heads<1>>;
};

}  // namespace recipes
