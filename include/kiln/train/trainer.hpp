// kiln/train/trainer.hpp: the training loop of one compiled recipe on the CPU backend.
//   per step: grad = 0; for each of grad_accum micro-batches: forward + backward (gradients accumulate, each
//   scaled by 1 / targets in the global batch); clip by global norm; AdamW with the schedule's learning rate.
// Console: step, loss, lr, grad norm, tokens/s, GFLOP/s (the work really done: document masking shortens the
// attention), ETA; held-out loss at eval points and at the end.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kiln/backend/cpu.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/bytes.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/optimizer.hpp"
#include "kiln/train/schedule.hpp"

namespace kiln {

// The B*T int32 arrays of one micro-batch, owned.
template <int B, int T>
struct HostBatch {
  std::vector<int32_t> tokens = std::vector<int32_t>(size_t(B) * T), targets = tokens, positions = tokens,
                       doc_start = tokens;
  backend::Batch view() const { return {tokens.data(), targets.data(), positions.data(), doc_start.data()}; }
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

inline std::string format_duration(double s) {
  char b[32];
  long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  return b;
}

template <class Recipe>
class Trainer {
 public:
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  using Model = backend::CpuModel<M, S>;
  using Params = plan::ParamPlan<M>;
  static constexpr int B = S::micro_batch, T = S::seq_len;

  struct Log {
    long step;
    double loss, lr, grad_norm, tokens_per_s;
  };

  Trainer(const TrainConfig& c, const data::Corpus& corpus)
      : c_(c),
        corpus_(corpus),
        params_(Params::table.total),
        grads_(Params::table.total),
        opt_(c),
        model_(std::make_unique<Model>()),
        train_(&corpus.train, c.seed, true) {
    KILN_CHECK(c.steps > 0, "--steps must be positive, got ", c.steps);
    KILN_CHECK(c.grad_accum > 0, "--grad-accum must be positive, got ", c.grad_accum);
    KILN_CHECK(c.lr > 0 && std::isfinite(c.lr), "--lr must be a positive number, got ", c.lr);
    init_parameters<M>(params_.data(), c.init_std, c.seed);
  }

  // Runs all steps; `on_log` sees every logged step (tests use it), `quiet` silences the console.
  void run(bool quiet = false, const std::function<void(const Log&)>& on_log = {}) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    auto last = t0;
    long tokens_since = 0;
    double flops_since = 0;
    std::vector<HostBatch<B, T>> micro(size_t(c_.grad_accum));
    for (long s = 0; s < c_.steps; ++s) {
      long targets = 0;
      for (auto& mb : micro) {
        mb.fill(train_);
        targets += mb.count_targets();
        flops_since += plan::Flops<M, S>::train_flops(double(B) * T, mb.attention_context());
      }
      grads_.zero();
      double loss_sum = 0;
      const float scale = targets ? 1.0f / float(targets) : 0.0f;
      for (auto& mb : micro) loss_sum += model_->forward_backward(params_.data(), grads_.data(), mb.view(), scale);
      const double loss = targets ? loss_sum / double(targets) : 0.0;
      KILN_CHECK(std::isfinite(loss), "loss is not finite at step ", s + 1, " (lower --lr or check the data)");
      const double lr = learning_rate(c_, s);
      const StepStats st = opt_.step(params_.data(), grads_.data(), c_, lr);
      losses_.push_back(loss);
      tokens_since += long(B) * T * c_.grad_accum;
      const bool log_now = (s + 1) % c_.log_every == 0 || s == 0 || s + 1 == c_.steps;
      if (log_now) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last).count();
        const double tps = dt > 0 ? double(tokens_since) / dt : 0;
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        const double eta = elapsed / double(s + 1) * double(c_.steps - s - 1);
        if (!quiet) {
          std::printf("step %6ld/%ld | loss %.4f | lr %.2e | grad norm %7.3f | %7.0f tok/s | %6.1f GFLOP/s | ETA %s\n",
                      s + 1, c_.steps, loss, lr, st.grad_norm, tps, dt > 0 ? flops_since / dt * 1e-9 : 0.0,
                      format_duration(eta).c_str());
          std::fflush(stdout);
        }
        if (on_log) on_log({s + 1, loss, lr, st.grad_norm, tps});
        last = now;
        tokens_since = 0;
        flops_since = 0;
      }
      if (c_.eval_every > 0 && (s + 1) % c_.eval_every == 0 && s + 1 < c_.steps) {
        const double v = evaluate();
        if (!quiet) std::printf("  held-out loss %.4f at step %ld (train epoch %llu)\n", v, s + 1,
                                (unsigned long long)train_.epoch());
      }
    }
  }

  // Mean loss over the first eval_batches micro-batches of the held-out documents, in a fixed order.
  double evaluate() {
    data::Packer val(&corpus_.val, 0, false);
    HostBatch<B, T> mb;
    double sum = 0;
    long n = 0;
    for (int i = 0; i < c_.eval_batches; ++i) {
      mb.fill(val);
      sum += model_->forward_loss(params_.data(), mb.view());
      n += mb.count_targets();
    }
    return n ? sum / double(n) : 0.0;
  }

  const std::vector<double>& losses() const { return losses_; }
  const float* params() const { return params_.data(); }
  float* params() { return params_.data(); }
  const data::Packer& packer() const { return train_; }

 private:
  TrainConfig c_;
  const data::Corpus& corpus_;
  Buffer<float> params_, grads_;
  AdamW<M> opt_;
  std::unique_ptr<Model> model_;
  data::Packer train_;
  std::vector<double> losses_;
};

}  // namespace kiln
