// NCCL's device collectives (src/parallel/nccl.cpp) on one rank: the library loads, the communicator forms over a
// one-process host communicator, and a sum over one rank leaves device buffers as they were. Label `gpu`: without
// a CUDA device it says "skipped: no CUDA device". More ranks: bench/gpu_check.sh on a machine with several GPUs.
#include <doctest/doctest.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kiln/parallel/comm.hpp"

TEST_CASE("NCCL on one GPU rank: a sum over one rank keeps the device buffers") {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device\n");
    return;
  }
  kiln::parallel::Single host;
  const auto nccl = kiln::parallel::make_nccl(host, 0);
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
