// recipes/ablation_1b_mqa.hpp: the 1B baseline with one change, multi-query attention (1 KV head instead of 8).
// The playbook found MQA (and 2-KV-head GQA) underperform MHA, while 2/4/8 groups match it.
// `tools/kiln plan recipes/ablation_1b.hpp recipes/ablation_1b_mqa.hpp` prints what differs.
#pragma once
#include "ablation_1b.hpp"

namespace recipes {

struct ablation_1b_mqa : ablation_1b {
  using model = kiln::with<ablation_1b::model, kiln::kv_heads<1>>;
};

}  // namespace recipes
