// kiln/plan/print.hpp: a recipe's whole static plan in words and numbers (`tools/kiln plan recipes/x.hpp`),
// and a flat `key value` summary for comparing two recipes (`tools/kiln plan a.hpp b.hpp`).
#pragma once
#include <cstdio>
#include <ostream>
#include <regex>
#include <string>
#include <vector>

#include "kiln/plan/activations.hpp"
#include "kiln/plan/flops.hpp"
#include "kiln/train/config.hpp"

namespace kiln::plan {

inline std::string human_bytes(double b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char s[32];
  std::snprintf(s, sizeof s, u ? "%.2f %s" : "%.0f %s", b, unit[u]);
  return s;
}

inline std::string with_commas(unsigned long long v) {
  std::string s = std::to_string(v);
  for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(size_t(i), ",");
  return s;
}

template <DecoderModel M>
std::string nope_layers() {
  std::string s;
  int n = 0;
  for (int l = 0; l < M::layers; ++l)
    if (!M::uses_rope(l)) s += (n++ ? "," : "") + std::to_string(l);
  return n ? s : "none";
}

// Memory of one rank in bytes, as this build allocates it.
template <class Recipe>
struct MemoryPlan {
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  static constexpr size_t params = ParamPlan<M>::table.total * sizeof(float);
  static constexpr size_t grads = params;
  static constexpr size_t adam = 2 * params;
  static constexpr size_t activations = ActivationPlan<M, S>::total_floats * sizeof(float);
  static constexpr size_t total_cpu = params + grads + adam + activations;
  // The CUDA backend's intended layout (bf16 weights and activations, fp32 master weights, gradients and
  // moments): an estimate until that backend exists.
  static constexpr size_t cuda_estimate = ParamPlan<M>::parameters * (2 + 4 + 4 + 8) + activations / 2;
};

template <class Recipe>
std::vector<std::pair<std::string, std::string>> plan_summary(const char* name) {
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  using P = ParamPlan<M>;
  using F = Flops<M, S>;
  using Mem = MemoryPlan<Recipe>;
  const TrainConfig c = Recipe::defaults();
  auto str = [](auto v) {
    if constexpr (std::is_floating_point_v<decltype(v)>) {
      char s[32];
      std::snprintf(s, sizeof s, "%g", double(v));
      return std::string(s);
    } else {
      return std::to_string(v);
    }
  };
  std::vector<std::pair<std::string, std::string>> kv = {
      {"recipe", name},
      {"model.vocab", str(M::vocab)},
      {"model.hidden", str(M::hidden)},
      {"model.layers", str(M::layers)},
      {"model.heads", str(M::heads)},
      {"model.kv_heads", str(M::kv_heads)},
      {"model.head_dim", str(M::head_dim)},
      {"model.ffn", str(M::ffn)},
      {"model.positional", M::positional::name},
      {"model.rope_theta", str(M::positional::theta)},
      {"model.nope_layers", nope_layers<M>()},
      {"model.qk_norm", M::qk_norm ? "true" : "false"},
      {"model.tied_embeddings", M::tied ? "true" : "false"},
      {"model.rms_norm_eps", str(M::eps)},
      {"model.z_loss", str(M::z_loss)},
      {"stage.micro_batch", str(S::micro_batch)},
      {"stage.seq_len", str(S::seq_len)},
      {"params.total", with_commas(P::parameters)},
      {"params.embedding", with_commas(P::embedding_parameters)},
      {"params.tensors", str(P::count)},
      {"flops.per_token.forward", str(F::forward_per_token)},
      {"flops.per_token.train", str(F::train_per_token)},
      {"memory.cpu.params", human_bytes(double(Mem::params))},
      {"memory.cpu.grads", human_bytes(double(Mem::grads))},
      {"memory.cpu.adam", human_bytes(double(Mem::adam))},
      {"memory.cpu.activations", human_bytes(double(Mem::activations))},
      {"memory.cpu.total", human_bytes(double(Mem::total_cpu))},
      {"memory.cuda_estimate.total", human_bytes(double(Mem::cuda_estimate))},
      {"train.lr", str(c.lr)},
      {"train.min_lr", str(c.min_lr)},
      {"train.schedule", schedule_name(c.schedule)},
      {"train.warmup", str(c.warmup)},
      {"train.steps", str(c.steps)},
      {"train.grad_accum", str(c.grad_accum)},
      {"train.tokens_per_step", str(long(S::micro_batch) * S::seq_len * c.grad_accum)},
      {"train.weight_decay", str(c.weight_decay)},
      {"train.clip", str(c.clip)},
      {"train.betas", str(c.beta1) + "," + str(c.beta2)},
      {"train.seed", str(c.seed)},
  };
  std::string nd;
  for (const auto& p : c.no_decay) nd += (nd.empty() ? "" : ",") + p;
  kv.emplace_back("train.no_decay", nd.empty() ? "none" : nd);
  return kv;
}

template <class Recipe>
void print_plan(std::ostream& os, const char* name) {
  using M = typename Recipe::model;
  using S = typename Recipe::stage;
  using P = ParamPlan<M>;
  using A = ActivationPlan<M, S>;
  using F = Flops<M, S>;
  using Mem = MemoryPlan<Recipe>;
  const TrainConfig c = Recipe::defaults();
  char line[256];
  os << "Recipe " << name << "\n\nModel\n";
  std::snprintf(line, sizeof line,
                "  decoder: vocab %d, hidden %d, %d layers, ffn %d (SwiGLU), RMSNorm eps %g, %s embeddings, z-loss %g\n",
                M::vocab, M::hidden, M::layers, M::ffn, M::eps, M::tied ? "tied" : "untied", M::z_loss);
  os << line;
  const char* kind = M::kv_heads == M::heads ? "MHA" : M::kv_heads == 1 ? "MQA" : "GQA";
  std::snprintf(line, sizeof line, "  attention: %d heads, %d KV heads (%s, %d query heads per KV head), head_dim %d%s\n",
                M::heads, M::kv_heads, kind, M::heads / M::kv_heads, M::head_dim, M::qk_norm ? ", QK-norm" : "");
  os << line;
  std::snprintf(line, sizeof line, "  positions: %s theta %g; NoPE layers: %s\n", M::positional::name, M::positional::theta,
                nope_layers<M>().c_str());
  os << line;
  std::snprintf(line, sizeof line, "  stage: micro-batch %d x sequence %d = %d tokens; causal, intra-document masking\n",
                S::micro_batch, S::seq_len, S::micro_batch * S::seq_len);
  os << line << "\nParameters (flat fp32 buffer, HF names; [out, in])\n";
  std::vector<std::regex> nd;
  for (const auto& p : c.no_decay) nd.emplace_back(p);
  for (const auto& e : P::table.entries) {
    std::string n(e.name.view());
    bool decay = true;
    for (const auto& re : nd) decay = decay && !std::regex_search(n, re);
    std::string shape = e.cols ? "[" + std::to_string(e.rows) + ", " + std::to_string(e.cols) + "]"
                               : "[" + std::to_string(e.rows) + "]";
    std::snprintf(line, sizeof line, "  %-48s %-14s %14s  @%-12zu %s\n", n.c_str(), shape.c_str(),
                  with_commas(e.count()).c_str(), e.offset, decay ? "" : "no-decay");
    os << line;
  }
  if (M::tied) os << "  lm_head.weight                                   tied to model.embed_tokens.weight\n";
  const double emb_share = 100.0 * double(P::embedding_parameters) / double(P::parameters);
  os << "  total " << with_commas(P::parameters) << " parameters (" << with_commas(P::embedding_parameters)
     << " in embeddings, " << std::fixed;
  std::snprintf(line, sizeof line, "%.1f%%", emb_share);
  os << line << ")\n\nCompute per token\n";
  std::snprintf(line, sizeof line,
                "  forward %.3g FLOP (matmul %.3g + attention %.3g, causal context without document masking)\n"
                "  training (forward + backward) %.3g FLOP; per micro-batch %.3g FLOP\n",
                F::forward_per_token, F::matmul_forward_per_token, F::attention_forward_per_token, F::train_per_token,
                F::train_per_token * S::micro_batch * S::seq_len);
  os << line << "\nMemory per rank (this CPU build: fp32 everything)\n";
  auto row = [&](const char* what, size_t b) {
    std::snprintf(line, sizeof line, "  %-34s %12s\n", what, human_bytes(double(b)).c_str());
    os << line;
  };
  row("parameters", Mem::params);
  row("gradients", Mem::grads);
  row("AdamW moments (m, v)", Mem::adam);
  row("activations (arena, with reuse)", Mem::activations);
  row("  without reuse it would be", A::unshared_floats * sizeof(float));
  row("total", Mem::total_cpu);
  os << "  CUDA backend (bf16 weights/activations, fp32 master + grads + moments; estimate,\n"
        "  that backend is not built yet):\n";
  row("  total", Mem::cuda_estimate);
  os << "\nActivation arena (floats; phase = forward layer 2i, loss 2L, backward after)\n";
  std::snprintf(line, sizeof line, "  per-layer slab %zu floats; loss chunk %d rows x %d vocab\n", A::slab.size,
                A::loss_chunk, M::vocab);
  os << line << "\nRun-time defaults (override on the command line; no recompile)\n";
  for (const auto& [k, v] : plan_summary<Recipe>(name))
    if (k.rfind("train.", 0) == 0) os << "  " << k.substr(6) << " = " << v << "\n";
}

}  // namespace kiln::plan
