// kernels/device.hpp: the prelude of Kiln's CUDA kernels (kernels/*.cuh), which nvcc compiles for the GPU and g++
// compiles as host code for the SIMT execution layer (kiln/simt/simt.hpp), so CPU CI runs them.
//   KILN_GLOBAL                       __global__
//   KILN_DEVICE                       a device helper (__device__ __forceinline__)
//   KILN_UNROLL                       #pragma unroll (g++: GCC unroll)
//   KILN_SHARED(T, name, n)           a block's shared array `T name[n]` (on the host: a T* to the block's bytes)
//   KILN_DYNAMIC_SHARED(T, name)      the block's dynamic shared memory as T*
//   KILN_LAUNCH(k, grid, block, shared_bytes, stream)(args...)   k<<<grid, block, shared_bytes, stream>>>(args...)
//   gpu::Stream                       cudaStream_t (on the host: nothing to wait for, a launch returns when done)
// Kernel source uses CUDA's names for the rest: threadIdx, blockIdx, blockDim, gridDim, __syncthreads,
// __shfl_xor_sync and the other shuffles, __ballot_sync, atomicAdd, and kiln::bf16 for bf16 storage.
#pragma once

#include <cmath>

#include "kiln/core/bf16.hpp"
#include "kiln/core/hd.hpp"

#if defined(__CUDACC__)
#include <cuda_runtime.h>

#define KILN_GLOBAL __global__
#define KILN_UNROLL _Pragma("unroll")
#define KILN_SHARED(T, name, n) __shared__ T name[n]
#define KILN_DYNAMIC_SHARED(T, name)                     \
  extern __shared__ __align__(16) unsigned char kiln_dynamic_shared_[]; \
  T* name = reinterpret_cast<T*>(kiln_dynamic_shared_)
#define KILN_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>

namespace kiln::gpu {
using Stream = cudaStream_t;
}

#else
#include "kiln/simt/simt.hpp"

#define KILN_GLOBAL
#define KILN_UNROLL _Pragma("GCC unroll 16")
#define KILN_SHARED(T, name, n)         \
  static constexpr char kiln_site_##name = 0; \
  T* name = ::kiln::simt::shared_array<T>(n, &kiln_site_##name)
#define KILN_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::kiln::simt::dynamic_shared())
#define KILN_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  ::kiln::simt::launcher(kernel, grid, block, shared_bytes, stream)

#define threadIdx (::kiln::simt::current->thread_idx)
#define blockIdx (::kiln::simt::current->block_idx)
#define blockDim (::kiln::simt::current->block_dim)
#define gridDim (::kiln::simt::current->grid_dim)
#define warpSize 32
#define __syncthreads() ::kiln::simt::syncthreads()
#define __syncwarp(...) ::kiln::simt::syncwarp()
#define __shfl_sync(...) ::kiln::simt::shfl_sync(__VA_ARGS__)
#define __shfl_xor_sync(...) ::kiln::simt::shfl_xor_sync(__VA_ARGS__)
#define __shfl_down_sync(...) ::kiln::simt::shfl_down_sync(__VA_ARGS__)
#define __shfl_up_sync(...) ::kiln::simt::shfl_up_sync(__VA_ARGS__)
#define __ballot_sync(...) ::kiln::simt::ballot_sync(__VA_ARGS__)
#define __any_sync(mask, p) (::kiln::simt::ballot_sync(mask, p) != 0u)
#define __all_sync(mask, p) (::kiln::simt::ballot_sync(mask, p) == ::kiln::simt::warp_lanes_mask())
#define atomicAdd(p, v) ::kiln::simt::atomic_add(p, v)
#define atomicMax(p, v) ::kiln::simt::atomic_max(p, v)

using dim3 = ::kiln::simt::dim3;

namespace kiln::gpu {
using Stream = const void*;
}

#endif

namespace kiln::dev {

// Math in device code, the same functions on both sides: CUDA's single-precision library (expf, sqrtf: at most
// 2 ulp and correctly rounded) or the host's.
KILN_DEVICE float exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
KILN_DEVICE float sqrt(float x) {
#if defined(__CUDA_ARCH__)
  return sqrtf(x);
#else
  return std::sqrt(x);
#endif
}
KILN_DEVICE float sigmoid(float x) { return 1.f / (1.f + exp(-x)); }

// A value of storage type S as float and back (float, kiln::bf16).
template <class S>
KILN_DEVICE float ld(S v) {
  return float(v);
}
template <class S>
KILN_DEVICE S st(float v) {
  return S(v);
}

// The sum of v (float or double) over a block of blockDim.x threads (a multiple of 32, at most 1024), returned to
// every thread. Fixed order (butterfly within warps, then the warps' sums the same way): the same bits every run.
template <class T>
KILN_DEVICE T block_sum(T v) {
  KILN_SHARED(T, warp_sums, 32);
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < warps ? warp_sums[lane] : T(0);
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // warp_sums may be reused by the next call
  return v;
}

// The maximum of v over a block (as block_sum).
KILN_DEVICE float block_max(float v) {
  KILN_SHARED(float, warp_max, 32);
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  v = lane < warps ? warp_max[lane] : -INFINITY;
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  return v;
}

KILN_DEVICE float log(float x) {
#if defined(__CUDA_ARCH__)
  return logf(x);
#else
  return std::log(x);
#endif
}

}  // namespace kiln::dev

