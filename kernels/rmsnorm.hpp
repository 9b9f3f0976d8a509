// kernels/rmsnorm.hpp: RMSNorm (HF LlamaRMSNorm), computed in T.
//
// forward:   rstd_r = 1 / sqrt(mean_j x_rj^2 + eps);   y_rj = x_rj * rstd_r * w_j
//            x (R, D) rows `x_stride` apart, y (R, D) rows `y_stride` apart, w (D), rstd (R) saved for backward.
// backward:  with g_j = dy_rj * w_j:
//            dx_rj (+)= rstd_r * g_j - rstd_r^3 / D * x_rj * sum_k g_k x_rk
//            dw_j   += sum_r dy_rj * x_rj * rstd_r
// Saves rstd (one value per row), recomputes x * rstd. The strided variants serve per-head QK-norm on the packed
// qkv buffer (one head of D = head_dim values per row). dw is reduced over rows through per-thread partial buffers
// summed in thread order, so the result is bitwise repeatable for a fixed thread count.
#pragma once
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/gemm.hpp"

namespace kiln::kernels {

template <class T, int D>
void rmsnorm_forward_strided(const T* x, int x_stride, const T* w, T* y, int y_stride, T* rstd, int R, T eps) {
  static_assert(D > 0, "rmsnorm: the normalised dimension D must be positive");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const T* __restrict xr = x + size_t(r) * x_stride;
    T* __restrict yr = y + size_t(r) * y_stride;
    const T rs = T(1) / std::sqrt(detail::dot<T, D>(xr, xr) / T(D) + eps);
    rstd[r] = rs;
#pragma omp simd
    for (int j = 0; j < D; ++j) yr[j] = xr[j] * rs * w[j];
  }
}

template <class T, int D>
void rmsnorm_backward_strided(const T* x, int x_stride, const T* w, const T* rstd, const T* dy, int dy_stride, T* dx,
                              int dx_stride, T* dw, int R, bool accumulate_dx) {
  static_assert(D > 0, "rmsnorm: the normalised dimension D must be positive");
  const int max_threads = omp_get_max_threads();
  std::vector<T> partial(size_t(max_threads) * D, T(0));  // (threads, D) per-thread dw
  int team = 1;
#pragma omp parallel
  {
#pragma omp single
    team = omp_get_num_threads();
    T* __restrict pw = partial.data() + size_t(omp_get_thread_num()) * D;
#pragma omp for schedule(static)
    for (int r = 0; r < R; ++r) {
      const T* __restrict xr = x + size_t(r) * x_stride;
      const T* __restrict dyr = dy + size_t(r) * dy_stride;
      T* __restrict dxr = dx + size_t(r) * dx_stride;
      const T rs = rstd[r];
      T g[D];
#pragma omp simd
      for (int j = 0; j < D; ++j) g[j] = dyr[j] * w[j];
      const T c = rs * rs * rs / T(D) * detail::dot<T, D>(g, xr);
      if (accumulate_dx)
#pragma omp simd
        for (int j = 0; j < D; ++j) dxr[j] += rs * g[j] - c * xr[j];
      else
#pragma omp simd
        for (int j = 0; j < D; ++j) dxr[j] = rs * g[j] - c * xr[j];
#pragma omp simd
      for (int j = 0; j < D; ++j) pw[j] += dyr[j] * xr[j] * rs;
    }
  }
  for (int t = 0; t < team; ++t) {  // fixed thread order
    const T* __restrict pw = partial.data() + size_t(t) * D;
#pragma omp simd
    for (int j = 0; j < D; ++j) dw[j] += pw[j];
  }
}

template <class T, int D>
void rmsnorm_forward(const T* x, const T* w, T* y, T* rstd /*(R) saved*/, int R, T eps) {
  rmsnorm_forward_strided<T, D>(x, D, w, y, D, rstd, R, eps);
}

// dx (R, D) += ... (the residual stream's gradient);  dw (D) +=
template <class T, int D>
void rmsnorm_backward(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw, int R) {
  rmsnorm_backward_strided<T, D>(x, D, w, rstd, dy, D, dx, D, dw, R, true);
}

}  // namespace kiln::kernels
