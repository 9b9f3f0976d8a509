// kiln/simt/simt.hpp: Kiln's CUDA kernels compiled by g++ as host code and run on the CPU (the SIMT execution layer).
//
// A kernel written for nvcc (kernels/*.cuh through kernels/device.hpp) sees here what it sees on a GPU:
//   threadIdx, blockIdx, blockDim, gridDim           this CUDA thread's coordinates
//   __syncthreads(), __syncwarp()                     barriers of the block and of the warp
//   __shfl_sync / _xor / _down / _up (mask, v, ...)   warp shuffles with CUDA's width and out-of-range semantics
//   __ballot_sync, __any_sync, __all_sync             warp votes
//   atomicAdd, atomicMax (int, float)                 real atomics: blocks run on several host threads at once
//   shared_array<T>(n), dynamic_shared()              the block's shared memory (KILN_SHARED in device.hpp)
// and a launch: simt::launcher(kernel, grid, block, dynamic_shared_bytes)(args...).
//
// Two ways to run a block (Mode):
//   fibers   (default) each CUDA thread is a fiber (fiber.hpp) on one host thread; a barrier or a shuffle switches to
//            the next fiber, so a block of 256 threads costs one host thread and a few hundred context switches per
//            barrier. Blocks are spread over the OpenMP threads.
//   threads  each CUDA thread is a std::thread and barriers are std::barrier: slow, but ThreadSanitizer sees every
//            CUDA thread, so a missing __syncthreads between a shared-memory write and another thread's read is
//            reported as a data race (tests/simt.cmake checks that it is). Blocks run one after another.
// The mode comes from launcher(...).mode(m), else the environment (KILN_SIMT=threads), else fibers.
//
// What is checked rather than left undefined (fibers): a __syncthreads that not every thread of the block reaches
// (some returned early) is an error naming the block, not a hang, and so is a warp barrier or shuffle that not every
// thread of its warp reaches (as on the GPU, arrivals are counted, not call sites; threads mode counts a thread that
// returned as arrived, what GPUs since Volta do: fibers find early returns, threads find races); shared memory
// starts filled with 0xff bytes (NaN for floats) in every block, so reading what no thread wrote shows; a shuffle's
// mask must name every thread of the warp (partial-warp masks are not emulated: the error says so); the static
// shared memory of a block is at most 48 KiB, as on the GPU without opt-in.
// What cannot run here: tensor-core wgmma, TMA and other sm_90 asm (guard them with __CUDA_ARCH__; they stay
// GPU-only), CUB's device headers (keep them out of kernels that must run here).
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/simt/fiber.hpp"

namespace kiln::simt {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr size_t count() const { return size_t(x) * y * z; }
};
struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

enum class Mode { fibers, threads };

inline constexpr unsigned kWarp = 32;
inline constexpr size_t kStaticShared = 48 * 1024;  // a block's static shared memory on the GPU without opt-in
inline constexpr size_t kFiberStack = 64 * 1024;    // per CUDA thread: kernels keep their arrays small

struct Block;

// One CUDA thread while it runs.
struct Thread {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  Block* block = nullptr;
  unsigned linear = 0, lane = 0, warp = 0;
};

inline thread_local Thread* current = nullptr;

// A warp's barrier and exchange slots.
struct Warp {
  unsigned lanes = 0;  // threads in this warp (the last warp of a block may be partial)
  unsigned arrived = 0;
  uint64_t generation = 0;
  uint64_t slot[kWarp] = {};
  std::unique_ptr<std::barrier<>> barrier;  // threads mode
};

// One block while it runs: shared memory, barriers, the fibers' bookkeeping.
struct Block {
  uint3 idx;
  unsigned threads = 0;
  Mode mode = Mode::fibers;
  std::vector<std::byte> shared;  // static shared arrays first (kStaticShared), then the dynamic bytes
  size_t dynamic_bytes = 0;
  std::vector<std::pair<const void*, size_t>> sites;  // static shared arrays placed so far: declaration, offset
  size_t shared_used = 0;
  std::mutex sites_mutex;  // threads mode: the first thread to reach a declaration places it
  std::vector<Warp> warps;
  // fibers: the block barrier and the scheduler's progress count (no change over a whole round: a deadlock)
  unsigned arrived = 0;
  uint64_t generation = 0, events = 0;
  std::vector<uint64_t> waiting_at;  // per thread: the block barrier generation it waits at (~0: not waiting)
  Context* scheduler = nullptr;
  Context* self = nullptr;          // the running fiber's context
  std::string error;                // set by a fiber that found a misuse; the scheduler throws it
  std::unique_ptr<std::barrier<>> barrier;  // threads mode

