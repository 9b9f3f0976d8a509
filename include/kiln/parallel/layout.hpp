// kiln/parallel/layout.hpp: a recipe's parallel layout as a type, checked against its model at compile time.
//   using layout = kiln::Layout<kiln::DP<kiln::rest>, kiln::TP<1>, kiln::ZeRO<1>>;   // in a recipe (optional)
//   DP<n>    n data-parallel replicas; DP<rest>: as many as the launcher starts (world / TP)
//   TP<t>    tensor parallelism of degree t (Megatron's split: attention by heads, the MLP by ffn columns, the
//            embedding and LM head by vocabulary rows); the model must divide by t, which check_layout says in words
//   ZeRO<z>  0: every rank holds the whole optimizer state; 1: the AdamW moments (and the reduced gradients they
//            are updated from) are sharded over the data-parallel ranks, each rank updating its shard of the
//            fp32 weights, which are then all-gathered
// Parameters not named take their defaults (DP<rest>, TP<1>, ZeRO<0>); a recipe without `layout` is Layout<>: plain
// data parallelism over whatever world it is started in, one process included.
// The run-time half: resolve_layout() checks the launcher's world against the layout, naming both.
// Built: DP (CPU ranks over MPI or TCP; GPU ranks over NCCL), ZeRO<1> and TP<t> on CPU ranks over MPI
// (kiln/parallel/tensor_parallel.hpp; not with ZeRO<1>, not on the CUDA backend, no sequence parallelism: the
// trainer refuses those at compile time, saying so); ZeRO<2>/<3> are refused.
#pragma once
#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include "kiln/core/adamw_step.hpp"
#include "kiln/core/error.hpp"
#include "kiln/model/model.hpp"

