// kiln/parallel/tensor_parallel.hpp: how TP<t> (Megatron's split) cuts a model's parameters among t ranks, as types
// and index maps. A TP rank's CPU executor (backend/cpu.hpp, Executor<M, B, T, t>) runs tp_local's programs and sums
// with its group where the cut requires; the trainer keeps host() the full model's (gathered), so checkpoints are
// the full model's tensors.
//   tp_local<M, t>   the model one TP rank holds: heads / t, kv_heads / t, ffn / t, vocab / t, the same hidden,
//                    head_dim and layers. Its parameter table has the full model's entries, in the same order and
//                    with the same names, each a slice:
//     rows    q, k, v (column-parallel: rank r has heads [r H/t, (r+1) H/t) and kv heads likewise, so each local
//             query head keeps its GQA group), gate and up (ffn rows [r F/t, ...)), the embedding and an untied LM
//             head (vocabulary rows [r V/t, ...))
//     cols    o_proj (row-parallel: its input columns, the rank's heads) and down_proj (its ffn columns)
//     whole   the norms (replicated)
//   tp_split(entry)              which of the three an entry is
//   tp_global_index<M, t>(...)   the full tensor's element index of a local element
//   init_parameters_tp<M, t>     a rank's slices with exactly the values one process's init_parameters<M> gives
//                                them (the value depends on (seed, tensor, element) only), so TP and one process
//                                start equal and their losses can be compared
//   tp_scatter / tp_gather       a full flat buffer to one rank's slices and t ranks' slices back (checkpoints and
//                                export keep the full model's tensors, whatever the layout)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kernels/init.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/model/model.hpp"
#include "kiln/parallel/layout.hpp"
#include "kiln/plan/params.hpp"

namespace kiln {

// (kv_heads changes first: each model with<> passes through must be valid, heads divisible by kv_heads)
template <DecoderModel M, int t>
using tp_local = with<M, kv_heads<M::kv_heads / t>, heads<M::heads / t>, head_dim<M::head_dim>, ffn<M::ffn / t>,
                      vocab<M::vocab / t>>;

enum class TpSplit { rows, cols, whole };

constexpr TpSplit tp_split(const plan::ParamEntry& e) {
  if (e.role == plan::Role::norm) return TpSplit::whole;
  const std::string_view n = e.name.view();
  const auto ends = [&](std::string_view s) { return n.size() >= s.size() && n.substr(n.size() - s.size()) == s; };
  if (ends("self_attn.o_proj.weight") || ends("mlp.down_proj.weight")) return TpSplit::cols;
  return TpSplit::rows;
}

// The local model's table is the full one's, entry by entry, each cut t ways.
template <DecoderModel M, int t>
constexpr bool check_tp_tables() {
  using G = plan::ParamPlan<M>;
  using L = plan::ParamPlan<tp_local<M, t>>;
  static_assert(check_layout<M, Layout<TP<t>>>());
  static_assert(G::count == L::count, "tp_local: the local model's table must have the full model's entries");
  for (int i = 0; i < G::count; ++i) {
    const auto& g = G::table.entries[size_t(i)];
    const auto& l = L::table.entries[size_t(i)];
    if (g.name.view() != l.name.view() || g.role != l.role) return false;
    switch (tp_split(g)) {
      case TpSplit::whole: if (l.rows != g.rows || l.cols != g.cols) return false; break;
      case TpSplit::rows: if (l.rows * t != g.rows || l.cols != g.cols) return false; break;
      case TpSplit::cols: if (l.rows != g.rows || l.cols * t != g.cols) return false; break;
    }
  }
  return true;
}

// Element k of local entry i on TP rank r: its index in the full entry i.
template <DecoderModel M, int t>
constexpr size_t tp_global_index(int i, size_t k, int r) {
  const auto& g = plan::ParamPlan<M>::table.entries[size_t(i)];
  const auto& l = plan::ParamPlan<tp_local<M, t>>::table.entries[size_t(i)];
  const size_t cols = size_t(l.cols ? l.cols : 1), row = k / cols, col = k % cols;
  switch (tp_split(g)) {
    case TpSplit::rows: return (row + size_t(r) * size_t(l.rows)) * cols + col;
    case TpSplit::cols: return row * size_t(g.cols) + size_t(r) * cols + col;
    default: return k;
  }
}

template <DecoderModel M, int t>
void init_parameters_tp(float* local, double std, uint64_t seed, int r) {
  static_assert(check_tp_tables<M, t>(), "tp_local: the local table does not cut the full one as tp_split says");
  using L = plan::ParamPlan<tp_local<M, t>>;
  for (int i = 0; i < L::count; ++i) {
    const auto& e = L::table.entries[size_t(i)];
    float* p = local + e.offset;
    if (e.role == plan::Role::norm) {
      kernels::init_fill(p, e.count(), 1.0f);
      continue;
    }
    const std::ptrdiff_t n = std::ptrdiff_t(e.count());
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t k = 0; k < n; ++k)
      p[k] = float(std * normal01(seed, uint64_t(i), uint64_t(tp_global_index<M, t>(i, size_t(k), r))));
  }
}

// full (ParamPlan<M>'s flat buffer) -> rank r's local buffer (ParamPlan<tp_local<M, t>>'s); padding untouched.
template <DecoderModel M, int t>
void tp_scatter(const float* full, float* local, int r) {
  using L = plan::ParamPlan<tp_local<M, t>>;
  for (int i = 0; i < L::count; ++i) {
    const auto& l = L::table.entries[size_t(i)];
    const auto& g = plan::ParamPlan<M>::table.entries[size_t(i)];
    for (size_t k = 0; k < l.count(); ++k) local[l.offset + k] = full[g.offset + tp_global_index<M, t>(i, k, r)];
  }
}
// t ranks' local buffers -> the full one (a replicated norm from rank 0's).
template <DecoderModel M, int t>
void tp_gather(const float* const* locals, float* full) {
  using L = plan::ParamPlan<tp_local<M, t>>;
  for (int r = t - 1; r >= 0; --r)
    for (int i = 0; i < L::count; ++i) {
      const auto& l = L::table.entries[size_t(i)];
      const auto& g = plan::ParamPlan<M>::table.entries[size_t(i)];
      for (size_t k = 0; k < l.count(); ++k) full[g.offset + tp_global_index<M, t>(i, k, r)] = locals[r][l.offset + k];
    }
}

}  // namespace kiln
