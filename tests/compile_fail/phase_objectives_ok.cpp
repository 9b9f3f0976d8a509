// expect: (compiles)
// Objectives are not model changes: a phase with SFT or APO-zero (and a theta change beside it) keeps the table, and
// says what it trains for.
#include "kiln/recipe.hpp"
using namespace kiln;
struct good {
  using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>, kv_heads<2>, RNoPE<4>>, SwiGLU<ffn<64>>>;
  using phases = Phases<Phase<"pre", Stage<micro_batch<1>, seq_len<8>>>, Phase<"sft", Stage<micro_batch<1>, seq_len<8>>, SFT>,
                        Phase<"apo", Stage<micro_batch<1>, seq_len<8>>, RNoPE<4, 2e6>, APOZero>>;
  static TrainConfig defaults() { return {}; }
};
static_assert(check_phases<good>());
static_assert(phase_t<good, 0>::objective == Objective::pretrain && phase_t<good, 1>::objective == Objective::sft);
static_assert(phase_t<good, 2>::objective == Objective::preference &&
              phase_t<good, 2>::preference_loss == PreferenceLoss::apo_zero);
static_assert(phase_model<good, 2>::positional::theta == 2e6);
int main() { return 0; }
