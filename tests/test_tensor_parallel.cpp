// kiln/parallel/tensor_parallel.hpp: TP<t>'s cut of the parameters. The local model's table is the full one's cut
// as Megatron cuts it; a rank's initial slices are bitwise one process's (so TP and one process start equal);
// gather undoes scatter; and the cut computes the full layer's math: the column-parallel gate/up with the
// row-parallel down, and the rank's heads through the row-parallel o_proj, summed over the ranks (the all-reduce
// the TP executor will do), give one process's outputs; the vocabulary-parallel embedding likewise; and the
// vocabulary-parallel cross-entropy on 4 threads as a TP group gives the full kernel's losses and gradients.
#include <doctest/doctest.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/cross_entropy.hpp"
#include "kernels/gemm.hpp"
#include "kernels/swiglu.hpp"
#include "kiln/backend/cpu.hpp"
#include "kiln/backend/init.hpp"
#include "kiln/parallel/tensor_parallel.hpp"

using namespace kiln;

namespace {
using Small = Decoder<Embedding<vocab<64>, hidden<32>, tied<true>>, layers<2>,
                      Attention<heads<4>, kv_heads<2>, head_dim<8>, RNoPE<2, 10000.0>>, SwiGLU<ffn<48>>>;
using Wide = Decoder<Embedding<vocab<96>, hidden<40>, tied<false>>, layers<1>,
                     Attention<heads<8>, kv_heads<4>, head_dim<8>, RoPE<10000.0>>, SwiGLU<ffn<64>>>;

template <DecoderModel M, int t>
void check_cut() {
  using G = plan::ParamPlan<M>;
  using L = plan::ParamPlan<tp_local<M, t>>;
  static_assert(check_tp_tables<M, t>());
  CHECK(tp_local<M, t>::heads == M::heads / t);
  CHECK(tp_local<M, t>::head_dim == M::head_dim);
  CHECK(tp_local<M, t>::hidden == M::hidden);
  std::vector<float> full(G::table.total);
  init_parameters<M>(full.data(), 0.02, 7);
  std::vector<std::vector<float>> ranks(t, std::vector<float>(L::table.total));
  std::vector<const float*> views;
  for (int r = 0; r < t; ++r) {
    std::vector<float> init(L::table.total);
    init_parameters_tp<M, t>(init.data(), 0.02, 7, r);
    tp_scatter<M, t>(full.data(), ranks[size_t(r)].data(), r);
    CHECK(std::memcmp(init.data(), ranks[size_t(r)].data(), init.size() * 4) == 0);
    views.push_back(ranks[size_t(r)].data());
  }
  std::vector<float> back(G::table.total, 0.0f);
  tp_gather<M, t>(views.data(), back.data());
  CHECK(std::memcmp(back.data(), full.data(), full.size() * 4) == 0);
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / den;
}
}  // namespace

TEST_CASE("tensor parallelism: the local table cuts the full one, initialised as one process, gathered back") {
  check_cut<Small, 2>();
  check_cut<Wide, 2>();
  check_cut<Wide, 4>();
}

