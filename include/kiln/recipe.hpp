// kiln/recipe.hpp: what a recipe header includes. A recipe recipes/<name>.hpp defines `struct recipes::<name>` with
//   using model = kiln::Decoder<...>;                          // static: shapes, heads, positions
//   using stage = kiln::Stage<kiln::micro_batch<B>, kiln::seq_len<T>>;
//   static kiln::TrainConfig defaults();                       // run-time: lr, steps, schedule, data, ...
// A variant derives from its base and changes one thing: using model = kiln::with<base::model, kiln::kv_heads<1>>;
#pragma once
#include "kiln/model/model.hpp"
#include "kiln/train/config.hpp"

namespace kiln {
template <class R>
concept RecipeType = requires {
  typename R::model;
  typename R::stage;
  { R::defaults() } -> std::same_as<TrainConfig>;
} && DecoderModel<typename R::model>;
}  // namespace kiln
