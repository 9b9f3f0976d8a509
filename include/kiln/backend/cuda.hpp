// kiln/backend/cuda.hpp: the CUDA backend (bf16 storage, fp32 master weights, gradients, moments, statistics and
// accumulation). Like the CPU backend it writes no op order: its executor walks the plan's program
// (plan::Program<..., Bf16Mixed>) and calls one CUDA kernel (kernels/*.cuh) or cuBLASLt product per op.
//
//   cuda::State<M, Prec>          in device memory: fp32 master weights, the storage-type copy the kernels read
//                                 (refreshed by the fused AdamW pass), fp32 gradients and AdamW moments (allocated
//                                 at their first use: ZeRO-1's shard is all a rank holds), the norm's
//                                 partial sums, the decay ranges, the step's decision block (the loss guard's window
//                                 and counters, the update count: kernels/step.cuh); the stream; init, zero-grad,
//                                 norm, AdamW, the trainer's step; host staging for checkpoints (host / host_mut /
//                                 commit)
//   cuda::Frozen<M, Prec>         a preference phase's frozen reference model: its parameters in the storage type on
//                                 the device (no gradients, moments or master weights), their fp32 values on the
//                                 host for checkpoints; the executor's forward() runs it as it runs a state
//   cuda::Executor<M, B, T, Prec> the phase's activation arena, RoPE tables and cuBLASLt workspace; the training
//                                 program (forward, loss, backward of a micro-batch) and the evaluation program
// Prec is plan::Bf16Mixed on the GPU; plan::CudaFp32 runs the same kernels with fp32 storage, which is how the
// backend is checked against the CPU backend at fp32 tolerance.
//
// The same source builds twice (backend/cuda/runtime.hpp): with nvcc for the GPU, and with g++ over the SIMT
// layer, where device memory is host memory, kernels run as fibers and products go through OpenBLAS: that build is
// what CPU CI trains with (tests/test_cuda_backend_simt.cpp), so the backend's wiring is tested without a GPU.
//
// Tensor parallelism (Layout<..., TP<t>>, as the CPU backend's: kiln/parallel/tensor_parallel.hpp): a rank's state
// is of tp_local<M, t> and its executor Executor<M, B, T, Prec, t> runs tp_local's programs, summing over the group
// with its device collectives (NCCL) on the state's stream, inside the captured graphs: the row-parallel outputs
// (o_proj, down) forward and the column-parallel input gradients (q/k/v, gate/up) backward, in the storage type as
// Megatron does; the vocabulary-parallel embedding; the vocabulary-parallel loss (kernels/cross_entropy.cuh: the
// group's row maxima, then its sums and target logits, then dx). The gradient norm counts the replicated norms once.
//   backend::Cuda                 the three, as a trainer names a backend (kiln_add_trainer(... BACKEND cuda))
// Attention: with bf16 storage in an nvcc build with cuDNN (KILN_HAVE_CUDNN), cuDNN's SDPA (backend/cuda/sdpa.hpp,
// each document of the packed batch one sequence of a ragged layout); KILN_ATTENTION=kiln, fp32 storage and the
// SIMT build run Kiln's own kernel (kernels/attention.cuh). Both write the same buffers.
// Data parallelism: during a step's last micro-batch the executor starts the sum over the ranks of each bucket of
// gradients (Executor::kBucketFloats, whole tensors, in the order the backward finishes them) as soon as the program's
// last op that adds to them has run: the state's side stream waits for that point of its stream, and the
// collective (NCCL's all-reduce, or ZeRO-1's reduce-scatter) runs there while the backward goes on; the program's
// end waits for the side stream (inside the captured graph), so the step's end sees the sums.
// A step never makes the host wait (trainer.hpp overlaps steps: it reads step s's record while step s + 1 runs):
//   - every launch of a state and its executors goes to the state's stream, in order
//   - a micro-batch's inputs are copied from page-locked slots (three, reused round-robin) with the attention's
//     document metadata; its per-token losses are summed on the device into the state's loss sum
//   - the step's end (gradient norm, the guard's decision, the update that runs only when it accepts the step:
//     kernels/step.cuh) is one CUDA graph; its record comes back to page-locked memory behind an event
// CUDA graphs (nvcc build): a micro-batch's launches (forward, loss, backward, loss sum) are captured once per
// program and attention bucket (the second time that shape is run: the first is eager, so that cuBLASLt's
// heuristics and cuDNN's kernels are set up outside the capture), then replayed; the step's end is captured at the
// first step. A step is therefore grad_accum + 1 graph launches and the copies of its inputs.
// KILN_CUDA_GRAPHS=0 launches eagerly. Not yet: the KV-cache decoder (generation runs on the CPU's decoder from
// the host copy of the parameters).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/adamw.cuh"
#include "kernels/add.cuh"
#include "kernels/attention.cuh"
#include "kernels/cross_entropy.cuh"
#include "kernels/embedding.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.hpp"
#include "kernels/rope.cuh"
#include "kernels/step.cuh"
#include "kernels/swiglu.cuh"
#include "kiln/backend/batch.hpp"
#include "kiln/backend/cuda_names.hpp"
#include "kiln/backend/init.hpp"
#include "kiln/backend/cuda/gemm.hpp"
#include "kiln/backend/cuda/runtime.hpp"
#include "kiln/backend/cuda/sdpa.hpp"
#include "kiln/core/bf16.hpp"
#include "kiln/core/error.hpp"
#include "kiln/core/step_rule.hpp"
#include "kiln/parallel/comm.hpp"
#include "kiln/parallel/tensor_parallel.hpp"
#include "kiln/plan/program.hpp"

#if defined(__CUDACC__) && defined(KILN_HAVE_CUDNN)
#define KILN_CUDA_SDPA 1  // this translation unit can run cuDNN's attention (src/cuda/sdpa.cpp is linked)
#endif

namespace kiln::backend::cuda {

// Whether the executor replays CUDA graphs (nvcc build; see above), unless KILN_CUDA_GRAPHS=0.
inline bool cuda_graphs_enabled() {
#if defined(__CUDACC__)
  const char* e = std::getenv("KILN_CUDA_GRAPHS");
  const std::string v = e ? e : "";
  KILN_CHECK(v.empty() || v == "0" || v == "1", "KILN_CUDA_GRAPHS=", v, ": expected 1 (replay, the default) or 0");
  return v != "0";
#else
  return false;
#endif
}

// Which attention the executor runs: cuDNN's where it can (see above), unless KILN_ATTENTION=kiln.
inline bool attention_uses_cudnn() {
#if defined(KILN_CUDA_SDPA)
  const char* e = std::getenv("KILN_ATTENTION");
  const std::string v = e ? e : "";
  KILN_CHECK(v.empty() || v == "cudnn" || v == "kiln", "KILN_ATTENTION=", v,
             ": expected cudnn (cuDNN's SDPA, the default) or kiln (Kiln's own attention kernel)");
  return v != "kiln";
#else
  return false;
#endif
}

template <class Prec>
using storage_t = std::conditional_t<Prec::storage == plan::DType::bf16, bf16, float>;

// n fp32 values from the host into device memory of the storage type S (rounded to nearest even for bf16); the
// host waits for the copy.
template <class S>
void upload_as(S* dst, const float* h, size_t n, gpu::Stream stream) {
  if constexpr (std::is_same_v<S, float>) {
    to_device(dst, h, n * 4, stream);
  } else {
    std::vector<S> s(n);
    const std::ptrdiff_t m = std::ptrdiff_t(n);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < m; ++i) s[size_t(i)] = S(h[i]);
    to_device(dst, s.data(), n * sizeof(S), stream);
  }
  synchronize(stream);
}

template <DecoderModel M, class Prec = plan::Bf16Mixed>
class State {
  static_assert(Prec::kernels == plan::Kernels::cuda, "cuda::State: the precision must name the CUDA kernels");
  using DeviceStep = kernels::cuda::DeviceStep;
  static_assert(sizeof(DeviceStep) <= plan::kStepBlockBytes, "cuda::State: DeviceStep outgrew plan::kStepBlockBytes");

