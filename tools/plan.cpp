// tools/plan.cpp: prints a recipe's static plan without compiling any kernel (fast to build for any model size).
//   plan_<recipe>                        the whole plan: model, parameter table, FLOPs, memory, run-time defaults,
//                                        and the training step's op program with its buffers
//   plan_<recipe> --no-program           the same without the op program
//   plan_<recipe> --backend cuda         the CUDA backend's program (bf16, its kernels) instead of the CPU's
//   plan_<recipe> --summary              `key value` lines, for comparing two recipes (tools/kiln plan a.hpp b.hpp)
//   plan_<recipe> --hf-config <file>     does a Hugging Face config.json fit this recipe's model? Prints "match"
//                                        (exit 0) or every mismatching field (exit 3); tools/kiln import uses it
//   plan_<recipe> --gpu h100|h200|a100 (--gpus N | --days D) [--mfu 0.3] [--tflops T] [--params N --tokens D]
//                                        how many GPUs, how long: every phase's tokens and training FLOPs (the
//                                        plan's, attention included, and 6 N D), GPUs for D days or days on N GPUs,
//                                        memory per GPU under each layout, the checkpoint (kiln/plan/hardware.hpp)
//   plan_<recipe> --check-attention [--sm 90]
//                                        builds cuDNN's forward and backward attention graphs of every phase (1
//                                        document, one per row, one per token) and runs cuDNN's validation for that
//                                        GPU generation, which needs no GPU; exit 4 names the first it refuses
#include KILN_RECIPE_HEADER
#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>

#include "kiln/io/hf_config.hpp"
#include "kiln/recipe.hpp"
#include "recipe_print.hpp"
#if defined(KILN_HAVE_CUDNN)
#include "kiln/backend/cuda/sdpa.hpp"
#endif