namespace kiln {

inline constexpr int rest = 0;  // DP<rest>: the data-parallel degree is what the world leaves

template <int N>
struct DP {
  static_assert(N >= 0, "DP<n>: the data-parallel degree must be positive (or kiln::rest: the rest of the world)");
  static constexpr int value = N;
};
template <int N>
struct TP {
  static_assert(N >= 1, "TP<t>: the tensor-parallel degree must be at least 1");
  static constexpr int value = N;
};
template <int N>
struct ZeRO {
  static_assert(N == 0 || N == 1, "ZeRO<z>: ZeRO<0> and ZeRO<1> (sharded optimizer state) are built; ZeRO<2> "
                                  "(sharded gradients) and ZeRO<3> (sharded parameters) are not");
  static constexpr int value = N;
};

namespace detail {
template <template <int> class K, class T> struct is_param : std::false_type {};
template <template <int> class K, int N> struct is_param<K, K<N>> : std::true_type {};
template <template <int> class K, int Default, class... P>
constexpr int layout_value() {
  int v = Default;
  ((v = is_param<K, P>::value ? int(P::value) : v), ...);
  return v;
}
template <class T>
inline constexpr bool is_layout_param = is_param<DP, T>::value || is_param<TP, T>::value || is_param<ZeRO, T>::value;
}  // namespace detail

template <class... P>
struct Layout {
  static_assert((detail::is_layout_param<P> && ...), "Layout<...>: its parameters are DP<n>, TP<t> and ZeRO<z>");
  static_assert((int(detail::is_param<DP, P>::value) + ... + 0) <= 1, "Layout<...>: DP given twice");
  static_assert((int(detail::is_param<TP, P>::value) + ... + 0) <= 1, "Layout<...>: TP given twice");
  static_assert((int(detail::is_param<ZeRO, P>::value) + ... + 0) <= 1, "Layout<...>: ZeRO given twice");
  static constexpr int dp = detail::layout_value<DP, rest, P...>();  // 0: the rest of the world
  static constexpr int tp = detail::layout_value<TP, 1, P...>();
  static constexpr int zero = detail::layout_value<ZeRO, 0, P...>();
  static std::string text() {
    std::string s = "DP<" + (dp == rest ? std::string("rest") : std::to_string(dp)) + ">";
    if (tp > 1) s += ", TP<" + std::to_string(tp) + ">";
    if (zero) s += ", ZeRO<" + std::to_string(zero) + ">";
    return "Layout<" + s + ">";
  }
};

template <class T> struct is_layout : std::false_type {};
template <class... P> struct is_layout<Layout<P...>> : std::true_type {};

// The recipe's layout: R::layout, or Layout<> (data parallel over any world).
namespace detail {
template <class R> struct layout_of { using type = Layout<>; };
template <class R>
  requires requires { typename R::layout; }
struct layout_of<R> {
  using type = typename R::layout;
  static_assert(is_layout<type>::value, "a recipe's `layout` must be a kiln::Layout<DP<...>, TP<...>, ZeRO<...>>");
};
}  // namespace detail
template <class R> using layout_of = typename detail::layout_of<R>::type;

// The model divides by the layout's tensor-parallel degree: every split dimension, said in words.
template <DecoderModel M, class L>
constexpr bool check_layout() {
  constexpr int t = L::tp;
  static_assert(M::heads % t == 0, "Layout: TP<t> splits attention by heads: heads must be divisible by t");
  static_assert(M::kv_heads % t == 0,
                "Layout: TP<t> splits the key/value heads with their query heads: kv_heads must be divisible by t");
  static_assert(M::ffn % t == 0, "Layout: TP<t> splits the MLP's gate/up columns and down rows: ffn must be divisible by t");
  static_assert(M::vocab % t == 0,
                "Layout: TP<t> splits the embedding and LM head by vocabulary rows: vocab must be divisible by t");
  return true;
}

// The degrees of a layout in a world of `world` ranks.
struct LayoutShape {
  int dp = 1, tp = 1, zero = 0;
  int world() const { return dp * tp; }
};
inline LayoutShape resolve_layout(int dp, int tp, int zero, int world, const std::string& text) {
  KILN_CHECK(world >= 1, "layout: a world of ", world, " ranks");
  if (dp == rest) {
    KILN_CHECK(world % tp == 0, "layout ", text, ": the launcher started ", world, " ranks, which is not a multiple of "
               "the tensor-parallel degree ", tp, " (start a multiple of ", tp, " ranks)");
    return {world / tp, tp, zero};
  }
  KILN_CHECK(dp * tp == world, "layout ", text, " needs ", dp, " x ", tp, " = ", dp * tp, " ranks, but the launcher "
             "started ", world, " (start ", dp * tp, ", or make the recipe's DP kiln::rest)");
  return {dp, tp, zero};
}
template <class L>
LayoutShape resolve_layout(int world) {
  return resolve_layout(L::dp, L::tp, L::zero, world, L::text());
}

// ZeRO-1's shard of rank r among n: [begin, end) of the flat buffer of `floats`, contiguous and in rank order (so a
// reduce-scatter of any slice sends each rank one contiguous piece), cut at multiples of `align` (the gradient
// norm's chunk: each rank's chunk sums are then the ones of one process, and the norm keeps its bits). The last
// rank takes the remainder; a rank may hold nothing when there are more ranks than chunks.
namespace parallel {
struct Shard {
  size_t begin = 0, end = 0;
  size_t size() const { return end - begin; }
};
inline Shard shard_of(size_t floats, int r, int n, size_t align) {
  KILN_CHECK(n >= 1 && r >= 0 && r < n && align >= 1, "shard_of: rank ", r, " of ", n, ", align ", align);
  const size_t chunks = (floats + align - 1) / align;
  const auto cut = [&](int k) { return k == n ? floats : std::min(floats, chunks * size_t(k) / size_t(n) * align); };
  return {cut(r), cut(r + 1)};
}
// The decay ranges of a flat buffer (sorted, covering it) clipped to shard s, relative to its start (ZeRO-1: the
// ranges a rank's update of its shard reads).
inline std::vector<DecayRange> shard_decay_ranges(const std::vector<DecayRange>& all, Shard s) {
  std::vector<DecayRange> out;
  for (const auto& r : all)
    if (std::max(r.begin, s.begin) < std::min(r.end, s.end))
      out.push_back({std::max(r.begin, s.begin) - s.begin, std::min(r.end, s.end) - s.begin, r.decay});
  if (out.empty()) out.push_back({0, s.size(), true});
  return out;
}
}  // namespace parallel

}  // namespace kiln
