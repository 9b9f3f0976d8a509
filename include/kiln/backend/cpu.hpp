// kiln/backend/cpu.hpp: the CPU executor of a static plan: forward, backward and loss of one micro-batch, fp32.
//
// Parameters, gradients and activations are flat buffers laid out by the plan (kiln/plan): this class owns the
// activation arena (its size and every offset are compile-time constants) and runs the kernels in order.
//   forward:  x = E[tok]; per layer: xn1 = rms(x); qkv = xn1 Wqkv^T; [qk-norm]; [RoPE]; att = attn(qkv);
//             x_mid = x + att Wo^T; xn2 = rms(x_mid); gu = xn2 Wgu^T; act = silu(g)*u; x' = x_mid + act Wd^T
//             loss = CE(rms(x_L) Wlm^T) (+ z-loss), fused and chunked: full logits are never stored.
//   backward: the same in reverse; the residual gradient dx flows through and each norm adds its part to it.
// Matrix products go through OpenBLAS (kernels/gemm.hpp); everything else is Kiln's OpenMP kernels.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/attention.hpp"
#include "kernels/cross_entropy.hpp"
#include "kernels/embedding.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rope.hpp"
#include "kernels/swiglu.hpp"
#include "kiln/core/error.hpp"
#include "kiln/core/memory.hpp"
#include "kiln/plan/activations.hpp"

namespace kiln::backend {

// One micro-batch as host arrays of B*T int32 values each, row-major (B, T).
struct Batch {
  const int32_t* tokens;     // input token ids
  const int32_t* targets;    // next-token ids; -1 = no loss at this position
  const int32_t* positions;  // position ids (restart at 0 at each document start)
  const int32_t* doc_start;  // index in the row of the first token of this token's document
};

namespace detail {
inline void add_inplace(float* y, const float* x, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) y[i] += x[i];
}
}  // namespace detail

template <DecoderModel M, class S>
class CpuModel {
 public:
  using Params = plan::ParamPlan<M>;
  using Acts = plan::ActivationPlan<M, S>;
  static constexpr int B = S::micro_batch, T = S::seq_len, L = M::layers;
  static constexpr int H = M::hidden, F = M::ffn, V = M::vocab, NH = M::heads, NKV = M::kv_heads, HD = M::head_dim;
  static constexpr int Q = M::q_dim, QKV = M::qkv_dim;
  static constexpr int R = B * T;
  static constexpr float eps = float(M::eps);
  static constexpr float attn_scale = 1.0f / std::sqrt(float(HD));  // scores = q.k / sqrt(head_dim)

  CpuModel() : arena_(Acts::total_floats), head_tmp_(M::qk_norm ? size_t(R) * HD : 0), rope_(T, rope_theta()) {}

  static constexpr size_t parameter_floats() { return Params::table.total; }

  // Forward and backward of one micro-batch. Gradients are ADDED to `grads` (gradient accumulation), scaled by
  // grad_scale (1 / the number of target tokens in the whole global batch). Returns the summed loss of the
  // micro-batch's targets (divide by their count for the mean).
  double forward_backward(const float* params, float* grads, const Batch& b, float grad_scale) {
    forward_layers(params, b);
    float* dx = at(Acts::kDx);
    float* dxn = at(Acts::kDxn);
    double loss = loss_head(params, b, grad_scale, dxn, grads + Params::table.lm_head);
    std::memset(dx, 0, sizeof(float) * size_t(R) * H);
    kernels::rmsnorm_backward<float, H>(at(Acts::kXOut), params + Params::table.final_norm, at(Acts::kRstdF), dxn, dx,
                                        grads + Params::table.final_norm, R);
    for (int l = L - 1; l >= 0; --l) backward_layer(l, params, grads, b);
    kernels::embedding_backward<float, H>(b.tokens, R, dx, grads + Params::table.embedding);
    return loss;
  }

  // Loss only (evaluation): summed over the micro-batch's targets.
  double forward_loss(const float* params, const Batch& b) {
    forward_layers(params, b);
    return loss_head(params, b, 0.f, nullptr, nullptr);
  }

