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
//   apo       APO-zero (SmolLM3's preference loss) with TRL's RPO term on generated pairs (on topic against off,
//             right sum against a carry-forgetting one), then a merge step: 0.97 of its end with 0.03 of the long
//             phase's (the base model, as SmolLM3 mixed 0.1 of its mid-training model back in)
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
    // SFT gets the largest share after pretraining: the column steps are learned there, from 1,000 fortune requests
    // and 3,000 additions (with 3,000 requests think mode reached 0.25 of 100 held-out additions, with 1,000 0.85;
    // bench/RESULTS.md)
    if (phase == "sft") {
      c.steps = 450, c.lr = 1e-3, c.min_lr = 1e-4, c.warmup = 10, c.stages = {};
      c.chat_instructions = 1000, c.chat_additions = 3000;
    }
    if (phase == "apo") {
      // a small LR (1/50 of SFT's; SmolLM3's APO ran at 1/20 of its SFT's), and TRL's rpo_alpha 1: APO-zero alone
      // lowers the chosen answers' likelihood too while it pushes the rejected ones further down, and took think
      // mode's additions from 0.25 to 0.05; with the chosen answers' NLL added they stay (bench/RESULTS.md).
      // The merge takes 0.03 of the long phase's end, where SmolLM3 took 0.1 of its mid-training model: this one
      // has not learned the additions, and 0.1 of it took them from 0.85 to 0.14 (0.05: 0.39; 0.03: 0.61)
      c.steps = 40, c.lr = 2e-5, c.min_lr = 2e-6, c.warmup = 5, c.beta = 0.1, c.rpo_alpha = 1.0, c.stages = {};
      c.merge = {{"long", 0.03}};
    }
    return c;
  }
};

}  // namespace recipes