  void reset(unsigned n, size_t dyn) {
    threads = n;
    dynamic_bytes = dyn;
    shared.assign(kStaticShared + dyn, std::byte{0xff});
    sites.clear();
    shared_used = 0;
    const unsigned nw = (n + kWarp - 1) / kWarp;
    warps.clear();
    warps.resize(nw);
    for (unsigned w = 0; w < nw; ++w) warps[w].lanes = std::min(kWarp, n - w * kWarp);
    arrived = 0;
    generation = events = 0;
    waiting_at.assign(n, ~uint64_t(0));
    error.clear();
  }
};

namespace detail {

// Where a misuse is reported from inside a kernel: in fiber mode the scheduler throws it after the switch back.
[[noreturn]] void misuse(const std::string& what);

void yield();  // fibers: back to the scheduler, which resumes the next fiber

inline std::string block_name(const uint3& b) {
  return "block (" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) + ")";
}

}  // namespace detail

// ---- what a kernel calls ---------------------------------------------------------------------------------------

inline void syncthreads() {
  Thread& t = *current;
  Block& b = *t.block;
  if (b.mode == Mode::threads) {
    b.barrier->arrive_and_wait();
    return;
  }
  const uint64_t gen = b.generation;
  ++b.events;
  b.waiting_at[t.linear] = gen;
  if (++b.arrived == b.threads) {
    b.arrived = 0;
    ++b.generation;
    b.waiting_at[t.linear] = ~uint64_t(0);
    return;
  }
  while (b.generation == gen) detail::yield();
  b.waiting_at[t.linear] = ~uint64_t(0);
}

inline void syncwarp() {
  Thread& t = *current;
  Block& b = *t.block;
  Warp& w = b.warps[t.warp];
  if (b.mode == Mode::threads) {
    w.barrier->arrive_and_wait();
    return;
  }
  const uint64_t gen = w.generation;
  ++b.events;
  if (++w.arrived == w.lanes) {
    w.arrived = 0;
    ++w.generation;
    return;
  }
  while (w.generation == gen) detail::yield();
}

// The lanes a full mask must name in this thread's warp.
inline uint32_t warp_lanes_mask() {
  const unsigned n = current->block->warps[current->warp].lanes;
  return n == 32 ? 0xffffffffu : ((1u << n) - 1u);
}

inline void check_mask(uint32_t mask, const char* what) {
  if ((mask & warp_lanes_mask()) != warp_lanes_mask())
    detail::misuse(std::string(what) + ": mask " + std::to_string(mask) +
                   " leaves out threads of the warp; the SIMT layer emulates only whole-warp masks");
}

// Every lane publishes v, then reads lane src(lane) (its own value when src is out of range).
template <class T, class Src>
inline T exchange(uint32_t mask, T v, Src src, const char* what) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>,
                "simt: shuffles move values of at most 8 bytes");
  check_mask(mask, what);
  Thread& t = *current;
  Warp& w = t.block->warps[t.warp];
  std::memcpy(&w.slot[t.lane], &v, sizeof(T));
  syncwarp();
  const int s = src(int(t.lane));
  T r = v;
  if (s >= 0 && s < int(w.lanes)) std::memcpy(&r, &w.slot[s], sizeof(T));
  syncwarp();  // nobody overwrites a slot before every lane has read
  return r;
}

template <class T>
inline T shfl_sync(uint32_t mask, T v, int src_lane, int width = kWarp) {
  return exchange(mask, v, [&](int lane) { return (lane / width) * width + (src_lane % width); }, "__shfl_sync");
}
template <class T>
inline T shfl_xor_sync(uint32_t mask, T v, int lane_mask, int width = kWarp) {
  return exchange(mask, v, [&](int lane) {
    const int s = lane ^ lane_mask;
    return s / width > lane / width ? -1 : s;  // a later segment: the caller's own value
  }, "__shfl_xor_sync");
}
template <class T>
inline T shfl_down_sync(uint32_t mask, T v, unsigned delta, int width = kWarp) {
  return exchange(mask, v, [&](int lane) {
    const int s = lane + int(delta);
    return s / width != lane / width ? -1 : s;
  }, "__shfl_down_sync");
}
template <class T>
inline T shfl_up_sync(uint32_t mask, T v, unsigned delta, int width = kWarp) {
  return exchange(mask, v, [&](int lane) {
    const int s = lane - int(delta);
    return s < 0 || s / width != lane / width ? -1 : s;
  }, "__shfl_up_sync");
}

inline uint32_t ballot_sync(uint32_t mask, bool p) {
  check_mask(mask, "__ballot_sync");
  Thread& t = *current;
  Warp& w = t.block->warps[t.warp];
  w.slot[t.lane] = p ? 1 : 0;
  syncwarp();
  uint32_t r = 0;
  for (unsigned l = 0; l < w.lanes; ++l) r |= uint32_t(w.slot[l] != 0) << l;
  syncwarp();
  return r;
}

