// tests/recipes/two_phase.hpp: a test recipe whose program has two phases, as a long-context extension does: a
// short-context phase, then a longer sequence with a new RoPE theta (the parameter table stays the same). Byte-level
// data from the fortunes corpus. tests/phases.cmake builds train_two_phase and runs it phase by phase (--phase).
#pragma once
#include <string_view>

#include "kiln/recipe.hpp"

namespace recipes {

struct two_phase {
  using model = kiln::Decoder<kiln::Embedding<kiln::vocab<320>, kiln::hidden<64>, kiln::tied<true>>, kiln::layers<2>,
                              kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RNoPE<2, 10000.0>>,
                              kiln::SwiGLU<kiln::ffn<128>>, kiln::RMSNorm<1e-6>>;
  using phases = kiln::Phases<
      kiln::Phase<"short", kiln::Stage<kiln::micro_batch<4>, kiln::seq_len<64>>>,
      kiln::Phase<"long", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<128>>, kiln::RNoPE<2, 500000.0>>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.lr = 3e-3, c.min_lr = 3e-4, c.warmup = 2, c.steps = 8, c.log_every = 2, c.eval_batches = 2;
    c.tokenizer = "";  // byte-level
    c.sample_tokens = 0;
    return c;
  }
  static kiln::TrainConfig defaults(std::string_view phase) {
    kiln::TrainConfig c = defaults();
    if (phase == "long") c.steps = 4, c.lr = 1e-3, c.warmup = 1;  // the extension: fewer steps, a lower peak
    return c;
  }
};

}  // namespace recipes
