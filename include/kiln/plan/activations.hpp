// kiln/plan/activations.hpp: every activation buffer of a training step, placed by the compiler in one arena,
// reusing the space of buffers whose lifetimes do not overlap.
//
// Timeline (one unit per phase): forward layer i at 2i; final norm + fused LM head / loss at 2L;
// backward of layer i: MLP half at 2L + 1 + 2(L-1-i), attention half one unit later; embedding backward last.
// What layer i saves for its backward (one "slab", live from its forward to its backward's attention half):
//   x_in (R,H) residual input   rstd1 (R)   xn1 (R,H)   [qkv_raw (R,QKV)   qk_rstd (R,NH+NKV)]  (QK-norm only)
//   qkv (R,QKV) after norm/RoPE  att (R,NH*HD)  lse (B,NH,T)  x_mid (R,H)  rstd2 (R)  xn2 (R,H)
//   gu (R,2F) [gate|up]  act (R,F) = silu(gate)*up
// Backward scratch of layer i: MLP half dact (R,F) + dgu (R,2F); attention half datt (R,NH*HD) + dqkv (R,QKV).
// Whole-step buffers: x_out (R,H) the last residual, rstd_f, xn_f, the loss chunk (chunk,V), dx (R,H) the
// residual gradient and dxn (R,H) the gradient at a norm's output.
// A greedy first-fit by decreasing size places them; buffers live at the same time never share bytes.
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>

#include "kiln/plan/params.hpp"

namespace kiln::plan {

// Offsets (floats) inside a layer's slab.
struct SlabOffsets {
  size_t x_in, rstd1, xn1, qkv_raw, qk_rstd, qkv, att, lse, x_mid, rstd2, xn2, gu, act, size;
};

struct Interval {
  size_t size;     // floats
  int begin, end;  // inclusive phase range
  size_t offset;   // assigned
};

// First-fit placement by decreasing size; returns the arena size in floats.
template <size_t N>
constexpr size_t place(std::array<Interval, N>& items) {
  std::array<int, N> order{};
  for (size_t i = 0; i < N; ++i) order[i] = int(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return items[a].size != items[b].size ? items[a].size > items[b].size : a < b;
  });
  std::array<bool, N> placed{};
  size_t arena = 0;
  for (int idx : order) {
    Interval& it = items[idx];
    auto lives_with = [&](const Interval& o) { return !(o.end < it.begin || it.end < o.begin); };
    auto fits_at = [&](size_t off) {
      for (size_t j = 0; j < N; ++j)
        if (placed[j] && lives_with(items[j]) && off < items[j].offset + items[j].size && items[j].offset < off + it.size)
          return false;
      return true;
    };
    size_t best = size_t(-1);
    if (fits_at(0)) best = 0;
    for (size_t j = 0; j < N; ++j) {
      if (!placed[j] || !lives_with(items[j])) continue;
      size_t cand = items[j].offset + items[j].size;
      if (cand < best && fits_at(cand)) best = cand;
    }
    it.offset = best;
    placed[idx] = true;
    arena = std::max(arena, best + it.size);
  }
  return arena;
}

template <DecoderModel M, class S>
struct ActivationPlan {
  static constexpr int B = S::micro_batch, T = S::seq_len, L = M::layers;
  static constexpr size_t R = size_t(B) * T;  // rows: tokens in a micro-batch
  static constexpr size_t H = M::hidden, F = M::ffn, QKV = M::qkv_dim, Q = M::q_dim;
  // Rows of the LM head + loss handled at once: the (chunk, V) logits tile is bounded to ~64 MiB, and chunks stay
  // large because each chunk's dW product reads and writes all of dW (at least 64 rows).
  static constexpr int loss_chunk = int(std::min<size_t>(R, std::max<size_t>(64, (size_t(1) << 24) / size_t(M::vocab))));

  static constexpr SlabOffsets slab = [] {
    SlabOffsets s{};
    size_t o = 0;
    auto take = [&](size_t n) { size_t r = o; o += align_up(n); return r; };
    s.x_in = take(R * H);
    s.rstd1 = take(R);
    s.xn1 = take(R * H);
    if constexpr (M::qk_norm) {
      s.qkv_raw = take(R * QKV);
      s.qk_rstd = take(R * (M::heads + M::kv_heads));
    }
    s.qkv = take(R * QKV);
    s.att = take(R * Q);
    s.lse = take(size_t(B) * M::heads * T);
    s.x_mid = take(R * H);
    s.rstd2 = take(R);
    s.xn2 = take(R * H);
    s.gu = take(R * 2 * F);
    s.act = take(R * F);
    s.size = o;
    return s;
  }();

  // Items: L slabs, L MLP scratches, L attention scratches, then the whole-step buffers.
  enum : int { kXOut = 3 * L, kRstdF, kXnF, kLoss, kDx, kDxn, kCount };
  static constexpr int t_loss = 2 * L;
  static constexpr int t_mlp_bwd(int i) { return 2 * L + 1 + 2 * (L - 1 - i); }
  static constexpr int t_end = 4 * L + 1;  // embedding backward

  struct Layout {
    std::array<Interval, kCount> items{};
    size_t total = 0;
    constexpr size_t slab_of(int i) const { return items[i].offset; }
    constexpr size_t mlp_scratch(int i) const { return items[L + i].offset; }
    constexpr size_t attn_scratch(int i) const { return items[2 * L + i].offset; }
  };

  static constexpr Layout layout = [] {
    Layout l;
    for (int i = 0; i < L; ++i) {
      l.items[i] = {slab.size, 2 * i, t_mlp_bwd(i) + 1, 0};
      l.items[L + i] = {align_up(R * F) + align_up(R * 2 * F), t_mlp_bwd(i), t_mlp_bwd(i), 0};
      l.items[2 * L + i] = {align_up(R * Q) + align_up(R * QKV), t_mlp_bwd(i) + 1, t_mlp_bwd(i) + 1, 0};
    }
    l.items[kXOut] = {align_up(R * H), 2 * (L - 1), t_loss, 0};
    l.items[kRstdF] = {align_up(R), t_loss, t_loss, 0};
    l.items[kXnF] = {align_up(R * H), t_loss, t_loss, 0};
    l.items[kLoss] = {align_up(size_t(loss_chunk) * M::vocab), t_loss, t_loss, 0};
    l.items[kDx] = {align_up(R * H), t_loss, t_end, 0};
    l.items[kDxn] = {align_up(R * H), t_loss, t_end - 1, 0};
    l.total = place(l.items);
    return l;
  }();

  static constexpr size_t total_floats = layout.total;
  // Without reuse (every buffer its own bytes), for comparison in the printed plan.
  static constexpr size_t unshared_floats = [] {
    size_t n = 0;
    for (const auto& it : layout.items) n += it.size;
    return n;
  }();
};

}  // namespace kiln::plan
