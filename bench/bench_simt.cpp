// bench/bench_simt.cpp: the SIMT execution layer's costs (kiln/simt): a fiber switch with Kiln's hand-written
// x86-64 switch against glibc's swapcontext (which also saves the signal mask with a system call), and a barrier of
// a 256-thread block (256 fibers, one host thread), measured in the same run.
//   Run: build/bench/bench_simt
#include <benchmark/benchmark.h>
#include <ucontext.h>

#include <vector>

#include "kernels/device.hpp"
#include "kiln/simt/fiber.hpp"

namespace {

using kiln::simt::Context;
using kiln::simt::Fiber;

// A fiber that switches straight back, forever: one iteration is two switches.
struct PingPong {
  Context main;
  std::unique_ptr<Fiber> f;
  static void entry(void* a) {
    auto* p = static_cast<PingPong*>(a);
    for (;;) kiln::simt::switch_to(p->f->context(), p->main);
  }
};

void switch_kiln(benchmark::State& state) {
  PingPong p;
  p.f = std::make_unique<Fiber>(&PingPong::entry, &p, 64 * 1024);
  for (auto _ : state) kiln::simt::switch_to(p.main, p.f->context());
  state.counters["switches/s"] = benchmark::Counter(2, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(switch_kiln)->Name("simt/switch/kiln");

ucontext_t uc_main, uc_fiber;
void uc_entry() {
  for (;;) swapcontext(&uc_fiber, &uc_main);
}
void switch_ucontext(benchmark::State& state) {
  std::vector<char> stack(64 * 1024);
  getcontext(&uc_fiber);
  uc_fiber.uc_stack.ss_sp = stack.data();
  uc_fiber.uc_stack.ss_size = stack.size();
  uc_fiber.uc_link = nullptr;
  makecontext(&uc_fiber, &uc_entry, 0);
  for (auto _ : state) swapcontext(&uc_main, &uc_fiber);
  state.counters["switches/s"] = benchmark::Counter(2, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(switch_ucontext)->Name("simt/switch/ucontext");

KILN_GLOBAL void barriers(int n, int* out) {
  for (int i = 0; i < n; ++i) __syncthreads();
  if (threadIdx.x == 0) *out = n;
}
void block_barrier(benchmark::State& state) {
  int out = 0;
  constexpr int kBarriers = 100;
  for (auto _ : state)
    KILN_LAUNCH(barriers, dim3(1), dim3(256), 0, nullptr).mode(kiln::simt::Mode::fibers)(kBarriers, &out);
  state.counters["barriers/s"] = benchmark::Counter(kBarriers, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(block_barrier)->Name("simt/barrier/256_fibers")->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
