// kernels/embedding.hpp: token embedding lookup.
//
// forward:   out[r, :] = E[tokens[r], :]                         tokens (R), E (V, H), out (R, H)
// backward:  dE[tokens[r], :] += dout[r, :]  for every r          dout (R, H), dE (V, H) accumulated
// Nothing is saved but the token ids. Repeated ids collide in dE, so backward splits the H columns into blocks,
// one thread per block, each visiting the rows in order: every dE element is written by one thread in a fixed
// order, so the result is bitwise the same for any thread count (no atomics).
#pragma once
#include <cstdint>
#include <cstring>

#include "kiln/core/error.hpp"

namespace kiln::kernels {

template <class T, int H>
void embedding_forward(const int32_t* tokens, int R, const T* E /*(V,H)*/, T* out /*(R,H)*/) {
  static_assert(H > 0, "embedding: hidden size H must be positive");
  for (int r = 0; r < R; ++r) KILN_CHECK(tokens[r] >= 0, "embedding: token id ", tokens[r], " at row ", r, " is negative");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) std::memcpy(out + size_t(r) * H, E + size_t(tokens[r]) * H, sizeof(T) * H);
}

template <class T, int H>
void embedding_backward(const int32_t* tokens, int R, const T* dout /*(R,H)*/, T* dE /*(V,H) +=*/) {
  static_assert(H > 0, "embedding: hidden size H must be positive");
  constexpr int kBlock = 64;                                // columns per task: whole cache lines
  constexpr int kBlocks = (H + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < kBlocks; ++cb) {
    const int c0 = cb * kBlock;
    const int n = H - c0 < kBlock ? H - c0 : kBlock;
    for (int r = 0; r < R; ++r) {
      T* __restrict d = dE + size_t(tokens[r]) * H + c0;
      const T* __restrict s = dout + size_t(r) * H + c0;
#pragma omp simd
      for (int c = 0; c < n; ++c) d[c] += s[c];
    }
  }
}

}  // namespace kiln::kernels
