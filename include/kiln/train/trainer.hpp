// kiln/train/trainer.hpp: the training loop of one compiled recipe over any backend: Trainer<Recipe, Backend>.
//   per step: grad = 0; for each of grad_accum micro-batches: forward + backward (gradients accumulate, each
//   scaled by 1 / targets in the global batch); the guard judges loss and gradient norm (a bad step is skipped,
//   repeated bad steps roll back, guards.hpp); clip by global norm; AdamW with the schedule's learning rate.
// The backend owns parameters, gradients, optimizer state and the activation arena, and takes the step's decision
// itself (kiln/core/step_rule.hpp: the loss, the guard's verdict, the update) where the loss is, on its copy of
// the guard's window; the trainer's guard adopts each verdict from the step's record. A backend whose steps overlap
// (overlap_steps: the CUDA one) is given step s + 1 before the host reads step s's record, so the device never
// waits for the host; the host still waits where it needs the state (evaluation, checkpoints, a phase's end, a stop
// signal: must_sync). This file includes no kernel and assumes nothing about where the backend keeps its memory.
// What does not depend on the recipe (counters, settings, hooks, the buffers on the host) is TrainerBase
// (trainer_base.hpp), through which checkpoints and the trainer program, compiled once, see any trainer.
// A Backend provides
//   overlap_steps      whether end_step returns before the step has run
//   state<M>           init(std, seed), set_decay(ranges), host(Tensor) / host_mut(Tensor) / commit(Tensor);
//                      the step: set_step_state(guard counters, ring, updates), begin_step(), end_step(StepArgs),
//                      step_record() -> StepRecord (the oldest unread); zero_grad(), grad_norm(), adamw(AdamWStep)
//                      for tests and benchmarks; data parallelism: all_reduce(comm); ZeRO-1 (optional: a recipe
//                      whose layout has ZeRO<1> is refused on more than one rank without them): shard(comm),
//                      optimizer_shard(); tensor parallelism (optional, Backend::tensor_parallel: a recipe with
//                      TP<t> does not compile a trainer without it): set_tensor_parallel(group), of tp_local<M, t>
//   executor<M, B, T>  (TP: executor<M, B, T, t>, with set_tensor_parallel(group))
//                      accumulate(state, batch, grad_scale) (a step's micro-batch, its loss summed by the state);
//                      forward_backward(state, batch, grad_scale) -> summed loss; forward(state, batch) -> summed loss
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
#include "kiln/core/step_rule.hpp"
#include "kiln/data/row_source.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/guards.hpp"
#include "kiln/train/optimizer.hpp"
#include "kiln/train/preference.hpp"
#include "kiln/train/schedule.hpp"
#include "kiln/train/trainer_base.hpp"
#include "kiln/parallel/tensor_parallel.hpp"
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
  std::vector<float> weights;  // preference steps: each token's loss-gradient weight (empty: none)
  backend::Batch view() const {
    return {tokens.data(), targets.data(), positions.data(), doc_start.data(), weights.empty() ? nullptr : weights.data()};
  }
  void fill(data::RowSource& p) { p.next(B, T, tokens.data(), targets.data(), positions.data(), doc_start.data()); }
  void fill(data::Packer& p) { p.next(B, T, tokens.data(), targets.data(), positions.data(), doc_start.data()); }
  // Without document masking: each row one sequence (attention across its documents, positions 0..T-1).
  void whole_rows() {
    for (size_t k = 0; k < doc_start.size(); ++k) doc_start[k] = 0, positions[k] = int32_t(k % T);
  }
  void fill_as(data::RowSource& p, bool document_masking) {
    fill(p);
    if (!document_masking) whole_rows();
  }
  long count_targets() const {
    long n = 0;
    for (int32_t t : targets) n += t >= 0;
    return n;
  }
  // The scored sequences: each document with a target, in row order, numbered 0..n-1; segment[k] is the number of
  // the sequence whose target is at k, or -1. A preference batch's pairs are sequences (2p, 2p + 1) (ChatRows keeps
  // a pair in one row, chosen first). Returns n.
  int sequences(std::vector<int32_t>& segment) const {
    segment.assign(targets.size(), -1);
    int n = 0;
    for (size_t k = 0; k < targets.size();) {
      size_t e = k + 1;  // the document [k, e)
      while (e < targets.size() && e % T != 0 && doc_start[e] == doc_start[k]) ++e;
      bool scored = false;
      for (size_t i = k; i < e; ++i)
        if (targets[i] >= 0) segment[i] = n, scored = true;
      n += scored;
      k = e;
    }
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

namespace detail {
template <class Backend, class PM, int B, int T, int t>
struct executor_of {
  using type = typename Backend::template executor<PM, B, T>;
};
template <class Backend, class PM, int B, int T, int t>
  requires(t > 1)
struct executor_of<Backend, PM, B, T, t> {
  using type = typename Backend::template executor<PM, B, T, t>;
};
}  // namespace detail

template <class Recipe, class Backend = backend::Cpu>
class Trainer final : public TrainerBase {
 public:
  using M = typename Recipe::model;  // the parameter table every phase shares
  using Phs = phases_of<Recipe>;
  static constexpr int phase_count = Phs::count;
  using Layout = layout_of<Recipe>;
  static constexpr int tp = Layout::tp;
  // What this rank holds: the model, or under TP<t> its tp_local cut (checkpoints and host() keep the full model's)
  using Local = std::conditional_t<(tp > 1), tp_local<M, tp>, M>;
  using State = typename Backend::template state<Local>;
  // A preference phase's frozen reference model (parameters only), which the phase's executor runs forward.
  using Reference = typename Backend::template reference<Local>;
  template <int I>
  using PhaseExecutor = typename detail::executor_of<Backend, phase_model<Recipe, I>, phase_stage<Recipe, I>::micro_batch,
                                                     phase_stage<Recipe, I>::seq_len, tp>::type;
  static_assert(check_phases<Recipe>());
  static_assert(check_layout<M, Layout>());
  static_assert(tp == 1 || requires { Backend::tensor_parallel; }, "Layout<..., TP<t>>: this backend does not build "
                "tensor parallelism (the CPU and CUDA backends do)");
  static_assert(tp == 1 || Layout::zero == 0, "Layout<..., TP<t>, ZeRO<1>>: ZeRO-1 with tensor parallelism is not built");

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
      if constexpr (tp > 1)
        if (tp_comm_) std::get<I>(execs_)->set_tensor_parallel(tp_comm_.get());
    });
    state_->set_decay(decay_ranges<Local>(configs_[size_t(i)].no_decay));  // the table this rank holds
    ref_.reset();
    if (phase_shape(i).objective == Objective::preference) {  // the reference: the weights the phase starts from
      KILN_CHECK(tp == 1, "phase ", phase_name(i), ": preference optimisation with tensor parallelism is not built");
      ref_ = std::make_unique<Reference>();
      set_reference(state_->host(backend::Tensor::params));
    }
  }
  const float* reference() const override { return ref_ ? ref_->host(backend::Tensor::params) : nullptr; }
  void set_reference(const float* params) override {
    if (!ref_) return;
    std::copy(params, params + plan::ParamPlan<Local>::table.total, ref_->host_mut(backend::Tensor::params));
    ref_->commit(backend::Tensor::params);
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
    eval_extra.clear();
    return with_phase<Recipe>(phase_, [&]<int I>() {
      using St = phase_stage<Recipe, I>;
      if constexpr (phase_t<Recipe, I>::objective == Objective::preference) return evaluate_preference<I>();
      auto val = data_.make_eval();
      HostBatch<St::micro_batch, St::seq_len> mb;
      double sum = 0;
      long n = 0;
      const int N = dp_world(), me = dp_rank();
      for (int i = 0; i < config().eval_batches; ++i) {  // data parallel: batch i on rank i % N, the sums reduced
        mb.fill_as(*val, config().document_masking);
        if (i % N != me) continue;
        sum += std::get<I>(execs_)->forward(*state_, mb.view());
        n += mb.count_targets();
      }
      if (N > 1) {
        double v[2] = {sum, double(n)};
        dp_comm()->allreduce_sum(v, 2, "the all-reduce of the held-out loss");
        sum = v[0], n = long(v[1]);
      }
      return n ? sum / double(n) : 0.0;
    });
  }

  void set_communicator(parallel::Communicator* comm) override {
    const int n = comm ? comm->world() : 1;
    const LayoutShape shape = resolve_layout<Layout>(n);  // the world fits the layout, or an error naming both
    TrainerBase::set_communicator(comm);
    if constexpr (tp > 1) {  // TP groups of neighbouring ranks: rank = dp_rank * t + tp_rank
      const int r = comm->rank();
      tp_comm_ = comm->split(r / tp, r % tp, "forming the tensor-parallel groups");
      dp_comm_ = comm->split(r % tp, r / tp, "forming the data-parallel groups");
      tp_comm_->attach_split(*comm);  // GPU ranks: NCCL communicators of the groups (every rank in this order)
      dp_comm_->attach_split(*comm);
      dp_world_ = shape.dp, dp_rank_ = r / tp;
      state_->set_tensor_parallel(tp_comm_.get());
      init_parameters_tp<M, tp>(state_->host_mut(backend::Tensor::params), configs_[0].init_std, configs_[0].seed,
                                tp_comm_->rank());  // one process's values, this rank's slices
      state_->commit(backend::Tensor::params);
      with_phase<Recipe>(phase_, [&]<int I>() {
        if (std::get<I>(execs_)) std::get<I>(execs_)->set_tensor_parallel(tp_comm_.get());
      });
    }
    if constexpr (Layout::zero == 1) {
      if (n > 1) {
        if constexpr (requires { state_->shard(*comm); }) state_->shard(*comm);
        else KILN_FAIL(Layout::text(), ": the ", Backend::name, " backend does not shard its optimizer state yet (ZeRO-1 "
                       "is built for CPU ranks): run this recipe's layout without ZeRO<1>, or on one rank");
      }
    }
  }
  std::string layout() const override { return Layout::text(); }
  std::string model_text() const override {
    std::string s;
    [&]<int... I>(std::integer_sequence<int, I...>) {
      ((s += [] {
         using P = phase_model<Recipe, I>;
         char b[384];
         constexpr RopeScaling y = P::positional::scaling;
         std::snprintf(b, sizeof b, "%d:%d:%d/%d:%d:%d:%d:%d:%d:%.17g:%.17g:%s:%d:%.17g", P::layers, P::hidden,
                       P::heads, P::kv_heads, P::head_dim, P::ffn, P::vocab, int(P::tied), int(P::qk_norm), P::eps,
                       P::z_loss, P::positional::name, P::positional::interval, P::positional::theta);
         std::string t = b;
         if (y.yarn) {  // (plain RoPE keeps the fingerprint earlier checkpoints carry)
           std::snprintf(b, sizeof b, ":yarn:%.17g:%d:%.17g:%.17g:%.17g:%d", y.factor, y.original_max, y.beta_fast,
                         y.beta_slow, y.attention_factor, int(y.truncate));
           t += b;
         }
         return t + ";";
       }()), ...);
    }(std::make_integer_sequence<int, phase_count>{});
    return s;
  }
  int dp_world() const override { return tp > 1 ? dp_world_ : world(); }
  int dp_rank() const override { return tp > 1 ? dp_rank_ : rank(); }
  void sync_host() override {
    if constexpr (tp > 1) {
      KILN_CHECK(tp_comm_, "sync_host: a tensor-parallel trainer needs its communicator (set_communicator)");
      constexpr size_t local = plan::ParamPlan<Local>::table.total;
      std::vector<float> all(local * tp);
      const std::vector<size_t> counts(size_t(tp), local);
      using backend::Tensor;
      const Tensor kinds[3] = {Tensor::params, Tensor::adam_m, Tensor::adam_v};  // full_'s order
      for (int k = 0; k < 3; ++k) {
        const Tensor t = kinds[k];
        std::copy(state_->host(t), state_->host(t) + local, all.begin() + long(local) * tp_comm_->rank());
        tp_comm_->allgather(all.data(), counts.data(), "gathering the tensor-parallel slices");
        std::vector<const float*> parts;
        for (int r = 0; r < tp; ++r) parts.push_back(all.data() + size_t(r) * local);
        full_[k].assign(plan::ParamPlan<M>::table.total, 0.0f);
        tp_gather<M, tp>(parts.data(), full_[k].data());
      }
    }
  }
  bool optimizer_sharded() const override { return Layout::zero == 1 && world() > 1; }
  parallel::Shard optimizer_shard() const override {
    if constexpr (tp > 1) return {0, plan::ParamPlan<M>::table.total};  // host() shows the full model's moments
    else if constexpr (requires { state_->optimizer_shard(); }) return state_->optimizer_shard();
    else return {0, plan::ParamPlan<M>::table.total};
  }
  const float* host(backend::Tensor t) const override {
    if constexpr (tp > 1)
      if (t != backend::Tensor::grads) return full(t).data();
    return state_->host(t);  // (under TP the gradients are this rank's slices)
  }
  float* host_mut(backend::Tensor t) override {
    if constexpr (tp > 1) {
      KILN_CHECK(t != backend::Tensor::grads, "host_mut: a tensor-parallel rank's gradients are not gathered");
      auto& f = const_cast<std::vector<float>&>(full(t));
      f.resize(plan::ParamPlan<M>::table.total);
      return f.data();
    }
    return state_->host_mut(t);
  }
  void commit(backend::Tensor t) override {
    if constexpr (tp > 1) {  // this rank's slices of the full buffer written through host_mut
      tp_scatter<M, tp>(full(t).data(), state_->host_mut(t), tp_comm_->rank());
    }
    state_->commit(t);
  }
  State& state() { return *state_; }
  const State& state() const { return *state_; }

 private:
  static std::vector<PhaseShape> shapes() {
    return []<int... I>(std::integer_sequence<int, I...>) {
      return std::vector<PhaseShape>{
          PhaseShape{Phs::names[I], phase_stage<Recipe, I>::micro_batch, phase_stage<Recipe, I>::seq_len,
                     phase_t<Recipe, I>::objective, phase_t<Recipe, I>::preference_loss}...};
    }(std::make_integer_sequence<int, phase_count>{});
  }
  void destroy_executors() {
    std::apply([](auto&... e) { (e.reset(), ...); }, execs_);
  }

  // One step from its start to the reading of its record. Its batches stay until then, so that a rollback can run
  // them again from the restored state (the data goes on from where it was, as without overlap).
  template <int B, int T>
  struct StepWork {
    long step = -1;  // its phase step (0-based); -1: none
    double lr = 0, flops = 0;
    long targets = 0;                     // of the global batch
    double chosen_tokens = 0;             // a preference step's: its chosen answers' tokens (global batch)
    std::vector<HostBatch<B, T>> micro;   // this rank's micro-batches
    PreferenceStats stats;                // a preference step's pairs (the global batch's)
    std::unique_ptr<HostBatch<B, T>> other;  // the other ranks' micro-batches pass through here (data parallelism)
  };

  // A step's global batch, in the same order on every rank (this rank's micro-batches kept, the others' passed
  // through): its target tokens (a preference step: its pairs) and the FLOPs of its work (a preference step runs two
  // forwards besides the training forward and backward: 5/3 of those).
  template <int I, class W>
  void fill_step(W& w, bool preference) {
    using St = phase_stage<Recipe, I>;
    constexpr int B = St::micro_batch, T = St::seq_len;
    const TrainConfig& c = config();
    const int N = dp_world(), me = dp_rank();
    w.micro.resize(size_t(c.grad_accum));
    if (N > 1 && !w.other) w.other = std::make_unique<HostBatch<B, T>>();
    w.targets = 0;
    w.chosen_tokens = 0;
    w.flops = 0;
    for (long m = 0; m < long(c.grad_accum) * N; ++m) {
      auto& mb = m % N == me ? w.micro[size_t(m / N)] : *w.other;
      mb.fill_as(*data_.train, preference || c.document_masking);
      if (preference) w.chosen_tokens += double(count_chosen(mb));
      w.targets += preference ? count_pairs(mb) : mb.count_targets();
      w.flops += (preference ? 5.0 / 3.0 : 1.0) *
                 plan::Flops<phase_model<Recipe, I>, St>::train_flops(double(B) * T, mb.attention_context());
    }
  }

  // Starts step s of phase I: its batches (fresh unless `refill` is false), then every micro-batch's forward and
  // backward, the sums over the ranks, and the step's end (norm, guard, update) on the backend, which may return
  // before they have run.
  template <int I, class W>
  void start_step(W& w, long s, bool refill) {
    if constexpr (phase_t<Recipe, I>::objective == Objective::preference) return start_preference_step<I>(w, s, refill);
    auto& exec = *std::get<I>(execs_);
    const TrainConfig& c = config();
    const int N = dp_world();
    w.step = s;
    if (refill) fill_step<I>(w, /*preference=*/false);
    if (comm_) comm_->arrive(run_step_ - step_ + s + 1);  // this step's number in the run, for timeout messages
    w.lr = learning_rate(c, s);
    state_->begin_step();
    const float scale = w.targets ? 1.0f / float(w.targets) : 0.0f;
    for (size_t k = 0; k < w.micro.size(); ++k)  // the last one hands its gradients to the all-reduce as they finish
      exec.accumulate(*state_, w.micro[k].view(), scale, N > 1 && k + 1 == w.micro.size() ? dp_comm() : nullptr);
    if (N > 1) state_->all_reduce(*dp_comm());
    state_->end_step(StepArgs{w.lr, c.beta1, c.beta2, c.adam_eps, c.weight_decay, c.clip, double(w.targets)});
  }

  // ---- preference optimisation (train/preference.hpp) ----
  // The pairs' log-probabilities of one micro-batch under the reference and the policy, and each pair's terms.
  template <int I, int B, int T>
  void preference_pairs(const HostBatch<B, T>& mb, std::vector<int32_t>& seg, std::vector<PairLogps>& pairs,
                        std::vector<PairTerms>& terms) {
    auto& exec = *std::get<I>(execs_);
    const int n = mb.sequences(seg);
    KILN_CHECK(n % 2 == 0, "preference batch: ", n, " scored sequences, expected pairs (chosen, rejected)");
    std::vector<double> ref(static_cast<size_t>(n)), pol(static_cast<size_t>(n));
    exec.forward(*ref_, mb.view());
    exec.sequence_logprobs(seg.data(), n, ref.data());
    exec.forward(*state_, mb.view());
    exec.sequence_logprobs(seg.data(), n, pol.data());
    pairs.resize(size_t(n / 2));
    terms.resize(size_t(n / 2));
    for (int p = 0; p < n / 2; ++p) {
      pairs[size_t(p)] = {pol[size_t(2 * p)], pol[size_t(2 * p + 1)], ref[size_t(2 * p)], ref[size_t(2 * p + 1)]};
      terms[size_t(p)] = preference_terms(phase_t<Recipe, I>::preference_loss, config().beta, pairs[size_t(p)]);
    }
  }
  template <int B, int T>
  static long count_pairs(const HostBatch<B, T>& mb) {
    std::vector<int32_t> seg;
    return mb.sequences(seg) / 2;
  }
  // The tokens of the chosen answers (even sequence ids: the pairs are (chosen, rejected) in order).
  static long count_chosen(const std::vector<int32_t>& seg) {
    long n = 0;
    for (int32_t s : seg) n += s >= 0 && s % 2 == 0;
    return n;
  }
  template <int B, int T>
  static long count_chosen(const HostBatch<B, T>& mb) {
    std::vector<int32_t> seg;
    mb.sequences(seg);
    return count_chosen(seg);
  }
  // A preference step: per micro-batch the reference's and the policy's forward give the pairs' terms, then one
  // forward and backward with each answer token's gradient weighted by -dL/dlog p / pairs (the global batch's; with
  // rpo_alpha, each chosen token's also by alpha / the global batch's chosen tokens: preference.hpp); the step's
  // loss is the mean over the pairs (plus alpha x the chosen answers' mean negative log-likelihood).
  template <int I, class W>
  void start_preference_step(W& w, long s, bool refill) {
    auto& exec = *std::get<I>(execs_);
    const TrainConfig& c = config();
    const int N = dp_world();
    w.step = s;
    if (refill) {
      fill_step<I>(w, /*preference=*/true);
      KILN_CHECK(w.targets > 0, "preference step ", s + 1, ": the global batch holds no pair");
    }
    if (comm_) comm_->arrive(run_step_ - step_ + s + 1);
    w.lr = learning_rate(c, s);
    state_->begin_step();
    w.stats = {};
    std::vector<int32_t> seg;
    std::vector<PairLogps> pairs;
    std::vector<PairTerms> terms;
    for (auto& mb : w.micro) {
      preference_pairs<I>(mb, seg, pairs, terms);
      mb.weights.assign(mb.tokens.size(), 0.0f);
      double loss = 0, chosen_nll = 0;
      for (size_t p = 0; p < pairs.size(); ++p) {
        w.stats.add(pairs[p], terms[p]);
        loss += terms[p].loss;
        chosen_nll -= pairs[p].policy_chosen;
      }
      w.stats.chosen_tokens += double(count_chosen(seg));
      // the step's loss sum is divided by its pairs: alpha x nll enters as its share of alpha x nll x pairs
      if (c.rpo_alpha > 0) loss += c.rpo_alpha * chosen_nll * double(w.targets) / w.chosen_tokens;
      for (size_t k = 0; k < seg.size(); ++k)
        if (seg[k] >= 0)
          mb.weights[k] = float(answer_token_weight(terms[size_t(seg[k] / 2)], seg[k] % 2 == 0, double(w.targets),
                                                    w.chosen_tokens, c.rpo_alpha));
      exec.forward_backward(*state_, mb.view(), 1.0f);
      mb.weights.clear();
      state_->add_loss(loss);  // the step's loss is the pairs', for the guard and the log
    }
    if (N > 1) {  // the logged statistics are the global batch's, as TRL gathers them
      double v[PreferenceStats::kFields];
      w.stats.to(v);
      dp_comm()->allreduce_sum(v, PreferenceStats::kFields, "the all-reduce of a step's preference statistics");
      w.stats.from(v);
      state_->all_reduce(*dp_comm());
    }
    state_->end_step(StepArgs{w.lr, c.beta1, c.beta2, c.adam_eps, c.weight_decay, c.clip, double(w.targets)});
  }
  // The held-out pairs: the mean loss (and, in eval_extra, the accuracy, the margin and the log-probabilities).
  template <int I>
  double evaluate_preference() {
    using St = phase_stage<Recipe, I>;
    auto val = data_.make_eval();
    HostBatch<St::micro_batch, St::seq_len> mb;
    PreferenceStats st;
    std::vector<int32_t> seg;
    std::vector<PairLogps> pairs;
    std::vector<PairTerms> terms;
    const int N = dp_world(), me = dp_rank();
    for (int i = 0; i < config().eval_batches; ++i) {
      mb.fill_as(*val, true);
      if (i % N != me) continue;
      preference_pairs<I>(mb, seg, pairs, terms);
      for (size_t p = 0; p < pairs.size(); ++p) st.add(pairs[p], terms[p]);
      st.chosen_tokens += double(count_chosen(seg));
    }
    if (N > 1) {
      double v[PreferenceStats::kFields];
      st.to(v);
      dp_comm()->allreduce_sum(v, PreferenceStats::kFields, "the all-reduce of the held-out preference statistics");
      st.from(v);
    }
    eval_extra = {{"rewards/accuracies", st.accuracy()}, {"rewards/margins", st.margin()},
                  {"logps/chosen", st.mean(st.logp_chosen)}, {"logps/rejected", st.mean(st.logp_rejected)},
                  {"pairs", double(st.pairs)}};
    if (config().rpo_alpha > 0) eval_extra.push_back({"nll_loss", st.nll()});
    return st.batch_loss(config().rpo_alpha);
  }

  // Whether an evaluation follows phase step `done` (1-based): every eval_every steps, or where the phase's tokens
  // pass a multiple of eval_every_tokens.
  bool eval_due(const TrainConfig& c, long done) const {
    if (c.eval_every > 0 && done % c.eval_every == 0) return true;
    if (c.eval_every_tokens <= 0 || done <= 0) return false;
    const long per_step = phase_tokens_per_step();
    return done * per_step / c.eval_every_tokens > (done - 1) * per_step / c.eval_every_tokens;
  }
  long phase_tokens_per_step() const {
    return with_phase<Recipe>(phase_, [&]<int I>() {
      using St = phase_stage<Recipe, I>;
      return long(St::micro_batch) * St::seq_len * config().grad_accum * dp_world();
    });
  }

  // Whether the host needs the state right after phase step s (0-based): then step s + 1 does not start early.
  bool must_sync(const TrainConfig& c, long s) const {
    const long done = s + 1;
    return done >= c.steps || eval_due(c, done) || stage_starts(c, done) ||
           (c.checkpoint_every > 0 && done % c.checkpoint_every == 0) || (wants_state && wants_state(run_step_ + 1, done));
  }
  // Whether phase step s (0-based) is the first of a later data stage (TrainConfig::stages). There the loss guard's
  // window starts over: a stage that brings in other data moves the loss, and the old window would call the new
  // data's first steps spikes and stop the run. (s never starts early, must_sync says, so the backend's copy of the
  // window changes at the same step as the host's.)
  static bool stage_starts(const TrainConfig& c, long s) {
    for (const auto& st : c.stages)
      if (st.start > 0 && long(st.start * double(c.steps)) == s) return true;
    return false;
  }
  void restart_guard_at_stage(const TrainConfig& c, long s) {
    if (!stage_starts(c, s)) return;
    guard_ = LossGuard(c.guard);
    give_step_state();
  }
  void give_step_state() {
    const auto g = guard_.state();
    GuardCounters k = guard_.config().counters();
    k.count = g.count, k.bad_in_a_row = g.bad_in_a_row;
    state_->set_step_state(k, g.ring.data(), updates_);
  }

  // The phase's steps. On a backend whose steps overlap, step s + 1 starts before step s's record is read (unless
  // must_sync): the device never waits for the host's bookkeeping, logging or next batches.
  template <int I>
  bool run_phase(bool quiet, const std::function<void(const Log&)>& on_log) {
    using St = phase_stage<Recipe, I>;
    constexpr int B = St::micro_batch, T = St::seq_len;
    const TrainConfig& c = config();
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const long first = step_;
    auto last = t0;
    long tokens_since = 0;
    double flops_since = 0;
    last_step_time_ = t0;
    enum class Next { go, stop, rolled_back };
    // Reads the record of `w` and does everything the host does after a step. ahead: the next step is running.
    auto finish = [&](StepWork<B, T>& w, StepWork<B, T>* ahead) {
      const StepRecord r = state_->step_record();
      const long s = w.step;
      const auto verdict = Verdict(r.verdict);
      guard_.adopt(r.loss, verdict);
      const bool skipped = verdict != Verdict::ok;
      if (!skipped) ++updates_;
      KILN_CHECK(r.updates == updates_ && r.bad_in_a_row == guard_.bad_in_a_row(), "trainer: the backend counts ",
                 r.updates, " updates and ", r.bad_in_a_row, " bad steps in a row, the host ", updates_, " and ",
                 guard_.bad_in_a_row(), " (a bug: the two copies of the step's state parted)");
      const double loss = r.loss, norm = r.grad_norm, lr = r.lr;
      losses_.push_back(loss);
      ++step_;
      ++run_step_;
      tokens_since += long(B) * T * c.grad_accum * dp_world();
      tokens_seen_ += long(B) * T * c.grad_accum * dp_world();
      flops_since += w.flops;
      if (skipped && !quiet) {
        if (verdict == Verdict::not_finite)
          std::printf("step %6ld: loss %g, grad norm %g not finite: step skipped (%d bad in a row)\n", run_step_, loss,
                      norm, guard_.bad_in_a_row());
        else
          std::printf("step %6ld: loss spike %.4f (z = %.1f over the last %d steps > %.1f): step skipped (%d bad in a row)\n",
                      run_step_, loss, r.zscore, c.guard.spike_window, c.guard.spike_zscore, guard_.bad_in_a_row());
      }
      Next next = Next::go;
      if (guard_.must_roll_back()) {
        if (ahead) {  // the step after it ran on the state being abandoned: it runs again once that is restored
          state_->step_record();
          in_flight_ = false;
          next = Next::rolled_back;
        }
        const int bad = guard_.bad_in_a_row();
        KILN_CHECK(rollback && rollback(), bad, " bad steps in a row up to step ", run_step_,
                   " and no checkpoint to roll back to: stopping (lower --lr, raise --spike-zscore, or check the data)");
        guard_.clear_bad();
        give_step_state();
        if (!quiet)
          std::printf("step %6ld: %d bad steps in a row: rolled back to the checkpoint of step %ld; the data goes on "
                      "from here, so the offending batches are not replayed\n", s + 1, bad, run_step_);
      }
      const auto now_step = clock::now();
      std::vector<std::pair<const char*, double>> extra;
      if (w.stats.pairs)
        extra = {{"rewards/chosen", w.stats.mean(w.stats.reward_chosen)},
                 {"rewards/rejected", w.stats.mean(w.stats.reward_rejected)},
                 {"rewards/accuracies", w.stats.accuracy()}, {"rewards/margins", w.stats.margin()},
                 {"logps/chosen", w.stats.mean(w.stats.logp_chosen)},
                 {"logps/rejected", w.stats.mean(w.stats.logp_rejected)}};
      if (w.stats.pairs && c.rpo_alpha > 0) extra.push_back({"nll_loss", w.stats.nll()});
      if (on_step) {
        const double dt = std::chrono::duration<double>(now_step - last_step_time_).count();
        on_step({run_step_, loss, lr, norm, dt > 0 ? double(B) * T * c.grad_accum * dp_world() / dt : 0, skipped, phase_,
                 step_, extra});
      }
      last_step_time_ = now_step;
      const bool log_now = step_ % c.log_every == 0 || s == first || step_ == c.steps;
      if (log_now) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last).count();
        const double tps = dt > 0 ? double(tokens_since) / dt : 0;
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        const double eta = step_ > first ? elapsed / double(step_ - first) * double(c.steps - step_) : 0.0;
        if (!quiet) {
          const double flops = dt > 0 ? flops_since / dt : 0.0;
          char mfu[32] = "", where[48] = "";
          if (c.peak_tflops > 0) std::snprintf(mfu, sizeof mfu, " | MFU %4.1f%%", 100.0 * flops / (c.peak_tflops * 1e12));
          if (phase_count > 1) std::snprintf(where, sizeof where, " (%.16s %ld/%ld)", Phs::names[phase_].data(), step_, c.steps);
          const long total = phase_count > 1 ? run_step_ - step_ + c.steps : c.steps;
          char pref[64] = "";
          if (w.stats.pairs)
            std::snprintf(pref, sizeof pref, " | pref acc %.2f margin %+.3f", w.stats.accuracy(), w.stats.margin());
          std::printf("step %6ld/%ld%s | loss %.4f%s | lr %.2e | grad norm %7.3f | %7.0f tok/s | %6.1f GFLOP/s%s | "
                      "mem %s | ETA %s\n",
                      run_step_, total, where, loss, pref, lr, norm, tps, flops * 1e-9, mfu, resident_memory().c_str(),
                      format_duration(eta).c_str());
          std::fflush(stdout);
        }
        if (on_log) on_log({run_step_, loss, lr, norm, tps, skipped, phase_, step_, extra});
        last = now;
        tokens_since = 0;
        flops_since = 0;
      }
      if (eval_due(c, step_) && step_ < c.steps) {  // must_sync: nothing is running
        const double v = evaluate();
        if (on_eval) on_eval(run_step_, v);
        if (!quiet)
          std::printf("  held-out loss %.4f at step %ld (training data: %s)%s\n", v, run_step_, data_.train->where().c_str(),
                      eval_extra_text().c_str());
      }
      if (after_step && after_step(run_step_)) return Next::stop;
      return next;
    };

    give_step_state();
    StepWork<B, T> cur, ahead;
    if (step_ < c.steps) {
      restart_guard_at_stage(c, step_);
      start_step<I>(cur, step_, true);
    }
    bool stopping = false;
    while (cur.step >= 0) {
      const bool early = Backend::overlap_steps && !stopping && !must_sync(c, cur.step);
      if (early) start_step<I>(ahead, cur.step + 1, true);
      in_flight_ = early;
      const Next n = finish(cur, early ? &ahead : nullptr);
      const bool was_ahead = in_flight_;  // false again after a rollback drained the step ahead
      in_flight_ = false;
      if (n == Next::stop || stopping) {
        if (!was_ahead) return false;
        stopping = true;  // the running step is finished first (its after_step sees the state exact), then stop
      }
      if (n == Next::rolled_back) {
        std::swap(cur, ahead);
        restart_guard_at_stage(c, step_);
        start_step<I>(cur, step_, /*refill=*/false);
      } else if (early) {
        std::swap(cur, ahead);
      } else if (step_ < c.steps) {
        restart_guard_at_stage(c, step_);
        start_step<I>(cur, step_, true);
      } else {
        cur.step = -1;
      }
    }
    return true;
  }

  template <int... I>
  static auto executor_tuple(std::integer_sequence<int, I...>) -> std::tuple<std::unique_ptr<PhaseExecutor<I>>...>;

  parallel::Communicator* dp_comm() const { return tp > 1 ? dp_comm_.get() : comm_; }
  const std::vector<float>& full(backend::Tensor t) const {
    return full_[t == backend::Tensor::params ? 0 : t == backend::Tensor::adam_m ? 1 : 2];
  }

  std::unique_ptr<State> state_;
  std::unique_ptr<Reference> ref_;  // preference phases: the frozen reference
  // tensor parallelism: the group's and the data-parallel group's communicators, this rank's place, the full
  // buffers host() shows (params, adam_m, adam_v: gathered by sync_host, scattered by commit)
  std::unique_ptr<parallel::Communicator> tp_comm_, dp_comm_;
  int dp_world_ = 1, dp_rank_ = 0;
  std::vector<float> full_[3];
  decltype(executor_tuple(std::make_integer_sequence<int, phase_count>{})) execs_;  // the current phase's only
  std::chrono::steady_clock::time_point last_step_time_ = std::chrono::steady_clock::now();
};

}  // namespace kiln
