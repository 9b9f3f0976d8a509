// kiln/backend/blas.hpp: make OpenBLAS run the fastest kernels this CPU has, and say which ones run.
//
// OpenBLAS chooses its kernels once, when the library loads, from the CPU it recognises or from the
// OPENBLAS_CORETYPE environment variable. Debian's 0.3.21 does not know recent Xeons and falls back to generic
// Prescott kernels, and machine images often pin OPENBLAS_CORETYPE=Haswell: on AVX-512 CPUs both leave 2-6x of
// sgemm speed unused (bench/RESULTS.md). select_blas_kernels() runs first in main(): when the loaded kernels are a
// weaker family than the CPU supports (generic < AVX2 < AVX-512), it sets OPENBLAS_CORETYPE and re-executes the
// program once, so the library loads again with the right kernels. KILN_BLAS_CORE=<name> forces a choice.
#pragma once
#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>

namespace kiln {

struct BlasInfo {
  std::string config;  // the library's build line (version, threading)
  std::string core;    // kernels in use
  std::string how;     // why these kernels
};

// 2: AVX-512 kernels, 1: AVX2 + FMA kernels, 0: anything older or unknown.
inline int blas_core_rank(std::string_view core) {
  for (std::string_view c : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (core == c) return 2;
  for (std::string_view c : {"Haswell", "Zen", "Excavator", "Steamroller"})
    if (core == c) return 1;
  return 0;
}

// The OpenBLAS core of the best kernel family this CPU can run, or "" when it has neither AVX2 nor AVX-512.
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

// Call at the top of main(), before any BLAS use. May not return (re-executes the program once).
inline BlasInfo select_blas_kernels(char** argv) {
  BlasInfo info;
  info.config = openblas_get_config();
  info.core = openblas_get_corename();
  if (const char* why = std::getenv("KILN_BLAS_REEXEC")) {
    info.how = why;
    return info;
  }
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  const std::string loaded = info.core + (env ? std::string(" from OPENBLAS_CORETYPE=") + env : " by detection");
  std::string want, why = "chosen by Kiln";
  if (const char* forced = std::getenv("KILN_BLAS_CORE")) {
    why = std::string("KILN_BLAS_CORE=") + forced;
    if (info.core == forced) {
      info.how = std::string("KILN_BLAS_CORE=") + forced;
      return info;
    }
    want = forced;
  } else {
    want = preferred_blas_core();
    if (want.empty() || blas_core_rank(info.core) >= blas_core_rank(want)) {
      info.how = env ? std::string("OPENBLAS_CORETYPE=") + env + " from the environment" : "detected by the library";
      return info;
    }
  }
  setenv("OPENBLAS_CORETYPE", want.c_str(), 1);
  setenv("KILN_BLAS_REEXEC", (why + "; the library had loaded " + loaded).c_str(), 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the kernels loaded, and say so
  info.how = "WARNING: could not re-execute with OPENBLAS_CORETYPE=" + want + "; running " + loaded;
  return info;
}

}  // namespace kiln
