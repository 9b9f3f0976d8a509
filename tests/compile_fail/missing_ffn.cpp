// expect: needs ffn<F>
#include "kiln/plan/params.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, Attention<heads<4>>, SwiGLU<>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