TEST_CASE("tensor parallelism: the cut MLP, o_proj and embedding summed over the ranks give the full layer's outputs") {
  using M = Wide;
  constexpr int t = 4, R = 6, H = M::hidden, F = M::ffn, Q = M::q_dim;
  using Lm = tp_local<M, t>;
  using G = plan::ParamPlan<M>;
  using L = plan::ParamPlan<Lm>;
  std::vector<float> full(G::table.total);
  init_parameters<M>(full.data(), 0.5, 11);
  std::vector<float> x(size_t(R) * H), heads(size_t(R) * Q);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.37 * double(i)));
  for (size_t i = 0; i < heads.size(); ++i) heads[i] = float(std::cos(0.21 * double(i)));
  // one process
  const auto& lo = G::table.layer[0];
  std::vector<float> gu(size_t(R) * 2 * F), h(size_t(R) * F), y(size_t(R) * H), o(size_t(R) * H);
  kernels::linear_forward<float>(x.data(), full.data() + lo.gate_up, gu.data(), R, H, 2 * F);
  kernels::swiglu_forward<float, float, F>(gu.data(), h.data(), R);
  kernels::linear_forward<float>(h.data(), full.data() + lo.down, y.data(), R, F, H);
  kernels::linear_forward<float>(heads.data(), full.data() + lo.o, o.data(), R, Q, H);
  // t ranks: each its gate/up rows and down columns, its heads' columns of the attention output and o_proj
  std::vector<float> ysum(y.size(), 0.0f), osum(o.size(), 0.0f);
  constexpr int Fl = Lm::ffn, Ql = Lm::q_dim;
  for (int r = 0; r < t; ++r) {
    std::vector<float> local(L::table.total);
    tp_scatter<M, t>(full.data(), local.data(), r);
    const auto& ll = L::table.layer[0];
    std::vector<float> gul(size_t(R) * 2 * Fl), hl(size_t(R) * Fl), yl(size_t(R) * H), ol(size_t(R) * H),
        mine(size_t(R) * Ql);
    kernels::linear_forward<float>(x.data(), local.data() + ll.gate_up, gul.data(), R, H, 2 * Fl);
    kernels::swiglu_forward<float, float, Fl>(gul.data(), hl.data(), R);
    kernels::linear_forward<float>(hl.data(), local.data() + ll.down, yl.data(), R, Fl, H);
    for (int row = 0; row < R; ++row)
      for (int c = 0; c < Ql; ++c) mine[size_t(row) * Ql + c] = heads[size_t(row) * Q + size_t(r) * Ql + c];
    kernels::linear_forward<float>(mine.data(), local.data() + ll.o, ol.data(), R, Ql, H);
    for (size_t i = 0; i < y.size(); ++i) ysum[i] += yl[i], osum[i] += ol[i];
    // the vocabulary-parallel embedding: a token's row on the rank that holds it, zeros elsewhere
    for (int token : {0, 23, 24, 95}) {
      const bool here = token / Lm::vocab == r;
      const float* row = local.data() + L::table.embedding + size_t(token % Lm::vocab) * H;
      const float* want = full.data() + G::table.embedding + size_t(token) * H;
      if (here) CHECK(std::memcmp(row, want, sizeof(float) * H) == 0);
    }
    // an untied LM head: its vocabulary rows
    CHECK(std::memcmp(local.data() + L::table.lm_head, full.data() + G::table.lm_head + size_t(r) * Lm::vocab * H,
                      sizeof(float) * Lm::vocab * H) == 0);
  }
  CHECK(max_rel(ysum, y) < 1e-5);  // the sums' order differs: fp32 rounding
  CHECK(max_rel(osum, o) < 1e-5);
}

namespace {
// t threads as a tensor-parallel group: a reduction over their buffers, in rank order, in place on each
struct ThreadGroup {
  int t;
  std::barrier<> bar;
  std::vector<float*> bufs;
  explicit ThreadGroup(int n) : t(n), bar(n), bufs(size_t(n)) {}
  struct Rank {
    ThreadGroup& g;
    int r;
    template <class Op>
    void reduce(float* d, size_t n, Op op) {
      g.bufs[size_t(r)] = d;
      g.bar.arrive_and_wait();
      std::vector<float> out(g.bufs[0], g.bufs[0] + n);
      for (int k = 1; k < g.t; ++k)
        for (size_t i = 0; i < n; ++i) out[i] = op(out[i], g.bufs[size_t(k)][i]);
      g.bar.arrive_and_wait();  // every rank has read every buffer
      std::copy(out.begin(), out.end(), d);
      g.bar.arrive_and_wait();
    }
    void max(float* d, size_t n) { reduce(d, n, [](float a, float b) { return a > b ? a : b; }); }
    void sum(float* d, size_t n) { reduce(d, n, [](float a, float b) { return a + b; }); }
  };
};
}  // namespace

