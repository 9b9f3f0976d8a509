// kernels/attention.cuh: Kiln's own CUDA attention, the CUDA half of kernels/attention.hpp (the math and the layouts
// are there): causal, intra-document (token i attends to j iff doc_start[i] <= j <= i), GQA without copying K/V,
// forward and backward; storage S, fp32 scores, softmax statistics and accumulation.
//
// This is the reference and the fallback, written for clarity and verified on the CPU through the SIMT layer: one
// CUDA thread per query row (forward, dq) or per key row (dk, dv), with K/V (or Q/dO) tiles of kTile rows staged in
// shared memory by the block. Each output is written by one thread in a fixed order: the same bits every run, no
// atomics. It is not the fast path: the issue's fast path is cuDNN's SDPA (not built yet), and this kernel keeps a
// head_dim's worth of accumulators per thread, which at head_dim 128 does not fit in registers (it is left out of
// cuda.no_spills on purpose).
//   forward:    out_i = sum_j p_ij v_j, p_ij = exp(s_ij - lse_i), s_ij = scale q_i . k_j; lse (B, NH, T) saved
//   backward:   D_i = dO_i . out_i (kernel 1); dq_i = scale sum_j ds_ij k_j (kernel 2, by query);
//               dk_j = scale sum_{h in group, i} ds_ij q_i and dv_j = sum p_ij dO_i (kernel 3, by key and kv head)
//               with ds_ij = p_ij (dO_i . v_j - D_i). dqkv is overwritten whole; D is (B, NH, T) fp32 scratch.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

namespace detail {

inline constexpr int kTile = 32;      // rows staged per shared-memory tile
inline constexpr unsigned kAttnThreads = 64;  // query (or key) rows per block

template <int NH, int NKV, int HD>
struct AttnShape {
  static_assert(NH % NKV == 0, "attention (CUDA): NH must be a multiple of NKV");
  static_assert(HD % 8 == 0 && HD <= 256, "attention (CUDA): head_dim must be a multiple of 8, at most 256");
  static constexpr int group = NH / NKV, row = (NH + 2 * NKV) * HD, k_off = NH * HD, v_off = (NH + NKV) * HD;
};

// The block stages keys j0 .. j0 + kTile of kv head g (rows past T repeat the last; never attended) as fp32.
template <class S, int NH, int NKV, int HD>
KILN_DEVICE void load_kv_tile(const S* qkv, size_t base, int j0, int T, int g, float* ks, float* vs) {
  using Sh = AttnShape<NH, NKV, HD>;
  for (int e = int(threadIdx.x); e < kTile * HD; e += int(blockDim.x)) {
    const int jj = e / HD, d = e % HD, j = j0 + jj;
    const S* row = qkv + (base + size_t(j < T ? j : T - 1)) * Sh::row;
    ks[e] = dev::ld(row[Sh::k_off + g * HD + d]);
    vs[e] = dev::ld(row[Sh::v_off + g * HD + d]);
  }
}

// grid (ceil(T / threads), NH, B): thread = query row i of head h in batch row b.
template <class S, int NH, int NKV, int HD>
KILN_GLOBAL void attention_forward_kernel(const S* qkv, const int32_t* doc_start, S* out, float* lse, int T,
                                          float scale) {
  using Sh = AttnShape<NH, NKV, HD>;
  KILN_SHARED(float, ks, kTile * HD);
  KILN_SHARED(float, vs, kTile * HD);
  const int b = int(blockIdx.z), h = int(blockIdx.y), g = h / Sh::group;
  const int i0 = int(blockIdx.x * blockDim.x), i = i0 + int(threadIdx.x);
  const bool active = i < T;
  const size_t base = size_t(b) * T;
  float q[HD], acc[HD];
  float m = -INFINITY, l = 0.f;
  int lo = 0;
  if (active) {
    const S* qi = qkv + (base + size_t(i)) * Sh::row + size_t(h) * HD;
    KILN_UNROLL
    for (int d = 0; d < HD; ++d) {
      q[d] = dev::ld(qi[d]) * scale;
      acc[d] = 0.f;
    }
    lo = doc_start[base + size_t(i)];
  }
  // keys from the block's smallest document start to its last query
  const int last = (i0 + int(blockDim.x) < T ? i0 + int(blockDim.x) : T) - 1;
  const int first = doc_start[base + size_t(i0)];
  for (int j0 = first - first % kTile; j0 <= last; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed
    load_kv_tile<S, NH, NKV, HD>(qkv, base, j0, T, g, ks, vs);
    __syncthreads();
    if (!active) continue;
    for (int jj = 0; jj < kTile; ++jj) {
      const int j = j0 + jj;
      if (j < lo || j > i) continue;
      float s = 0.f;
      KILN_UNROLL
      for (int d = 0; d < HD; ++d) s += q[d] * ks[jj * HD + d];
      const float mn = s > m ? s : m;
      const float corr = dev::exp(m - mn), p = dev::exp(s - mn);
      l = l * corr + p;
      KILN_UNROLL
      for (int d = 0; d < HD; ++d) acc[d] = acc[d] * corr + p * vs[jj * HD + d];
      m = mn;
    }
  }
  if (active) {
    S* o = out + (base + size_t(i)) * (NH * HD) + size_t(h) * HD;
    KILN_UNROLL
    for (int d = 0; d < HD; ++d) o[d] = dev::st<S>(acc[d] / l);
    lse[(size_t(b) * NH + size_t(h)) * T + size_t(i)] = m + dev::log(l);
  }
}

// D (B, NH, T) = dO . out, one thread per (b, h, i).
template <class S, int NH, int HD>
KILN_GLOBAL void attention_delta_kernel(const S* out, const S* dout, float* D, int B, int T) {
  const size_t n = size_t(B) * NH * T;
  for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += size_t(gridDim.x) * blockDim.x) {
    const size_t i = e % size_t(T), h = e / size_t(T) % NH, b = e / (size_t(T) * NH);
    const size_t at = (b * T + i) * (NH * HD) + h * HD;
    float s = 0.f;
    for (int d = 0; d < HD; ++d) s += dev::ld(out[at + d]) * dev::ld(dout[at + d]);
    D[e] = s;
  }
}

