// kiln/train/trainer.hpp: the training loop of one compiled recipe over any backend: Trainer<Recipe, Backend>.
//   per step: grad = 0; for each of grad_accum micro-batches: forward + backward (gradients accumulate, each
//   scaled by 1 / targets in the global batch); the guard judges loss and gradient norm (a bad step is skipped,
//   repeated bad steps roll back, guards.hpp); clip by global norm; AdamW with the schedule's learning rate.
// The backend owns parameters, gradients, optimizer state and the activation arena; zero-grad, forward/backward,
// the norm and the fused AdamW update are its calls, and the host reads the loss and the norm once per step. This
// file includes no kernel and assumes nothing about where the backend keeps its memory. What does not depend on the
// recipe (counters, settings, hooks, the buffers on the host) is TrainerBase (trainer_base.hpp), through which
// checkpoints and the trainer program, compiled once, see any trainer. A Backend provides
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
#include <tuple>
#include <vector>

#include "kiln/backend/batch.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/row_source.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/guards.hpp"
#include "kiln/train/optimizer.hpp"
#include "kiln/train/schedule.hpp"
#include "kiln/train/trainer_base.hpp"
#include "kiln/recipe.hpp"

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
class Trainer final : public TrainerBase {
 public:
  using M = typename Recipe::model;  // the parameter table every phase shares
  using Phs = phases_of<Recipe>;
  static constexpr int phase_count = Phs::count;
  using State = typename Backend::template state<M>;
  template <int I>
  using PhaseExecutor = typename Backend::template executor<phase_model<Recipe, I>, phase_stage<Recipe, I>::micro_batch,
                                                            phase_stage<Recipe, I>::seq_len>;
  static_assert(check_phases<Recipe>());

  // One TrainConfig per phase; data_for(phase, its config) opens a phase's data when the phase starts. The run
  // starts at phase 0 (a checkpoint or start_phase() moves it).
  Trainer(std::vector<TrainConfig> configs, DataFor data_for)
      : TrainerBase(std::move(configs), std::move(data_for), shapes(), plan::ParamPlan<M>::table.entries,
                    plan::ParamPlan<M>::table.total),
        state_(std::make_unique<State>()) {
    state_->init(configs_[0].init_std, configs_[0].seed);
    start_phase(0);
  }

  // A run of the recipe's first phase only, on the given data (tests, and recipes of one phase).
  Trainer(const TrainConfig& c, std::unique_ptr<data::RowSource> train,
          std::function<std::unique_ptr<data::RowSource>()> make_eval)
      : TrainerBase(std::vector<TrainConfig>(size_t(phase_count), c), {}, shapes(), plan::ParamPlan<M>::table.entries,
                    plan::ParamPlan<M>::table.total),
        state_(std::make_unique<State>()) {
    state_->init(c.init_std, c.seed);
    last_phase_ = 0;
    data_ = PhaseData{std::move(train), std::move(make_eval)};
    start_phase(0, /*open_data=*/false);
  }

  // In-memory byte-level documents: training documents reshuffled each epoch, held-out ones in order.
  Trainer(const TrainConfig& c, const data::Corpus& corpus)
      : Trainer(c, std::make_unique<data::PackedBytes>(&corpus.train, c.seed, true),
                [&corpus] { return std::make_unique<data::PackedBytes>(&corpus.val, 0, false); }) {}

  void start_phase(int i, bool open_data = true) override {
    enter_phase(i, open_data);
    with_phase<Recipe>(i, [&]<int I>() {
      destroy_executors();
      std::get<I>(execs_) = std::make_unique<PhaseExecutor<I>>();
    });
    state_->set_decay(decay_ranges<M>(configs_[size_t(i)].no_decay));
  }
  bool run(bool quiet = false, const std::function<void(const Log&)>& on_log = {}) override {
    for (;;) {
      if (on_phase_start && step_ == 0) on_phase_start(phase_);
      const bool done = with_phase<Recipe>(phase_, [&]<int I>() { return run_phase<I>(quiet, on_log); });
      if (!done) return false;
      if (on_phase_end) on_phase_end(phase_);
      if (phase_ >= last_phase_) return true;
      start_phase(phase_ + 1);
    }
  }

  double evaluate() override {
    return with_phase<Recipe>(phase_, [&]<int I>() {
      using St = phase_stage<Recipe, I>;
      auto val = data_.make_eval();
      HostBatch<St::micro_batch, St::seq_len> mb;
      double sum = 0;
      long n = 0;
      for (int i = 0; i < config().eval_batches; ++i) {
        mb.fill(*val);
        sum += std::get<I>(execs_)->forward(*state_, mb.view());
        n += mb.count_targets();
      }
      return n ? sum / double(n) : 0.0;
    });
  }

  const float* host(backend::Tensor t) const override { return state_->host(t); }
  float* host_mut(backend::Tensor t) override { return state_->host_mut(t); }
  void commit(backend::Tensor t) override { state_->commit(t); }
  State& state() { return *state_; }
  const State& state() const { return *state_; }

 private:
  static std::vector<PhaseShape> shapes() {
    return []<int... I>(std::integer_sequence<int, I...>) {
      return std::vector<PhaseShape>{
          PhaseShape{Phs::names[I], phase_stage<Recipe, I>::micro_batch, phase_stage<Recipe, I>::seq_len}...};
    }(std::make_integer_sequence<int, phase_count>{});
  }
  void destroy_executors() {
    std::apply([](auto&... e) { (e.reset(), ...); }, execs_);
  }

