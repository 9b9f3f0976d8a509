// bench/bench_gpu.cu: Kiln's CUDA kernels on the GPU against the card's own ceilings, measured in the same run.
//   gpu/copy                a device-to-device copy of 2 GiB: the practical memory bandwidth (bytes read + written)
//   gpu/gemm_bf16/<n>       cuBLAS bf16 x bf16 -> fp32-accumulate GEMM, n x n x n: the practical tensor-core rate
//   gpu/<kernel>            each memory-bound kernel at SmolLM3-3B's shapes (d 2048, ffn 11008, vocab 128256,
//                           B x T = 4 x 4096 rows): GB/s of the bytes it must move, and that as a fraction of gpu/copy
//   gpu/attention_cudnn/... cuDNN's attention, causal, seq 4096, head_dim 128 (SmolLM3's 16 / 4 heads) and 64
//                           (32 / 8): TFLOP/s forward (bwd:0) and backward (bwd:1)
// Timing: CUDA events around each launch (manual time), after a warm-up; Google Benchmark repeats until stable.
// Without a CUDA device it prints "skipped: no CUDA device" and exits 0. Run by bench/gpu_check.sh.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/adamw.cuh"
#include "kernels/cross_entropy.cuh"
#include "kernels/embedding.cuh"
#include "kernels/rmsnorm.cuh"
#include "kernels/rope.cuh"
#include "kernels/swiglu.cuh"
#include "kiln/backend/cuda/runtime.hpp"
#if defined(KILN_HAVE_CUDNN)
#include <cmath>
#include <cstddef>

#include "kiln/backend/cuda/sdpa.hpp"
#include "kiln/plan/program.hpp"
#endif

namespace {

using kiln::bf16;
namespace kc = kiln::kernels::cuda;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "bench_gpu: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// A device buffer of n values, filled with small values (0 bytes: bf16 zero, fine for bandwidth).
template <class T>
struct Buf {
  T* p = nullptr;
  explicit Buf(size_t n) {
    check(cudaMalloc(&p, sizeof(T) * n), "cudaMalloc");
    check(cudaMemset(p, 0, sizeof(T) * n), "cudaMemset");
  }
  ~Buf() { cudaFree(p); }
};

// Times f() with CUDA events and reports bytes / time as GB/s (gpu_check.sh divides by gpu/copy's from the JSON).
template <class F>
void timed(benchmark::State& state, double bytes, F&& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  f();  // warm-up
  check(cudaDeviceSynchronize(), "warm-up");
  for (auto _ : state) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    state.SetIterationTime(double(ms) * 1e-3);
  }
  check(cudaGetLastError(), "kernel");
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetBytesProcessed(int64_t(bytes) * state.iterations());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
}

void copy(benchmark::State& state) {
  const size_t n = size_t(1) << 31;
  Buf<char> a(n), b(n);
  timed(state, 2.0 * double(n), [&] { cudaMemcpyAsync(b.p, a.p, n, cudaMemcpyDeviceToDevice); });
}
BENCHMARK(copy)->Name("gpu/copy")->UseManualTime()->Unit(benchmark::kMillisecond);

void gemm_bf16(benchmark::State& state) {
  const int n = int(state.range(0));
  Buf<bf16> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
    state.SkipWithError("cublasCreate failed");
    return;
  }
  const float one = 1.f, zero = 0.f;
  timed(state, 0, [&] {
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.p, CUDA_R_16BF, n, b.p, CUDA_R_16BF, n, &zero, c.p,
                 CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  });
  state.counters["TFLOP/s"] =
      benchmark::Counter(2.0 * n * n * double(n) * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  cublasDestroy(h);
}
BENCHMARK(gemm_bf16)->Name("gpu/gemm_bf16")->Arg(8192)->UseManualTime()->Unit(benchmark::kMillisecond);

constexpr int kRows = 4 * 4096, kD = 2048, kF = 11008, kVocab = 128256;

void swiglu_fwd(benchmark::State& state) {
  Buf<bf16> gu(size_t(kRows) * 2 * kF), h(size_t(kRows) * kF);
  timed(state, 3.0 * kRows * kF * 2, [&] { kc::swiglu_forward<bf16, kF>(gu.p, h.p, kRows, nullptr); });
}
BENCHMARK(swiglu_fwd)->Name("gpu/swiglu/forward")->UseManualTime()->Unit(benchmark::kMillisecond);