  // Logits (R, V) of every position (for tests and sampling; fine for small R).
  void forward_logits(const float* params, const Batch& b, float* logits) {
    forward_layers(params, b);
    kernels::rmsnorm_forward<float, H>(at(Acts::kXOut), params + Params::table.final_norm, at(Acts::kXnF),
                                       at(Acts::kRstdF), R, eps);
    kernels::lm_head_cross_entropy<float, V, H>(at(Acts::kXnF), params + Params::table.lm_head, b.targets, R,
                                                float(M::z_loss), 0.f, nullptr, nullptr, at(Acts::kLoss),
                                                Acts::loss_chunk, logits);
  }

 private:
  static constexpr double rope_theta() { return M::positional::any_rope ? M::positional::theta : 10000.0; }

  float* at(int item) { return arena_.data() + Acts::layout.items[item].offset; }
  float* slab(int l, size_t field) { return arena_.data() + Acts::layout.slab_of(l) + field; }

  double loss_head(const float* params, const Batch& b, float grad_scale, float* dxn, float* dW) {
    const float* x_out = at(Acts::kXOut);
    kernels::rmsnorm_forward<float, H>(x_out, params + Params::table.final_norm, at(Acts::kXnF), at(Acts::kRstdF), R,
                                       eps);
    return kernels::lm_head_cross_entropy<float, V, H>(at(Acts::kXnF), params + Params::table.lm_head, b.targets, R,
                                                       float(M::z_loss), grad_scale, dxn, dW, at(Acts::kLoss),
                                                       Acts::loss_chunk);
  }

  void forward_layers(const float* p, const Batch& b) {
    constexpr auto& so = Acts::slab;
    kernels::embedding_forward<float, H>(b.tokens, R, p + Params::table.embedding, slab(0, so.x_in));
    for (int l = 0; l < L; ++l) {
      const plan::LayerOffsets& o = Params::table.layer[l];
      float* x_in = slab(l, so.x_in);
      float* xn1 = slab(l, so.xn1);
      float* qkv = slab(l, so.qkv);
      kernels::rmsnorm_forward<float, H>(x_in, p + o.input_norm, xn1, slab(l, so.rstd1), R, eps);
      if constexpr (M::qk_norm) {
        float* raw = slab(l, so.qkv_raw);
        kernels::linear_forward<float>(xn1, p + o.qkv, raw, R, H, QKV);
        float* rstd = slab(l, so.qk_rstd);
        for (int h = 0; h < NH + NKV; ++h) {  // q heads then k heads, each normalised over its HD values
          const float* w = p + (h < NH ? o.q_norm : o.k_norm);
          kernels::rmsnorm_forward_strided<float, HD>(raw + h * HD, QKV, w, qkv + h * HD, QKV, rstd + size_t(h) * R, R,
                                                      eps);
        }
#pragma omp parallel for schedule(static)
        for (int r = 0; r < R; ++r)  // v passes through unnormalised
          std::memcpy(qkv + size_t(r) * QKV + Q + NKV * HD, raw + size_t(r) * QKV + Q + NKV * HD, sizeof(float) * NKV * HD);
      } else {
        kernels::linear_forward<float>(xn1, p + o.qkv, qkv, R, H, QKV);
      }
      if (M::uses_rope(l)) kernels::rope_forward<float, NH + NKV, HD>(qkv, QKV, b.positions, R, rope_);
      float* att = slab(l, so.att);
      kernels::attention_forward<float, NH, NKV, HD>(qkv, b.doc_start, att, slab(l, so.lse), B, T, attn_scale);
      float* x_mid = slab(l, so.x_mid);
      kernels::linear_forward<float>(att, p + o.o, x_mid, R, Q, H);
      detail::add_inplace(x_mid, x_in, size_t(R) * H);
      float* xn2 = slab(l, so.xn2);
      kernels::rmsnorm_forward<float, H>(x_mid, p + o.post_norm, xn2, slab(l, so.rstd2), R, eps);
      float* gu = slab(l, so.gu);
      kernels::linear_forward<float>(xn2, p + o.gate_up, gu, R, H, 2 * F);
      float* act = slab(l, so.act);
      kernels::swiglu_forward<float, F>(gu, act, R);
      float* x_next = l + 1 < L ? slab(l + 1, so.x_in) : at(Acts::kXOut);
      kernels::linear_forward<float>(act, p + o.down, x_next, R, F, H);
      detail::add_inplace(x_next, x_mid, size_t(R) * H);
    }
  }