namespace {

// --check-attention: every phase's graphs for sm_<sm>. Returns the exit status.
int check_attention(int sm) {
#if defined(KILN_HAVE_CUDNN)
  using namespace kiln;
  int status = 0;
  std::cout << "cuDNN " << backend::cuda::sdpa_cudnn_version() << ", attention graphs validated for sm_" << sm << "\n";
  [&]<int... I>(std::integer_sequence<int, I...>) {
    auto phase = [&]<int P>() {
      using M = phase_model<KILN_RECIPE, P>;
      using S = phase_stage<KILN_RECIPE, P>;
      const std::string_view name = phases_of<KILN_RECIPE>::names[P];
      if (const char* why = backend::cuda::unsupported<M>()) {
        std::cout << "  " << name << ": not on the CUDA backend (" << why << ")\n";
        return;
      }
      if (M::head_dim % 16 != 0) {
        std::cout << "  " << name << ": head_dim " << M::head_dim << " is not a multiple of 16: the CUDA backend "
                  << "runs Kiln's attention kernel, not cuDNN's\n";
        return;
      }
      const int B = S::micro_batch, T = S::seq_len;
      const backend::cuda::SdpaShape shape{M::heads, M::kv_heads, M::head_dim, B * T, T,
                                           1.0f / std::sqrt(float(M::head_dim))};
      for (int docs : {1, B, B * T}) {  // in the slot counts they run with (sdpa_bucket)
        if (status) return;
        const std::string e = backend::cuda::sdpa_validate(shape, backend::cuda::sdpa_bucket(docs, B * T), sm);
        if (!e.empty()) {
          std::cout << "  " << name << ": refused: " << e << "\n";
          status = 4;
        }
      }
      if (!status)
        std::cout << "  " << name << " (" << B << " x " << T << ", " << M::heads << " / " << M::kv_heads
                  << " heads of " << M::head_dim << "): forward and backward valid with 1, " << B << " and "
                  << B * T << " documents\n";
    };
    (phase.template operator()<I>(), ...);
  }(std::make_integer_sequence<int, phases_of<KILN_RECIPE>::count>{});
  return status;
#else
  (void)sm;
  std::cerr << "kiln plan: --check-attention needs cuDNN's attention, which this build does not have "
               "(cmake/KilnCudnn.cmake says why at configure time)\n";
  return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  static_assert(kiln::RecipeType<KILN_RECIPE>, "a recipe needs `model` (a Decoder), `stage` and `defaults()`");
  static_assert(kiln::backend::cpu::check<KILN_RECIPE::model>());  // what the CPU kernels support, in sentences
  CLI::App app{std::string("The static plan of recipe ") + KILN_RECIPE_NAME};
  bool summary = false, no_program = false;
  std::string hf_config;
  app.add_flag("--summary", summary, "print `key value` lines");
  app.add_flag("--no-program", no_program, "leave out the op program and its buffers");
  std::string backend = "cpu";
  app.add_option("--backend", backend, "whose op program to print: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--hf-config", hf_config, "check a Hugging Face config.json against this recipe's model");
  bool check = false;
  int sm = 90;
  app.add_flag("--check-attention", check, "validate cuDNN's attention graphs of every phase (no GPU needed)");
  app.add_option("--sm", sm, "the GPU generation --check-attention validates for (90: H100 / H200)")
      ->check(CLI::Range(80, 130))->capture_default_str();
  int ranks = 1;
  app.add_option("--ranks", ranks, "ranks of the recipe's layout: what each holds and sends per step (1: one process)")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  std::string gpu;
  kiln::GpuPlanAsk ask{};
  ask.rate.mfu = 0.3;
  app.add_option("--gpu", gpu, "plan the run on this GPU: " + kiln::plan::gpu_keys());
  app.add_option("--gpus", ask.gpus, "with --gpu: how many days on this many GPUs")->check(CLI::Range(1, 1 << 24));
  app.add_option("--days", ask.days, "with --gpu: how many GPUs to finish in this many days")
      ->check(CLI::PositiveNumber);
  app.add_option("--mfu", ask.rate.mfu, "with --gpu: the fraction of the GPU's rate the run keeps")
      ->check(CLI::Range(0.001, 1.0))->capture_default_str();
  app.add_option("--tflops", ask.rate.tflops, "with --gpu: a measured bf16 TFLOP/s (the fryer's) for the datasheet's")
      ->check(CLI::PositiveNumber);
  app.add_option("--params", ask.params, "with --gpu: N of the 6 N D line instead of the recipe's parameters")
      ->check(CLI::PositiveNumber);
  app.add_option("--tokens", ask.tokens, "with --gpu: D of the 6 N D line instead of the phases' tokens")
      ->check(CLI::PositiveNumber);
  app.add_option("--storage-gbps", ask.storage_gbps, "with --gpu: the checkpoint's write rate, GB/s")
      ->check(CLI::PositiveNumber)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (check) return check_attention(sm);
    if (!gpu.empty()) {
      ask.gpu = kiln::plan::find_gpu(gpu);
      KILN_CHECK(ask.gpu, "--gpu ", gpu, ": not a GPU the planner knows (", kiln::plan::gpu_keys(),
                 "); give the nearest and --tflops with its measured bf16 rate");
      KILN_CHECK((ask.gpus > 0) != (ask.days > 0), "--gpu: give --gpus N (how long on N GPUs) or --days D (how many "
                 "GPUs for D days), one of them");
      if (ask.rate.tflops == 0) ask.rate.tflops = ask.gpu->bf16_tflops;
      kiln::print_gpu_plan<KILN_RECIPE>(std::cout, ask);
      return 0;
    }
    if (!hf_config.empty()) {
      const auto diffs = kiln::io::mismatches<KILN_RECIPE::model>(kiln::io::read_hf_config(hf_config));
      if (diffs.empty()) {
        std::cout << "match\n";
        return 0;
      }
      for (const auto& d : diffs) std::cout << d << "\n";
      return 3;
    }
    if (summary) {
      for (const auto& [k, v] : kiln::recipe_summary<KILN_RECIPE>(KILN_RECIPE_NAME)) std::cout << k << " " << v << "\n";
      return 0;
    }
    kiln::print_recipe<KILN_RECIPE>(std::cout, KILN_RECIPE_NAME, !no_program, backend == "cuda");
    if (ranks > 1) kiln::print_layout<KILN_RECIPE>(std::cout, ranks, backend == "cuda");
  } catch (const std::exception& e) {  // kiln::Error and anything a library throws (JSON, filesystem)
    std::cerr << "kiln plan: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
