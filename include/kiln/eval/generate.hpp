// kiln/eval/generate.hpp: autoregressive generation with a KV cache, and the samplers.
//
// A backend's decoder<M, MaxT> runs the plan's decode program (kiln/plan/program.hpp, Mode::decode): each step
// computes only the new token's row and appends its keys and values (after QK-norm and RoPE) to the cache
// (L, MaxT, NKV, HD), so a continuation of n tokens costs n single-row passes instead of n full-window passes.
// The prompt is fed the same way, token by token (no batched prefill program yet). tests/test_generate.cpp checks
// the decode program against the training forward position by position.
// Samplers: greedy (temperature 0), temperature, and top-p (nucleus: the smallest set of most likely tokens whose
// probability reaches p, renormalised).
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/model/model.hpp"

namespace kiln::eval {

struct SamplingConfig {
  double temperature = 0.6;  // 0: greedy (SmolLM3's recommended sampling is 0.6 / top-p 0.95)
  double top_p = 0.95;       // 1: no nucleus truncation
  uint64_t seed = 0;
  int vocab_limit = 0;       // sample only ids below this (the tokenizer's size, when the model pads its vocabulary); 0: all
  std::function<void(int32_t)> on_token = {};  // called with each new token as it is sampled (streaming; not the stop)
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

// Continues `prompt` by up to n tokens (stops after emitting stop_token, which is not returned). Decoder is a
// backend's decoder<M, MaxT> and State its state<M>; `dropped`, when given, receives how many of the oldest prompt
// tokens did not fit the context beside the n new ones.
template <DecoderModel M, int MaxT, class Decoder, class State>
std::vector<int32_t> generate(const State& state, const std::vector<int32_t>& prompt, int n, const SamplingConfig& s,
                              int32_t stop_token = -1, int* dropped = nullptr) {
  KILN_CHECK(!prompt.empty(), "generate: the prompt is empty");
  KILN_CHECK(n >= 0, "generate: the number of new tokens must be >= 0, got ", n);
  auto gen = std::make_unique<Decoder>();
  Rng rng(s.seed);
  const int start = std::max(0, int(prompt.size()) + n - MaxT);  // keep the newest tokens when it cannot all fit
  KILN_CHECK(start < int(prompt.size()), "generate: ", n, " new tokens do not fit a ", MaxT, "-token context");
  if (dropped) *dropped = start;
  const float* logits = nullptr;
  for (size_t i = size_t(start); i < prompt.size(); ++i) logits = gen->step(state, prompt[i]);
  std::vector<int32_t> out;
  for (int k = 0; k < n; ++k) {
    const int32_t next = pick(logits, M::vocab, s, rng);
    if (next == stop_token) break;
    out.push_back(next);
    if (s.on_token) s.on_token(next);
    if (k + 1 < n) logits = gen->step(state, next);
  }
  return out;
}

}  // namespace kiln::eval
