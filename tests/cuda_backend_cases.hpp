// tests/cuda_backend_cases.hpp: the CUDA backend (backend/cuda.hpp) trains the tiny models of the PyTorch fixtures
// (tests/fixtures/tiny_rnope.safetensors: GQA, tied embeddings, z-loss, NoPE layers, packed documents;
// tiny_qknorm.safetensors: QK-norm, MQA, an untied head, RoPE on every layer):
//   - fp32 storage (plan::CudaFp32): loss, per-token log-probabilities and every gradient equal PyTorch's float64
//     at the CPU backend's tolerances; the evaluation program gives the same loss; one AdamW step equals the CPU
//     backend's; the state's host staging round-trips
//   - bf16 storage (plan::Bf16Mixed): the same within bf16's tolerance
//   - in both, the device memory the backend allocates is the plan's MemoryPlan total, to the byte
//   - per-token loss weights and the frozen reference model of preference optimisation (weighted_case)
// Included by tests/test_cuda_backend_simt.cpp (g++: the backend over the SIMT layer, in CPU CI) and by
// tests/gpu/test_cuda_backend_gpu.cu (nvcc: on the GPU); the includer defines KC_WHERE.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kernels/adamw.hpp"
#include "kiln/backend/cuda.hpp"
#include "kiln/io/safetensors.hpp"
#include "kiln/model/model.hpp"
#include "kiln/parallel/comm.hpp"

namespace kcb {

using namespace kiln;

// The models of the PyTorch fixtures (tests/test_model.cpp has the same; tests/reference/make_fixtures.py made them).
using TinyRnope = Decoder<Embedding<vocab<96>, hidden<64>, tied<true>>, layers<4>,
                          Attention<heads<4>, kv_heads<2>, head_dim<16>, RNoPE<2, 10000.0>>, SwiGLU<ffn<96>>,
                          RMSNorm<1e-6>, z_loss<1e-4>>;
using TinyQk = Decoder<Embedding<vocab<80>, hidden<48>, tied<false>>, layers<2>,
                       Attention<heads<3>, kv_heads<1>, head_dim<16>, RoPE<500000.0>, qk_norm<true>>, SwiGLU<ffn<64>>,
                       RMSNorm<1e-5>>;
constexpr int B = 2, T = 24;  // the RNoPE fixture's shape

inline double rel_err(const float* a, const std::vector<float>& ref) {
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < ref.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(ref[i])));
    den = std::max(den, std::abs(double(ref[i])));
  }
  return num / den;
}

// The fixtures' folder: KILN_TEST_FIXTURES from the environment (bench/gpu_check.sh on another machine), else the
// checkout's, compiled in.
inline std::string fixtures() {
  const char* env = std::getenv("KILN_TEST_FIXTURES");
  return env && *env ? env : KILN_TEST_FIXTURES;
}

template <class M = TinyRnope, int FB = B, int FT = T>
struct Fixture {
  io::Safetensors fx;
  std::vector<int32_t> tokens, targets, positions, doc_start;
  long valid = 0;
  explicit Fixture(const std::string& file = "tiny_rnope.safetensors") : fx(fixtures() + "/" + file) {
    tokens = fx.to_vector<int32_t>("batch.tokens");
    targets = fx.to_vector<int32_t>("batch.targets");
    positions = fx.to_vector<int32_t>("batch.position_ids");
    const auto docs = fx.to_vector<int32_t>("batch.doc_ids");
    REQUIRE(tokens.size() == size_t(FB) * FT);
    doc_start.resize(tokens.size());
    for (int b = 0; b < FB; ++b)
      for (int i = 0; i < FT; ++i) {
        const size_t k = size_t(b) * FT + size_t(i);
        doc_start[k] = (i > 0 && docs[k] == docs[k - 1]) ? doc_start[k - 1] : i;
      }
    for (int32_t t : targets) valid += t >= 0;
  }
  backend::Batch batch() const { return {tokens.data(), targets.data(), positions.data(), doc_start.data()}; }
  template <class St>
  void load(St& s) {
    float* p = s.host_mut(backend::Tensor::params);
    for (const auto& e : plan::ParamPlan<M>::table.entries) fx.copy_to(e.name.view(), p + e.offset, e.count());
    s.commit(backend::Tensor::params);
  }
};

