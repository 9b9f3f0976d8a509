// tests/kernels_cuda_cases.hpp: Kiln's CUDA kernels (kernels/*.cuh) against the CPU kernels (kernels/*.hpp), the
// reference. Included twice: by tests/test_kernels_simt.cpp (g++: the kernels run in the SIMT layer, in CPU CI) and
// by tests/gpu/test_kernels_gpu.cu (nvcc: the kernels run on the GPU). DevVec holds device memory there and host
// memory here; everything else is the same code.
// The includer defines KC_WHERE (a string: where the kernels run), which names the test cases at the end.
// Tolerances: fp32 storage agrees with the CPU to a few ulp (different exp, sum orders and FMA contraction); bf16
// storage to 1 bf16 ulp of each output (both round the same fp32 value, which may sit on either side of a tie).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "kernels/adamw.cuh"
#include "kernels/adamw.hpp"
#include "kernels/attention.cuh"
#include "kernels/attention.hpp"
#include "kernels/cross_entropy.cuh"
#include "kernels/cross_entropy.hpp"
#include "kernels/embedding.cuh"
#include "kernels/embedding.hpp"
#include "kernels/rope.cuh"
#include "kernels/rope.hpp"
#include "kernels/rmsnorm.cuh"
#include "kernels/rmsnorm.hpp"
#include "kernels/step.cuh"
#include "kernels/swiglu.cuh"
#include "kernels/swiglu.hpp"
#include "kiln/core/bf16.hpp"
#include "kiln/core/rng.hpp"

