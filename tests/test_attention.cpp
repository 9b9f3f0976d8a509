// tests/test_attention.cpp: algebraic laws of the attention kernel (STYLE.md §7):
//  - document masking on a packed row equals attention run on each document alone (forward, lse, backward);
//  - GQA equals MHA with each kv head repeated for its group (dk, dv of a shared head = the sum over the copies);
//  - a naive reference with the explicit (T, T) masked softmax, forward and backward;
// (doc_start outside [0, i] is rejected where the batch enters a backend: test_ops.cpp, validate_batch; the
// kernel's speed is in bench/: tools/kiln bench --benchmark_filter=attention)
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/attention.hpp"
#include "kernels/attention_blocked.hpp"
#include "kiln/core/rng.hpp"

namespace kk = kiln::kernels;

namespace {

std::vector<double> random_vec(size_t n, uint64_t stream, double lo = -2, double hi = 2) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * kiln::uniform01(42, stream, i);
  return v;
}

template <int NH, int NKV, int HD>
struct Run {  // forward and backward of one configuration, in double
  static constexpr int C = (NH + 2 * NKV) * HD;
  std::vector<double> out, lse, dqkv;
  Run(const std::vector<double>& qkv, const std::vector<int32_t>& ds, const std::vector<double>& dout, int B, int T) {
    const double scale = 1.0 / std::sqrt(double(HD));
    out.assign(size_t(B) * T * NH * HD, 0.0);
    lse.assign(size_t(B) * NH * T, 0.0);
    dqkv.assign(size_t(B) * T * C, 123.0);  // must be overwritten everywhere
    std::vector<double> scores(size_t(B) * NH * T);
    kk::attention_forward<double, double, NH, NKV, HD>(qkv.data(), ds.data(), out.data(), lse.data(), scores.data(), B,
                                                       T, scale);
    kk::attention_backward<double, double, NH, NKV, HD>(qkv.data(), ds.data(), out.data(), lse.data(), dout.data(),
                                                dqkv.data(), B, T, scale);
  }
};

constexpr double kTol = 1e-12;

}  // namespace

TEST_CASE("attention: a packed row with documents equals each document run alone") {
  constexpr int NH = 4, NKV = 2, HD = 8, C = (NH + 2 * NKV) * HD, T = 12;
  const int docs[][2] = {{0, 5}, {5, 9}, {9, 12}};  // [begin, end)
  std::vector<int32_t> ds(T);
  for (auto& d : docs)
    for (int i = d[0]; i < d[1]; ++i) ds[i] = d[0];
  const auto qkv = random_vec(size_t(T) * C, 1);
  const auto dout = random_vec(size_t(T) * NH * HD, 2);
  Run<NH, NKV, HD> packed(qkv, ds, dout, 1, T);
  for (auto& d : docs) {
    const int n = d[1] - d[0];
    std::vector<double> q(qkv.begin() + size_t(d[0]) * C, qkv.begin() + size_t(d[1]) * C);
    std::vector<double> g(dout.begin() + size_t(d[0]) * NH * HD, dout.begin() + size_t(d[1]) * NH * HD);
    Run<NH, NKV, HD> alone(q, std::vector<int32_t>(n, 0), g, 1, n);
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < NH * HD; ++k)
        CHECK(alone.out[size_t(i) * NH * HD + k] == doctest::Approx(packed.out[size_t(d[0] + i) * NH * HD + k]).epsilon(kTol));
      for (int h = 0; h < NH; ++h)
        CHECK(alone.lse[size_t(h) * n + i] == doctest::Approx(packed.lse[size_t(h) * T + d[0] + i]).epsilon(kTol));
      for (int k = 0; k < C; ++k)
        CHECK(alone.dqkv[size_t(i) * C + k] == doctest::Approx(packed.dqkv[size_t(d[0] + i) * C + k]).epsilon(kTol));
    }
  }
}

