// tests/gpu/test_cuda_backend_gpu.cu: the CUDA backend on the GPU trains the PyTorch fixture's model (the cases of
// tests/cuda_backend_cases.hpp, which CPU CI runs in the SIMT layer). ctest label `gpu`; without a CUDA device it
// prints "skipped: no CUDA device" and ctest counts it as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#define KC_WHERE "cuda backend on the GPU"
#include "../cuda_backend_cases.hpp"

#include <cstdio>

#include "kiln/backend/cuda/runtime.hpp"

int main(int argc, char** argv) {
  if (!kiln::backend::cuda::device_or_skip()) return 0;
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
