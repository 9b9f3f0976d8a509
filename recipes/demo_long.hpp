// recipes/demo_long.hpp: demo_pretrain with a long-context phase, as SmolLM3's pretraining ends (at the demo's
// scale): the demo's 1200 steps at 8 x 256, then 200 steps at 4x the sequence length (2 x 1024, the same tokens a
// step) with RoPE theta 10,000 -> 100,000. Both phases read the fortunes plus 1,500 retrieval documents (the source
// "retrieval", kiln/data/synthetic.hpp: a password, 0 to 2,400 characters of fortunes, the question), which the long
// phase weighs three times: at 256 tokens only the ones with short filler fit a row, at 1024 nearly all do.
// `tools/kiln make-task --retrieval 1600:2400` makes the probe (the password 600 to 900 tokens back); scored with
// --eval-task at the end of the 256-token phase, the start of the long one (its new shape and theta) and its end, it
// shows what the long phase taught (README, "A long-context phase at the demo's scale").
#pragma once
#include <string_view>

#include "demo_pretrain.hpp"

namespace recipes {

struct demo_long : demo_pretrain {
  using phases = kiln::Phases<
      kiln::Phase<"pretrain", demo_pretrain::stage>,
      kiln::Phase<"long", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<1024>>, kiln::RNoPE<4, 100'000.0>>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c = demo_pretrain::defaults();
    c.retrieval_documents = 4000;
    c.retrieval_max_chars = 2400;
    return c;
  }
  static kiln::TrainConfig defaults(std::string_view phase) {
    kiln::TrainConfig c = defaults();
    if (phase == "long") {
      c.steps = 200, c.lr = 5e-4, c.min_lr = 5e-5, c.warmup = 20, c.eval_every = 100;
      c.stages = {{0.0, {{"retrieval", 3.0}}}};
    }
    return c;
  }
};

}  // namespace recipes