 public:
  using S = storage_t<Prec>;
  using Params = plan::ParamPlan<M>;
  static constexpr size_t floats = Params::table.total;
  static constexpr bool copy = !std::is_same_v<S, float>;  // a separate storage copy of the parameters

  State()
      : p_(floats * 4, "the fp32 master weights"),
        ps_(copy ? floats * sizeof(S) : 0, "the parameters as kernels read them"),
        g_(floats * 4, "the gradients"),
        partials_(kernels::cuda::sum_squares_partials(floats) * 8, "the gradient norm's partial sums"),
        step_(plan::kStepBlockBytes, "the step's decision (loss guard, update count, AdamW constants)"),
        ranges_(kMaxRanges * sizeof(plan::DecayRange), "the decay ranges"),
        args_(kInFlight * sizeof(StepArgs), "the steps' arguments"),
        records_(kInFlight * sizeof(StepRecord), "the steps' records") {
    for (DeviceBytes* b : {&g_, &step_}) fill_zero(b->as(), b->bytes(), stream());
    set_decay({{0, floats, true}});
  }
#if defined(__CUDACC__)
  ~State() {
    cudaStreamSynchronize(stream());  // copies into the page-locked records may still be on their way
    if (tail_) cudaGraphExecDestroy(tail_);
  }
#endif
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  // Ranges of one decay setting cover the tensors in order: at most one per tensor and one between each two.
  static constexpr size_t kMaxRanges = 2 * size_t(Params::count) + 1;
  // Steps ended and not yet read (step_record): the trainer reads step s while step s + 1 runs.
  static constexpr int kInFlight = 2;

  // The stream every launch of this state and of its executors goes to, in order.
  gpu::Stream stream() const { return stream_.get(); }

  // Seeded initialisation, the CPU backend's values (kiln::init_parameters), computed on the host and copied.
  void init(double std, uint64_t seed) {
    std::vector<float> h(floats);
    init_parameters<M>(h.data(), std, seed);
    upload_params(h.data());
  }
  void zero_grad() { fill_zero(g_.as(), g_.bytes(), stream()); }
  // The global L2 norm of the gradients: device reductions in a fixed order; the host reads one number.
  double grad_norm() {
    norm();
    float ns[2];
    to_host(ns, step()->norm_scale, sizeof ns, stream());
    return double(ns[0]);
  }
  void set_decay(std::vector<plan::DecayRange> r) {
    KILN_CHECK(!r.empty() && r.size() <= kMaxRanges, "cuda::State::set_decay: ", r.size(), " ranges (1 to ",
               kMaxRanges, " expected: they cover the flat buffer tensor by tensor)");
    decay_ = std::move(r);
    const std::vector<plan::DecayRange> mine = parallel::shard_decay_ranges(decay_, shard_);  // ZeRO-1: the shard's, from its start
    n_ranges_ = int(mine.size());
    to_device(ranges_.as(), mine.data(), mine.size() * sizeof(plan::DecayRange), stream());
    synchronize(stream());  // `mine` is freed on return
    drop_tail();            // the captured update read the old count of ranges
  }
  // One AdamW update (a.step 1-based, the clip folded into a.grad_scale), refreshing the storage copy.
  void adamw(const AdamWStep& a) {
    KILN_CHECK(a.step >= 1, "adamw: step is 1-based, got ", a.step);
    moments();
    const kernels::cuda::AdamWConstants k = kernels::cuda::adamw_constants(a);
    to_device(&step()->adamw, &k, sizeof k, stream());
    update();
  }

  // A training step (the trainer's calls, as on the CPU backend): begin_step(); the executor's accumulate() for
  // each micro-batch; end_step(args), which enqueues the gradient norm, the decision (kernels/step.cuh) and the
  // update that runs only when the decision accepts the step, and returns at once; step_record() waits for the
  // oldest step not yet read and returns what it decided. Up to kInFlight steps may be ended and unread. The norm,
  // decision and update are one CUDA graph, captured at the first step and replayed (KILN_CUDA_GRAPHS=0: eager);
  // its only input from the host is the step's arguments, copied from page-locked memory before it runs.
  void set_step_state(const GuardCounters& g, const double* ring, long updates) {
    KILN_CHECK(g.window >= 2 && g.window <= kMaxSpikeWindow, "set_step_state: a spike window of ", g.window,
               " (2 to ", kMaxSpikeWindow, " expected)");
    KILN_CHECK(in_flight_ == 0, "set_step_state: ", in_flight_, " steps are still running (read their records first)");
    to_device(&step()->guard, &g, sizeof g, stream());
    to_device(&step()->updates, &updates, sizeof updates, stream());
    to_device(step()->ring, ring, size_t(g.window) * sizeof(double), stream());
    synchronize(stream());  // the sources are the caller's
    has_guard_ = true;
    moments();  // before the step's end is captured
  }
  void begin_step() {
    zero_grad();
    fill_zero(&step()->loss_sum, sizeof(double), stream());
    host_loss_ = 0;
  }
  double* loss_sum() { return &step()->loss_sum; }  // where the executor's accumulate() adds (device memory)
  // A step whose loss is summed on the host (a preference step's pairs: trainer.hpp) adds it here, before
  // all_reduce and end_step: the step's loss sum on the device becomes the sum of these, and the device's guard
  // judges it as it judges a token loss. Such a step takes no loss from accumulate().
  void add_loss(double summed) {
    host_loss_ += summed;
    to_device(&step()->loss_sum, &host_loss_, sizeof(double), stream());  // pageable: read when this returns
  }
  // Data parallelism: the gradients and the loss summed over the GPU ranks by the communicator's device collectives
  // (NCCL), on this state's stream: nothing waits on the host. ZeRO-1: the gradients reduce-scattered into the
  // shard's reduced gradients instead. The gradients were summed already when the executor's last micro-batch
  // started them in buckets (start_bucket / join_buckets); else they are summed here, after the backward.
  void all_reduce(parallel::Communicator& comm) {
    parallel::DeviceCollectives* d = device_of(comm);
    if (!buckets_summed_) sum_gradients(d, 0, floats, stream(), "the sum of the gradients over the ranks");
    buckets_summed_ = false;
    d->allreduce_sum(&step()->loss_sum, 1, stream_ptr(), "the loss");
  }
  // The sum over the ranks of the gradients [begin, end) (every value final: the backward adds no more to them),
  // enqueued on the side stream after what the state's stream holds so far.
  void start_bucket(size_t begin, size_t end, parallel::Communicator& comm) {
    KILN_CHECK(begin < end && end <= floats, "start_bucket: [", begin, ", ", end, ") is not a range of the ", floats,
               " gradients");
    fork_.record(stream());
    fork_.block(side_.get());
    sum_gradients(device_of(comm), begin, end, side_.get(), "the sum of a bucket of gradients over the ranks");
  }
  // The state's stream waits for every bucket started; the step's all_reduce then sums the loss only.
  void join_buckets() {
    join_.record(side_.get());
    join_.block(stream());
    buckets_summed_ = true;
  }

