// kiln/backend/cpu.hpp: the CPU backend (fp32 everything; the reference). It writes no op order: its executors walk
// the plan's programs (kiln/plan/program.hpp) and call one kernel per op.
//
//   cpu::State<M>               parameters, gradients, AdamW moments (flat fp32 buffers in the parameter table's
//                               layout), the gradient norm's partial sums; init, zero-grad, norm, the fused AdamW;
//                               the step's decision (kiln/core/step_rule.hpp: loss, guard, update) on its copy of
//                               the loss guard's window
//   cpu::Frozen<M>              parameters only: a preference phase's frozen reference model, which an executor's
//                               forward() runs as it runs a state
//   cpu::Executor<M, B, T>      the activation arena of one phase shape; runs the training program (forward, loss,
//                               backward of a micro-batch) and the evaluation program (forward and loss), and reads
//                               the per-token losses and log-probabilities they leave in the arena
//   cpu::Decoder<M, MaxT>       the decode program: one token at a time against a KV cache of MaxT positions
//   backend::Cpu                the four, as a trainer names a backend
// Matrix products go through OpenBLAS (kernels/gemm.hpp); everything else is Kiln's OpenMP kernels. The kernels
// allocate nothing: their scratch is the programs' arena; a micro-batch is checked once where it enters.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/attention_blocked.hpp"
#include "kernels/attention_decode.hpp"
#include "kernels/cross_entropy.hpp"
#include "kernels/embedding.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rope.hpp"
#include "kernels/swiglu.hpp"
#include "kiln/backend/batch.hpp"
#include "kiln/backend/cpu_names.hpp"
#include "kiln/backend/init.hpp"
#include "kiln/core/error.hpp"
#include "kiln/core/memory.hpp"
#include "kiln/core/step_rule.hpp"
#include "kiln/parallel/comm.hpp"
#include "kiln/parallel/layout.hpp"
#include "kiln/parallel/tensor_parallel.hpp"
#include "kiln/plan/program.hpp"

namespace kiln {

namespace backend {

namespace cpu {

template <DecoderModel M>
class State {
 public:
  using Params = plan::ParamPlan<M>;
  static constexpr size_t floats = Params::table.total;

  State()
      : p_(floats), g_(floats), partials_(kernels::sum_squares_partials(floats)),
        ranges_{{0, floats, true}} {}

  void init(double std, uint64_t seed) { init_parameters<M>(p_.data(), std, seed); }
  void zero_grad() { g_.zero(); }
  // Global L2 norm of the gradients, deterministic (ZeRO-1: of the reduced gradients, every rank's shard).
  double grad_norm() {
    if (tp_) {  // tensor parallelism: this rank's slices summed over the group, the replicated norms once
      double split = 0, whole = 0;
      for (const auto& e : Params::table.entries)
        (tp_split(e) == TpSplit::whole ? whole : split) +=
            kernels::sum_squares(g_.data() + e.offset, e.count(), partials_.data());
      tp_->allreduce_sum(&split, 1, "the tensor-parallel sum of the gradient norm");
      return std::sqrt(split + whole);
    }
    if (!zero_) return std::sqrt(kernels::sum_squares(g_.data(), floats, partials_.data()));
    std::fill(partials_.data(), partials_.data() + partials_.size(), 0.0);
    kernels::sum_squares(gs_.data(), shard_.size(), partials_.data() + shard_.begin / kernels::kSumChunk);
    zero_->allreduce_sum(partials_.data(), partials_.size(), "the all-reduce of the gradient norm's chunk sums (ZeRO-1)");
    double total = 0;  // as sum_squares adds them
    for (size_t c = 0; c < partials_.size(); ++c) total += partials_[c];
    return std::sqrt(total);
  }
  // The no-decay mask: sorted ranges covering the flat buffer (train/optimizer.hpp computes them from the table).
  void set_decay(std::vector<plan::DecayRange> r) {
    ranges_ = std::move(r);
    shard_ranges_ = parallel::shard_decay_ranges(ranges_, shard_);
  }
  // One AdamW update (a.step is 1-based), the clip folded into a.grad_scale. ZeRO-1: of this rank's shard, from
  // its reduced gradients; the weights are then all-gathered.
  void adamw(const AdamWStep& a) {
    moments();
    if (!zero_)
      return kernels::adamw_flat(p_.data(), g_.data(), m_.data(), v_.data(), floats, ranges_.data(), int(ranges_.size()), a);
    kernels::adamw_flat(p_.data() + shard_.begin, gs_.data(), m_.data(), v_.data(), shard_.size(), shard_ranges_.data(),
                        int(shard_ranges_.size()), a);
    zero_->allgather(p_.data(), counts_.data(), "the all-gather of the updated weights (ZeRO-1)");
  }

