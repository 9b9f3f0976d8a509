// kiln/backend/cuda/sdpa.hpp: cuDNN's fused attention (SDPA) for the CUDA backend, forward and backward, over the
// plan's own buffers. The cuDNN frontend (NVIDIA's header-only graph API, fetched at a pinned version by CMake,
// cmake/KilnCudnn.cmake) is included by one compiled file only, src/cuda/sdpa.cpp, which costs ~35 s and 1.5 GB
// of compiler memory once: this header is what the trainers see.
//
// The packed batch as cuDNN sees it (a ragged, "THD" layout): every document of every row of the micro-batch is one
// sequence ("slot") of a batch of n slots, n the number of documents, each slot's tokens contiguous in the row.
//   Q, K, V   views into the plan's qkv (R, QKV) buffer: head h of slot b, token s at
//             qkv + offset_qkv[b] + h * HD + s * QKV (+ NH * HD for K, + (NH + NKV) * HD for V): GQA reads the
//             kv heads in place, nothing is copied
//   O, dO     (R, NH * HD), offset_o[b] = first token * NH * HD;  dQ: the dqkv buffer, as Q; dK, dV: MHA the
//             dqkv buffer, GQA dense (R + 1, NKV * HD) views in the workspace block, copied into dqkv's columns
//             after the backward (cudaMemcpy2DAsync): cuDNN's fp32 full-head accumulators would otherwise take
//             dqkv's row stride times the group size
//   Stats     the softmax's log-sum-exp, fp32 (R, NH): cuDNN's own layout in the plan's lse buffer (the same bytes
//             as Kiln's kernel's (B, NH, T); the two never read each other's)
//   masks     causal from the top left of each slot (a document starts at its own position 0), padding by the
//             per-slot lengths, the scale 1 / sqrt(head_dim)
// Slot counts are bucketed: a batch of n documents runs with N = the next power of two (at most R) slots, the last
// N - n of them dummies of one token in a scratch row after the R tokens of every buffer cuDNN touches (qkv, out,
// lse, dout and dqkv have R + 1 rows in the plan; the dummies read and write that row only). So a phase has at most
// log2(R) + 1 graph pairs whatever its documents (each built once, sharing a kernel cache with dynamic shapes from
// cuDNN 9.4 on: a new bucket costs a plan finalisation, not a kernel build), a bucket's launches are fixed (what a
// CUDA graph needs), and no slot is ever empty: the cuDNN 9.19 bug on zero-length ragged slots (NaN rows, fixed in
// 9.25) is never reached.
//
// Device memory: cuDNN's workspace (its fp32 dQ accumulator and the backward's dO . O sums, ragged over R + 1 rows,
// plus the engine's own) lives in a block the plan reserves (MemoryPlan::attention_workspace, sized by
// plan::sdpa_workspace_bytes, kiln/plan/sdpa_memory.hpp); a graph cuDNN finalises with a larger request is
// refused with both numbers. The slots' metadata lives in a second block (plan::sdpa_metadata_bytes).
// The forward pins cuDNN's composite implementation (the one whose workspace the plan mirrors); head_dim must be a
// multiple of 16 (the Executor runs Kiln's kernel otherwise).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kiln::backend::cuda {

// What one phase's attention is: its graphs are built from this and the number of slots.
struct SdpaShape {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int rows = 0;  // tokens per micro-batch, B x T (the buffers have one more row: the dummies' scratch)
  int seq = 0;   // T: no document is longer than a row
  float scale = 0.f;
};

// The slot count a batch of n documents runs with: the next power of two, at most `rows`.
inline int sdpa_bucket(int n, int rows) {
  int N = 1;
  while (N < n) N *= 2;
  return N < rows ? N : rows;
}

// The cuDNN this process loaded, as "9.19.0", or the reason none is.
std::string sdpa_cudnn_version();

// Builds the forward and backward graphs of a shape with n slots for the SM version given (90: H100 / H200) and
// runs cuDNN's validation of both, which needs no device. Returns "" when cuDNN accepts both, else why not.
std::string sdpa_validate(const SdpaShape& shape, int slots, int sm_version);

// The slots of a packed micro-batch, from the batch's doc_start (B x T, each token's document start in its row):
// slot k covers tokens start[k] .. start[k] + len[k] - 1 of the flat (B x T) token order, start[n] = B x T.
// len holds B x T entries and start B x T + 1 at most. Returns n, or -1 - i when token i's document is not the
// run it continues (doc_start[i] neither i nor doc_start[i - 1]): a document cuDNN's ragged layout cannot hold.
inline int sdpa_slots(const int32_t* doc_start, int B, int T, int32_t* len, int64_t* start) {
  int n = 0;
  for (int r = 0; r < B; ++r)
    for (int i = 0; i < T; ++i) {
      const int64_t k = int64_t(r) * T + i;
      const int32_t d = doc_start[k];
      if (d == i) {
        start[n] = k, len[n] = 1, ++n;
      } else if (i > 0 && d == doc_start[k - 1]) {
        ++len[n - 1];
      } else {
        return int(-1 - k);
      }
    }
  start[n] = int64_t(B) * T;
  return n;
}

// One phase's cuDNN attention on the current device. Not copyable; one per executor.
class Sdpa {
 public:
  // workspace: the plan's reserved block of `workspace_bytes`; metadata: its sdpa_metadata_bytes block.
  Sdpa(const SdpaShape& shape, void* workspace, size_t workspace_bytes, void* metadata);
  ~Sdpa();
  Sdpa(const Sdpa&) = delete;
  Sdpa& operator=(const Sdpa&) = delete;

  // The micro-batch's documents (host doc_start, B x T): finds the slots, writes their lengths and offsets into
  // host_metadata (page-locked host memory of the metadata block's size and layout) and copies them to the device
  // block on the stream, and builds (once per distinct slot count) the graphs. Nothing waits: the caller keeps
  // host_metadata unchanged until the stream has run the copies. Call before forward / backward of the batch.
  void set_batch(const int32_t* doc_start, int B, int T, void* host_metadata, void* stream);
  // qkv (R + 1, QKV) -> out (R + 1, NH * HD), lse (R + 1, NH) fp32. Storage bf16. Row R is the dummies' scratch.
  void forward(const void* qkv, void* out, float* lse, void* stream);
  // qkv, out, lse, dout (R + 1, NH * HD) -> dqkv (R + 1, QKV), every element of the first R rows written.
  void backward(const void* qkv, const void* out, const float* lse, const void* dout, void* dqkv, void* stream);

  int slots() const;           // the current batch's documents
  int padded_slots() const;    // the slots its graphs run: sdpa_bucket(slots(), rows)
  int graphs_built() const;    // distinct slot counts seen so far
  size_t largest_workspace() const;  // the largest request of the graphs built so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::backend::cuda
