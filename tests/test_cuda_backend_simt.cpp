// tests/test_cuda_backend_simt.cpp: the CUDA backend built by g++ over the SIMT layer (its kernels as fibers, its
// products through OpenBLAS) trains the PyTorch fixture's model (tests/cuda_backend_cases.hpp).
#define KC_WHERE "cuda backend in the SIMT layer"
#include "cuda_backend_cases.hpp"
