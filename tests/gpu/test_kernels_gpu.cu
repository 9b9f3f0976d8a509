// tests/gpu/test_kernels_gpu.cu: Kiln's CUDA kernels on the GPU against the CPU kernels (the cases of
// tests/kernels_cuda_cases.hpp, which CPU CI also runs in the SIMT layer). ctest label `gpu`: without a CUDA device
// it prints "skipped: no CUDA device" and ctest counts it as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#define KC_WHERE "cuda kernels on the GPU"
#include "../kernels_cuda_cases.hpp"

#include <cstdio>

#include "kiln/backend/cuda/runtime.hpp"

int main(int argc, char** argv) {
  if (!kiln::backend::cuda::device_or_skip()) return 0;
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  if (p.major < 9) {
    std::printf("test_kernels_gpu: device 0 is %s (sm_%d%d); this build is for sm_90a (H100 / H200)\n", p.name,
                p.major, p.minor);
    return 1;
  }
  std::printf("test_kernels_gpu: %s\n", p.name);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
