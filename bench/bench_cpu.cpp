// bench/bench_cpu.cpp: the CPU training step against the machine's own BLAS ceiling, measured in the same run.
//   sgemm/<M>x<K>x<N>     OpenBLAS on the step's dominant GEMM shapes: the practical peak of this machine
//   step/<recipe>         forward + backward + AdamW of one micro-batch: tokens/s and GFLOP/s
//                         (FLOPs = the plan's training FLOPs per token x tokens; rows are one causal document
//                         each, so the attention really does the FLOPs counted)
//   ratio/<recipe>        the step's GFLOP/s over sgemm's on the step's largest GEMM, timed in turns (best of each)
// Run: tools/kiln bench   (or build/bench/kiln_bench --benchmark_filter=...)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <cstdio>
#include <vector>

#include "../recipes/demo_pretrain.hpp"
#include "kernels/gemm.hpp"
#include "kiln/backend/blas.hpp"
#include "kiln/backend/cpu.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/optimizer.hpp"
#include "kernels/attention.hpp"
#include "kernels/attention_blocked.hpp"

using namespace kiln;

namespace {

// The model of the PyTorch comparison: SmolLM3-style, vocab 8192, d 512, 8 layers, 8 / 2 heads,
// ffn 1536, T 512, B 4 (tuned PyTorch 1.13 reached about 120 GFLOP/s on 2 cores of the reference machine).
struct ref_model {
  using model = Decoder<Embedding<vocab<8192>, hidden<512>, tied<true>>, layers<8>,
                        Attention<heads<8>, kv_heads<2>, RNoPE<4, 10000.0>>, SwiGLU<ffn<1536>>, RMSNorm<1e-6>>;
  using stage = Stage<micro_batch<4>, seq_len<512>>;
};

void sgemm(benchmark::State& state) {
  const int M = int(state.range(0)), K = int(state.range(1)), N = int(state.range(2));
  std::vector<float> a(size_t(M) * K, 0.5f), b(size_t(K) * N, 0.25f), c(size_t(M) * N);
  for (auto _ : state) {
    kernels::gemm<float>(false, true, M, N, K, 1.f, a.data(), K, b.data(), K, 0.f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
// (rows = B*T, in, out) of the largest GEMMs: the reference model's gate/up projection, and the demo's.
BENCHMARK(sgemm)->Args({2048, 512, 1536})->Args({2048, 512, 3072})->Args({2048, 192, 1024})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// One training step of recipe R on random tokens: forward + backward of one micro-batch, the norm and AdamW.
template <class R>
struct StepRun {
  using M = typename R::model;
  using S = typename R::stage;
  static constexpr int B = S::micro_batch, T = S::seq_len;
  static constexpr double flops = double(B) * T * plan::Flops<M, S>::train_per_token;
  TrainConfig c;
  backend::cpu::State<M> st;
  std::unique_ptr<backend::cpu::Executor<M, B, T>> model = std::make_unique<backend::cpu::Executor<M, B, T>>();
  std::vector<int32_t> tok = std::vector<int32_t>(size_t(B) * T), tgt = tok, pos = tok, start = tok;
  long s = 0;

  StepRun() {
    st.init(0.02, 1);
    st.set_decay(decay_ranges<M>(c.no_decay));
    Rng rng(1);
    for (size_t i = 0; i < tok.size(); ++i) {
      tok[i] = int32_t(rng.below(M::vocab));
      tgt[i] = int32_t(rng.below(M::vocab));
      start[i] = 0;  // one document per row: the attention does exactly the causal FLOPs the plan counts
      pos[i] = int32_t(i % T);
    }
  }
  void operator()() {
    const backend::Batch batch{tok.data(), tgt.data(), pos.data(), start.data()};
    st.zero_grad();
    benchmark::DoNotOptimize(model->forward_backward(st, batch, 1.0f / float(B * T)));
    st.adamw(adamw_step(c, 1e-4, st.grad_norm(), ++s));
  }
};

template <class R>
void step(benchmark::State& state) {
  StepRun<R> run;
  for (auto _ : state) run();
  const double tokens = double(run.B) * run.T;
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(run.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The step's ratio to sgemm on a shared machine: each iteration times one step and then sgemm on the step's largest
// GEMM shape (rows B x T, in d, out ffn) for about as long; the ratio is of the best of each over all iterations, so
// a neighbour's load in one moment lowers neither side alone (the separate step/ and sgemm/ cases alternate seconds
// apart and their ratio moved from 0.74 to 1.2 between rounds on one machine).
template <class R>
void step_vs_sgemm(benchmark::State& state) {
  using clock = std::chrono::steady_clock;
  using M = typename R::model;
  StepRun<R> run;
  const int gm = run.B * run.T, gk = M::hidden, gn = M::ffn;
  std::vector<float> a(size_t(gm) * gk, 0.5f), b(size_t(gn) * gk, 0.25f), c(size_t(gm) * gn);
  const double gemm_flops = 2.0 * gm * gn * gk;
  double best_step = 1e30, best_gemm = 1e30;
  for (auto _ : state) {
    const auto t0 = clock::now();
    run();
    const double ts = std::chrono::duration<double>(clock::now() - t0).count();
    best_step = std::min(best_step, ts);
    for (double spent = 0; spent < ts;) {
      const auto g0 = clock::now();
      kernels::gemm<float>(false, true, gm, gn, gk, 1.f, a.data(), gk, b.data(), gk, 0.f, c.data(), gn);
      benchmark::DoNotOptimize(c.data());
      const double tg = std::chrono::duration<double>(clock::now() - g0).count();
      best_gemm = std::min(best_gemm, tg);
      spent += tg;
    }
    state.SetIterationTime(ts);
  }
  state.counters["step_GFLOP/s"] = run.flops / best_step * 1e-9;
  state.counters["sgemm_GFLOP/s"] = gemm_flops / best_gemm * 1e-9;
  state.counters["ratio"] = (run.flops / best_step) / (gemm_flops / best_gemm);
}

// The attention kernels alone at the reference model's shape (B 4, T 512, 8 / 2 heads, head_dim 64, one causal
// document per row): the row kernels (dot products; the reference) and the blocked ones (64 query rows per block,
// products through the GEMM; what the CPU backend runs), forward, and forward + backward. FLOPs as the plan counts
// them (fwd 2 Q (T+1) per token per layer; backward twice that).
template <bool Blocked, bool Backward>
void attention(benchmark::State& state) {
  constexpr int B = 4, T = 512, NH = 8, NKV = 2, HD = 64, C = (NH + 2 * NKV) * HD, QB = 64;
  std::vector<float> qkv(size_t(B) * T * C), out(size_t(B) * T * NH * HD), lse(size_t(B) * NH * T),
      scores(size_t(B) * NH * QB * T), dscores(size_t(B) * NKV * 2 * QB * T), dout(out.size()), dqkv(qkv.size());
  for (size_t i = 0; i < qkv.size(); ++i) qkv[i] = float(uniform01(7, 0, i) - 0.5);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = float(uniform01(7, 1, i) - 0.5);
  std::vector<int32_t> ds(size_t(B) * T, 0);
  const float scale = 1.0f / std::sqrt(float(HD));
  for (auto _ : state) {
    if constexpr (Blocked) {
      kernels::attention_forward_blocked<float, NH, NKV, HD, QB>(qkv.data(), ds.data(), out.data(), lse.data(),
                                                                 scores.data(), B, T, scale);
      if (Backward)
        kernels::attention_backward_blocked<float, NH, NKV, HD, QB>(qkv.data(), ds.data(), out.data(), lse.data(),
                                                                    dout.data(), dqkv.data(), dscores.data(), B, T, scale);
    } else {
      kernels::attention_forward<float, float, NH, NKV, HD>(qkv.data(), ds.data(), out.data(), lse.data(),
                                                            scores.data(), B, T, scale);
      if (Backward)
        kernels::attention_backward<float, float, NH, NKV, HD>(qkv.data(), ds.data(), out.data(), lse.data(),
                                                               dout.data(), dqkv.data(), B, T, scale);
    }
    benchmark::DoNotOptimize(dqkv.data());
  }
  const double fwd = 2.0 * B * T * NH * HD * (T + 1.0);
  state.counters["GFLOP/s"] = benchmark::Counter((Backward ? 3 : 1) * fwd * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(attention<false, false>)->Name("attention/rows/forward")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(attention<false, true>)->Name("attention/rows/forward_backward")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(attention<true, false>)->Name("attention/blocked/forward")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(attention<true, true>)->Name("attention/blocked/forward_backward")->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK(step<recipes::demo_pretrain>)->Name("step/demo")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3);
BENCHMARK(step<ref_model>)->Name("step/ref_model")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5);
BENCHMARK(step_vs_sgemm<recipes::demo_pretrain>)->Name("ratio/demo")->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(20);
BENCHMARK(step_vs_sgemm<ref_model>)->Name("ratio/ref_model")->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(8);

}  // namespace

int main(int argc, char** argv) {
  const BlasInfo blas = select_blas_kernels(argv);
  std::printf("kiln bench: %d threads, BLAS %s, kernels %s (%s)\n", omp_get_max_threads(), blas.config.c_str(),
              blas.core.c_str(), blas.how.c_str());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
