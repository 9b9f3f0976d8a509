// tests/recipes/tiny_smollm3_yarn.hpp: tests/recipes/tiny_smollm3.hpp with transformers' YaRN (factor 4 over 16
// positions) on its RoPE layers, the shape of tests/fixtures/hf/tiny_smollm3_yarn (made by
// tests/reference/make_hf_smollm3_fixture.py --yarn): trainer.hf_smollm3_yarn checks Kiln's logits against
// transformers' with YaRN's frequencies and attention factor.
#pragma once
#include "tiny_smollm3.hpp"

namespace recipes {

struct tiny_smollm3_yarn : tiny_smollm3 {
  using model = kiln::with<tiny_smollm3::model, kiln::YaRN<kiln::RNoPE<4, 50000.0>, 4.0, 16>>;
};

}  // namespace recipes
