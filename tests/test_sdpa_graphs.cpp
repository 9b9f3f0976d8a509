// tests/test_sdpa_graphs.cpp: cuDNN's attention without a GPU (label cpu). The documents of a packed batch as
// cuDNN's ragged slots, and cuDNN's own validation of the forward and backward graphs of every phase of the shipped
// recipes for sm_90 (H100 / H200): the graphs the CUDA trainers build at start. Built where cuDNN's attention is
// (cmake/KilnCudnn.cmake); what only a GPU can check (the values) is in tests/gpu/test_kernels_gpu.cu.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kiln/backend/cuda/sdpa.hpp"
#include "kiln/recipe.hpp"
#include "recipes/ablation_1b.hpp"
#include "recipes/ablation_1b_mqa.hpp"
#include "recipes/demo.hpp"
#include "recipes/smollm3_3b.hpp"

using kiln::backend::cuda::SdpaShape;
using kiln::backend::cuda::sdpa_slots;
using kiln::backend::cuda::sdpa_validate;

TEST_CASE("a packed batch's documents as cuDNN's slots") {
  constexpr int B = 2, T = 6;
  // row 0: documents at 0 and 4; row 1: documents at 0, 1 and 2
  const std::vector<int32_t> ds = {0, 0, 0, 0, 4, 4, /**/ 0, 1, 2, 2, 2, 2};
  std::vector<int32_t> len(B * T);
  std::vector<int64_t> start(B * T + 1);
  REQUIRE(sdpa_slots(ds.data(), B, T, len.data(), start.data()) == 5);
  CHECK(std::vector<int32_t>(len.begin(), len.begin() + 5) == std::vector<int32_t>{4, 2, 1, 1, 4});
  CHECK(std::vector<int64_t>(start.begin(), start.begin() + 6) == std::vector<int64_t>{0, 4, 6, 7, 8, 12});
  // every token its own document
  const std::vector<int32_t> own = {0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5};
  CHECK(sdpa_slots(own.data(), B, T, len.data(), start.data()) == B * T);
  // token 3 of row 0 goes back to document 0 after document 2 began: not one contiguous run per document
  const std::vector<int32_t> bad = {0, 0, 2, 0, 4, 4, 0, 0, 0, 0, 0, 0};
  CHECK(sdpa_slots(bad.data(), B, T, len.data(), start.data()) == -1 - 3);
}

namespace {

template <class Recipe>
void validate_recipe(const char* name) {
  using namespace kiln;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    auto phase = [&]<int P>() {
      using M = phase_model<Recipe, P>;
      using S = phase_stage<Recipe, P>;
      const int B = S::micro_batch, T = S::seq_len;
      const SdpaShape shape{M::heads, M::kv_heads, M::head_dim, B * T, T, 1.0f / std::sqrt(float(M::head_dim))};
      for (int n : {1, B, B * T / 64, B * T}) {
        if (n < 1) continue;
        const std::string e = sdpa_validate(shape, n, 90);
        CHECK_MESSAGE(e.empty(), name << " phase " << P << ", " << n << " documents: " << e);
      }
    };
    (phase.template operator()<I>(), ...);
  }(std::make_integer_sequence<int, phases_of<Recipe>::count>{});
}

}  // namespace

TEST_CASE("cuDNN validates the attention graphs of every shipped recipe's phases for sm_90") {
  validate_recipe<recipes::demo>("demo");
  validate_recipe<recipes::ablation_1b>("ablation_1b");
  validate_recipe<recipes::ablation_1b_mqa>("ablation_1b_mqa");
  validate_recipe<recipes::smollm3_3b>("smollm3_3b");
}

TEST_CASE("cuDNN's validation refuses what it cannot run, and says why") {
  const SdpaShape ok{8, 2, 128, 512, 256, 0.088f};
  CHECK(sdpa_validate(ok, 3, 90).empty());
  CHECK(sdpa_validate(ok, 3, 100).empty());
  SdpaShape wide = ok;
  wide.head_dim = 320;  // past Hopper's 256
  const std::string e = sdpa_validate(wide, 3, 90);
  CHECK_MESSAGE(e.find("backward graph") != std::string::npos, e);
  CHECK_MESSAGE(e.find("256") != std::string::npos, e);
  // Ampere runs no backward over a ragged log-sum-exp
  CHECK_MESSAGE(sdpa_validate(ok, 3, 80).find("backward graph") != std::string::npos, sdpa_validate(ok, 3, 80));
  CHECK(!sdpa_validate(ok, 3, 75).empty());
  // a shape that is no attention at all: Kiln's own error, before cuDNN
  SdpaShape odd = ok;
  odd.kv_heads = 3;
  CHECK_THROWS_WITH_AS(sdpa_validate(odd, 1, 90), doctest::Contains("heads a multiple of kv_heads"), kiln::Error);
}