  // ZeRO-1 (Layout<..., ZeRO<1>>) over the ranks of `comm`, as the CPU state's: this rank keeps the AdamW moments
  // of its shard only (parallel::shard_of: contiguous, in rank order, cut at the gradient norm's chunks). Each step
  // the gradients are reduce-scattered into the shard's reduced gradients; the norm's chunk sums are each rank's
  // own chunks', summed over the ranks (each chunk is one rank's: the same bits as one process's norm of the same
  // gradients); the update runs on the shard and the fp32 weights are all-gathered, then the storage copy is
  // refreshed from them. All on the state's stream, in the step's CUDA graph. Call before the moments are used;
  // with one rank nothing changes.
  void shard(parallel::Communicator& comm) {
    const int n = comm.world(), me = comm.rank();
    if (n == 1) return;
    KILN_CHECK(m_.bytes() == 0, "cuda::State::shard: call it before the moments are used");
    KILN_CHECK(!tp_, "ZeRO-1 with tensor parallelism is not built");
    device_of(comm);
    zero_ = &comm;
    std::vector<size_t> cuts(size_t(n) + 1);
    for (int r = 0; r < n; ++r) cuts[size_t(r)] = parallel::shard_of(floats, r, n, kernels::cuda::kSumChunk).begin;
    cuts[size_t(n)] = floats;
    counts_.resize(size_t(n));
    for (int r = 0; r < n; ++r) counts_[size_t(r)] = cuts[size_t(r) + 1] - cuts[size_t(r)];
    cuts_ = cuts;
    shard_ = {cuts[size_t(me)], cuts[size_t(me) + 1]};
    gs_ = DeviceBytes(shard_.size() * 4, "the shard's reduced gradients (ZeRO-1)");
    fill_zero(gs_.as(), gs_.bytes(), stream());
    set_decay(decay_);  // the shard's ranges
  }
  // The flat buffer's range whose moments this state holds (all of it unless sharded).
  parallel::Shard optimizer_shard() const { return shard_; }
  void end_step(const StepArgs& a) {
    KILN_CHECK(has_guard_, "end_step: set_step_state was not called (the loss guard's window is not there)");
    KILN_CHECK(in_flight_ < kInFlight, "end_step: ", in_flight_, " steps ended and not read (step_record)");
    // the slot of step issued_ - kInFlight, whose record was read: its copies have run
    const int slot = int(issued_ % kInFlight);
    args_.as<StepArgs>()[slot] = a;
    to_device(&step()->args, args_.as<StepArgs>() + slot, sizeof a, stream());
    tail();
    to_host_async(records_.as<StepRecord>() + slot, &step()->record, sizeof(StepRecord), stream());
    done_[slot].record(stream());
    ++issued_;
    ++in_flight_;
  }
  StepRecord step_record() {
    KILN_CHECK(in_flight_ > 0, "step_record: no step has ended since the last record was read");
    const int slot = int((issued_ - in_flight_) % kInFlight);
    done_[slot].wait("the training step's kernels");
    --in_flight_;
    return records_.as<StepRecord>()[slot];
  }
  int tail_graphs() const { return tail_ != nullptr; }  // 1 once the step's end replays from a CUDA graph

  // Tensor parallelism (a TP rank's state, of tp_local<M, t>): the group whose device collectives sum the gradient
  // norm's squares of this rank's slices; the replicated norms' weights (the same gradients on every rank of the
  // group) count once.
  void set_tensor_parallel(parallel::Communicator* group) {
    KILN_CHECK(group && group->device(), "cuda::State: the tensor-parallel group of ", group ? group->world() : 0,
               " ranks has no device collectives (NCCL): the trainer attaches them when it is built with NCCL");
    struct Piece {
      size_t begin, end;
      bool whole;
    };
    std::vector<Piece> tensors;
    for (const auto& e : Params::table.entries)
      tensors.push_back({e.offset, e.offset + e.count(), tp_split(e) == TpSplit::whole});
    const std::vector<kernels::cuda::NormPiece> pieces = kernels::cuda::norm_pieces(tensors);
    n_pieces_ = int(pieces.size());
    pieces_ = DeviceBytes(pieces.size() * sizeof pieces[0], "the gradient norm's pieces (tensor parallelism)");
    piece_sums_ = DeviceBytes(pieces.size() * 8 + 2 * 8, "the gradient norm's partial sums (tensor parallelism)");
    to_device(pieces_.as(), pieces.data(), pieces_.bytes(), stream());
    synchronize(stream());  // `pieces` is freed on return
    tp_ = group->device();
    drop_tail();  // the captured norm was one rank's
  }

  // Kernels' views (device memory).
  const S* params() const {
    if constexpr (copy) return ps_.as<S>();
    else return p_.as<float>();
  }
  float* grads() { return g_.as<float>(); }

  // Host access (checkpoints, export, tests): host() downloads into a staging buffer valid until the next call;
  // after writing through host_mut(), commit() uploads (the parameters: also their storage copy). adam_m and
  // adam_v: the optimizer_shard()'s floats, from its begin (as the CPU state's); grads: this rank's own.
  const float* host(Tensor t) const {
    auto& self = const_cast<State&>(*this);
    std::vector<float>& h = self.stage_[int(t)];
    h.resize(count(t));
    to_host(h.data(), self.buf(t).as(), h.size() * 4, stream());
    return h.data();
  }
  float* host_mut(Tensor t) { return const_cast<float*>(host(t)); }
  void commit(Tensor t) {
    std::vector<float>& h = stage_[int(t)];
    KILN_CHECK(h.size() == count(t), "cuda::State::commit: host_mut was not called for this tensor");
    if (t == Tensor::params) upload_params(h.data());
    else to_device(buf(t).as(), h.data(), h.size() * 4, stream());
    synchronize(stream());
  }

