// kernels/rmsnorm.cuh: the CUDA half of kernels/rmsnorm.hpp (the math is there), fused with the residual add;
// storage S, fp32 statistics.
//   forward:   (residual r given) x = x + r, stored back in S (the residual stream), then
//              rstd_r = 1 / sqrt(mean_j x_rj^2 + eps);  y_rj = x_rj * rstd_r * w_j;  rstd saved (fp32)
//   backward:  g_j = dy_rj w_j;  dx_rj (+)= rstd_r g_j - rstd_r^3 / D x_rj sum_k g_k x_rk
//              dw_j += sum_r dy_rj x_rj rstd_r, over `blocks` fixed row ranges: block k writes its range's sums to
//              partials[k] (blocks, D) and a second kernel adds the ranges in order: the same bits on every run,
//              whatever the GPU's scheduling (no atomics).
// One block of T threads per row (forward) or per row range (backward); each thread owns columns j = t + k T,
// k < ceil(D / T), in registers (D is a compile-time constant: the loops unroll).
#pragma once
#include <cstddef>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

namespace detail {

template <int D>
inline constexpr unsigned kNormThreads = D >= 1024 ? 256 : D >= 256 ? 128 : 64;

template <class S, int D, unsigned T>
KILN_GLOBAL void rmsnorm_forward_kernel(S* x, int xs, const S* residual, const S* w, S* y, int ys, float* rstd, int R,
                                        float eps) {
  constexpr int J = (D + int(T) - 1) / int(T);  // columns per thread
  const int r = int(blockIdx.x);
  if (r >= R) return;  // the whole block: no barrier is skipped by part of it
  S* xr = x + size_t(r) * size_t(xs);
  float v[J];
  float ss = 0.f;
KILN_UNROLL
  for (int k = 0; k < J; ++k) {
    const int j = int(threadIdx.x) + k * int(T);
    v[k] = 0.f;
    if (j < D) {
      if (residual) {
        const S sum = dev::st<S>(dev::ld(xr[j]) + dev::ld(residual[size_t(r) * size_t(xs) + j]));
        xr[j] = sum;
        v[k] = dev::ld(sum);
      } else {
        v[k] = dev::ld(xr[j]);
      }
      ss += v[k] * v[k];
    }
  }
  ss = dev::block_sum(ss);
  const float rs = 1.f / dev::sqrt(ss / float(D) + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
KILN_UNROLL
  for (int k = 0; k < J; ++k) {
    const int j = int(threadIdx.x) + k * int(T);
    if (j < D) y[size_t(r) * size_t(ys) + j] = dev::st<S>(v[k] * rs * dev::ld(w[j]));
  }
}

template <class S, int D, unsigned T>
KILN_GLOBAL void rmsnorm_backward_kernel(const S* x, int xs, const S* w, const float* rstd, const S* dy, int dys, S* dx,
                                         int dxs,
                                         float* partials, int R, int per, bool accumulate_dx) {
  constexpr int J = (D + int(T) - 1) / int(T);
  const int k0 = int(blockIdx.x) * per;
  const int k1 = k0 + per < R ? k0 + per : R;
  float pw[J], wv[J];
KILN_UNROLL
  for (int k = 0; k < J; ++k) {
    const int j = int(threadIdx.x) + k * int(T);
    pw[k] = 0.f;
    wv[k] = j < D ? dev::ld(w[j]) : 0.f;
  }
  for (int r = k0; r < k1; ++r) {
    const float rs = rstd[r];
    float xv[J], g[J];
    float dot = 0.f;
KILN_UNROLL
    for (int k = 0; k < J; ++k) {
      const int j = int(threadIdx.x) + k * int(T);
      xv[k] = g[k] = 0.f;
      if (j < D) {
        const float d = dev::ld(dy[size_t(r) * size_t(dys) + j]);
        xv[k] = dev::ld(x[size_t(r) * size_t(xs) + j]);
        g[k] = d * wv[k];
        pw[k] += d * xv[k] * rs;
        dot += g[k] * xv[k];
      }
    }
    const float c = rs * rs * rs / float(D) * dev::block_sum(dot);
KILN_UNROLL
    for (int k = 0; k < J; ++k) {
      const int j = int(threadIdx.x) + k * int(T);
      if (j < D) {
        S& o = dx[size_t(r) * size_t(dxs) + j];
        const float base = accumulate_dx ? dev::ld(o) : 0.f;
        o = dev::st<S>(base + rs * g[k] - c * xv[k]);
      }
    }
  }
KILN_UNROLL
  for (int k = 0; k < J; ++k) {
    const int j = int(threadIdx.x) + k * int(T);
    if (j < D) partials[size_t(blockIdx.x) * D + j] = pw[k];
  }
}

// dw[j] += sum over k of partials[k][j], k in order.
template <int D>
KILN_GLOBAL void add_partials_kernel(const float* partials, int blocks, float* dw) {
  const int j = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (j >= D) return;
  float s = 0.f;
  for (int k = 0; k < blocks; ++k) s += partials[size_t(k) * D + j];
  dw[j] += s;
}

}  // namespace detail

// Rows of D values `stride` apart (the strided forms serve QK-norm: one head of each packed qkv row).
// x (R, D) [+= residual (R, D) when residual != nullptr, rows x_stride apart too]; y (R, D); rstd (R).
template <class S, int D>
void rmsnorm_forward_strided(S* x, int x_stride, const S* residual, const S* w, S* y, int y_stride, float* rstd, int R,
                             float eps, gpu::Stream stream) {
  static_assert(D > 0, "rmsnorm (CUDA): the normalised dimension must be positive");
  constexpr unsigned T = detail::kNormThreads<D>;
  auto* kernel = &detail::rmsnorm_forward_kernel<S, D, T>;
  KILN_LAUNCH(kernel, dim3(unsigned(R)), dim3(T), 0, stream)(x, x_stride, residual, w, y, y_stride, rstd, R, eps);
}
template <class S, int D>
void rmsnorm_forward(S* x, const S* residual, const S* w, S* y, float* rstd, int R, float eps, gpu::Stream stream) {
  rmsnorm_forward_strided<S, D>(x, D, residual, w, y, D, rstd, R, eps, stream);
}

// dx (R, D) += (or =) the input gradient; dw (D) += the weight gradient; partials (blocks, D) fp32 scratch from the
// arena. blocks: how many row ranges (more: more parallel, more partials; the result depends on it, not on the GPU).
template <class S, int D>
void rmsnorm_backward_strided(const S* x, int x_stride, const S* w, const float* rstd, const S* dy, int dy_stride, S* dx,
                              int dx_stride, float* dw, float* partials, int blocks, int R, bool accumulate_dx,
                              gpu::Stream stream) {
  static_assert(D > 0, "rmsnorm (CUDA): the normalised dimension must be positive");
  constexpr unsigned T = detail::kNormThreads<D>;
  const int per = (R + blocks - 1) / blocks;
  auto* kernel = &detail::rmsnorm_backward_kernel<S, D, T>;
  KILN_LAUNCH(kernel, dim3(unsigned(blocks)), dim3(T), 0, stream)(x, x_stride, w, rstd, dy, dy_stride, dx, dx_stride,
                                                                  partials, R, per, accumulate_dx);
  KILN_LAUNCH(detail::add_partials_kernel<D>, dim3(unsigned((D + 255) / 256)), dim3(256), 0, stream)(partials, blocks,
                                                                                                    dw);
}
template <class S, int D>
void rmsnorm_backward(const S* x, const S* w, const float* rstd, const S* dy, S* dx, float* dw, float* partials,
                      int blocks, int R, bool accumulate_dx, gpu::Stream stream) {
  rmsnorm_backward_strided<S, D>(x, D, w, rstd, dy, D, dx, D, dw, partials, blocks, R, accumulate_dx, stream);
}

// Columns [col, col + width) of each of R rows of `stride` values, copied (QK-norm passes the v heads through).
namespace detail {
template <class S>
KILN_GLOBAL void copy_columns_kernel(const S* src, S* dst, int R, int stride, int col, int width) {
  const size_t n = size_t(R) * size_t(width);
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const size_t r = e / size_t(width), c = size_t(col) + e % size_t(width);
    dst[r * size_t(stride) + c] = src[r * size_t(stride) + c];
  }
}
}  // namespace detail
template <class S>
void copy_columns(const S* src, S* dst, int R, int stride, int col, int width, gpu::Stream stream) {
  const size_t blocks = (size_t(R) * size_t(width) + 255) / 256;
  auto* kernel = &detail::copy_columns_kernel<S>;
  KILN_LAUNCH(kernel, dim3(unsigned(blocks < 8192 ? (blocks ? blocks : 1) : 8192)), dim3(256), 0, stream)(
      src, dst, R, stride, col, width);
}

}  // namespace kiln::kernels::cuda
