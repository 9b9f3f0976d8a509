// tools/recipe_print.hpp: a whole recipe printed: the model's static plan at the recipe's phase shape
// (kiln/plan/print.hpp), its op program with the CPU backend's kernels, and the run-time defaults of its
// TrainConfig; and the flat `key value` summary that `tools/kiln plan a.hpp b.hpp` compares.
#pragma once
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "kiln/backend/cpu_names.hpp"
#include "kiln/backend/cuda_names.hpp"
#include "kiln/parallel/tensor_parallel.hpp"
#include "kiln/plan/hardware.hpp"
#include "kiln/plan/print.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/config.hpp"
#include "kiln/train/optimizer.hpp"  // decays()

namespace kiln {

// Phase I's run-time defaults as `key value` pairs (train.lr, train.steps, ...).
template <RecipeType Recipe, int I>
std::vector<std::pair<std::string, std::string>> train_summary() {
  using S = phase_stage<Recipe, I>;
  const TrainConfig c = phase_defaults<Recipe>(I);
  const auto str = [](auto v) { return plan::value_text(v); };
  std::string nd;
  for (const auto& p : c.no_decay) nd += (nd.empty() ? "" : ",") + p;
  return {
      {"train.lr", str(c.lr)},
      {"train.min_lr", str(c.min_lr)},
      {"train.schedule", schedule_name(c.schedule)},
      {"train.warmup", str(c.warmup)},
      {"train.steps", str(c.steps)},
      {"train.grad_accum", c.global_batch > 0 ? "global_batch / ranks" : str(c.grad_accum)},
      {"train.global_batch", c.global_batch > 0 ? str(c.global_batch) : "grad_accum x ranks"},
      {"train.tokens_per_step", str(long(S::micro_batch) * S::seq_len * (c.global_batch > 0 ? c.global_batch : c.grad_accum)) +
                                    (c.global_batch > 0 ? "" : " per rank")},
      {"train.weight_decay", str(c.weight_decay)},
      {"train.clip", str(c.clip)},
      {"train.betas", str(c.beta1) + "," + str(c.beta2)},
      {"train.seed", str(c.seed)},
      {"train.no_decay", nd.empty() ? "none" : nd},
  };
}

// The whole recipe as `key value` lines: the first phase's model, shape and run-time defaults, and every phase's
// name, shape and RoPE theta.
template <RecipeType Recipe>
std::vector<std::pair<std::string, std::string>> recipe_summary(const char* name) {
  using S = phase_stage<Recipe, 0>;
  std::vector<std::pair<std::string, std::string>> kv = {{"recipe", name}};
  for (auto& p : plan::model_summary<phase_model<Recipe, 0>, S::micro_batch, S::seq_len>()) kv.push_back(std::move(p));
  std::string phases;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    ((phases += (I ? "," : "") + std::string(phases_of<Recipe>::names[I]) + ":" +
                std::to_string(phase_stage<Recipe, I>::micro_batch) + "x" + std::to_string(phase_stage<Recipe, I>::seq_len) +
                "@" + plan::value_text(phase_model<Recipe, I>::positional::theta)), ...);
  }(std::make_integer_sequence<int, phases_of<Recipe>::count>{});
  kv.emplace_back("phases", phases);
  for (auto& p : train_summary<Recipe, 0>()) kv.push_back(std::move(p));
  return kv;
}

template <RecipeType Recipe, int I>
void print_phase(std::ostream& os, const char* name, bool program, bool cuda) {
  using M = phase_model<Recipe, I>;
  using S = phase_stage<Recipe, I>;
  using Phs = phases_of<Recipe>;
  const TrainConfig c = phase_defaults<Recipe>(I);
  if (Phs::count > 1) os << "Phase " << I + 1 << "/" << Phs::count << ": " << Phs::names[I] << "\n\n";
  plan::print_model<M, S::micro_batch, S::seq_len>(os, decays(c.no_decay), I == 0);
  os << "\nRun-time defaults (override on the command line; no recompile)\n";
  for (const auto& [k, v] : train_summary<Recipe, I>()) os << "  " << k.substr(6) << " = " << v << "\n";
  if (program) {
    os << "\n";
    if (!cuda) {
      plan::print_program<plan::TrainProgram<M, S::micro_batch, S::seq_len>>(os, backend::cpu::kernel_name<M>);
    } else if (const char* why = backend::cuda::unsupported<M>()) {
      os << "CUDA backend: " << why << "\n";
    } else {
      plan::print_program<plan::TrainProgram<M, S::micro_batch, S::seq_len, plan::Bf16Mixed>>(
          os, backend::cuda::kernel_name<M>);
    }
  }
  os << "\n";
}

