// tests/gpu/test_cuda_backend_gpu.cu: the CUDA backend on the GPU trains the PyTorch fixture's model (the cases of
// tests/cuda_backend_cases.hpp, which CPU CI runs in the SIMT layer). ctest label `gpu`; without a CUDA device it
// prints "skipped: no CUDA device" and ctest counts it as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#define KC_WHERE "cuda backend on the GPU"
#include "../cuda_backend_cases.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::printf("skipped: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return 0;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
