// recipes/smollm3_3b.hpp: SmolLM3-3B exactly (../shared/FACTS.md; HF configuration_smollm3.py, nanotron stage1).
// 3,075,098,624 parameters: vocab 128256, hidden 2048, 36 layers, 16 heads / 4 KV heads, head_dim 128, ffn 11008,
// RMSNorm 1e-6, tied embeddings, NoPE on every 4th layer (0-indexed 3, 7, ..., 35), RoPE theta 50,000 (4k stages).
// Pretraining: AdamW 0.9/0.95/1e-8, wd 0.1 (not on embeddings), clip 1.0, peak LR 2e-4, WSD with 2000 warmup steps
// and the last ~11% (522k of 4.72M steps) decaying to 0; global batch 2,359,296 tokens = 192 x 3 x 4096 (192
// micro-batches shared among the data-parallel ranks: one each on SmolLM3's DP 192, all 192 on one GPU).
#pragma once
#include "kiln/recipe.hpp"

namespace recipes {

struct smollm3_3b {
  using model = kiln::Decoder<
      kiln::Embedding<kiln::vocab<128256>, kiln::hidden<2048>, kiln::tied<true>>,
      kiln::layers<36>,
      kiln::Attention<kiln::heads<16>, kiln::kv_heads<4>, kiln::head_dim<128>, kiln::RNoPE<4, 50000.0>>,
      kiln::SwiGLU<kiln::ffn<11008>>,
      kiln::RMSNorm<1e-6>>;
  using stage = kiln::Stage<kiln::micro_batch<3>, kiln::seq_len<4096>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.lr = 2e-4;
    c.min_lr = 0.0;
    c.schedule = kiln::Schedule::wsd;
    c.warmup = 2000;
    c.steps = 4'720'000;
    c.decay_fraction = 522'000.0 / 4'720'000.0;
    c.beta1 = 0.9, c.beta2 = 0.95, c.adam_eps = 1e-8;
    c.weight_decay = 0.1;
    c.no_decay = {"embed_tokens", "norm"};
    c.clip = 1.0;
    c.global_batch = 192;
    c.init_std = 0.02;
    c.log_every = 1;
    // Data: token shards made with the Llama-3.2 tokenizer (tools/kiln tokenize) in <data>/{web,code,math,heldout}.ds.
    // Three 4k stages of ~8T / 2T / 1.1T tokens with web/code/math 85/12/3, 75/15/10, 63/24/13 (web includes the
    // 12% multilingual share). The long-context stages (4k -> 32k -> 64k, RoPE theta 2M / 5M) change the stage shape
    // and the positional policy: they are separate recipes, still to be written.
    c.data = "data/smollm3";
    c.tokenizer = "data/smollm3/tokenizer.json";
    c.stages = {{0.0, {{"web", 0.85}, {"code", 0.12}, {"math", 0.03}}, true},
                {8.0 / 11.1, {{"web", 0.75}, {"code", 0.15}, {"math", 0.10}}, true},
                {10.0 / 11.1, {{"web", 0.63}, {"code", 0.24}, {"math", 0.13}}, true}};
    return c;
  }
};

}  // namespace recipes
