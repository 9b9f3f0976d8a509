// kiln/plan/phase.hpp: the phases of a recipe's program, as types. A phase has a static shape (micro-batch and
// sequence length fix the kernels and the activation plan) and may change the model where the change leaves the
// parameter table as it is (a new RoPE theta for a long-context phase); its run-time settings (steps, LR schedule,
// data stages) are the recipe's TrainConfig for that phase.
//
//   using phases = kiln::Phases<
//       kiln::Phase<"pretrain", kiln::Stage<kiln::micro_batch<8>, kiln::seq_len<256>>>,
//       kiln::Phase<"long", kiln::Stage<kiln::micro_batch<2>, kiln::seq_len<1024>>, kiln::RNoPE<4, 2'000'000.0>>>;
// A recipe with one phase names only `using stage = kiln::Stage<...>;` (its phase is called "main").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "kiln/model/model.hpp"
#include "kiln/plan/objective.hpp"
#include "kiln/plan/params.hpp"

namespace kiln {

// A phase's static shape.
template <class... S>
struct Stage {
  using kind = tag::stage;
  using accepts = kinds<tag::micro_batch, tag::seq_len>;
  static_assert(kinds_unique<S...>, "Stage<...>: a setting is given twice");
  static_assert(has_setting<tag::micro_batch, S...>, "Stage<...> needs micro_batch<B>");
  static_assert(has_setting<tag::seq_len, S...>, "Stage<...> needs seq_len<T>");
  static constexpr int micro_batch = value_or<tag::micro_batch, 0, S...>;
  static constexpr int seq_len = value_or<tag::seq_len, 0, S...>;
  static_assert(micro_batch > 0, "Stage: micro_batch must be positive");
  static_assert(seq_len > 0, "Stage: seq_len must be positive");
};
template <class T> struct is_stage : std::false_type {};
template <class... S> struct is_stage<Stage<S...>> : std::true_type {};

// A phase name as a template argument: Phase<"long", ...>.
template <size_t N>
struct fixed_string {
  char s[N] = {};
  constexpr fixed_string(const char (&v)[N]) {
    for (size_t i = 0; i < N; ++i) s[i] = v[i];
  }
  constexpr std::string_view view() const { return {s, N - 1}; }
};

namespace plan {
// Two models have the same parameter table: same names, shapes and offsets (so one state serves both).
template <DecoderModel A, DecoderModel B>
constexpr bool same_parameter_table() {
  using PA = ParamPlan<A>;
  using PB = ParamPlan<B>;
  if constexpr (PA::count != PB::count) {
    return false;
  } else {
    if (PA::table.total != PB::table.total) return false;
    for (int i = 0; i < PA::count; ++i) {
      const auto &a = PA::table.entries[size_t(i)], &b = PB::table.entries[size_t(i)];
      if (a.offset != b.offset || a.rows != b.rows || a.cols != b.cols || a.name.view() != b.name.view()) return false;
    }
    return A::tied == B::tied;
  }
}
}  // namespace plan

// What a phase trains for (its objective): next-token prediction over every token of its data (pretraining, the
// default), or supervised fine-tuning on conversations (kiln/data/chat.hpp): the loss on the assistant's tokens
// only, the data the phase's `chat` setting (TrainConfig). A phase names it among its changes:
//   kiln::Phase<"sft", kiln::Stage<kiln::micro_batch<8>, kiln::seq_len<256>>, kiln::SFT>
struct SFT {
  static constexpr Objective kiln_objective = Objective::sft;
};
// Preference optimisation (TRL's DPO, or the APO-zero SmolLM3 used) from pairs of answers (TrainConfig::pairs),
// against a frozen copy of the weights the phase starts from (the reference), with TrainConfig::beta:
//   kiln::Phase<"apo", kiln::Stage<kiln::micro_batch<4>, kiln::seq_len<256>>, kiln::APOZero>
template <PreferenceLoss L>
struct Preference {
  static constexpr Objective kiln_objective = Objective::preference;
  static constexpr PreferenceLoss loss = L;
};
using DPO = Preference<PreferenceLoss::dpo>;
using APOZero = Preference<PreferenceLoss::apo_zero>;

namespace detail {
template <class T, class = void> struct is_objective : std::false_type {};
template <class T> struct is_objective<T, std::void_t<decltype(T::kiln_objective)>> : std::true_type {};
template <class T> constexpr Objective objective_of() {
  if constexpr (is_objective<T>::value) return T::kiln_objective;
  else return Objective::pretrain;
}
template <class... C> constexpr Objective objective_among() {
  Objective o = Objective::pretrain;
  ((o = is_objective<C>::value ? objective_of<C>() : o), ...);
  return o;
}
template <class T> constexpr PreferenceLoss preference_loss_of() {
  if constexpr (requires { T::loss; }) return T::loss;
  else return PreferenceLoss::dpo;
}
template <class... C> constexpr PreferenceLoss preference_loss_among() {
  PreferenceLoss l = PreferenceLoss::dpo;
  ((l = is_objective<C>::value ? preference_loss_of<C>() : l), ...);
  return l;
}
// The model with a phase's changes, its objective left out.
template <class Base, class C, bool objective = is_objective<C>::value> struct with_change { using type = with<Base, C>; };
template <class Base, class C> struct with_change<Base, C, true> { using type = Base; };
template <class Base, class... C> struct with_changes { using type = Base; };
template <class Base, class C0, class... C> struct with_changes<Base, C0, C...> {
  using type = typename with_changes<typename with_change<Base, C0>::type, C...>::type;
};
}  // namespace detail

template <fixed_string Name, class StageT, class... Change>
struct Phase {
  static_assert(is_stage<StageT>::value,
                "Phase<name, shape, changes...>: the shape must be a Stage<micro_batch<B>, seq_len<T>>");
  static_assert(Name.view().size() > 0, "Phase<name, ...>: the name must not be empty");
  static constexpr fixed_string name_storage = Name;
  static constexpr std::string_view name = name_storage.view();
  using stage = StageT;
  static constexpr bool kiln_phase = true;
  static_assert((int(detail::is_objective<Change>::value) + ... + 0) <= 1, "Phase<name, shape, changes...>: at most one "
                "objective (kiln::SFT, kiln::DPO, kiln::APOZero)");
  static constexpr Objective objective = detail::objective_among<Change...>();
  static constexpr PreferenceLoss preference_loss = detail::preference_loss_among<Change...>();  // (preference only)
  // The phase's model: the recipe's with this phase's changes (none: the recipe's own).
  template <DecoderModel Base>
  using model = typename detail::with_changes<Base, Change...>::type;
};

// By a member rather than by matching Phase<N, S, C...>: nvcc 13's front end does not match a partial
// specialization over a class-type template parameter (fixed_string), and the CUDA trainer includes this.
template <class T, class = void> struct is_phase : std::false_type {};
template <class T> struct is_phase<T, std::void_t<decltype(T::kiln_phase)>> : std::bool_constant<T::kiln_phase> {};

template <class... P>
struct Phases {
  static_assert(sizeof...(P) > 0, "Phases<...>: a program needs at least one phase");
  static_assert((is_phase<P>::value && ...), "Phases<...>: every entry must be a Phase<\"name\", Stage<...>, changes...>");
  static constexpr int count = int(sizeof...(P));
  template <int I>
  using at = std::tuple_element_t<size_t(I), std::tuple<P...>>;
  static constexpr std::string_view names[count] = {P::name...};
  // The index of a phase by name, or -1.
  static constexpr int find(std::string_view n) {
    for (int i = 0; i < count; ++i)
      if (names[i] == n) return i;
    return -1;
  }
};

}  // namespace kiln
