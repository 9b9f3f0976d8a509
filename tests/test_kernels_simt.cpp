// tests/test_kernels_simt.cpp: Kiln's CUDA kernels, compiled by g++ and run in the SIMT layer (fibers), against the
// CPU kernels (tests/kernels_cuda_cases.hpp; the same cases run on a GPU in tests/gpu/test_kernels_gpu.cu).
#include "kernels_cuda_cases.hpp"

TEST_CASE("cuda kernels in the SIMT layer: swiglu (fp32 and bf16 storage)") {
  kc::swiglu_case<float>();
  kc::swiglu_case<kiln::bf16>();
}
TEST_CASE("cuda kernels in the SIMT layer: rmsnorm with the residual add, forward and backward") {
  kc::rmsnorm_case<float, 192>();
  kc::rmsnorm_case<kiln::bf16, 192>();
  kc::rmsnorm_case<float, 1000>();  // not a multiple of the block: the column bounds
  kc::rmsnorm_case<kiln::bf16, 2048>();
}
TEST_CASE("cuda kernels in the SIMT layer: gradient norm, clip scale and AdamW with decay ranges") {
  kc::adamw_case();
}