TEST_CASE("attention: GQA equals MHA with the kv heads repeated") {
  constexpr int B = 2, T = 7, NH = 4, NKV = 2, HD = 8, G = NH / NKV;
  constexpr int Cg = (NH + 2 * NKV) * HD, Cm = 3 * NH * HD;
  const std::vector<int32_t> ds = {0, 0, 0, 3, 3, 3, 3, 0, 1, 1, 1, 1, 5, 5};
  const auto qkv = random_vec(size_t(B) * T * Cg, 3);
  const auto dout = random_vec(size_t(B) * T * NH * HD, 4);
  std::vector<double> rep(size_t(B) * T * Cm);  // [q | k repeated | v repeated]
  for (int r = 0; r < B * T; ++r) {
    const double* src = qkv.data() + size_t(r) * Cg;
    double* dst = rep.data() + size_t(r) * Cm;
    for (int k = 0; k < NH * HD; ++k) dst[k] = src[k];
    for (int h = 0; h < NH; ++h)
      for (int c = 0; c < HD; ++c) {
        dst[NH * HD + h * HD + c] = src[NH * HD + (h / G) * HD + c];
        dst[2 * NH * HD + h * HD + c] = src[(NH + NKV) * HD + (h / G) * HD + c];
      }
  }
  Run<NH, NKV, HD> gqa(qkv, ds, dout, B, T);
  Run<NH, NH, HD> mha(rep, ds, dout, B, T);
  for (size_t k = 0; k < gqa.out.size(); ++k) CHECK(gqa.out[k] == doctest::Approx(mha.out[k]).epsilon(kTol));
  for (size_t k = 0; k < gqa.lse.size(); ++k) CHECK(gqa.lse[k] == doctest::Approx(mha.lse[k]).epsilon(kTol));
  for (int r = 0; r < B * T; ++r) {
    const double* dg = gqa.dqkv.data() + size_t(r) * Cg;
    const double* dm = mha.dqkv.data() + size_t(r) * Cm;
    for (int k = 0; k < NH * HD; ++k) CHECK(dg[k] == doctest::Approx(dm[k]).epsilon(kTol));
    for (int g = 0; g < NKV; ++g)
      for (int c = 0; c < HD; ++c) {
        double sk = 0, sv = 0;
        for (int h = g * G; h < (g + 1) * G; ++h) {
          sk += dm[NH * HD + h * HD + c];
          sv += dm[2 * NH * HD + h * HD + c];
        }
        CHECK(dg[NH * HD + g * HD + c] == doctest::Approx(sk).epsilon(kTol));
        CHECK(dg[(NH + NKV) * HD + g * HD + c] == doctest::Approx(sv).epsilon(kTol));
      }
  }
}

