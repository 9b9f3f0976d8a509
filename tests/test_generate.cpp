// Generation with a KV cache: the decode program, one token at a time, gives the evaluation program's logits at
// every position (for GQA + RNoPE, and for QK-norm + untied heads), and the samplers do what they say.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "kiln/backend/cpu.hpp"
#include "kiln/eval/generate.hpp"

using namespace kiln;

namespace {
using Gqa = Decoder<Embedding<vocab<64>, hidden<32>, tied<true>>, layers<4>,
                    Attention<heads<4>, kv_heads<2>, RNoPE<2, 10000.0>>, SwiGLU<ffn<48>>, RMSNorm<1e-6>>;
using QkUntied = with<Gqa, qk_norm<true>, tied<false>, kv_heads<1>, RoPE<500.0>>;

template <class M>
void check_cache_matches_forward() {
  constexpr int T = 24;
  backend::cpu::State<M> state;
  state.init(0.3, 5);
  std::vector<int32_t> tok(T), tgt(T, -1), pos(T), start(T, 0);
  Rng rng(9);
  for (int i = 0; i < T; ++i) tok[i] = int32_t(rng.below(M::vocab)), pos[i] = i;
  std::vector<float> full(size_t(T) * M::vocab);
  auto model = std::make_unique<backend::cpu::Executor<M, 1, T>>();
  model->forward_logits(state, {tok.data(), tgt.data(), pos.data(), start.data()}, full.data());
  backend::cpu::Decoder<M, T> gen;
  double worst = 0, scale = 0;
  for (int i = 0; i < T; ++i) {
    const float* z = gen.step(state, tok[i]);
    for (int v = 0; v < M::vocab; ++v) {
      worst = std::max(worst, double(std::abs(z[v] - full[size_t(i) * M::vocab + v])));
      scale = std::max(scale, double(std::abs(full[size_t(i) * M::vocab + v])));
    }
  }
  CHECK(worst <= 1e-5 * scale);
  CHECK_THROWS_AS(gen.step(state, 0), Error);  // the context is full
}
}  // namespace

TEST_CASE("KV-cache generation equals the full forward at every position") {
  check_cache_matches_forward<Gqa>();
  check_cache_matches_forward<QkUntied>();
}

TEST_CASE("samplers: greedy, temperature, top-p") {
  const float logits[4] = {1.0f, 3.0f, 2.9f, -5.0f};
  Rng rng(1);
  CHECK(eval::pick(logits, 4, {0.0, 1.0, 0}, rng) == 1);    // greedy
  CHECK(eval::pick(logits, 4, {1.0, 1e-6, 0}, rng) == 1);   // a tiny nucleus holds only the argmax
  std::map<int, int> seen;
  for (int i = 0; i < 20000; ++i) seen[eval::pick(logits, 4, {1.0, 1.0, 0}, rng)]++;
  const double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.9) + std::exp(-5.0);
  CHECK(seen[1] / 20000.0 == doctest::Approx(std::exp(3.0) / z).epsilon(0.05));
  CHECK(seen[0] / 20000.0 == doctest::Approx(std::exp(1.0) / z).epsilon(0.15));
  seen.clear();
  for (int i = 0; i < 5000; ++i) seen[eval::pick(logits, 4, {1.0, 0.9, 0}, rng)]++;
  CHECK(seen.count(0) == 0);  // p(1) + p(2) ~ 0.94 >= 0.9: tokens 0 and 3 are cut
  CHECK(seen.count(3) == 0);
  CHECK_THROWS_AS(eval::pick(logits, 4, {1.0, 0.0, 0}, rng), Error);
}
