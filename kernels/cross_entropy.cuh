// kernels/cross_entropy.cuh: the CUDA half of kernels/cross_entropy.hpp's row part (xent_rows; the math is there):
// over a chunk of n rows of fp32 logits (cuBLASLt writes them from the LM head, chunk by chunk, so the (R, V)
// logits never exist), per row r with target t >= 0:
//   lse = log sum_j exp(l_j);  token_loss = (lse - l_t) + z_coef lse^2;  token_logp = l_t - lse
//   dl_j = g (p_j - [j == t] + 2 z_coef lse p_j),  p = softmax(l)                (when dl != nullptr)
// with g = grad_scale x row_weight[r] (row_weight: preference optimisation's per-token weights, Batch::weights;
// nullptr: 1), and 0 for ignored rows (t < 0). dl is written in S (bf16 for the dx / dW GEMMs that follow), logits are read.
// One block per row, two passes over it: each thread keeps a running (max, sum) over its columns (online
// softmax), the block combines them (max, then the rescaled sums, in a fixed order), then the second pass writes dl.
// grad_scale is a device scalar when given (the loss normalisation of the global batch), else 1.
//
// Vocabulary-parallel (tensor parallelism, kernels/cross_entropy.hpp's lm_head_cross_entropy_vocab_parallel has the
// math): this rank's logits are the (n, Vl) columns [first, first + Vl) of the vocabulary; the statistics of a row
// come from every rank of the group, reduced by the caller's device collectives between three launches:
//   xent_vp_max      mx[i] = max_j l_ij over the local columns           -> the group's max (in place)
//   xent_vp_sums     sums[i] = sum_j exp(l_ij - mx[i]); sums[n + i] = l_it when t is held here, else 0
//                                                                         -> the group's sum of the 2 n (in place)
//   xent_vp_finish   lse = mx + log sums; token_loss, token_logp; dl_ij = grad_scale ((1 + 2 z lse) exp(l_ij - mx)
//                    / sums - [j == t - first]) in S
// stats is 3 n floats: mx (n) | sums (n) | target logits (n).
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

namespace detail {

template <class S, int V, unsigned T>
KILN_GLOBAL void xent_rows_kernel(const float* logits, const int32_t* targets, int n, float z_coef,
                                  const float* grad_scale, const float* row_weight, S* dl, float* token_loss,
                                  float* token_logp) {
  const int i = int(blockIdx.x);
  if (i >= n) return;
  const float* l = logits + size_t(i) * V;
  S* d = dl ? dl + size_t(i) * V : nullptr;
  const int t = targets[i];
  if (t < 0) {
    if (threadIdx.x == 0) token_loss[i] = token_logp[i] = 0.f;
    if (d)
      for (int j = int(threadIdx.x); j < V; j += int(T)) d[j] = dev::st<S>(0.f);
    return;  // the whole block
  }
  float m = -INFINITY, s = 0.f;
  for (int j = int(threadIdx.x); j < V; j += int(T)) {
    const float x = l[j];
    if (x > m) {
      s = s * dev::exp(m - x) + 1.f;
      m = x;
    } else {
      s += dev::exp(x - m);
    }
  }
  const float M = dev::block_max(m);
  const float sum = dev::block_sum(m == -INFINITY ? 0.f : s * dev::exp(m - M));
  const float lse = M + dev::log(sum);
  const float lt = l[t];
  if (threadIdx.x == 0) {
    token_loss[i] = (lse - lt) + z_coef * lse * lse;
    token_logp[i] = lt - lse;
  }
  if (d) {
    const float gs = (grad_scale ? *grad_scale : 1.f) * (row_weight ? row_weight[i] : 1.f);
    const float coef = gs * (1.f + 2.f * z_coef * lse) / sum;  // dl_j = coef exp(l_j - M) - gs [j == t]
    for (int j = int(threadIdx.x); j < V; j += int(T))
      d[j] = dev::st<S>(coef * dev::exp(l[j] - M) - (j == t ? gs : 0.f));
  }
}

template <int Vl, unsigned T>
KILN_GLOBAL void xent_vp_max_kernel(const float* logits, int n, float* mx) {
  const int i = int(blockIdx.x);
  if (i >= n) return;
  const float* l = logits + size_t(i) * Vl;
  float m = -INFINITY;
  for (int j = int(threadIdx.x); j < Vl; j += int(T)) m = l[j] > m ? l[j] : m;
  m = dev::block_max(m);
  if (threadIdx.x == 0) mx[i] = m;
}

template <int Vl, unsigned T>
KILN_GLOBAL void xent_vp_sums_kernel(const float* logits, const int32_t* targets, int n, int first, float* stats) {
  const int i = int(blockIdx.x);
  if (i >= n) return;
  const float* l = logits + size_t(i) * Vl;
  const float m = stats[i];
  float s = 0.f;
  for (int j = int(threadIdx.x); j < Vl; j += int(T)) s += dev::exp(l[j] - m);
  s = dev::block_sum(s);
  if (threadIdx.x == 0) {
    const unsigned tl = unsigned(targets[i] - first);  // held here when < Vl (an ignored row's t < 0 is not)
    stats[n + i] = s;
    stats[2 * n + i] = targets[i] >= 0 && tl < unsigned(Vl) ? l[tl] : 0.f;
  }
}

template <class S, int Vl, unsigned T>
KILN_GLOBAL void xent_vp_finish_kernel(const float* logits, const int32_t* targets, int n, int first, float z_coef,
                                       const float* grad_scale, const float* stats, S* dl, float* token_loss,
                                       float* token_logp) {
  const int i = int(blockIdx.x);
  if (i >= n) return;
  const float* l = logits + size_t(i) * Vl;
  S* d = dl ? dl + size_t(i) * Vl : nullptr;
  const int t = targets[i];
  if (t < 0) {
    if (threadIdx.x == 0) token_loss[i] = token_logp[i] = 0.f;
    if (d)
      for (int j = int(threadIdx.x); j < Vl; j += int(T)) d[j] = dev::st<S>(0.f);
    return;
  }
  const float m = stats[i], sum = stats[n + i], lt = stats[2 * n + i];
  const float lse = m + dev::log(sum);
  if (threadIdx.x == 0) {
    token_loss[i] = (lse - lt) + z_coef * lse * lse;
    token_logp[i] = lt - lse;
  }
  if (d) {
    const float gs = grad_scale ? *grad_scale : 1.f;
    const float coef = gs * (1.f + 2.f * z_coef * lse) / sum;
    const int tl = t - first;
    for (int j = int(threadIdx.x); j < Vl; j += int(T))
      d[j] = dev::st<S>(coef * dev::exp(l[j] - m) - (j == tl ? gs : 0.f));
  }
}

}  // namespace detail