TEST_CASE("attention: naive reference with the explicit (T, T) masked softmax") {
  constexpr int T = 6, NH = 2, NKV = 1, HD = 4, C = (NH + 2 * NKV) * HD;
  const std::vector<int32_t> ds = {0, 0, 2, 2, 2, 5};
  const auto qkv = random_vec(size_t(T) * C, 5);
  const auto dout = random_vec(size_t(T) * NH * HD, 6);
  Run<NH, NKV, HD> run(qkv, ds, dout, 1, T);
  const double scale = 1.0 / std::sqrt(double(HD));
  std::vector<double> dq(T * NH * HD, 0.0), dk(T * HD, 0.0), dv(T * HD, 0.0);
  auto Q = [&](int i, int h, int c) { return qkv[size_t(i) * C + h * HD + c]; };
  auto K = [&](int j, int c) { return qkv[size_t(j) * C + NH * HD + c]; };
  auto Vv = [&](int j, int c) { return qkv[size_t(j) * C + (NH + NKV) * HD + c]; };
  for (int h = 0; h < NH; ++h) {
    double P[T][T] = {}, O[T][HD] = {}, dP[T][T] = {};
    for (int i = 0; i < T; ++i) {
      double S[T], mx = -1e300, sum = 0;
      for (int j = 0; j < T; ++j) {
        const bool allowed = ds[i] <= j && j <= i;
        S[j] = -INFINITY;
        if (allowed) {
          S[j] = 0;
          for (int c = 0; c < HD; ++c) S[j] += Q(i, h, c) * K(j, c);
          S[j] *= scale;
          mx = std::max(mx, S[j]);
        }
      }
      for (int j = 0; j < T; ++j) sum += std::exp(S[j] - mx);
      for (int j = 0; j < T; ++j) P[i][j] = std::exp(S[j] - mx) / sum;
      CHECK(run.lse[size_t(h) * T + i] == doctest::Approx(mx + std::log(sum)).epsilon(kTol));
      for (int c = 0; c < HD; ++c) {
        for (int j = 0; j < T; ++j) O[i][c] += P[i][j] * Vv(j, c);
        CHECK(run.out[size_t(i) * NH * HD + h * HD + c] == doctest::Approx(O[i][c]).epsilon(kTol));
      }
    }
    // backward: dP = dO V^T, dS = P (dP - rowsum(dO o O)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO
    for (int i = 0; i < T; ++i) {
      const double* dO = dout.data() + size_t(i) * NH * HD + h * HD;
      double Di = 0;
      for (int c = 0; c < HD; ++c) Di += dO[c] * O[i][c];
      for (int j = 0; j < T; ++j) {
        for (int c = 0; c < HD; ++c) dP[i][j] += dO[c] * Vv(j, c);
        const double dS = P[i][j] * (dP[i][j] - Di);
        for (int c = 0; c < HD; ++c) {
          dq[size_t(i) * NH * HD + h * HD + c] += scale * dS * K(j, c);
          dk[size_t(j) * HD + c] += scale * dS * Q(i, h, c);
          dv[size_t(j) * HD + c] += P[i][j] * dO[c];
        }
      }
    }
  }
  for (int i = 0; i < T; ++i) {
    for (int k = 0; k < NH * HD; ++k) CHECK(run.dqkv[size_t(i) * C + k] == doctest::Approx(dq[size_t(i) * NH * HD + k]).epsilon(1e-10));
    for (int c = 0; c < HD; ++c) {
      CHECK(run.dqkv[size_t(i) * C + NH * HD + c] == doctest::Approx(dk[size_t(i) * HD + c]).epsilon(1e-10));
      CHECK(run.dqkv[size_t(i) * C + (NH + NKV) * HD + c] == doctest::Approx(dv[size_t(i) * HD + c]).epsilon(1e-10));
    }
  }
}

TEST_CASE("attention: the blocked (GEMM) kernels equal the row kernels, for every block size") {
  constexpr int NH = 4, NKV = 2, HD = 8, C = (NH + 2 * NKV) * HD, B = 2, T = 21;
  std::vector<int32_t> ds(size_t(B) * T);
  for (int i = 0; i < T; ++i) ds[size_t(i)] = i < 7 ? 0 : i < 16 ? 7 : 16;  // row 0: three documents
  for (int i = 0; i < T; ++i) ds[size_t(T + i)] = 0;                          // row 1: one
  const auto qkv = random_vec(size_t(B) * T * C, 11);
  const auto dout = random_vec(size_t(B) * T * NH * HD, 12);
  Run<NH, NKV, HD> ref(qkv, ds, dout, B, T);
  auto check = [&]<int QB>() {
    std::vector<double> out(ref.out.size()), lse(ref.lse.size()), dqkv(ref.dqkv.size(), 123.0),
        s1(size_t(B) * NH * QB * T), s2(size_t(B) * NKV * 2 * QB * T);
    const double scale = 1.0 / std::sqrt(double(HD));
    kk::attention_forward_blocked<double, NH, NKV, HD, QB>(qkv.data(), ds.data(), out.data(), lse.data(), s1.data(), B,
                                                           T, scale);
    kk::attention_backward_blocked<double, NH, NKV, HD, QB>(qkv.data(), ds.data(), out.data(), lse.data(), dout.data(),
                                                            dqkv.data(), s2.data(), B, T, scale);
    double worst = 0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(out[i] - ref.out[i]));
    for (size_t i = 0; i < lse.size(); ++i) worst = std::max(worst, std::abs(lse[i] - ref.lse[i]));
    for (size_t i = 0; i < dqkv.size(); ++i) worst = std::max(worst, std::abs(dqkv[i] - ref.dqkv[i]));
    INFO("query block ", QB, ": worst difference ", worst);
    CHECK(worst < 1e-12);
  };
  check.template operator()<1>();
  check.template operator()<5>();
  check.template operator()<8>();
  check.template operator()<64>();
}
