// tests/recipes/sft_tiny.hpp: a tiny program of pretraining then supervised fine-tuning (kiln::SFT) on the fortunes
// corpus with a 512-entry BPE (which reserves the chat tokens): the SFT phase's conversations are generated from
// the corpus (TrainConfig::chat "", kiln/data/chat_synthetic.hpp). tests/sft.cmake runs it.
#pragma once
#include <string_view>

#include "kiln/recipe.hpp"

namespace recipes {

struct sft_tiny {
  using model = kiln::Decoder<kiln::Embedding<kiln::vocab<512>, kiln::hidden<64>, kiln::tied<true>>, kiln::layers<2>,
                              kiln::Attention<kiln::heads<4>, kiln::kv_heads<2>, kiln::RNoPE<2, 10000.0>>,
                              kiln::SwiGLU<kiln::ffn<128>>, kiln::RMSNorm<1e-6>>;
  using phases = kiln::Phases<kiln::Phase<"pretrain", kiln::Stage<kiln::micro_batch<4>, kiln::seq_len<128>>>,
                              kiln::Phase<"sft", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<256>>, kiln::SFT>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c;
    c.lr = 3e-3, c.min_lr = 3e-4, c.warmup = 2, c.steps = 12, c.log_every = 4, c.eval_batches = 2;
    c.tokenizer = "bpe:512";
    return c;
  }
  static kiln::TrainConfig defaults(std::string_view phase) {
    kiln::TrainConfig c = defaults();
    if (phase == "sft") c.lr = 1e-3, c.min_lr = 1e-4, c.steps = 8;
    return c;
  }
};

}  // namespace recipes
