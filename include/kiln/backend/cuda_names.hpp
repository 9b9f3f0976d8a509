// kiln/backend/cuda_names.hpp: what the CUDA backend supports and which kernel it runs for each op of a program
// (for the printed plan, `tools/kiln plan <recipe> --backend cuda`); no kernel or CUDA header is included.
#pragma once
#include <string>

#include "kiln/plan/program.hpp"

namespace kiln::backend::cuda {

// Why the CUDA backend cannot run model M (nullptr: it can). backend/cuda.hpp turns each into a compile-time error.
template <DecoderModel M>
constexpr const char* unsupported() {
  if (M::hidden % 8 || M::ffn % 8 || M::head_dim % 8)
    return "the CUDA kernels move 16 bytes at a time: hidden, ffn and head_dim must be multiples of 8";
  if (M::head_dim > 256) return "the CUDA attention kernel supports head_dim up to 256";
  return nullptr;
}

template <DecoderModel M>
std::string kernel_name(const plan::Op& op) {
  using plan::OpKind;
  const bool fwd = op.pass != plan::Pass::backward;
  const std::string H = std::to_string(M::hidden), HD = std::to_string(M::head_dim);
  const std::string heads = std::to_string(M::heads) + "," + std::to_string(M::kv_heads) + "," + HD;
  switch (op.kind) {
    case OpKind::embedding: return fwd ? "embedding_forward<" + H + ">" : "embedding_backward<" + H + "> (rows by token)";
    case OpKind::rmsnorm:
      if (!fwd) return "rmsnorm_backward<" + H + "> + add_partials";
      return op.n_use > 3 ? "rmsnorm_forward<" + H + "> (residual add fused)" : "rmsnorm_forward<" + H + ">";
    case OpKind::head_rmsnorm:
      return (fwd ? "rmsnorm_forward_strided<" : "rmsnorm_backward_strided<") + HD + "> x heads + copy v";
    case OpKind::gemm: return fwd ? "cuBLASLt bf16 TN" : "cuBLASLt bf16 NN (dx) + NT fp32 += (dW)";
    case OpKind::rope: return (fwd ? "rope_forward<" : "rope_backward<") + std::to_string(M::heads + M::kv_heads) + "," + HD + ">";
    case OpKind::attention:
      return fwd ? "cuDNN SDPA ragged | attention_forward<" + heads + "> (Kiln's)"
                 : "cuDNN SDPA backward ragged | attention delta + dq + dkv<" + heads + "> (Kiln's)";
    case OpKind::add: return "add (16-byte grid-stride)";
    case OpKind::swiglu: return (fwd ? "swiglu_forward<" : "swiglu_backward<") + std::to_string(M::ffn) + ">";
    case OpKind::lm_head_loss:
      return std::string("per chunk: cuBLASLt fp32 logits + xent_rows<") + std::to_string(M::vocab) + ">" +
             (op.grad ? " + cuBLASLt dx, dW" : "");
    case OpKind::kv_append:
    case OpKind::attention_decode:
    case OpKind::lm_head_logits: return "(decoding runs on the CPU backend)";
  }
  return "?";
}

}  // namespace kiln::backend::cuda
