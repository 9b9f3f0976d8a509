// kiln/train/config.hpp: the run-time half of a recipe. Nothing here changes a shape, so every field is a
// command-line override of the recipe's default (`--lr 3e-4 --steps 200`) and sweeping it never recompiles.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/train/guards.hpp"

namespace kiln {

enum class Schedule { constant, cosine, linear, wsd };

struct TrainConfig {
  // optimisation
  double lr = 1e-3;             // peak learning rate
  double min_lr = 0.0;          // floor reached at the end of the decay
  long warmup = 100;            // linear warmup steps (from lr / warmup)
  long steps = 1000;            // optimizer steps
  Schedule schedule = Schedule::cosine;
  double decay_fraction = 0.1;  // WSD: share of the steps spent decaying linearly to min_lr
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  double weight_decay = 0.1;
  // Parameters whose HF name matches one of these (ECMAScript regex, searched) get no weight decay.
  std::vector<std::string> no_decay = {"norm"};
  double clip = 1.0;            // global gradient-norm clip; 0 disables
  int grad_accum = 1;           // micro-batches per optimizer step on each data-parallel rank
  // > 0: the step's micro-batches over all data-parallel ranks (Megatron's global batch); grad_accum is then
  // global_batch / ranks, set when the ranks are known (train_main), so a recipe keeps its batch on any world
  int global_batch = 0;
  double init_std = 0.02;       // normal init of matrices and embeddings; norms start at 1
  uint64_t seed = 1234;
  GuardConfig guard;            // NaN / Inf and loss-spike detection
  // data
  std::string data = "/usr/share/games/fortunes";
  // "": byte-level over text; "bpe:<n>": train a BPE of n entries on the text (cached; "bpe:<n>:digits": every
  // digit a token of its own, as arithmetic wants); a tokenizer.json: `data` is
  // a directory of token shards made with it (tools/kiln tokenize), each shard name's stem a source
  std::string tokenizer;
  std::string cache = "runs/cache";  // prepared tokenizers and shards
  int token_size = 0;                // bytes per token of shards without Kiln metadata (datatrove's): 2, 4; 0: from it
  // Data stages (token data): from `start` (a fraction of the run's tokens) each source weighs its natural share
  // times its boost ("*" sets the default boost), or, when `absolute`, exactly the weight given (unlisted: 0).
  // Empty: one stage, natural shares.
  struct DataStage {
    double start = 0;
    std::vector<std::pair<std::string, double>> boost;
    bool absolute = false;
  };
  std::vector<DataStage> stages;
  int val_every = 20;           // every n-th document (by content hash) is held out
  // Retrieval documents (kiln/data/synthetic.hpp) added to a text corpus as the source "retrieval": a password, up to
  // retrieval_max_chars of the corpus's training documents as filler, the password asked for. 0: none.
  int retrieval_documents = 0;
  int retrieval_max_chars = 2400;
  // Reasoning documents (kiln/data/chat_synthetic.hpp) added to a text corpus as the source "reasoning": additions of
  // chat_digits digits in the chat template, the worked column addition in think mode, the sum alone in no-think mode
  // (a data stage weighs them in: mid-training on reasoning data). 0: none.
  int reasoning_documents = 0;
  // SFT phases (kiln::SFT): the conversations, a jsonl file of {"messages": [{"role", "content"}...]} a line
  // (kiln/data/chat.hpp), or "" for conversations generated from the text corpus (kiln/data/chat_synthetic.hpp:
  // chat_instructions fortune requests by topic and chat_additions additions, half in think mode), made once in the
  // cache.
  std::string chat;
  int chat_instructions = 3000, chat_additions = 3000;
  // Preference phases (kiln::DPO, kiln::APOZero): the pairs, a jsonl file of {"prompt", "chosen", "rejected"} a line
  // (kiln/data/pairs.hpp; TRL's standard and conversational layouts), or "" for pairs generated from the text corpus
  // (chat_synthetic.hpp: the requested topic against another, the right sum against a carry-forgetting one); and
  // beta, the loss's temperature (TRL's; SmolLM3's APO used ~0.1); rpo_alpha, TRL's weight of the RPO term: alpha x
  // the mean negative log-likelihood of the chosen answers' tokens, added to the pairs' mean loss (0: none, TRL's
  // None; the RPO paper uses 1), which keeps the chosen answers likely while the pairs push them apart.
  std::string pairs;
  double beta = 0.1;
  double rpo_alpha = 0;
  // A merge step at this phase's end (SmolLM3's last step: 0.9 of its APO soup with 0.1 of its mid-training model):
  // the weights become (1 - sum w) x this phase's end + sum w x phase k's end, for each (k, w), k an earlier phase
  // of the program (its end kept in <out>/phases/<k>). Empty: none. Recipe-only (kiln/train/merge.hpp's linear).
  std::vector<std::pair<std::string, double>> merge;
  // At each evaluation of an SFT or preference phase: this many additions answered by greedy generation in think and
  // in no-think mode, checked exactly (kiln/eval/chat_probes.hpp; 0: none), of chat_digits digits each.
  int reasoning_problems = 0;
  int chat_digits = 3;
  // Intra-document attention (SmolLM3's): a token attends only to its own document's tokens and its RoPE position
  // restarts at each document. false: a packed row is one sequence (positions 0..T-1, attention across documents).
  bool document_masking = true;
  // cadence and output
  long log_every = 10;
  long eval_every = 0;          // 0: only at the end
  long eval_every_tokens = 0;   // also whenever the phase's tokens pass a multiple of this (0: off): the same token
                                // counts for runs of different batch shapes, as ablations compare them
  int eval_batches = 8;
  // multiple-choice task files (kiln/eval) scored at every evaluation, or generated:completion | instructions |
  // preferences (made from the corpus's held-out documents: train/run_data.hpp, generated_task_file)
  std::vector<std::string> eval_tasks;
  long eval_task_examples = 0;          // the first n examples of each (0: all)
  bool eval_task_mcf = true;            // also the MCF formulation (letters), not only CF (each answer's text)
  // Score the tasks and the additions at a phase's start too (the previous phase's end in the new phase's shape and
  // positions: what a sequence-length or theta change does), not only at its evaluations and its end.
  bool eval_phase_start = true;
  int threads = 0;              // 0: all cores
  double peak_tflops = 0;       // the machine's peak, for MFU in the console (0: unknown, not shown)
  double comm_timeout = 600;    // seconds a rank waits in a collective before the job stops (kiln/parallel)
  std::string out;              // run directory (metrics.jsonl, tb/, checkpoints/); "" = runs/<recipe>
  long checkpoint_every = 0;    // steps between checkpoints (0: at the end and on a stop signal only)
  int keep_checkpoints = 3;
  std::string resume = "auto";  // auto | none | <checkpoint dir>
  bool allow_tokenizer_change = false;  // resuming with another tokenizer than the checkpoint's is an error unless set
  std::vector<std::string> prompts = {};
  int sample_tokens = 120;
  double temperature = 0.8;
  double top_p = 0.95;
};

// Every run-time setting checked before any work starts, each error naming its option and what it accepts.
// `where` is appended to the message (a phase's name, when the recipe has several).
void validate(const TrainConfig& c, const std::string& where = "");

inline const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::constant: return "constant";
    case Schedule::cosine: return "cosine";
    case Schedule::linear: return "linear";
    case Schedule::wsd: return "wsd";
  }
  return "?";
}

}  // namespace kiln