// dq: grid (ceil(T / threads), NH, B), thread = query row i of head h.
template <class S, int NH, int NKV, int HD>
KILN_GLOBAL void attention_dq_kernel(const S* qkv, const int32_t* doc_start, const float* lse, const float* D,
                                     const S* dout, S* dqkv, int T, float scale) {
  using Sh = AttnShape<NH, NKV, HD>;
  KILN_SHARED(float, ks, kTile * HD);
  KILN_SHARED(float, vs, kTile * HD);
  const int b = int(blockIdx.z), h = int(blockIdx.y), g = h / Sh::group;
  const int i0 = int(blockIdx.x * blockDim.x), i = i0 + int(threadIdx.x);
  const bool active = i < T;
  const size_t base = size_t(b) * T;
  float q[HD], go[HD], dq[HD];
  float li = 0.f, Di = 0.f;
  int lo = 0;
  if (active) {
    const S* qi = qkv + (base + size_t(i)) * Sh::row + size_t(h) * HD;
    const S* gi = dout + (base + size_t(i)) * (NH * HD) + size_t(h) * HD;
    KILN_UNROLL
    for (int d = 0; d < HD; ++d) {
      q[d] = dev::ld(qi[d]) * scale;
      go[d] = dev::ld(gi[d]);
      dq[d] = 0.f;
    }
    li = lse[(size_t(b) * NH + size_t(h)) * T + size_t(i)];
    Di = D[(size_t(b) * NH + size_t(h)) * T + size_t(i)];
    lo = doc_start[base + size_t(i)];
  }
  const int last = (i0 + int(blockDim.x) < T ? i0 + int(blockDim.x) : T) - 1;
  const int first = doc_start[base + size_t(i0)];
  for (int j0 = first - first % kTile; j0 <= last; j0 += kTile) {
    __syncthreads();
    load_kv_tile<S, NH, NKV, HD>(qkv, base, j0, T, g, ks, vs);
    __syncthreads();
    if (!active) continue;
    for (int jj = 0; jj < kTile; ++jj) {
      const int j = j0 + jj;
      if (j < lo || j > i) continue;
      float s = 0.f, dp = 0.f;
      KILN_UNROLL
      for (int d = 0; d < HD; ++d) {
        s += q[d] * ks[jj * HD + d];
        dp += go[d] * vs[jj * HD + d];
      }
      const float ds = dev::exp(s - li) * (dp - Di);
      KILN_UNROLL
      for (int d = 0; d < HD; ++d) dq[d] += ds * ks[jj * HD + d];
    }
  }
  if (active) {
    S* o = dqkv + (base + size_t(i)) * Sh::row + size_t(h) * HD;
    KILN_UNROLL
    for (int d = 0; d < HD; ++d) o[d] = dev::st<S>(dq[d] * scale);
  }
}

