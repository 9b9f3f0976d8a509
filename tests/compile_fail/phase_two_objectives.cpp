// expect: at most one objective
// A phase trains for one objective: SFT and a preference loss together are refused.
#include "kiln/recipe.hpp"
using namespace kiln;
struct bad {
  using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>, kv_heads<2>, RNoPE<4>>, SwiGLU<ffn<64>>>;
  using phases = Phases<Phase<"a", Stage<micro_batch<1>, seq_len<8>>>, Phase<"b", Stage<micro_batch<1>, seq_len<8>>, SFT, DPO>>;
  static TrainConfig defaults() { return {}; }
};
static_assert(check_phases<bad>());
int main() { return 0; }
