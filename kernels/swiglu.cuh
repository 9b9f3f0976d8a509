// kernels/swiglu.cuh: the CUDA half of kernels/swiglu.hpp (the same math; read it there), storage S, fp32 compute.
//   gu (R, 2F) = [gate | up] per row;  h (R, F)
//   forward:   h = gate * sigmoid(gate) * up
//   backward:  s = sigmoid(gate);  dgate = dh * up * s * (1 + gate * (1 - s));  dup = dh * gate * s
//              dgu may be gu (in place: each thread reads its gate and up before writing them)
// Elementwise and memory-bound: each thread moves V = 16 bytes / sizeof(S) consecutive values of a row per load
// (F % V == 0 is required: every model dimension Kiln supports is a multiple of 8), in a grid-stride loop.
// Compiled by nvcc for the GPU and by g++ for the SIMT layer (kernels/device.hpp).
#pragma once
#include <cstddef>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

namespace detail {

template <class S>
inline constexpr int kVec = 16 / int(sizeof(S));

template <class S, int V>
struct alignas(16) Pack {
  S v[V];
};

template <class S, int F>
KILN_GLOBAL void swiglu_forward_kernel(const S* gu, S* h, int R) {
  constexpr int V = kVec<S>;
  using P = Pack<S, V>;
  const size_t packs = size_t(R) * (F / V);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / (F / V), c = (i % (F / V)) * V;
    const P g = *reinterpret_cast<const P*>(gu + r * 2 * F + c);
    const P u = *reinterpret_cast<const P*>(gu + r * 2 * F + F + c);
    P out;
KILN_UNROLL
    for (int k = 0; k < V; ++k) {
      const float gk = dev::ld(g.v[k]);
      out.v[k] = dev::st<S>(gk * dev::sigmoid(gk) * dev::ld(u.v[k]));
    }
    *reinterpret_cast<P*>(h + r * F + c) = out;
  }
}

template <class S, int F>
KILN_GLOBAL void swiglu_backward_kernel(const S* gu, const S* dh, S* dgu, int R) {
  constexpr int V = kVec<S>;
  using P = Pack<S, V>;
  const size_t packs = size_t(R) * (F / V);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / (F / V), c = (i % (F / V)) * V;
    const P g = *reinterpret_cast<const P*>(gu + r * 2 * F + c);
    const P u = *reinterpret_cast<const P*>(gu + r * 2 * F + F + c);
    const P d = *reinterpret_cast<const P*>(dh + r * F + c);
    P dg, du;
KILN_UNROLL
    for (int k = 0; k < V; ++k) {
      const float gk = dev::ld(g.v[k]), uk = dev::ld(u.v[k]), dk = dev::ld(d.v[k]);
      const float s = dev::sigmoid(gk);
      dg.v[k] = dev::st<S>(dk * uk * s * (1.f + gk * (1.f - s)));
      du.v[k] = dev::st<S>(dk * gk * s);
    }
    *reinterpret_cast<P*>(dgu + r * 2 * F + c) = dg;
    *reinterpret_cast<P*>(dgu + r * 2 * F + F + c) = du;
  }
}

// Enough blocks to fill the GPU (a grid-stride loop does the rest); on the host, a few blocks per thread.
inline unsigned elementwise_blocks(size_t work, unsigned threads) {
  const size_t b = (work + threads - 1) / threads;
  return unsigned(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

}  // namespace detail

template <class S, int F>
void swiglu_forward(const S* gu, S* h, int R, gpu::Stream stream) {
  static_assert(F > 0 && F % detail::kVec<S> == 0,
                "swiglu (CUDA): the intermediate size must be a multiple of 16 bytes of S (8 bf16 values)");
  constexpr unsigned kThreads = 256;
  const size_t work = size_t(R) * (F / detail::kVec<S>);
  auto* kernel = &detail::swiglu_forward_kernel<S, F>;
  KILN_LAUNCH(kernel, dim3(detail::elementwise_blocks(work, kThreads)), dim3(kThreads), 0, stream)(gu, h, R);
}

template <class S, int F>
void swiglu_backward(const S* gu, const S* dh, S* dgu, int R, gpu::Stream stream) {
  static_assert(F > 0 && F % detail::kVec<S> == 0,
                "swiglu (CUDA): the intermediate size must be a multiple of 16 bytes of S (8 bf16 values)");
  constexpr unsigned kThreads = 256;
  const size_t work = size_t(R) * (F / detail::kVec<S>);
  auto* kernel = &detail::swiglu_backward_kernel<S, F>;
  KILN_LAUNCH(kernel, dim3(detail::elementwise_blocks(work, kThreads)), dim3(kThreads), 0, stream)(gu, dh, dgu, R);
}

}  // namespace kiln::kernels::cuda
