// kernels/attention.hpp: causal self-attention with intra-document masking and grouped-query attention (GQA), on the
// packed qkv buffer, flash-attention style (nothing of size T*T is ever stored).
//
// Shapes: qkv (B, T, (NH + 2 NKV) * HD), each row [q heads (NH, HD) | k heads (NKV, HD) | v heads (NKV, HD)];
//         doc_start (B, T): first position of the token's document; out (B, T, NH * HD); lse (B, NH, T).
// Query head h reads kv head g = h / (NH / NKV). Token i attends to j iff doc_start[i] <= j <= i.
// forward, per (b, h, i), over the allowed j:
//   s_j = scale * q_i . k_j;   lse_i = log sum_j exp(s_j);   p_j = exp(s_j - lse_i);   out_i = sum_j p_j v_j
// backward (dO = dout), recomputing p_j from q, k and the saved lse:
//   D_i = dO_i . out_i;  dp_j = dO_i . v_j;  ds_j = p_j (dp_j - D_i)
//   dq_i = scale sum_j ds_j k_j;   dk_j += scale ds_j q_i;   dv_j += p_j dO_i   (dk, dv summed over the group's heads)
// Saves lse (B, NH, T) only (and the caller keeps qkv and out). dqkv is overwritten, all of its q, k, v parts.
// Parallel: forward over (b, h); backward over (b, kv head), so each thread alone writes the dk / dv of its kv head
// and the dq of the group's query heads, in a fixed order: bitwise repeatable, no atomics. Inner loops are dot
// products and axpys over HD contiguous values; the score buffer is one row of T values per thread.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/gemm.hpp"

namespace kiln::kernels {

namespace detail {
template <int NH, int NKV, int HD>
struct AttentionShape {
  static_assert(NH > 0 && NKV > 0, "attention: head counts must be positive");
  static_assert(NH % NKV == 0, "attention: NH must be a multiple of NKV (each kv head serves NH/NKV query heads)");
  static_assert(HD > 0 && HD % 4 == 0, "attention: head_dim must be a positive multiple of 4");
  static constexpr int group = NH / NKV;               // query heads per kv head
  static constexpr int row = (NH + 2 * NKV) * HD;      // qkv row length
  static constexpr int k_off = NH * HD;                // k heads start
  static constexpr int v_off = (NH + NKV) * HD;        // v heads start
};

inline void check_doc_start(const int32_t* doc_start, int B, int Tn) {
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Tn; ++i) {
      const int32_t d = doc_start[size_t(b) * Tn + i];
      KILN_CHECK(d >= 0 && d <= i, "attention: doc_start[", b, ", ", i, "] = ", d,
                 " must lie in [0, i] (the first position of token i's document)");
    }
}
// dv += p dO;  dk += ds (scale q);  dq += ds k. Restrict parameters (not block-scope pointers) are what let g++
// -O2 vectorize this without a run-time alias check.
template <class T, int HD>
inline void attention_grad_step(T* __restrict dv, T* __restrict dk, T* __restrict dq, const T* __restrict dO,
                                const T* __restrict sq, const T* __restrict k, T p, T ds) {
  for (int c = 0; c < HD; ++c) {
    dv[c] += p * dO[c];
    dk[c] += ds * sq[c];
    dq[c] += ds * k[c];
  }
}
}  // namespace detail

template <class T, int NH, int NKV, int HD>
void attention_forward(const T* qkv, const int32_t* doc_start, T* out, T* lse, int B, int Tn, T scale) {
  using S = detail::AttentionShape<NH, NKV, HD>;
  detail::check_doc_start(doc_start, B, Tn);
#pragma omp parallel
  {
    std::vector<T> sbuf(static_cast<size_t>(Tn));  // (T) scores of one query row
    T* __restrict s = sbuf.data();
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < NH; ++h) {
        const int g = h / S::group;
        const T* base = qkv + size_t(b) * Tn * S::row;
        for (int i = 0; i < Tn; ++i) {
          const int j0 = doc_start[size_t(b) * Tn + i];
          const T* __restrict q = base + size_t(i) * S::row + h * HD;
          T sq[HD];  // scale * q_i (backward recomputes the scores the same way)
          for (int c = 0; c < HD; ++c) sq[c] = scale * q[c];
          T m = -INFINITY;
          for (int j = j0; j <= i; ++j) {
            const T v = detail::dot<T, HD>(sq, base + size_t(j) * S::row + S::k_off + g * HD);
            s[j] = v;
            m = v > m ? v : m;
          }
          T acc[HD] = {};
          T sum = 0;
          for (int j = j0; j <= i; ++j) {
            const T p = std::exp(s[j] - m);
            sum += p;
            const T* __restrict v = base + size_t(j) * S::row + S::v_off + g * HD;
            for (int c = 0; c < HD; ++c) acc[c] += p * v[c];
          }
          const T inv = T(1) / sum;
          T* __restrict o = out + (size_t(b) * Tn + i) * (NH * HD) + h * HD;
          for (int c = 0; c < HD; ++c) o[c] = acc[c] * inv;
          lse[(size_t(b) * NH + h) * Tn + i] = m + std::log(sum);
        }
      }
  }
}

template <class T, int NH, int NKV, int HD>
void attention_backward(const T* qkv, const int32_t* doc_start, const T* out, const T* lse, const T* dout, T* dqkv,
                        int B, int Tn, T scale) {
  using S = detail::AttentionShape<NH, NKV, HD>;
  detail::check_doc_start(doc_start, B, Tn);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int g = 0; g < NKV; ++g) {
      const T* base = qkv + size_t(b) * Tn * S::row;
      T* dbase = dqkv + size_t(b) * Tn * S::row;
      for (int j = 0; j < Tn; ++j) {  // this thread owns dk, dv of kv head g in sequence b
        std::memset(dbase + size_t(j) * S::row + S::k_off + g * HD, 0, sizeof(T) * HD);
        std::memset(dbase + size_t(j) * S::row + S::v_off + g * HD, 0, sizeof(T) * HD);
      }
      for (int h = g * S::group; h < (g + 1) * S::group; ++h)
        for (int i = 0; i < Tn; ++i) {
          const int j0 = doc_start[size_t(b) * Tn + i];
          const T* __restrict q = base + size_t(i) * S::row + h * HD;
          const T* __restrict o = out + (size_t(b) * Tn + i) * (NH * HD) + h * HD;
          const T* __restrict dO = dout + (size_t(b) * Tn + i) * (NH * HD) + h * HD;
          const T l = lse[(size_t(b) * NH + h) * Tn + i];
          const T Di = detail::dot<T, HD>(dO, o);
          T dq[HD] = {};
          T sq[HD];  // scale * q_i
          for (int c = 0; c < HD; ++c) sq[c] = scale * q[c];
          for (int j = j0; j <= i; ++j) {
            const T* __restrict k = base + size_t(j) * S::row + S::k_off + g * HD;
            const T* __restrict v = base + size_t(j) * S::row + S::v_off + g * HD;
            T* dk = dbase + size_t(j) * S::row + S::k_off + g * HD;
            T* dv = dbase + size_t(j) * S::row + S::v_off + g * HD;
            const T p = std::exp(detail::dot<T, HD>(sq, k) - l);
            const T ds = p * (detail::dot<T, HD>(dO, v) - Di);
            detail::attention_grad_step<T, HD>(dv, dk, dq, dO, sq, k, p, ds);
          }
          T* __restrict dqo = dbase + size_t(i) * S::row + h * HD;
          for (int c = 0; c < HD; ++c) dqo[c] = scale * dq[c];
        }
    }
}

}  // namespace kiln::kernels
