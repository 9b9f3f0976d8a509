// bench/bench_cpu.cpp: the CPU training step against the machine's own BLAS ceiling, measured in the same run.
//   sgemm/<M>x<K>x<N>     OpenBLAS on the step's dominant GEMM shapes: the practical peak of this machine
//   step/<recipe>         forward + backward + AdamW of one micro-batch: tokens/s and GFLOP/s
//                         (FLOPs = the plan's training FLOPs per token x tokens; rows are one causal document
//                         each, so the attention really does the FLOPs counted)
// Run: tools/kiln bench   (or build/bench/kiln_bench --benchmark_filter=...)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "../recipes/demo.hpp"
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

template <class R>
void step(benchmark::State& state) {
  using M = typename R::model;
  using S = typename R::stage;
  constexpr int B = S::micro_batch, T = S::seq_len;
  TrainConfig c;
  backend::cpu::State<M> st;
  st.init(0.02, 1);
  st.set_decay(decay_ranges<M>(c.no_decay));
  auto model = std::make_unique<backend::cpu::Executor<M, B, T>>();
  std::vector<int32_t> tok(size_t(B) * T), tgt(tok.size()), pos(tok.size()), start(tok.size());
  Rng rng(1);
  for (size_t i = 0; i < tok.size(); ++i) {
    tok[i] = int32_t(rng.below(M::vocab));
    tgt[i] = int32_t(rng.below(M::vocab));
    start[i] = 0;  // one document per row: the attention does exactly the causal FLOPs the plan counts
    pos[i] = int32_t(i % T);
  }
  const backend::Batch batch{tok.data(), tgt.data(), pos.data(), start.data()};
  long s = 0;
  for (auto _ : state) {
    st.zero_grad();
    benchmark::DoNotOptimize(model->forward_backward(st, batch, 1.0f / float(B * T)));
    st.adamw(adamw_step(c, 1e-4, st.grad_norm(), ++s));
  }
  const double tokens = double(B) * T;
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(tokens * plan::Flops<M, S>::train_per_token * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
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

BENCHMARK(step<recipes::demo>)->Name("step/demo")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3);
BENCHMARK(step<ref_model>)->Name("step/ref_model")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5);

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
