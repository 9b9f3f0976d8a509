// kernels/embedding.hpp: token embedding lookup; storage S for the table and the activations, C for the gradient.
//
// forward:   out[r, :] = E[tokens[r], :]                         tokens (R), E (V, H), out (R, H)
// backward:  dE[tokens[r], :] += dout[r, :]  for every r          dout (R, H), dE (V, H) accumulated in C
// Token ids are checked once where the batch enters the backend (backend::validate_batch), not here.
// Nothing is saved but the token ids. Repeated ids collide in dE, so backward splits the H columns into blocks,
// one thread per block, each visiting the rows in order: every dE element is written by one thread in a fixed
// order, so the result is bitwise the same for any thread count (no atomics).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/dot.hpp"

namespace kiln::kernels {

template <class S, int H>
void embedding_forward(const int32_t* tokens, int R, const S* E /*(V,H)*/, S* out /*(R,H)*/) {
  static_assert(H > 0, "embedding: hidden size H must be positive");
  static_assert(std::is_trivially_copyable_v<S>, "embedding: the storage type must be trivially copyable");
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) std::memcpy(out + size_t(r) * H, E + size_t(tokens[r]) * H, sizeof(S) * H);
}

template <class S, class C, int H>
void embedding_backward(const int32_t* tokens, int R, const S* dout /*(R,H)*/, C* dE /*(V,H) +=*/) {
  static_assert(H > 0, "embedding: hidden size H must be positive");
  constexpr int kBlock = 64;                                // columns per task: whole cache lines
  constexpr int kBlocks = (H + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < kBlocks; ++cb) {
    const int c0 = cb * kBlock;
    const int n = H - c0 < kBlock ? H - c0 : kBlock;
    for (int r = 0; r < R; ++r) {
      C* __restrict d = dE + size_t(tokens[r]) * H + c0;
      const S* __restrict s = dout + size_t(r) * H + c0;
#pragma omp simd
      for (int c = 0; c < n; ++c) d[c] += ld<C>(s[c]);
    }
  }
}

}  // namespace kiln::kernels
