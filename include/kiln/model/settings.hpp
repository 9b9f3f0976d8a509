// kiln/model/settings.hpp: the named parameters a model is built from, and the type-list tools that read them.
//
// A component is a template over settings in any order: Attention<heads<16>, kv_heads<4>, RoPE<50000.0>>.
// Each setting (and each component) has a `kind`; a pack holds each kind at most once. `with<>` (with.hpp)
// swaps a setting by its kind anywhere in a model, which is what a one-change ablation is.
#pragma once
#include <type_traits>

namespace kiln {

// ---- kinds: one tag per named parameter ------------------------------------------------------
namespace tag {
struct vocab; struct hidden; struct tied; struct layers; struct heads; struct kv_heads; struct head_dim;
struct positional; struct qk_norm; struct ffn; struct norm; struct z_loss;
struct embedding; struct attention; struct mlp; struct decoder;
struct micro_batch; struct seq_len; struct stage;
}  // namespace tag

template <class... K> struct kinds {};

// ---- integer and flag settings -------------------------------------------------------------
template <int N> struct vocab      { using kind = tag::vocab;      static constexpr int value = N; };
template <int N> struct hidden     { using kind = tag::hidden;     static constexpr int value = N; };
template <int N> struct layers     { using kind = tag::layers;     static constexpr int value = N; };
template <int N> struct heads      { using kind = tag::heads;      static constexpr int value = N; };
template <int N> struct kv_heads   { using kind = tag::kv_heads;   static constexpr int value = N; };
template <int N> struct head_dim   { using kind = tag::head_dim;   static constexpr int value = N; };
template <int N> struct ffn        { using kind = tag::ffn;        static constexpr int value = N; };
template <bool B> struct tied      { using kind = tag::tied;       static constexpr bool value = B; };
template <bool B> struct qk_norm   { using kind = tag::qk_norm;    static constexpr bool value = B; };
template <double C> struct z_loss  { using kind = tag::z_loss;     static constexpr double value = C; };
template <int N> struct micro_batch { using kind = tag::micro_batch; static constexpr int value = N; };
template <int N> struct seq_len    { using kind = tag::seq_len;    static constexpr int value = N; };

// ---- reading a pack ------------------------------------------------------------------------
template <class T> concept has_kind = requires { typename T::kind; };

template <class T> struct kind_of { using type = void; };
template <has_kind T> struct kind_of<T> { using type = typename T::kind; };
template <class T> using kind_of_t = typename kind_of<T>::type;

template <class K, class... S>
inline constexpr int count_kind = (0 + ... + int(std::is_same_v<kind_of_t<S>, K>));

namespace detail {
template <class K, class Default, class... S> struct find;
template <class K, class Default> struct find<K, Default> { using type = Default; };
template <class K, class Default, class S0, class... S> struct find<K, Default, S0, S...> {
  using type = std::conditional_t<std::is_same_v<kind_of_t<S0>, K>, S0, typename find<K, Default, S...>::type>;
};
}  // namespace detail

// The setting of kind K in S..., or Default when absent (`void` for "required").
template <class K, class Default, class... S>
using find_t = typename detail::find<K, Default, S...>::type;

// A `value` read from the setting of kind K, or the fallback.
template <class K, auto Fallback, class... S>
inline constexpr auto value_or = [] {
  using F = find_t<K, void, S...>;
  if constexpr (std::is_void_v<F>) return Fallback;
  else return F::value;
}();

template <class K, class... S>
inline constexpr bool has_setting = count_kind<K, S...> > 0;

// Every kind appears at most once in a component's settings.
template <class... S>
inline constexpr bool kinds_unique = ((count_kind<kind_of_t<S>, S...> <= 1) && ...);

template <class K, class List> struct accepts_kind : std::false_type {};
template <class K, class... L> struct accepts_kind<K, kinds<L...>> : std::bool_constant<(std::is_same_v<K, L> || ...)> {};

}  // namespace kiln
