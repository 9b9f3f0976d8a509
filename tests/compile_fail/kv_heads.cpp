// expect: heads must be divisible by kv_heads
#include "kiln/plan/params.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>, kv_heads<3>>, SwiGLU<ffn<64>>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
