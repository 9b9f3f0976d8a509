// kernels/dot.hpp: short fixed-length reductions for Kiln's own kernels (no BLAS needed for these).
//   dot<C, N>(a, b) = sum_i a_i b_i over N values in a fixed order (bitwise repeatable), in the compute type C;
//   a and b may be stored in another type (bf16): each value is widened to C as it is read.
// A plain `s += a[i] * b[i]` loop is not vectorized by g++ -O2 without -ffast-math (it would reorder the sum), so
// the sum runs in `lanes` independent partial sums (one vector register) added at the end.
#pragma once
#include <type_traits>

namespace kiln::kernels {

// Widening load and narrowing store between a storage type S and a compute type C (float, double, kiln::bf16).
template <class C, class S>
inline C ld(const S& v) {
  if constexpr (std::is_arithmetic_v<S>) return C(v);
  else return C(float(v));  // kiln::bf16 widens through float
}
template <class S, class C>
inline S st(C v) {
  return S(v);
}

namespace detail {

template <class T, int N>
inline constexpr int lanes = (N % (64 / int(sizeof(T))) == 0) ? 64 / int(sizeof(T))
                             : (N % (32 / int(sizeof(T))) == 0) ? 32 / int(sizeof(T))
                             : (N % 4 == 0) ? 4 : 1;

template <class C, int N, class SA, class SB>
inline C dot(const SA* __restrict a, const SB* __restrict b) {
  constexpr int L = lanes<C, N>;
  C acc[L] = {};
  for (int c = 0; c < N; c += L)
    for (int l = 0; l < L; ++l) acc[l] += ld<C>(a[c + l]) * ld<C>(b[c + l]);
  C s = 0;
  for (int l = 0; l < L; ++l) s += acc[l];
  return s;
}

}  // namespace detail
}  // namespace kiln::kernels
