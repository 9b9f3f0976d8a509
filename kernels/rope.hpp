// kernels/rope.hpp: rotary position embedding, HF rotate_half convention, in place.
//
// For each head of HD values and pair (i, i + HD/2), i < HD/2, angle a = pos * theta^(-2i/HD):
// forward:   out_i        = x_i        cos a - x_{i+HD/2} sin a
//            out_{i+HD/2} = x_{i+HD/2} cos a + x_i        sin a
// backward:  the transpose, i.e. the rotation by -a applied to the gradient:
//            dx_i         = g_i        cos a + g_{i+HD/2} sin a
//            dx_{i+HD/2}  = g_{i+HD/2} cos a - g_i        sin a
// Tensors: x (R, row_stride) with NHEADS consecutive heads (R, NHEADS, HD) at its start; pos (R) position ids.
// cos/sin come from a table (max_pos, HD/2) computed in double and rounded once to the compute type C; x is stored
// as S. A YaRN-scaled policy changes the table only: its inv_freq (kiln/core/rope_scaling.hpp) for theta^(-2i/HD),
// and cos and sin multiplied by its attention factor m (so q.k, rotated on both sides, scales by m^2; the backward
// is the same transpose, by the same table). Positions are checked once where the batch enters the backend (backend::validate_batch), not here.
// Nothing is saved.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dot.hpp"
#include "kiln/core/error.hpp"
#include "kiln/core/rope_scaling.hpp"

namespace kiln::kernels {

template <class T, int HD>
struct RopeTable {  // cos/sin for positions [0, max_pos), computed in double then cast
  static_assert(HD % 2 == 0, "rope: head_dim must be even (dimension i pairs with i + HD/2)");
  static constexpr int kHalf = HD / 2;
  RopeTable(int max_pos, double theta, const RopeScaling& scaling = {})
      : max_pos(max_pos), cos(size_t(max_pos) * kHalf), sin(size_t(max_pos) * kHalf) {
    KILN_CHECK(max_pos > 0, "rope: the table needs max_pos > 0, got ", max_pos);
    KILN_CHECK(theta > 0, "rope: theta must be positive, got ", theta);
    const std::vector<double> inv_freq = rope_inv_freq(HD, theta, scaling);  // theta^(-2i/HD), or YaRN's
    const double m = scaling.attention();
    for (int p = 0; p < max_pos; ++p)
      for (int i = 0; i < kHalf; ++i) {
        const double a = double(p) * inv_freq[size_t(i)];
        cos[size_t(p) * kHalf + i] = T(m * std::cos(a));
        sin[size_t(p) * kHalf + i] = T(m * std::sin(a));
      }
  }
  int max_pos;
  std::vector<T> cos, sin;  // (max_pos, HD/2)
};

namespace detail {
// sign = +1: forward rotation by a; sign = -1: rotation by -a (backward).
template <class S, class C, int NHEADS, int HD, int Sign>
inline void rope_apply(S* x, int row_stride, const int32_t* pos, int R, const RopeTable<C, HD>& table) {
  static_assert(HD % 2 == 0, "rope: head_dim must be even (dimension i pairs with i + HD/2)");
  static_assert(NHEADS > 0, "rope: NHEADS must be positive");
  constexpr int half = HD / 2;
#pragma omp parallel for schedule(static)
  for (int r = 0; r < R; ++r) {
    const C* __restrict c = table.cos.data() + size_t(pos[r]) * half;
    const C* __restrict s = table.sin.data() + size_t(pos[r]) * half;
    for (int h = 0; h < NHEADS; ++h) {
      S* __restrict lo = x + size_t(r) * row_stride + h * HD;
      S* __restrict hi = lo + half;
#pragma omp simd
      for (int i = 0; i < half; ++i) {
        const C a = ld<C>(lo[i]), b = ld<C>(hi[i]);
        const C sn = Sign > 0 ? s[i] : -s[i];
        lo[i] = st<S>(a * c[i] - b * sn);
        hi[i] = st<S>(b * c[i] + a * sn);
      }
    }
  }
}
}  // namespace detail

template <class S, class C, int NHEADS, int HD>
void rope_forward(S* x, int row_stride, const int32_t* pos, int R, const RopeTable<C, HD>& table) {
  detail::rope_apply<S, C, NHEADS, HD, +1>(x, row_stride, pos, R, table);
}

template <class S, class C, int NHEADS, int HD>
void rope_backward(S* dx, int row_stride, const int32_t* pos, int R, const RopeTable<C, HD>& table) {
  detail::rope_apply<S, C, NHEADS, HD, -1>(dx, row_stride, pos, R, table);
}

}  // namespace kiln::kernels
