// expect: CPU backend: head_dim must be a multiple of 4
// head_dim 6 with RoPE passes the model's checks (it is even) but not the CPU kernels': the recipe check says so
// in one sentence where the recipe is read, before any kernel is compiled.
#include "kiln/backend/cpu_names.hpp"
using namespace kiln;
using model = Decoder<Embedding<vocab<64>, hidden<24>>, layers<4>, Attention<heads<4>, head_dim<6>, RoPE<>>, SwiGLU<ffn<64>>>;
static_assert(backend::cpu::check<model>());
int main() { return 0; }
