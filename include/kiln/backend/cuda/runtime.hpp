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

// An owned block of bytes whose Kind allocates and frees it; moved, never copied.
template <class Kind>
class OwnedBytes {
 public:
  OwnedBytes() = default;
  explicit OwnedBytes(size_t bytes, const char* what) : p_(bytes ? Kind::allocate(bytes, what) : nullptr), bytes_(bytes) {}
  ~OwnedBytes() { release(); }
  OwnedBytes(OwnedBytes&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  OwnedBytes& operator=(OwnedBytes&& o) noexcept {
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
    if (p_) Kind::release(p_, bytes_);
    p_ = nullptr;
  }
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

// Device memory, 256-byte aligned (cudaMalloc; in the SIMT build host memory), counted in allocated_bytes().
struct DeviceMemory {
  static void* allocate(size_t bytes, const char* what) {
    void* p = nullptr;
#if defined(__CUDACC__)
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    const cudaError_t e = cudaMalloc(&p, bytes);
    KILN_CHECK(e == cudaSuccess, "CUDA: cannot allocate ", bytes, " bytes for ", what, " (", free, " of ", total,
               " bytes free): ", cudaGetErrorString(e));
#else
    p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    KILN_CHECK(p != nullptr, "cannot allocate ", bytes, " bytes for ", what);
#endif
    allocated_bytes() += bytes;
    return p;
  }
  static void release(void* p, size_t bytes) {
#if defined(__CUDACC__)
    cudaFree(p);
#else
    std::free(p);
#endif
    allocated_bytes() -= bytes;
  }
};
using DeviceBytes = OwnedBytes<DeviceMemory>;

// Page-locked host memory, zeroed, so that copies from and to it run while the host goes on (cudaMallocHost; in
// the SIMT build plain host memory).
struct PinnedMemory {
  static void* allocate(size_t bytes, const char* what) {
    void* p = nullptr;
#if defined(__CUDACC__)
    const cudaError_t e = cudaMallocHost(&p, bytes);
    KILN_CHECK(e == cudaSuccess, "CUDA: cannot allocate ", bytes, " bytes of page-locked host memory for ", what, ": ",
               cudaGetErrorString(e));
#else
    p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    KILN_CHECK(p != nullptr, "cannot allocate ", bytes, " bytes for ", what);
#endif
    std::memset(p, 0, bytes);
    return p;
  }
  static void release(void* p, size_t) {
#if defined(__CUDACC__)
    cudaFreeHost(p);
#else
    std::free(p);
#endif
  }
};
using PinnedBytes = OwnedBytes<PinnedMemory>;

// A point in a stream the host can wait for (cudaEvent_t without timing; in the SIMT build every launch has
// finished when it returns, so there is nothing to wait for).
class Event {
 public:
  Event() {
#if defined(__CUDACC__)
    check(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "create an event");
#endif
  }
  ~Event() {
#if defined(__CUDACC__)
    if (e_) cudaEventDestroy(e_);
#endif
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(gpu::Stream stream) {
#if defined(__CUDACC__)
    check(cudaEventRecord(e_, stream), "record an event");
#else
    (void)stream;
#endif
  }
  // Work enqueued on `stream` from now on waits for the work before the last record() (another stream's: a fork
  // or a join, which a CUDA graph's capture follows across the two streams).
  void block(gpu::Stream stream) const {
#if defined(__CUDACC__)
    check(cudaStreamWaitEvent(stream, e_, 0), "make a stream wait for an event");
#else
    (void)stream;
#endif
  }
  // Returns once the work before the last record() has run.
  void wait(const char* what) const {
#if defined(__CUDACC__)
    check(cudaEventSynchronize(e_), what);
#else
    (void)what;
#endif
  }

 private:
#if defined(__CUDACC__)
  cudaEvent_t e_ = nullptr;
#endif
};

// A stream of its own (blocking: ordered with the legacy stream's copies); nullptr in the SIMT build.
class OwnStream {
 public:
  OwnStream() {
#if defined(__CUDACC__)
    check(cudaStreamCreate(&s_), "create a stream");
#endif
  }
  ~OwnStream() {
#if defined(__CUDACC__)
    if (s_) cudaStreamDestroy(s_);
#endif
  }
  OwnStream(const OwnStream&) = delete;
  OwnStream& operator=(const OwnStream&) = delete;
  gpu::Stream get() const { return s_; }

 private:
  gpu::Stream s_ = nullptr;
};

// An async copy: from pageable host memory it returns once the source is read; from PinnedBytes at once.
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
// An async copy to the host: the destination is written when the stream gets there (PinnedBytes and an Event).
inline void to_host_async(void* dst, const void* src, size_t bytes, gpu::Stream stream) {
#if defined(__CUDACC__)
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "copy to the host");
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
