// expect: are built; ZeRO<2>
#include "kiln/parallel/layout.hpp"
using namespace kiln;
int main() { return Layout<ZeRO<2>>::zero; }