  // ZeRO-1 (Layout<..., ZeRO<1>>) over the ranks of `comm`: this rank keeps the AdamW moments of its shard only
  // (parallel::shard_of: contiguous, in rank order, cut at the gradient norm's chunks). Each step the gradients
  // are reduce-scattered, in the buckets DP all-reduces, into the shard's reduced gradients; the norm adds every
  // rank's chunk sums in the order of one process (the same bits); the update runs on the shard and the weights
  // are all-gathered. So a ZeRO-1 step takes the bits of a DP step wherever the reduce-scatter sums as the
  // all-reduce does (two ranks: a + b either way). Call before the moments are read or written; they are zero.
  // With one rank nothing changes.
  void shard(parallel::Communicator& comm) {
    const int n = comm.world(), me = comm.rank();
    if (n == 1) return;
    zero_ = &comm;
    cuts_.resize(size_t(n) + 1);
    counts_.resize(size_t(n));
    for (int r = 0; r < n; ++r) cuts_[size_t(r)] = parallel::shard_of(floats, r, n, kernels::kSumChunk).begin;
    cuts_[size_t(n)] = floats;
    for (int r = 0; r < n; ++r) counts_[size_t(r)] = cuts_[size_t(r) + 1] - cuts_[size_t(r)];
    KILN_CHECK(floats <= size_t(INT32_MAX), "ZeRO-1 over ", comm.name(), ": a flat buffer of ", floats, " floats is "
               "beyond the all-gather's int offsets (2^31 - 1)");
    shard_ = {cuts_[size_t(me)], cuts_[size_t(me) + 1]};
    KILN_CHECK(m_.size() == 0, "shard: call it before the moments are used");
    gs_ = Buffer<float>(shard_.size());
    shard_ranges_ = parallel::shard_decay_ranges(ranges_, shard_);
  }
  // Tensor parallelism (a TP rank's state, of tp_local<M, t>): the group the gradient norm sums over.
  void set_tensor_parallel(parallel::Communicator* group) {
    KILN_CHECK(!zero_, "ZeRO-1 with tensor parallelism is not built");
    tp_ = group;
  }
  // The flat buffer's range whose moments this state holds (all of it unless sharded).
  parallel::Shard optimizer_shard() const { return shard_; }

  // A training step (the trainer's calls): begin_step(); the executor's accumulate() for each micro-batch;
  // end_step(args): the gradient norm, the decision of core/step_rule.hpp and, when it accepts, the update;
  // step_record() returns what was decided. Here each call has finished when it returns; a device backend
  // decides on the device and the record arrives later. set_step_state() gives it the loss guard's window and
  // counters and the update count (a new phase, a loaded checkpoint).
  void set_step_state(const GuardCounters& g, const double* ring, long updates) {
    KILN_CHECK(g.window >= 2 && g.window <= kMaxSpikeWindow, "set_step_state: a spike window of ", g.window,
               " (2 to ", kMaxSpikeWindow, " expected)");
    KILN_CHECK(unread_ == 0, "set_step_state: ", unread_, " steps ended and not read (step_record first)");
    guard_ = g;
    ring_.assign(ring, ring + g.window);
    updates_ = updates;
  }
  void begin_step() {
    zero_grad();
    loss_sum_ = 0;
  }
  void add_loss(double summed) { loss_sum_ += summed; }
  // Data parallelism: the gradients and the loss summed over the ranks, before end_step (ZeRO-1: each rank's shard
  // of the gradients, into its reduced gradients; the full buffer's other floats are then left as they were).
  // During the step's last micro-batch the executor reports each parameter's gradient as it becomes final
  // (gradient_ready): runs of them next to each other (kBucketFloats at least) start their sums while the backward
  // goes on; all_reduce starts the rest, waits for all of them and sums the loss. Sums of the same values in
  // buckets or whole are the same bits (a bucket is a slice of the one sum).
  static constexpr size_t kBucketFloats = size_t(1) << 20, kGap = 256;  // 4 MiB; the table's padding is smaller
  void gradient_ready(size_t begin, size_t end, parallel::Communicator& comm) {
    // not next to the run (padding between two tensors is next to them: its zeros are summed alike)
    if (run_end_ > run_begin_ && (end + kGap < run_begin_ || begin > run_end_ + kGap)) flush(comm);
    if (run_end_ == run_begin_) run_begin_ = begin, run_end_ = end;
    run_begin_ = std::min(run_begin_, begin);
    run_end_ = std::max(run_end_, end);
    if (run_end_ - run_begin_ >= kBucketFloats) flush(comm);
  }
  void all_reduce(parallel::Communicator& comm) {
    flush(comm);
    size_t at = 0;  // what no bucket covered (nothing, when the executor reported every tensor)
    for (const auto& [b, e] : reduced_) {
      if (b > at) start_sum(comm, at, b, "the all-reduce of the gradients");
      at = std::max(at, e);
    }
    if (at < floats) start_sum(comm, at, floats, "the all-reduce of the gradients");
    comm.finish_all("the all-reduce of the gradients");
    reduced_.clear();
    comm.allreduce_sum(&loss_sum_, 1, "the all-reduce of the loss");
  }
  void end_step(const StepArgs& a) {
    KILN_CHECK(!ring_.empty(), "end_step: set_step_state was not called (the loss guard's window is not there)");
    KILN_CHECK(unread_ < kInFlight, "end_step: ", unread_, " steps ended and not read (step_record)");
    AdamWStep u{};
    StepRecord& r = records_[size_t((ended_ % kInFlight))];
    r = decide_step(a, loss_sum_, grad_norm(), ring_.data(), guard_, updates_, &u);
    if (r.verdict == int(Verdict::ok)) adamw(u);
    ++ended_;
    ++unread_;
  }
  StepRecord step_record() {
    KILN_CHECK(unread_ > 0, "step_record: no step has ended since the last record was read");
    return records_[size_t((ended_ - unread_--) % kInFlight)];
  }
  // Steps ended and not yet read, at most (as on a device backend: the trainer reads step s after ending s + 1).
  static constexpr int kInFlight = 2;
  long steps_ended() const { return ended_; }

