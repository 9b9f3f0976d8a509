// kernels/embedding.cuh: the CUDA half of kernels/embedding.hpp (the math is there); storage S, fp32 gradient.
//   forward:   out[r, :] = E[tokens[r], :]             16-byte copies, one thread per 16 bytes
//   backward:  dE[t, :] += sum of dout[r, :] over the rows r with tokens[r] = t, in row order
// The backward is deterministic without atomics: where the batch enters the backend, the host groups the rows by
// token (EmbeddingGrad::build, a counting sort of the batch's R ids), and one block per distinct token adds its
// rows in order. Every dE row is written by one block, every value in a fixed order: the same bits every run.
// A group with no rows (begin[u] == begin[u + 1]) writes nothing: EmbeddingGrad::pack lays the groups out at fixed
// places for R groups, the ones past the batch's distinct tokens empty, so that the launch (R blocks) is the same
// for every batch, as a CUDA graph replays it.
// Vocabulary-parallel (tensor parallelism: this rank holds E's rows [first, first + held)): the forward writes a
// held token's row and zeros for the others (the group's sum is then every row); the backward's groups hold the
// held tokens only, by local row (EmbeddingGrad::build(..., first)).
#pragma once
#include <cstddef>
#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "kernels/device.hpp"

namespace kiln::kernels::cuda {

// The rows of a batch grouped by token: rows[begin[u] .. begin[u + 1]) hold token[u], in row order.
struct EmbeddingGrad {
  std::vector<int32_t> token, begin, rows;

  // tokens (R) < V (checked where the batch enters). O(R + distinct) after one pass over the ids; `seen` is one
  // counter per row of E held (V, or a vocabulary-parallel rank's share), scratch the caller keeps between batches
  // (all zero between calls). The rows held are [first, first + seen.size()): a token outside them is left out and
  // the groups name local rows (token - first).
  static EmbeddingGrad build(const int32_t* tokens, int R, std::vector<int32_t>& seen, int32_t first = 0) {
    EmbeddingGrad g;
    const auto held = [&](int r) { return uint32_t(tokens[r] - first) < uint32_t(seen.size()); };
    for (int r = 0; r < R; ++r)
      if (held(r) && seen[size_t(tokens[r] - first)]++ == 0) g.token.push_back(tokens[r] - first);
    g.begin.resize(g.token.size() + 1);
    int at = 0;
    for (size_t u = 0; u < g.token.size(); ++u) {  // tokens in order of first appearance; any order is fine
      g.begin[u] = at;
      at += seen[size_t(g.token[u])];
      seen[size_t(g.token[u])] = g.begin[u];  // now: the next free slot of this token
    }
    g.begin.back() = at;
    g.rows.resize(size_t(at));
    for (int r = 0; r < R; ++r)
      if (held(r)) g.rows[size_t(seen[size_t(tokens[r] - first)]++)] = r;
    for (int32_t t : g.token) seen[size_t(t)] = 0;
    return g;
  }
  // The groups at fixed places for a batch of R rows: token (R) | begin (R + 1) | rows (R), 3 R + 1 values; the
  // groups past token.size() are empty (token 0, begin at the last row grouped) and their blocks write nothing.
  void pack(int R, int32_t* out) const {
    std::fill(out, out + 3 * std::ptrdiff_t(R) + 1, 0);
    std::copy(token.begin(), token.end(), out);
    std::copy(begin.begin(), begin.end(), out + R);
    std::fill(out + R + std::ptrdiff_t(begin.size()), out + 2 * R + 1, begin.back());
    std::copy(rows.begin(), rows.end(), out + 2 * R + 1);
  }
  void pack(int R, std::vector<int32_t>& out) const {
    out.assign(size_t(3) * size_t(R) + 1, 0);
    pack(R, out.data());
  }
};

namespace detail {

template <class S, int H>
KILN_GLOBAL void embedding_forward_kernel(const int32_t* tokens, int R, const S* E, int first, int held, S* out) {
  constexpr int V = 16 / int(sizeof(S));
  static_assert(H % V == 0, "embedding (CUDA): the hidden size must be a multiple of 16 bytes");
  struct alignas(16) P {
    S v[V];
  };
  const size_t packs = size_t(R) * (H / V);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / (H / V), c = i % (H / V);
    const unsigned k = unsigned(tokens[r] - first);  // the row held, or >= held: another rank's token
    P p{};
    if (k < unsigned(held)) p = reinterpret_cast<const P*>(E + size_t(k) * H)[c];
    reinterpret_cast<P*>(out + r * H)[c] = p;
  }
}

template <class S, int H>
KILN_GLOBAL void embedding_backward_kernel(const int32_t* token, const int32_t* begin, const int32_t* rows,
                                           const S* dout, float* dE) {
  const int u = int(blockIdx.x);
  const int b = begin[u], e = begin[u + 1];
  if (b == e) return;  // an empty group (a padded place): nothing to add, no row of dE touched
  float* d = dE + size_t(token[u]) * H;
  for (int j = int(threadIdx.x); j < H; j += int(blockDim.x)) {
    float s = 0.f;
    for (int k = b; k < e; ++k) s += dev::ld(dout[size_t(rows[k]) * H + j]);
    d[j] += s;
  }
}

}  // namespace detail

// E holds rows [first, first + held) of the embedding (all V of them: first 0, held V); a token outside gets zeros.
template <class S, int H>
void embedding_forward(const int32_t* tokens, int R, const S* E, S* out, gpu::Stream stream, int first = 0,
                       int held = INT32_MAX) {
  constexpr unsigned kThreads = 256;
  const size_t packs = size_t(R) * (H / (16 / sizeof(S)));
  const size_t blocks = (packs + kThreads - 1) / kThreads;
  auto* kernel = &detail::embedding_forward_kernel<S, H>;
  KILN_LAUNCH(kernel, dim3(unsigned(blocks < 8192 ? (blocks ? blocks : 1) : 8192)), dim3(kThreads), 0, stream)(
      tokens, R, E, first, held, out);
}

// token, begin, rows: an EmbeddingGrad on the device (distinct = token.size()).
template <class S, int H>
void embedding_backward(const int32_t* token, const int32_t* begin, const int32_t* rows, int distinct, const S* dout,
                        float* dE, gpu::Stream stream) {
  if (distinct == 0) return;
  constexpr unsigned kThreads = H >= 1024 ? 256 : 128;
  auto* kernel = &detail::embedding_backward_kernel<S, H>;
  KILN_LAUNCH(kernel, dim3(unsigned(distinct)), dim3(kThreads), 0, stream)(token, begin, rows, dout, dE);
}

}  // namespace kiln::kernels::cuda
