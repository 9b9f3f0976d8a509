// kernels/adamw.hpp: AdamW with decoupled weight decay (Loshchilov & Hutter 2019), bias-corrected, in one fused
// pass over the flat parameter buffer, plus the deterministic sum of squares used for gradient-norm clipping.
//
// update (t = 1-based step):
//   g = grad * grad_scale;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)          wd = 0 inside the no-decay ranges
// grad_scale folds the global-norm clip in (clip / norm when the norm exceeds the clip): no extra pass.
// adamw_flat walks fixed chunks of the whole buffer in parallel, each chunk the decay ranges it meets: one pass,
// whatever the number of tensors. Elementwise in T (the hyper-parameters are rounded to T once); no reduction,
// so any split is deterministic.
// sum_squares: sum x_i^2 in double over fixed chunks of kSumChunk values (independent of the thread count), the
// chunk sums (the caller's `partials`, sum_squares_partials(n) of them) added in order: bitwise the same for every
// thread count; nothing is allocated.
#pragma once
#include <cmath>
#include <cstddef>

#include "kiln/core/adamw_step.hpp"
#include "kiln/core/error.hpp"
#include "kiln/plan/params.hpp"

namespace kiln::kernels {

namespace detail {
template <class T>
struct AdamWConsts {
  T gs, b1, b2, c1, c2, inv_bc1, inv_bc2, lr, eps;
  explicit AdamWConsts(const AdamWStep& a)
      : gs(T(a.grad_scale)), b1(T(a.beta1)), b2(T(a.beta2)), c1(T(1 - a.beta1)), c2(T(1 - a.beta2)),
        inv_bc1(T(1.0 / (1.0 - std::pow(a.beta1, double(a.step))))),  // 1 / (1 - b1^t)
        inv_bc2(T(1.0 / (1.0 - std::pow(a.beta2, double(a.step))))),  // 1 / (1 - b2^t)
        lr(T(a.lr)), eps(T(a.eps)) {}
};
template <class T>
inline void adamw_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, size_t n,
                        const AdamWConsts<T>& k, T wd) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) {
    const T gi = g[i] * k.gs;
    const T mi = k.b1 * m[i] + k.c1 * gi;
    const T vi = k.b2 * v[i] + k.c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= k.lr * (mi * k.inv_bc1 / (std::sqrt(vi * k.inv_bc2) + k.eps) + wd * p[i]);
  }
}
inline void check_adamw(const AdamWStep& a) {
  KILN_CHECK(a.step >= 1, "adamw: step is 1-based, got ", a.step);
  KILN_CHECK(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1, "adamw: betas must lie in [0, 1), got ",
             a.beta1, ", ", a.beta2);
}
}  // namespace detail

// One range with one weight decay.
template <class T>
void adamw_update(T* p, const T* g, T* m, T* v, size_t n, const AdamWStep& a) {
  detail::check_adamw(a);
  const detail::AdamWConsts<T> k(a);
  constexpr size_t kChunk = size_t(1) << 14;
  const std::ptrdiff_t chunks = std::ptrdiff_t((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const size_t b = size_t(c) * kChunk, e = b + kChunk < n ? b + kChunk : n;
    detail::adamw_range(p + b, g + b, m + b, v + b, e - b, k, T(a.weight_decay));
  }
}

// The whole flat buffer [0, n) in one pass; `ranges` (sorted, covering [0, n)) say where weight decay applies.
template <class T>
void adamw_flat(T* p, const T* g, T* m, T* v, size_t n, const plan::DecayRange* ranges, int n_ranges,
                const AdamWStep& a) {
  detail::check_adamw(a);
  const detail::AdamWConsts<T> k(a);
  const T wd = T(a.weight_decay);
  constexpr size_t kChunk = size_t(1) << 14;
  const std::ptrdiff_t chunks = std::ptrdiff_t((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const size_t b = size_t(c) * kChunk, e = b + kChunk < n ? b + kChunk : n;
    int lo = 0, hi = n_ranges - 1;  // the range holding b
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (ranges[mid].begin <= b) lo = mid;
      else hi = mid - 1;
    }
    for (int r = lo; r < n_ranges && ranges[r].begin < e; ++r) {
      const size_t rb = ranges[r].begin > b ? ranges[r].begin : b, re = ranges[r].end < e ? ranges[r].end : e;
      if (rb < re) detail::adamw_range(p + rb, g + rb, m + rb, v + rb, re - rb, k, ranges[r].decay ? wd : T(0));
    }
  }
}

inline constexpr size_t kSumChunk = size_t(1) << 15;
constexpr size_t sum_squares_partials(size_t n) { return (n + kSumChunk - 1) / kSumChunk; }

template <class T>
double sum_squares(const T* x, size_t n, double* partials) {
  const std::ptrdiff_t chunks = std::ptrdiff_t(sum_squares_partials(n));
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const size_t b = size_t(c) * kSumChunk, e = b + kSumChunk < n ? b + kSumChunk : n;
    constexpr int L = 8;
    double acc[L] = {};
    size_t i = b;
    for (; i + L <= e; i += L)
      for (int l = 0; l < L; ++l) acc[l] += double(x[i + l]) * double(x[i + l]);
    double s = 0;
    for (; i < e; ++i) s += double(x[i]) * double(x[i]);
    for (int l = 0; l < L; ++l) s += acc[l];
    partials[c] = s;
  }
  double total = 0;
  for (std::ptrdiff_t c = 0; c < chunks; ++c) total += partials[c];
  return total;
}

}  // namespace kiln::kernels
