// kiln/core/rng.hpp: counter-based random numbers, so that a value depends only on (seed, stream, index):
// the same seed gives bitwise the same initialisation and data order regardless of thread count.
#pragma once
#include <cmath>
#include <cstdint>

namespace kiln {

// SplitMix64 finaliser: a bijective 64-bit mix with good avalanche (Steele, Lea, Flood 2014).
constexpr uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 53 random bits, from (seed, stream, index).
inline double uniform01(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t h = mix64(seed ^ mix64(stream ^ mix64(index)));
  return double(h >> 11) * 0x1.0p-53;
}

// Standard normal by Box-Muller on two counter-based uniforms.
inline double normal01(uint64_t seed, uint64_t stream, uint64_t index) {
  constexpr double two_pi = 6.283185307179586476925286766559;
  double u1 = uniform01(seed, stream, 2 * index);
  double u2 = uniform01(seed, stream, 2 * index + 1);
  return std::sqrt(-2.0 * std::log1p(-u1)) * std::cos(two_pi * u2);  // log1p(-u1): u1 in [0,1) keeps log finite
}

// A small sequential generator for sampling and shuffling (xoshiro-style state is overkill here).
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(mix64(seed)) {}
  uint64_t next() { return mix64(state++); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return uint64_t(uniform() * double(n)) % n; }
};

}  // namespace kiln