// loss_tol, grad_tol: relative to PyTorch float64
template <class Prec, class M = TinyRnope, int FB = B, int FT = T>
void fixture_case(double loss_tol, double logp_tol, double grad_tol, const std::string& file = "tiny_rnope.safetensors") {
  using P = plan::ParamPlan<M>;
  Fixture<M, FB, FT> f(file);
  const size_t before = backend::cuda::allocated_bytes();
  auto state = std::make_unique<backend::cuda::State<M, Prec>>();
  f.load(*state);
  auto exec = std::make_unique<backend::cuda::Executor<M, FB, FT, Prec>>();
  state->host(backend::Tensor::adam_m);  // the moments are allocated at their first use (ZeRO-1: the shard's only)
  // the plan's memory is what the backend allocates, to the byte
  CHECK(backend::cuda::allocated_bytes() - before == plan::MemoryPlan<M, FB, FT, Prec>::total);
  const backend::Batch batch = f.batch();
  state->zero_grad();
  const double loss = exec->forward_backward(*state, batch, 1.0f / float(f.valid)) / double(f.valid);
  const double ref_loss = f.fx.template to_vector<double>("out.loss")[0];
  CHECK(loss == doctest::Approx(ref_loss).epsilon(loss_tol));
  const auto ref_logp = f.fx.template to_vector<double>("out.token_logp");
  for (size_t k = 0; k < ref_logp.size(); ++k)
    CHECK(exec->token_logp()[k] == doctest::Approx(ref_logp[k]).epsilon(logp_tol).scale(1.0));
  const float* grads = state->host(backend::Tensor::grads);
  double worst = 0;
  for (const auto& e : P::table.entries) {
    const std::string name(e.name.view());
    const double err = rel_err(grads + e.offset, f.fx.template to_vector<float>("grad." + name));
    INFO("gradient of ", name, ": relative error ", err);
    CHECK(err < grad_tol);
    worst = std::max(worst, err);
  }
  MESSAGE("storage " << std::string(plan::dtype_name(Prec::storage)) << ": loss " << loss << " (PyTorch " << ref_loss
                      << "), largest gradient error " << worst);
  // the evaluation program: the same loss, no gradient touched
  std::vector<float> g_before(grads, grads + P::table.total);
  CHECK(exec->forward(*state, batch) / double(f.valid) == doctest::Approx(loss).epsilon(1e-6));
  const float* g_after = state->host(backend::Tensor::grads);
  CHECK(std::equal(g_before.begin(), g_before.end(), g_after));
}

// One AdamW step after the same gradients: the CUDA state's parameters equal the CPU state's (CudaFp32).
inline void adamw_case() {
  Fixture<> f;
  backend::cuda::State<TinyRnope, plan::CudaFp32> s;
  f.load(s);
  auto exec = std::make_unique<backend::cuda::Executor<TinyRnope, B, T, plan::CudaFp32>>();
  s.zero_grad();
  exec->forward_backward(s, f.batch(), 1.0f / float(f.valid));
  const double norm = s.grad_norm();
  double ref = 0;
  const float* g = s.host(backend::Tensor::grads);
  for (size_t i = 0; i < plan::ParamPlan<TinyRnope>::table.total; ++i) ref += double(g[i]) * double(g[i]);
  CHECK(norm == doctest::Approx(std::sqrt(ref)).epsilon(1e-6));
  // the CPU's update from the very same parameters and gradients
  constexpr size_t n = plan::ParamPlan<TinyRnope>::table.total;
  const float* p0 = s.host(backend::Tensor::params);
  std::vector<float> p(p0, p0 + n), gr(g, g + n), m(n, 0.f), v(n, 0.f);
  std::vector<plan::DecayRange> ranges;
  ranges.push_back({0, 1000, true});
  ranges.push_back({1000, 1064, false});  // some no-decay values
  ranges.push_back({1064, n, true});
  s.set_decay(ranges);
  const AdamWStep a{1e-3, 0.9, 0.95, 1e-8, 0.1, 1, 0.5};
  s.adamw(a);
  kernels::adamw_flat<float>(p.data(), gr.data(), m.data(), v.data(), n, ranges.data(), int(ranges.size()), a);
  CHECK(rel_err(s.host(backend::Tensor::params), p) < 1e-6);
  CHECK(rel_err(s.host(backend::Tensor::adam_v), v) < 1e-6);
}

// The step as the trainer runs it (set_step_state, begin_step, accumulate, end_step, step_record: the norm, the
// decision and the update on the device, two steps in flight) gives the parameters and moments of the calls one
// by one (forward_backward, grad_norm, adamw with the host's constants), and the records say what happened; a step
// whose loss is NaN is skipped on the device and changes no moment.
template <class Prec>
void step_api_case() {
  Fixture<> f;
  using St = backend::cuda::State<TinyRnope, Prec>;
  using Ex = backend::cuda::Executor<TinyRnope, B, T, Prec>;
  constexpr size_t n = plan::ParamPlan<TinyRnope>::table.total;
  const StepArgs args{1e-3, 0.9, 0.95, 1e-8, 0.1, 1e9, double(f.valid)};  // no clip: the scale is 1 both ways
  auto one_by_one = std::make_unique<St>(), stepped = std::make_unique<St>();
  f.load(*one_by_one);
  f.load(*stepped);
  auto e1 = std::make_unique<Ex>(), e2 = std::make_unique<Ex>();
  std::vector<double> losses, norms;
  for (long k = 1; k <= 3; ++k) {
    one_by_one->zero_grad();
    losses.push_back(e1->forward_backward(*one_by_one, f.batch(), 1.0f / float(f.valid)) / double(f.valid));
    norms.push_back(one_by_one->grad_norm());
    one_by_one->adamw(AdamWStep{args.lr, args.beta1, args.beta2, args.eps, args.weight_decay, k, 1.0});
  }
  const std::vector<double> ring(4, 0.0);
  stepped->set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
  std::vector<StepRecord> records;
  for (int k = 0; k < 3; ++k) {
    stepped->begin_step();
    e2->accumulate(*stepped, f.batch(), 1.0f / float(f.valid));
    stepped->end_step(args);
    if (k > 0) records.push_back(stepped->step_record());  // step k - 1's, read while step k runs
  }
  records.push_back(stepped->step_record());
  REQUIRE(records.size() == 3);
  for (int k = 0; k < 3; ++k) {
    CAPTURE(k);
    CHECK(records[size_t(k)].verdict == int(Verdict::ok));
    CHECK(records[size_t(k)].updates == k + 1);
    CHECK(records[size_t(k)].loss == doctest::Approx(losses[size_t(k)]).epsilon(1e-12));
    CHECK(records[size_t(k)].grad_norm == norms[size_t(k)]);
  }
  const std::vector<float> p1(one_by_one->host(backend::Tensor::params), one_by_one->host(backend::Tensor::params) + n);
  CHECK(rel_err(stepped->host(backend::Tensor::params), p1) < 1e-7);
  const std::vector<float> v1(one_by_one->host(backend::Tensor::adam_v), one_by_one->host(backend::Tensor::adam_v) + n);
  CHECK(rel_err(stepped->host(backend::Tensor::adam_v), v1) < 1e-7);
  // a NaN loss: skipped, no update (the moments are bit for bit as they were), the guard counts it
  const std::vector<float> m_before(stepped->host(backend::Tensor::adam_m), stepped->host(backend::Tensor::adam_m) + n);
  stepped->host_mut(backend::Tensor::params)[plan::ParamPlan<TinyRnope>::table.final_norm] = NAN;
  stepped->commit(backend::Tensor::params);
  stepped->begin_step();
  e2->accumulate(*stepped, f.batch(), 1.0f / float(f.valid));
  stepped->end_step(args);
  const StepRecord bad = stepped->step_record();
  CHECK(bad.verdict == int(Verdict::not_finite));
  CHECK(bad.updates == 3);
  CHECK(bad.bad_in_a_row == 1);
  const float* m_after = stepped->host(backend::Tensor::adam_m);
  CHECK(std::equal(m_before.begin(), m_before.end(), m_after));
  CHECK_THROWS_WITH_AS(stepped->step_record(), doctest::Contains("no step has ended"), Error);
#if defined(__CUDACC__)
  CHECK(stepped->tail_graphs() == (backend::cuda::cuda_graphs_enabled() ? 1 : 0));
#endif
}

