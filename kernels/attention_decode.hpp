// kernels/attention_decode.hpp: attention of one new token against a KV cache (generation), GQA.
//
// Shapes: q (NH, HD) the new token's queries (after QK-norm / RoPE); k_cache, v_cache (len, NKV, HD) keys and
// values of positions [0, len) of the current document, the new token's own included; out (NH, HD).
// forward, per query head h with kv head g = h / (NH / NKV):
//   s_j = scale * q_h . k_{j,g};   p = softmax(s);   out_h = sum_j p_j v_{j,g}
// No backward: generation only. Parallel over heads; the score row lives in a (len) buffer per head.
#pragma once
#include <cmath>
#include <vector>

#include "kernels/gemm.hpp"
#include "kiln/core/error.hpp"

namespace kiln::kernels {

template <class T, int NH, int NKV, int HD>
void attention_decode(const T* q, const T* k_cache, const T* v_cache, int len, T* out, T scale) {
  static_assert(NH % NKV == 0, "attention_decode: NH must be a multiple of NKV");
  KILN_CHECK(len > 0, "attention_decode: the cache is empty (len = ", len, ")");
  constexpr int group = NH / NKV;
  constexpr int kv_row = NKV * HD;
#pragma omp parallel for schedule(static) if (size_t(len) * NH * HD > 65536)
  for (int h = 0; h < NH; ++h) {
    const int g = h / group;
    std::vector<T> s(static_cast<size_t>(len));
    T m = -INFINITY;
    for (int j = 0; j < len; ++j) {
      s[j] = scale * detail::dot<T, HD>(q + h * HD, k_cache + size_t(j) * kv_row + g * HD);
      m = s[j] > m ? s[j] : m;
    }
    T sum = 0;
    for (int j = 0; j < len; ++j) sum += s[j] = std::exp(s[j] - m);
    T* o = out + h * HD;
    for (int c = 0; c < HD; ++c) o[c] = 0;
    for (int j = 0; j < len; ++j) {
      const T p = s[j] / sum;
      const T* v = v_cache + size_t(j) * kv_row + g * HD;
      for (int c = 0; c < HD; ++c) o[c] += p * v[c];
    }
  }
}

}  // namespace kiln::kernels
