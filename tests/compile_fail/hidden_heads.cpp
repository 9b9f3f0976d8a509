// expect: hidden must be divisible by heads
#include "kiln/plan/params.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<30>>, layers<4>, Attention<heads<4>>, SwiGLU<ffn<64>>>;
int main() { return int(plan::ParamPlan<model>::parameters % 2); }
