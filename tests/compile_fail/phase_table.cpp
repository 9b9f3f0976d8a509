// expect: a phase may change the model only where its parameter table stays the same
// A phase that changes the number of KV heads would need other parameters: refused where the recipe is read.
#include "kiln/recipe.hpp"
using namespace kiln;
struct bad {
  using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>, kv_heads<2>, RNoPE<4>>, SwiGLU<ffn<64>>>;
  using phases = Phases<Phase<"a", Stage<micro_batch<1>, seq_len<8>>>, Phase<"b", Stage<micro_batch<1>, seq_len<16>>, kv_heads<1>>>;
  static TrainConfig defaults() { return {}; }
};
static_assert(check_phases<bad>());
int main() { return 0; }
