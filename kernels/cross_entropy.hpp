// kernels/cross_entropy.hpp: the LM head fused with cross-entropy and z-loss, in row chunks, never holding the
// (R, V) logits; per-token losses and log-probabilities out.
//
// Shapes: x (R, H) final hidden states, W (V, H) LM head (HF lm_head.weight), targets (R) (< 0: ignored row),
//         scratch (chunk, V), dx (R, H) overwritten, dW (V, H) accumulated, logits_out (R, V) optional,
//         token_loss (R), token_logp (R).
// forward, per row r with a target t >= 0:
//   l = x_r W^T;  lse = log sum_j exp(l_j);  ce = lse - l_t;  z = z_coef * lse^2
//   token_loss_r = ce + z,  token_logp_r = l_t - lse = log softmax(l)_t   (both 0 for rows with t < 0)
// backward (p = softmax(l)), scaled by grad_scale (the caller's 1 / valid targets in the global batch) and, where
// the caller gives row weights w (R), by w_r (preference optimisation: each token's weight is -dL/dlog p of its
// sequence, negative for rejected answers):
//   dl = grad_scale * w_r * (p - onehot(t) + 2 z_coef lse p)          (0 for ignored rows)
//   dx = dl W  (overwritten),  dW += dl^T x
// xent_rows is the row part (softmax, loss, log-probability and dl in place over a (n, V) logits tile, statistics
// max-subtracted in C); lm_head_cross_entropy is the CPU composite: per chunk of `chunk` rows one GEMM into
// scratch, xent_rows, then the GEMMs for dx and dW. Nothing is saved; nothing is allocated (scratch and the
// per-token outputs are the caller's). Targets are checked against V once where the batch enters the backend.
// Chunk size: each chunk's dW GEMM reads and writes all of dW (V, H) for 2 * chunk * V * H flops, so small chunks
// are memory-bound: at V=32768, H=512 on 2 cores the three GEMMs run at ~190 GFLOP/s with chunk 32, ~330 with 128
// and ~390 with 512. Prefer chunk >= 256 rows when the (chunk, V) scratch fits.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/exp.hpp"
#include "kernels/gemm.hpp"
#include "kiln/core/error.hpp"

namespace kiln::kernels {

// logits (n, V) in C: overwritten with dl when `grads` (else left as exp(l - max) for valid rows).
template <class C, int V>
void xent_rows(C* logits, const int32_t* targets, int n, C z_coef, C grad_scale, bool grads, C* token_loss,
               C* token_logp, const C* row_weight = nullptr) {
  static_assert(V > 1, "cross_entropy: the vocabulary V must have at least 2 entries");
  constexpr int L = detail::lanes<C, 64>;  // independent partial sums (one vector register)
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    C* __restrict l = logits + size_t(i) * V;
    const int t = targets ? targets[i] : -1;
    if (t < 0) {  // ignored row: no loss, zero gradient
      token_loss[i] = C(0), token_logp[i] = C(0);
      if (grads) std::memset(l, 0, sizeof(C) * V);
      continue;
    }
    C mx[L];
    for (int k = 0; k < L; ++k) mx[k] = l[0];
    int j = 0;
    for (; j + L <= V; j += L)
      for (int k = 0; k < L; ++k) mx[k] = l[j + k] > mx[k] ? l[j + k] : mx[k];
    C m = mx[0];
    for (int k = 1; k < L; ++k) m = mx[k] > m ? mx[k] : m;
    for (; j < V; ++j) m = l[j] > m ? l[j] : m;
    const C lt = l[t];
#pragma omp simd
    for (int jj = 0; jj < V; ++jj) l[jj] = exp_vec(l[jj] - m);  // exp(l - m) in place, summed in L lanes
    C acc[L] = {};
    j = 0;
    for (; j + L <= V; j += L)
      for (int k = 0; k < L; ++k) acc[k] += l[j + k];
    C sum = 0;
    for (; j < V; ++j) sum += l[j];
    for (int k = 0; k < L; ++k) sum += acc[k];
    const C lse = m + std::log(sum);
    token_loss[i] = C(double(lse - lt) + double(z_coef) * double(lse) * double(lse));
    token_logp[i] = lt - lse;
    if (grads) {
      const C gs = row_weight ? grad_scale * row_weight[i] : grad_scale;
      const C coef = gs * (C(1) + C(2) * z_coef * lse) / sum;  // dl_j = coef * exp(l_j - m) - gs [j == t]
      for (int jj = 0; jj < V; ++jj) l[jj] *= coef;
      l[t] -= gs;
    }
  }
}

