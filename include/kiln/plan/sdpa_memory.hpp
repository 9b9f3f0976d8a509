// kiln/plan/sdpa_memory.hpp: the device memory of cuDNN's attention (backend/cuda/sdpa.hpp), as constexpr sizes
// the plan adds to its total (MemoryPlan) and the backend lays out. rows = R + 1: the R tokens of a micro-batch and
// the scratch row of the dummy slots.
//
// The workspace block, in order:
//   cuDNN's workspace: what the frontend asks for a ragged causal backward (the composite SDPA nodes of the cuDNN
//     frontend 1.32, whose sizes these mirror): the fp32 dQ accumulator laid out like dQ inside qkv
//     ((rows - 1) QKV + NH HD floats, rounded up to rows QKV), the fp32 dO . O sums (rows NH), and for GQA the fp32
//     full-head dK and dV (rows NH HD each, because Kiln hands cuDNN dense dK / dV views below), plus
//     kSdpaEngineWorkspace for the engine's own request (sm_90's SDPA engines ask none or a few KiB);
//   for GQA, the dense bf16 dK and dV (rows, NKV HD) that cuDNN writes and the backend copies into dqkv's columns
//     (cuDNN's full-head accumulators would otherwise take dqkv's row stride times the group size: 1.6 GiB for
//     ablation_1b instead of 0.27 GiB).
// The metadata block: four ragged offset arrays (int64: qkv, out, lse, dense kv) and the slots' lengths (int32),
// rows entries each at most, each array 16-byte aligned.
#pragma once
#include <cstddef>

namespace kiln::plan {

inline constexpr size_t kSdpaEngineWorkspace = size_t(16) << 20;

constexpr size_t sdpa_round(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The dense dK / dV views of a GQA backward (0 for MHA: cuDNN writes dqkv directly), bytes of one of the two.
constexpr size_t sdpa_dense_kv_bytes(int heads, int kv_heads, int head_dim, int rows) {
  return heads == kv_heads ? 0 : sdpa_round(size_t(rows) * size_t(kv_heads) * size_t(head_dim) * 2, 256);
}
// cuDNN's part of the block (the dense views follow it).
constexpr size_t sdpa_cudnn_workspace_bytes(int heads, int kv_heads, int head_dim, int rows) {
  const size_t qkv = size_t(heads + 2 * kv_heads) * size_t(head_dim), r = size_t(rows);
  const size_t full_head = heads == kv_heads ? 0 : 2 * r * size_t(heads) * size_t(head_dim) * 4;
  return sdpa_round(r * qkv * 4 + r * size_t(heads) * 4 + full_head, 256) + kSdpaEngineWorkspace;
}
constexpr size_t sdpa_workspace_bytes(int heads, int kv_heads, int head_dim, int rows) {
  return sdpa_cudnn_workspace_bytes(heads, kv_heads, head_dim, rows) +
         2 * sdpa_dense_kv_bytes(heads, kv_heads, head_dim, rows);
}

// The metadata block's arrays: k = 0..3 the offset arrays, 4 the lengths; each holds `rows` entries.
constexpr size_t sdpa_metadata_offset(int k, int rows) { return size_t(k) * sdpa_round(size_t(rows) * 8, 16); }
constexpr size_t sdpa_metadata_bytes(int rows) {
  return sdpa_round(sdpa_metadata_offset(4, rows) + sdpa_round(size_t(rows) * 4, 16), 256);
}

}  // namespace kiln::plan
