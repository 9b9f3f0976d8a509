// kiln/recipe.hpp: what a recipe header includes. A recipe recipes/<name>.hpp defines `struct recipes::<name>` with
//   using model = kiln::Decoder<...>;                          // static: shapes, heads, positions
//   using stage = kiln::Stage<kiln::micro_batch<B>, kiln::seq_len<T>>;   // one phase, or
//   using phases = kiln::Phases<kiln::Phase<"name", kiln::Stage<...>, changes...>, ...>;  // a program of phases
//   static kiln::TrainConfig defaults();                       // run-time: lr, steps, schedule, data, ...
//   static kiln::TrainConfig defaults(std::string_view phase); // (with phases, optional) one phase's settings
//   using layout = kiln::Layout<kiln::DP<kiln::rest>, kiln::ZeRO<1>>;  // (optional) the parallel layout
// A variant derives from its base and changes one thing: using model = kiln::with<base::model, kiln::kv_heads<1>>;
#pragma once
#include <algorithm>
#include <string_view>
#include <utility>

#include "kiln/model/model.hpp"
#include "kiln/parallel/layout.hpp"
#include "kiln/plan/phase.hpp"
#include "kiln/train/config.hpp"

namespace kiln {

namespace detail {
template <class R> struct phases_of { using type = Phases<Phase<"main", typename R::stage>>; };
template <class R>
  requires requires { typename R::phases; }
struct phases_of<R> { using type = typename R::phases; };
}  // namespace detail

template <class R>
concept RecipeType = requires {
  typename R::model;
  { R::defaults() } -> std::same_as<TrainConfig>;
} && DecoderModel<typename R::model> && (requires { typename R::stage; } || requires { typename R::phases; });

// The recipe's phases (one, "main", for a recipe that names only a stage), and phase I's model and shape.
template <RecipeType R> using phases_of = typename detail::phases_of<R>::type;
template <RecipeType R, int I> using phase_t = typename phases_of<R>::template at<I>;
template <RecipeType R, int I> using phase_model = typename phase_t<R, I>::template model<typename R::model>;
template <RecipeType R, int I> using phase_stage = typename phase_t<R, I>::stage;

// The longest sequence of any phase (generation and export use it as the context length).
template <RecipeType R>
inline constexpr int max_seq_len = []<int... I>(std::integer_sequence<int, I...>) {
  return std::max({phase_stage<R, I>::seq_len...});
}(std::make_integer_sequence<int, phases_of<R>::count>{});

// Every phase keeps the recipe's parameter table (a phase may change RoPE theta, not a shape).
template <RecipeType R>
constexpr bool check_phases() {
  return []<int... I>(std::integer_sequence<int, I...>) {
    static_assert((plan::same_parameter_table<typename R::model, phase_model<R, I>>() && ...),
                  "Phase<name, shape, changes...>: a phase may change the model only where its parameter table stays "
                  "the same (RoPE theta, positional policy); sizes, heads, layers and tying are the recipe's");
    return true;
  }(std::make_integer_sequence<int, phases_of<R>::count>{});
}

// Phase i's run-time defaults: R::defaults(name) when the recipe gives per-phase settings, else R::defaults().
template <RecipeType R>
TrainConfig phase_defaults(int i) {
  if constexpr (requires { { R::defaults(std::string_view()) } -> std::same_as<TrainConfig>; })
    return R::defaults(phases_of<R>::names[i]);
  else
    return R::defaults();
}

// Runs f.template operator()<I>() for the phase index i known only at run time.
template <RecipeType R, class F>
decltype(auto) with_phase(int i, F&& f) {
  return [&]<int... I>(std::integer_sequence<int, I...>) -> decltype(auto) {
    using Ret = decltype(f.template operator()<0>());
    if constexpr (std::is_void_v<Ret>) {
      ((i == I ? (f.template operator()<I>(), true) : false) || ...);
    } else {
      Ret r{};
      ((i == I ? (r = f.template operator()<I>(), true) : false) || ...);
      return r;
    }
  }(std::make_integer_sequence<int, phases_of<R>::count>{});
}

}  // namespace kiln
