// kiln/core/adamw_step.hpp: the arguments of one AdamW update, shared by the trainer (which fills them) and every
// backend's fused update kernel (which reads them), so neither includes the other.
#pragma once
#include <cstddef>

namespace kiln {

// A range [begin, end) of the flat parameter buffer and whether weight decay applies there (plan::DecayRange); a
// plain value, so a backend copies a table of them to its device as they are.
struct DecayRange {
  size_t begin, end;
  bool decay;
};

struct AdamWStep {
  double lr, beta1, beta2, eps, weight_decay;
  long step;          // the 1-based update count (bias correction)
  double grad_scale;  // multiplies every gradient: the global-norm clip, folded in
};

}  // namespace kiln