  // Kernels' view (host memory here).
  const float* params() const { return p_.data(); }
  float* grads() { return g_.data(); }

  // Host access for checkpoints, export and tests (adam_m and adam_v: the optimizer_shard()'s floats, from its
  // begin; grads: the local gradients, not summed where ZeRO-1 reduced them elsewhere): host() stays valid until
  // the state changes; after writing through host_mut(), commit() makes the change visible to the kernels (here the
  // same memory: nothing to copy; a device backend downloads into and uploads from staging buffers).
  const float* host(Tensor t) const { return const_cast<State*>(this)->buf(t).data(); }
  float* host_mut(Tensor t) { return buf(t).data(); }
  void commit(Tensor) {}

 private:
  Buffer<float>& buf(Tensor t) {
    switch (t) {
      case Tensor::params: return p_;
      case Tensor::grads: return g_;
      case Tensor::adam_m: return moments(), m_;
      default: return moments(), v_;
    }
  }
  Buffer<float> p_, g_, m_, v_;  // the parameter table's layout, each (ZeRO-1: m_ and v_ the shard's)
  // The moments are allocated at their first use, so that ZeRO-1's shard (shard(), before it) is all a rank holds.
  void moments() {
    if (m_.size() == 0 && shard_.size() > 0) m_ = Buffer<float>(shard_.size()), v_ = Buffer<float>(shard_.size());
  }
  Buffer<double> partials_;     // sum_squares chunk sums
  std::vector<plan::DecayRange> ranges_;
  // data parallelism: the run of ready gradients not yet started, and the ranges started this step (sorted)
  void flush(parallel::Communicator& comm) {
    if (run_end_ <= run_begin_) return;
    start_sum(comm, run_begin_, run_end_, "the all-reduce of a gradient bucket");
    reduced_.insert(std::upper_bound(reduced_.begin(), reduced_.end(), std::pair{run_begin_, run_end_}),
                    {run_begin_, run_end_});
    run_begin_ = run_end_ = 0;
  }
  // Starts the sum over the ranks of the gradients [b, e): an all-reduce in place, or (ZeRO-1) a reduce-scatter
  // of it into the reduced gradients of this rank's part of it, in slices of at most 2^28 floats (MPI's int counts).
  void start_sum(parallel::Communicator& comm, size_t b, size_t e, const char* what) {
    if (!zero_) return comm.start_allreduce_sum(g_.data() + b, e - b, what);
    constexpr size_t kSlice = size_t(1) << 28;
    for (size_t at = b; at < e; at += kSlice) {
      const size_t end = std::min(e, at + kSlice);
      std::vector<size_t> c(counts_.size());
      for (size_t r = 0; r < c.size(); ++r)
        c[r] = std::max(at, std::min(end, cuts_[r + 1])) - std::max(at, std::min(end, cuts_[r]));
      const size_t mine = std::clamp(at, shard_.begin, shard_.end) - shard_.begin;
      comm.start_reduce_scatter_sum(g_.data() + at, gs_.data() + mine, c.data(),
                                    "the reduce-scatter of the gradients (ZeRO-1)");
    }
  }
  size_t run_begin_ = 0, run_end_ = 0;
  std::vector<std::pair<size_t, size_t>> reduced_;
  // ZeRO-1: the communicator, the shards' bounds (world + 1 cuts) and sizes, this rank's shard, its reduced
  // gradients and its decay ranges
  parallel::Communicator* zero_ = nullptr;
  parallel::Communicator* tp_ = nullptr;  // tensor parallelism: the group
  std::vector<size_t> cuts_, counts_;
  parallel::Shard shard_{0, floats};
  Buffer<float> gs_;
  std::vector<plan::DecayRange> shard_ranges_ = parallel::shard_decay_ranges(ranges_, shard_);
  // the step's decision: the guard's window and counters, the update count, the loss summed so far, the record
  std::vector<double> ring_;
  GuardCounters guard_{};
  long updates_ = 0;
  double loss_sum_ = 0;
  StepRecord records_[kInFlight] = {};
  long ended_ = 0;
  int unread_ = 0;
};

// A frozen copy of a model's parameters (fp32, as a state's): a preference phase's reference (trainer.hpp), which an
// executor's forward() runs as it runs a state. It holds no gradients or moments; host access as a state's.
template <DecoderModel M>
class Frozen {
 public:
  static constexpr size_t floats = plan::ParamPlan<M>::table.total;
  Frozen() : p_(floats) {}
  const float* params() const { return p_.data(); }
  const float* host(Tensor t) const { return expect_params(t), p_.data(); }
  float* host_mut(Tensor t) { return expect_params(t), p_.data(); }
  void commit(Tensor t) { expect_params(t); }