// Static shared memory: one array per declaration (`site`, a static of the declaring code) and block, as CUDA's
// __shared__ variables are; a declaration reached again (a device function called in a loop) gets the same bytes.
template <class T>
inline T* shared_array(size_t n, const void* site) {
  Block& b = *current->block;
  std::unique_lock<std::mutex> lock(b.sites_mutex, std::defer_lock);
  if (b.mode == Mode::threads) lock.lock();
  for (const auto& [k, at] : b.sites)
    if (k == site) return reinterpret_cast<T*>(b.shared.data() + at);
  const size_t at = (b.shared_used + alignof(T) - 1) / alignof(T) * alignof(T);
  if (at + n * sizeof(T) > kStaticShared) {
    if (lock.owns_lock()) lock.unlock();
    detail::misuse("static shared memory over " + std::to_string(kStaticShared) + " bytes in one block");
  }
  b.shared_used = at + n * sizeof(T);
  b.sites.emplace_back(site, at);
  return reinterpret_cast<T*>(b.shared.data() + at);
}
inline void* dynamic_shared() { return current->block->shared.data() + kStaticShared; }

template <class T>
inline T atomic_add(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed);
}
template <class T>
inline T atomic_max(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load(std::memory_order_relaxed);
  while (old < v && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}

// ---- launching ---------------------------------------------------------------------------------------------------

Mode default_mode();  // KILN_SIMT=threads in the environment, else fibers

namespace detail {

// Runs one block of `n` threads: body(thread) for each, in the given mode. Throws kiln::Error on a misuse.
void run_block(Block& b, const dim3& grid, const dim3& block, void (*body)(void*), void* closure);

template <class F>
void run_grid(const dim3& grid, const dim3& block, size_t dynamic_bytes, Mode mode, F& body) {
  KILN_CHECK(block.count() >= 1 && block.count() <= 1024, "simt: a block of ", block.count(),
             " threads (a CUDA block has 1 to 1024)");
  KILN_CHECK(grid.count() >= 1, "simt: an empty grid");
  auto invoke = [](void* c) { (*static_cast<F*>(c))(); };
  const long blocks = long(grid.count());
  if (mode == Mode::threads) {
    Block b;
    b.mode = mode;
    for (long i = 0; i < blocks; ++i) {
      b.idx = {unsigned(i % grid.x), unsigned(i / grid.x % grid.y), unsigned(i / (size_t(grid.x) * grid.y))};
      b.reset(unsigned(block.count()), dynamic_bytes);
      run_block(b, grid, block, invoke, &body);
    }
    return;
  }
  std::exception_ptr failure;
  std::mutex m;
#pragma omp parallel
  {
    Block b;
    b.mode = mode;
#pragma omp for schedule(dynamic, 1)
    for (long i = 0; i < blocks; ++i) {
      {
        std::lock_guard<std::mutex> lock(m);
        if (failure) continue;
      }
      try {
        b.idx = {unsigned(i % grid.x), unsigned(i / grid.x % grid.y), unsigned(i / (size_t(grid.x) * grid.y))};
        b.reset(unsigned(block.count()), dynamic_bytes);
        run_block(b, grid, block, invoke, &body);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!failure) failure = std::current_exception();
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace detail

// launcher(kernel, grid, block, dynamic_shared_bytes)(args...): runs kernel(args...) once per CUDA thread; every
// thread gets its own copy of the arguments, as kernel parameters are on the GPU. Returns when the grid is done
// (a launch on the GPU is asynchronous: Kiln's code synchronises through streams, which here are already done).
template <class Kernel>
class launcher {
 public:
  launcher(Kernel k, dim3 grid, dim3 block, size_t dynamic_bytes = 0, const void* /*stream*/ = nullptr)
      : k_(k), grid_(grid), block_(block), dyn_(dynamic_bytes), mode_(default_mode()) {}
  launcher& mode(Mode m) {
    mode_ = m;
    return *this;
  }
  template <class... A>
  void operator()(A&&... a) {
    auto args = std::make_tuple(std::forward<A>(a)...);
    auto body = [&] {
      auto copy = args;  // by value, per thread
      std::apply(k_, std::move(copy));
    };
    detail::run_grid(grid_, block_, dyn_, mode_, body);
  }

 private:
  Kernel k_;
  dim3 grid_, block_;
  size_t dyn_;
  Mode mode_;
};
template <class Kernel>
launcher(Kernel, dim3, dim3, size_t = 0, const void* = nullptr) -> launcher<Kernel>;

}  // namespace kiln::simt
