// kiln/parallel/tensor_parallel.hpp: TP<t>'s cut of the parameters. The local model's table is the full one's cut
// as Megatron cuts it; a rank's initial slices are bitwise one process's (so TP and one process start equal);
// gather undoes scatter; and the cut computes the full layer's math: the column-parallel gate/up with the
// row-parallel down, and the rank's heads through the row-parallel o_proj, summed over the ranks (the all-reduce
// the TP executor will do), give one process's outputs; the vocabulary-parallel embedding likewise.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/gemm.hpp"
#include "kernels/swiglu.hpp"
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
