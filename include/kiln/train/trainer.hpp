// kiln/train/trainer.hpp: the training loop of one compiled recipe over any backend: Trainer<Recipe, Backend>.
//   per step: grad = 0; for each of grad_accum micro-batches: forward + backward (gradients accumulate, each
//   scaled by 1 / targets in the global batch); the guard judges loss and gradient norm (a bad step is skipped,
//   repeated bad steps roll back, guards.hpp); clip by global norm; AdamW with the schedule's learning rate.
// The backend owns parameters, gradients, optimizer state and the activation arena; zero-grad, forward/backward,
// the norm and the fused AdamW update are its calls, and the host reads the loss and the norm once per step. This
// file includes no kernel and assumes nothing about where the backend keeps its memory. A Backend provides
//   state<M>           init(std, seed), zero_grad(), grad_norm(), set_decay(ranges), adamw(AdamWStep),
//                      host(Tensor) / host_mut(Tensor) / commit(Tensor) for checkpoints
//   executor<M, B, T>  forward_backward(state, batch, grad_scale) -> summed loss; forward(state, batch) -> summed loss
//   decoder<M, MaxT>   step(state, token) -> logits (generation)
// Console: step, loss, lr, grad norm, tokens/s, GFLOP/s (the work really done: document masking shortens the
// attention), ETA; held-out loss at eval points and at the end.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kiln/backend/batch.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/rows.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/guards.hpp"
#include "kiln/train/optimizer.hpp"
#include "kiln/train/schedule.hpp"

namespace kiln {
namespace backend {
struct Cpu;  // the default backend (kiln/backend/cpu.hpp); the translation unit that builds a trainer includes it
}

// The B*T int32 arrays of one micro-batch, owned.
template <int B, int T>
struct HostBatch {
  std::vector<int32_t> tokens = std::vector<int32_t>(size_t(B) * T), targets = tokens, positions = tokens,
                       doc_start = tokens;
  backend::Batch view() const { return {tokens.data(), targets.data(), positions.data(), doc_start.data()}; }
  void fill(data::RowSource& p) { p.next(B, T, tokens.data(), targets.data(), positions.data(), doc_start.data()); }
  void fill(data::Packer& p) { p.next(B, T, tokens.data(), targets.data(), positions.data(), doc_start.data()); }
  long count_targets() const {
    long n = 0;
    for (int32_t t : targets) n += t >= 0;
    return n;
  }
  // Keys visible to all queries together (i - doc_start + 1 summed): the attention's real work.
  double attention_context() const {
    double n = 0;
    for (size_t k = 0; k < doc_start.size(); ++k) n += double(k % T) - doc_start[k] + 1;
    return n;
  }
};

// Resident set size of this process, for the console line.
inline std::string resident_memory() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  char b[32];
  std::snprintf(b, sizeof b, "%.0f MiB", double(resident) * double(sysconf(_SC_PAGESIZE)) / 1048576.0);
  return b;
}

inline std::string format_duration(double s) {
  char b[32];
  long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  return b;
}

template <class Recipe, class Backend = backend::Cpu>
class Trainer {
 public:
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  static constexpr int B = S::micro_batch, T = S::seq_len;
  using State = typename Backend::template state<M>;
  using Executor = typename Backend::template executor<M, B, T>;

  struct Log {
    long step;
    double loss, lr, grad_norm, tokens_per_s;
    bool skipped;
  };

  // Trains on `train`; evaluates on the fresh streams `make_eval` returns (the same rows every time).
  Trainer(const TrainConfig& c, std::unique_ptr<data::RowSource> train,
          std::function<std::unique_ptr<data::RowSource>()> make_eval)
      : c_(c),
        guard_(c.guard),
        state_(std::make_unique<State>()),
        exec_(std::make_unique<Executor>()),
        train_(std::move(train)),
        make_eval_(std::move(make_eval)) {
    KILN_CHECK(c.steps > 0, "--steps must be positive, got ", c.steps);
    KILN_CHECK(c.grad_accum > 0, "--grad-accum must be positive, got ", c.grad_accum);
    KILN_CHECK(c.lr > 0 && std::isfinite(c.lr), "--lr must be a positive number, got ", c.lr);
    state_->init(c.init_std, c.seed);
    state_->set_decay(decay_ranges<M>(c.no_decay));
  }

  // In-memory byte-level documents: training documents reshuffled each epoch, held-out ones in order.
  Trainer(const TrainConfig& c, const data::Corpus& corpus)
      : Trainer(c, std::make_unique<data::PackedBytes>(&corpus.train, c.seed, true),
                [&corpus] { return std::make_unique<data::PackedBytes>(&corpus.val, 0, false); }) {}

  // Called after every step with the step number (1-based); returns true when the trainer must stop (a stop
  // signal). Checkpointing plugs in here; `rollback` restores the last checkpoint and returns false if none.
  std::function<bool(long step)> after_step;
  std::function<bool()> rollback;
  // Every step's record (metrics files), and every held-out evaluation.
  std::function<void(const Log&)> on_step;
  std::function<void(long step, double val_loss)> on_eval;

