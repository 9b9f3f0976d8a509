// bench/bench_mpi.cpp: the MPI communicator's all-reduce (kiln/parallel/comm.hpp, Open MPI), run under mpirun:
//   mpirun -np 2 --oversubscribe build/bench/kiln_bench_mpi
// Sizes from 4 KiB to 256 MiB of floats; GB/s as nccl-tests reports it: algorithm bandwidth = bytes / time, bus
// bandwidth = algorithm bandwidth x 2 (n - 1) / n (what each rank's link carries in a ring). Every rank runs the same
// fixed number of iterations (a collective needs all of them); rank 0 prints.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "kiln/parallel/comm.hpp"

namespace {

kiln::parallel::Communicator* comm = nullptr;

void allreduce(benchmark::State& state) {
  const size_t n = size_t(state.range(0)) / 4;
  std::vector<float> x(n, 1.0f);
  comm->barrier("benchmark start");
  for (auto _ : state) {
    comm->allreduce_sum(x.data(), n, "the benchmark's all-reduce");
    benchmark::ClobberMemory();
  }
  const double bytes = double(n) * 4, w = comm->world();
  state.counters["algbw GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["busbw GB/s"] =
      benchmark::Counter(bytes * 1e-9 * 2 * (w - 1) / w, benchmark::Counter::kIsIterationInvariantRate);
}
// The reference measured in the same run: every rank copying the same bytes at once (memcpy), the bound of a
// shared-memory transport on this machine.
void copy(benchmark::State& state) {
  const size_t n = size_t(state.range(0)) / 4;
  std::vector<float> a(n, 1.0f), b(n);
  comm->barrier("benchmark start");
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n * 4);
    benchmark::ClobberMemory();
  }
  comm->barrier("benchmark end");
  state.counters["copy GB/s"] = benchmark::Counter(double(n) * 4e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(copy)->Name("mpi/reference/memcpy")->RangeMultiplier(8)->Range(4 << 10, 256 << 20)->Iterations(20)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(allreduce)->Name("mpi/allreduce/float")->RangeMultiplier(8)->Range(4 << 10, 256 << 20)->Iterations(20)
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  const auto c = kiln::parallel::make_communicator(kiln::parallel::discover_launch(), 120);
  comm = c.get();
  if (comm->rank() > 0 && !std::freopen("/dev/null", "w", stdout)) return 1;
  std::printf("kiln_bench_mpi: %d ranks (%s)\n", comm->world(), comm->name());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
