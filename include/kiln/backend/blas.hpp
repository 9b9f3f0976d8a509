// kiln/backend/blas.hpp: make OpenBLAS run its fast kernels, and say which ones run.
//
// OpenBLAS chooses its kernels once, when the library loads, from the CPU it recognises or from the
// OPENBLAS_CORETYPE environment variable. Debian's 0.3.21 does not know recent Xeons and falls back to generic
// Prescott kernels, about 6x slower (bench/RESULTS.md). select_blas_kernels() runs first in main(): if the loaded
// library chose a generic core on a CPU with AVX-512 or AVX2+FMA, it sets OPENBLAS_CORETYPE and re-executes the
// program once, so the library loads again with the right kernels. A user's own OPENBLAS_CORETYPE is respected.
#pragma once
#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>

namespace kiln {

struct BlasInfo {
  std::string config;   // the library's build line (version, threading)
  std::string core;     // kernels in use
  std::string how;      // why these kernels
};

// The best OpenBLAS core this CPU can run, or "" when the library's own choice is fine.
inline std::string preferred_blas_core() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

inline bool generic_blas_core(std::string_view core) {
  for (std::string_view slow : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Northwood",
                                "Banias", "Sandybridge", "Barcelona", "Opteron"})
    if (core == slow) return true;
  return false;
}

// Call at the top of main(), before any BLAS use. May not return (re-executes the program once).
inline BlasInfo select_blas_kernels(char** argv) {
  BlasInfo info;
  info.config = openblas_get_config();
  info.core = openblas_get_corename();
  if (const char* chosen = std::getenv("KILN_BLAS_REEXEC")) {
    info.how = std::string("set by Kiln: the library's own choice was ") + chosen;
    return info;
  }
  if (const char* user = std::getenv("OPENBLAS_CORETYPE")) {
    info.how = std::string("OPENBLAS_CORETYPE=") + user + " from the environment";
    return info;
  }
  const std::string want = preferred_blas_core();
  if (!want.empty() && generic_blas_core(info.core)) {
    setenv("OPENBLAS_CORETYPE", want.c_str(), 1);
    setenv("KILN_BLAS_REEXEC", info.core.c_str(), 1);
    execv("/proc/self/exe", argv);  // returns only on failure: carry on with the slow kernels, and say so
    info.how = "WARNING: generic kernels; re-executing with OPENBLAS_CORETYPE=" + want + " failed";
    return info;
  }
  info.how = "detected by the library";
  return info;
}

}  // namespace kiln