  // On entry dx holds dLoss/d(output of layer l); on exit dLoss/d(input of layer l).
  void backward_layer(int l, const float* p, float* g, const Batch& b) {
    constexpr auto& so = Acts::slab;
    const plan::LayerOffsets& o = Params::table.layer[l];
    float* dx = at(Acts::kDx);
    float* dxn = at(Acts::kDxn);
    // MLP half: x_next = x_mid + down(silu(gate(xn2)) * up(xn2))
    float* dact = arena_.data() + Acts::layout.mlp_scratch(l);        // (R, F)
    float* dgu = dact + plan::align_up(size_t(R) * F);                // (R, 2F)
    kernels::linear_backward<float>(slab(l, so.act), p + o.down, dx, dact, g + o.down, R, F, H, false);
    kernels::swiglu_backward<float, F>(slab(l, so.gu), dact, dgu, R);
    kernels::linear_backward<float>(slab(l, so.xn2), p + o.gate_up, dgu, dxn, g + o.gate_up, R, H, 2 * F, false);
    kernels::rmsnorm_backward<float, H>(slab(l, so.x_mid), p + o.post_norm, slab(l, so.rstd2), dxn, dx, g + o.post_norm, R);
    // Attention half: x_mid = x_in + o(attn(rope(qknorm(qkv(xn1)))))
    float* datt = arena_.data() + Acts::layout.attn_scratch(l);       // (R, Q)
    float* dqkv = datt + plan::align_up(size_t(R) * Q);               // (R, QKV)
    kernels::linear_backward<float>(slab(l, so.att), p + o.o, dx, datt, g + o.o, R, Q, H, false);
    kernels::attention_backward<float, NH, NKV, HD>(slab(l, so.qkv), b.doc_start, slab(l, so.att), slab(l, so.lse), datt,
                                                    dqkv, B, T, attn_scale);
    if (M::uses_rope(l)) kernels::rope_backward<float, NH + NKV, HD>(dqkv, QKV, b.positions, R, rope_);
    if constexpr (M::qk_norm) {
      const float* raw = slab(l, so.qkv_raw);
      const float* rstd = slab(l, so.qk_rstd);
      float* tmp = head_tmp_.data();  // (R, HD): the gradient at one head's norm input
      for (int h = 0; h < NH + NKV; ++h) {
        size_t w = h < NH ? o.q_norm : o.k_norm;
        kernels::rmsnorm_backward_strided<float, HD>(raw + h * HD, QKV, p + w, rstd + size_t(h) * R, dqkv + h * HD, QKV,
                                                     tmp, HD, g + w, R, false);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < R; ++r) std::memcpy(dqkv + size_t(r) * QKV + h * HD, tmp + size_t(r) * HD, sizeof(float) * HD);
      }
    }
    kernels::linear_backward<float>(slab(l, so.xn1), p + o.qkv, dqkv, dxn, g + o.qkv, R, H, QKV, false);
    kernels::rmsnorm_backward<float, H>(slab(l, so.x_in), p + o.input_norm, slab(l, so.rstd1), dxn, dx, g + o.input_norm, R);
  }

  Buffer<float> arena_;     // every activation of the step, at the plan's offsets
  Buffer<float> head_tmp_;  // QK-norm backward: one head's input gradient
  kernels::RopeTable<float, HD> rope_;
};

}  // namespace kiln::backend
