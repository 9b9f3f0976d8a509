// kiln/plan/objective.hpp: what a phase trains for (plan/phase.hpp's Phase names it as a type; the code compiled
// once for every recipe, the trainer program's data, sees this value).
#pragma once
#include <cstdint>

namespace kiln {

enum class Objective : uint8_t {
  pretrain,    // next-token prediction over every token of the phase's text or token shards
  sft,         // supervised fine-tuning: conversations (kiln/data/chat.hpp), the loss on the assistant's tokens only
  preference,  // preference optimisation against a frozen reference (train/preference.hpp): pairs of answers
};
// The preference losses, as TRL's DPOTrainer names them (loss_type).
enum class PreferenceLoss : uint8_t {
  dpo,       // "sigmoid": -log sigmoid(beta (chosen_logratio - rejected_logratio))
  apo_zero,  // "apo_zero": (1 - sigmoid(beta chosen_logratio)) + sigmoid(beta rejected_logratio)
};
constexpr const char* objective_name(Objective o) {
  return o == Objective::sft ? "sft" : o == Objective::preference ? "preference" : "pretrain";
}
constexpr const char* preference_loss_name(PreferenceLoss l) { return l == PreferenceLoss::dpo ? "dpo" : "apo_zero"; }

}  // namespace kiln
