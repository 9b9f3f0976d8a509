// kernels/adamw.cuh: the CUDA half of kernels/adamw.hpp (the update's math is there): AdamW over the flat fp32
// master buffer in one pass, and the global gradient norm with the clip scale, both without host round trips.
//   norm:    sum_squares(g) in fixed chunks of kSumChunk values, one block each (fp32 within a thread's slice,
//            fp64 across the block and across chunks, in a fixed order: the same bits every run); a one-block
//            finish writes norm = sqrt(sum) and scale = clip / norm when clip > 0 and norm > clip, else 1.
//   update:  every value as adamw.hpp, with g multiplied by *scale (device memory, written by the norm: the host
//            never waits for it) and by the constants' grad_scale; wd from the decay range holding the value; the
//            bf16 compute copy of the parameters (`pb`) written in the same pass when given.
//   norm under tensor parallelism: the buffer cut into pieces (at most kSumChunk values, each within one tensor,
//            marked split or whole: a rank's slice, or a replicated norm's weights); one block per piece, then one
//            block adds the split pieces and the whole ones apart, in piece order (norm_pieces_sum: sums[0], sums[1]);
//            the caller sums sums[0] over the group (its device collectives); norm_from_sums writes
//            norm = sqrt(sums[0] + sums[1]) and the clip scale, so the replicated weights count once.
// The constants (AdamWConstants: lr, betas, bias corrections, whether to update at all) are a device struct that
// the host updates before a step or the step's decision writes on the device (kernels/step.cuh), so a captured
// CUDA graph replays with the step's values, and a skipped step leaves every value as it was.
#pragma once
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/device.hpp"
#include "kiln/core/adamw_step.hpp"