// The recipe's layout over `ranks` ranks (train_main.cpp, kiln/parallel): what each rank holds and sends per step.
// DP: every rank holds the whole state (the plan above); the step's global batch is ranks x grad_accum
// micro-batches; a rank sends and receives 2 (ranks - 1) / ranks of the fp32 gradient buffer in a ring all-reduce
// (MPI, NCCL). ZeRO-1: each rank holds 1 / ranks of the AdamW moments and of the reduced gradients they are
// updated from; it sends and receives (ranks - 1) / ranks of the gradients in the reduce-scatter and of the fp32
// weights in the all-gather (the all-reduce's volume, in two halves). Small messages besides: the loss, the norm's
// chunk sums (ZeRO-1), the stop flag, and 8 bytes per collective to each other rank for the timeout's messages.
template <RecipeType Recipe>
void print_layout(std::ostream& os, int ranks, bool cuda) {
  using L = layout_of<Recipe>;
  using Phs = phases_of<Recipe>;
  using M0 = typename Recipe::model;
  const LayoutShape shape = resolve_layout<L>(ranks);
  const int n = shape.dp, t = shape.tp;
  const bool zero = L::zero == 1 && n > 1;
  // TP (Megatron's split): the matrices, the embedding and the LM head are cut t ways; the norms are replicated.
  // A rank holds tp_local's table (kiln/parallel/tensor_parallel.hpp) and runs its programs: its plan is exact.
  using Local0 = std::conditional_t<(L::tp > 1), tp_local<M0, L::tp>, M0>;
  const double floats = double(plan::ParamPlan<Local0>::table.total);  // per rank
  const double grads = floats * 4;
  os << L::text() << " over " << ranks << " ranks (" << (cuda ? "NCCL" : "MPI") << "): data parallel over " << n;
  if (t > 1) os << " x tensor parallel over " << t << " (each rank 1/" << t << " of every matrix, the embedding and the LM head)";
  os << (zero ? ", the optimizer state sharded over the " + std::to_string(n) + " data-parallel ranks (ZeRO-1)"
              : t > 1 ? "" : ", every rank holding the plan above")
     << "\n";
  const auto mib = [](double b) { return plan::human_bytes(b); };
  const auto rank_line = [&]<class Mem>(Mem, const char* what) {  // Mem: the rank's model's plan
    const double dp_share = zero ? std::ceil(floats / double(n)) : floats;
    const double adam = 2 * dp_share * 4, reduced = zero ? dp_share * 4 : 0.0;
    const double total = double(Mem::total) - double(Mem::adam) + adam + reduced;
    os << "  per rank (" << what << "): parameters " << mib(double(Mem::params + Mem::master)) << ", gradients "
       << mib(double(Mem::grads)) << (zero ? " + their reduced shard " + mib(reduced) : std::string())
       << ", AdamW moments " << mib(adam) << (zero ? " (1/" + std::to_string(n) + ")" : std::string())
       << ", activations " << mib(double(Mem::arena)) << ": " << mib(total) << " in all";
  };
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (([&] {
       using S = phase_stage<Recipe, I>;
       using Mi = phase_model<Recipe, I>;
       const TrainConfig c = phase_defaults<Recipe>(I);
       const std::string ph = Phs::count > 1 ? std::string(Phs::names[I]) + ": " : std::string();
       KILN_CHECK(c.global_batch % n == 0, ph, "the recipe's global batch of ", c.global_batch, " micro-batches does not "
                  "split among ", n, " data-parallel ranks");
       const int accum = c.global_batch > 0 ? c.global_batch / n : c.grad_accum;
       const double tokens = double(n) * double(accum) * S::micro_batch * S::seq_len;
       os << "  " << ph << "global batch " << n << " x " << accum << " micro-batches of " << S::micro_batch << " x "
          << S::seq_len << " = " << plan::with_commas(size_t(tokens)) << " tokens a step ("
          << (c.global_batch > 0 ? "the recipe's global batch of " + std::to_string(c.global_batch) + ", shared out"
                                 : std::string("--grad-accum is per ") + (t > 1 ? "data-parallel group" : "rank"))
          << ")\n";
       if (I == 0) {
         using Li = std::conditional_t<(L::tp > 1), tp_local<Mi, L::tp>, Mi>;
         if (cuda) {
           rank_line(plan::MemoryPlan<Li, S::micro_batch, S::seq_len, plan::Bf16Mixed>{}, "CUDA, bf16 + fp32 master");
           os << " (one process: " << mib(double(plan::MemoryPlan<Mi, S::micro_batch, S::seq_len, plan::Bf16Mixed>::total))
              << ")\n";
         } else {
           rank_line(plan::MemoryPlan<Li, S::micro_batch, S::seq_len, plan::Fp32>{}, "CPU, fp32");
           os << " (one process: " << mib(double(plan::MemoryPlan<Mi, S::micro_batch, S::seq_len, plan::Fp32>::total))
              << ")\n";
         }
       }
       if (t > 1) {  // per micro-batch: two all-reduces of the layer's (rows, hidden) output forward and two of its
                     // input gradient backward, the embedding's output, the LM head's input gradient; the
                     // vocabulary-parallel loss's max, sum and target logit per row
         const double rows = double(S::micro_batch) * S::seq_len, bytes = cuda ? 2.0 : 4.0;
         const double per_micro = (4.0 * Mi::layers + 2.0) * rows * Mi::hidden * bytes + 3.0 * rows * 4.0;
         const double volume = per_micro * accum * 2.0 * double(t - 1) / double(t);
         os << "  " << ph << "per rank and step, inside its tensor-parallel group: " << 4 * Mi::layers + 2
            << " all-reduces of a (" << plan::with_commas(size_t(rows)) << ", " << Mi::hidden << ") activation per "
            << "micro-batch, and the loss's max and sums: " << mib(per_micro) << " a micro-batch; a ring sends and "
            << "receives " << mib(volume) << " each way a step\n";
       }
     }()),
     ...);
  }(std::make_integer_sequence<int, Phs::count>{});
  if (n == 1) {
    os << "\n";
  } else if (!zero) {
    const double ring = grads * 2.0 * double(n - 1) / double(n);
    os << "  per rank and step: the all-reduce of the fp32 gradients (" << mib(grads) << "): a ring sends and receives "
       << mib(ring) << " each way, in buckets during the backward" << (cuda ? " (NCCL, on a side stream)" : "")
       << "; small messages besides: the loss, the stop flag, 8 B per collective to each other rank\n\n";
  } else {
    const double half = grads * double(n - 1) / double(n);
    os << "  per rank and step: the reduce-scatter of the fp32 gradients (" << mib(grads) << ") sends and receives "
       << mib(half) << " each way, in buckets during the backward; the all-gather of the updated fp32 weights "
       << mib(half) << "; small messages besides: the loss, the norm's chunk sums, the stop flag\n\n";
  }
}