// dk, dv: grid (ceil(T / threads), NKV, B), thread = key row j of kv head g; the queries of every head of the group,
// from j to the end of j's document.
template <class S, int NH, int NKV, int HD>
KILN_GLOBAL void attention_dkv_kernel(const S* qkv, const int32_t* doc_start, const float* lse, const float* D,
                                      const S* dout, S* dqkv, int T, float scale) {
  using Sh = AttnShape<NH, NKV, HD>;
  KILN_SHARED(float, qs, kTile * HD);
  KILN_SHARED(float, gs, kTile * HD);
  KILN_SHARED(float, ls, kTile);
  KILN_SHARED(float, dsh, kTile);
  KILN_SHARED(int32_t, starts, kTile);
  const int b = int(blockIdx.z), g = int(blockIdx.y);
  const int j0b = int(blockIdx.x * blockDim.x), j = j0b + int(threadIdx.x);
  const bool active = j < T;
  const size_t base = size_t(b) * T;
  float k[HD], v[HD], dk[HD], dv[HD];
  if (active) {
    const S* row = qkv + (base + size_t(j)) * Sh::row;
    KILN_UNROLL
    for (int d = 0; d < HD; ++d) {
      k[d] = dev::ld(row[Sh::k_off + g * HD + d]);
      v[d] = dev::ld(row[Sh::v_off + g * HD + d]);
      dk[d] = dv[d] = 0.f;
    }
  }
  // queries from the block's first key to the end of the document of its last key
  const int jl = (j0b + int(blockDim.x) < T ? j0b + int(blockDim.x) : T) - 1;
  int end = jl + 1;
  while (end < T && doc_start[base + size_t(end)] <= jl) ++end;  // the same in every thread: a uniform bound
  for (int hh = 0; hh < Sh::group; ++hh) {
    const int h = g * Sh::group + hh;
    for (int i0 = j0b - j0b % kTile; i0 < end; i0 += kTile) {
      __syncthreads();
      for (int e = int(threadIdx.x); e < kTile * HD; e += int(blockDim.x)) {
        const int ii = e / HD, d = e % HD, i = i0 + ii < T ? i0 + ii : T - 1;
        qs[e] = dev::ld(qkv[(base + size_t(i)) * Sh::row + size_t(h) * HD + d]) * scale;
        gs[e] = dev::ld(dout[(base + size_t(i)) * (NH * HD) + size_t(h) * HD + d]);
      }
      for (int ii = int(threadIdx.x); ii < kTile; ii += int(blockDim.x)) {
        const int i = i0 + ii < T ? i0 + ii : T - 1;
        ls[ii] = lse[(size_t(b) * NH + size_t(h)) * T + size_t(i)];
        dsh[ii] = D[(size_t(b) * NH + size_t(h)) * T + size_t(i)];
        starts[ii] = i0 + ii < T ? doc_start[base + size_t(i)] : T;  // past the end: never attends
      }
      __syncthreads();
      if (!active) continue;
      for (int ii = 0; ii < kTile; ++ii) {
        const int i = i0 + ii;
        if (i < j || starts[ii] > j) continue;  // causal, and the same document
        float s = 0.f, dp = 0.f;
        KILN_UNROLL
        for (int d = 0; d < HD; ++d) {
          s += qs[ii * HD + d] * k[d];
          dp += gs[ii * HD + d] * v[d];
        }
        const float p = dev::exp(s - ls[ii]), ds = p * (dp - dsh[ii]);
        KILN_UNROLL
        for (int d = 0; d < HD; ++d) {
          dv[d] += p * gs[ii * HD + d];
          dk[d] += ds * qs[ii * HD + d];  // qs holds scale q: dk = scale sum ds q
        }
      }
    }
  }
  if (active) {
    S* row = dqkv + (base + size_t(j)) * Sh::row;
    KILN_UNROLL
    for (int d = 0; d < HD; ++d) {
      row[Sh::k_off + g * HD + d] = dev::st<S>(dk[d]);
      row[Sh::v_off + g * HD + d] = dev::st<S>(dv[d]);
    }
  }
}

}  // namespace detail

// qkv (B, T, row), doc_start (B, T), out (B, T, NH * HD), lse (B, NH, T) fp32.
template <class S, int NH, int NKV, int HD>
void attention_forward(const S* qkv, const int32_t* doc_start, S* out, float* lse, int B, int T, float scale,
                       gpu::Stream stream) {
  const dim3 grid(unsigned((T + int(detail::kAttnThreads) - 1) / int(detail::kAttnThreads)), NH, unsigned(B));
  auto* kernel = &detail::attention_forward_kernel<S, NH, NKV, HD>;
  KILN_LAUNCH(kernel, grid, dim3(detail::kAttnThreads), 0, stream)(qkv, doc_start, out, lse, T, scale);
}

// dqkv (B, T, row) overwritten; D (B, NH, T) fp32 scratch.
template <class S, int NH, int NKV, int HD>
void attention_backward(const S* qkv, const int32_t* doc_start, const S* out, const float* lse, const S* dout, S* dqkv,
                        float* D, int B, int T, float scale, gpu::Stream stream) {
  const size_t n = size_t(B) * NH * T;
  auto* delta = &detail::attention_delta_kernel<S, NH, HD>;
  KILN_LAUNCH(delta, dim3(unsigned((n + 255) / 256 < 8192 ? (n + 255) / 256 : 8192)), dim3(256), 0, stream)(
      out, dout, D, B, T);
  const unsigned tiles = unsigned((T + int(detail::kAttnThreads) - 1) / int(detail::kAttnThreads));
  auto* dq = &detail::attention_dq_kernel<S, NH, NKV, HD>;
  KILN_LAUNCH(dq, dim3(tiles, NH, unsigned(B)), dim3(detail::kAttnThreads), 0, stream)(qkv, doc_start, lse, D, dout,
                                                                                      dqkv, T, scale);
  auto* dkv = &detail::attention_dkv_kernel<S, NH, NKV, HD>;
  KILN_LAUNCH(dkv, dim3(tiles, NKV, unsigned(B)), dim3(detail::kAttnThreads), 0, stream)(qkv, doc_start, lse, D, dout,
                                                                                        dqkv, T, scale);
}

}  // namespace kiln::kernels::cuda
