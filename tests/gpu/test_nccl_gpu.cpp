// NCCL's device collectives (src/parallel/nccl.cpp) on one rank: the library loads, the communicator forms over a
// one-process host communicator, and a sum over one rank leaves device buffers as they were. Label `gpu`: without
// a CUDA device it says "skipped: no CUDA device". More ranks: bench/gpu_check.sh on a machine with several GPUs.
// The watchdog: a sum held back on its stream (a host function blocks the stream, as a dead rank would hold NCCL)
// is named once the timeout has passed, and not before.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kiln/parallel/comm.hpp"

TEST_CASE("NCCL on one GPU rank: a sum over one rank keeps the device buffers") {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device\n");
    return;
  }
  kiln::parallel::Single host;
  const auto nccl = kiln::parallel::make_nccl(host, 0, 600);
  CHECK(std::string(nccl->name()) == "NCCL");
  std::vector<float> h(1000);
  for (size_t i = 0; i < h.size(); ++i) h[i] = float(i) * 0.5f;
  float* d = nullptr;
  double* dd = nullptr;
  REQUIRE(cudaMalloc(&d, h.size() * 4) == cudaSuccess);
  REQUIRE(cudaMalloc(&dd, 8) == cudaSuccess);
  const double x = 3.25;
  cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dd, &x, 8, cudaMemcpyHostToDevice);
  cudaStream_t s = nullptr;
  cudaStreamCreate(&s);
  nccl->allreduce_sum(d, h.size(), s, "test");
  nccl->allreduce_sum(dd, 1, s, "test");
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  std::vector<float> back(h.size());
  double y = 0;
  cudaMemcpy(back.data(), d, h.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(&y, dd, 8, cudaMemcpyDeviceToHost);
  CHECK(back == h);
  CHECK(y == x);
  cudaStreamDestroy(s);
  cudaFree(d);
  cudaFree(dd);
}

namespace {
std::atomic<bool> release{false};
void CUDART_CB hold(void*) {  // blocks the stream until the test lets it go
  while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}
}  // namespace

TEST_CASE("NCCL's watchdog names a collective that has not finished within the timeout") {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device\n");
    return;
  }
  kiln::parallel::Single host;
  std::mutex mu;
  std::string said;
  const auto nccl = kiln::parallel::make_nccl(host, 0, 1.0, [&](const std::string& m) {
    std::lock_guard<std::mutex> l(mu);
    said = m;
  });
  float* d = nullptr;
  REQUIRE(cudaMalloc(&d, 64 * 4) == cudaSuccess);
  cudaStream_t s = nullptr;
  cudaStreamCreate(&s);
  release = false;
  REQUIRE(cudaLaunchHostFunc(s, hold, nullptr) == cudaSuccess);
  nccl->allreduce_sum(d, 64, s, "the held sum");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  {
    std::lock_guard<std::mutex> l(mu);
    CHECK(said.empty());  // 0.3 s: not yet
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  {
    std::lock_guard<std::mutex> l(mu);
    CHECK(said.find("NCCL's the held sum (collective 1 of this rank) has not finished") != std::string::npos);
  }
  release = true;
  REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  cudaStreamDestroy(s);
  cudaFree(d);
}
