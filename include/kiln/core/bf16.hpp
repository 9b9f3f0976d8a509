// kiln/core/bf16.hpp: bfloat16 usable in host code without CUDA (round-to-nearest-even, NaN kept quiet), and in
// device code under nvcc (the same bits as __nv_bfloat16, so a buffer of either is one buffer for cuBLASLt).
#pragma once
#include <bit>
#include <cstdint>

#include "kiln/core/hd.hpp"

namespace kiln {

struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  KILN_HD explicit bf16(float f) {
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a (quiet) NaN
      bits = uint16_t((u >> 16) | 0x40u);
      return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    bits = uint16_t(u >> 16);
  }
  KILN_HD explicit operator float() const { return float_of(uint32_t(bits) << 16); }

 private:
  KILN_HD static uint32_t bits_of(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    return std::bit_cast<uint32_t>(f);
#endif
  }
  KILN_HD static float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    return std::bit_cast<float>(u);
#endif
  }
};
static_assert(sizeof(bf16) == 2 && alignof(bf16) == 2, "bf16 must have __nv_bfloat16's size and alignment");

}  // namespace kiln