void swiglu_bwd(benchmark::State& state) {
  Buf<bf16> gu(size_t(kRows) * 2 * kF), dh(size_t(kRows) * kF);
  timed(state, 5.0 * kRows * kF * 2, [&] { kc::swiglu_backward<bf16, kF>(gu.p, dh.p, gu.p, kRows, nullptr); });
}
BENCHMARK(swiglu_bwd)->Name("gpu/swiglu/backward")->UseManualTime()->Unit(benchmark::kMillisecond);

void rmsnorm_fwd(benchmark::State& state) {
  Buf<bf16> x(size_t(kRows) * kD), r(size_t(kRows) * kD), w(kD), y(size_t(kRows) * kD);
  Buf<float> rstd(kRows);
  // x and r read, x and y written
  timed(state, 4.0 * kRows * kD * 2, [&] {
    kc::rmsnorm_forward<bf16, kD>(x.p, r.p, w.p, y.p, rstd.p, kRows, 1e-6f, nullptr);
  });
}
BENCHMARK(rmsnorm_fwd)->Name("gpu/rmsnorm_residual/forward")->UseManualTime()->Unit(benchmark::kMillisecond);

void rmsnorm_bwd(benchmark::State& state) {
  constexpr int kBlocks = 264;  // 2 per multiprocessor of an H100 / H200
  Buf<bf16> x(size_t(kRows) * kD), w(kD), dy(size_t(kRows) * kD), dx(size_t(kRows) * kD);
  Buf<float> rstd(kRows), dw(kD), partials(size_t(kBlocks) * kD);
  // x, dy, dx read, dx written
  timed(state, 4.0 * kRows * kD * 2, [&] {
    kc::rmsnorm_backward<bf16, kD>(x.p, w.p, rstd.p, dy.p, dx.p, dw.p, partials.p, kBlocks, kRows, true, nullptr);
  });
}
BENCHMARK(rmsnorm_bwd)->Name("gpu/rmsnorm/backward")->UseManualTime()->Unit(benchmark::kMillisecond);

void adamw(benchmark::State& state) {
  const size_t n = size_t(3) << 30;  // ~3.2e9 values: SmolLM3-3B's parameter count
  Buf<float> p(n), g(n), m(n), v(n), ns(2);
  Buf<bf16> pb(n);
  const std::vector<kiln::DecayRange> ranges{{0, n, true}};
  Buf<kiln::DecayRange> r(1);
  cudaMemcpy(r.p, ranges.data(), sizeof(kiln::DecayRange), cudaMemcpyHostToDevice);
  const kc::AdamWConstants k = kc::adamw_constants({1e-4, 0.9, 0.95, 1e-8, 0.1, 10, 1.0});
  Buf<kc::AdamWConstants> kd(1);
  cudaMemcpy(kd.p, &k, sizeof k, cudaMemcpyHostToDevice);
  // p, g, m, v read; p, m, v, pb written
  timed(state, double(n) * (16 + 12 + 2), [&] {
    kc::adamw_flat<bf16>(p.p, g.p, m.p, v.p, pb.p, n, r.p, 1, kd.p, nullptr, nullptr);
  });
}
BENCHMARK(adamw)->Name("gpu/adamw/3.2e9")->UseManualTime()->Unit(benchmark::kMillisecond);

void grad_norm(benchmark::State& state) {
  const size_t n = size_t(3) << 30;
  Buf<float> g(n), ns(2);
  Buf<double> part(kc::sum_squares_partials(n));
  timed(state, double(n) * 4, [&] { kc::grad_norm(g.p, n, part.p, 1.f, ns.p, nullptr); });
}
BENCHMARK(grad_norm)->Name("gpu/grad_norm/3.2e9")->UseManualTime()->Unit(benchmark::kMillisecond);

void xent(benchmark::State& state) {
  constexpr int kChunk = 1024;
  Buf<float> logits(size_t(kChunk) * kVocab), loss(kChunk), logp(kChunk), gs(1);
  Buf<bf16> dl(size_t(kChunk) * kVocab);
  Buf<int32_t> t(kChunk);
  // logits read twice (the second pass mostly from L2 at best), dl written: count one read and the write
  timed(state, double(kChunk) * kVocab * (4 + 2), [&] {
    kc::xent_rows<bf16, kVocab>(logits.p, t.p, kChunk, 1e-4f, gs.p, dl.p, loss.p, logp.p, nullptr);
  });
}
BENCHMARK(xent)->Name("gpu/xent_rows/1024x128256")->UseManualTime()->Unit(benchmark::kMillisecond);

