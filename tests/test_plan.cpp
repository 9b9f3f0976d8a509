// The model DSL and the static plan: with<> ablations, the SmolLM3 NoPE rule, parameter counts of the shipped
// recipes, the flat layout, the op program (ops per layer, FLOPs, printing), and that the arena read off the
// program never lets two live buffers share bytes and is no larger than the hand-written timeline's was.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <set>
#include <string>

#include "../recipes/ablation_1b.hpp"
#include "../recipes/ablation_1b_mqa.hpp"
#include "../recipes/demo_pretrain.hpp"
#include "../recipes/smollm3_3b.hpp"
#include "kiln/backend/cpu_names.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/plan/hardware.hpp"
#include "kiln/plan/print.hpp"
#include "kiln/plan/program.hpp"
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

using DemoQkUntied = with<recipes::demo_pretrain::model, qk_norm<true>, tied<false>>;
using Demo = recipes::demo_pretrain::model;

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

// Two buffers live at the same op never share bytes, except an in-place output and the input it overwrites.
template <class P>
void check_no_live_overlap() {
  const auto& d = P::data;
  for (int i = 0; i < d.n_bufs; ++i) {
    const auto& a = d.bufs[size_t(i)];
    CHECK(a.offset % plan::kArenaAlign == 0);
    CHECK(a.offset + a.bytes() <= d.arena_bytes);
    for (int j = i + 1; j < d.n_bufs; ++j) {
      const auto& b = d.bufs[size_t(j)];
      const bool live_together = !(a.last < b.first || b.last < a.first);
      const bool share = a.offset < b.offset + b.bytes() && b.offset < a.offset + a.bytes();
      const bool in_place = a.alias == j || b.alias == i;
      if (live_together && share && !in_place)
        FAIL("buffers " << a.name.view() << " and " << b.name.view() << " are live together and overlap");
    }
  }
  CHECK(d.arena_bytes < d.unshared_bytes);  // reuse happened
}

TEST_CASE("activation arena read off the program: live buffers never share bytes, and dead ones are reused") {
  check_no_live_overlap<plan::TrainProgram<Smol, 3, 4096>>();
  check_no_live_overlap<plan::TrainProgram<Demo, 8, 256>>();
  check_no_live_overlap<plan::EvalProgram<Demo, 8, 256>>();
  check_no_live_overlap<plan::DecodeProgram<Demo, 256>>();
  check_no_live_overlap<plan::TrainProgram<DemoQkUntied, 1, 64>>();
  check_no_live_overlap<plan::TrainProgram<DemoQkUntied, 2, 32, plan::Bf16Mixed>>();
  check_no_live_overlap<plan::TrainProgram<Demo, 8, 256, plan::Bf16Mixed>>();
  check_no_live_overlap<plan::EvalProgram<Demo, 8, 256, plan::Bf16Mixed>>();
}

// The arena before the op program existed (kiln/plan/activations.hpp of 2026-11-30: slabs on a hand-written
// timeline, fp32) held every activation but the loss's per-row buffer; the program's arena holds that too (per-token
// loss and log-probability) and every kernel's scratch, and must still be no larger.
template <class R>
void check_not_larger(size_t before, const char* name) {
  using St = phase_stage<R, 0>;  // the first phase (SmolLM3's 4k pretraining)
  using P = plan::TrainProgram<typename R::model, St::micro_batch, St::seq_len>;
  MESSAGE(std::string(name) << ": arena " << P::arena_bytes << " bytes from the program, " << before << " before ("
               << 100.0 * (double(before) - double(P::arena_bytes)) / double(before) << "% smaller)");
  CHECK(P::arena_bytes <= before);
}

