// kernels/attention_blocked.hpp: the attention of kernels/attention.hpp (causal, intra-document, GQA; same math,
// same saved lse) computed by query blocks so that its products run through the GEMM instead of dot products.
//
// Per task and query block of QB rows i in [i0, i0 + n), the keys any of them may see are [j0, j1) with
// j0 = doc_start[i0] (doc_start does not decrease along a row) and j1 = i0 + n; m = j1 - j0.
// forward, per (b, h):
//   S = scale Q K^T             (n, m) one GEMM;  masked per row to doc_start[i] <= j <= i
//   P = softmax(S) per row, lse_i saved;  O = P V   (n, HD) one GEMM
// backward, per (b, kv head g) and each query head h of its group, per query block (P recomputed from lse):
//   S = scale Q K^T, P = exp(S - lse) masked;  dP = dO V^T;  D_i = dO_i . O_i;  dS = P (dP - D)
//   dQ = scale dS K (overwritten);  dK += scale dS^T Q;  dV += P^T dO       (five GEMMs)
// Scratch from the caller (the plan's arena): forward (B NH, QB, T), backward (B NKV, 2 QB, T), one slice per task;
// nothing is allocated. The GEMMs run inside the tasks' OpenMP loop, where OpenBLAS runs single-threaded, so each
// task's sums keep a fixed order: bitwise repeatable for a fixed thread count, no atomics. S = C = T (float for
// training, double for the gradient checks); other storage types use the row kernels of attention.hpp.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/exp.hpp"
#include "kernels/attention.hpp"
#include "kernels/gemm.hpp"

namespace kiln::kernels {

namespace detail {
// Row r of a score block: masks keys outside [lo, hi] (local indices) and turns the rest into probabilities;
// returns the row's log-sum-exp.
template <class T>
inline T softmax_row(T* s, int m, int lo, int hi) {
  T mx = -INFINITY;
  for (int j = lo; j <= hi; ++j) mx = s[j] > mx ? s[j] : mx;
  T sum = 0;
  for (int j = 0; j < lo; ++j) s[j] = 0;
#pragma omp simd reduction(+ : sum)
  for (int j = lo; j <= hi; ++j) sum += s[j] = exp_vec(s[j] - mx);
  for (int j = hi + 1; j < m; ++j) s[j] = 0;
  const T inv = T(1) / sum;
  for (int j = lo; j <= hi; ++j) s[j] *= inv;
  return mx + std::log(sum);
}
}  // namespace detail

template <class T, int NH, int NKV, int HD, int QB>
void attention_forward_blocked(const T* qkv, const int32_t* doc_start, T* out, T* lse, T* scratch, int B, int Tn,
                               T scale) {
  using A = detail::AttentionShape<NH, NKV, HD>;
  static_assert(QB > 0, "attention: the query block must be positive");
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      T* S = scratch + (size_t(b) * NH + h) * size_t(QB) * Tn;  // (n, m) scores of one query block
      const int g = h / A::group;
      const T* base = qkv + size_t(b) * Tn * A::row;
      const int32_t* ds = doc_start + size_t(b) * Tn;
      for (int i0 = 0; i0 < Tn; i0 += QB) {
        const int n = Tn - i0 < QB ? Tn - i0 : QB;
        const int j0 = ds[i0], j1 = i0 + n, m = j1 - j0;
        gemm<T>(false, true, n, m, HD, scale, base + size_t(i0) * A::row + h * HD, A::row,
                base + size_t(j0) * A::row + A::k_off + g * HD, A::row, T(0), S, m);
        for (int r = 0; r < n; ++r)
          lse[(size_t(b) * NH + h) * Tn + i0 + r] = detail::softmax_row(S + size_t(r) * m, m, ds[i0 + r] - j0, i0 + r - j0);
        gemm<T>(false, false, n, HD, m, T(1), S, m, base + size_t(j0) * A::row + A::v_off + g * HD, A::row, T(0),
                out + (size_t(b) * Tn + i0) * (NH * HD) + h * HD, NH * HD);
      }
    }
}

template <class T, int NH, int NKV, int HD, int QB>
void attention_backward_blocked(const T* qkv, const int32_t* doc_start, const T* out, const T* lse, const T* dout,
                                T* dqkv, T* scratch, int B, int Tn, T scale) {
  using A = detail::AttentionShape<NH, NKV, HD>;
  constexpr int Q = NH * HD;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int g = 0; g < NKV; ++g) {
      T* P = scratch + (size_t(b) * NKV + g) * 2 * size_t(QB) * Tn;  // (n, m) probabilities
      T* dS = P + size_t(QB) * Tn;                                     // (n, m) dP, then dS
      const T* base = qkv + size_t(b) * Tn * A::row;
      T* dbase = dqkv + size_t(b) * Tn * A::row;
      const int32_t* ds = doc_start + size_t(b) * Tn;
      for (int j = 0; j < Tn; ++j) {  // this task owns dk, dv of kv head g in sequence b
        std::memset(dbase + size_t(j) * A::row + A::k_off + g * HD, 0, sizeof(T) * HD);
        std::memset(dbase + size_t(j) * A::row + A::v_off + g * HD, 0, sizeof(T) * HD);
      }
      for (int h = g * A::group; h < (g + 1) * A::group; ++h)
        for (int i0 = 0; i0 < Tn; i0 += QB) {
          const int n = Tn - i0 < QB ? Tn - i0 : QB;
          const int j0 = ds[i0], j1 = i0 + n, m = j1 - j0;
          const T* q = base + size_t(i0) * A::row + h * HD;
          const T* k = base + size_t(j0) * A::row + A::k_off + g * HD;
          const T* v = base + size_t(j0) * A::row + A::v_off + g * HD;
          const T* o = out + (size_t(b) * Tn + i0) * Q + h * HD;
          const T* dO = dout + (size_t(b) * Tn + i0) * Q + h * HD;
          gemm<T>(false, true, n, m, HD, scale, q, A::row, k, A::row, T(0), P, m);   // S
          gemm<T>(false, true, n, m, HD, T(1), dO, Q, v, A::row, T(0), dS, m);       // dP
          for (int r = 0; r < n; ++r) {
            T* pr = P + size_t(r) * m;
            T* dr = dS + size_t(r) * m;
            const int lo = ds[i0 + r] - j0, hi = i0 + r - j0;
            const T l = lse[(size_t(b) * NH + h) * Tn + i0 + r];
            const T Di = detail::dot<T, HD>(dO + size_t(r) * Q, o + size_t(r) * Q);
            for (int j = 0; j < lo; ++j) pr[j] = 0, dr[j] = 0;
#pragma omp simd
            for (int j = lo; j <= hi; ++j) {
              pr[j] = exp_vec(pr[j] - l);
              dr[j] = pr[j] * (dr[j] - Di);
            }
            for (int j = hi + 1; j < m; ++j) pr[j] = 0, dr[j] = 0;
          }
          gemm<T>(false, false, n, HD, m, scale, dS, m, k, A::row, T(0), dbase + size_t(i0) * A::row + h * HD, A::row);
          gemm<T>(true, false, m, HD, n, scale, dS, m, q, A::row, T(1), dbase + size_t(j0) * A::row + A::k_off + g * HD,
                  A::row);
          gemm<T>(true, false, m, HD, n, T(1), P, m, dO, Q, T(1), dbase + size_t(j0) * A::row + A::v_off + g * HD, A::row);
        }
    }
}

}  // namespace kiln::kernels
