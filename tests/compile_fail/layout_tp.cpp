// expect: kv_heads must be divisible by t
#include "kiln/parallel/layout.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<2>, Attention<heads<4>, kv_heads<1>>, SwiGLU<ffn<64>>>;
static_assert(check_layout<model, Layout<DP<rest>, TP<2>>>());
int main() { return 0; }