// The vocabulary-parallel row part, in three launches with the group's reductions between (see the top):
// logits (n, Vl) fp32, this rank's columns [first, first + Vl); targets (n) global ids; stats (3 n) fp32.
template <int Vl>
inline constexpr unsigned xent_vp_threads = Vl >= 8192 ? 512 : 128;
template <int Vl>
void xent_vp_max(const float* logits, int n, float* stats, gpu::Stream stream) {
  if (n == 0) return;
  auto* kernel = &detail::xent_vp_max_kernel<Vl, xent_vp_threads<Vl>>;
  KILN_LAUNCH(kernel, dim3(unsigned(n)), dim3(xent_vp_threads<Vl>), 0, stream)(logits, n, stats);
}
template <int Vl>
void xent_vp_sums(const float* logits, const int32_t* targets, int n, int first, float* stats, gpu::Stream stream) {
  if (n == 0) return;
  auto* kernel = &detail::xent_vp_sums_kernel<Vl, xent_vp_threads<Vl>>;
  KILN_LAUNCH(kernel, dim3(unsigned(n)), dim3(xent_vp_threads<Vl>), 0, stream)(logits, targets, n, first, stats);
}
template <class S, int Vl>
void xent_vp_finish(const float* logits, const int32_t* targets, int n, int first, float z_coef,
                    const float* grad_scale, const float* stats, S* dl, float* token_loss, float* token_logp,
                    gpu::Stream stream) {
  if (n == 0) return;
  auto* kernel = &detail::xent_vp_finish_kernel<S, Vl, xent_vp_threads<Vl>>;
  KILN_LAUNCH(kernel, dim3(unsigned(n)), dim3(xent_vp_threads<Vl>), 0, stream)(logits, targets, n, first, z_coef,
                                                                             grad_scale, stats, dl, token_loss,
                                                                             token_logp);
}

// logits (n, V) fp32; targets (n); dl (n, V) in S or nullptr (no gradients); token_loss, token_logp (n) fp32;
// row_weight (n) fp32 or nullptr.
template <class S, int V>
void xent_rows(const float* logits, const int32_t* targets, int n, float z_coef, const float* grad_scale, S* dl,
               float* token_loss, float* token_logp, gpu::Stream stream, const float* row_weight = nullptr) {
  static_assert(V > 1, "cross_entropy (CUDA): the vocabulary must have at least 2 entries");
  constexpr unsigned T = V >= 8192 ? 512 : 128;
  if (n == 0) return;
  auto* kernel = &detail::xent_rows_kernel<S, V, T>;
  KILN_LAUNCH(kernel, dim3(unsigned(n)), dim3(T), 0, stream)(logits, targets, n, z_coef, grad_scale, row_weight, dl,
                                                            token_loss, token_logp);
}

}  // namespace kiln::kernels::cuda
