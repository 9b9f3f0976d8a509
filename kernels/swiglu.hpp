// kernels/swiglu.hpp: the SwiGLU gate of a gated MLP, fused elementwise.
//
// gu (R, 2F) = [gate | up] per row (one GEMM against the stacked gate/up weights);  h (R, F).
// forward:   s = sigmoid(gate);  h = silu(gate) * up = gate * s * up
// backward:  dgate = dh * up * s * (1 + gate * (1 - s));   dup = dh * gate * s
//            dgu (R, 2F) = [dgate | dup] is overwritten.
// Saves nothing beyond gu (the GEMM output the caller keeps); backward recomputes the sigmoid.
#pragma once
#include <cmath>

namespace kiln::kernels {

template <class T, int F>
void swiglu_forward(const T* gu, T* h /*(R,F)*/, int R) {
  static_assert(F > 0, "swiglu: intermediate size F must be positive");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const T* __restrict g = gu + size_t(r) * 2 * F;
    const T* __restrict u = g + F;
    T* __restrict hr = h + size_t(r) * F;
    for (int j = 0; j < F; ++j) hr[j] = g[j] / (T(1) + std::exp(-g[j])) * u[j];
  }
}

template <class T, int F>
void swiglu_backward(const T* gu, const T* dh, T* dgu /*(R,2F) OVERWRITTEN*/, int R) {
  static_assert(F > 0, "swiglu: intermediate size F must be positive");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const T* __restrict g = gu + size_t(r) * 2 * F;
    const T* __restrict u = g + F;
    const T* __restrict d = dh + size_t(r) * F;
    T* __restrict dg = dgu + size_t(r) * 2 * F;
    T* __restrict du = dg + F;
    for (int j = 0; j < F; ++j) {
      const T s = T(1) / (T(1) + std::exp(-g[j]));
      dg[j] = d[j] * u[j] * s * (T(1) + g[j] * (T(1) - s));
      du[j] = d[j] * g[j] * s;
    }
  }
}

}  // namespace kiln::kernels