TEST_CASE("the arena derived from the program is no larger than the hand-written timeline's") {
  check_not_larger<recipes::demo_pretrain>(212'213'760, "demo");
  check_not_larger<recipes::ablation_1b>(41'643'147'264, "ablation_1b");
  check_not_larger<recipes::smollm3_3b>(83'846'627'328, "smollm3_3b");
  // bf16 storage halves the activations (the same CUDA kernels' scratch in both); the fp32 statistics and the fp32
  // logits tile do not shrink
  using F32 = plan::TrainProgram<Smol, 3, 4096, plan::CudaFp32>;
  using Gpu = plan::TrainProgram<Smol, 3, 4096, plan::Bf16Mixed>;
  CHECK(Gpu::arena_bytes < F32::arena_bytes * 0.51);
  CHECK(Gpu::arena_bytes > F32::arena_bytes * 0.49);
  // the CUDA kernels' scratch: no score tiles; D = dO . out per layer; a bf16 dlogits tile; the rows by token
  const auto& g = Gpu::data;
  for (int i = 0; i < g.n_bufs; ++i) CHECK(g.bufs[size_t(i)].name.view().find("scores") == std::string_view::npos);
  CHECK(g.embedding_grad >= 0);
  CHECK(g.bufs[size_t(g.embedding_grad)].elements() == 3 * 3 * 4096 + 1);
}

template <class M, int B, int T>
void check_program_shape() {
  using P = plan::TrainProgram<M, B, T>;
  using plan::OpKind, plan::Pass;
  int rope_layers = 0;
  for (int l = 0; l < M::layers; ++l) rope_layers += M::uses_rope(l);
  CHECK(P::count(OpKind::rope, Pass::forward) == rope_layers);   // none on NoPE layers
  CHECK(P::count(OpKind::rope, Pass::backward) == rope_layers);
  CHECK(P::count(OpKind::head_rmsnorm, Pass::forward) == (M::qk_norm ? M::layers : 0));
  CHECK(P::count(OpKind::gemm, Pass::forward) == 4 * M::layers);  // qkv, o, gate_up, down
  CHECK(P::count(OpKind::gemm, Pass::backward) == 4 * M::layers);
  CHECK(P::count(OpKind::attention, Pass::forward) == M::layers);
  CHECK(P::count(OpKind::rmsnorm, Pass::backward) == 2 * M::layers + 1);
  CHECK(P::count(OpKind::lm_head_loss, Pass::loss) == 1);
  // the program's FLOPs are the plan's: 6N + attention per token, times the rows
  CHECK(P::flops() == doctest::Approx(plan::Flops<M, Stage<micro_batch<B>, seq_len<T>>>::train_per_token * B * T)
                          .epsilon(1e-12));
  using E = plan::EvalProgram<M, B, T>;
  CHECK(E::flops() * 3 == doctest::Approx(P::flops()).epsilon(1e-12));
  CHECK(E::arena_bytes < P::arena_bytes);  // nothing kept for a backward: layers reuse each other's bytes
}

TEST_CASE("the op program: ops per layer, RoPE only on RoPE layers, FLOPs equal the plan's") {
  check_program_shape<Demo, 8, 256>();
  check_program_shape<Smol, 3, 4096>();
  check_program_shape<DemoQkUntied, 2, 32>();
}

TEST_CASE("the printed program of the demo recipe: one line per op, per layer as the program has them") {
  using P = plan::TrainProgram<Demo, recipes::demo_pretrain::stage::micro_batch, recipes::demo_pretrain::stage::seq_len>;
  std::ostringstream os;
  plan::print_program<P>(os, backend::cpu::kernel_name<Demo>);
  const std::string text = os.str();
  std::istringstream in(text);
  std::string line;
  std::map<std::string, int> per_layer;  // layer column -> op lines
  int op_lines = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string idx, pass, layer, kind;
    if (!(f >> idx >> pass >> layer >> kind) || idx.find_first_not_of("0123456789") != std::string::npos) continue;
    ++op_lines;
    ++per_layer[layer];
  }
  CHECK(op_lines == P::data.n_ops);
  // A RoPE layer: 11 forward ops (norm, qkv, rope, attention, o, add, norm, gate_up, swiglu, down, add) and 9
  // backward (down, swiglu, gate_up, norm, o, attention, rope, qkv, norm); a NoPE layer (3 and 7 in the demo) has
  // no rope op in either direction.
  for (int l = 0; l < Demo::layers; ++l) CHECK(per_layer[std::to_string(l)] == (Demo::uses_rope(l) ? 11 + 9 : 10 + 8));
  CHECK(per_layer["-"] == 5);  // embedding, final norm, loss, final norm backward, embedding backward
  char total[64];
  std::snprintf(total, sizeof total, "Totals: %.4g FLOP", plan::Flops<Demo, recipes::demo_pretrain::stage>::train_per_token * 8 * 256);
  CHECK(text.find(total) != std::string::npos);
  CHECK(text.find("cblas_sgemm") != std::string::npos);
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

TEST_CASE("a YaRN positional policy prints its scaling and keeps the parameter table") {
  using Yarn = with<Smol, YaRN<RNoPE<4, 5'000'000.0>, 2.0, 65536>>;
  static_assert(plan::same_parameter_table<Smol, Yarn>());
  std::ostringstream os;
  plan::print_model<Yarn, 1, 1024>(os, {}, false);
  CHECK(os.str().find("positions: YaRN (x2 over 65536 positions, beta 32 / 1, attention factor 1.0693) theta 5e+06; "
                      "NoPE layers: 3,7,11") != std::string::npos);
}

TEST_CASE("hardware: the playbook's GPU count for SmolLM3 from its own assumptions") {
  // 6 N D = 6 x 3e9 x 11e12 = 1.98e23 FLOP at 30% MFU of a measured 720 TFLOP/s for 4 weeks: ~379 GPUs (384 taken)
  const double f = plan::six_nd(3e9, 11e12);
  CHECK(f == doctest::Approx(1.98e23));
  const plan::Throughput t{720, 0.3};
  CHECK(plan::gpus_for(f, t, 28) == doctest::Approx(378.9).epsilon(1e-3));
  CHECK(plan::days_for(f, t, 378.9) == doctest::Approx(28).epsilon(1e-3));
  REQUIRE(plan::find_gpu("h100"));
  CHECK(plan::find_gpu("h100")->bf16_tflops == 989.4);
  CHECK(plan::find_gpu("v100") == nullptr);
  CHECK(plan::gpu_keys() == "h100, h200, a100");
}
