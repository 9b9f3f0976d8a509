// kernels/adamw.hpp: AdamW with decoupled weight decay (Loshchilov & Hutter 2019), bias-corrected, over one
// contiguous range of parameters, plus the deterministic sum of squares used for gradient-norm clipping.
//
// update (t = 1-based step):
//   g = grad * grad_scale;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
// Elementwise in T (the hyper-parameters are rounded to T once); no reduction, so any split is deterministic.
// sum_squares: sum x_i^2 in double over fixed chunks of kChunk values (independent of the thread count), the chunk
// sums added in order: bitwise the same for every thread count.
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

#include "kiln/core/error.hpp"

namespace kiln::kernels {

template <class T>
void adamw_update(T* p, const T* g, T* m, T* v, size_t n, double lr, double b1, double b2, double eps, double wd,
                  long step, double grad_scale) {
  KILN_CHECK(step >= 1, "adamw: step is 1-based, got ", step);
  KILN_CHECK(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1, "adamw: betas must lie in [0, 1), got ", b1, ", ", b2);
  const T gs = T(grad_scale);
  const T tb1 = T(b1), tb2 = T(b2), c1 = T(1 - b1), c2 = T(1 - b2);
  const T inv_bc1 = T(1.0 / (1.0 - std::pow(b1, double(step))));  // 1 / (1 - b1^t)
  const T inv_bc2 = T(1.0 / (1.0 - std::pow(b2, double(step))));  // 1 / (1 - b2^t)
  const T tlr = T(lr), teps = T(eps), twd = T(wd);
  const std::ptrdiff_t N = std::ptrdiff_t(n);
#pragma omp parallel for simd schedule(static)
  for (std::ptrdiff_t i = 0; i < N; ++i) {
    const T gi = g[i] * gs;
    const T mi = tb1 * m[i] + c1 * gi;
    const T vi = tb2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= tlr * (mi * inv_bc1 / (std::sqrt(vi * inv_bc2) + teps) + twd * p[i]);
  }
}

template <class T>
double sum_squares(const T* x, size_t n) {
  constexpr size_t kChunk = size_t(1) << 15;
  const std::ptrdiff_t chunks = std::ptrdiff_t((n + kChunk - 1) / kChunk);
  std::vector<double> partial(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t c = 0; c < chunks; ++c) {
    const size_t b = size_t(c) * kChunk, e = b + kChunk < n ? b + kChunk : n;
    constexpr int L = 8;
    double acc[L] = {};
    size_t i = b;
    for (; i + L <= e; i += L)
      for (int l = 0; l < L; ++l) acc[l] += double(x[i + l]) * double(x[i + l]);
    double s = 0;
    for (; i < e; ++i) s += double(x[i]) * double(x[i]);
    for (int l = 0; l < L; ++l) s += acc[l];
    partial[size_t(c)] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace kiln::kernels
