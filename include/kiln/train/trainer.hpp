// kiln/train/trainer.hpp: the training loop of one compiled recipe on the CPU backend.
//   per step: grad = 0; for each of grad_accum micro-batches: forward + backward (gradients accumulate, each
//   scaled by 1 / targets in the global batch); clip by global norm; AdamW with the schedule's learning rate.
// Console: step, loss, lr, grad norm, tokens/s, GFLOP/s, ETA; held-out loss at eval points and at the end.
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
    const double flops_per_token = plan::Flops<M, S>::train_per_token;
    std::vector<HostBatch<B, T>> micro(size_t(c_.grad_accum));
    for (long s = 0; s < c_.steps; ++s) {
      long targets = 0;
      for (auto& mb : micro) {
        mb.fill(train_);
        targets += mb.count_targets();
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
                      s + 1, c_.steps, loss, lr, st.grad_norm, tps, tps * flops_per_token * 1e-9,
                      format_duration(eta).c_str());
          std::fflush(stdout);
        }
        if (on_log) on_log({s + 1, loss, lr, st.grad_norm, tps});
        last = now;
        tokens_since = 0;
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

// Continues a prompt by sampling with temperature (0 = greedy). The context is the last T tokens, run through a
// micro-batch-1 instance of the same model (no KV cache yet: each new token recomputes the window).
template <DecoderModel M, int T>
std::vector<int32_t> sample(const float* params, std::vector<int32_t> ctx, int n, double temperature, uint64_t seed,
                            int32_t stop_token = -1) {
  using Gen = backend::CpuModel<M, Stage<micro_batch<1>, seq_len<T>>>;
  auto gen = std::make_unique<Gen>();
  std::vector<int32_t> tok(T), tgt(T, -1), pos(T), start(T, 0), out;
  std::vector<float> logits(static_cast<size_t>(T) * M::vocab);
  Rng rng(seed);
  for (int k = 0; k < n; ++k) {
    const int len = int(std::min<size_t>(ctx.size(), T));
    KILN_CHECK(len > 0, "sample: the prompt is empty");
    for (int i = 0; i < T; ++i) {
      tok[i] = i < len ? ctx[ctx.size() - len + i] : 0;
      pos[i] = i;
    }
    gen->forward_logits(params, {tok.data(), tgt.data(), pos.data(), start.data()}, logits.data());
    const float* z = logits.data() + size_t(len - 1) * M::vocab;
    int32_t next = 0;
    if (temperature <= 0) {
      for (int v = 1; v < M::vocab; ++v) if (z[v] > z[next]) next = v;
    } else {
      float mx = z[0];
      for (int v = 1; v < M::vocab; ++v) mx = std::max(mx, z[v]);
      std::vector<double> p(M::vocab);
      double sum = 0;
      for (int v = 0; v < M::vocab; ++v) sum += p[v] = std::exp((double(z[v]) - mx) / temperature);
      double u = rng.uniform() * sum;
      for (next = 0; next < M::vocab - 1 && (u -= p[next]) > 0; ++next) {}
    }
    if (next == stop_token) break;
    ctx.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace kiln
