// kiln/plan/objective.hpp: what a phase trains for (plan/phase.hpp's Phase names it as a type; the code compiled
// once for every recipe, the trainer program's data, sees this value).
#pragma once
#include <cstdint>

namespace kiln {

enum class Objective : uint8_t {
  pretrain,  // next-token prediction over every token of the phase's text or token shards
  sft,       // supervised fine-tuning: conversations (kiln/data/chat.hpp), the loss on the assistant's tokens only
};
constexpr const char* objective_name(Objective o) { return o == Objective::sft ? "sft" : "pretrain"; }

}  // namespace kiln
