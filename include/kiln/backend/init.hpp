// kiln/backend/init.hpp: seeded initialisation of a flat parameter buffer in host memory, the same for every
// backend (a device backend copies it over): matrices and embeddings ~ N(0, std^2), norm weights 1; a value
// depends only on (seed, tensor index, element index).
#pragma once
#include <cstdint>

#include "kernels/init.hpp"
#include "kiln/plan/params.hpp"

namespace kiln {

template <DecoderModel M>
void init_parameters(float* params, double std, uint64_t seed) {
  using Params = plan::ParamPlan<M>;
  for (int i = 0; i < Params::count; ++i) {
    const auto& e = Params::table.entries[size_t(i)];
    if (e.role == plan::Role::norm) kernels::init_fill(params + e.offset, e.count(), 1.0f);
    else kernels::init_normal(params + e.offset, e.count(), std, seed, uint64_t(i));
  }
}

}  // namespace kiln