 private:
  static void expect_params(Tensor t) {
    KILN_CHECK(t == Tensor::params, "a frozen reference model holds its parameters only, not tensor ", int(t));
  }
  Buffer<float> p_;
};

// Runs one op of a program on the CPU (S = C = float). Shared by the executors below.
template <DecoderModel M, class P>
struct OpRunner {
  using Params = plan::ParamPlan<M>;
  static constexpr int H = M::hidden, F = M::ffn, V = M::vocab, NH = M::heads, NKV = M::kv_heads, HD = M::head_dim;
  static constexpr int Q = M::q_dim, QKV = M::qkv_dim, KV = M::kv_dim;
  static constexpr float eps = float(M::eps);
  static constexpr float attn_scale = 1.0f / std::sqrt(float(HD));  // scores = q.k / sqrt(head_dim)

  std::byte* arena;
  const float* params;
  float* grads;
  float grad_scale;
  const kernels::RopeTable<float, HD>* rope;
  int len = 0;                  // decode: tokens already in the cache
  float* logits_out = nullptr;  // eval: all logits (tests)
  const float* row_weight = nullptr;  // training: each token's loss-gradient weight (Batch::weights; nullptr: 1)
  double loss = 0;
  // Tensor parallelism (M is then a TP rank's tp_local model): the group's sums after the row-parallel products
  // (o_proj, down_proj) forward and the column-parallel ones' input gradients (q/k/v, gate/up) backward; the
  // vocabulary-parallel embedding and loss. stats: the loss's 3 x loss_chunk row statistics.
  parallel::Communicator* tp = nullptr;
  int vocab_begin = 0;
  float* stats = nullptr;

  template <class T = float>
  T* at(int k, const plan::Op& op) const {
    return reinterpret_cast<T*>(arena + P::data.bufs[size_t(op.use[k].buf)].offset);
  }
  const float* w(const plan::Op& op, int entry = 0) const {
    return params + Params::table.entries[size_t(op.param + entry)].offset;
  }
  float* gw(const plan::Op& op, int entry = 0) const {
    return grads + Params::table.entries[size_t(op.param + entry)].offset;
  }
  int blocks(const plan::Op& op, int k) const { return int(P::data.bufs[size_t(op.use[k].buf)].dims[0]); }

