// kiln/plan/hardware.hpp: "how many GPUs, how long?" from a recipe's FLOPs and memory, before renting any.
//   kGpus                 the GPU kinds the planner knows, each figure with its source; a measured TFLOP/s (the
//                         fryer's bf16 GEMM, a benchmark) replaces the datasheet's with --tflops
//   gpus_for(F, g, d)     GPUs to do F FLOPs in d days at g's rate x MFU: F / (rate x MFU x d x 86,400 s)
//   days_for(F, g, n)     days for F FLOPs on n GPUs
// The playbook's count (SmolLM3: 6 N D = 6 x 3e9 x 11e12 = 1.98e23 FLOPs at 30% MFU of a measured 720 TFLOP/s for
// 4 weeks: ~379 GPUs) is gpus_for(six_nd(3e9, 11e12), {720, 0.3}, 28); Kiln's own count adds the attention's FLOPs
// (plan/flops.hpp: the causal upper bound; document masking makes the real work smaller).
#pragma once
#include <cmath>
#include <string>
#include <string_view>

namespace kiln::plan {

struct GpuKind {
  const char* key;            // --gpu
  const char* name;
  double bf16_tflops;         // dense bf16 tensor-core peak
  double memory_bytes;        // what the driver reports as the card's memory (nvidia-smi's memory.total)
  double hbm_tbps;
  const char* source;
};

inline constexpr GpuKind kGpus[] = {
    {"h100", "NVIDIA H100 SXM5 80GB", 989.4, 81559.0 * 1048576, 3.35,
     "NVIDIA H100 Tensor Core GPU datasheet, SXM5: 989 TFLOP/s dense BF16 (1,979 with sparsity), 80 GB HBM3 at "
     "3.35 TB/s; memory as nvidia-smi reports it, 81,559 MiB"},
    {"h200", "NVIDIA H200 SXM 141GB", 989.4, 143771.0 * 1048576, 4.8,
     "NVIDIA H200 Tensor Core GPU datasheet, SXM: 989 TFLOP/s dense BF16, 141 GB HBM3e at 4.8 TB/s; memory as "
     "nvidia-smi reports it, 143,771 MiB"},
    {"a100", "NVIDIA A100 SXM4 80GB", 312.0, 81920.0 * 1048576, 2.039,
     "NVIDIA A100 Tensor Core GPU datasheet, SXM4 80GB: 312 TFLOP/s dense BF16, 80 GB HBM2e at 2,039 GB/s; memory "
     "as nvidia-smi reports it, 81,920 MiB"},
};

inline const GpuKind* find_gpu(std::string_view key) {
  for (const GpuKind& g : kGpus)
    if (key == g.key) return &g;
  return nullptr;
}
inline std::string gpu_keys() {
  std::string s;
  for (const GpuKind& g : kGpus) s += (s.empty() ? "" : ", ") + std::string(g.key);
  return s;
}

// The rate a plan assumes: TFLOP/s per GPU (the datasheet's, or a measured one) and the fraction of it a run keeps.
struct Throughput {
  double tflops, mfu;
  double flops_per_second() const { return tflops * 1e12 * mfu; }
};

inline constexpr double kSecondsPerDay = 86400.0;
// The training FLOPs of the usual estimate: 6 per parameter per token (forward 2, backward 4), no attention.
constexpr double six_nd(double params, double tokens) { return 6.0 * params * tokens; }
inline double gpus_for(double flops, Throughput t, double days) {
  return flops / (t.flops_per_second() * days * kSecondsPerDay);
}
inline double days_for(double flops, Throughput t, double gpus) {
  return flops / (t.flops_per_second() * gpus * kSecondsPerDay);
}

}  // namespace kiln::plan
