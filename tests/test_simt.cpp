// tests/test_simt.cpp: the SIMT execution layer (kiln/simt/simt.hpp) runs CUDA kernels as host code with CUDA's
// semantics: coordinates, block barriers over shared memory, warp shuffles (width, out-of-range lanes, partial
// warps), votes, atomics across blocks, per-thread copies of the arguments; misuse is an error naming the block.
// Every case runs in both modes (fibers; one std::thread per CUDA thread).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/device.hpp"
#include "kiln/simt/fiber.hpp"

using kiln::simt::Mode;

namespace {

// Sum of n floats: each block reduces blockDim.x values through shared memory (a tree: one barrier per level),
// then its warp 0 finishes with shuffles, and thread 0 adds the block's sum atomically.
KILN_GLOBAL void block_sum(const float* x, int n, float* out) {
  KILN_SHARED(float, part, 1024);
  const unsigned t = threadIdx.x;
  const int i = int(blockIdx.x * blockDim.x + t);
  part[t] = i < n ? x[i] : 0.f;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s >= 32; s /= 2) {
    if (t < s) part[t] += part[t + s];
    __syncthreads();
  }
  if (t < 32) {
    float v = part[t];
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (t == 0) atomicAdd(out, v);
  }
}

// Every thread writes its coordinates (and checks the block's size): out[linear global id] = packed coordinates.
KILN_GLOBAL void coordinates(uint32_t* out) {
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned per = blockDim.x * blockDim.y * blockDim.z;
  out[bid * per + tid] = (threadIdx.x) | (threadIdx.y << 4) | (threadIdx.z << 8) | (blockIdx.x << 12) |
                         (blockIdx.y << 16) | (blockIdx.z << 20);
}

// Shuffles of every kind: out[k * n + linear] for k = xor 1, down 3, up 5, shfl from lane 7 (width 8), xor 4
// (width 4), ballot of odd lanes. Expected values follow the CUDA Programming Guide's warp shuffle section.
KILN_GLOBAL void shuffles(int* out, int n) {
  const int t = int(threadIdx.x);
  const int v = 100 + t;
  out[0 * n + t] = __shfl_xor_sync(0xffffffffu, v, 1);
  out[1 * n + t] = __shfl_down_sync(0xffffffffu, v, 3);
  out[2 * n + t] = __shfl_up_sync(0xffffffffu, v, 5);
  out[3 * n + t] = __shfl_sync(0xffffffffu, v, 7, 8);
  out[4 * n + t] = __shfl_xor_sync(0xffffffffu, v, 4, 4);
  out[5 * n + t] = int(__ballot_sync(0xffffffffu, (t & 1) != 0));
}

// Parameters are per-thread copies: each thread counts its own copy of `k` down.
KILN_GLOBAL void own_copy(int k, int* out) {
  int steps = 0;
  while (k-- > 0) ++steps;
  out[threadIdx.x] = steps;
}

// Reads shared memory nobody wrote: NaN on the host (0xff bytes), so a missing write shows.
KILN_GLOBAL void unwritten_shared(float* out) {
  KILN_SHARED(float, s, 64);
  out[threadIdx.x] = s[threadIdx.x];
}

