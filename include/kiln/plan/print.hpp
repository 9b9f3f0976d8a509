// kiln/plan/print.hpp: a model's static plan at one phase shape in words and numbers: the model, the parameter
// table, FLOPs, memory per rank for the CPU (fp32) and CUDA (bf16 + fp32 master) layouts, and the op program with
// its buffers (`tools/kiln plan recipes/x.hpp`); a flat `key value` summary for comparing two recipes. Run-time
// defaults of a recipe are printed by tools/ (they belong to the train layer, above this one).
#pragma once
#include <cstdio>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "kiln/plan/flops.hpp"
#include "kiln/plan/program.hpp"

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

// A number as the plan prints it: integers whole, floating point with %g.
template <class T>
std::string value_text(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    char s[32];
    std::snprintf(s, sizeof s, "%g", double(v));
    return s;
  } else {
    return std::to_string(v);
  }
}

inline std::string dims_text(const BufferInfo& b) {
  std::string t = "(";
  for (int i = 0; i < b.rank; ++i) t += (i ? ", " : "") + std::to_string(b.dims[i]);
  return t + ")";
}

inline std::string flops_text(double f) {
  if (f == 0) return "-";
  char s[32];
  std::snprintf(s, sizeof s, "%.3g", f);
  return s;
}

// `key value` lines of the model at one phase shape (no run-time settings: tools/ add those).
template <DecoderModel M, int B, int T>
std::vector<std::pair<std::string, std::string>> model_summary() {
  using P = ParamPlan<M>;
  using F = Flops<M, Stage<micro_batch<B>, seq_len<T>>>;
  using Cpu = MemoryPlan<M, B, T, Fp32>;
  using Gpu = MemoryPlan<M, B, T, Bf16Mixed>;
  const auto str = [](auto v) { return value_text(v); };
  return {
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
      {"stage.micro_batch", str(B)},
      {"stage.seq_len", str(T)},
      {"params.total", with_commas(P::parameters)},
      {"params.embedding", with_commas(P::embedding_parameters)},
      {"params.tensors", str(P::count)},
      {"flops.per_token.forward", str(F::forward_per_token)},
      {"flops.per_token.train", str(F::train_per_token)},
      {"program.ops", str(TrainProgram<M, B, T>::data.n_ops)},
      {"memory.cpu.params", human_bytes(double(Cpu::params))},
      {"memory.cpu.grads", human_bytes(double(Cpu::grads))},
      {"memory.cpu.adam", human_bytes(double(Cpu::adam))},
      {"memory.cpu.activations", human_bytes(double(Cpu::arena))},
      {"memory.cpu.total", human_bytes(double(Cpu::total))},
      {"memory.cuda.activations", human_bytes(double(Gpu::arena))},
      {"memory.cuda.total", human_bytes(double(Gpu::total))},
  };
}

