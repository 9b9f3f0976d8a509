// tests/recipes/tiny_smollm3.hpp: a test recipe of the shape of tests/fixtures/hf/tiny_smollm3 (saved by transformers'
// own SmolLM3ForCausalLM, tests/reference/make_hf_smollm3_fixture.py): vocab 128, hidden 64, 4 layers, 4 heads /
// 2 KV heads, ffn 128, RMSNorm 1e-6, RoPE theta 50,000 with NoPE on every 4th layer (SmolLM3's rule), tied embeddings.
#pragma once
#include "kiln/recipe.hpp"

namespace recipes {

struct tiny_smollm3 {
  using model = kiln::Decoder<
      kiln::Embedding<kiln::vocab<128>, kiln::hidden<64>, kiln::tied<true>>,
      kiln::layers<4>,
      kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RNoPE<4, 50000.0>>,
      kiln::SwiGLU<kiln::ffn<128>>,
      kiln::RMSNorm<1e-6>>;
  using stage = kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<64>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.steps = 10;
    return c;
  }
};

}  // namespace recipes
