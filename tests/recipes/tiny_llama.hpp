// tests/recipes/tiny_llama.hpp: a test recipe whose model has the shape of the tiny Llama in
// tests/fixtures/hf/tiny_llama (made by tests/reference/make_hf_fixtures.py with transformers' LlamaForCausalLM):
// vocab 128, hidden 64, 2 layers, 4 heads / 2 KV heads (head_dim 16), ffn 128, RMSNorm eps 1e-5, RoPE theta 500000
// on every layer, untied embeddings. tests/hf.cmake builds train_tiny_llama; tests/hf_interop_test.sh imports the
// fixture with it and compares Kiln's logits with transformers'.
#pragma once
#include "kiln/recipe.hpp"

namespace recipes {

struct tiny_llama {
  using model = kiln::Decoder<
      kiln::Embedding<kiln::vocab<128>, kiln::hidden<64>, kiln::tied<false>>,
      kiln::layers<2>,
      kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RoPE<500000.0>>,
      kiln::SwiGLU<kiln::ffn<128>>,
      kiln::RMSNorm<1e-5>>;
  using stage = kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<64>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.steps = 10;
    c.resume = "auto";
    return c;
  }
};

}  // namespace recipes