// Data parallelism on the CUDA state (the trainer's calls on GPU ranks): two ranks whose micro-batches are the same,
// so the device collectives' sum doubles each buffer (here through the host, after the state's stream). Each rank
// scales its gradients by 1 / the global batch's targets (twice one rank's), so the sum is exactly one process's
// gradient (halves doubled: powers of two round alike), and the steps take its losses, norms and parameters.
struct Doubling final : parallel::DeviceCollectives {
  int calls = 0;
  const char* name() const override { return "doubling"; }
  template <class T>
  void twice(T* d, size_t n, void* stream) {
    std::vector<T> h(n);
    backend::cuda::to_host(h.data(), d, n * sizeof(T), static_cast<gpu::Stream>(stream));
    for (T& x : h) x *= 2;
    backend::cuda::to_device(d, h.data(), n * sizeof(T), static_cast<gpu::Stream>(stream));
    backend::cuda::to_host(h.data(), d, 0, static_cast<gpu::Stream>(stream));  // waits for the copy
    ++calls;
  }
  void allreduce_sum(float* d, size_t n, void* s, const char*) override { twice(d, n, s); }
  void allreduce_sum(double* d, size_t n, void* s, const char*) override { twice(d, n, s); }
  void allreduce_sum(bf16*, size_t, void*, const char*) override { FAIL("data parallelism sums no bf16"); }
  void allreduce_max(float*, size_t, void*, const char*) override { FAIL("data parallelism takes no maxima"); }
  void reduce_scatter_sum(const float*, float*, const size_t*, void*, const char*) override { FAIL("not ZeRO-1"); }
  void allgather(float*, const size_t*, void*, const char*) override { FAIL("not ZeRO-1"); }
};
// One rank of a group whose host collectives the cases below do not use (their device collectives carry the sums).
struct RankOf final : parallel::Communicator {
  int r, n;
  RankOf(int rank, int world) : r(rank), n(world) {}
  const char* name() const override { return "a test's rank"; }
  int rank() const override { return r; }
  int world() const override { return n; }
  void allreduce_sum(float*, size_t, const char*) override { FAIL("not used"); }
  void allreduce_sum(double*, size_t, const char*) override { FAIL("not used"); }
  void start_allreduce_sum(float*, size_t, const char*) override { FAIL("not used"); }
  void progress() override {}
  void finish_all(const char*) override {}
  void start_reduce_scatter_sum(const float*, float*, const size_t*, const char*) override { FAIL("not used"); }
  void allgather(float*, const size_t*, const char*) override { FAIL("not used"); }
  void allreduce_max(int64_t*, size_t, const char*) override { FAIL("not used"); }
  void allreduce_max(float*, size_t, const char*) override { FAIL("not used"); }
  std::unique_ptr<parallel::Communicator> split(int, int, const char*) override { return nullptr; }
  void broadcast(void*, size_t, int, const char*) override {}
  void barrier(const char*) override {}
  void arrive(long) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

// buckets: the last micro-batch starts its gradients' sums in buckets of at most this many floats during the
// backward (0: the state's all_reduce sums them after it).
template <class Prec>
void data_parallel_case(size_t buckets = 0) {
  Fixture<> f;
  using St = backend::cuda::State<TinyRnope, Prec>;
  using Ex = backend::cuda::Executor<TinyRnope, B, T, Prec>;
  constexpr size_t n = plan::ParamPlan<TinyRnope>::table.total;
  auto one = std::make_unique<St>(), dp = std::make_unique<St>();
  f.load(*one);
  f.load(*dp);
  auto e1 = std::make_unique<Ex>(), e2 = std::make_unique<Ex>();
  RankOf comm(0, 2);
  auto owned = std::make_unique<Doubling>();
  Doubling* sums = owned.get();
  comm.attach(std::move(owned));
  const std::vector<double> ring(4, 0.0);
  one->set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
  dp->set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
  const double v = double(f.valid);
  for (int k = 0; k < 3; ++k) {
    CAPTURE(k);
    one->begin_step();
    e1->accumulate(*one, f.batch(), 1.0f / float(v));
    one->end_step(StepArgs{1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, v});
    dp->begin_step();
    if (buckets) e2->set_bucket_floats(buckets);
    e2->accumulate(*dp, f.batch(), 1.0f / float(2 * v), buckets ? &comm : nullptr);
    dp->all_reduce(comm);
    dp->end_step(StepArgs{1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, 2 * v});
    const StepRecord a = one->step_record(), b = dp->step_record();
    CHECK(b.verdict == int(Verdict::ok));
    CHECK(b.loss == doctest::Approx(a.loss).epsilon(1e-12));
    CHECK(b.grad_norm == doctest::Approx(a.grad_norm).epsilon(1e-6));
  }
  const size_t n_buckets = buckets ? e2->buckets().size() : 1;
  if (buckets) {  // the buckets tile the flat buffer, each starts after an op of the program, in order
    CHECK(n_buckets > 3);
    std::vector<std::pair<size_t, size_t>> tiles;
    int after = -1;
    for (const auto& k : e2->buckets()) {
      tiles.push_back({k.begin, k.end});
      CHECK(k.after >= after);
      after = k.after;
    }
    std::sort(tiles.begin(), tiles.end());
    size_t at = 0;
    for (const auto& [b, e] : tiles) {
      CHECK(b == at);
      at = e;
    }
    CHECK(at == n);
  }
  CHECK(sums->calls == int(3 * (n_buckets + 1)));  // the gradients (whole, or each bucket) and the loss, each step
  const std::vector<float> p1(one->host(backend::Tensor::params), one->host(backend::Tensor::params) + n);
  CHECK(rel_err(dp->host(backend::Tensor::params), p1) < 1e-6);
#if !defined(__CUDACC__)
  CHECK(std::equal(p1.begin(), p1.end(), dp->host(backend::Tensor::params)));  // the SIMT layer's order is fixed
#endif
}

// Tensor parallelism on the CUDA backend: two TP ranks (threads, each its tp_local state and executor) whose device
// collectives meet on the host (in rank order, after each rank's stream) take one process's loss and gradients:
// the row-parallel sums, the vocabulary-parallel embedding and loss; then one whole step (the norm summed over the
// group with the replicated norms once, the decision, the update) gives one process's norm and parameters. The
// eager launches (the host-side sums could not be captured in a CUDA graph: NCCL's can).
struct ThreadGroup {
  int t;
  std::barrier<> bar;
  std::vector<void*> bufs;
  explicit ThreadGroup(int n) : t(n), bar(n), bufs(size_t(n)) {}
  // In place on every rank: op over the ranks' host values, in rank order.
  template <class X, class Op>
  void reduce(int r, X* d, size_t n, Op op) {
    bufs[size_t(r)] = d;
    bar.arrive_and_wait();
    std::vector<X> out(static_cast<X*>(bufs[0]), static_cast<X*>(bufs[0]) + n);
    for (int k = 1; k < t; ++k)
      for (size_t i = 0; i < n; ++i) out[i] = op(out[i], static_cast<X*>(bufs[size_t(k)])[i]);
    bar.arrive_and_wait();  // every rank has read every buffer
    std::copy(out.begin(), out.end(), d);
    bar.arrive_and_wait();
  }
};
struct ThreadDevice final : parallel::DeviceCollectives {
  ThreadGroup& g;
  int r;
  int calls = 0;
  ThreadDevice(ThreadGroup& group, int rank) : g(group), r(rank) {}
  const char* name() const override { return "threads"; }
  template <class X, class H, class Op>
  void through_host(X* d, size_t n, void* stream, Op op) {
    const auto st = static_cast<gpu::Stream>(stream);
    std::vector<X> x(n);
    backend::cuda::to_host(x.data(), d, n * sizeof(X), st);
    std::vector<H> h(x.begin(), x.end());
    g.reduce(r, h.data(), n, op);
    for (size_t i = 0; i < n; ++i) x[i] = X(h[i]);
    backend::cuda::to_device(d, x.data(), n * sizeof(X), st);
    backend::cuda::synchronize(st);
    ++calls;
  }
  static constexpr auto plus = [](auto a, auto b) { return a + b; };
  void allreduce_sum(float* d, size_t n, void* s, const char*) override { through_host<float, float>(d, n, s, plus); }
  void allreduce_sum(double* d, size_t n, void* s, const char*) override { through_host<double, double>(d, n, s, plus); }
  void allreduce_sum(bf16* d, size_t n, void* s, const char*) override { through_host<bf16, float>(d, n, s, plus); }
  void allreduce_max(float* d, size_t n, void* s, const char*) override {
    through_host<float, float>(d, n, s, [](float a, float b) { return a > b ? a : b; });
  }
  // ZeRO-1's uneven pieces: the whole buffer summed, this rank's piece kept; the gather as a sum of zeros elsewhere
  void reduce_scatter_sum(const float* send, float* recv, const size_t* counts, void* stream, const char*) override {
    const auto st = static_cast<gpu::Stream>(stream);
    size_t total = 0, at = 0;
    for (int k = 0; k < g.t; ++k) total += counts[k], at += k < r ? counts[k] : 0;
    std::vector<float> h(total);
    backend::cuda::to_host(h.data(), send, total * 4, st);
    g.reduce(r, h.data(), total, plus);
    backend::cuda::to_device(recv, h.data() + at, counts[r] * 4, st);
    backend::cuda::synchronize(st);
    ++calls;
  }
  void allgather(float* d, const size_t* counts, void* stream, const char*) override {
    const auto st = static_cast<gpu::Stream>(stream);
    size_t total = 0, at = 0;
    for (int k = 0; k < g.t; ++k) total += counts[k], at += k < r ? counts[k] : 0;
    std::vector<float> h(total);
    backend::cuda::to_host(h.data(), d, total * 4, st);
    for (size_t i = 0; i < total; ++i)
      if (i < at || i >= at + counts[r]) h[i] = 0.0f;
    g.reduce(r, h.data(), total, plus);  // x + 0: exact
    backend::cuda::to_device(d, h.data(), total * 4, st);
    backend::cuda::synchronize(st);
    ++calls;
  }
};

// tol: the losses' and gradients' relative tolerance against one process (fp32: summation order only); step_tol:
// the step's update (new - old parameters) against one process's, in L2, relative.
template <class Prec>
void tensor_parallel_case(double tol, double step_tol) {
  using M = TinyRnope;
  constexpr int t = 2;
  using Lm = tp_local<M, t>;
  using G = plan::ParamPlan<M>;
  using L = plan::ParamPlan<Lm>;
  setenv("KILN_CUDA_GRAPHS", "0", 1);  // read by the states and executors made below
  Fixture<> f;
  auto one = std::make_unique<backend::cuda::State<M, Prec>>();
  f.load(*one);
  const std::vector<float> full(one->host(backend::Tensor::params), one->host(backend::Tensor::params) + G::table.total);
  auto e1 = std::make_unique<backend::cuda::Executor<M, B, T, Prec>>();
  const float scale = 1.0f / float(f.valid);
  one->zero_grad();
  const double loss = e1->forward_backward(*one, f.batch(), scale);
  const std::vector<float> g1(one->host(backend::Tensor::grads), one->host(backend::Tensor::grads) + G::table.total);
  const double eval = e1->forward(*one, f.batch());
  const std::vector<double> ring(4, 0.0);
  const StepArgs args{1e-3, 0.9, 0.95, 1e-8, 0.1, 0.5, double(f.valid)};  // clip 0.5: the scale from the group's norm
  one->set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
  one->begin_step();
  e1->accumulate(*one, f.batch(), scale);
  one->end_step(args);
  const StepRecord want = one->step_record();
  const std::vector<float> p1(one->host(backend::Tensor::params), one->host(backend::Tensor::params) + G::table.total);

  ThreadGroup group(t);
  struct Rank {
    std::unique_ptr<backend::cuda::State<Lm, Prec>> state;
    std::unique_ptr<backend::cuda::Executor<M, B, T, Prec, t>> exec;
    std::unique_ptr<RankOf> comm;
    ThreadDevice* device = nullptr;
    double loss = 0, eval = 0;
    StepRecord record{};
    std::vector<float> grads, params;
  };
  std::vector<Rank> ranks(t);
  std::vector<std::thread> threads;
  for (int r = 0; r < t; ++r)
    threads.emplace_back([&, r] {
      Rank& k = ranks[size_t(r)];
      k.comm = std::make_unique<RankOf>(r, t);
      auto d = std::make_unique<ThreadDevice>(group, r);
      k.device = d.get();
      k.comm->attach(std::move(d));
      k.state = std::make_unique<backend::cuda::State<Lm, Prec>>();
      tp_scatter<M, t>(full.data(), k.state->host_mut(backend::Tensor::params), r);
      k.state->commit(backend::Tensor::params);
      k.state->set_tensor_parallel(k.comm.get());
      k.exec = std::make_unique<backend::cuda::Executor<M, B, T, Prec, t>>();
      k.exec->set_tensor_parallel(k.comm.get());
      k.state->zero_grad();
      k.loss = k.exec->forward_backward(*k.state, f.batch(), scale);
      k.grads.assign(k.state->host(backend::Tensor::grads), k.state->host(backend::Tensor::grads) + L::table.total);
      k.eval = k.exec->forward(*k.state, f.batch());
      k.state->set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
      k.state->begin_step();
      k.exec->accumulate(*k.state, f.batch(), scale);
      k.state->end_step(args);
      k.record = k.state->step_record();
      k.params.assign(k.state->host(backend::Tensor::params), k.state->host(backend::Tensor::params) + L::table.total);
    });
  for (auto& th : threads) th.join();
  unsetenv("KILN_CUDA_GRAPHS");
  std::vector<const float*> gp, pp;
  for (const Rank& k : ranks) {
    CHECK(k.loss == doctest::Approx(loss).epsilon(tol));
    CHECK(k.eval == doctest::Approx(eval).epsilon(tol));
    CHECK(k.record.verdict == int(Verdict::ok));
    CHECK(k.record.grad_norm == doctest::Approx(want.grad_norm).epsilon(tol));
    CHECK(k.record.grad_norm > args.clip);  // the clip scale is the group's
    CHECK(k.device->calls > 0);
    gp.push_back(k.grads.data());
    pp.push_back(k.params.data());
  }
  CHECK(ranks[0].record.grad_norm == ranks[1].record.grad_norm);  // every rank the same bits
  std::vector<float> grads(G::table.total, 0.0f), params(G::table.total, 0.0f);
  tp_gather<M, t>(gp.data(), grads.data());
  tp_gather<M, t>(pp.data(), params.data());
  double worst = 0, step_diff = 0, step_size = 0;
  for (const auto& e : G::table.entries) {
    CAPTURE(std::string(e.name.view()));
    const std::vector<float> ref(g1.begin() + long(e.offset), g1.begin() + long(e.offset + e.count()));
    worst = std::max(worst, rel_err(grads.data() + e.offset, ref));
    CHECK(rel_err(grads.data() + e.offset, ref) < tol);
    for (size_t i = e.offset; i < e.offset + e.count(); ++i) {  // AdamW's first step is lr sign(g) where |g| >> eps:
      step_diff += std::pow(double(params[i]) - double(p1[i]), 2);  // compared as a whole, not where g is ~0
      step_size += std::pow(double(p1[i]) - double(full[i]), 2);
    }
  }
  const double update = std::sqrt(step_diff / step_size);
  MESSAGE("TP 2 vs one process: gradients ", worst, " relative (worst tensor), the step's update ", update);
  CHECK(update < step_tol);
}

// ZeRO-1 on the CUDA state: two ranks (threads) whose micro-batches are the same, each scaling by 1 / the global
// batch's targets, so that the reduce-scattered gradients are one process's exactly (halves doubled); each rank
// updates its shard (its moments only) and the weights are all-gathered: three steps take one process's losses,
// norms and parameters (bit for bit in the SIMT layer), and each rank's moments are its shard of one process's.
template <class Prec>
void zero1_case() {
  using M = TinyRnope;
  constexpr int t = 2;
  constexpr size_t n = plan::ParamPlan<M>::table.total;
  setenv("KILN_CUDA_GRAPHS", "0", 1);  // the host-side sums cannot be captured
  Fixture<> f;
  auto one = std::make_unique<backend::cuda::State<M, Prec>>();
  f.load(*one);
  const std::vector<float> start(one->host(backend::Tensor::params), one->host(backend::Tensor::params) + n);
  auto e1 = std::make_unique<backend::cuda::Executor<M, B, T, Prec>>();
  const std::vector<double> ring(4, 0.0);
  const std::vector<plan::DecayRange> decay{{0, n / 3, false}, {n / 3, n, true}};  // a range across the shards' cut
  one->set_decay(decay);
  one->set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
  const double v = double(f.valid);
  std::vector<StepRecord> want;
  for (int k = 0; k < 3; ++k) {
    one->begin_step();
    e1->accumulate(*one, f.batch(), 1.0f / float(v));
    one->end_step(StepArgs{1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, v});
    want.push_back(one->step_record());
  }
  const std::vector<float> p1(one->host(backend::Tensor::params), one->host(backend::Tensor::params) + n);
  const std::vector<float> m1(one->host(backend::Tensor::adam_m), one->host(backend::Tensor::adam_m) + n);
  ThreadGroup group(t);
  struct Rank {
    std::vector<StepRecord> records;
    std::vector<float> params, moments;
    parallel::Shard shard;
    int calls = 0;
  };
  std::vector<Rank> ranks(t);
  std::vector<std::thread> threads;
  for (int r = 0; r < t; ++r)
    threads.emplace_back([&, r] {
      Rank& k = ranks[size_t(r)];
      RankOf comm(r, t);
      auto owned = std::make_unique<ThreadDevice>(group, r);
      ThreadDevice* d = owned.get();
      comm.attach(std::move(owned));
      backend::cuda::State<M, Prec> st;
      std::copy(start.begin(), start.end(), st.host_mut(backend::Tensor::params));
      st.commit(backend::Tensor::params);
      st.set_decay(decay);
      st.shard(comm);
      k.shard = st.optimizer_shard();
      backend::cuda::Executor<M, B, T, Prec> e;
      st.set_step_state(GuardCounters{0.0, 4, 0, 0}, ring.data(), 0);
      for (int s = 0; s < 3; ++s) {
        st.begin_step();
        e.accumulate(st, f.batch(), 1.0f / float(2 * v));
        st.all_reduce(comm);
        st.end_step(StepArgs{1e-3, 0.9, 0.95, 1e-8, 0.1, 1.0, 2 * v});
        k.records.push_back(st.step_record());
      }
      k.params.assign(st.host(backend::Tensor::params), st.host(backend::Tensor::params) + n);
      k.moments.assign(st.host(backend::Tensor::adam_m), st.host(backend::Tensor::adam_m) + k.shard.size());
      k.calls = d->calls;
    });
  for (auto& th : threads) th.join();
  unsetenv("KILN_CUDA_GRAPHS");
  CHECK(ranks[0].shard.begin == 0);
  CHECK(ranks[0].shard.end == ranks[1].shard.begin);
  CHECK(ranks[1].shard.end == n);
  CHECK(ranks[0].shard.end % kernels::cuda::kSumChunk == 0);
  CHECK(ranks[1].shard.size() > 0);
  for (const Rank& k : ranks) {
    CHECK(k.calls == 3 * 4);  // a step: the reduce-scatter, the loss, the norm's chunk sums, the all-gather
    for (int s = 0; s < 3; ++s) {
      CAPTURE(s);
      CHECK(k.records[size_t(s)].verdict == int(Verdict::ok));
      CHECK(k.records[size_t(s)].loss == doctest::Approx(want[size_t(s)].loss).epsilon(1e-12));
      CHECK(k.records[size_t(s)].grad_norm == doctest::Approx(want[size_t(s)].grad_norm).epsilon(1e-6));
    }
    CHECK(rel_err(k.params.data(), p1) < 1e-6);
    const std::vector<float> mine(m1.begin() + long(k.shard.begin), m1.begin() + long(k.shard.end));
    CHECK(rel_err(k.moments.data(), mine) < 1e-6);
#if !defined(__CUDACC__)
    CHECK(std::equal(p1.begin(), p1.end(), k.params.begin()));  // the SIMT layer's order is fixed: bit for bit
    CHECK(std::equal(mine.begin(), mine.end(), k.moments.begin()));
    CHECK(k.records[2].grad_norm == want[2].grad_norm);
#endif
  }
}

// The same micro-batch run three times (eager, captured, replayed: the executor's CUDA graphs) gives the same
// losses and gradients, bit for bit, as eager launches (KILN_CUDA_GRAPHS=0 is read at construction). Kiln's
// attention kernel, whose bits do not depend on scheduling (cuDNN's backward accumulates dQ with atomics).
template <class Prec>
void graph_case() {
  Fixture<> f;
  setenv("KILN_ATTENTION", "kiln", 1);
  auto run = [&](const char* graphs, int times, int* captured) {
    setenv("KILN_CUDA_GRAPHS", graphs, 1);
    backend::cuda::State<TinyRnope, Prec> s;
    f.load(s);
    auto exec = std::make_unique<backend::cuda::Executor<TinyRnope, B, T, Prec>>();
    std::vector<double> losses;
    s.zero_grad();
    for (int i = 0; i < times; ++i) losses.push_back(exec->forward_backward(s, f.batch(), 1.0f / float(f.valid)));
    *captured = exec->graphs_captured();
    const float* g = s.host(backend::Tensor::grads);
    losses.insert(losses.end(), g, g + plan::ParamPlan<TinyRnope>::table.total);
    return losses;
  };
  int with = 0, without = 0;
  const auto a = run("1", 3, &with), b = run("0", 3, &without);
  unsetenv("KILN_CUDA_GRAPHS");
  unsetenv("KILN_ATTENTION");
  CHECK(with == 1);
  CHECK(without == 0);
  CHECK(a == b);
}


// Preference optimisation's pieces (trainer.hpp): each token's loss gradient weighted (Batch::weights), and a
// frozen reference model run forward.
//   - weight 1 on a set A of tokens and 0 elsewhere gives, bit for bit, the gradients of the batch whose targets
//     outside A are ignored (the rows' dlogits are the same numbers); weights 2 on A and -0.5 on the rest give
//     2 g(A) - 0.5 g(rest) (at fp32's tolerance, or bf16's: the activations' gradients are rounded once, not
//     each part); each run three times (graphs: eager, captured, replayed), and an unweighted run after
//     them is the unweighted run's
//   - cuda::Frozen holds the plan's reference bytes, and its forward gives the state's log-probabilities, bit for bit
template <class Prec>
void weighted_case(double mix_tol) {
  using P = plan::ParamPlan<TinyRnope>;
  constexpr size_t n = P::table.total;
  Fixture<> f;
  backend::cuda::State<TinyRnope, Prec> s;
  f.load(s);
  // bit for bit: Kiln's attention (cuDNN's backward adds dQ with atomics), read when the executor is made
  const char* was = std::getenv("KILN_ATTENTION");
  const std::string before_attention = was ? was : "";
  setenv("KILN_ATTENTION", "kiln", 1);
  auto exec = std::make_unique<backend::cuda::Executor<TinyRnope, B, T, Prec>>();
  if (was) setenv("KILN_ATTENTION", before_attention.c_str(), 1);
  else unsetenv("KILN_ATTENTION");
  const auto grads = [&](const backend::Batch& b, int times) {
    std::vector<float> g;
    for (int i = 0; i < times; ++i) {
      s.zero_grad();
      exec->forward_backward(s, b, 0.25f);
      const float* h = s.host(backend::Tensor::grads);
      std::vector<float> now(h, h + n);
      if (i > 0) CHECK(now == g);
      g = now;
    }
    return g;
  };
  const std::vector<float> plain = grads(f.batch(), 1);
  std::vector<int32_t> in_a = f.targets, in_rest = f.targets;
  std::vector<float> w_a(f.targets.size(), 0.f), w_mix(f.targets.size(), 0.f);
  for (size_t k = 0; k < f.targets.size(); ++k) {
    const bool a = (k * 7) % 3 == 0;  // a third of the tokens, in both rows
    (a ? in_rest : in_a)[k] = -1;
    w_a[k] = a ? 1.f : 0.f;
    w_mix[k] = a ? 2.f : -0.5f;
  }
  backend::Batch masked_a = f.batch(), masked_rest = f.batch(), weighted_a = f.batch(), weighted_mix = f.batch();
  masked_a.targets = in_a.data();
  masked_rest.targets = in_rest.data();
  weighted_a.weights = w_a.data();
  weighted_mix.weights = w_mix.data();
  const std::vector<float> g_a = grads(masked_a, 1), g_rest = grads(masked_rest, 1);
  CHECK(grads(weighted_a, 3) == g_a);
  const std::vector<float> mix = grads(weighted_mix, 3);
  std::vector<float> want(n);
  for (size_t i = 0; i < n; ++i) want[i] = 2.f * g_a[i] - 0.5f * g_rest[i];
  MESSAGE("weights 2 and -0.5 against 2 g(A) - 0.5 g(rest): relative error " << rel_err(mix.data(), want));
  CHECK(rel_err(mix.data(), want) < mix_tol);
  CHECK(grads(f.batch(), 3) == plain);

  // the reference: parameters only, in the storage type
  const size_t before = backend::cuda::allocated_bytes();
  backend::cuda::Frozen<TinyRnope, Prec> ref;
  CHECK(backend::cuda::allocated_bytes() - before == plan::MemoryPlan<TinyRnope, B, T, Prec>::reference);
  const float* p = s.host(backend::Tensor::params);
  std::copy(p, p + n, ref.host_mut(backend::Tensor::params));
  ref.commit(backend::Tensor::params);
  CHECK(std::equal(p, p + n, ref.host(backend::Tensor::params)));
  CHECK_THROWS_WITH(ref.host(backend::Tensor::grads), doctest::Contains("holds its parameters only"));
  exec->forward(s, f.batch());
  const std::vector<float> lp_state(exec->token_logp(), exec->token_logp() + B * T);
  exec->forward(ref, f.batch());
  const std::vector<float> lp_ref(exec->token_logp(), exec->token_logp() + B * T);
  CHECK(lp_ref == lp_state);
  std::vector<int32_t> seg(size_t(B) * T, -1);
  double want_sum[2] = {0, 0};
  for (size_t k = 0; k < seg.size(); ++k)
    if (f.targets[k] >= 0) seg[k] = int32_t(k % 2), want_sum[k % 2] += double(lp_ref[k]);
  double got[2];
  exec->sequence_logprobs(seg.data(), 2, got);
  CHECK(got[0] == want_sum[0]);
  CHECK(got[1] == want_sum[1]);
}

}  // namespace kcb

