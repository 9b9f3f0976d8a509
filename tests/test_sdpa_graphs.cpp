// tests/test_sdpa_graphs.cpp: cuDNN's attention without a GPU (label cpu). The documents of a packed batch as
// cuDNN's ragged slots, and cuDNN's own validation of the forward and backward graphs of every phase of the shipped
// recipes for sm_90 (H100 / H200): the graphs the CUDA trainers build at start. Built where cuDNN's attention is
// (cmake/KilnCudnn.cmake); what only a GPU can check (the values) is in tests/gpu/test_kernels_gpu.cu.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "kiln/backend/cuda/sdpa.hpp"
#include "kiln/plan/sdpa_memory.hpp"
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
      for (int docs : {1, B, B * T / 64 + 1, B * T}) {  // the buckets they run in: 1, B's, a middle one, R
        const int n = kiln::backend::cuda::sdpa_bucket(docs, B * T);
        const std::string e = sdpa_validate(shape, n, 90);
        CHECK_MESSAGE(e.empty(), name << " phase " << P << ", " << n << " documents: " << e);
      }
    };
    (phase.template operator()<I>(), ...);
  }(std::make_integer_sequence<int, phases_of<Recipe>::count>{});
}

}  // namespace

TEST_CASE("documents are padded to power-of-two slot counts, at most one per token") {
  using kiln::backend::cuda::sdpa_bucket;
  CHECK(sdpa_bucket(1, 2048) == 1);
  CHECK(sdpa_bucket(5, 2048) == 8);
  CHECK(sdpa_bucket(64, 2048) == 64);
  CHECK(sdpa_bucket(65, 2048) == 128);
  CHECK(sdpa_bucket(12000, 12288) == 12288);  // not past one slot per token
  CHECK(sdpa_bucket(12288, 12288) == 12288);
}

TEST_CASE("cuDNN validates the attention graphs of every shipped recipe's phases for sm_90") {
  validate_recipe<recipes::demo>("demo");
  validate_recipe<recipes::demo_pretrain>("demo_pretrain");
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

// The frontend's ragged workspace tensors (its ragged_workspace_size over the strides src/cuda/sdpa.cpp gives cuDNN):
// the block the plan reserves must hold them, for MHA and for GQA (dense dK / dV views).
TEST_CASE("the plan's cuDNN workspace holds what the frontend sizes for the strides Kiln passes") {
  auto ragged = [](long rows, long heads, long s_stride, long h_stride, long d, long d_stride) {
    return size_t(((rows - 1) * s_stride + (heads - 1) * h_stride + (d - 1) * d_stride + 1) * 4);
  };
  for (auto [nh, nkv, hd, R] : {std::tuple{32, 8, 64, 16384}, {16, 4, 128, 12288}, {8, 8, 128, 4096}, {4, 2, 48, 2048},
                                {32, 1, 64, 16384}}) {
    const long rows = R + 1, qkv = long(nh + 2 * nkv) * hd, g = nh / nkv, kvw = long(nkv) * hd;
    size_t need = ragged(rows, nh, qkv, hd, hd, 1)  // dQ accumulator: dQ's strides inside dqkv
                  + ragged(rows, nh, nh, 1, 1, 1);  // dO . O sums: the stats' (token, head) layout
    if (g > 1) need += 2 * ragged(rows, nh, kvw * g, hd, hd, 1);  // full-head dK, dV: the dense views' strides x g
    const size_t have = kiln::plan::sdpa_cudnn_workspace_bytes(nh, nkv, hd, int(rows)) - kiln::plan::kSdpaEngineWorkspace;
    CHECK_MESSAGE(have >= need, nh << "/" << nkv << " heads of " << hd << ", " << R << " tokens: " << have << " < " << need);
    CHECK(have < need + (64 << 10));  // and no more than a row and the rounding
  }
  // what the dense views save for ablation_1b (32 / 8 heads of 64, 4 x 4096): dK / dV written in place would take
  // full-head accumulators of dqkv's row stride times 4
  const long rows = 16385, qkv = 48 * 64;
  const size_t in_place = 2 * ragged(rows, 32, qkv * 4, 64, 64, 1);
  CHECK(kiln::plan::sdpa_workspace_bytes(32, 8, 64, int(rows)) < in_place / 2);
}
