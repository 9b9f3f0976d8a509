// tests/simt_race.cpp: ThreadSanitizer sees a missing __syncthreads in a kernel run by the SIMT layer's threads mode
// (tests/simt.cmake builds this with -fsanitize=thread). `simt_race ok` runs a neighbour exchange through shared
// memory with its barrier and must report nothing; `simt_race race` runs it without the barrier and TSan must report
// a data race on the shared array.
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/device.hpp"

template <bool Barrier>
KILN_GLOBAL void neighbour(const float* in, float* out) {
  KILN_SHARED(float, s, 64);
  const unsigned t = threadIdx.x;
  s[t] = in[t] * 2.f;
  if constexpr (Barrier) __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

int main(int argc, char** argv) {
  const bool race = argc > 1 && std::strcmp(argv[1], "race") == 0;
  std::vector<float> in(64), out(64);
  for (int i = 0; i < 64; ++i) in[size_t(i)] = float(i);
  if (race) KILN_LAUNCH(neighbour<false>, dim3(1), dim3(64), 0, nullptr).mode(kiln::simt::Mode::threads)(in.data(), out.data());
  else KILN_LAUNCH(neighbour<true>, dim3(1), dim3(64), 0, nullptr).mode(kiln::simt::Mode::threads)(in.data(), out.data());
  if (!race)
    for (int i = 0; i < 64; ++i)
      if (out[size_t(i)] != 2.f * float((i + 1) % 64)) {
        std::printf("simt_race: out[%d] = %g, expected %g\n", i, double(out[size_t(i)]), 2.0 * ((i + 1) % 64));
        return 1;
      }
  std::printf("simt_race: %s done\n", race ? "race" : "ok");
  return 0;
}
