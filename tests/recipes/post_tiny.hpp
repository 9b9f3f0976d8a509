// tests/recipes/post_tiny.hpp: sft_tiny's program with a preference phase after SFT (kiln::APOZero, the loss
// SmolLM3 used), on pairs generated from the corpus (TrainConfig::pairs ""), ending in a merge step as SmolLM3's
// post-training did (0.9 of the APO end with 0.1 of an earlier model: here the SFT end). tests/sft.cmake runs it.
#pragma once
#include <string_view>

#include "sft_tiny.hpp"

namespace recipes {

struct post_tiny : sft_tiny {
  using phases = kiln::Phases<kiln::Phase<"pretrain", kiln::Stage<kiln::micro_batch<4>, kiln::seq_len<128>>>,
                              kiln::Phase<"sft", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<256>>, kiln::SFT>,
                              kiln::Phase<"apo", kiln::Stage<kiln::micro_batch<1>, kiln::seq_len<512>>, kiln::APOZero>>;
  static kiln::TrainConfig defaults() { return sft_tiny::defaults(); }
  static kiln::TrainConfig defaults(std::string_view phase) {
    kiln::TrainConfig c = sft_tiny::defaults(phase);
    if (phase == "apo") c.lr = 3e-4, c.min_lr = 3e-5, c.steps = 8, c.beta = 0.1, c.merge = {{"sft", 0.1}};
    return c;
  }
};

}  // namespace recipes