// The model, its parameter table (no_decay: whether a tensor's HF name matches a run-time pattern), FLOPs and
// memory at one phase shape.
template <DecoderModel M, int B, int T>
void print_model(std::ostream& os, const std::function<bool(const std::string&)>& decays = {}, bool parameters = true) {
  using P = ParamPlan<M>;
  using F = Flops<M, Stage<micro_batch<B>, seq_len<T>>>;
  using Cpu = MemoryPlan<M, B, T, Fp32>;
  using Gpu = MemoryPlan<M, B, T, Bf16Mixed>;
  using TP = TrainProgram<M, B, T, Fp32>;
  char line[512];
  os << "Model\n";
  std::snprintf(line, sizeof line,
                "  decoder: vocab %d, hidden %d, %d layers, ffn %d (SwiGLU), RMSNorm eps %g, %s embeddings, z-loss %g\n",
                M::vocab, M::hidden, M::layers, M::ffn, M::eps, M::tied ? "tied" : "untied", M::z_loss);
  os << line;
  const char* kind = M::kv_heads == M::heads ? "MHA" : M::kv_heads == 1 ? "MQA" : "GQA";
  std::snprintf(line, sizeof line, "  attention: %d heads, %d KV heads (%s, %d query heads per KV head), head_dim %d%s\n",
                M::heads, M::kv_heads, kind, M::heads / M::kv_heads, M::head_dim, M::qk_norm ? ", QK-norm" : "");
  os << line;
  char yarn[160] = "";
  if constexpr (M::positional::scaling.yarn) {
    constexpr RopeScaling y = M::positional::scaling;
    std::snprintf(yarn, sizeof yarn, " (x%g over %d positions, beta %g / %g, attention factor %.4f%s)", y.factor,
                  y.original_max, y.beta_fast, y.beta_slow, y.attention(), y.truncate ? "" : ", not truncated");
  }
  std::snprintf(line, sizeof line, "  positions: %s%s theta %g; NoPE layers: %s\n", M::positional::name, yarn,
                M::positional::theta, nope_layers<M>().c_str());
  os << line;
  std::snprintf(line, sizeof line, "  stage: micro-batch %d x sequence %d = %d tokens; causal, intra-document masking\n",
                B, T, B * T);
  if (parameters) os << line << "\nParameters (flat fp32 buffer, HF names; [out, in])\n";
  else os << line << "  parameters: the table above\n";
  for (const auto& e : P::table.entries) {
    if (!parameters) break;
    std::string n(e.name.view());
    const bool decay = !decays || decays(n);
    std::string shape = e.cols ? "[" + std::to_string(e.rows) + ", " + std::to_string(e.cols) + "]"
                               : "[" + std::to_string(e.rows) + "]";
    std::snprintf(line, sizeof line, "  %-48s %-14s %14s  @%-12zu %s\n", n.c_str(), shape.c_str(),
                  with_commas(e.count()).c_str(), e.offset, decay ? "" : "no-decay");
    os << line;
  }
  if (M::tied && parameters) os << "  lm_head.weight                                   tied to model.embed_tokens.weight\n";
  const double emb_share = 100.0 * double(P::embedding_parameters) / double(P::parameters);
  std::snprintf(line, sizeof line, "%.1f%%", emb_share);
  os << "  total " << with_commas(P::parameters) << " parameters (" << with_commas(P::embedding_parameters)
     << " in embeddings, " << line << ")\n\nCompute per token\n";
  std::snprintf(line, sizeof line,
                "  forward %.3g FLOP (matmul %.3g + attention %.3g, causal context without document masking)\n"
                "  training (forward + backward) %.3g FLOP; per micro-batch %.3g FLOP (the program's ops sum to %.3g)\n",
                F::forward_per_token, F::matmul_forward_per_token, F::attention_forward_per_token, F::train_per_token,
                F::train_per_token * B * T, TP::flops());
  os << line << "\nMemory per rank, as each backend lays it out (every byte a backend allocates for the step; the\n"
                "CUDA driver's own context is not counted: the trainer reads the free memory it leaves)\n";
  std::snprintf(line, sizeof line, "  %-40s %14s %14s\n", "", "CPU (fp32)", "CUDA (bf16)");
  os << line;
  auto row = [&](const char* what, size_t a, size_t b) {
    std::snprintf(line, sizeof line, "  %-40s %14s %14s\n", what, human_bytes(double(a)).c_str(),
                  b == size_t(-1) ? "-" : human_bytes(double(b)).c_str());
    os << line;
  };
  row("parameters (as the kernels read them)", Cpu::params, Gpu::params);
  row("fp32 master weights", Cpu::master, Gpu::master);
  row("gradients (fp32)", Cpu::grads, Gpu::grads);
  row("AdamW moments m, v (fp32)", Cpu::adam, Gpu::adam);
  row("activation arena (with reuse)", Cpu::arena, Gpu::arena);
  row("  without reuse it would be", TP::data.unshared_bytes, TrainProgram<M, B, T, Bf16Mixed>::data.unshared_bytes);
  row("  evaluation program alone", EvalProgram<M, B, T, Fp32>::arena_bytes, EvalProgram<M, B, T, Bf16Mixed>::arena_bytes);
  row("gradient-norm partial sums", Cpu::norm_partials, Gpu::norm_partials);
  row("RoPE cos / sin tables", Cpu::rope_tables, Gpu::rope_tables);
  row("cuBLASLt workspace", Cpu::gemm_workspace, Gpu::gemm_workspace);
  row("decay ranges, AdamW constants, scalars", Cpu::device_small, Gpu::device_small);
  row("cuDNN attention workspace (reserved)", Cpu::attention_workspace, Gpu::attention_workspace);
  row("attention documents: lengths, offsets", Cpu::attention_metadata, Gpu::attention_metadata);
  row("total", Cpu::total, Gpu::total);
}