  // Runs the remaining steps; `on_log` sees every logged step (tests use it), `quiet` silences the console.
  // Returns false when stopped early by after_step.
  bool run(bool quiet = false, const std::function<void(const Log&)>& on_log = {}) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const long first = step_;
    auto last = t0;
    long tokens_since = 0;
    double flops_since = 0;
    std::vector<HostBatch<B, T>> micro(size_t(c_.grad_accum));
    while (step_ < c_.steps) {
      const long s = step_;
      long targets = 0;
      for (auto& mb : micro) {
        mb.fill(*train_);
        targets += mb.count_targets();
        flops_since += plan::Flops<M, S>::train_flops(double(B) * T, mb.attention_context());
      }
      state_->zero_grad();
      double loss_sum = 0;
      const float scale = targets ? 1.0f / float(targets) : 0.0f;
      for (auto& mb : micro) loss_sum += exec_->forward_backward(*state_, mb.view(), scale);
      const double loss = targets ? loss_sum / double(targets) : 0.0;
      const double norm = state_->grad_norm();
      const double lr = learning_rate(c_, s);
      const double z = guard_.zscore(loss);
      const auto verdict = guard_.judge(loss, norm);
      const bool skipped = verdict != LossGuard::Verdict::ok;
      if (!skipped) state_->adamw(adamw_step(c_, lr, norm, ++updates_));
      losses_.push_back(loss);
      ++step_;
      tokens_since += long(B) * T * c_.grad_accum;
      if (skipped && !quiet) {
        if (verdict == LossGuard::Verdict::not_finite)
          std::printf("step %6ld: loss %g, grad norm %g not finite: step skipped (%d bad in a row)\n", s + 1, loss, norm,
                      guard_.bad_in_a_row());
        else
          std::printf("step %6ld: loss spike %.4f (z = %.1f over the last %d steps > %.1f): step skipped (%d bad in a row)\n",
                      s + 1, loss, z, c_.guard.spike_window, c_.guard.spike_zscore, guard_.bad_in_a_row());
      }
      if (guard_.must_roll_back()) {
        const int bad = guard_.bad_in_a_row();
        KILN_CHECK(rollback && rollback(), bad, " bad steps in a row up to step ", s + 1,
                   " and no checkpoint to roll back to: stopping (lower --lr, raise --spike-zscore, or check the data)");
        guard_.clear_bad();
        if (!quiet)
          std::printf("step %6ld: %d bad steps in a row: rolled back to the checkpoint of step %ld; the data goes on "
                      "from here, so the offending batches are not replayed\n", s + 1, bad, step_);
      }
      const auto now_step = clock::now();
      if (on_step) {
        const double dt = std::chrono::duration<double>(now_step - last_step_time_).count();
        on_step({s + 1, loss, lr, norm, dt > 0 ? double(B) * T * c_.grad_accum / dt : 0, skipped});
      }
      last_step_time_ = now_step;
      const bool log_now = (s + 1) % c_.log_every == 0 || s == first || s + 1 == c_.steps;
      if (log_now) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last).count();
        const double tps = dt > 0 ? double(tokens_since) / dt : 0;
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        const double eta = elapsed / double(step_ - first) * double(c_.steps - step_);
        if (!quiet) {
          const double flops = dt > 0 ? flops_since / dt : 0.0;
          char mfu[32] = "";
          if (c_.peak_tflops > 0) std::snprintf(mfu, sizeof mfu, " | MFU %4.1f%%", 100.0 * flops / (c_.peak_tflops * 1e12));
          std::printf("step %6ld/%ld | loss %.4f | lr %.2e | grad norm %7.3f | %7.0f tok/s | %6.1f GFLOP/s%s | "
                      "mem %s | ETA %s\n",
                      s + 1, c_.steps, loss, lr, norm, tps, flops * 1e-9, mfu, resident_memory().c_str(),
                      format_duration(eta).c_str());
          std::fflush(stdout);
        }
        if (on_log) on_log({s + 1, loss, lr, norm, tps, skipped});
        last = now;
        tokens_since = 0;
        flops_since = 0;
      }
      if (c_.eval_every > 0 && step_ % c_.eval_every == 0 && step_ < c_.steps) {
        const double v = evaluate();
        if (on_eval) on_eval(step_, v);
        if (!quiet) std::printf("  held-out loss %.4f at step %ld (training data: %s)\n", v, step_, train_->where().c_str());
      }
      if (after_step && after_step(step_)) return false;
    }
    return true;
  }

  // Mean loss over the first eval_batches micro-batches of the held-out documents, in a fixed order.
  double evaluate() {
    auto val = make_eval_();
    HostBatch<B, T> mb;
    double sum = 0;
    long n = 0;
    for (int i = 0; i < c_.eval_batches; ++i) {
      mb.fill(*val);
      sum += exec_->forward(*state_, mb.view());
      n += mb.count_targets();
    }
    return n ? sum / double(n) : 0.0;
  }

  const std::vector<double>& losses() const { return losses_; }
  State& state() { return *state_; }
  const State& state() const { return *state_; }
  Executor& executor() { return *exec_; }
  data::RowSource& data() { return *train_; }
  long& updates() { return updates_; }  // AdamW updates done (skipped steps make none)
  LossGuard& guard() { return guard_; }
  long& step() { return step_; }
  const TrainConfig& config() const { return c_; }

 private:
  TrainConfig c_;
  LossGuard guard_;
  std::unique_ptr<State> state_;
  std::unique_ptr<Executor> exec_;
  long updates_ = 0;
  std::unique_ptr<data::RowSource> train_;
  std::function<std::unique_ptr<data::RowSource>()> make_eval_;
  std::vector<double> losses_;  // every step's loss, skipped ones included
  long step_ = 0;               // steps done
  std::chrono::steady_clock::time_point last_step_time_ = std::chrono::steady_clock::now();
};

}  // namespace kiln