 private:
  DeviceStep* step() const { return step_.as<DeviceStep>(); }
  void* stream_ptr() const { return const_cast<void*>(static_cast<const void*>(stream())); }
  // The gradient norm and the clip scale into step()->norm_scale (the clip itself is the decision's). Under tensor
  // parallelism: this rank's slices' squares summed over the group, the replicated tensors' once.
  void norm() {
    namespace kc = kernels::cuda;
    if (zero_) {  // each rank its shard's chunks (the shard starts at a chunk), the others' zero, summed over the ranks
      fill_zero(partials_.as(), partials_.bytes(), stream());
      kc::sum_squares_chunks(gs_.as<float>(), shard_.size(), partials_.as<double>() + shard_.begin / kc::kSumChunk,
                             stream());
      const int chunks = int(kc::sum_squares_partials(floats));
      zero_->device()->allreduce_sum(partials_.as<double>(), size_t(chunks), stream_ptr(),
                                     "the all-reduce of the gradient norm's chunk sums (ZeRO-1)");
      return kc::norm_finish(partials_.as<double>(), chunks, 0.f, step()->norm_scale, stream());
    }
    if (!tp_) return kc::grad_norm(g_.as<float>(), floats, partials_.as<double>(), 0.f, step()->norm_scale, stream());
    double* sums = piece_sums_.as<double>() + n_pieces_;
    kernels::cuda::norm_pieces_sum(g_.as<float>(), pieces_.as<kernels::cuda::NormPiece>(), n_pieces_,
                                   piece_sums_.as<double>(), sums, stream());
    tp_->allreduce_sum(sums, 1, stream_ptr(), "the tensor-parallel sum of the gradient norm");
    kernels::cuda::norm_from_sums(sums, 0.f, step()->norm_scale, stream());
  }
  // AdamW (a no-op when the decision skipped the step). ZeRO-1: the shard's, from its reduced gradients, then the
  // fp32 weights all-gathered and the storage copy refreshed from them.
  void update() {
    const size_t b = shard_.begin;
    kernels::cuda::adamw_flat<S>(p_.as<float>() + b, zero_ ? gs_.as<float>() : g_.as<float>(), m_.as<float>(),
                                 v_.as<float>(), copy ? ps_.as<S>() + b : nullptr, shard_.size(),
                                 ranges_.as<plan::DecayRange>(), n_ranges_, &step()->adamw, nullptr, stream());
    if (!zero_) return;
    zero_->device()->allgather(p_.as<float>(), counts_.data(), stream_ptr(),
                               "the all-gather of the updated weights (ZeRO-1)");
    if constexpr (copy) kernels::cuda::to_storage<S>(p_.as<float>(), ps_.as<S>(), floats, stream());
  }
  // The moments at their first use: the shard's (all of the buffer unless sharded), zero.
  void moments() {
    if (m_.bytes()) return;
    m_ = DeviceBytes(shard_.size() * 4, "AdamW's first moments");
    v_ = DeviceBytes(shard_.size() * 4, "AdamW's second moments");
    fill_zero(m_.as(), m_.bytes(), stream());
    fill_zero(v_.as(), v_.bytes(), stream());
  }
  size_t count(Tensor t) const { return t == Tensor::adam_m || t == Tensor::adam_v ? shard_.size() : floats; }
  // The gradients [b, e) summed over the ranks on stream `on`: an all-reduce in place, or (ZeRO-1) a reduce-scatter
  // of the ranks' parts of [b, e) into the reduced gradients of this rank's part.
  void sum_gradients(parallel::DeviceCollectives* d, size_t b, size_t e, gpu::Stream on, const char* what) {
    void* sp = const_cast<void*>(static_cast<const void*>(on));
    if (!zero_) return d->allreduce_sum(g_.as<float>() + b, e - b, sp, what);
    std::vector<size_t> c(counts_.size());
    for (size_t r = 0; r < c.size(); ++r)
      c[r] = std::max(b, std::min(e, cuts_[r + 1])) - std::max(b, std::min(e, cuts_[r]));
    const size_t mine = std::clamp(b, shard_.begin, shard_.end) - shard_.begin;
    d->reduce_scatter_sum(g_.as<float>() + b, gs_.as<float>() + mine, c.data(), sp, what);
  }
  static parallel::DeviceCollectives* device_of(parallel::Communicator& comm) {
    KILN_CHECK(comm.device(), "the CUDA backend's ", comm.world(), " ranks have no device collectives (NCCL): the "
               "trainer attaches them when it is built with NCCL");
    return comm.device();
  }
  // The step's end on the device: the norm, the decision, the update (which reads the decision's constants).
  void tail() {
    auto launches = [&] {
      norm();
      kernels::cuda::decide(step(), stream());
      update();
    };
#if defined(__CUDACC__)
    if (!use_graphs_) return launches();
    if (!tail_) {
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal), "begin capturing the step's end");
      try {
        launches();
      } catch (...) {
        cudaStreamEndCapture(stream(), &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      check(cudaStreamEndCapture(stream(), &g), "capture the step's end as a CUDA graph");
      const cudaError_t e = cudaGraphInstantiate(&tail_, g, 0);
      cudaGraphDestroy(g);
      check(e, "instantiate the step's end");
    }
    check(cudaGraphLaunch(tail_, stream()), "replay the step's end");
    if (tp_) tp_->watch(stream_ptr(), "the tensor-parallel sum of the gradient norm (the step's end, a CUDA graph)");
#else
    launches();
#endif
  }
  void drop_tail() {
#if defined(__CUDACC__)
    if (tail_) cudaGraphExecDestroy(tail_);
#endif
    tail_ = nullptr;
  }
  void upload_params(const float* h) {
    upload_as<float>(p_.as<float>(), h, floats, stream());
    if constexpr (copy) upload_as<S>(ps_.as<S>(), h, floats, stream());
  }
  DeviceBytes& buf(Tensor t) {
    switch (t) {
      case Tensor::params: return p_;
      case Tensor::grads: return g_;
      case Tensor::adam_m: return moments(), m_;
      default: return moments(), v_;
    }
  }

  OwnStream stream_;  // first: the buffers below are filled on it
  OwnStream side_;    // data parallelism: the buckets' sums while the backward goes on
  Event fork_, join_;
  bool buckets_summed_ = false;
  DeviceBytes p_, ps_, g_, m_, v_, partials_, step_, ranges_;
  parallel::DeviceCollectives* tp_ = nullptr;  // tensor parallelism: the group's
  DeviceBytes pieces_, piece_sums_;            // and the norm's pieces, their partial sums, then the two sums
  int n_pieces_ = 0;
  // ZeRO-1: the ranks, each one's count of floats, this rank's shard and its reduced gradients; the decay ranges
  // of the whole buffer (ranges_ holds the shard's)
  parallel::Communicator* zero_ = nullptr;
  std::vector<size_t> counts_, cuts_;
  parallel::Shard shard_{0, floats};
  DeviceBytes gs_;
  std::vector<plan::DecayRange> decay_;
  PinnedBytes args_, records_;  // kInFlight slots each
  Event done_[kInFlight];       // the record of the slot's step is on the host
  long issued_ = 0;             // steps ended
  int in_flight_ = 0;           // of them, not read
  int n_ranges_ = 0;
  bool has_guard_ = false;
  double host_loss_ = 0;  // add_loss's sum this step
#if defined(__CUDACC__)
  cudaGraphExec_t tail_ = nullptr;
  bool use_graphs_ = cuda_graphs_enabled();
#else
  void* tail_ = nullptr;
#endif
  std::vector<float> stage_[4];
};

// A frozen copy of a model's parameters: a preference phase's reference (trainer.hpp), which the executor's
// forward() runs as it runs a state, on its own stream. On the device only the storage type's copy (bf16: 2 bytes
// a parameter, where a state holds 14 and more); the fp32 values stay on the host, where checkpoints read them
// (host) and the trainer writes them (host_mut, then commit uploads the storage copy).
template <DecoderModel M, class Prec = plan::Bf16Mixed>
class Frozen {
 public:
  using S = storage_t<Prec>;
  static constexpr size_t floats = plan::ParamPlan<M>::table.total;
  Frozen() : ps_(floats * sizeof(S), "the reference model's parameters (a preference phase)"), host_(floats) {}
  gpu::Stream stream() const { return stream_.get(); }
  const S* params() const { return ps_.as<S>(); }
  const float* host(Tensor t) const { return expect_params(t), host_.data(); }
  float* host_mut(Tensor t) { return expect_params(t), host_.data(); }
  void commit(Tensor t) {
    expect_params(t);
    upload_as<S>(ps_.as<S>(), host_.data(), floats, stream());
  }

 private:
  static void expect_params(Tensor t) {
    KILN_CHECK(t == Tensor::params, "a frozen reference model holds its parameters only, not tensor ", int(t));
  }
  OwnStream stream_;  // first: ps_ is filled on it
  DeviceBytes ps_;
  std::vector<float> host_;
};

// Every constraint the CUDA kernels put on a model (cuda_names.hpp says each in a sentence), at compile time.
template <DecoderModel M>
constexpr bool supports() {
  static_assert(M::hidden % 8 == 0 && M::ffn % 8 == 0 && M::head_dim % 8 == 0,
                "the CUDA kernels move 16 bytes at a time: hidden, ffn and head_dim must be multiples of 8");
  static_assert(M::head_dim <= 256, "the CUDA attention kernel supports head_dim up to 256");
  return unsupported<M>() == nullptr;
}

template <DecoderModel M>
constexpr double cuda_rope_theta() {
  return M::positional::any_rope ? M::positional::theta : 10000.0;
}

// The programs of one phase shape, (B, T) micro-batches.
// TPd > 1: a tensor-parallel rank's programs, of tp_local<Full, TPd> (its heads, ffn columns and vocabulary rows),
// summing with its group (set_tensor_parallel) where the cut requires; batches are checked against the full vocabulary.
template <DecoderModel Full, int B, int T, class Prec = plan::Bf16Mixed, int TPd = 1>
class Executor {
  using M = std::conditional_t<(TPd > 1), tp_local<Full, TPd>, Full>;
  static_assert(supports<M>());
  static_assert(TPd == 1 || !M::qk_norm, "TP<t>: QK-norm under tensor parallelism (its weights' gradients summed over "
                                         "the group) is not built");

