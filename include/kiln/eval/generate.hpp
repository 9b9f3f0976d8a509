// kiln/eval/generate.hpp: autoregressive generation on the CPU with a KV cache, and the samplers.
//
// Generator<M, MaxT> runs the model one token at a time: each step computes only the new token's row and
// appends its keys and values (after QK-norm and RoPE) to the cache (L, MaxT, NKV, HD), so a continuation of n
// tokens costs n single-row passes instead of n full-window passes. The math is the training forward's
// (backend/cpu.hpp) restricted to one row; tests check the two agree position by position.
// Samplers: greedy (temperature 0), temperature, and top-p (nucleus: the smallest set of most likely tokens whose
// probability reaches p, renormalised).
#pragma once
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "kernels/attention_decode.hpp"
#include "kernels/cross_entropy.hpp"
#include "kernels/embedding.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rope.hpp"
#include "kernels/swiglu.hpp"
#include "kiln/core/error.hpp"
#include "kiln/core/memory.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/plan/params.hpp"

namespace kiln::eval {

template <DecoderModel M, int MaxT>
class Generator {
 public:
  using Params = plan::ParamPlan<M>;
  static constexpr int L = M::layers, H = M::hidden, F = M::ffn, V = M::vocab;
  static constexpr int NH = M::heads, NKV = M::kv_heads, HD = M::head_dim, Q = M::q_dim, QKV = M::qkv_dim;
  static constexpr int KV = M::kv_dim;
  static_assert(MaxT > 0, "Generator: MaxT (the longest context) must be positive");

  explicit Generator(const float* params)
      : p_(params),
        k_(size_t(L) * MaxT * KV),
        v_(size_t(L) * MaxT * KV),
        x_(H), xn_(H), qkv_(QKV), att_(Q), gu_(2 * F), act_(F), tmp_(H), logits_(V),
        rope_(MaxT, M::positional::any_rope ? M::positional::theta : 10000.0) {}

  void reset() { len_ = 0; }
  int length() const { return len_; }

  // Feeds one token at the next position; returns the logits (V) of the token after it.
  const float* step(int32_t token) {
    KILN_CHECK(len_ < MaxT, "generate: the context is full (", MaxT, " tokens); reset() or use a larger MaxT");
    KILN_CHECK(token >= 0 && token < V, "generate: token ", token, " is outside the vocabulary [0, ", V, ")");
    constexpr float eps = float(M::eps);
    const float scale = 1.0f / std::sqrt(float(HD));
    const int32_t pos = len_;
    float rstd;
    kernels::embedding_forward<float, H>(&token, 1, p_ + Params::table.embedding, x_.data());
    for (int l = 0; l < L; ++l) {
      const plan::LayerOffsets& o = Params::table.layer[l];
      kernels::rmsnorm_forward<float, H>(x_.data(), p_ + o.input_norm, xn_.data(), &rstd, 1, eps);
      kernels::linear_forward<float>(xn_.data(), p_ + o.qkv, qkv_.data(), 1, H, QKV);
      if constexpr (M::qk_norm)
        for (int h = 0; h < NH + NKV; ++h)
          kernels::rmsnorm_forward<float, HD>(qkv_.data() + h * HD, p_ + (h < NH ? o.q_norm : o.k_norm),
                                              qkv_.data() + h * HD, &rstd, 1, eps);
      if (M::uses_rope(l)) kernels::rope_forward<float, NH + NKV, HD>(qkv_.data(), QKV, &pos, 1, rope_);
      float* kc = k_.data() + size_t(l) * MaxT * KV;
      float* vc = v_.data() + size_t(l) * MaxT * KV;
      std::copy_n(qkv_.data() + Q, KV, kc + size_t(pos) * KV);
      std::copy_n(qkv_.data() + Q + KV, KV, vc + size_t(pos) * KV);
      kernels::attention_decode<float, NH, NKV, HD>(qkv_.data(), kc, vc, pos + 1, att_.data(), scale);
      kernels::linear_forward<float>(att_.data(), p_ + o.o, tmp_.data(), 1, Q, H);
      for (int i = 0; i < H; ++i) x_[i] += tmp_[i];
      kernels::rmsnorm_forward<float, H>(x_.data(), p_ + o.post_norm, xn_.data(), &rstd, 1, eps);
      kernels::linear_forward<float>(xn_.data(), p_ + o.gate_up, gu_.data(), 1, H, 2 * F);
      kernels::swiglu_forward<float, F>(gu_.data(), act_.data(), 1);
      kernels::linear_forward<float>(act_.data(), p_ + o.down, tmp_.data(), 1, F, H);
      for (int i = 0; i < H; ++i) x_[i] += tmp_[i];
    }
    kernels::rmsnorm_forward<float, H>(x_.data(), p_ + Params::table.final_norm, xn_.data(), &rstd, 1, eps);
    kernels::linear_forward<float>(xn_.data(), p_ + Params::table.lm_head, logits_.data(), 1, H, V);
    ++len_;
    return logits_.data();
  }