TEST_CASE("tensor parallelism: the vocabulary-parallel cross-entropy over 4 ranks is the full one's") {
  constexpr int V = 96, H = 40, t = 4, Vl = V / t, R = 13, chunk = 5;
  std::vector<float> x(size_t(R) * H), W(size_t(V) * H);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.7 * double(i)));
  for (size_t i = 0; i < W.size(); ++i) W[i] = float(0.3 * std::cos(0.13 * double(i) + 0.5));
  std::vector<int32_t> targets(R);
  for (int r = 0; r < R; ++r) targets[size_t(r)] = r == 4 ? -1 : (r * 37) % V;  // one ignored row
  const float z = 1e-4f, gs = 1.0f / 12;
  // one process
  std::vector<float> dx(size_t(R) * H), dW(W.size(), 0.0f), scratch(size_t(chunk) * V), loss(R), logp(R);
  const double total = kernels::lm_head_cross_entropy<float, V, H>(x.data(), W.data(), targets.data(), R, z, gs,
                                                                   dx.data(), dW.data(), scratch.data(), chunk,
                                                                   loss.data(), logp.data());
  // four ranks, each its vocabulary rows
  ThreadGroup group(t);
  std::vector<std::vector<float>> rdx(t, std::vector<float>(dx.size())), rdW(t, std::vector<float>(size_t(Vl) * H)),
      rloss(t, std::vector<float>(R)), rlogp(t, std::vector<float>(R));
  std::vector<double> totals(t);
  std::vector<std::thread> threads;
  for (int r = 0; r < t; ++r)
    threads.emplace_back([&, r] {
      ThreadGroup::Rank me{group, r};
      std::vector<float> s(size_t(chunk) * Vl), stats(3 * chunk);
      totals[size_t(r)] = kernels::lm_head_cross_entropy_vocab_parallel<float, Vl, H>(
          x.data(), W.data() + size_t(r) * Vl * H, targets.data(), R, r * Vl, z, gs, rdx[size_t(r)].data(),
          rdW[size_t(r)].data(), s.data(), stats.data(), chunk, rloss[size_t(r)].data(), rlogp[size_t(r)].data(), me);
    });
  for (auto& th : threads) th.join();
  for (int r = 0; r < t; ++r) {
    CAPTURE(r);
    CHECK(totals[size_t(r)] == doctest::Approx(total).epsilon(1e-6));
    for (int i = 0; i < R; ++i) {
      CHECK(rloss[size_t(r)][size_t(i)] == doctest::Approx(loss[size_t(i)]).epsilon(1e-5));
      CHECK(rlogp[size_t(r)][size_t(i)] == doctest::Approx(logp[size_t(i)]).epsilon(1e-5));
    }
    CHECK(max_rel(rdx[size_t(r)], dx) < 1e-5);  // every rank the whole dx
    const std::vector<float> mine(dW.begin() + long(r) * Vl * H, dW.begin() + long(r + 1) * Vl * H);
    CHECK(max_rel(rdW[size_t(r)], mine) < 1e-5);
  }
  CHECK(rloss[0][4] == 0.0f);
}