namespace kc {

#if defined(__CUDACC__)
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(e));
}
template <class T>
struct DevVec {
  T* p = nullptr;
  size_t n = 0;
  explicit DevVec(size_t count) : n(count) {
    check_cuda(cudaMalloc(&p, sizeof(T) * (n ? n : 1)), "cudaMalloc");
    check_cuda(cudaMemset(p, 0, sizeof(T) * n), "cudaMemset");
  }
  explicit DevVec(const std::vector<T>& h) : DevVec(h.size()) {
    check_cuda(cudaMemcpy(p, h.data(), sizeof(T) * n, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DevVec() { cudaFree(p); }
  DevVec(const DevVec&) = delete;
  T* data() { return p; }
  void upload(const std::vector<T>& h) {
    check_cuda(cudaMemcpy(p, h.data(), sizeof(T) * n, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  std::vector<T> host() const {
    std::vector<T> h(n);
    check_cuda(cudaDeviceSynchronize(), "kernel");
    check_cuda(cudaMemcpy(h.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost), "cudaMemcpy");
    return h;
  }
};
inline kiln::gpu::Stream stream() { return nullptr; }
#else
template <class T>
struct DevVec {
  std::vector<T> v;
  explicit DevVec(size_t count) : v(count) {}
  explicit DevVec(const std::vector<T>& h) : v(h) {}
  T* data() { return v.data(); }
  void upload(const std::vector<T>& h) { v = h; }
  std::vector<T> host() const { return v; }
};
inline kiln::gpu::Stream stream() { return nullptr; }
#endif

template <class S>
std::vector<S> random(size_t n, uint64_t seed, double scale = 1.0) {
  std::vector<S> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = S(float((kiln::uniform01(seed, 0, i) * 2 - 1) * scale));
  return v;
}

template <class S>
float as_float(S v) {
  return float(v);
}

// |a - b| within the tolerance of storage type S (relative to the larger magnitude, absolute near zero).
template <class S>
void check_close(const std::vector<S>& got, const std::vector<S>& want, const char* what, double abs_tol = 1e-6) {
  REQUIRE(got.size() == want.size());
  const double rel = sizeof(S) == 2 ? 1.0 / 128 : 4e-6;  // bf16: 1 ulp (8 bits of mantissa); fp32: a few ulp
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = as_float(got[i]), b = as_float(want[i]);
    const double tol = rel * std::max(std::fabs(a), std::fabs(b)) + abs_tol;
    if (!(std::fabs(a - b) <= tol)) {
      if (bad++ == 0) first = i;
    }
  }
  CHECK_MESSAGE(bad == 0, std::string(what) << ": " << bad << " of " << got.size() << " values differ; first at " << first
                               << ": " << as_float(got[first]) << " vs the CPU's " << as_float(want[first]));
}

template <class S>
void swiglu_case() {
  constexpr int F = 512, R = 37;
  const auto gu = random<S>(size_t(R) * 2 * F, 1, 4.0), dh = random<S>(size_t(R) * F, 2);
  std::vector<S> h_ref(size_t(R) * F), dgu_ref(gu.size());
  kiln::kernels::swiglu_forward<S, float, F>(gu.data(), h_ref.data(), R);
  kiln::kernels::swiglu_backward<S, float, F>(gu.data(), dh.data(), dgu_ref.data(), R);
  DevVec<S> d_gu(gu), d_h(h_ref.size()), d_dh(dh), d_dgu(gu.size());
  kiln::kernels::cuda::swiglu_forward<S, F>(d_gu.data(), d_h.data(), R, stream());
  kiln::kernels::cuda::swiglu_backward<S, F>(d_gu.data(), d_dh.data(), d_dgu.data(), R, stream());
  check_close(d_h.host(), h_ref, "swiglu forward");
  check_close(d_dgu.host(), dgu_ref, "swiglu backward");
  // in place, as the plan runs it: dgu == gu
  kiln::kernels::cuda::swiglu_backward<S, F>(d_gu.data(), d_dh.data(), d_gu.data(), R, stream());
  check_close(d_gu.host(), dgu_ref, "swiglu backward in place");
}

template <class S, int D>
void rmsnorm_case() {
  constexpr int R = 29, kBlocks = 4;
  const float eps = 1e-6f;
  const auto x0 = random<S>(size_t(R) * D, 3, 2.0), res = random<S>(size_t(R) * D, 4), w = random<S>(D, 5, 1.5),
             dy = random<S>(size_t(R) * D, 6), dx0 = random<S>(size_t(R) * D, 7);
  // CPU: the residual add rounded to S, then the norm
  std::vector<S> x(x0), y_ref(x.size()), dx_ref(dx0);
  for (size_t i = 0; i < x.size(); ++i) x[i] = S(float(x0[i]) + float(res[i]));
  std::vector<float> rstd_ref(R), dw_ref(D, 0.25f), partials(size_t(kBlocks) * D);
  kiln::kernels::rmsnorm_forward<S, float, D>(x.data(), w.data(), y_ref.data(), rstd_ref.data(), R, eps);
  kiln::kernels::rmsnorm_backward<S, float, D>(x.data(), w.data(), rstd_ref.data(), dy.data(), dx_ref.data(),
                                               dw_ref.data(), partials.data(), kBlocks, R, true);
  DevVec<S> d_x(x0), d_res(res), d_w(w), d_y(y_ref.size()), d_dy(dy), d_dx(dx0);
  DevVec<float> d_rstd(R), d_dw(std::vector<float>(D, 0.25f)), d_partials(size_t(kBlocks) * D);
  kiln::kernels::cuda::rmsnorm_forward<S, D>(d_x.data(), d_res.data(), d_w.data(), d_y.data(), d_rstd.data(), R, eps,
                                             stream());
  check_close(d_x.host(), x, "rmsnorm: the residual stream x + r");
  check_close(d_y.host(), y_ref, "rmsnorm forward");
  check_close(d_rstd.host(), rstd_ref, "rmsnorm rstd");
  kiln::kernels::cuda::rmsnorm_backward<S, D>(d_x.data(), d_w.data(), d_rstd.data(), d_dy.data(), d_dx.data(),
                                              d_dw.data(), d_partials.data(), kBlocks, R, true, stream());
  check_close(d_dx.host(), dx_ref, "rmsnorm backward dx (accumulated)", 1e-5);
  check_close(d_dw.host(), dw_ref, "rmsnorm backward dw", 1e-5);
}

inline void adamw_case() {
  const size_t n = 5000;
  const std::vector<kiln::DecayRange> ranges{{0, 1000, true}, {1000, 1192, false}, {1192, 4100, true},
                                             {4100, 4101, false}, {4101, 5000, true}};
  auto p = random<float>(n, 8), g = random<float>(n, 9, 3.0), m = random<float>(n, 10, 0.1), v = random<float>(n, 11);
  for (auto& x : v) x = std::fabs(x) * 0.01f;
  const kiln::AdamWStep a{3e-3, 0.9, 0.95, 1e-8, 0.1, 7, 1.0};
  // norm and clip on the device; the CPU applies the same scale through grad_scale
  std::vector<double> part(kiln::kernels::sum_squares_partials(n));
  const double norm_ref = std::sqrt(kiln::kernels::sum_squares(g.data(), n, part.data()));
  const float clip = float(norm_ref / 2);
  DevVec<float> d_g(g), d_ns(2);
  DevVec<double> d_part(kiln::kernels::cuda::sum_squares_partials(n));
  kiln::kernels::cuda::grad_norm(d_g.data(), n, d_part.data(), clip, d_ns.data(), stream());
  const auto ns = d_ns.host();
  CHECK(ns[0] == doctest::Approx(norm_ref).epsilon(1e-6));
  CHECK(ns[1] == doctest::Approx(clip / norm_ref).epsilon(1e-6));

  auto p_ref = p, m_ref = m, v_ref = v;
  kiln::AdamWStep a_ref = a;
  a_ref.grad_scale = double(ns[1]);  // the device's scale, so both updates see the same value
  kiln::kernels::adamw_flat<float>(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, ranges.data(),
                                   int(ranges.size()), a_ref);
  const auto k = kiln::kernels::cuda::adamw_constants(a);
  DevVec<float> d_p(p), d_m(m), d_v(v);
  DevVec<kiln::bf16> d_pb(n);
  DevVec<kiln::DecayRange> d_ranges(ranges);
  DevVec<kiln::kernels::cuda::AdamWConstants> d_k(std::vector<kiln::kernels::cuda::AdamWConstants>{k});
  kiln::kernels::cuda::adamw_flat<kiln::bf16>(d_p.data(), d_g.data(), d_m.data(), d_v.data(), d_pb.data(), n,
                                              d_ranges.data(), int(ranges.size()), d_k.data(), d_ns.data() + 1,
                                              stream());
  check_close(d_p.host(), p_ref, "adamw p");
  check_close(d_m.host(), m_ref, "adamw m");
  check_close(d_v.host(), v_ref, "adamw v");
  std::vector<kiln::bf16> pb_ref(n);
  for (size_t i = 0; i < n; ++i) pb_ref[i] = kiln::bf16(p_ref[i]);
  check_close(d_pb.host(), pb_ref, "adamw bf16 copy");
  // weight decay only inside the decay ranges: with a zero gradient and zero moments, p moves by lr * wd * p there
  DevVec<float> d_p2(std::vector<float>(n, 1.f)), d_zero(n), d_m2(n), d_v2(n);
  kiln::kernels::cuda::adamw_flat<kiln::bf16>(d_p2.data(), d_zero.data(), d_m2.data(), d_v2.data(), nullptr, n,
                                              d_ranges.data(), int(ranges.size()), d_k.data(), nullptr, stream());
  const auto p2 = d_p2.host();
  for (const auto& r : ranges) {
    CAPTURE(r.begin);
    CHECK(p2[r.begin] == doctest::Approx(r.decay ? 1.0 - 3e-3 * 0.1 : 1.0).epsilon(1e-7));
    CHECK(p2[r.end - 1] == doctest::Approx(r.decay ? 1.0 - 3e-3 * 0.1 : 1.0).epsilon(1e-7));
  }
}

// The step's end on the device (kernels/step.cuh): the loss sum, and the decision (loss, guard verdict, update
// count, AdamW constants) taking, step after step, exactly the host's decisions (core/step_rule.hpp) with the same
// bits; a skipped step's AdamW launch changes nothing.
inline void step_case() {
  namespace kk = kiln::kernels::cuda;
  const auto loss = random<float>(3001, 21, 4.0);
  double ref = 0;
  for (float x : loss) ref += double(x);
  DevVec<float> d_loss(loss);
  DevVec<double> d_acc(std::vector<double>{0.5});
  kk::sum_losses(d_loss.data(), int(loss.size()), d_acc.data(), stream());
  kk::sum_losses(d_loss.data(), int(loss.size()), d_acc.data(), stream());
  CHECK(d_acc.host()[0] == doctest::Approx(0.5 + 2 * ref).epsilon(1e-12));

  kk::DeviceStep dev{};
  dev.guard = kiln::GuardCounters{3.0, 4, 0, 0};
  std::vector<double> ring(4, 0.0);
  kiln::GuardCounters g = dev.guard;
  long updates = 0;
  struct In {
    double loss, norm;
  };
  const In steps[] = {{2.00, 1.0}, {2.02, 1.5}, {1.98, 0.7}, {2.01, 3.0}, {1.99, 0.9}, {9.0, 1.0},  // a spike
                      {NAN, 1.0},  {2.0, INFINITY}, {2.0, 1.0}, {2.03, 5.0}};
  const kiln::StepArgs args{1e-3, 0.9, 0.95, 1e-8, 0.1, 2.0, 100.0};
  int skipped = 0;
  kk::AdamWConstants skip_k{};
  skip_k.apply = 1;
  for (const In& in : steps) {
    dev.args = args;
    dev.loss_sum = in.loss * args.targets;
    dev.norm_scale[0] = float(in.norm);
    DevVec<kk::DeviceStep> d(std::vector<kk::DeviceStep>{dev});
    kk::decide(d.data(), stream());
    dev = d.host()[0];
    kiln::AdamWStep u{};
    const kiln::StepRecord want = kiln::decide_step(args, in.loss * args.targets, double(float(in.norm)), ring.data(),
                                                    g, updates, &u);
    CAPTURE(in.loss);
    CAPTURE(in.norm);
    const kiln::StepRecord& got = dev.record;
    CHECK(got.verdict == want.verdict);
    CHECK(got.updates == want.updates);
    CHECK(got.bad_in_a_row == want.bad_in_a_row);
    CHECK(std::memcmp(&got.zscore, &want.zscore, sizeof(double)) == 0);
    if (std::isfinite(want.loss)) CHECK(got.loss == want.loss);
    CHECK(std::memcmp(dev.ring, ring.data(), 4 * sizeof(double)) == 0);
    if (want.verdict == int(kiln::Verdict::ok)) {
      const auto k = kk::adamw_constants(u);
      CHECK(std::memcmp(&dev.adamw, &k, sizeof k) == 0);
      CHECK(dev.adamw.gs == doctest::Approx(in.norm > args.clip ? args.clip / in.norm : 1.0));
    } else {
      CHECK(dev.adamw.apply == 0);
      skip_k = dev.adamw;
      ++skipped;
    }
  }
  CHECK(skipped == 3);  // the spike, the NaN loss and the infinite norm
  CHECK(updates == 7);
  // a skipped step's update leaves parameters and moments as they were, bit for bit
  const size_t n = 3000;
  auto p = random<float>(n, 31), gr = random<float>(n, 32), m = random<float>(n, 33), v = random<float>(n, 34);
  for (auto& x : v) x = std::fabs(x);
  DevVec<float> d_p(p), d_g(gr), d_m(m), d_v(v);
  const std::vector<kiln::DecayRange> all{{0, n, true}};
  DevVec<kiln::DecayRange> d_ranges(all);
  REQUIRE(skip_k.apply == 0);  // what the decision wrote for the last skipped step
  DevVec<kk::AdamWConstants> d_k(std::vector<kk::AdamWConstants>{skip_k});
  kk::adamw_flat<float>(d_p.data(), d_g.data(), d_m.data(), d_v.data(), nullptr, n, d_ranges.data(), 1, d_k.data(),
                        nullptr, stream());
  CHECK(d_p.host() == p);
  CHECK(d_m.host() == m);
  CHECK(d_v.host() == v);
}

template <class S>
void rope_case() {
  constexpr int NH = 4, NKV = 2, HD = 64, R = 23, C = (NH + 2 * NKV) * HD;
  const kiln::kernels::RopeTable<float, HD> table(300, 10000.0);
  auto x = random<S>(size_t(R) * C, 12, 2.0);
  std::vector<int32_t> pos(R);
  for (int r = 0; r < R; ++r) pos[size_t(r)] = (r * 37) % 300;
  auto ref = x;
  kiln::kernels::rope_forward<S, float, NH + NKV, HD>(ref.data(), C, pos.data(), R, table);
  DevVec<S> d_x(x);
  DevVec<int32_t> d_pos(pos);
  DevVec<float> d_cos(table.cos), d_sin(table.sin);
  kiln::kernels::cuda::rope_forward<S, NH + NKV, HD>(d_x.data(), C, d_pos.data(), R, d_cos.data(), d_sin.data(),
                                                     stream());
  const auto fwd = d_x.host();
  check_close(fwd, ref, "rope forward (q and k heads; v untouched)");
  for (int r = 0; r < R; ++r)  // the v heads are not rotated
    for (int j = (NH + NKV) * HD; j < C; ++j) CHECK(as_float(fwd[size_t(r) * C + j]) == as_float(x[size_t(r) * C + j]));
  kiln::kernels::rope_backward<S, float, NH + NKV, HD>(ref.data(), C, pos.data(), R, table);
  kiln::kernels::cuda::rope_backward<S, NH + NKV, HD>(d_x.data(), C, d_pos.data(), R, d_cos.data(), d_sin.data(),
                                                      stream());
  check_close(d_x.host(), ref, "rope backward");
}

template <class S>
void embedding_case() {
  constexpr int H = 192, V = 50, R = 301;
  const auto E = random<S>(size_t(V) * H, 13), dout = random<S>(size_t(R) * H, 14);
  std::vector<int32_t> tok(R);
  for (int r = 0; r < R; ++r) tok[size_t(r)] = int32_t((r * r * 7 + 3) % (V - 5));  // repeats; 5 ids never used
  std::vector<S> out_ref(size_t(R) * H);
  std::vector<float> dE_ref(size_t(V) * H, 0.5f);
  kiln::kernels::embedding_forward<S, H>(tok.data(), R, E.data(), out_ref.data());
  kiln::kernels::embedding_backward<S, float, H>(tok.data(), R, dout.data(), dE_ref.data());
  std::vector<int32_t> seen(V, 0);
  const auto g = kiln::kernels::cuda::EmbeddingGrad::build(tok.data(), R, seen);
  for (int32_t c : seen) CHECK(c == 0);  // the scratch is left zero for the next batch
  DevVec<int32_t> d_tok(tok), d_token(g.token), d_begin(g.begin), d_rows(g.rows);
  DevVec<S> d_E(E), d_out(out_ref.size()), d_dout(dout);
  DevVec<float> d_dE(std::vector<float>(size_t(V) * H, 0.5f));
  kiln::kernels::cuda::embedding_forward<S, H>(d_tok.data(), R, d_E.data(), d_out.data(), stream());
  kiln::kernels::cuda::embedding_backward<S, H>(d_token.data(), d_begin.data(), d_rows.data(), int(g.token.size()),
                                                d_dout.data(), d_dE.data(), stream());
  check_close(d_out.host(), out_ref, "embedding forward");
  check_close(d_dE.host(), dE_ref, "embedding backward (repeated ids)", 1e-6);
  // the groups packed at fixed places for R groups (EmbeddingGrad::pack), one launch of R blocks, as the backend
  // runs it (the same launch every batch: a CUDA graph's): the empty places add nothing
  std::vector<int32_t> packed;
  g.pack(R, packed);
  CHECK(packed.size() == size_t(3 * R + 1));
  DevVec<int32_t> d_packed(packed);
  DevVec<float> d_dE2(std::vector<float>(size_t(V) * H, 0.5f));
  kiln::kernels::cuda::embedding_backward<S, H>(d_packed.data(), d_packed.data() + R, d_packed.data() + 2 * R + 1, R,
                                                d_dout.data(), d_dE2.data(), stream());
  check_close(d_dE2.host(), dE_ref, "embedding backward (fixed places)", 1e-6);
  // vocabulary-parallel (TP 2): each rank holds 25 rows; its forward gives its tokens' rows and zeros elsewhere, so
  // the two outputs sum to the full one; its backward's groups (local rows) give its rows of the full gradient
  constexpr int Vl = V / 2;
  std::vector<float> sum(out_ref.size(), 0.0f);
  for (int r = 0; r < 2; ++r) {
    CAPTURE(r);
    const std::vector<S> El(E.begin() + long(r) * Vl * H, E.begin() + long(r + 1) * Vl * H);
    std::vector<int32_t> seen_l(Vl, 0);
    const auto gl = kiln::kernels::cuda::EmbeddingGrad::build(tok.data(), R, seen_l, r * Vl);
    for (int32_t c : seen_l) CHECK(c == 0);
    for (int32_t t : gl.token) CHECK((t >= 0 && t < Vl));
    std::vector<int32_t> packed_l;
    gl.pack(R, packed_l);
    DevVec<S> d_El(El), d_outl(out_ref.size());
    DevVec<int32_t> d_pl(packed_l);
    DevVec<float> d_dEl(std::vector<float>(size_t(Vl) * H, 0.5f));
    kiln::kernels::cuda::embedding_forward<S, H>(d_tok.data(), R, d_El.data(), d_outl.data(), stream(), r * Vl, Vl);
    kiln::kernels::cuda::embedding_backward<S, H>(d_pl.data(), d_pl.data() + R, d_pl.data() + 2 * R + 1, R,
                                                  d_dout.data(), d_dEl.data(), stream());
    const std::vector<S> outl = d_outl.host();
    for (int i = 0; i < R; ++i) {
      const bool mine = tok[size_t(i)] / Vl == r;
      for (int j = 0; j < H; ++j) {
        const float v = float(outl[size_t(i) * H + j]);
        if (!mine) CHECK(v == 0.0f);
        sum[size_t(i) * H + j] += v;
      }
    }
    const std::vector<float> want(dE_ref.begin() + long(r) * Vl * H, dE_ref.begin() + long(r + 1) * Vl * H);
    check_close(d_dEl.host(), want, "vocabulary-parallel embedding backward", 1e-6);
  }
  std::vector<S> sum_s(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) sum_s[i] = S(sum[i]);
  check_close(sum_s, out_ref, "vocabulary-parallel embedding forward, summed over the ranks");
}

template <class S>
void xent_case() {
  constexpr int V = 1000, n = 13;
  auto logits = random<float>(size_t(n) * V, 15, 6.0);
  std::vector<int32_t> tgt(n);
  for (int i = 0; i < n; ++i) tgt[size_t(i)] = i == 4 ? -1 : (i * 71) % V;  // row 4 ignored
  const float z = 1e-4f, gs = 1.f / 12;
  auto l_ref = logits;
  std::vector<float> loss_ref(n), logp_ref(n);
  kiln::kernels::xent_rows<float, V>(l_ref.data(), tgt.data(), n, z, gs, true, loss_ref.data(), logp_ref.data());
  std::vector<S> dl_ref(l_ref.size());
  for (size_t i = 0; i < l_ref.size(); ++i) dl_ref[i] = S(l_ref[i]);
  DevVec<float> d_l(logits), d_loss(n), d_logp(n), d_gs(std::vector<float>{gs});
  DevVec<int32_t> d_t(tgt);
  DevVec<S> d_dl(l_ref.size());
  kiln::kernels::cuda::xent_rows<S, V>(d_l.data(), d_t.data(), n, z, d_gs.data(), d_dl.data(), d_loss.data(),
                                       d_logp.data(), stream());
  check_close(d_loss.host(), loss_ref, "cross-entropy per-token loss", 1e-6);
  check_close(d_logp.host(), logp_ref, "cross-entropy per-token log-prob", 1e-6);
  check_close(d_dl.host(), dl_ref, "cross-entropy dlogits", 1e-8);
  // no gradients asked: the same losses
  DevVec<float> d_loss2(n), d_logp2(n);
  kiln::kernels::cuda::xent_rows<S, V>(d_l.data(), d_t.data(), n, z, nullptr, static_cast<S*>(nullptr),
                                       d_loss2.data(), d_logp2.data(), stream());
  check_close(d_loss2.host(), loss_ref, "cross-entropy loss without gradients", 1e-6);
  // per-row weights (preference optimisation's -dL/dlog p of each token): each row's dlogits scaled by its weight,
  // some negative, one zero; the losses unchanged
  std::vector<float> rw(n);
  for (int i = 0; i < n; ++i) rw[size_t(i)] = i == 7 ? 0.f : float((i % 3) - 1) * 0.37f + (i % 2 ? 0.05f : -0.11f);
  auto l_w = logits;
  std::vector<float> loss_w(n), logp_w(n);
  kiln::kernels::xent_rows<float, V>(l_w.data(), tgt.data(), n, z, gs, true, loss_w.data(), logp_w.data(), rw.data());
  std::vector<S> dl_w(l_w.size());
  for (size_t i = 0; i < l_w.size(); ++i) dl_w[i] = S(l_w[i]);
  DevVec<float> d_rw(rw), d_loss3(n), d_logp3(n);
  DevVec<S> d_dl3(l_w.size());
  kiln::kernels::cuda::xent_rows<S, V>(d_l.data(), d_t.data(), n, z, d_gs.data(), d_dl3.data(), d_loss3.data(),
                                       d_logp3.data(), stream(), d_rw.data());
  check_close(d_loss3.host(), loss_ref, "cross-entropy loss with row weights", 1e-6);
  check_close(d_dl3.host(), dl_w, "cross-entropy dlogits with row weights", 1e-8);
  const auto h_dl3 = d_dl3.host();
  int nonzero = 0;
  for (int j = 0; j < V; ++j) nonzero += float(h_dl3[size_t(7) * V + size_t(j)]) != 0.f;
  CHECK_MESSAGE(nonzero == 0, "a row of weight 0 got a gradient in " << nonzero << " columns");

  // vocabulary-parallel over 4 ranks (tensor parallelism): each its 250 columns; the group's max and sums taken on
  // the host between the launches (the executor's device collectives); every rank gets every row's loss and
  // log-probability, and its columns of the full dlogits
  constexpr int t = 4, Vl = V / t;
  std::vector<std::vector<float>> stats(t, std::vector<float>(3 * n));
  std::deque<DevVec<float>> d_ll, d_st;
  for (int r = 0; r < t; ++r) {
    std::vector<float> mine(size_t(n) * Vl);
    for (int i = 0; i < n; ++i)
      std::copy_n(logits.begin() + long(i) * V + long(r) * Vl, Vl, mine.begin() + long(i) * Vl);
    d_ll.emplace_back(mine);
    d_st.emplace_back(size_t(3 * n));
  }
  const auto reduce = [&](int from, int count, bool max) {  // in place on every rank, in rank order
    for (int r = 0; r < t; ++r) stats[size_t(r)] = d_st[size_t(r)].host();
    for (int k = from; k < from + count; ++k) {
      float acc = stats[0][size_t(k)];
      for (int r = 1; r < t; ++r) acc = max ? std::max(acc, stats[size_t(r)][size_t(k)]) : acc + stats[size_t(r)][size_t(k)];
      for (int r = 0; r < t; ++r) stats[size_t(r)][size_t(k)] = acc;
    }
    for (int r = 0; r < t; ++r) d_st[size_t(r)].upload(stats[size_t(r)]);
  };
  for (int r = 0; r < t; ++r) kiln::kernels::cuda::xent_vp_max<Vl>(d_ll[size_t(r)].data(), n, d_st[size_t(r)].data(), stream());
  reduce(0, n, true);
  for (int r = 0; r < t; ++r)
    kiln::kernels::cuda::xent_vp_sums<Vl>(d_ll[size_t(r)].data(), d_t.data(), n, r * Vl, d_st[size_t(r)].data(), stream());
  reduce(n, 2 * n, false);
  for (int r = 0; r < t; ++r) {
    CAPTURE(r);
    DevVec<float> d_lossr(n), d_logpr(n);
    DevVec<S> d_dlr(size_t(n) * Vl);
    kiln::kernels::cuda::xent_vp_finish<S, Vl>(d_ll[size_t(r)].data(), d_t.data(), n, r * Vl, z, d_gs.data(),
                                               d_st[size_t(r)].data(), d_dlr.data(), d_lossr.data(), d_logpr.data(),
                                               stream());
    check_close(d_lossr.host(), loss_ref, "vocabulary-parallel cross-entropy loss", 1e-6);
    check_close(d_logpr.host(), logp_ref, "vocabulary-parallel cross-entropy log-prob", 1e-6);
    std::vector<S> want(size_t(n) * Vl);
    for (int i = 0; i < n; ++i)
      std::copy_n(dl_ref.begin() + long(i) * V + long(r) * Vl, Vl, want.begin() + long(i) * Vl);
    check_close(d_dlr.host(), want, "vocabulary-parallel cross-entropy dlogits", 1e-8);
  }
}

template <class S, int NH, int NKV, int HD>
void attention_case() {
  constexpr int B = 2, T = 77, C = (NH + 2 * NKV) * HD;  // T not a multiple of the block or the tile
  const float scale = 1.f / std::sqrt(float(HD));
  const auto qkv = random<S>(size_t(B) * T * C, 16, 2.0), dout = random<S>(size_t(B) * T * NH * HD, 17);
  std::vector<int32_t> ds(size_t(B) * T);
  for (int t = 0; t < T; ++t) {
    ds[size_t(t)] = t < 20 ? 0 : t < 50 ? 20 : 50;  // row 0: three documents
    ds[size_t(T + t)] = t < 3 ? 0 : 3;              // row 1: a short document, then a long one
  }
  // the CPU reference in fp32 (its backward accumulates in the storage type) from the very values the kernel reads
  std::vector<float> qkv_f(qkv.size()), dout_f(dout.size()), out_f(dout.size()), dqkv_f(qkv.size());
  for (size_t i = 0; i < qkv.size(); ++i) qkv_f[i] = float(qkv[i]);
  for (size_t i = 0; i < dout.size(); ++i) dout_f[i] = float(dout[i]);
  std::vector<float> lse_ref(size_t(B) * NH * T), scores(size_t(B) * NH * T);
  kiln::kernels::attention_forward<float, float, NH, NKV, HD>(qkv_f.data(), ds.data(), out_f.data(), lse_ref.data(),
                                                              scores.data(), B, T, scale);
  std::vector<S> out_ref(out_f.size());
  for (size_t i = 0; i < out_f.size(); ++i) out_f[i] = float(out_ref[i] = S(out_f[i]));  // out as S holds it
  kiln::kernels::attention_backward<float, float, NH, NKV, HD>(qkv_f.data(), ds.data(), out_f.data(), lse_ref.data(),
                                                               dout_f.data(), dqkv_f.data(), B, T, scale);
  std::vector<S> dqkv_ref(qkv.size());
  for (size_t i = 0; i < qkv.size(); ++i) dqkv_ref[i] = S(dqkv_f[i]);
  DevVec<S> d_qkv(qkv), d_out(out_ref.size()), d_dout(dout), d_dqkv(qkv.size());
  DevVec<int32_t> d_ds(ds);
  DevVec<float> d_lse(lse_ref.size()), d_D(lse_ref.size());
  kiln::kernels::cuda::attention_forward<S, NH, NKV, HD>(d_qkv.data(), d_ds.data(), d_out.data(), d_lse.data(), B, T,
                                                         scale, stream());
  check_close(d_out.host(), out_ref, "attention forward", 1e-5);
  check_close(d_lse.host(), lse_ref, "attention lse", 1e-5);
  // the backward from the reference's own out, as S holds it (both sides then use the same D = dO . out)
  DevVec<S> d_out_ref(out_ref);
  kiln::kernels::cuda::attention_backward<S, NH, NKV, HD>(d_qkv.data(), d_ds.data(), d_out_ref.data(), d_lse.data(),
                                                          d_dout.data(), d_dqkv.data(), d_D.data(), B, T, scale,
                                                          stream());
  check_close(d_dqkv.host(), dqkv_ref, "attention backward dqkv", 2e-5);
}

}  // namespace kc

TEST_CASE(KC_WHERE ": swiglu (fp32 and bf16 storage)") {
  kc::swiglu_case<float>();
  kc::swiglu_case<kiln::bf16>();
}
TEST_CASE(KC_WHERE ": rmsnorm with the residual add, forward and backward") {
  kc::rmsnorm_case<float, 192>();
  kc::rmsnorm_case<kiln::bf16, 192>();
  kc::rmsnorm_case<float, 1000>();  // not a multiple of the block: the column bounds
  kc::rmsnorm_case<kiln::bf16, 2048>();
}
TEST_CASE(KC_WHERE ": gradient norm, clip scale and AdamW with decay ranges") { kc::adamw_case(); }
TEST_CASE(KC_WHERE ": the step's end on the device: loss sum, the guard's decisions as the host's, a skip changes nothing") {
  kc::step_case();
}
TEST_CASE(KC_WHERE ": rope on the q and k heads of the qkv row, forward and backward") {
  kc::rope_case<float>();
  kc::rope_case<kiln::bf16>();
}
TEST_CASE(KC_WHERE ": embedding forward, and the backward grouped by token (no atomics)") {
  kc::embedding_case<float>();
  kc::embedding_case<kiln::bf16>();
}
TEST_CASE(KC_WHERE ": cross-entropy rows: per-token loss and log-prob, z-loss, dlogits; vocabulary-parallel over 4 ranks") {
  kc::xent_case<float>();
  kc::xent_case<kiln::bf16>();
}
TEST_CASE(KC_WHERE ": attention (causal, intra-document, GQA), forward and backward") {
  kc::attention_case<float, 4, 2, 64>();
  kc::attention_case<float, 4, 4, 32>();  // MHA
  kc::attention_case<kiln::bf16, 4, 1, 128>();  // MQA, head_dim 128
}