namespace kiln::kernels::cuda {

// AdamWStep rounded to fp32 as the CPU kernel rounds it (kernels/adamw.hpp's AdamWConsts<float>).
// apply = 0: the kernel changes nothing (a step the guard skipped).
struct AdamWConstants {
  float gs, b1, b2, c1, c2, inv_bc1, inv_bc2, lr, eps, wd;
  int apply;
};
KILN_HD inline AdamWConstants adamw_constants(const AdamWStep& a) {
  return {float(a.grad_scale),
          float(a.beta1),
          float(a.beta2),
          float(1 - a.beta1),
          float(1 - a.beta2),
          float(1.0 / (1.0 - ::pow(a.beta1, double(a.step)))),
          float(1.0 / (1.0 - ::pow(a.beta2, double(a.step)))),
          float(a.lr),
          float(a.eps),
          float(a.weight_decay),
          1};
}

inline constexpr size_t kSumChunk = size_t(1) << 15;
constexpr size_t sum_squares_partials(size_t n) { return (n + kSumChunk - 1) / kSumChunk; }

namespace detail {

inline constexpr unsigned kAdamThreads = 256, kAdamPer = 4;  // values per thread: a block covers 1024 values

template <class S>
KILN_GLOBAL void adamw_kernel(float* p, const float* g, float* m, float* v, S* pb, size_t n, const DecayRange* ranges,
                              int n_ranges, const AdamWConstants* kp, const float* scale) {
  KILN_SHARED(int, first_range, 1);
  const AdamWConstants k = *kp;
  const size_t b = size_t(blockIdx.x) * (kAdamThreads * kAdamPer);
  if (b >= n || !k.apply) return;  // the whole block
  if (threadIdx.x == 0) {  // the range holding b
    int lo = 0, hi = n_ranges - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (ranges[mid].begin <= b) lo = mid;
      else hi = mid - 1;
    }
    first_range[0] = lo;
  }
  __syncthreads();
  const float gs = k.gs * (scale ? *scale : 1.f);
  int r = first_range[0];
  const size_t i0 = b + size_t(threadIdx.x) * kAdamPer;
  for (size_t i = i0; i < i0 + kAdamPer && i < n; ++i) {
    while (ranges[r].end <= i) ++r;
    const float wd = ranges[r].decay ? k.wd : 0.f;
    const float gi = g[i] * gs;
    const float mi = k.b1 * m[i] + k.c1 * gi;
    const float vi = k.b2 * v[i] + k.c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pi = p[i] - k.lr * (mi * k.inv_bc1 / (dev::sqrt(vi * k.inv_bc2) + k.eps) + wd * p[i]);
    p[i] = pi;
    if (pb) pb[i] = dev::st<S>(pi);
  }
}

template <class S>
KILN_GLOBAL void to_storage_kernel(const float* p, S* pb, size_t n) {
  const size_t i0 = size_t(blockIdx.x) * (kAdamThreads * kAdamPer) + size_t(threadIdx.x) * kAdamPer;
  for (size_t i = i0; i < i0 + kAdamPer && i < n; ++i) pb[i] = dev::st<S>(p[i]);
}

inline constexpr unsigned kSumThreads = 256;

template <class T>
KILN_GLOBAL void sum_squares_kernel(const T* x, size_t n, double* partials) {
  const size_t b = size_t(blockIdx.x) * kSumChunk;
  const size_t e = b + kSumChunk < n ? b + kSumChunk : n;
  float s = 0.f;
  for (size_t i = b + threadIdx.x; i < e; i += kSumThreads) {
    const float xi = dev::ld(x[i]);
    s += xi * xi;
  }
  const double t = dev::block_sum(double(s));
  if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

template <class Acc>  // double: a template, so that this header defines no non-inline kernel
KILN_GLOBAL void norm_finish_kernel(const Acc* partials, int chunks, float clip, float* norm_scale) {
  Acc s = 0;
  for (int c = int(threadIdx.x); c < chunks; c += int(kSumThreads)) s += partials[c];
  s = dev::block_sum(s);
  if (threadIdx.x == 0) {
    const float norm = float(sqrt(s));
    norm_scale[0] = norm;
    norm_scale[1] = clip > 0.f && norm > clip ? clip / norm : 1.f;
  }
}

struct NormPiece {
  size_t begin, end;
  int whole;  // 1: a replicated tensor (counted once over the group), 0: this rank's slice
};

template <class T>
KILN_GLOBAL void sum_squares_pieces_kernel(const T* x, const NormPiece* pieces, double* partials) {
  const NormPiece p = pieces[blockIdx.x];
  float s = 0.f;
  for (size_t i = p.begin + threadIdx.x; i < p.end; i += kSumThreads) {
    const float xi = dev::ld(x[i]);
    s += xi * xi;
  }
  const double t = dev::block_sum(double(s));
  if (threadIdx.x == 0) partials[blockIdx.x] = t;
}

template <class Acc>  // double
KILN_GLOBAL void norm_pieces_sum_kernel(const Acc* partials, const NormPiece* pieces, int n, Acc* sums) {
  Acc split = 0, whole = 0;
  for (int c = int(threadIdx.x); c < n; c += int(kSumThreads)) (pieces[c].whole ? whole : split) += partials[c];
  split = dev::block_sum(split);
  whole = dev::block_sum(whole);
  if (threadIdx.x == 0) sums[0] = split, sums[1] = whole;
}

template <class Acc>  // double
KILN_GLOBAL void norm_from_sums_kernel(const Acc* sums, float clip, float* norm_scale) {
  if (threadIdx.x != 0) return;
  const float norm = float(sqrt(sums[0] + sums[1]));
  norm_scale[0] = norm;
  norm_scale[1] = clip > 0.f && norm > clip ? clip / norm : 1.f;
}

}  // namespace detail

using detail::NormPiece;

// The pieces of a buffer for norm_pieces_sum: tensors [begin, end) with their kind, each cut at kSumChunk values.
template <class Tensors>
std::vector<NormPiece> norm_pieces(const Tensors& tensors) {
  std::vector<NormPiece> out;
  for (const auto& [begin, end, whole] : tensors)
    for (size_t b = begin; b < end; b += kSumChunk) out.push_back({b, end - b > kSumChunk ? b + kSumChunk : end, int(whole)});
  return out;
}

// g's sums of squares over the pieces (device, n of them): sums[0] of the split ones, sums[1] of the whole ones.
// partials: n doubles of scratch.
template <class T>
void norm_pieces_sum(const T* g, const NormPiece* pieces, int n, double* partials, double* sums, gpu::Stream stream) {
  auto* sum = &detail::sum_squares_pieces_kernel<T>;
  KILN_LAUNCH(sum, dim3(unsigned(n)), dim3(detail::kSumThreads), 0, stream)(g, pieces, partials);
  auto* finish = &detail::norm_pieces_sum_kernel<double>;
  KILN_LAUNCH(finish, dim3(1), dim3(detail::kSumThreads), 0, stream)(partials, pieces, n, sums);
}
inline void norm_from_sums(const double* sums, float clip, float* norm_scale, gpu::Stream stream) {
  auto* kernel = &detail::norm_from_sums_kernel<double>;
  KILN_LAUNCH(kernel, dim3(1), dim3(32), 0, stream)(sums, clip, norm_scale);
}

// g (n) fp32 gradients -> norm_scale[0] = ||g||, norm_scale[1] = the clip scale (1 when clip <= 0 or the norm is
// within it). partials: sum_squares_partials(n) doubles of scratch.
// The two halves, for a buffer whose chunks are summed in pieces (ZeRO-1: each rank its shard's chunks, the
// partials then summed over the ranks): sum_squares_chunks writes partials[c] for the chunks of g (n values);
// norm_finish adds `chunks` partials in their order.
template <class T>
void sum_squares_chunks(const T* g, size_t n, double* partials, gpu::Stream stream) {
  if (n == 0) return;
  auto* sum = &detail::sum_squares_kernel<T>;
  KILN_LAUNCH(sum, dim3(unsigned(sum_squares_partials(n))), dim3(detail::kSumThreads), 0, stream)(g, n, partials);
}
inline void norm_finish(const double* partials, int chunks, float clip, float* norm_scale, gpu::Stream stream) {
  auto* finish = &detail::norm_finish_kernel<double>;
  KILN_LAUNCH(finish, dim3(1), dim3(detail::kSumThreads), 0, stream)(partials, chunks, clip, norm_scale);
}
template <class T>
void grad_norm(const T* g, size_t n, double* partials, float clip, float* norm_scale, gpu::Stream stream) {
  sum_squares_chunks(g, n, partials, stream);
  norm_finish(partials, int(sum_squares_partials(n)), clip, norm_scale, stream);
}

// pb[i] = p[i] in the storage type, for i < n (ZeRO-1: after the all-gather of the fp32 weights; the same rounding
// as the update's own write of pb).
template <class S>
void to_storage(const float* p, S* pb, size_t n, gpu::Stream stream) {
  if (n == 0) return;
  const size_t per_block = size_t(detail::kAdamThreads) * detail::kAdamPer;
  auto* kernel = &detail::to_storage_kernel<S>;
  KILN_LAUNCH(kernel, dim3(unsigned((n + per_block - 1) / per_block)), dim3(detail::kAdamThreads), 0, stream)(p, pb, n);
}

// The update of the whole flat buffer [0, n): ranges (device, sorted, covering [0, n)); k (device) the constants;
// scale (device, nullable) the clip scale grad_norm wrote; pb (nullable) the compute copy to refresh.
template <class S>
void adamw_flat(float* p, const float* g, float* m, float* v, S* pb, size_t n, const DecayRange* ranges, int n_ranges,
                const AdamWConstants* k, const float* scale, gpu::Stream stream) {
  const size_t per_block = size_t(detail::kAdamThreads) * detail::kAdamPer;
  auto* kernel = &detail::adamw_kernel<S>;
  KILN_LAUNCH(kernel, dim3(unsigned((n + per_block - 1) / per_block)), dim3(detail::kAdamThreads), 0, stream)(
      p, g, m, v, pb, n, ranges, n_ranges, k, scale);
}

}  // namespace kiln::kernels::cuda
