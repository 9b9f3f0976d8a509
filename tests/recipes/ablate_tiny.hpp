// tests/recipes/ablate_tiny.hpp: the base of the ablation runner's test (tests/ablate_test.sh): a tiny byte-level
// model on the fortunes corpus; ablate_tiny_mqa.hpp changes its KV heads.
#pragma once
#include "kiln/recipe.hpp"

namespace recipes {

struct ablate_tiny {
  using model = kiln::Decoder<kiln::Embedding<kiln::vocab<320>, kiln::hidden<64>, kiln::tied<true>>, kiln::layers<2>,
                              kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RNoPE<2, 10000.0>>,
                              kiln::SwiGLU<kiln::ffn<128>>, kiln::RMSNorm<1e-6>>;
  using stage = kiln::Stage<kiln::micro_batch<4>, kiln::seq_len<128>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.lr = 3e-3, c.min_lr = 3e-4, c.warmup = 2, c.steps = 12, c.log_every = 4, c.eval_batches = 2;
    c.tokenizer = "";  // byte-level
    return c;
  }
};

}  // namespace recipes