  void operator()(const plan::Op& op) {
    using plan::OpKind;
    const bool fwd = op.pass != plan::Pass::backward;
    const int R = int(op.rows);
    switch (op.kind) {
      case OpKind::embedding:
        if (tp) return embedding_tp(op, fwd, R);
        if (fwd) kernels::embedding_forward<float, H>(at<int32_t>(0, op), R, w(op), at(1, op));
        else kernels::embedding_backward<float, float, H>(at<int32_t>(0, op), R, at(1, op), gw(op));
        return;
      case OpKind::rmsnorm:
        if (fwd) kernels::rmsnorm_forward<float, float, H>(at(0, op), w(op), at(1, op), at(2, op), R, eps);
        else
          kernels::rmsnorm_backward<float, float, H>(at(0, op), w(op), at(1, op), at(2, op), at(3, op), gw(op), at(4, op),
                                                     blocks(op, 4), R, op.accumulate_dx);
        return;
      case OpKind::head_rmsnorm: head_rmsnorm(op, fwd, R); return;
      case OpKind::gemm:
        if (fwd) kernels::linear_forward<float>(at(0, op), w(op), at(1, op), R, int(op.in), int(op.out));
        else kernels::linear_backward<float>(at(0, op), w(op), at(1, op), at(2, op), gw(op), R, int(op.in), int(op.out), false);
        if (tp) {
          const bool row_parallel = tp_split(Params::table.entries[size_t(op.param)]) == TpSplit::cols;
          if (fwd && row_parallel)  // each rank's heads' (or ffn columns') share of the output
            tp->allreduce_sum(at(1, op), size_t(R) * size_t(op.out), "the tensor-parallel sum of a layer's output");
          else if (!fwd && !row_parallel)  // each rank's share of the input gradient
            tp->allreduce_sum(at(2, op), size_t(R) * size_t(op.in), "the tensor-parallel sum of an input gradient");
        }
        return;
      case OpKind::rope:
        if (fwd) kernels::rope_forward<float, float, NH + NKV, HD>(at(1, op), QKV, at<int32_t>(0, op), R, *rope);
        else kernels::rope_backward<float, float, NH + NKV, HD>(at(1, op), QKV, at<int32_t>(0, op), R, *rope);
        return;
      case OpKind::attention:  // by query blocks, the products through the GEMM
        if (fwd)
          kernels::attention_forward_blocked<float, NH, NKV, HD, int(P::attn_block)>(
              at(0, op), at<int32_t>(1, op), at(2, op), at(3, op), at(4, op), P::B, P::T, attn_scale);
        else
          kernels::attention_backward_blocked<float, NH, NKV, HD, int(P::attn_block)>(
              at(0, op), at<int32_t>(1, op), at(2, op), at(3, op), at(4, op), at(5, op), at(6, op), P::B, P::T, attn_scale);
        return;
      case OpKind::add: {
        const float* x = at(0, op);
        float* y = at(1, op);
        const std::ptrdiff_t n = std::ptrdiff_t(op.rows * op.in);
#pragma omp parallel for simd schedule(static)
        for (std::ptrdiff_t i = 0; i < n; ++i) y[i] += x[i];
        return;
      }
      case OpKind::swiglu:
        if (fwd) kernels::swiglu_forward<float, float, F>(at(0, op), at(1, op), R);
        else kernels::swiglu_backward<float, float, F>(at(0, op), at(1, op), at(2, op), R);
        return;
      case OpKind::lm_head_loss: {
        const bool train = op.grad;
        if (tp) {
          struct Group {
            parallel::Communicator* c;
            void max(float* p, size_t n) { c->allreduce_max(p, n, "the vocabulary-parallel loss's row maxima"); }
            void sum(float* p, size_t n) { c->allreduce_sum(p, n, "the vocabulary-parallel loss's sums"); }
          } group{tp};
          KILN_CHECK(!logits_out, "logits of every position are not gathered under tensor parallelism");
          loss = kernels::lm_head_cross_entropy_vocab_parallel<float, V, H>(
              at(0, op), w(op), at<int32_t>(1, op), R, vocab_begin, float(M::z_loss), grad_scale,
              train ? at(5, op) : nullptr, train ? gw(op) : nullptr, at(4, op), stats, int(P::loss_chunk), at(2, op),
              at(3, op), group);
          return;
        }
        loss = kernels::lm_head_cross_entropy<float, V, H>(at(0, op), w(op), at<int32_t>(1, op), R, float(M::z_loss),
                                                           grad_scale, train ? at(5, op) : nullptr,
                                                           train ? gw(op) : nullptr, at(4, op), int(P::loss_chunk),
                                                           at(2, op), at(3, op), logits_out, train ? row_weight : nullptr);
        return;
      }
      case OpKind::kv_append: {
        const float* qkv = at(0, op);
        float* kc = at(1, op) + (size_t(op.layer) * P::MaxT + size_t(len)) * KV;
        float* vc = at(2, op) + (size_t(op.layer) * P::MaxT + size_t(len)) * KV;
        std::memcpy(kc, qkv + Q, sizeof(float) * KV);
        std::memcpy(vc, qkv + Q + KV, sizeof(float) * KV);
        return;
      }
      case OpKind::attention_decode: {
        const size_t layer = size_t(op.layer) * P::MaxT * KV;
        kernels::attention_decode<float, float, NH, NKV, HD>(at(0, op), at(1, op) + layer, at(2, op) + layer, len + 1,
                                                             at(3, op), at(4, op), P::MaxT, attn_scale);
        return;
      }
      case OpKind::lm_head_logits:
        kernels::linear_forward<float>(at(0, op), w(op), at(1, op), 1, H, V);
        return;
    }
  }