// One layout's memory per GPU at one phase shape: TP t where the model divides t ways (and the CUDA kernels take
// the cut), and with t == 1 ZeRO-1 over the data-parallel ranks (the moments' 1/dp and the reduced shard). A
// preference phase holds its reference model besides (bf16 parameters), and is not built with TP.
template <DecoderModel Mi, class S, int t>
void gpu_memory_row(std::ostream& os, const plan::GpuKind& g, int gpus, bool& fits, bool preference) {
  if constexpr (Mi::heads % t == 0 && Mi::kv_heads % t == 0 && Mi::ffn % t == 0 && Mi::vocab % t == 0 &&
                (Mi::ffn / t) % 8 == 0) {
    using L = std::conditional_t<(t > 1), tp_local<Mi, t>, Mi>;
    using Mem = plan::MemoryPlan<L, S::micro_batch, S::seq_len, plan::Bf16Mixed>;
    if (preference && t > 1) return;
    const double ref = preference ? double(Mem::reference) : 0.0;
    const auto row = [&](const std::string& layout, double bytes) {
      fits |= bytes <= g.memory_bytes;
      os << " " << layout << " " << plan::human_bytes(bytes) << (bytes <= g.memory_bytes ? " fits" : " too big") << ";";
    };
    row("TP " + std::to_string(t) + (preference ? " with the reference model" : ""), double(Mem::total) + ref);
    const int dp = gpus / t;
    if (t == 1 && dp > 1) {
      const double share = std::ceil(double(plan::ParamPlan<L>::table.total) / dp) * 4;
      row("ZeRO-1 over " + std::to_string(dp), double(Mem::total) - double(Mem::adam) + 2 * share + share + ref);
    }
  }
}