// One line per op (index, pass, layer, kind, operands with shapes and dtypes, bytes, FLOPs, the kernel chosen by
// the backend), then every buffer (dtype, shape, bytes, lifetime, offset) and the totals.
template <class P>
void print_program(std::ostream& os, const std::function<std::string(const Op&)>& kernel) {
  const auto& d = P::data;
  char line[512];
  const char* mode = P::mode == Mode::train ? "training" : P::mode == Mode::eval ? "evaluation" : "decode";
  std::snprintf(line, sizeof line, "Program (%s, micro-batch %d x %d; %d ops, %d buffers; storage %s, compute %s)\n", mode,
                P::B, P::T, d.n_ops, d.n_bufs, dtype_name(P::precision::storage), dtype_name(P::precision::compute));
  os << line << "  FLOPs: matrix products and attention only (elementwise ops are memory-bound); bytes: buffers and\n"
                "  parameters read and written; a buffer written in place of another is marked =\n";
  std::snprintf(line, sizeof line, "  %4s %-4s %5s %-16s %-72s %10s %9s  %s\n", "#", "pass", "layer", "kind",
                "reads -> writes (+= accumulates)", "bytes", "FLOPs", "kernel");
  os << line;
  for (int i = 0; i < d.n_ops; ++i) {
    const Op& o = d.ops[size_t(i)];
    std::string rd, wr;
    for (int u = 0; u < o.n_use; ++u) {
      const BufferInfo& b = d.bufs[size_t(o.use[u].buf)];
      std::string n(b.name.view());
      if (b.layer >= 0) n = n.substr(n.find('.', 7) + 1);  // "layers.3.qkv" -> "qkv" (the layer has its column)
      if (o.use[u].access == Access::read) rd += (rd.empty() ? "" : " ") + n;
      else wr += std::string(wr.empty() ? "" : " ") + (o.use[u].access == Access::accumulate ? "+=" : b.alias >= 0 ? "=" : "") + n;
    }
    if (o.param >= 0) {
      std::string pn(ParamPlan<typename P::Model>::table.entries[size_t(o.param)].name.view());
      if (const size_t k = pn.find("layers."); k != std::string::npos) pn = pn.substr(pn.find('.', k + 7) + 1);
      if (pn.size() > 7 && pn.compare(pn.size() - 7, 7, ".weight") == 0) pn.resize(pn.size() - 7);
      if (o.param_entries > 1) pn += "+" + std::to_string(o.param_entries - 1);
      rd += (rd.empty() ? "W:" : " W:") + pn;
      if (o.grad) wr += (wr.empty() ? "+=dW" : " +=dW");
    }
    std::string io = rd + " -> " + wr;
    std::snprintf(line, sizeof line, "  %4d %-4s %5s %-16s %-72s %10s %9s  %s\n", i, pass_name(o.pass),
                  o.layer >= 0 ? std::to_string(o.layer).c_str() : "-", op_kind_name(o.kind), io.c_str(),
                  human_bytes(o.bytes).c_str(), flops_text(o.flops).c_str(), kernel ? kernel(o).c_str() : "");
    os << line;
  }
  os << "\nBuffers (arena offsets; lifetime = first .. last op; batch inputs and caches live throughout)\n";
  std::snprintf(line, sizeof line, "  %-26s %-5s %-24s %11s %11s %14s\n", "name", "dtype", "shape", "bytes", "ops", "offset");
  os << line;
  for (int i = 0; i < d.n_bufs; ++i) {
    const BufferInfo& b = d.bufs[size_t(i)];
    const std::string life = std::to_string(b.first) + ".." + std::to_string(b.last);
    std::snprintf(line, sizeof line, "  %-26s %-5s %-24s %11s %11s %14s%s\n", std::string(b.name.view()).c_str(),
                  dtype_name(b.dtype), dims_text(b).c_str(), human_bytes(double(b.bytes())).c_str(), life.c_str(),
                  with_commas(b.offset).c_str(), b.alias >= 0 ? "  (in place)" : "");
    os << line;
  }
  std::snprintf(line, sizeof line,
                "\nTotals: %.4g FLOP, %s moved; arena %s with reuse, %s without (reuse saves %s, %.0f%%)\n", P::flops(),
                human_bytes(P::bytes()).c_str(), human_bytes(double(d.arena_bytes)).c_str(),
                human_bytes(double(d.unshared_bytes)).c_str(), human_bytes(double(d.unshared_bytes - d.arena_bytes)).c_str(),
                100.0 * double(d.unshared_bytes - d.arena_bytes) / double(d.unshared_bytes));
  os << line;
}

}  // namespace kiln::plan
