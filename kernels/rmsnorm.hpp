// kernels/rmsnorm.hpp: RMSNorm (HF LlamaRMSNorm); storage type S (activations, weights), compute type C.
//
// forward:   rstd_r = 1 / sqrt(mean_j x_rj^2 + eps);   y_rj = x_rj * rstd_r * w_j
//            x (R, D) rows `x_stride` apart, y (R, D) rows `y_stride` apart, w (D), rstd (R) in C, saved for backward.
// backward:  with g_j = dy_rj * w_j:
//            dx_rj (+)= rstd_r * g_j - rstd_r^3 / D * x_rj * sum_k g_k x_rk
//            dw_j   += sum_r dy_rj * x_rj * rstd_r
// Saves rstd (one value per row), recomputes x * rstd. The strided variants serve per-head QK-norm on the packed
// qkv buffer (one head of D = head_dim values per row). dx may be dy itself (in place: a row's dy is read whole
// before its dx is written). dw is reduced over `blocks` fixed row blocks: each block sums its rows into its own
// row of `partials` (blocks, D) in C, then the blocks are added in order, so dw is bitwise the same for every
// thread count; the caller owns `partials` (the plan's arena), the kernel allocates nothing.
#pragma once
#include <cmath>

#include "kernels/dot.hpp"

namespace kiln::kernels {

template <class S, class C, int D>
void rmsnorm_forward_strided(const S* x, int x_stride, const S* w, S* y, int y_stride, C* rstd, int R, C eps) {
  static_assert(D > 0, "rmsnorm: the normalised dimension D must be positive");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const S* __restrict xr = x + size_t(r) * x_stride;
    S* __restrict yr = y + size_t(r) * y_stride;
    const C rs = C(1) / std::sqrt(detail::dot<C, D>(xr, xr) / C(D) + eps);
    rstd[r] = rs;
#pragma omp simd
    for (int j = 0; j < D; ++j) yr[j] = st<S>(ld<C>(xr[j]) * rs * ld<C>(w[j]));
  }
}

template <class S, class C, int D>
void rmsnorm_backward_strided(const S* x, int x_stride, const S* w, const C* rstd, const S* dy, int dy_stride, S* dx,
                              int dx_stride, C* dw, C* partials, int blocks, int R, bool accumulate_dx) {
  static_assert(D > 0, "rmsnorm: the normalised dimension D must be positive");
  const int per = (R + blocks - 1) / blocks;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < blocks; ++k) {
    C* __restrict pw = partials + size_t(k) * D;
    for (int j = 0; j < D; ++j) pw[j] = C(0);
    const int r1 = (k + 1) * per < R ? (k + 1) * per : R;
    for (int r = k * per; r < r1; ++r) {
      const S* __restrict xr = x + size_t(r) * x_stride;
      const S* dyr = dy + size_t(r) * dy_stride;
      S* dxr = dx + size_t(r) * dx_stride;
      const C rs = rstd[r];
      C g[D], xv[D];
#pragma omp simd
      for (int j = 0; j < D; ++j) {
        const C d = ld<C>(dyr[j]);
        xv[j] = ld<C>(xr[j]);
        g[j] = d * ld<C>(w[j]);
        pw[j] += d * xv[j] * rs;
      }
      const C c = rs * rs * rs / C(D) * detail::dot<C, D>(g, xv);
      if (accumulate_dx)
#pragma omp simd
        for (int j = 0; j < D; ++j) dxr[j] = st<S>(ld<C>(dxr[j]) + rs * g[j] - c * xv[j]);
      else
#pragma omp simd
        for (int j = 0; j < D; ++j) dxr[j] = st<S>(rs * g[j] - c * xv[j]);
    }
  }
  for (int k = 0; k < blocks; ++k) {  // fixed block order
    const C* __restrict pw = partials + size_t(k) * D;
#pragma omp simd
    for (int j = 0; j < D; ++j) dw[j] += pw[j];
  }
}

template <class S, class C, int D>
void rmsnorm_forward(const S* x, const S* w, S* y, C* rstd /*(R) saved*/, int R, C eps) {
  rmsnorm_forward_strided<S, C, D>(x, D, w, y, D, rstd, R, eps);
}

// dx (R, D) += ... (the residual stream's gradient; = when !accumulate_dx);  dw (D) +=
template <class S, class C, int D>
void rmsnorm_backward(const S* x, const S* w, const C* rstd, const S* dy, S* dx, C* dw, C* partials, int blocks, int R,
                      bool accumulate_dx = true) {
  rmsnorm_backward_strided<S, C, D>(x, D, w, rstd, dy, D, dx, D, dw, partials, blocks, R, accumulate_dx);
}

}  // namespace kiln::kernels
