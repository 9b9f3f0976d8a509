// kernels/add.cuh: the residual add y += x (n values, storage S, fp32 sum) of the CUDA backend; the CPU backend's is
// one loop in backend/cpu.hpp. Elementwise and memory-bound: 16-byte vectors when n allows, a grid-stride loop.
#pragma once
#include <cstddef>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

namespace detail {
template <class S>
KILN_GLOBAL void add_kernel(const S* x, S* y, size_t n) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = dev::st<S>(dev::ld(y[i]) + dev::ld(x[i]));
}
}  // namespace detail

template <class S>
void add(const S* x, S* y, size_t n, gpu::Stream stream) {
  constexpr unsigned kThreads = 256;
  const size_t blocks = (n + kThreads - 1) / kThreads;
  auto* kernel = &detail::add_kernel<S>;
  KILN_LAUNCH(kernel, dim3(unsigned(blocks < 8192 ? (blocks ? blocks : 1) : 8192)), dim3(kThreads), 0, stream)(x, y, n);
}

}  // namespace kiln::kernels::cuda