#include <cmath>

#include "kiln/core/error.hpp"

namespace kiln {
inline void validate(const TrainConfig& c, const std::string& where) {
  auto finite = [](double v) { return std::isfinite(v); };
  KILN_CHECK(c.lr > 0 && finite(c.lr), "--lr must be a positive number, got ", c.lr, where);
  KILN_CHECK(c.min_lr >= 0 && c.min_lr <= c.lr, "--min-lr must lie in [0, --lr], got ", c.min_lr, where);
  // steps * tokens per step must stay far from overflow: 1e12 steps is beyond any run
  KILN_CHECK(c.steps > 0 && c.steps <= 1'000'000'000'000L, "--steps must lie in [1, 1e12], got ", c.steps, where);
  KILN_CHECK(c.warmup >= 0, "--warmup must be >= 0 steps, got ", c.warmup, where);
  KILN_CHECK(c.decay_fraction >= 0 && c.decay_fraction <= 1, "--decay-fraction must lie in [0, 1], got ",
             c.decay_fraction, where);
  KILN_CHECK(c.beta1 >= 0 && c.beta1 < 1, "--beta1 must lie in [0, 1), got ", c.beta1, where);
  KILN_CHECK(c.beta2 >= 0 && c.beta2 < 1, "--beta2 must lie in [0, 1), got ", c.beta2, where);
  KILN_CHECK(c.adam_eps > 0 && finite(c.adam_eps), "--adam-eps must be positive, got ", c.adam_eps, where);
  KILN_CHECK(c.weight_decay >= 0 && finite(c.weight_decay), "--weight-decay must be >= 0, got ", c.weight_decay, where);
  KILN_CHECK(c.clip >= 0 && finite(c.clip), "--clip must be >= 0 (0: off), got ", c.clip, where);
  KILN_CHECK(c.grad_accum > 0 && c.grad_accum <= 1'000'000, "--grad-accum must lie in [1, 1e6], got ", c.grad_accum, where);
  KILN_CHECK(c.global_batch >= 0 && c.global_batch <= 1'000'000'000, "--global-batch must lie in [0, 1e9] (0: off), got ",
             c.global_batch, where);
  KILN_CHECK(c.init_std > 0 && finite(c.init_std), "--init-std must be positive, got ", c.init_std, where);
  KILN_CHECK(c.guard.spike_window >= 2 && c.guard.spike_window <= kMaxSpikeWindow, "--spike-window must lie in [2, ",
             kMaxSpikeWindow, "], got ", c.guard.spike_window, where);
  KILN_CHECK(c.guard.max_bad_steps >= 1, "--max-bad-steps must be at least 1, got ", c.guard.max_bad_steps, where);
  KILN_CHECK(c.guard.spike_zscore >= 0, "--spike-zscore must be >= 0 (0: off), got ", c.guard.spike_zscore, where);
  KILN_CHECK(c.val_every >= 2, "--val-every must be at least 2 (every n-th document held out), got ", c.val_every, where);
  KILN_CHECK(c.log_every >= 1, "--log-every must be at least 1, got ", c.log_every, where);
  KILN_CHECK(c.eval_every >= 0, "--eval-every must be >= 0 (0: at the end only), got ", c.eval_every, where);
  KILN_CHECK(c.retrieval_documents >= 0 && c.retrieval_max_chars >= 0, "--retrieval-docs and --retrieval-max-chars "
             "must be >= 0, got ", c.retrieval_documents, " and ", c.retrieval_max_chars, where);
  KILN_CHECK(c.reasoning_documents >= 0, "--reasoning-docs must be >= 0, got ", c.reasoning_documents, where);
  KILN_CHECK(c.beta > 0 && finite(c.beta), "--beta must be a positive number, got ", c.beta, where);
  KILN_CHECK(c.rpo_alpha >= 0 && finite(c.rpo_alpha), "--rpo-alpha must be 0 (none) or a positive number, got ",
             c.rpo_alpha, where);
  KILN_CHECK(c.reasoning_problems >= 0, "--reasoning-problems must be >= 0 (0: none), got ", c.reasoning_problems, where);
  KILN_CHECK(c.chat_digits >= 1 && c.chat_digits <= 9, "--chat-digits must lie in [1, 9], got ", c.chat_digits, where);
  KILN_CHECK(c.chat_instructions >= 0 && c.chat_additions >= 0 && c.chat_instructions + c.chat_additions > 0,
             "--chat-instructions and --chat-additions must be >= 0, and not both 0; got ", c.chat_instructions, " and ",
             c.chat_additions, where);
  KILN_CHECK(c.eval_every_tokens >= 0, "--eval-every-tokens must be >= 0 (0: off), got ", c.eval_every_tokens, where);
  KILN_CHECK(c.eval_batches >= 1, "--eval-batches must be at least 1, got ", c.eval_batches, where);
  KILN_CHECK(c.eval_task_examples >= 0, "--eval-task-examples must be >= 0 (0: all), got ", c.eval_task_examples, where);
  KILN_CHECK(c.threads >= 0, "--threads must be >= 0 (0: all cores), got ", c.threads, where);
  KILN_CHECK(c.comm_timeout > 0 && finite(c.comm_timeout), "--comm-timeout must be positive seconds, got ",
             c.comm_timeout, where);
  KILN_CHECK(c.peak_tflops >= 0, "--peak-tflops must be >= 0 (0: unknown), got ", c.peak_tflops, where);
  KILN_CHECK(c.checkpoint_every >= 0, "--checkpoint-every must be >= 0 (0: at the end only), got ", c.checkpoint_every,
             where);
  KILN_CHECK(c.keep_checkpoints >= 1, "--keep-checkpoints must be at least 1, got ", c.keep_checkpoints, where);
  KILN_CHECK(c.sample_tokens >= 0, "--sample-tokens must be >= 0, got ", c.sample_tokens, where);
  KILN_CHECK(c.temperature >= 0 && finite(c.temperature), "--temperature must be >= 0 (0: greedy), got ", c.temperature,
             where);
  KILN_CHECK(c.top_p > 0 && c.top_p <= 1, "--top-p must lie in (0, 1], got ", c.top_p, where);
  KILN_CHECK(c.token_size == 0 || c.token_size == 2 || c.token_size == 4,
             "--token-size must be 2 (u16), 4 (u32) or 0 (from the shards' metadata), got ", c.token_size, where);
  for (size_t k = 0; k < c.stages.size(); ++k) {
    KILN_CHECK(c.stages[k].start >= 0 && c.stages[k].start < 1, "data stage ", k + 1,
               " (--stage): its start must lie in [0, 1) of the run, got ", c.stages[k].start, where);
    KILN_CHECK(k == 0 || c.stages[k].start > c.stages[k - 1].start, "data stage ", k + 1, " (--stage) starts at ",
               c.stages[k].start, ", not after stage ", k, " (", c.stages[k - 1].start, ")", where);
  }
}
}  // namespace kiln