  template <int I>
  bool run_phase(bool quiet, const std::function<void(const Log&)>& on_log) {
    using St = phase_stage<Recipe, I>;
    using PM = phase_model<Recipe, I>;
    constexpr int B = St::micro_batch, T = St::seq_len;
    auto& exec = *std::get<I>(execs_);
    const TrainConfig& c = config();
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const long first = step_;
    auto last = t0;
    long tokens_since = 0;
    double flops_since = 0;
    last_step_time_ = t0;
    std::vector<HostBatch<B, T>> micro(size_t(c.grad_accum));
    while (step_ < c.steps) {
      const long s = step_;
      long targets = 0;
      for (auto& mb : micro) {
        mb.fill(*data_.train);
        targets += mb.count_targets();
        flops_since += plan::Flops<PM, St>::train_flops(double(B) * T, mb.attention_context());
      }
      state_->zero_grad();
      double loss_sum = 0;
      const float scale = targets ? 1.0f / float(targets) : 0.0f;
      for (auto& mb : micro) loss_sum += exec.forward_backward(*state_, mb.view(), scale);
      const double loss = targets ? loss_sum / double(targets) : 0.0;
      const double norm = state_->grad_norm();
      const double lr = learning_rate(c, s);
      const double z = guard_.zscore(loss);
      const auto verdict = guard_.judge(loss, norm);
      const bool skipped = verdict != LossGuard::Verdict::ok;
      if (!skipped) state_->adamw(adamw_step(c, lr, norm, ++updates_));
      losses_.push_back(loss);
      ++step_;
      ++run_step_;
      tokens_since += long(B) * T * c.grad_accum;
      tokens_seen_ += long(B) * T * c.grad_accum;
      if (skipped && !quiet) {
        if (verdict == LossGuard::Verdict::not_finite)
          std::printf("step %6ld: loss %g, grad norm %g not finite: step skipped (%d bad in a row)\n", run_step_, loss,
                      norm, guard_.bad_in_a_row());
        else
          std::printf("step %6ld: loss spike %.4f (z = %.1f over the last %d steps > %.1f): step skipped (%d bad in a row)\n",
                      run_step_, loss, z, c.guard.spike_window, c.guard.spike_zscore, guard_.bad_in_a_row());
      }
      if (guard_.must_roll_back()) {
        const int bad = guard_.bad_in_a_row();
        KILN_CHECK(rollback && rollback(), bad, " bad steps in a row up to step ", run_step_,
                   " and no checkpoint to roll back to: stopping (lower --lr, raise --spike-zscore, or check the data)");
        guard_.clear_bad();
        if (!quiet)
          std::printf("step %6ld: %d bad steps in a row: rolled back to the checkpoint of step %ld; the data goes on "
                      "from here, so the offending batches are not replayed\n", s + 1, bad, run_step_);
      }
      const auto now_step = clock::now();
      if (on_step) {
        const double dt = std::chrono::duration<double>(now_step - last_step_time_).count();
        on_step({run_step_, loss, lr, norm, dt > 0 ? double(B) * T * c.grad_accum / dt : 0, skipped, phase_, step_});
      }
      last_step_time_ = now_step;
      const bool log_now = step_ % c.log_every == 0 || s == first || step_ == c.steps;
      if (log_now) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last).count();
        const double tps = dt > 0 ? double(tokens_since) / dt : 0;
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        const double eta = elapsed / double(step_ - first) * double(c.steps - step_);
        if (!quiet) {
          const double flops = dt > 0 ? flops_since / dt : 0.0;
          char mfu[32] = "", where[48] = "";
          if (c.peak_tflops > 0) std::snprintf(mfu, sizeof mfu, " | MFU %4.1f%%", 100.0 * flops / (c.peak_tflops * 1e12));
          if (phase_count > 1) std::snprintf(where, sizeof where, " (%.16s %ld/%ld)", Phs::names[phase_].data(), step_, c.steps);
          const long total = phase_count > 1 ? run_step_ - step_ + c.steps : c.steps;
          std::printf("step %6ld/%ld%s | loss %.4f | lr %.2e | grad norm %7.3f | %7.0f tok/s | %6.1f GFLOP/s%s | "
                      "mem %s | ETA %s\n",
                      run_step_, total, where, loss, lr, norm, tps, flops * 1e-9, mfu, resident_memory().c_str(),
                      format_duration(eta).c_str());
          std::fflush(stdout);
        }
        if (on_log) on_log({run_step_, loss, lr, norm, tps, skipped, phase_, step_});
        last = now;
        tokens_since = 0;
        flops_since = 0;
      }
      if (c.eval_every > 0 && step_ % c.eval_every == 0 && step_ < c.steps) {
        const double v = evaluate();
        if (on_eval) on_eval(run_step_, v);
        if (!quiet)
          std::printf("  held-out loss %.4f at step %ld (training data: %s)\n", v, run_step_, data_.train->where().c_str());
      }
      if (after_step && after_step(run_step_)) return false;
    }
    return true;
  }

  template <int... I>
  static auto executor_tuple(std::integer_sequence<int, I...>) -> std::tuple<std::unique_ptr<PhaseExecutor<I>>...>;

  std::unique_ptr<State> state_;
  decltype(executor_tuple(std::make_integer_sequence<int, phase_count>{})) execs_;  // the current phase's only
  std::chrono::steady_clock::time_point last_step_time_ = std::chrono::steady_clock::now();
};

}  // namespace kiln
