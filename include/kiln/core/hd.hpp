// kiln/core/hd.hpp: marks code that runs on the host and, when nvcc compiles it, on the device too.
//   KILN_HD      __host__ __device__ under nvcc, nothing for g++ (core types such as bf16 use it)
//   KILN_DEVICE  a device helper: __device__ __forceinline__ under nvcc, inline in host code (the SIMT layer)
#pragma once

#if defined(__CUDACC__)
#define KILN_HD __host__ __device__
#define KILN_DEVICE __device__ __forceinline__
#else
#define KILN_HD
#define KILN_DEVICE inline
#endif
