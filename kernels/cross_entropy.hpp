// kernels/cross_entropy.hpp: the LM head fused with cross-entropy and z-loss, in row chunks, never holding the
// (R, V) logits.
//
// Shapes: x (R, H) final hidden states, W (V, H) LM head (HF lm_head.weight), targets (R) (< 0: ignored row),
//         scratch (chunk, V), dx (R, H) overwritten, dW (V, H) accumulated, logits_out (R, V) optional.
// forward, per row r with a target t >= 0:
//   l = x_r W^T;  lse = log sum_j exp(l_j);  ce = lse - l_t;  z = z_coef * lse^2
//   returns sum over valid rows of (ce + z), as double (rows with t < 0 add nothing).
// backward (p = softmax(l)), scaled by grad_scale (the caller's 1 / valid targets in the global batch):
//   dl = grad_scale * (p - onehot(t) + 2 z_coef lse p)          (0 for ignored rows)
//   dx = dl W  (overwritten),  dW += dl^T x
// Per chunk of `chunk` rows: one GEMM (chunk x V) into scratch, a softmax per row (rows in parallel, statistics
// in T, max-subtracted) that turns the logits into dl in place, then the GEMMs for dx and dW. Nothing is saved:
// the loss and both gradients come from one pass. The loss sum is taken in row order (deterministic).
// Chunk size: each chunk's dW GEMM reads and writes all of dW (V, H) for 2 * chunk * V * H flops, so small chunks
// are memory-bound: at V=32768, H=512 on 2 cores the three GEMMs run at ~190 GFLOP/s with chunk 32, ~330 with 128
// and ~390 with 512. Prefer chunk >= 256 rows when the (chunk, V) scratch fits.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/gemm.hpp"

namespace kiln::kernels {

template <class T, int V, int H>
double lm_head_cross_entropy(const T* x, const T* W, const int32_t* targets, int R, T z_coef, T grad_scale, T* dx,
                             T* dW, T* scratch, int chunk, T* logits_out = nullptr) {
  static_assert(V > 1, "cross_entropy: the vocabulary V must have at least 2 entries");
  static_assert(H > 0, "cross_entropy: hidden size H must be positive");
  KILN_CHECK(chunk > 0, "cross_entropy: chunk (rows per pass) must be positive, got ", chunk);
  if (targets)
    for (int r = 0; r < R; ++r)
      KILN_CHECK(targets[r] < V, "cross_entropy: target ", targets[r], " at row ", r, " is outside the vocabulary [0, ", V,
                 ") (use a negative target to ignore a row)");
  const bool grads = dx != nullptr || dW != nullptr;
  std::vector<double> row_loss(size_t(R), 0.0);  // (R) per-row ce + z, summed in order at the end
  constexpr int L = detail::lanes<T, 64>;        // independent partial sums (one vector register)
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int n = R - r0 < chunk ? R - r0 : chunk;
    const T* xc = x + size_t(r0) * H;  // (n, H)
    gemm<T>(false, true, n, V, H, T(1), xc, H, W, H, T(0), scratch, V);  // logits (n, V)
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) {
      const int r = r0 + i;
      T* __restrict l = scratch + size_t(i) * V;
      if (logits_out) std::memcpy(logits_out + size_t(r) * V, l, sizeof(T) * V);
      const int t = targets ? targets[r] : -1;
      if (t < 0 && !grads) continue;
      if (t < 0) {  // ignored row: no loss, zero gradient
        std::memset(l, 0, sizeof(T) * V);
        continue;
      }
      // max over V
      T mx[L];
      for (int k = 0; k < L; ++k) mx[k] = l[0];
      int j = 0;
      for (; j + L <= V; j += L)
        for (int k = 0; k < L; ++k) mx[k] = l[j + k] > mx[k] ? l[j + k] : mx[k];
      T m = mx[0];
      for (int k = 1; k < L; ++k) m = mx[k] > m ? mx[k] : m;
      for (; j < V; ++j) m = l[j] > m ? l[j] : m;
      // exp(l - m) in place (scratch is ours), summed in L independent lanes
      const T lt = l[t];
      for (int jj = 0; jj < V; ++jj) l[jj] = std::exp(l[jj] - m);
      T acc[L] = {};
      j = 0;
      for (; j + L <= V; j += L)
        for (int k = 0; k < L; ++k) acc[k] += l[j + k];
      T sum = 0;
      for (; j < V; ++j) sum += l[j];
      for (int k = 0; k < L; ++k) sum += acc[k];
      const T lse = m + std::log(sum);
      row_loss[size_t(r)] = double(lse - lt) + double(z_coef) * double(lse) * double(lse);
      if (grads) {
        const T coef = grad_scale * (T(1) + T(2) * z_coef * lse) / sum;  // dl_j = coef * exp(l_j - m) - gs [j == t]
        for (int jj = 0; jj < V; ++jj) l[jj] *= coef;
        l[t] -= grad_scale;
      }
    }
    if (dx) gemm<T>(false, false, n, H, V, T(1), scratch, V, W, H, T(0), dx + size_t(r0) * H, H);
    if (dW) gemm<T>(true, false, V, H, n, T(1), scratch, V, xc, H, T(1), dW, H);
  }
  double total = 0;
  for (double v : row_loss) total += v;
  return total;
}

}  // namespace kiln::kernels
