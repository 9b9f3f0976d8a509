// expect: RNoPE interval must divide the layer count
#include "kiln/plan/params.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<6>, Attention<heads<4>, RNoPE<4>>, SwiGLU<ffn<64>>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