 public:
  using S = storage_t<Prec>;
  using Train = plan::TrainProgram<M, B, T, Prec>;
  using Eval = plan::EvalProgram<M, B, T, Prec>;
  using Params = plan::ParamPlan<M>;
  using Mem = plan::MemoryPlan<M, B, T, Prec>;
  static constexpr int R = B * T, H = M::hidden, F = M::ffn, V = M::vocab, NH = M::heads, NKV = M::kv_heads,
                       HD = M::head_dim, Q = M::q_dim, QKV = M::qkv_dim;
  static constexpr size_t arena_bytes = Train::arena_bytes > Eval::arena_bytes ? Train::arena_bytes : Eval::arena_bytes;

  Executor()
      : arena_(arena_bytes, "the activation arena"), workspace_(plan::kGemmWorkspace, "cuBLASLt's workspace"),
        small_(256, "the loss scale and the executor's loss sum"),
        weights_(size_t(R) * 4, "the tokens' loss-gradient weights (preference optimisation)"),
        stats_(TPd > 1 ? 3 * size_t(Train::loss_chunk > Eval::loss_chunk ? Train::loss_chunk : Eval::loss_chunk) * 4 : 0,
               "the vocabulary-parallel loss's row statistics"),
        gemm_(workspace_.as(), workspace_.bytes()), seen_(size_t(V), 0), loss_(R), logp_(R) {
    for (Upload& u : uploads_) u.host = PinnedBytes(Upload::bytes, "a micro-batch's inputs on their way to the device");
    if constexpr (M::positional::any_rope) {
      const kernels::RopeTable<float, HD> t(T, cuda_rope_theta<M>(), M::positional::scaling);  // the CPU's values
      rope_cos_ = DeviceBytes(t.cos.size() * 4, "RoPE's cos table");
      rope_sin_ = DeviceBytes(t.sin.size() * 4, "RoPE's sin table");
      to_device(rope_cos_.as(), t.cos.data(), rope_cos_.bytes(), nullptr);
      to_device(rope_sin_.as(), t.sin.data(), rope_sin_.bytes(), nullptr);
      synchronize(nullptr);
    }
    if constexpr (Mem::sdpa) {
      sdpa_workspace_ = DeviceBytes(Mem::attention_workspace, "cuDNN attention's workspace");
      sdpa_metadata_ = DeviceBytes(Mem::attention_metadata, "the attention's document lengths and offsets");
#if defined(KILN_CUDA_SDPA)
      if (HD % 16 == 0 && attention_uses_cudnn())  // cuDNN's ragged workspace needs head_dim % 16 (sdpa.hpp)
        sdpa_ = std::make_unique<Sdpa>(SdpaShape{NH, NKV, HD, R, T, 1.0f / std::sqrt(float(HD))},
                                       sdpa_workspace_.as(), sdpa_workspace_.bytes(), sdpa_metadata_.as());
#endif
    }
  }
  ~Executor() {
    for (Upload& u : uploads_) u.done.wait("the last micro-batch's copies");  // they read the page-locked slots
#if defined(__CUDACC__)
    for (auto& [key, r] : graphs_)
      if (r.exec) cudaGraphExecDestroy(r.exec);
#endif
  }
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  // CUDA graphs captured so far (one per program and attention bucket run twice or more)
  int graphs_captured() const {
    int n = 0;
#if defined(__CUDACC__)
    for (const auto& [key, r] : graphs_) n += r.exec != nullptr;
#endif
    return n;
  }

  // Tensor parallelism: the group of TPd ranks this one shares its layers with (it outlives the executor); its
  // device collectives sum on the state's stream.
  void set_tensor_parallel(parallel::Communicator* group) {
    KILN_CHECK(group && group->world() == TPd, "executor: a tensor-parallel group of ", group ? group->world() : 0,
               " ranks for TP<", TPd, ">");
    KILN_CHECK(group->device(), "executor: the tensor-parallel group has no device collectives (NCCL): the trainer "
               "attaches them when it is built with NCCL");
    tp_ = group->device();
    vocab_begin_ = group->rank() * V;
  }

  // Whether attention runs on cuDNN (else Kiln's kernel).
  bool cudnn_attention() const {
#if defined(KILN_CUDA_SDPA)
    return sdpa_ != nullptr;
#else
    return false;
#endif
  }

