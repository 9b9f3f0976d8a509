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
// products and axpys over HD contiguous values. Storage S (qkv, out, dout, dqkv), compute C (scores, lse, sums).
// Scratch: `scores` (B * NH, T) in C, one row of scores per (b, h) task, from the caller (the plan's arena): the
// kernel allocates nothing. doc_start is checked once where the batch enters the backend (backend::validate_batch).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include <type_traits>

#include "kernels/dot.hpp"

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

// dv += p dO;  dk += ds (scale q);  dq += ds k. Restrict parameters (not block-scope pointers) are what let g++
// -O2 vectorize this without a run-time alias check.
template <class C, int HD>
inline void attention_grad_step(C* __restrict dv, C* __restrict dk, C* __restrict dq, const C* __restrict dO,
                                const C* __restrict sq, const C* __restrict k, C p, C ds) {
  for (int c = 0; c < HD; ++c) {
    dv[c] += p * dO[c];
    dk[c] += ds * sq[c];
    dq[c] += ds * k[c];
  }
}
}  // namespace detail

template <class S, class C, int NH, int NKV, int HD>
void attention_forward(const S* qkv, const int32_t* doc_start, S* out, C* lse, C* scores, int B, int Tn, C scale) {
  using A = detail::AttentionShape<NH, NKV, HD>;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      C* __restrict s = scores + (size_t(b) * NH + h) * Tn;  // (T) scores of one query row
      const int g = h / A::group;
      const S* base = qkv + size_t(b) * Tn * A::row;
      for (int i = 0; i < Tn; ++i) {
        const int j0 = doc_start[size_t(b) * Tn + i];
        const S* __restrict q = base + size_t(i) * A::row + h * HD;
        C sq[HD];  // scale * q_i (backward recomputes the scores the same way)
        for (int c = 0; c < HD; ++c) sq[c] = scale * ld<C>(q[c]);
        C m = -INFINITY;
        for (int j = j0; j <= i; ++j) {
          const C v = detail::dot<C, HD>(sq, base + size_t(j) * A::row + A::k_off + g * HD);
          s[j] = v;
          m = v > m ? v : m;
        }
        C acc[HD] = {};
        C sum = 0;
        for (int j = j0; j <= i; ++j) {
          const C p = std::exp(s[j] - m);
          sum += p;
          const S* __restrict v = base + size_t(j) * A::row + A::v_off + g * HD;
          for (int c = 0; c < HD; ++c) acc[c] += p * ld<C>(v[c]);
        }
        const C inv = C(1) / sum;
        S* __restrict o = out + (size_t(b) * Tn + i) * (NH * HD) + h * HD;
        for (int c = 0; c < HD; ++c) o[c] = st<S>(acc[c] * inv);
        lse[(size_t(b) * NH + h) * Tn + i] = m + std::log(sum);
      }
    }
}

// dk and dv of one kv head are accumulated in C in rows of the dqkv buffer itself when S is C; for a narrower S
// they would need a C scratch of their own (the CUDA backend's kernel keeps them in registers and shared memory).
template <class S, class C, int NH, int NKV, int HD>
void attention_backward(const S* qkv, const int32_t* doc_start, const S* out, const C* lse, const S* dout, S* dqkv,
                        int B, int Tn, C scale) {
  static_assert(std::is_same_v<S, C>, "attention_backward on the CPU accumulates dk, dv in the storage type: S must equal C");
  using A = detail::AttentionShape<NH, NKV, HD>;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (int g = 0; g < NKV; ++g) {
      const S* base = qkv + size_t(b) * Tn * A::row;
      S* dbase = dqkv + size_t(b) * Tn * A::row;
      for (int j = 0; j < Tn; ++j) {  // this thread owns dk, dv of kv head g in sequence b
        std::memset(dbase + size_t(j) * A::row + A::k_off + g * HD, 0, sizeof(S) * HD);
        std::memset(dbase + size_t(j) * A::row + A::v_off + g * HD, 0, sizeof(S) * HD);
      }
      for (int h = g * A::group; h < (g + 1) * A::group; ++h)
        for (int i = 0; i < Tn; ++i) {
          const int j0 = doc_start[size_t(b) * Tn + i];
          const S* __restrict q = base + size_t(i) * A::row + h * HD;
          const S* __restrict o = out + (size_t(b) * Tn + i) * (NH * HD) + h * HD;
          const S* __restrict dO = dout + (size_t(b) * Tn + i) * (NH * HD) + h * HD;
          const C l = lse[(size_t(b) * NH + h) * Tn + i];
          const C Di = detail::dot<C, HD>(dO, o);
          C dq[HD] = {};
          C sq[HD];  // scale * q_i
          for (int c = 0; c < HD; ++c) sq[c] = scale * q[c];
          for (int j = j0; j <= i; ++j) {
            const S* __restrict k = base + size_t(j) * A::row + A::k_off + g * HD;
            const S* __restrict v = base + size_t(j) * A::row + A::v_off + g * HD;
            S* dk = dbase + size_t(j) * A::row + A::k_off + g * HD;
            S* dv = dbase + size_t(j) * A::row + A::v_off + g * HD;
            const C p = std::exp(detail::dot<C, HD>(sq, k) - l);
            const C ds = p * (detail::dot<C, HD>(dO, v) - Di);
            detail::attention_grad_step<C, HD>(dv, dk, dq, dO, sq, k, p, ds);
          }
          S* __restrict dqo = dbase + size_t(i) * A::row + h * HD;
          for (int c = 0; c < HD; ++c) dqo[c] = scale * dq[c];
        }
    }
}

}  // namespace kiln::kernels
