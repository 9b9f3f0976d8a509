// bench/bench_gpu_step.cu: whole training steps of the shipped recipes on one GPU, the CUDA backend as the trainer
// runs it (trainer.hpp): begin_step (zero the gradients), one micro-batch's forward and backward (the recipe's first
// phase shape), end_step (the gradient norm, the guard's decision and AdamW on the device), and the previous step's
// record read while this one runs. The time of a step is an eighth of the span 8 steps in a row take on the state's
// stream (CUDA events), so any wait of the device for the host counts. The batch is synthetic: token ids drawn uniformly,
// documents of 2048 tokens packed into the rows (the speed does not depend on the ids).
//   gpu/step/ablation_1b   recipes/ablation_1b.hpp (the issue's goal: >= 60,000 tokens/s on an H100 at seq 4096)
//   gpu/step/smollm3_3b    recipes/smollm3_3b.hpp at its micro-batch (the playbook: ~14,000 tokens/s/GPU, ~30% MFU)
// Counters: tokens/s; TFLOP/s of the plan's training FLOPs (matrix products and causal attention, the MFU
// convention of plan/flops.hpp); MFU against 989 TFLOP/s, the H100 / H200 dense bf16 peak (gpu_check.sh also divides
// by the cuBLAS rate bench_gpu measured in the same run). A recipe whose plan does not fit the free memory is
// skipped with both numbers. Without a CUDA device it prints "skipped: no CUDA device" and exits 0.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kiln/backend/cuda.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/recipe.hpp"
#include "recipes/ablation_1b.hpp"
#include "recipes/smollm3_3b.hpp"

namespace {

constexpr double kPeakTflops = 989.0;  // H100 / H200 SXM, dense bf16

template <class Recipe>
void step(benchmark::State& state) {
  using M = kiln::phase_model<Recipe, 0>;
  using S = kiln::phase_stage<Recipe, 0>;
  constexpr int B = S::micro_batch, T = S::seq_len, R = B * T, doc = T < 2048 ? T : 2048;
  using Mem = kiln::plan::MemoryPlan<M, B, T, kiln::plan::Bf16Mixed>;
  size_t free = 0, total = 0;
  cudaMemGetInfo(&free, &total);
  if (Mem::total > free) {
    char why[160];
    std::snprintf(why, sizeof why, "the plan needs %.1f GiB; %.1f GiB are free", double(Mem::total) / (1u << 30),
                  double(free) / (1u << 30));
    state.SkipWithError(why);
    return;
  }
  kiln::backend::cuda::State<M> st;
  st.init(0.02, 1);
  kiln::backend::cuda::Executor<M, B, T> ex;
  std::vector<int32_t> tokens(R), targets(R), positions(R), doc_start(R);
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < R; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    tokens[size_t(i)] = int32_t(x % uint64_t(M::vocab));
    const int t = i % T;
    positions[size_t(i)] = t % doc;
    doc_start[size_t(i)] = t / doc * doc;
  }
  for (int i = 0; i < R; ++i) targets[size_t(i)] = (i + 1) % T ? tokens[size_t(i + 1)] : -1;
  const kiln::backend::Batch batch{tokens.data(), targets.data(), positions.data(), doc_start.data()};
  const std::vector<double> ring(50, 0.0);
  st.set_step_state(kiln::GuardCounters{6.0, 50, 0, 0}, ring.data(), 0);
  const kiln::StepArgs args{3e-4, 0.9, 0.95, 1e-8, 0.1, 1.0, double(R)};
  bool pending = false;
  auto one = [&] {
    st.begin_step();
    ex.accumulate(st, batch, 1.f / float(R));
    st.end_step(args);
    if (pending) benchmark::DoNotOptimize(st.step_record());  // the previous step's, as the trainer reads it
    pending = true;
  };
  one();  // warm-up: cuBLASLt's heuristics, cuDNN's graphs, then the captures
  one();
  cudaDeviceSynchronize();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  constexpr int kSteps = 8;  // per iteration, back to back: the device never waits on the host between them
  for (auto _ : state) {
    cudaEventRecord(a, st.stream());
    for (int k = 0; k < kSteps; ++k) one();
    cudaEventRecord(b, st.stream());
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    state.SetIterationTime(double(ms) * 1e-3 / kSteps);
  }
  st.step_record();
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  const double flops = kiln::plan::TrainProgram<M, B, T, kiln::plan::Bf16Mixed>::flops();
  state.counters["tokens/s"] = benchmark::Counter(double(R), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["MFU"] = benchmark::Counter(flops * 1e-12 / kPeakTflops, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(B) + "x" + std::to_string(T) + (ex.cudnn_attention() ? ", cuDNN attention"
                                                                                       : ", Kiln's attention"));
}
BENCHMARK(step<recipes::ablation_1b>)->Name("gpu/step/ablation_1b")->UseManualTime()->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);
BENCHMARK(step<recipes::smollm3_3b>)->Name("gpu/step/smollm3_3b")->UseManualTime()->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

}  // namespace

int main(int argc, char** argv) {
  if (!kiln::backend::cuda::device_or_skip()) return 0;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
