// kernels/swiglu.hpp: the SwiGLU gate of a gated MLP, fused elementwise; storage S, compute C.
//
// gu (R, 2F) = [gate | up] per row (one GEMM against the stacked gate/up weights);  h (R, F).
// forward:   s = sigmoid(gate);  h = silu(gate) * up = gate * s * up
// backward:  dgate = dh * up * s * (1 + gate * (1 - s));   dup = dh * gate * s
//            dgu (R, 2F) = [dgate | dup] is overwritten; it may be gu itself (in place: each j reads gate_j and
//            up_j before writing dgate_j and dup_j), which is how the plan runs it (gu dies here).
// Saves nothing beyond gu (the GEMM output the caller keeps); backward recomputes the sigmoid.
#pragma once
#include <cmath>

#include "kernels/exp.hpp"
#include "kernels/dot.hpp"

namespace kiln::kernels {

template <class S, class C, int F>
void swiglu_forward(const S* gu, S* h /*(R,F)*/, int R) {
  static_assert(F > 0, "swiglu: intermediate size F must be positive");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const S* __restrict g = gu + size_t(r) * 2 * F;
    const S* __restrict u = g + F;
    S* __restrict hr = h + size_t(r) * F;
#pragma omp simd
    for (int j = 0; j < F; ++j) {
      const C gj = ld<C>(g[j]);
      hr[j] = st<S>(gj / (C(1) + exp_vec(-gj)) * ld<C>(u[j]));
    }
  }
}

template <class S, class C, int F>
void swiglu_backward(const S* gu, const S* dh, S* dgu /*(R,2F) overwritten; may be gu*/, int R) {
  static_assert(F > 0, "swiglu: intermediate size F must be positive");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const S* g = gu + size_t(r) * 2 * F;
    const S* u = g + F;
    const S* __restrict d = dh + size_t(r) * F;
    S* dg = dgu + size_t(r) * 2 * F;
    S* du = dg + F;
#pragma omp simd  // in place (dgu == gu) is element by element: no dependence between iterations
    for (int j = 0; j < F; ++j) {
      const C gj = ld<C>(g[j]), uj = ld<C>(u[j]), dj = ld<C>(d[j]);
      const C s = C(1) / (C(1) + exp_vec(-gj));
      dg[j] = st<S>(dj * uj * s * (C(1) + gj * (C(1) - s)));
      du[j] = st<S>(dj * gj * s);
    }
  }
}

}  // namespace kiln::kernels
