// kernels/init.hpp: seeded parameter initialisation. A value depends only on (seed, stream, element index), so it
// is the same for any thread count, any backend and any layout that knows the element's global index.
//   init_normal:  p_j = std * N(0, 1)(seed, stream, j)      (matrices, embeddings; stream = the tensor's index)
//   init_fill:    p_j = value                               (norm weights: 1)
#pragma once
#include <cstddef>
#include <cstdint>

#include "kiln/core/rng.hpp"

namespace kiln::kernels {

template <class T>
void init_normal(T* p, size_t n, double std, uint64_t seed, uint64_t stream) {
  const std::ptrdiff_t N = std::ptrdiff_t(n);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t j = 0; j < N; ++j) p[j] = T(std * normal01(seed, stream, uint64_t(j)));
}

template <class T>
void init_fill(T* p, size_t n, T value) {
  for (size_t j = 0; j < n; ++j) p[j] = value;
}

}  // namespace kiln::kernels
