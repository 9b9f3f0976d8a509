// expect: no component of Base accepts
#include "kiln/plan/params.hpp"
using namespace kiln;
using base = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>>, SwiGLU<ffn<64>>>;
using model = with<base, micro_batch<2>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
