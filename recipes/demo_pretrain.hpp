// recipes/demo_pretrain.hpp: the demo's model pretrained alone: a small SmolLM3-shaped model (GQA 4 heads / 2 KV
// heads, NoPE on every 4th layer, tied embeddings, intra-document attention, SwiGLU, RMSNorm) on the fortunes
// corpus: a 2048-entry byte-level BPE trained on it, each category file a data source. recipes/demo.hpp builds the
// whole program on it; this one-phase recipe is what the ablations (recipes/ablations/), the parallel layouts' and
// backends' tests and the benchmarks compare.
#pragma once
#include "kiln/recipe.hpp"

namespace recipes {

struct demo_pretrain {
  using model = kiln::Decoder<
      kiln::Embedding<kiln::vocab<2048>, kiln::hidden<192>, kiln::tied<true>>,
      kiln::layers<8>,
      kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RNoPE<4, 10000.0>>,
      kiln::SwiGLU<kiln::ffn<512>>,
      kiln::RMSNorm<1e-6>>;
  using stage = kiln::Stage<kiln::micro_batch<8>, kiln::seq_len<256>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.lr = 2e-3;
    c.min_lr = 1e-4;
    c.schedule = kiln::Schedule::cosine;
    c.warmup = 50;
    c.steps = 1200;
    c.weight_decay = 0.1;
    c.no_decay = {"embed_tokens", "norm"};
    c.clip = 1.0;
    c.data = "/usr/share/games/fortunes";
    c.tokenizer = "bpe:2048";  // trained on the corpus at the first run, then cached (runs/cache)
    // Two data stages, as SmolLM3's pretraining raised code and math late: the natural mixture of the ~40 fortune
    // categories, then from 70% of the run the technical ones count four times.
    c.stages = {{0.0, {}}, {0.7, {{"computers", 4.0}, {"linux", 4.0}, {"perl", 4.0}, {"science", 4.0}}}};
    c.resume = "none";         // the demo starts over each time (its checkpoints still allow --resume auto)
    c.log_every = 20;
    c.eval_every = 400;
    c.prompts = {"The meaning of life is", "Q: How many programmers does it take", "A computer", "Love is"};
    return c;
  }
};

}  // namespace recipes