#if defined(__CUDACC__)
TEST_CASE(KC_WHERE ": a micro-batch replayed from a CUDA graph equals its eager launches, bit for bit") {
  kcb::graph_case<kiln::plan::CudaFp32>();
  kcb::graph_case<kiln::plan::Bf16Mixed>();
}
#endif

TEST_CASE(KC_WHERE ": the tiny RNoPE model in fp32 storage equals PyTorch float64 (loss, log-probs, gradients)") {
  kcb::fixture_case<kiln::plan::CudaFp32>(1e-5, 1e-4, 1e-4);
}
TEST_CASE(KC_WHERE ": the tiny RNoPE model in bf16 storage is within bf16's tolerance of PyTorch float64") {
  kcb::fixture_case<kiln::plan::Bf16Mixed>(1e-2, 5e-2, 8e-2);  // measured: loss 8.4e-4, gradients 4.8e-2
}
TEST_CASE(KC_WHERE ": the tiny QK-norm model (MQA, untied head, RoPE everywhere) equals PyTorch float64") {
  kcb::fixture_case<kiln::plan::CudaFp32, kcb::TinyQk, 2, 20>(1e-5, 1e-4, 1e-4, "tiny_qknorm.safetensors");
  kcb::fixture_case<kiln::plan::Bf16Mixed, kcb::TinyQk, 2, 20>(1e-2, 5e-2, 8e-2, "tiny_qknorm.safetensors");
}
TEST_CASE(KC_WHERE ": the gradient norm and one AdamW step equal the CPU's") { kcb::adamw_case(); }
TEST_CASE(KC_WHERE ": per-token loss weights and the frozen reference model (preference optimisation)") {
  kcb::weighted_case<kiln::plan::CudaFp32>(1e-5);
  kcb::weighted_case<kiln::plan::Bf16Mixed>(3e-2);
}
TEST_CASE(KC_WHERE ": data parallelism: the state's sums over two ranks take one process's steps") {
  kcb::data_parallel_case<kiln::plan::CudaFp32>();
  kcb::data_parallel_case<kiln::plan::Bf16Mixed>();
  // the sums in buckets of at most 4096 floats, started during the last micro-batch's backward: the same steps
  kcb::data_parallel_case<kiln::plan::CudaFp32>(4096);
  kcb::data_parallel_case<kiln::plan::Bf16Mixed>(4096);
}
TEST_CASE(KC_WHERE ": tensor parallelism over 2 ranks: one process's loss, gradients, norm and step") {
  // fp32: the sums' order (measured: gradients 1.7e-6, the update 8.6e-5)
  kcb::tensor_parallel_case<kiln::plan::CudaFp32>(1e-5, 1e-3);
  // bf16: each side rounds its own activations, the fixture's tolerance (measured: gradients 4.5e-2); AdamW's first
  // update is about lr sign(g), so the gradients nearest zero that round to the other sign move it (measured 0.17)
  kcb::tensor_parallel_case<kiln::plan::Bf16Mixed>(8e-2, 0.25);
}
TEST_CASE(KC_WHERE ": ZeRO-1 over 2 ranks: each its shard's moments, one process's steps") {
  kcb::zero1_case<kiln::plan::CudaFp32>();
  kcb::zero1_case<kiln::plan::Bf16Mixed>();
}
TEST_CASE(KC_WHERE ": the trainer's step (decided on the device, two in flight) equals the calls one by one") {
  kcb::step_api_case<kiln::plan::CudaFp32>();
  kcb::step_api_case<kiln::plan::Bf16Mixed>();
}