// Returns the summed loss of the rows (in row order, double). dx == nullptr and dW == nullptr: no gradients.
template <class T, int V, int H>
double lm_head_cross_entropy(const T* x, const T* W, const int32_t* targets, int R, T z_coef, T grad_scale, T* dx,
                             T* dW, T* scratch, int chunk, T* token_loss, T* token_logp,
                             T* logits_out = nullptr, const T* row_weight = nullptr) {
  static_assert(H > 0, "cross_entropy: hidden size H must be positive");
  KILN_CHECK(chunk > 0, "cross_entropy: chunk (rows per pass) must be positive, got ", chunk);
  const bool grads = dx != nullptr || dW != nullptr;
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int n = R - r0 < chunk ? R - r0 : chunk;
    const T* xc = x + size_t(r0) * H;  // (n, H)
    gemm<T>(false, true, n, V, H, T(1), xc, H, W, H, T(0), scratch, V);  // logits (n, V)
    if (logits_out) std::memcpy(logits_out + size_t(r0) * V, scratch, sizeof(T) * size_t(n) * V);
    xent_rows<T, V>(scratch, targets ? targets + r0 : nullptr, n, z_coef, grad_scale, grads, token_loss + r0,
                    token_logp + r0, row_weight ? row_weight + r0 : nullptr);
    if (dx) gemm<T>(false, false, n, H, V, T(1), scratch, V, W, H, T(0), dx + size_t(r0) * H, H);
    if (dW) gemm<T>(true, false, V, H, n, T(1), scratch, V, xc, H, T(1), dW, H);
  }
  double total = 0;
  for (int r = 0; r < R; ++r) total += double(token_loss[r]);
  return total;
}

// The vocabulary-parallel form (tensor parallelism, Megatron's cross-entropy): this rank holds W's rows
// [vocab_begin, vocab_begin + Vl) and computes their logits only; the softmax's statistics come from every rank of
// the tensor-parallel group through `reduce` (reduce.max(p, n) and reduce.sum(p, n): in place over the group):
//   per row: m = max over the group of the local maxima; S = sum over the group of sum_j exp(l_j - m); the target's
//   logit l_t from the rank that holds it (the others add 0); lse = m + log S; loss and log p as above
//   backward: dl_j = grad_scale ((1 + 2 z_coef lse) exp(l_j - m) / S - [j == t]) on the local logits; dW += dl^T x
//   (this rank's rows); dx = sum over the group of dl W (each rank's part, summed by reduce.sum)
// Every rank gets every row's loss, log-probability and dx. Per chunk of rows: three reductions of `chunk` rows
// (the max, then the sums and target logits together) and one of the (chunk, H) dx. scratch: (chunk, Vl); stats:
// 3 * chunk values. Returns the summed loss of the rows (every rank the same).
template <class T, int Vl, int H, class Reduce>
double lm_head_cross_entropy_vocab_parallel(const T* x, const T* W, const int32_t* targets, int R, int vocab_begin,
                                            T z_coef, T grad_scale, T* dx, T* dW, T* scratch, T* stats, int chunk,
                                            T* token_loss, T* token_logp, Reduce&& reduce) {
  static_assert(H > 0 && Vl > 0, "cross_entropy (vocabulary parallel): H and the local vocabulary must be positive");
  KILN_CHECK(chunk > 0, "cross_entropy: chunk (rows per pass) must be positive, got ", chunk);
  const bool grads = dx != nullptr || dW != nullptr;
  // stats: the max (n values), then the sums (n) and the target logits (n)
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int n = R - r0 < chunk ? R - r0 : chunk;
    const T* xc = x + size_t(r0) * H;
    T *mx = stats, *sum = stats + chunk;  // sum[n + i]: row i's target logit
    gemm<T>(false, true, n, Vl, H, T(1), xc, H, W, H, T(0), scratch, Vl);  // local logits (n, Vl)
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) {
      const T* l = scratch + size_t(i) * Vl;
      T m = l[0];
      for (int j = 1; j < Vl; ++j) m = l[j] > m ? l[j] : m;
      mx[i] = m;
    }
    reduce.max(mx, size_t(n));
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) {
      T* l = scratch + size_t(i) * Vl;
      const int t = targets ? targets[r0 + i] : -1, tl = t - vocab_begin;
      sum[n + i] = tl >= 0 && tl < Vl ? l[tl] : T(0);
      T s = 0;
      for (int j = 0; j < Vl; ++j) s += (l[j] = exp_vec(l[j] - mx[i]));
      sum[i] = s;
    }
    reduce.sum(sum, 2 * size_t(n));  // the sums and the target logits in one reduction
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; ++i) {
      T* l = scratch + size_t(i) * Vl;
      const int t = targets ? targets[r0 + i] : -1, tl = t - vocab_begin;
      if (t < 0) {
        token_loss[r0 + i] = T(0), token_logp[r0 + i] = T(0);
        if (grads) std::memset(l, 0, sizeof(T) * Vl);
        continue;
      }
      const T S = sum[i], target = sum[n + i], lse = mx[i] + std::log(S);
      token_loss[r0 + i] = T(double(lse - target) + double(z_coef) * double(lse) * double(lse));
      token_logp[r0 + i] = target - lse;
      if (grads) {
        const T coef = grad_scale * (T(1) + T(2) * z_coef * lse) / S;
        for (int j = 0; j < Vl; ++j) l[j] *= coef;
        if (tl >= 0 && tl < Vl) l[tl] -= grad_scale;
      }
    }
    if (dx) {
      gemm<T>(false, false, n, H, Vl, T(1), scratch, Vl, W, H, T(0), dx + size_t(r0) * H, H);
      reduce.sum(dx + size_t(r0) * H, size_t(n) * H);
    }
    if (dW) gemm<T>(true, false, Vl, H, n, T(1), scratch, Vl, xc, H, T(1), dW, H);
  }
  double total = 0;
  for (int r = 0; r < R; ++r) total += double(token_loss[r]);
  return total;
}

}  // namespace kiln::kernels
