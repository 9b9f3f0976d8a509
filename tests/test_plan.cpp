// The model DSL and the static plan: with<> ablations, the SmolLM3 NoPE rule, parameter counts of the shipped
// recipes, the flat layout, and that the activation arena never lets two live buffers share bytes.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <string>

#include "../recipes/ablation_1b.hpp"
#include "../recipes/ablation_1b_mqa.hpp"
#include "../recipes/demo.hpp"
#include "../recipes/smollm3_3b.hpp"
#include "kiln/plan/activations.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/schedule.hpp"

using namespace kiln;

using Smol = recipes::smollm3_3b::model;
using Abl = recipes::ablation_1b::model;

// with<> reaches into components, adds defaults, and swaps whole components (compile-time facts).
static_assert(std::is_same_v<recipes::ablation_1b_mqa::model, with<Abl, kv_heads<1>>>);
static_assert(recipes::ablation_1b_mqa::model::kv_heads == 1 && recipes::ablation_1b_mqa::model::heads == 32);
static_assert(std::is_same_v<with<with<Abl, kv_heads<1>>, kv_heads<8>>, Abl>);
static_assert(with<Abl, NoPE>::uses_rope(0) == false && Abl::uses_rope(0));
static_assert(with<Abl, qk_norm<true>>::qk_norm && !Abl::qk_norm);
static_assert(with<Abl, z_loss<1e-4>>::z_loss == 1e-4);
static_assert(with<Abl, SwiGLU<ffn<4096>>>::ffn == 4096);
static_assert(with<Abl, tied<false>>::tied == false);
static_assert(with<Abl, layers<8>, hidden<1024>>::hidden == 1024 && with<Abl, layers<8>, hidden<1024>>::layers == 8);

TEST_CASE("SmolLM3's NoPE rule: layer i uses RoPE iff (i+1) % 4 != 0") {
  std::string nope;
  for (int i = 0; i < Smol::layers; ++i) {
    CHECK(Smol::uses_rope(i) == ((i + 1) % 4 != 0));  // HF: no_rope_layers[i] = int((i+1) % interval != 0)
    if (!Smol::uses_rope(i)) nope += std::to_string(i) + ",";
  }
  CHECK(nope == "3,7,11,15,19,23,27,31,35,");
}

TEST_CASE("parameter counts of the shipped recipes match the published models") {
  CHECK(plan::ParamPlan<Smol>::parameters == 3'075'098'624ull);
  CHECK(plan::ParamPlan<Abl>::parameters == 1'235'814'400ull);
  // SmolLM3: embeddings are about 8.5% of the parameters; bf16 KV cache 73,728 bytes per token.
  const double share = double(plan::ParamPlan<Smol>::embedding_parameters) / double(plan::ParamPlan<Smol>::parameters);
  CHECK(share == doctest::Approx(0.085).epsilon(0.01));
  CHECK(2 /*k,v*/ * Smol::layers * Smol::kv_dim * 2 /*bytes*/ == 73728);
  // MQA changes only k and v: 2 * 16 layers * (8 - 1) * 64 * 2048 parameters fewer.
  CHECK(plan::ParamPlan<Abl>::parameters - plan::ParamPlan<recipes::ablation_1b_mqa::model>::parameters ==
        2ull * 16 * 7 * 64 * 2048);
}

using DemoQkUntied = with<recipes::demo::model, qk_norm<true>, tied<false>>;
using Demo = recipes::demo::model;

TEST_CASE_TEMPLATE("the flat layout: HF names, no overlaps, fused groups contiguous", M, Smol, Demo, DemoQkUntied) {
  using P = plan::ParamPlan<M>;
  std::set<std::string> names;
  size_t end = 0;
  for (const auto& e : P::table.entries) {
    CHECK(names.insert(std::string(e.name.view())).second);
    CHECK(e.offset >= end);  // in order, never overlapping
    end = e.offset + e.count();
  }
  CHECK(end <= P::table.total);
  for (int l = 0; l < M::layers; ++l) {
    const auto& o = P::table.layer[l];
    // q, k, v form one (qkv_dim, H) matrix; gate and up one (2F, H) matrix
    CHECK(o.o >= o.qkv + size_t(M::qkv_dim) * M::hidden);
    CHECK(o.down >= o.gate_up + 2 * size_t(M::ffn) * M::hidden);
    CHECK(o.qkv % plan::kAlignFloats == 0);
  }
  CHECK(names.count("model.embed_tokens.weight") == 1);
  CHECK(names.count("model.norm.weight") == 1);
  CHECK(names.count("lm_head.weight") == (M::tied ? 0 : 1));
  CHECK(names.count("model.layers.0.self_attn.q_norm.weight") == (M::qk_norm ? 1 : 0));
}

template <class A>
void check_no_live_overlap() {
  const auto& items = A::layout.items;
  for (size_t i = 0; i < items.size(); ++i) {
    CHECK(items[i].offset + items[i].size <= A::total_floats);
    for (size_t j = i + 1; j < items.size(); ++j) {
      const bool live_together = !(items[i].end < items[j].begin || items[j].end < items[i].begin);
      const bool share_bytes =
          items[i].offset < items[j].offset + items[j].size && items[j].offset < items[i].offset + items[i].size;
      if (live_together && share_bytes) FAIL("buffers " << i << " and " << j << " are live together and overlap");
    }
  }
  CHECK(A::total_floats < A::unshared_floats);  // reuse happened
}

TEST_CASE("activation arena: live buffers never share bytes, and dead ones are reused") {
  check_no_live_overlap<plan::ActivationPlan<Smol, recipes::smollm3_3b::stage>>();
  check_no_live_overlap<plan::ActivationPlan<recipes::demo::model, recipes::demo::stage>>();
  using Small = Stage<micro_batch<1>, seq_len<64>>;
  check_no_live_overlap<plan::ActivationPlan<DemoQkUntied, Small>>();
}

TEST_CASE("FLOPs per token: 6N plus attention") {
  using F = plan::Flops<Abl, recipes::ablation_1b::stage>;
  // 6 * (non-embedding matmul params + LM head) + attention; the 1B baseline is about 9.2 GFLOP per token.
  const double n = double(plan::ParamPlan<Abl>::parameters) - 2048.0 * (16 * 2 + 1);  // norms do no matmul
  CHECK(F::train_per_token == doctest::Approx(6 * n + 3 * 16 * 2.0 * 2048 * 4097).epsilon(1e-9));
}

TEST_CASE("learning-rate schedules") {
  TrainConfig c;
  c.lr = 1.0, c.min_lr = 0.1, c.warmup = 10, c.steps = 110;
  CHECK(learning_rate(c, 0) == doctest::Approx(0.1));
  CHECK(learning_rate(c, 9) == doctest::Approx(1.0));
  c.schedule = Schedule::cosine;
  CHECK(learning_rate(c, 10) == doctest::Approx(1.0));
  CHECK(learning_rate(c, 60) == doctest::Approx(0.55));
  CHECK(learning_rate(c, 110) == doctest::Approx(0.1));
  c.schedule = Schedule::linear;
  CHECK(learning_rate(c, 60) == doctest::Approx(0.55));
  c.schedule = Schedule::wsd;
  c.decay_fraction = 0.1;  // the last 11 steps decay
  CHECK(learning_rate(c, 98) == doctest::Approx(1.0));
  CHECK(learning_rate(c, 99) == doctest::Approx(1.0 - 0.9 / 11));
  CHECK(learning_rate(c, 109) == doctest::Approx(0.1));
  c.schedule = Schedule::constant;
  CHECK(learning_rate(c, 100) == doctest::Approx(1.0));
}
