// recipes/smollm3_3b.hpp: SmolLM3-3B exactly (../shared/FACTS.md; HF configuration_smollm3.py, nanotron stage1).
// 3,075,098,624 parameters: vocab 128256, hidden 2048, 36 layers, 16 heads / 4 KV heads, head_dim 128, ffn 11008,
// RMSNorm 1e-6, tied embeddings, NoPE on every 4th layer (0-indexed 3, 7, ..., 35), RoPE theta 50,000 (4k stages).
// Its whole pretraining program, three phases:
//   pretrain  4k context: AdamW 0.9/0.95/1e-8, wd 0.1 (not on embeddings), clip 1.0, peak LR 2e-4, WSD with 2000
//             warmup steps and the last ~11% (522k of 4.72M steps) decaying to 0; global batch 2,359,296 tokens =
//             192 x 3 x 4096 (192 micro-batches shared among the data-parallel ranks: one each on SmolLM3's DP 192,
//             all 192 on one GPU); three data stages of ~8T / 2T / 1.1T tokens (web/code/math 85/12/3, 75/15/10,
//             63/24/13)
//   long32k   4k -> 32k with RoPE theta 2,000,000 (the config and the playbook; the blog says 1.5M), ~50B tokens
//   long64k   32k -> 64k with RoPE theta 5,000,000, ~50B tokens
// The long phases keep the global batch's 2,359,296 tokens (72 x 32768, 36 x 65536) and train on the decay mixture,
// as the blog describes ("both stages upsampled math, code, and reasoning data": the third stage's 63/24/13 here).
// Their learning rate is published nowhere this recipe could read: it uses 2000 warmup steps to 2e-5, then linear
// decay to 0 over the phase (an assumption: override with --lr / --schedule / --warmup on the phase's run).
// At inference SmolLM3 reaches 128k with YaRN factor 2 over 65,536 positions, which the model DSL writes
// kiln::YaRN<kiln::RNoPE<4, 5'000'000.0>, 2.0, 65536> (a recipe whose model or phase names it exports that
// rope_scaling in config.json).
#pragma once
#include <string_view>

#include "kiln/recipe.hpp"

namespace recipes {

struct smollm3_3b {
  using model = kiln::Decoder<
      kiln::Embedding<kiln::vocab<128256>, kiln::hidden<2048>, kiln::tied<true>>,
      kiln::layers<36>,
      kiln::Attention<kiln::heads<16>, kiln::kv_heads<4>, kiln::head_dim<128>, kiln::RNoPE<4, 50000.0>>,
      kiln::SwiGLU<kiln::ffn<11008>>,
      kiln::RMSNorm<1e-6>>;
  using phases = kiln::Phases<
      kiln::Phase<"pretrain", kiln::Stage<kiln::micro_batch<3>, kiln::seq_len<4096>>>,
      kiln::Phase<"long32k", kiln::Stage<kiln::micro_batch<1>, kiln::seq_len<32768>>, kiln::RNoPE<4, 2'000'000.0>>,
      kiln::Phase<"long64k", kiln::Stage<kiln::micro_batch<1>, kiln::seq_len<65536>>, kiln::RNoPE<4, 5'000'000.0>>>;

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
    // 12% multilingual share).
    c.data = "data/smollm3";
    c.tokenizer = "data/smollm3/tokenizer.json";
    c.stages = {{0.0, {{"web", 0.85}, {"code", 0.12}, {"math", 0.03}}, true},
                {8.0 / 11.1, {{"web", 0.75}, {"code", 0.15}, {"math", 0.10}}, true},
                {10.0 / 11.1, {{"web", 0.63}, {"code", 0.24}, {"math", 0.13}}, true}};
    return c;
  }
  static kiln::TrainConfig defaults(std::string_view phase) {
    kiln::TrainConfig c = defaults();
    if (phase == "pretrain") return c;
    constexpr double tokens = 50e9, per_step = 2'359'296.0;  // ~50B tokens a phase, the pretraining's global batch
    c.global_batch = phase == "long32k" ? 72 : 36;           // x 32768 or x 65536 tokens
    c.steps = long(tokens / per_step + 0.5);                   // 21,193
    c.lr = 2e-5, c.min_lr = 0.0, c.schedule = kiln::Schedule::linear, c.warmup = 2000;  // assumed (see the top)
    c.stages = {{0.0, {{"web", 0.63}, {"code", 0.24}, {"math", 0.13}}, true}};
    return c;
  }
};

}  // namespace recipes
