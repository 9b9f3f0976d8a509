// expect: (compiles)
// A phase that changes only RoPE theta keeps the parameter table.
#include "kiln/recipe.hpp"
using namespace kiln;
struct good {
  using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>, kv_heads<2>, RNoPE<4>>, SwiGLU<ffn<64>>>;
  using phases = Phases<Phase<"a", Stage<micro_batch<1>, seq_len<8>>>, Phase<"b", Stage<micro_batch<1>, seq_len<16>>, RNoPE<4, 2e6>>>;
  static TrainConfig defaults() { return {}; }
};
static_assert(check_phases<good>() && max_seq_len<good> == 16 && phases_of<good>::find("b") == 1);
int main() { return 0; }