  // Forward and backward of one micro-batch; gradients ADDED to the state's, scaled by grad_scale; its summed loss
  // added to the state's loss_sum() on the device (a training step's micro-batch: trainer.hpp). Returns once the
  // launches are enqueued: the host waits only when it is more than kUploads micro-batches ahead of the device.
  // With `comm` (data parallelism, the step's last micro-batch) the gradients' sums over the ranks start in buckets
  // while the backward goes on (see the header); the state's all_reduce then sums the loss.
  template <DecoderModel M0>
  void accumulate(State<M0, Prec>& s, const Batch& b, float grad_scale, parallel::Communicator* comm = nullptr) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the state's parameter table is not this model's");
    if (!comm) return run<Train>(s.params(), s.grads(), b, grad_scale, s.loss_sum(), s.stream());
    const Buckets dp{[&](size_t begin, size_t end) { s.start_bucket(begin, end, *comm); }, [&] { s.join_buckets(); },
                     comm->device()};
    run<Train>(s.params(), s.grads(), b, grad_scale, s.loss_sum(), s.stream(), &dp);
  }
  // Data parallelism's buckets of gradients (at most this many floats each, unless one tensor is larger: 64 MiB, as
  // PyTorch's DDP and Megatron keep theirs tens of MiB), planned once from the training program.
  static constexpr size_t kBucketFloats = size_t(1) << 24;
  struct Bucket {
    int after;  // the op after which it starts (the program's last: what no op finishes, at the end)
    size_t begin, end;
  };
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // Another bucket size (tests: many buckets of a small model); before the first data-parallel micro-batch.
  void set_bucket_floats(size_t most) {
    KILN_CHECK(most > 0, "set_bucket_floats: a bucket of at least one float");
    buckets_ = plan_buckets(most);
  }
  // The training program's gradients in buckets: each bucket whole tensors whose gradient is final after op
  // `after` (the last op that adds to them), neighbours in the flat buffer (the padding between them inside), at
  // most `most` floats unless one tensor is larger; the floats no op reports (padding at the ends) go last.
  static std::vector<Bucket> plan_buckets(size_t most) {
    constexpr int entries = Params::count;
    constexpr size_t kGap = 256;  // the table's padding between two tensors is smaller
    const std::vector<int> last = plan::last_gradient_ops<Train>(entries);
    std::vector<Bucket> out;
    Bucket run{-1, 0, 0};
    const auto flush = [&] {
      if (run.end > run.begin) out.push_back(run);
      run = {-1, 0, 0};
    };
    for (int i = 0; i < Train::data.n_ops; ++i)
      for (int e = 0; e < entries; ++e) {
        if (last[size_t(e)] != i) continue;
        const auto& en = Params::table.entries[size_t(e)];
        const size_t b = en.offset, end = en.offset + en.count();
        if (run.end > run.begin && (end + kGap < run.begin || b > run.end + kGap)) flush();
        if (run.end == run.begin) run.begin = b, run.end = end;
        run.after = i;
        run.begin = std::min(run.begin, b), run.end = std::max(run.end, end);
        if (run.end - run.begin >= most) flush();
      }
    flush();
    std::vector<std::pair<size_t, size_t>> covered;
    for (const Bucket& k : out) covered.push_back({k.begin, k.end});
    std::sort(covered.begin(), covered.end());
    size_t at = 0;
    const int end_op = Train::data.n_ops - 1;
    for (const auto& [b, e] : covered) {
      KILN_CHECK(b >= at, "plan_buckets: two buckets overlap at ", b, " (a bug)");
      if (b > at) out.push_back({end_op, at, b});
      at = e;
    }
    if (at < Params::table.total) out.push_back({end_op, at, Params::table.total});
    std::stable_sort(out.begin(), out.end(), [](const Bucket& a, const Bucket& b) { return a.after < b.after; });
    return out;
  }
  // The same, waiting for it: returns the summed loss of the micro-batch's targets (in double, on the device).
  template <DecoderModel M0>
  double forward_backward(State<M0, Prec>& s, const Batch& b, float grad_scale) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the state's parameter table is not this model's");
    return summed([&](double* acc) { run<Train>(s.params(), s.grads(), b, grad_scale, acc, s.stream()); }, s.stream());
  }
  template <DecoderModel M0>
  double forward(const State<M0, Prec>& s, const Batch& b) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the state's parameter table is not this model's");
    return summed([&](double* acc) { run<Eval>(s.params(), nullptr, b, 0.f, acc, s.stream()); }, s.stream());
  }
  template <DecoderModel M0>
  double forward(const Frozen<M0, Prec>& s, const Batch& b) {
    static_assert(plan::same_parameter_table<M, M0>(), "executor: the reference's parameter table is not this model's");
    return summed([&](double* acc) { run<Eval>(s.params(), nullptr, b, 0.f, acc, s.stream()); }, s.stream());
  }
  // Per-token loss and log p(target) of the last run, (B, T), on the host (downloaded when asked for).
  const float* token_loss() const { return download(loss_, token_loss_at_); }
  const float* token_logp() const { return download(logp_, token_logp_at_); }
  // Sums of log p(target) of the last run per sequence (batch.hpp's sum_by_sequence), from the downloaded token_logp.
  void sequence_logprobs(const int32_t* segment, int n, double* sums) const {
    sum_by_sequence(token_logp(), segment, R, n, sums);
  }

 private:
  template <class P>
  struct Runner {
    Executor& ex;
    const S* params;
    float* grads;
    gpu::Stream stream = nullptr;
    parallel::DeviceCollectives* tp = nullptr;  // tensor parallelism: the group's sums (see the header)
    const float* row_weight = nullptr;          // training: each token's loss-gradient weight (Batch::weights)

    void* sp() const { return const_cast<void*>(static_cast<const void*>(stream)); }
    void group_sum(S* x, size_t n, const char* what) const {
      if (tp) tp->allreduce_sum(x, n, sp(), what);
    }

    template <class X = S>
    X* at(int k, const plan::Op& op) const {
      return reinterpret_cast<X*>(ex.arena_.template as<std::byte>() + P::data.bufs[size_t(op.use[k].buf)].offset);
    }
    const S* w(const plan::Op& op, int entry = 0) const {
      return params + Params::table.entries[size_t(op.param + entry)].offset;
    }
    float* gw(const plan::Op& op, int entry = 0) const {
      return grads + Params::table.entries[size_t(op.param + entry)].offset;
    }
    int blocks(const plan::Op& op, int k) const { return int(P::data.bufs[size_t(op.use[k].buf)].dims[0]); }
    // After the program: its per-token losses summed into *acc.
    void sum_loss(double* acc) const {
      kernels::cuda::sum_losses(reinterpret_cast<const float*>(ex.arena_.template as<std::byte>() +
                                                               P::data.bufs[size_t(P::data.token_loss)].offset),
                                R, acc, stream);
    }

    void operator()(const plan::Op& op) {
      namespace kc = kernels::cuda;
      using plan::OpKind;
      const bool fwd = op.pass != plan::Pass::backward;
      const int Rn = int(op.rows);
      const float eps = float(M::eps), scale = 1.0f / std::sqrt(float(HD));
      switch (op.kind) {
        case OpKind::embedding:
          if (fwd && tp) {  // vocabulary-parallel: this rank's rows, zeros for the others', summed over the group
            kc::embedding_forward<S, H>(at<int32_t>(0, op), Rn, w(op), at(1, op), stream, ex.vocab_begin_, V);
            group_sum(at(1, op), size_t(Rn) * H, "the vocabulary-parallel embedding's sum");
          } else if (fwd) {
            kc::embedding_forward<S, H>(at<int32_t>(0, op), Rn, w(op), at(1, op), stream);
          } else {  // the groups name this rank's rows only (run(): EmbeddingGrad::build from vocab_begin)
            const int32_t* g = at<int32_t>(2, op);  // token (R) | begin (R + 1) | rows (R): EmbeddingGrad::pack
            kc::embedding_backward<S, H>(g, g + Rn, g + 2 * Rn + 1, Rn, at(1, op), gw(op), stream);
          }
          return;
        case OpKind::rmsnorm:
          if (fwd)
            kc::rmsnorm_forward<S, H>(at(0, op), op.n_use > 3 ? at(3, op) : nullptr, w(op), at(1, op),
                                      at<float>(2, op), Rn, eps, stream);  // the residual add fused
          else
            kc::rmsnorm_backward<S, H>(at(0, op), w(op), at<float>(1, op), at(2, op), at(3, op), gw(op),
                                       at<float>(4, op), blocks(op, 4), Rn, op.accumulate_dx, stream);
          return;
        case OpKind::gemm:
          if (fwd) {
            ex.gemm_.template linear_forward<S, S>(at(0, op), w(op), at(1, op), Rn, int(op.in), int(op.out), stream);
          } else {
            ex.gemm_.linear_dx(at(1, op), w(op), at(2, op), Rn, int(op.in), int(op.out), stream);
            ex.gemm_.linear_dw(at(1, op), at(0, op), gw(op), Rn, int(op.in), int(op.out), stream);
          }
          if (tp) {
            const bool row_parallel = tp_split(Params::table.entries[size_t(op.param)]) == TpSplit::cols;
            if (fwd && row_parallel)  // each rank's heads' (or ffn columns') share of the output
              group_sum(at(1, op), size_t(Rn) * size_t(op.out), "the tensor-parallel sum of a layer's output");
            else if (!fwd && !row_parallel)  // each rank's share of the input gradient
              group_sum(at(2, op), size_t(Rn) * size_t(op.in), "the tensor-parallel sum of an input gradient");
          }
          return;
        case OpKind::rope:
          if (fwd)
            kc::rope_forward<S, NH + NKV, HD>(at(1, op), QKV, at<int32_t>(0, op), Rn, ex.rope_cos_.template as<float>(),
                                              ex.rope_sin_.template as<float>(), stream);
          else
            kc::rope_backward<S, NH + NKV, HD>(at(1, op), QKV, at<int32_t>(0, op), Rn, ex.rope_cos_.template as<float>(),
                                               ex.rope_sin_.template as<float>(), stream);
          return;
        case OpKind::attention:
#if defined(KILN_CUDA_SDPA)
          if (ex.sdpa_) {
            if (fwd) ex.sdpa_->forward(at(0, op), at(2, op), at<float>(3, op), stream);
            else ex.sdpa_->backward(at(0, op), at(2, op), at<float>(3, op), at(4, op), at(5, op), stream);
            return;
          }
#endif
          if (fwd)
            kc::attention_forward<S, NH, NKV, HD>(at(0, op), at<int32_t>(1, op), at(2, op), at<float>(3, op), B, T,
                                                  scale, stream);
          else
            kc::attention_backward<S, NH, NKV, HD>(at(0, op), at<int32_t>(1, op), at(2, op), at<float>(3, op),
                                                   at(4, op), at(5, op), at<float>(6, op), B, T, scale, stream);
          return;
        case OpKind::add: kc::add<S>(at(0, op), at(1, op), size_t(op.rows * op.in), stream); return;
        case OpKind::swiglu:
          if (fwd) kc::swiglu_forward<S, F>(at(0, op), at(1, op), Rn, stream);
          else kc::swiglu_backward<S, F>(at(0, op), at(1, op), at(2, op), Rn, stream);
          return;
        case OpKind::lm_head_loss: lm_head_loss(op); return;
        case OpKind::head_rmsnorm: head_rmsnorm(op, fwd, Rn); return;
        case OpKind::kv_append:
        case OpKind::attention_decode:
        case OpKind::lm_head_logits:
          KILN_FAIL("the CUDA executor was given a ", plan::op_kind_name(op.kind),
                    " op, which it does not run (decoding is not on the CUDA backend yet)");
      }
    }

    // QK-norm: each q head with q_norm, each k head with k_norm (over head_dim, rows QKV apart in the packed qkv);
    // the v heads pass through. fwd [raw, qkv, rstd (NH + NKV, R)]; bwd [raw, rstd, dqkv, draw, partials].
    void head_rmsnorm(const plan::Op& op, bool fwd, int Rn) {
      namespace kc = kernels::cuda;
      if constexpr (M::qk_norm) {
        const float eps = float(M::eps);
        if (fwd) {
          S* raw = at(0, op);  // read only: no residual
          S* qkv = at(1, op);
          float* rstd = at<float>(2, op);
          for (int h = 0; h < NH + NKV; ++h)
            kc::rmsnorm_forward_strided<S, HD>(raw + h * HD, QKV, nullptr, w(op, h < NH ? 0 : 1), qkv + h * HD, QKV,
                                               rstd + size_t(h) * Rn, Rn, eps, stream);
          kc::copy_columns<S>(raw, qkv, Rn, QKV, Q + M::kv_dim, M::kv_dim, stream);
        } else {
          const S* raw = at(0, op);
          const float* rstd = at<float>(1, op);
          const S* dqkv = at(2, op);
          S* draw = at(3, op);
          float* partials = at<float>(4, op);
          const int nb = blocks(op, 4) / 2;
          for (int h = 0; h < NH + NKV; ++h)  // one partials buffer, head after head on the stream
            kc::rmsnorm_backward_strided<S, HD>(raw + h * HD, QKV, w(op, h < NH ? 0 : 1), rstd + size_t(h) * Rn,
                                                dqkv + h * HD, QKV, draw + h * HD, QKV, gw(op, h < NH ? 0 : 1),
                                                partials, nb, Rn, false, stream);
          kc::copy_columns<S>(dqkv, draw, Rn, QKV, Q + M::kv_dim, M::kv_dim, stream);
        }
      }
    }

    // The LM head and the loss in row chunks: logits (fp32) by cuBLASLt, the fused softmax / loss / dlogits
    // kernel, then dx = dl W and dW += dl^T xn by cuBLASLt. Operands [xn, targets, token_loss, token_logp,
    // logits_chunk, (train) dxn, (train) dlogits_chunk].
    // Tensor parallelism: the rank's vocabulary rows' logits (n, V local), the row statistics reduced over the group
    // between the three row kernels (kernels/cross_entropy.cuh), dx summed over the group.
    void lm_head_loss(const plan::Op& op) {
      namespace kc = kernels::cuda;
      constexpr int chunk = int(P::loss_chunk);
      const bool train = op.grad;
      const S* xn = at(0, op);
      const int32_t* tg = at<int32_t>(1, op);
      float* logits = at<float>(4, op);
      const float* gs = train ? ex.small_.template as<float>() : nullptr;
      for (int r0 = 0; r0 < R; r0 += chunk) {
        const int n = R - r0 < chunk ? R - r0 : chunk;
        ex.gemm_.template linear_forward<S, float>(xn + size_t(r0) * H, w(op), logits, n, H, V, stream);
        S* dl = train ? at(6, op) : nullptr;
        if (tp) {
          float* st = ex.stats_.template as<float>();  // max (n) | sums (n) | target logits (n)
          kc::xent_vp_max<V>(logits, n, st, stream);
          tp->allreduce_max(st, size_t(n), sp(), "the vocabulary-parallel loss's row maxima");
          kc::xent_vp_sums<V>(logits, tg + r0, n, ex.vocab_begin_, st, stream);
          tp->allreduce_sum(st + n, 2 * size_t(n), sp(), "the vocabulary-parallel loss's sums");
          kc::xent_vp_finish<S, V>(logits, tg + r0, n, ex.vocab_begin_, float(M::z_loss), gs, st, dl,
                                   at<float>(2, op) + r0, at<float>(3, op) + r0, stream);
        } else {
          kc::xent_rows<S, V>(logits, tg + r0, n, float(M::z_loss), gs, dl, at<float>(2, op) + r0,
                              at<float>(3, op) + r0, stream, train && row_weight ? row_weight + r0 : nullptr);
        }
        if (train) {
          ex.gemm_.linear_dx(dl, w(op), at(5, op) + size_t(r0) * H, n, H, V, stream);
          group_sum(at(5, op) + size_t(r0) * H, size_t(n) * H, "the vocabulary-parallel loss's input gradient");
          ex.gemm_.linear_dw(dl, xn + size_t(r0) * H, gw(op), n, H, V, stream);
        }
      }
    }
  };

  // The micro-batch's inputs in a page-locked slot: tokens, targets, positions, doc_start (R each), the embedding's
  // row groups (3 R + 1), the loss scale, the tokens' loss-gradient weights (R floats, a weighted batch's), and the
  // attention's document metadata (its device block's layout). Slots are reused round-robin once the copies out of
  // them have run.
  static constexpr int kUploads = 3;
  struct Upload {
    static constexpr size_t groups = 4 * size_t(R), scale = groups + 3 * size_t(R) + 1;  // in int32
    static constexpr size_t weights = scale + 1;                                          // in int32
    static constexpr size_t sdpa = ((weights + size_t(R)) * 4 + 255) / 256 * 256;         // in bytes
    static constexpr size_t bytes = sdpa + Mem::attention_metadata;
    PinnedBytes host;
    Event done;
  };

  template <class F>
  double summed(F&& launch, gpu::Stream stream) {
    double* acc = small_.template as<double>() + 1;  // the executor's own loss sum (after the loss scale)
    fill_zero(acc, sizeof(double), stream);
    launch(acc);
    double loss = 0;
    to_host(&loss, acc, sizeof loss, stream);
    return loss;
  }
  const float* download(std::vector<float>& h, size_t at) const {
    KILN_CHECK(at != size_t(-1), "executor: no program has run yet: per-token results are not there");
    to_host(h.data(), arena_.template as<std::byte>() + at, sizeof(float) * R, last_stream_);
    return h.data();
  }

  // A data-parallel micro-batch's calls into its state: start a bucket's sum, wait for them all; and the ranks'
  // device collectives (whose watchdog follows a replayed graph).
  struct Buckets {
    std::function<void(size_t, size_t)> start;
    std::function<void()> join;
    parallel::DeviceCollectives* device;
  };
  // The program's launches: its ops (data parallelism: each bucket started after its op, all waited for at the end),
  // then its loss summed into *acc.
  template <class P>
  void program(Runner<P>& op, double* acc, const Buckets* dp) {
    const std::vector<Bucket>* bk = nullptr;
    if constexpr (P::mode == plan::Mode::train) bk = dp ? &buckets_ : nullptr;
    size_t next = 0;
    for (int i = 0; i < P::data.n_ops; ++i) {
      op(P::data.ops[size_t(i)]);
      for (; bk && next < bk->size() && (*bk)[next].after == i; ++next) dp->start((*bk)[next].begin, (*bk)[next].end);
    }
    if (dp) dp->join();
    op.sum_loss(acc);
  }

  template <class P>
  void run(const S* params, float* grads, const Batch& b, float grad_scale, double* acc, gpu::Stream stream,
           const Buckets* dp = nullptr) {
    validate_batch(b, B, T, Full::vocab, T);
    const bool weighted = P::mode == plan::Mode::train && b.weights;
    KILN_CHECK(!weighted || TPd == 1, "executor: weighted tokens (preference optimisation) with tensor parallelism "
               "are not built (the vocabulary-parallel loss takes no weights)");
    KILN_CHECK(TPd == 1 || tp_, "executor: a tensor-parallel rank's programs need its group (set_tensor_parallel)");
    Upload& u = uploads_[size_t(next_upload_)];
    next_upload_ = (next_upload_ + 1) % kUploads;
    u.done.wait("a micro-batch's copies to the device");  // the slot's previous copies have read it
    std::byte* arena = arena_.as<std::byte>();
    int32_t* host = u.host.template as<int32_t>();
    const auto copy_in = [&](int buf, const int32_t* src, int32_t* at, size_t n) {
      if (src != at) std::memcpy(at, src, sizeof(int32_t) * n);
      to_device(arena + P::data.bufs[size_t(buf)].offset, at, sizeof(int32_t) * n, stream);
    };
    copy_in(P::data.tokens, b.tokens, host, R);
    copy_in(P::data.targets, b.targets, host + R, R);
    copy_in(P::data.positions, b.positions, host + 2 * R, R);
    copy_in(P::data.doc_start, b.doc_start, host + 3 * R, R);
#if defined(KILN_CUDA_SDPA)
    if (sdpa_)  // the documents as cuDNN's slots
      sdpa_->set_batch(b.doc_start, B, T, u.host.template as<std::byte>() + Upload::sdpa, stream);
#endif
    if constexpr (P::mode == plan::Mode::train) {
      // the rows grouped by token for the embedding's backward, built here where the batch enters
      int32_t* groups = host + Upload::groups;
      kernels::cuda::EmbeddingGrad::build(b.tokens, R, seen_, vocab_begin_).pack(R, groups);  // fixed places
      copy_in(P::data.embedding_grad, groups, groups, 3 * size_t(R) + 1);
      float* scale = reinterpret_cast<float*>(host + Upload::scale);
      *scale = grad_scale;
      to_device(small_.as(), scale, sizeof grad_scale, stream);
      if (weighted) {
        float* w = reinterpret_cast<float*>(host + Upload::weights);
        std::memcpy(w, b.weights, sizeof(float) * size_t(R));
        to_device(weights_.as(), w, sizeof(float) * size_t(R), stream);
      }
    }
    u.done.record(stream);
    Runner<P> op{*this, params, grads, stream, tp_, weighted ? weights_.template as<float>() : nullptr};
#if defined(__CUDACC__)
    launch(op, int(P::mode), params, grads, acc, dp);
#else
    program(op, acc, dp);
#endif
    token_loss_at_ = P::data.bufs[size_t(P::data.token_loss)].offset;
    token_logp_at_ = P::data.bufs[size_t(P::data.token_logp)].offset;
    last_stream_ = stream;
  }

