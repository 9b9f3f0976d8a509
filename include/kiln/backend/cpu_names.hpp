// kiln/backend/cpu_names.hpp: what the CPU backend supports and which kernel it runs for each op of a program
// (for the printed plan); no kernel is included, so a plan printer or a recipe check compiles fast.
#pragma once
#include <string>

#include "kiln/plan/program.hpp"

namespace kiln::backend::cpu {

// Every constraint the CPU kernels put on a model's shapes, checked where a recipe is read (the plan printer) and
// where an executor is made, with one sentence each. The model DSL checks what any backend needs (RoPE: an even
// head_dim); this adds what the CPU kernels need.
template <DecoderModel M>
constexpr bool check() {
  static_assert(M::head_dim % 4 == 0,
                "CPU backend: head_dim must be a multiple of 4 (its attention kernel reads 4 values at a time); "
                "supported head_dim: 4, 8, 12, ..., e.g. 64 or 128 as on the GPU");
  return true;
}

template <DecoderModel M>
std::string kernel_name(const plan::Op& op) {
  using plan::OpKind;
  const bool fwd = op.pass != plan::Pass::backward;
  const std::string H = std::to_string(M::hidden), HD = std::to_string(M::head_dim);
  const std::string heads = std::to_string(M::heads) + "," + std::to_string(M::kv_heads) + "," + HD;
  switch (op.kind) {
    case OpKind::embedding: return fwd ? "embedding_forward<" + H + ">" : "embedding_backward<" + H + "> (column blocks)";
    case OpKind::rmsnorm: return (fwd ? "rmsnorm_forward<" : "rmsnorm_backward<") + H + ">";
    case OpKind::head_rmsnorm: return (fwd ? "rmsnorm_forward_strided<" : "rmsnorm_backward_strided<") + HD + "> x heads";
    case OpKind::gemm: return fwd ? "cblas_sgemm NT" : "cblas_sgemm TN (dW) + NN (dx)";
    case OpKind::rope: return (fwd ? "rope_forward<" : "rope_backward<") + std::to_string(M::heads + M::kv_heads) + "," + HD + ">";
    case OpKind::attention:
      return (fwd ? "attention_forward_blocked<" : "attention_backward_blocked<") + heads + "> (sgemm x" +
             (fwd ? "2" : "5") + " per block)";
    case OpKind::add: return "add (omp simd)";
    case OpKind::swiglu: return (fwd ? "swiglu_forward<" : "swiglu_backward<") + std::to_string(M::ffn) + ">";
    case OpKind::lm_head_loss:
      return std::string("lm_head_cross_entropy<") + std::to_string(M::vocab) + "," + H + ">: sgemm + xent_rows" +
             (op.grad ? " + sgemm x2" : "");
    case OpKind::kv_append: return "memcpy k, v -> cache";
    case OpKind::attention_decode: return "attention_decode<" + heads + ">";
    case OpKind::lm_head_logits: return "cblas_sgemm NT (1 row)";
  }
  return "?";
}

}  // namespace kiln::backend::cpu
