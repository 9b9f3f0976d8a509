// expect: RoPE needs an even head_dim
#include "kiln/plan/params.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<30>>, layers<4>, Attention<heads<2>, head_dim<15>, RoPE<>>, SwiGLU<ffn<64>>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