#if defined(__CUDACC__)
  // The program's launches on the state's stream, eagerly or from a graph: see the header comment.
  template <class P>
  void launch(Runner<P>& op, int mode, const S* params, const float* grads, double* acc, const Buckets* dp) {
    auto eager = [&] { program(op, acc, dp); };
    const cudaStream_t stream = op.stream;
    if (!use_graphs_) return eager();
    int bucket = 0;
#if defined(KILN_CUDA_SDPA)
    if (sdpa_) bucket = sdpa_->padded_slots();
#endif
    const GraphKey key{mode, bucket, dp != nullptr, op.row_weight != nullptr, params, grads, acc};
    Replay* r = nullptr;
    for (auto& [k, v] : graphs_)
      if (k == key) r = &v;
    if (!r) r = &graphs_.emplace_back(key, Replay{}).second;
    if (!r->exec && r->runs++ == 0) return eager();  // the first run of this shape: set-up outside any capture
    if (!r->exec) {
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capturing the step");
      try {
        eager();
      } catch (...) {
        cudaStreamEndCapture(stream, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      check(cudaStreamEndCapture(stream, &g), "capture the step's launches as a CUDA graph");
      const cudaError_t e = cudaGraphInstantiate(&r->exec, g, 0);
      cudaGraphDestroy(g);
      check(e, "instantiate the step's CUDA graph");
    }
    check(cudaGraphLaunch(r->exec, stream), "replay the step's CUDA graph");
    if (tp_) tp_->watch(op.sp(), "the tensor-parallel sums of a micro-batch (a CUDA graph)");
    if (dp && dp->device) dp->device->watch(op.sp(), "the data-parallel sums of the gradients (a CUDA graph)");
  }
  struct GraphKey {
    int mode, bucket;
    bool dp;        // the step's last micro-batch under data parallelism: its buckets' sums inside
    bool weighted;  // the loss kernel reads the tokens' weights
    const void* params;
    const void* grads;
    const void* acc;
    bool operator==(const GraphKey&) const = default;
  };
  struct Replay {
    cudaGraphExec_t exec = nullptr;
    int runs = 0;
  };
  std::vector<std::pair<GraphKey, Replay>> graphs_;
  bool use_graphs_ = cuda_graphs_enabled();
#endif

  DeviceBytes arena_, workspace_, small_, weights_, stats_, rope_cos_, rope_sin_, sdpa_workspace_, sdpa_metadata_;
  Gemm gemm_;
  parallel::DeviceCollectives* tp_ = nullptr;  // tensor parallelism: the group's
  int vocab_begin_ = 0;                        // and the first vocabulary row this rank holds
  std::vector<Bucket> buckets_ = plan_buckets(kBucketFloats);  // data parallelism's, in the order they start
#if defined(KILN_CUDA_SDPA)
  std::unique_ptr<Sdpa> sdpa_;
#endif
  std::vector<int32_t> seen_;  // EmbeddingGrad's counters (V, zero between batches)
  Upload uploads_[kUploads];
  int next_upload_ = 0;
  mutable std::vector<float> loss_, logp_;  // token_loss() / token_logp()'s host copies
  size_t token_loss_at_ = size_t(-1), token_logp_at_ = size_t(-1);
  gpu::Stream last_stream_ = nullptr;
};

// Where a CUDA trainer starts: one line each for no device, a device older than sm_90 (the build's target), and a
// plan that does not fit the free memory (the numbers). In the SIMT build there is no device to check.
inline void require_device(size_t plan_bytes, const char* what) {
#if defined(__CUDACC__)
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  KILN_CHECK(e == cudaSuccess && n > 0, "no CUDA device: ", e != cudaSuccess ? cudaGetErrorString(e) : "none found",
             " (the CUDA trainer needs an H100 / H200; the CPU trainer is the one without --backend cuda)");
  int dev = 0;  // the one this rank uses (NCCL selected it by local rank)
  check(cudaGetDevice(&dev), "read the current device");
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, dev), "read the device's properties");
  KILN_CHECK(p.major >= 9, "CUDA device ", dev, " is ", p.name, " (sm_", p.major, p.minor,
             "); this build is for sm_90a (H100 / H200): set KILN_CUDA_ARCHITECTURES for another GPU");
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "read the free device memory");
  KILN_CHECK(plan_bytes <= free, what, " needs ", plan_bytes, " bytes (", double(plan_bytes) / double(1u << 30),
             " GiB) of device memory; ", p.name, " has ", free, " free of ", total, " (", double(free) / double(1u << 30),
             " GiB): lower the micro-batch or sequence length, or use a layout that shards the state");
#else
  (void)plan_bytes, (void)what;
#endif
}

}  // namespace kiln::backend::cuda

namespace kiln::backend {

// The CUDA backend as a trainer names it: Trainer<Recipe, backend::Cuda>. Generation reads the parameters on the
// host and runs the CPU's decoder (the CUDA decoder is not written yet).
// Its steps overlap: the trainer starts step s + 1 before it reads step s's record.
template <class Prec = plan::Bf16Mixed>
struct CudaBackend {
  static constexpr const char* name = "cuda";
  static constexpr bool overlap_steps = true;
  using precision = Prec;
  template <DecoderModel M> using state = cuda::State<M, Prec>;
  template <DecoderModel M> using reference = cuda::Frozen<M, Prec>;
  template <DecoderModel M, int B, int T, int TPd = 1> using executor = cuda::Executor<M, B, T, Prec, TPd>;
  static constexpr bool tensor_parallel = true;
};
using Cuda = CudaBackend<plan::Bf16Mixed>;

}  // namespace kiln::backend
