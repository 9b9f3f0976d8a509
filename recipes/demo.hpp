// recipes/demo.hpp: the default recipe `tools/kiln demo` trains on a CPU: SmolLM3's whole program in miniature, on
// the demo's model (recipes/demo_pretrain.hpp) and the fortunes corpus, with data the run generates from it
// (kiln/data/chat_synthetic.hpp):
//   pretrain  the fortunes in two data stages, as SmolLM3's pretraining: the natural mixture, then from 50% of the
//             phase the technical categories and the reasoning documents (additions in the chat template, worked in
//             think mode: mid-training on reasoning data) weighed up
//   long      long-context extension: 4x the sequence length (2 x 1024, the same tokens a step), RoPE theta
//             10,000 -> 100,000
//   sft       SFT on generated conversations (fortune requests by topic, additions in think and no-think mode),
//             the loss on the assistant's tokens only (theta stays 100,000 from the long phase on)
//   apo       APO-zero (SmolLM3's preference loss) on generated pairs (on topic against off, right sum against a
//             carry-forgetting one), then a merge step: 0.9 of its end with 0.1 of the long phase's (the base model,
//             as SmolLM3 mixed its mid-training model back in)
// Numbers are one token a digit (bpe:2048:digits). At each phase's end the run scores the held-out text, a completion
// task, an instruction-following task, held-out preference pairs and held-out additions in both modes, and ends with
// that table (README: "The demo").
#pragma once
#include <string_view>

#include "demo_pretrain.hpp"

namespace recipes {

struct demo : demo_pretrain {
  using phases = kiln::Phases<
      kiln::Phase<"pretrain", demo_pretrain::stage>,
      kiln::Phase<"long", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<1024>>, kiln::RNoPE<4, 100'000.0>>,
      kiln::Phase<"sft", kiln::Stage<kiln::micro_batch<8>, kiln::seq_len<256>>, kiln::RNoPE<4, 100'000.0>, kiln::SFT>,
      kiln::Phase<"apo", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<512>>, kiln::RNoPE<4, 100'000.0>,
                  kiln::APOZero>>;

  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c = demo_pretrain::defaults();
    c.tokenizer = "bpe:2048:digits";
    c.reasoning_documents = 10000;  // 2-digit additions (chat_digits), half in think mode
    c.chat_digits = 2;
    c.reasoning_problems = 30;
    c.eval_tasks = {"generated:completion", "generated:instructions", "generated:preferences"};
    c.eval_task_mcf = false;     // CF only: MCF is at chance at this scale (the playbook's finding), and costs as much
    c.eval_phase_start = false;  // scored at each phase's end (a phase's start is the previous one's end)
    c.eval_every = 0;
    c.prompts = {"The meaning of life is", "What is 47 + 38?", "Tell me a fortune about computers."};
    return c;
  }
  // Budgeted for 10 minutes on 2 cores of the slowest machine seen here, build included (README: "The demo").
  static kiln::TrainConfig defaults(std::string_view phase) {
    kiln::TrainConfig c = defaults();
    if (phase == "pretrain") {
      c.steps = 300;
      c.stages = {{0.0, {{"reasoning", 0.3}}},
                  {0.5, {{"computers", 4.0}, {"linux", 4.0}, {"perl", 4.0}, {"science", 4.0}, {"reasoning", 2.0}}}};
    }
    if (phase == "long") {
      c.steps = 20, c.lr = 5e-4, c.min_lr = 5e-5, c.warmup = 5;
      c.stages = {{0.0, {{"reasoning", 0.3}}}};
    }
    // SFT gets the largest share after pretraining: the column steps are learned there (450 steps: think mode
    // ahead of no-think; 800 after 1200 of pretraining: every held-out addition right in think mode, bench/RESULTS.md)
    if (phase == "sft") c.steps = 450, c.lr = 1e-3, c.min_lr = 1e-4, c.warmup = 10, c.stages = {};
    if (phase == "apo") {
      // a small LR (SmolLM3's APO ran at 1/200 of its pretraining peak): at 5e-4 APO-zero undid the additions SFT
      // taught (pushing a rejected answer down pushes down the steps it shares with the chosen one)
      c.steps = 40, c.lr = 5e-5, c.min_lr = 5e-6, c.warmup = 5, c.beta = 0.1, c.stages = {};
      c.merge = {{"long", 0.1}};
    }
    return c;
  }
};

}  // namespace recipes
