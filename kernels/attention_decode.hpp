// kernels/attention_decode.hpp: attention of one new token against a KV cache (generation), GQA.
//
// Shapes: q (NH, HD) the new token's queries (after QK-norm / RoPE); k_cache, v_cache (len, NKV, HD) keys and
// values of positions [0, len) of the current document, the new token's own included; out (NH, HD).
// forward, per query head h with kv head g = h / (NH / NKV):
//   s_j = scale * q_h . k_{j,g};   p = softmax(s);   out_h = sum_j p_j v_{j,g}
// No backward: generation only. Parallel over heads; scores (NH, max_len) in C is the caller's scratch (the decode
// program's arena): the kernel allocates nothing.
#pragma once
#include <cmath>

#include "kernels/exp.hpp"
#include "kernels/dot.hpp"
#include "kiln/core/error.hpp"

namespace kiln::kernels {

template <class S, class C, int NH, int NKV, int HD>
void attention_decode(const S* q, const S* k_cache, const S* v_cache, int len, S* out, C* scores, int max_len, C scale) {
  static_assert(NH % NKV == 0, "attention_decode: NH must be a multiple of NKV");
  KILN_CHECK(len > 0 && len <= max_len, "attention_decode: cache length ", len, " outside [1, ", max_len, "]");
  constexpr int group = NH / NKV;
  constexpr int kv_row = NKV * HD;
#pragma omp parallel for schedule(static) if (size_t(len) * NH * HD > 65536)
  for (int h = 0; h < NH; ++h) {
    const int g = h / group;
    C* s = scores + size_t(h) * max_len;
    C m = -INFINITY;
    for (int j = 0; j < len; ++j) {
      s[j] = scale * detail::dot<C, HD>(q + h * HD, k_cache + size_t(j) * kv_row + g * HD);
      m = s[j] > m ? s[j] : m;
    }
    C sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < len; ++j) sum += s[j] = exp_vec(s[j] - m);
    C acc[HD] = {};
    for (int j = 0; j < len; ++j) {
      const C p = s[j] / sum;
      const S* v = v_cache + size_t(j) * kv_row + g * HD;
      for (int c = 0; c < HD; ++c) acc[c] += p * ld<C>(v[c]);
    }
    S* o = out + h * HD;
    for (int c = 0; c < HD; ++c) o[c] = st<S>(acc[c]);
  }
}

}  // namespace kiln::kernels