// What plan --gpu asks (tools/plan.cpp): the GPU, the rate, and either a GPU count or a number of days; params and
// tokens (> 0) replace the recipe's N and D in the 6 N D line (to reproduce an estimate made with rounded numbers).
struct GpuPlanAsk {
  const plan::GpuKind* gpu;
  plan::Throughput rate;
  int gpus = 0;
  double days = 0, params = 0, tokens = 0, storage_gbps = 2.0;
};

// "How many GPUs?": every phase's tokens and training FLOPs (the plan's per token, attention included, and 6 N D),
// GPUs for the days asked or days for the GPUs asked, each phase's memory per GPU under the layouts the CUDA
// backend builds (TP 1 / 2 / 4 / 8 where the model divides, ZeRO-1 over the data-parallel ranks), and the
// checkpoint's size and write time.
template <RecipeType Recipe>
void print_gpu_plan(std::ostream& os, const GpuPlanAsk& a) {
  using Phs = phases_of<Recipe>;
  using M0 = typename Recipe::model;
  const plan::GpuKind& g = *a.gpu;
  char b[512];
  const auto gib = [](double x) { return plan::human_bytes(x); };
  const auto sci = [](double x) {
    char t[32];
    std::snprintf(t, sizeof t, "%.3g", x);
    return std::string(t);
  };
  std::snprintf(b, sizeof b, "GPU plan: %s, %.0f TFLOP/s bf16 %s x MFU %.0f%% = %.0f TFLOP/s per GPU kept; %s of memory\n",
                g.name, a.rate.tflops, a.rate.tflops == g.bf16_tflops ? "(datasheet, dense)" : "(given: --tflops)",
                a.rate.mfu * 100, a.rate.tflops * a.rate.mfu, gib(g.memory_bytes).c_str());
  os << b << "  source: " << g.source << "\n";
  double flops = 0, tokens = 0;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (([&] {
       using S = phase_stage<Recipe, I>;
       using Mi = phase_model<Recipe, I>;
       const TrainConfig c = phase_defaults<Recipe>(I);
       const bool global = c.global_batch > 0;
       const double per_step =
           double(global ? c.global_batch : c.grad_accum) * double(S::micro_batch) * double(S::seq_len);
       const double t = double(c.steps) * per_step, f = plan::Flops<Mi, S>::train_per_token * t;
       tokens += t, flops += f;
       std::snprintf(b, sizeof b, "  %-10s %s steps x %s tokens = %s tokens; %s FLOP per token (attention at %d "
                     "positions %.1f%%): %s FLOP%s\n", std::string(Phs::names[I]).c_str(),
                     plan::with_commas(size_t(c.steps)).c_str(), plan::with_commas(size_t(per_step)).c_str(),
                     sci(t).c_str(), sci(plan::Flops<Mi, S>::train_per_token).c_str(), S::seq_len,
                     100 * plan::Flops<Mi, S>::attention_forward_per_token / plan::Flops<Mi, S>::forward_per_token,
                     sci(f).c_str(), global ? "" : " (no global batch in the recipe: one data-parallel rank's)");
       os << b;
     }()),
     ...);
  }(std::make_integer_sequence<int, Phs::count>{});
  const double n = a.params > 0 ? a.params : double(plan::ParamPlan<M0>::parameters);
  const double d = a.tokens > 0 ? a.tokens : tokens;
  const double six = plan::six_nd(n, d);
  const auto answer = [&](double f) {
    if (a.days > 0) {
      std::snprintf(b, sizeof b, "%.0f GPUs for %g days", std::ceil(plan::gpus_for(f, a.rate, a.days)), a.days);
    } else {
      const double days = plan::days_for(f, a.rate, a.gpus), s = days * plan::kSecondsPerDay;
      if (days >= 1) std::snprintf(b, sizeof b, "%.1f days (%.1f weeks) on %d GPUs", days, days / 7, a.gpus);
      else if (s >= 3600) std::snprintf(b, sizeof b, "%.1f hours on %d GPUs", s / 3600, a.gpus);
      else std::snprintf(b, sizeof b, "%.1f seconds on %d GPUs", s, a.gpus);
    }
    return std::string(b);
  };
  os << "  the plan's count (matmuls, LM head and causal attention, forward + 2 x backward): " << sci(flops)
     << " FLOP: " << answer(flops) << "\n";
  os << "  6 N D with N = " << sci(n) << (a.params > 0 ? " (given)" : " parameters") << ", D = " << sci(d)
     << (a.tokens > 0 ? " tokens (given)" : " tokens") << ": " << sci(six) << " FLOP: " << answer(six) << "\n";
  // memory per GPU, per phase, under each layout the CUDA backend builds
  const int gpus = a.days > 0 ? int(std::ceil(plan::gpus_for(flops, a.rate, a.days))) : a.gpus;
  os << "  memory per GPU (the CUDA backend's plan: bf16 parameters, fp32 master weights, gradients and moments, "
     << "the activation arena) against " << gib(g.memory_bytes) << ":\n";
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (([&] {
       using S = phase_stage<Recipe, I>;
       using Mi = phase_model<Recipe, I>;
       os << "    " << Phs::names[I] << " (" << S::micro_batch << " x " << S::seq_len << "):";
       bool fits = false;
       const bool pref = phase_t<Recipe, I>::objective == Objective::preference;
       gpu_memory_row<Mi, S, 1>(os, g, gpus, fits, pref);
       gpu_memory_row<Mi, S, 2>(os, g, gpus, fits, pref);
       gpu_memory_row<Mi, S, 4>(os, g, gpus, fits, pref);
       gpu_memory_row<Mi, S, 8>(os, g, gpus, fits, pref);
       if (!fits)
         os << " no layout Kiln builds fits: its activations need recomputation or sequence / context parallelism, "
               "which are not built";
       os << "\n";
     }()),
     ...);
  }(std::make_integer_sequence<int, Phs::count>{});
  const double ck = 12.0 * double(plan::ParamPlan<M0>::table.total);  // fp32 parameters and two moments
  const TrainConfig c0 = phase_defaults<Recipe>(0);
  std::snprintf(b, sizeof b, "  checkpoint: %s (fp32 parameters and AdamW moments); %.0f s to write at %g GB/s "
                "(--storage-gbps: measure your file system)", gib(ck).c_str(), ck / (a.storage_gbps * 1e9),
                a.storage_gbps);
  os << b;
  if (c0.checkpoint_every > 0) os << ", every " << c0.checkpoint_every << " steps";
  os << "\n\n";
}

// Every phase: its shape and model, memory and (program) its training op program with the CPU kernels (cuda: the
// CUDA backend's program, bf16, with its kernels).
template <RecipeType Recipe>
void print_recipe(std::ostream& os, const char* name, bool program, bool cuda = false) {
  using Phs = phases_of<Recipe>;
  os << "Recipe " << name << (Phs::count > 1 ? " (" + std::to_string(Phs::count) + " phases)" : "") << "\n\n";
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (print_phase<Recipe, I>(os, name, program, cuda), ...);
  }(std::make_integer_sequence<int, Phs::count>{});
}

}  // namespace kiln
