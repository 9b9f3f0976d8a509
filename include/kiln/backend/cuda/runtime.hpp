// kiln/backend/cuda/runtime.hpp: device memory and copies for the CUDA backend, in one of two builds:
//   nvcc   the CUDA runtime: cudaMalloc, cudaMemcpyAsync on the backend's stream; every error a kiln::Error that
//          says what was being done and CUDA's own words for what went wrong
//   g++    the SIMT layer (kernels/device.hpp): "device" memory is host memory and a launch has finished when it
//          returns, so the same backend code runs, and is tested, on the CPU
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/device.hpp"
#include "kiln/core/error.hpp"

namespace kiln::backend::cuda {

#if defined(__CUDACC__)
inline void check(cudaError_t e, const char* what) {
  KILN_CHECK(e == cudaSuccess, "CUDA: ", what, ": ", cudaGetErrorString(e));
}

// For GPU tests and benchmarks: whether a CUDA device is there; when not, prints "skipped: no CUDA device (why)",
// which ctest's SKIP_REGULAR_EXPRESSION reads.
inline bool device_or_skip() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0) return true;
  std::printf("skipped: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
  return false;
}
#endif

// Device bytes allocated through DeviceBytes and not yet freed: the tests check it against the plan's MemoryPlan.
inline std::atomic<size_t>& allocated_bytes() {
  static std::atomic<size_t> n{0};
  return n;
}

// Bytes of device memory, 256-byte aligned; moved, never copied.
class DeviceBytes {
 public:
  DeviceBytes() = default;
  explicit DeviceBytes(size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes == 0) return;
#if defined(__CUDACC__)
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    const cudaError_t e = cudaMalloc(&p_, bytes);
    KILN_CHECK(e == cudaSuccess, "CUDA: cannot allocate ", bytes, " bytes for ", what, " (", free, " of ", total,
               " bytes free): ", cudaGetErrorString(e));
#else
    p_ = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    KILN_CHECK(p_ != nullptr, "cannot allocate ", bytes, " bytes for ", what);
#endif
    allocated_bytes() += bytes;
  }
  ~DeviceBytes() { release(); }
  DeviceBytes(DeviceBytes&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  DeviceBytes& operator=(DeviceBytes&& o) noexcept {
    if (this != &o) {
      release();
      p_ = o.p_, bytes_ = o.bytes_;
      o.p_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  template <class T = std::byte>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void release() {
    if (!p_) return;
#if defined(__CUDACC__)
    cudaFree(p_);
#else
    std::free(p_);
#endif
    allocated_bytes() -= bytes_;
    p_ = nullptr;
  }
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

inline void to_device(void* dst, const void* src, size_t bytes, gpu::Stream stream) {
#if defined(__CUDACC__)
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "copy to the device");
#else
  (void)stream;
  std::memcpy(dst, src, bytes);
#endif
}
// Waits for the stream, then copies (the host reads the result at once).
inline void to_host(void* dst, const void* src, size_t bytes, gpu::Stream stream) {
#if defined(__CUDACC__)
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "copy to the host");
  check(cudaStreamSynchronize(stream), "the step's kernels");
#else
  (void)stream;
  std::memcpy(dst, src, bytes);
#endif
}
inline void fill_zero(void* dst, size_t bytes, gpu::Stream stream) {
#if defined(__CUDACC__)
  check(cudaMemsetAsync(dst, 0, bytes, stream), "zero device memory");
#else
  (void)stream;
  std::memset(dst, 0, bytes);
#endif
}
inline void synchronize(gpu::Stream stream) {
#if defined(__CUDACC__)
  check(cudaStreamSynchronize(stream), "the step's kernels");
#else
  (void)stream;
#endif
}

}  // namespace kiln::backend::cuda