KILN_GLOBAL void dynamic_shared_reverse(const int* in, int* out) {
  KILN_DYNAMIC_SHARED(int, s);
  s[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

// Misuse: threads of an odd index return before the barrier the others wait at.
KILN_GLOBAL void early_return(int* out) {
  if (threadIdx.x % 2) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

KILN_GLOBAL void half_mask(int* out) { out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, int(threadIdx.x), 1); }

// kiln::dev::block_sum declares shared memory; called once per row, it reuses the same array (as __shared__ does).
KILN_GLOBAL void row_sums(const float* x, int rows, int cols, float* out) {
  for (int r = 0; r < rows; ++r) {
    float v = 0.f;
    for (int j = int(threadIdx.x); j < cols; j += int(blockDim.x)) v += x[r * cols + j];
    v = kiln::dev::block_sum(v);
    if (threadIdx.x == 0) out[r] = v;
  }
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const kiln::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("simt: a block reduction through shared memory, barriers, shuffles and atomics") {
  for (Mode mode : {Mode::fibers, Mode::threads}) {
    CAPTURE(int(mode));
    const int n = mode == Mode::fibers ? 100003 : 3000;  // threads mode: one std::thread per CUDA thread
    std::vector<float> x(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) x[size_t(i)] = float(i % 7) - 3.f;
    double ref = 0;
    for (float v : x) ref += v;
    for (unsigned block : {64u, 256u}) {
      float out = 0.f;
      KILN_LAUNCH(block_sum, dim3((unsigned(n) + block - 1) / block), dim3(block), 0, nullptr).mode(mode)(x.data(), n,
                                                                                                         &out);
      CHECK(double(out) == doctest::Approx(ref));
    }
  }
}

TEST_CASE("simt: 3-d grids and blocks give every thread its coordinates once") {
  for (Mode mode : {Mode::fibers, Mode::threads}) {
    const dim3 grid(3, 2, 2), block(4, 3, 2);
    std::vector<uint32_t> out(grid.count() * block.count(), ~0u);
    KILN_LAUNCH(coordinates, grid, block, 0, nullptr).mode(mode)(out.data());
    for (unsigned bz = 0; bz < 2; ++bz)
      for (unsigned by = 0; by < 2; ++by)
        for (unsigned bx = 0; bx < 3; ++bx)
          for (unsigned tz = 0; tz < 2; ++tz)
            for (unsigned ty = 0; ty < 3; ++ty)
              for (unsigned tx = 0; tx < 4; ++tx) {
                const unsigned bid = bx + 3 * (by + 2 * bz), tid = tx + 4 * (ty + 3 * tz);
                CHECK(out[bid * 24 + tid] == (tx | ty << 4 | tz << 8 | bx << 12 | by << 16 | bz << 20));
              }
  }
}

TEST_CASE("simt: warp shuffles and votes follow CUDA (width segments, out-of-range lanes, a partial last warp)") {
  for (Mode mode : {Mode::fibers, Mode::threads}) {
    const int n = 40;  // warp 0 has 32 lanes, warp 1 has 8
    std::vector<int> out(6 * size_t(n), -1);
    KILN_LAUNCH(shuffles, dim3(1), dim3(n), 0, nullptr).mode(mode)(out.data(), n);
    for (int t = 0; t < n; ++t) {
      CAPTURE(t);
      const int lane = t % 32, base = t - lane, lanes = t < 32 ? 32 : 8;
      auto val = [&](int l) { return 100 + base + l; };
      CHECK(out[0 * n + t] == ((lane ^ 1) < lanes ? val(lane ^ 1) : val(lane)));
      CHECK(out[1 * n + t] == (lane + 3 < lanes ? val(lane + 3) : val(lane)));  // down: beyond the warp, own value
      CHECK(out[2 * n + t] == (lane >= 5 ? val(lane - 5) : val(lane)));         // up: below lane 0, own value
      CHECK(out[3 * n + t] == val((lane / 8) * 8 + 7));                          // lane 7 of each 8-lane segment
      // xor 4 at width 4: a later segment gives the caller's own value, an earlier one is read (CUDA's shfl.bfly)
      CHECK(out[4 * n + t] == ((lane / 4) % 2 == 0 ? val(lane) : val(lane ^ 4)));
      uint32_t odd = 0;
      for (int l = 1; l < lanes; l += 2) odd |= 1u << l;
      CHECK(uint32_t(out[5 * n + t]) == odd);
    }
  }
}

TEST_CASE("simt: arguments are copied per thread; shared memory starts unwritten (NaN); dynamic shared memory") {
  for (Mode mode : {Mode::fibers, Mode::threads}) {
    std::vector<int> steps(64, 0);
    KILN_LAUNCH(own_copy, dim3(1), dim3(64), 0, nullptr).mode(mode)(5, steps.data());
    for (int s : steps) CHECK(s == 5);
    std::vector<float> u(64, 0.f);
    KILN_LAUNCH(unwritten_shared, dim3(1), dim3(64), 0, nullptr).mode(mode)(u.data());
    for (float v : u) CHECK(std::isnan(v));
    std::vector<int> in(96), out(96, -1);
    std::iota(in.begin(), in.end(), 0);
    KILN_LAUNCH(dynamic_shared_reverse, dim3(1), dim3(96), 96 * sizeof(int), nullptr).mode(mode)(in.data(),
                                                                                                 out.data());
    for (int i = 0; i < 96; ++i) CHECK(out[size_t(i)] == 95 - i);
  }
}

TEST_CASE("simt: a barrier not every thread reaches, and a partial shuffle mask, are errors naming the block") {
  std::vector<int> out(64, 0);
  std::string e = error_of([&] { KILN_LAUNCH(early_return, dim3(2), dim3(64), 0, nullptr).mode(Mode::fibers)(out.data()); });
  CHECK_MESSAGE(e.find("block (") != std::string::npos, e);
  CHECK_MESSAGE(e.find("32 of 64 threads wait at __syncthreads while 32 returned without reaching it") !=
                    std::string::npos, e);
  for (Mode mode : {Mode::fibers, Mode::threads}) {
    e = error_of([&] { KILN_LAUNCH(half_mask, dim3(1), dim3(32), 0, nullptr).mode(mode)(out.data()); });
    CHECK_MESSAGE(e.find("__shfl_xor_sync: mask 65535 leaves out threads of the warp") != std::string::npos, e);
  }
  // the fibers abandoned mid-kernel are rebuilt: the next launch runs normally
  std::vector<float> x(1000, 1.f);
  float sum = 0;
  KILN_LAUNCH(block_sum, dim3(4), dim3(256), 0, nullptr).mode(Mode::fibers)(x.data(), 1000, &sum);
  CHECK(sum == 1000.f);
  CHECK_THROWS_WITH_AS(KILN_LAUNCH(own_copy, dim3(1), dim3(2048), 0, nullptr)(1, out.data()),
                       doctest::Contains("a block of 2048 threads"), kiln::Error);
}

TEST_CASE("simt: a shared array declared in a device function called in a loop is one array per block") {
  for (Mode mode : {Mode::fibers, Mode::threads}) {
    const int rows = 20000, cols = 70;  // 20000 calls: one array each would overflow 48 KiB
    std::vector<float> x(size_t(rows) * cols), out(rows, -1.f);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 5);
    KILN_LAUNCH(row_sums, dim3(1), dim3(64), 0, nullptr).mode(mode)(x.data(), mode == Mode::threads ? 50 : rows, cols,
                                                                    out.data());
    for (int r = 0; r < (mode == Mode::threads ? 50 : rows); ++r) {
      float ref = 0.f;
      for (int j = 0; j < cols; ++j) ref += x[size_t(r) * cols + size_t(j)];
      CHECK(out[size_t(r)] == ref);  // small integers: exact in any order
    }
  }
}

TEST_CASE("simt: fibers switch with the hand-written switch on x86-64") {
#if defined(__x86_64__)
  CHECK(kiln::simt::fast_switch());
#else
  CHECK_FALSE(kiln::simt::fast_switch());
#endif
}