 private:
  const float* p_;
  Buffer<float> k_, v_;  // (L, MaxT, NKV, HD) each
  Buffer<float> x_, xn_, qkv_, att_, gu_, act_, tmp_, logits_;
  kernels::RopeTable<float, HD> rope_;
  int len_ = 0;
};

struct SamplingConfig {
  double temperature = 0.6;  // 0: greedy (SmolLM3's recommended sampling is 0.6 / top-p 0.95)
  double top_p = 0.95;       // 1: no nucleus truncation
  uint64_t seed = 0;
  int vocab_limit = 0;       // sample only ids below this (the tokenizer's size, when the model pads its vocabulary); 0: all
};

// Picks the next token from logits (V) by the sampler; rng advances once per sampled token.
inline int32_t pick(const float* logits, int V, const SamplingConfig& s, Rng& rng) {
  KILN_CHECK(s.temperature >= 0, "sampling: temperature must be >= 0, got ", s.temperature);
  KILN_CHECK(s.top_p > 0 && s.top_p <= 1, "sampling: top_p must be in (0, 1], got ", s.top_p);
  if (s.vocab_limit > 0 && s.vocab_limit < V) V = s.vocab_limit;
  if (s.temperature == 0) return int32_t(std::max_element(logits, logits + V) - logits);
  const float mx = *std::max_element(logits, logits + V);
  std::vector<double> p(static_cast<size_t>(V));
  double sum = 0;
  for (int v = 0; v < V; ++v) sum += p[v] = std::exp((double(logits[v]) - mx) / s.temperature);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  int keep = V;
  if (s.top_p < 1) {  // nucleus: most likely first (ties by id), cut once the mass reaches top_p
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
    double mass = 0;
    for (keep = 0; keep < V && mass < s.top_p * sum;) mass += p[order[keep++]];
    sum = mass;
  }
  double u = rng.uniform() * sum;
  for (int i = 0; i < keep; ++i)
    if ((u -= p[order[i]]) <= 0) return order[i];
  return order[keep - 1];
}

// Continues `prompt` by up to n tokens (stops after emitting stop_token, which is not returned).
template <DecoderModel M, int MaxT>
std::vector<int32_t> generate(const float* params, const std::vector<int32_t>& prompt, int n, const SamplingConfig& s,
                              int32_t stop_token = -1) {
  KILN_CHECK(!prompt.empty(), "generate: the prompt is empty");
  auto gen = std::make_unique<Generator<M, MaxT>>(params);
  Rng rng(s.seed);
  const int start = std::max(0, int(prompt.size()) + n - MaxT);  // keep the newest tokens when it cannot all fit
  KILN_CHECK(start < int(prompt.size()), "generate: ", n, " new tokens do not fit a ", MaxT, "-token context");
  const float* logits = nullptr;
  for (size_t i = size_t(start); i < prompt.size(); ++i) logits = gen->step(prompt[i]);
  std::vector<int32_t> out;
  for (int k = 0; k < n; ++k) {
    const int32_t next = pick(logits, M::vocab, s, rng);
    if (next == stop_token) break;
    out.push_back(next);
    if (k + 1 < n) logits = gen->step(next);
  }
  return out;
}

}  // namespace kiln::eval