  // The vocabulary-parallel embedding: this rank's rows [vocab_begin, vocab_begin + V); a token elsewhere gives 0
  // here, and the sum over the group is its row. Backward: this rank's rows only.
  void embedding_tp(const plan::Op& op, bool fwd, int R) {
    const int32_t* tokens = at<int32_t>(0, op);
    float* x = at(1, op);
    if (fwd) {
#pragma omp parallel for schedule(static)
      for (int r = 0; r < R; ++r) {
        const int k = tokens[r] - vocab_begin;
        float* row = x + size_t(r) * H;
        if (k >= 0 && k < V) std::memcpy(row, w(op) + size_t(k) * H, sizeof(float) * H);
        else std::memset(row, 0, sizeof(float) * H);
      }
      tp->allreduce_sum(x, size_t(R) * H, "the vocabulary-parallel embedding's sum");
      return;
    }
    float* g = gw(op);
    for (int r = 0; r < R; ++r) {  // in row order: the same sums as embedding_backward's
      const int k = tokens[r] - vocab_begin;
      if (k < 0 || k >= V) continue;
      const float* d = x + size_t(r) * H;
      float* gr = g + size_t(k) * H;
      for (int j = 0; j < H; ++j) gr[j] += d[j];
    }
  }

  // QK-norm: each q head with q_norm, each k head with k_norm (over head_dim); v passes through.
  void head_rmsnorm(const plan::Op& op, bool fwd, int R) {
    if constexpr (M::qk_norm) {
      if (fwd) {
        const float* raw = at(0, op);
        float* qkv = at(1, op);
        float* rstd = at(2, op);
        for (int h = 0; h < NH + NKV; ++h)
          kernels::rmsnorm_forward_strided<float, float, HD>(raw + h * HD, QKV, w(op, h < NH ? 0 : 1), qkv + h * HD, QKV,
                                                             rstd + size_t(h) * R, R, eps);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < R; ++r)
          std::memcpy(qkv + size_t(r) * QKV + Q + KV, raw + size_t(r) * QKV + Q + KV, sizeof(float) * KV);
      } else {
        const float* raw = at(0, op);
        const float* rstd = at(1, op);
        const float* dqkv = at(2, op);
        float* draw = at(3, op);
        float* partials = at(4, op);
        const int nb = blocks(op, 4) / 2;
        for (int h = 0; h < NH + NKV; ++h)
          kernels::rmsnorm_backward_strided<float, float, HD>(raw + h * HD, QKV, w(op, h < NH ? 0 : 1),
                                                              rstd + size_t(h) * R, dqkv + h * HD, QKV, draw + h * HD, QKV,
                                                              gw(op, h < NH ? 0 : 1), partials, nb, R, false);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < R; ++r)
          std::memcpy(draw + size_t(r) * QKV + Q + KV, dqkv + size_t(r) * QKV + Q + KV, sizeof(float) * KV);
      }
    }
  }
};

template <DecoderModel M>
constexpr double rope_theta() {
  return M::positional::any_rope ? M::positional::theta : 10000.0;
}

// The programs of one phase shape, (B, T) micro-batches.
// TPd > 1: a tensor-parallel rank's programs, of tp_local<Full, TPd> (its heads, ffn columns and vocabulary rows),
// summing with its group (set_tensor_parallel) where the cut requires; batches are checked against the full vocabulary.
template <DecoderModel Full, int B, int T, int TPd = 1>
class Executor {
  using M = std::conditional_t<(TPd > 1), tp_local<Full, TPd>, Full>;
  static_assert(check<M>());
  static_assert(TPd == 1 || !M::qk_norm, "TP<t>: QK-norm under tensor parallelism (its weights' gradients summed over "
                                         "the group) is not built");

 public:
  using Train = plan::TrainProgram<M, B, T, plan::Fp32>;
  using Eval = plan::EvalProgram<M, B, T, plan::Fp32>;
  static constexpr int R = B * T;
  static constexpr size_t arena_bytes = Train::arena_bytes > Eval::arena_bytes ? Train::arena_bytes : Eval::arena_bytes;

