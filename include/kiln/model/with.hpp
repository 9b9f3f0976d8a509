// kiln/model/with.hpp: with<Base, Change...> is Base with each Change swapped in by kind, wherever it sits.
//
//   using gqa1 = kiln::with<base::model, kv_heads<1>>;         // reaches into Attention
//   using nope = kiln::with<base::model, NoPE>;                // swaps the positional policy
//   using wide = kiln::with<base::model, SwiGLU<ffn<8192>>>;   // swaps a whole component
// A setting the base leaves at its default is added to the component that accepts its kind.
// A change that no component accepts fails to compile.
#pragma once
#include "kiln/model/settings.hpp"

namespace kiln {
namespace detail {

template <class T, class C> struct with_one;

// Into the settings of a component (any template over types); leaves (heads<16>, RoPE<...>) stay as they are.
template <class T, class C> struct descend {
  using type = T;
  static constexpr int hits = 0;
};
template <template <class...> class Tpl, class... S, class C>
struct descend<Tpl<S...>, C> {
  static constexpr int inner_hits = (0 + ... + with_one<S, C>::hits);
  static constexpr bool add_here = [] {
    if constexpr (requires { typename Tpl<S...>::accepts; })
      return inner_hits == 0 && accepts_kind<kind_of_t<C>, typename Tpl<S...>::accepts>::value;
    else
      return false;
  }();
  using type = std::conditional_t<add_here, Tpl<S..., C>, Tpl<typename with_one<S, C>::type...>>;
  static constexpr int hits = add_here ? 1 : inner_hits;
};

template <class T, class C> struct with_one {
  static constexpr bool match = std::is_same_v<kind_of_t<T>, kind_of_t<C>>;
  using type = std::conditional_t<match, C, typename descend<T, C>::type>;
  static constexpr int hits = match ? 1 : descend<T, C>::hits;
};

template <class Base, class... C> struct with_all { using type = Base; };
template <class Base, class C0, class... C> struct with_all<Base, C0, C...> {
  static_assert(has_kind<C0>, "with<Base, Change>: Change must be a Kiln setting or component (heads<N>, NoPE, SwiGLU<...>, ...)");
  static_assert(descend<Base, C0>::hits > 0,
                "with<Base, Change>: no component of Base accepts this kind of setting");
  using type = typename with_all<typename descend<Base, C0>::type, C...>::type;
};

}  // namespace detail

template <class Base, class... Change>
using with = typename detail::with_all<Base, Change...>::type;

}  // namespace kiln