void embedding_fwd(benchmark::State& state) {
  Buf<bf16> E(size_t(kVocab) * kD), out(size_t(kRows) * kD);
  Buf<int32_t> tok(kRows);
  timed(state, 2.0 * kRows * kD * 2, [&] { kc::embedding_forward<bf16, kD>(tok.p, kRows, E.p, out.p, nullptr); });
}
BENCHMARK(embedding_fwd)->Name("gpu/embedding/forward")->UseManualTime()->Unit(benchmark::kMillisecond);

void rope_fwd(benchmark::State& state) {
  constexpr int kHeads = 16 + 4, kHD = 128, kC = (16 + 2 * 4) * kHD, kMaxPos = 4096;
  Buf<bf16> qkv(size_t(kRows) * kC);
  Buf<int32_t> pos(kRows);
  Buf<float> c(size_t(kMaxPos) * kHD / 2), s(size_t(kMaxPos) * kHD / 2);
  timed(state, 2.0 * kRows * kHeads * kHD * 2, [&] {
    kc::rope_forward<bf16, kHeads, kHD>(qkv.p, kC, pos.p, kRows, c.p, s.p, nullptr);
  });
}
BENCHMARK(rope_fwd)->Name("gpu/rope/forward")->UseManualTime()->Unit(benchmark::kMillisecond);

#if defined(KILN_HAVE_CUDNN)
// cuDNN's attention as the CUDA backend runs it (backend/cuda/sdpa.hpp): B rows of T tokens, one document per row,
// causal; TFLOP/s of the causal products (forward 2 T^2 HD per head and row: QK^T and PV over the lower triangle;
// backward 2.5 times that: dV, dP, dQ, dK, with S recomputed)
template <int NH, int NKV, int HD>
void attention_cudnn(benchmark::State& state) {
  constexpr int B = 4, T = 4096, R = B * T, C = (NH + 2 * NKV) * HD;
  const bool fwd = state.range(0) == 0;
  // the plan's buffers: R tokens and the dummy slots' scratch row
  Buf<bf16> qkv(size_t(R + 1) * C), out(size_t(R + 1) * NH * HD), dout(size_t(R + 1) * NH * HD),
      dqkv(size_t(R + 1) * C);
  Buf<float> lse(size_t(R + 1) * NH);
  const size_t ws_bytes = kiln::plan::sdpa_workspace_bytes(NH, NKV, HD, R + 1);
  Buf<std::byte> ws(ws_bytes), meta(kiln::plan::sdpa_metadata_bytes(R + 1));
  std::vector<std::byte> host_meta(kiln::plan::sdpa_metadata_bytes(R + 1));  // pageable: read when the copy returns
  kiln::backend::cuda::Sdpa sdpa({NH, NKV, HD, R, T, 1.f / std::sqrt(float(HD))}, ws.p, ws_bytes, meta.p);
  std::vector<int32_t> ds(size_t(R), 0);
  sdpa.set_batch(ds.data(), B, T, host_meta.data(), nullptr);
  sdpa.forward(qkv.p, out.p, lse.p, nullptr);
  timed(state, 0, [&] {
    if (fwd) sdpa.forward(qkv.p, out.p, lse.p, nullptr);
    else sdpa.backward(qkv.p, out.p, lse.p, dout.p, dqkv.p, nullptr);
  });
  const double flops = 2.0 * double(T) * T * HD * NH * B * (fwd ? 1.0 : 2.5);
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(attention_cudnn<16, 4, 128>)->Name("gpu/attention_cudnn/hd128")->ArgName("bwd")->Arg(0)->Arg(1)
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(attention_cudnn<32, 8, 64>)->Name("gpu/attention_cudnn/hd64")->ArgName("bwd")->Arg(0)->Arg(1)
    ->UseManualTime()->Unit(benchmark::kMillisecond);
#endif

}  // namespace

int main(int argc, char** argv) {
  if (!kiln::backend::cuda::device_or_skip()) return 0;
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  std::printf("bench_gpu: %s, %d multiprocessors, %.1f GiB\n", p.name, p.multiProcessorCount,
              double(p.totalGlobalMem) / double(1u << 30));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