  Executor() : arena_(arena_bytes), rope_(T, rope_theta<M>(), M::positional::scaling) {}

  // Forward and backward of one micro-batch. Gradients are ADDED to the state's (gradient accumulation), scaled by
  // grad_scale (1 / the number of target tokens in the whole global batch). Returns the summed loss of the
  // micro-batch's targets (divide by their count for the mean).
  // The state may be of another model type with the same parameter table (a phase that changes RoPE theta).
  template <DecoderModel M0>
  double forward_backward(State<M0>& s, const Batch& b, float grad_scale) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the state's parameter table is not this model's");
    return run<Train>(s.params(), s.grads(), b, grad_scale);
  }

  // forward_backward, its loss added to the state's sum for end_step (a training step's micro-batch). With `comm`
  // (data parallelism, the step's last micro-batch) each parameter's gradient is handed to the state's bucketed
  // all-reduce as soon as the program's last op that adds to it has run.
  template <DecoderModel M0>
  void accumulate(State<M0>& s, const Batch& b, float grad_scale, parallel::Communicator* comm = nullptr) {
    if (!comm) return s.add_loss(forward_backward(s, b, grad_scale));
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the state's parameter table is not this model's");
    s.add_loss(run<Train>(s.params(), s.grads(), b, grad_scale, [&](int i) {
      for (int e : final_after_[size_t(i)]) {
        const auto& en = plan::ParamPlan<M>::table.entries[size_t(e)];
        s.gradient_ready(en.offset, en.offset + en.count(), *comm);
      }
      comm->progress();
    }));
  }

  // Tensor parallelism: the group of TPd ranks this one shares its layers with (it outlives the executor).
  void set_tensor_parallel(parallel::Communicator* group) {
    KILN_CHECK(group && group->world() == TPd, "executor: a tensor-parallel group of ", group ? group->world() : 0,
               " ranks for TP<", TPd, ">");
    tp_ = group;
  }

  // Forward and loss only (evaluation): the summed loss; per-token losses and log-probabilities stay readable.
  template <DecoderModel M0>
  double forward(const State<M0>& s, const Batch& b) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the state's parameter table is not this model's");
    return run<Eval>(s.params(), nullptr, b, 0.f);
  }
  template <DecoderModel M0>
  double forward(const Frozen<M0>& s, const Batch& b) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the reference's parameter table is not this model's");
    return run<Eval>(s.params(), nullptr, b, 0.f);
  }

  // Logits (R, V) of every position (tests and small R).
  template <DecoderModel M0>
  void forward_logits(const State<M0>& s, const Batch& b, float* logits) {
    logits_out_ = logits;
    run<Eval>(s.params(), nullptr, b, 0.f);
    logits_out_ = nullptr;
  }

  // Per-token results of the last program run, (B, T): loss (cross-entropy + z-loss) and log p(target); 0 where
  // the target is < 0.
  const float* token_loss() const { return out(last_loss_); }
  const float* token_logp() const { return out(last_logp_); }

  // Sums of log p(target) of the last run per sequence (batch.hpp's sum_by_sequence says how).
  void sequence_logprobs(const int32_t* segment, int n, double* sums) const {
    sum_by_sequence(token_logp(), segment, R, n, sums);
  }

 private:
  // The training program's entries whose gradient its op i adds to last, for each op i.
  static std::vector<std::vector<int>> final_gradients() {
    constexpr int entries = plan::ParamPlan<M>::count;
    const std::vector<int> last = plan::last_gradient_ops<Train>(entries);
    std::vector<std::vector<int>> after(size_t(Train::data.n_ops));
    for (int e = 0; e < entries; ++e)
      if (last[size_t(e)] >= 0) after[size_t(last[size_t(e)])].push_back(e);
    return after;
  }
  template <class P, class AfterOp = void (*)(int)>
  double run(const float* params, float* grads, const Batch& b, float grad_scale, AfterOp after = [](int) {}) {
    validate_batch(b, B, T, Full::vocab, T);
    KILN_CHECK(TPd == 1 || tp_, "executor: a tensor-parallel rank's programs need its group (set_tensor_parallel)");
    const auto copy_in = [&](int buf, const int32_t* src) {
      std::memcpy(arena_.data() + P::data.bufs[size_t(buf)].offset, src, sizeof(int32_t) * R);
    };
    copy_in(P::data.tokens, b.tokens);
    copy_in(P::data.targets, b.targets);
    copy_in(P::data.positions, b.positions);
    copy_in(P::data.doc_start, b.doc_start);
    OpRunner<M, P> op{arena_.data(), params, grads, grad_scale, &rope_};
    op.logits_out = logits_out_;
    op.row_weight = b.weights;
    KILN_CHECK(!b.weights || TPd == 1, "executor: weighted tokens (preference optimisation) with tensor parallelism "
               "are not built (the vocabulary-parallel loss takes no weights)");
    if constexpr (TPd > 1) {
      op.tp = tp_;
      op.vocab_begin = tp_->rank() * M::vocab;
      op.stats = stats_.data();
    }
    for (int i = 0; i < P::data.n_ops; ++i) {
      op(P::data.ops[size_t(i)]);
      after(i);
    }
    last_loss_ = P::data.bufs[size_t(P::data.token_loss)].offset;
    last_logp_ = P::data.bufs[size_t(P::data.token_logp)].offset;
    return op.loss;
  }
  const float* out(size_t offset) const {
    KILN_CHECK(offset != size_t(-1), "executor: no program has run yet: per-token results are not there");
    return reinterpret_cast<const float*>(arena_.data() + offset);
  }

  Buffer<std::byte> arena_;  // every activation of the step, at the programs' offsets
  kernels::RopeTable<float, M::head_dim> rope_;
  std::vector<std::vector<int>> final_after_ = final_gradients();
  parallel::Communicator* tp_ = nullptr;  // tensor parallelism: the group
  std::vector<float> stats_ = std::vector<float>(TPd > 1 ? 3 * size_t(P_chunk()) : 0);
  static constexpr int P_chunk() { return int(Train::loss_chunk > Eval::loss_chunk ? Train::loss_chunk : Eval::loss_chunk); }
  float* logits_out_ = nullptr;
  size_t last_loss_ = size_t(-1), last_logp_ = size_t(-1);
};

