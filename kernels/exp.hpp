// kernels/exp.hpp: exp for the softmax, the loss and SwiGLU's sigmoid, written so that loops over it vectorize
// (libm's expf is a call per element without -ffast-math; it was 5% of a CPU training step).
//   float:  x = n ln2 + r with n = round(x / ln2) and r in [-ln2/2, ln2/2] (ln2 in two parts, so r is exact), exp(r)
//           by Cephes' degree-7 polynomial, and 2^n as two power-of-two factors so that n in [-150, 128] needs no
//           special exponent: the result is within 2 ulp of exp(x) over the whole float range, subnormals included;
//           exp(x) = 0 below -104 and +inf above 88.7228 (as expf), NaN stays NaN. Checked in tests/test_ops.cpp.
//   other types (double: the finite-difference references): std::exp.
// The bit manipulations use std::bit_cast, with no branches, so `#pragma omp simd` loops keep their vector form.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace kiln::kernels {

inline float exp_vec(float x) {
  const bool under = x < -104.0f, over = x > 88.72283935546875f;
  float c = x < -104.0f ? -104.0f : x;
  c = c > 88.72283935546875f ? 88.72283935546875f : c;
  // n = round(c / ln2): adding and removing 1.5 * 2^23 rounds to the nearest integer (round-to-nearest mode).
  const float fn = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (c - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n = int32_t(fn), h = n >> 1;  // 2^n = 2^h * 2^(n - h), each factor a normal float
  const float s1 = std::bit_cast<float>((h + 127) << 23), s2 = std::bit_cast<float>((n - h + 127) << 23);
  float y = p * s1 * s2;
  y = under ? 0.0f : y;
  y = over ? INFINITY : y;
  return x != x ? x : y;
}

template <class T>
inline T exp_vec(T x) {
  return std::exp(x);
}

}  // namespace kiln::kernels