namespace {
// A tensor-parallel group of threads as a Communicator: the sums and maxima the TP executor asks for.
struct ThreadComm final : parallel::Communicator {
  ThreadGroup& g;
  int r;
  ThreadComm(ThreadGroup& group, int rank) : g(group), r(rank) {}
  const char* name() const override { return "threads"; }
  int rank() const override { return r; }
  int world() const override { return g.t; }
  void allreduce_sum(float* d, size_t n, const char*) override { ThreadGroup::Rank{g, r}.sum(d, n); }
  void allreduce_sum(double* d, size_t n, const char*) override {
    std::vector<float> hi(n), lo(n);  // doubles through the float group: exact for the test's values? no: sum parts
    for (size_t i = 0; i < n; ++i) hi[i] = float(d[i]), lo[i] = float(d[i] - double(hi[i]));
    ThreadGroup::Rank{g, r}.sum(hi.data(), n);
    ThreadGroup::Rank{g, r}.sum(lo.data(), n);
    for (size_t i = 0; i < n; ++i) d[i] = double(hi[i]) + double(lo[i]);
  }
  void allreduce_max(float* d, size_t n, const char*) override { ThreadGroup::Rank{g, r}.max(d, n); }
  void allreduce_max(int64_t*, size_t, const char*) override { FAIL("not used"); }
  std::unique_ptr<parallel::Communicator> split(int, int, const char*) override { return nullptr; }
  void start_allreduce_sum(float*, size_t, const char*) override { FAIL("not used"); }
  void progress() override {}
  void finish_all(const char*) override {}
  void start_reduce_scatter_sum(const float*, float*, const size_t*, const char*) override { FAIL("not used"); }
  void allgather(float*, const size_t*, const char*) override { FAIL("not used"); }
  void broadcast(void*, size_t, int, const char*) override {}
  void barrier(const char*) override {}
  void arrive(long) override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};
}  // namespace

TEST_CASE("tensor parallelism: 2 ranks' forward and backward give one process's loss and gradients") {
  using M = Small;
  constexpr int t = 2, Bt = 2, Tt = 16;
  using Lm = tp_local<M, t>;
  backend::cpu::State<M> one;
  one.init(0.5, 3);
  std::vector<int32_t> tokens(Bt * Tt), targets(Bt * Tt), positions(Bt * Tt), doc(Bt * Tt);
  for (int i = 0; i < Bt * Tt; ++i) {
    tokens[size_t(i)] = (i * 29 + 3) % M::vocab, targets[size_t(i)] = (i * 17 + 5) % M::vocab;
    positions[size_t(i)] = i % Tt, doc[size_t(i)] = 0;
  }
  const backend::Batch b{tokens.data(), targets.data(), positions.data(), doc.data()};
  backend::cpu::Executor<M, Bt, Tt> e1;
  one.zero_grad();
  const double loss = e1.forward_backward(one, b, 1.0f / float(Bt * Tt));
  ThreadGroup group(t);
  std::vector<std::unique_ptr<backend::cpu::State<Lm>>> states;
  for (int r = 0; r < t; ++r) {
    states.push_back(std::make_unique<backend::cpu::State<Lm>>());
    init_parameters_tp<M, t>(states.back()->host_mut(backend::Tensor::params), 0.5, 3, r);
  }
  std::vector<double> losses(t);
  std::vector<std::thread> threads;
  for (int r = 0; r < t; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(group, r);
      backend::cpu::Executor<M, Bt, Tt, t> e;
      e.set_tensor_parallel(&comm);
      states[size_t(r)]->zero_grad();
      losses[size_t(r)] = e.forward_backward(*states[size_t(r)], b, 1.0f / float(Bt * Tt));
    });
  for (auto& th : threads) th.join();
  CHECK(losses[0] == doctest::Approx(loss).epsilon(1e-6));
  CHECK(losses[1] == doctest::Approx(loss).epsilon(1e-6));
  std::vector<const float*> parts;
  for (int r = 0; r < t; ++r) parts.push_back(states[size_t(r)]->host(backend::Tensor::grads));
  std::vector<float> grads(plan::ParamPlan<M>::table.total, 0.0f);
  tp_gather<M, t>(parts.data(), grads.data());
  const float* g1 = one.host(backend::Tensor::grads);
  for (const auto& e : plan::ParamPlan<M>::table.entries) {
    CAPTURE(std::string(e.name.view()));
    const std::vector<float> ref(g1 + e.offset, g1 + e.offset + e.count());
    const std::vector<float> got(grads.begin() + long(e.offset), grads.begin() + long(e.offset + e.count()));
    CHECK(max_rel(got, ref) < 1e-5);
  }
}
