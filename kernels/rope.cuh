// kernels/rope.cuh: the CUDA half of kernels/rope.hpp (HF rotate_half; the math is there), in place on the first
// NHEADS heads of each row (the q and k heads of the packed qkv row); storage S, fp32 rotation.
//   forward:   (x_i, x_{i+HD/2}) <- (x_i cos a - x_{i+HD/2} sin a, x_{i+HD/2} cos a + x_i sin a)
//   backward:  the rotation by -a
// cos and sin are the same fp32 table as the CPU's (RopeTable<float, HD>, computed in double and rounded once),
// copied to the device once per phase; a NoPE layer launches nothing (the backend skips the op).
// One thread per (row, head, pair): elementwise, memory-bound.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

namespace detail {

template <class S, int NHEADS, int HD, int Sign>
KILN_GLOBAL void rope_kernel(S* x, int row_stride, const int32_t* pos, int R, const float* cos_t, const float* sin_t) {
  constexpr int half = HD / 2;
  const size_t n = size_t(R) * NHEADS * half;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const int i = int(e % half);
    const int h = int(e / half % NHEADS);
    const size_t r = e / (size_t(half) * NHEADS);
    const size_t t = size_t(pos[r]) * half + size_t(i);
    const float c = cos_t[t], sn = Sign > 0 ? sin_t[t] : -sin_t[t];
    S* lo = x + r * size_t(row_stride) + size_t(h) * HD + i;
    S* hi = lo + half;
    const float a = dev::ld(*lo), b = dev::ld(*hi);
    *lo = dev::st<S>(a * c - b * sn);
    *hi = dev::st<S>(b * c + a * sn);
  }
}

template <class S, int NHEADS, int HD, int Sign>
void rope_launch(S* x, int row_stride, const int32_t* pos, int R, const float* cos_t, const float* sin_t,
                 gpu::Stream stream) {
  static_assert(HD % 2 == 0 && NHEADS > 0, "rope (CUDA): head_dim must be even and NHEADS positive");
  constexpr unsigned kThreads = 256;
  const size_t n = size_t(R) * NHEADS * (HD / 2);
  const size_t blocks = (n + kThreads - 1) / kThreads;
  auto* kernel = &rope_kernel<S, NHEADS, HD, Sign>;
  KILN_LAUNCH(kernel, dim3(unsigned(blocks < 8192 ? (blocks ? blocks : 1) : 8192)), dim3(kThreads), 0, stream)(
      x, row_stride, pos, R, cos_t, sin_t);
}

}  // namespace detail

// x (R, row_stride) in place; pos (R) position ids (checked where the batch enters); cos_t / sin_t (max_pos, HD/2).
template <class S, int NHEADS, int HD>
void rope_forward(S* x, int row_stride, const int32_t* pos, int R, const float* cos_t, const float* sin_t,
                  gpu::Stream stream) {
  detail::rope_launch<S, NHEADS, HD, +1>(x, row_stride, pos, R, cos_t, sin_t, stream);
}
template <class S, int NHEADS, int HD>
void rope_backward(S* dx, int row_stride, const int32_t* pos, int R, const float* cos_t, const float* sin_t,
                   gpu::Stream stream) {
  detail::rope_launch<S, NHEADS, HD, -1>(dx, row_stride, pos, R, cos_t, sin_t, stream);
}

}  // namespace kiln::kernels::cuda
