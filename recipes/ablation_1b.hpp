// recipes/ablation_1b.hpp: the Smol Training Playbook's 1B ablation baseline (../shared/FACTS.md), a
// Llama-3.2-style model: hidden 2048, 16 layers, 32 heads / 8 KV heads, ffn 8192, RoPE theta 50,000, tied
// embeddings, sequence 4096; 1,235,814,400 parameters. AdamW 0.9/0.95/1e-8, LR 5e-4, warmup 2000, cosine to
// 5e-5, clip 1.0, ~1.5M tokens per step (4 x 4096 x 96 accumulated), 20,000 steps.
// Ablations change one thing against it: see recipes/ablation_1b_mqa.hpp.
#pragma once
#include "kiln/recipe.hpp"

namespace recipes {

struct ablation_1b {
  using model = kiln::Decoder<
      kiln::Embedding<kiln::vocab<128256>, kiln::hidden<2048>, kiln::tied<true>>,
      kiln::layers<16>,
      kiln::Attention<kiln::heads<32>, kiln::kv_heads<8>, kiln::RoPE<50000.0>>,
      kiln::SwiGLU<kiln::ffn<8192>>,
      kiln::RMSNorm<1e-5>>;
  using stage = kiln::Stage<kiln::micro_batch<4>, kiln::seq_len<4096>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.lr = 5e-4;
    c.min_lr = 5e-5;
    c.schedule = kiln::Schedule::cosine;
    c.warmup = 2000;
    c.steps = 20'000;
    c.beta1 = 0.9, c.beta2 = 0.95, c.adam_eps = 1e-8;
    c.weight_decay = 0.1;
    c.no_decay = {"embed_tokens", "norm"};
    c.clip = 1.0;
    c.global_batch = 96;  // micro-batches a step over all data-parallel ranks
    c.log_every = 1;
    return c;
  }
};

}  // namespace recipes
