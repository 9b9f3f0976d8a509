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
  int grad_accum = 1;           // micro-batches per optimizer step
  double init_std = 0.02;       // normal init of matrices and embeddings; norms start at 1
  uint64_t seed = 1234;
  GuardConfig guard;            // NaN / Inf and loss-spike detection
  // data
  std::string data = "/usr/share/games/fortunes";
  // "": byte-level over text; "bpe:<n>": train a BPE of n entries on the text (cached); a tokenizer.json: `data` is
  // a directory of token shards made with it (tools/kiln tokenize), each shard name's stem a source
  std::string tokenizer;
  std::string cache = "runs/cache";  // prepared tokenizers and shards
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
  // cadence and output
  long log_every = 10;
  long eval_every = 0;          // 0: only at the end
  int eval_batches = 8;
  int threads = 0;              // 0: all cores
  double peak_tflops = 0;       // the machine's peak, for MFU in the console (0: unknown, not shown)
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
