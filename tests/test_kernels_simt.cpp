// tests/test_kernels_simt.cpp: Kiln's CUDA kernels, compiled by g++ and run in the SIMT layer (fibers), against the
// CPU kernels (tests/kernels_cuda_cases.hpp; the same cases run on a GPU in tests/gpu/test_kernels_gpu.cu).
#define KC_WHERE "cuda kernels in the SIMT layer"
#include "kernels_cuda_cases.hpp"