// The decode program: generation with a KV cache (L, MaxT, NKV, HD), one token at a time.
template <DecoderModel M, int MaxT>
class Decoder {
  static_assert(check<M>());

 public:
  using P = plan::DecodeProgram<M, MaxT, plan::Fp32>;
  static_assert(MaxT > 0, "Decoder: MaxT (the longest context) must be positive");

  Decoder() : arena_(P::arena_bytes), rope_(MaxT, rope_theta<M>(), M::positional::scaling) {}

  void reset() { len_ = 0; }
  int length() const { return len_; }

  // Feeds one token at the next position; returns the logits (V) of the token after it.
  const float* step(const float* params, int32_t token) {
    KILN_CHECK(len_ < MaxT, "generate: the context is full (", MaxT, " tokens); reset() or use a larger MaxT");
    KILN_CHECK(token >= 0 && token < M::vocab, "generate: token ", token, " is outside the vocabulary [0, ", M::vocab, ")");
    std::memcpy(arena_.data() + P::buffer(P::data.tokens).offset, &token, sizeof token);
    const int32_t pos = len_;
    std::memcpy(arena_.data() + P::buffer(P::data.positions).offset, &pos, sizeof pos);
    OpRunner<M, P> op{arena_.data(), params, nullptr, 0.f, &rope_};
    op.len = len_;
    for (int i = 0; i < P::data.n_ops; ++i) op(P::data.ops[size_t(i)]);
    ++len_;
    return reinterpret_cast<const float*>(arena_.data() + P::buffer(P::data.logits).offset);
  }
  template <DecoderModel M0>
  const float* step(const State<M0>& s, int32_t token) {
    static_assert(plan::same_parameter_table<M, M0>(), "decoder: the state's parameter table is not this model's");
    return step(s.params(), token);
  }

 private:
  Buffer<std::byte> arena_;  // the cache and one token's activations
  kernels::RopeTable<float, M::head_dim> rope_;
  int len_ = 0;
};

}  // namespace cpu

// The CPU backend as a trainer names it: Trainer<Recipe, backend::Cpu>.
// Its steps run one after the other: the trainer reads each step's record before it starts the next.
struct Cpu {
  static constexpr const char* name = "cpu";
  static constexpr bool overlap_steps = false;
  using precision = plan::Fp32;
  template <DecoderModel M> using state = cpu::State<M>;
  template <DecoderModel M> using reference = cpu::Frozen<M>;
  template <DecoderModel M, int B, int T, int TPd = 1> using executor = cpu::Executor<M, B, T, TPd>;
  static constexpr bool tensor_parallel = true;
  template <DecoderModel M, int MaxT> using decoder = cpu::Decoder<M, MaxT>;
};

}  // namespace backend
}  // namespace kiln
