// expect: a component is given twice
#include "kiln/plan/params.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<32>>, layers<4>, layers<5>, Attention<heads<4>>, SwiGLU<ffn<64>>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
