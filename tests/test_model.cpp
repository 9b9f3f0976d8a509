// The whole model against a reference nobody here wrote: logits, loss and every parameter gradient of two tiny
// models, and each document's summed token log-probabilities, compared with a float64 PyTorch implementation run on
// the same weights and batch
// (tests/reference/make_fixtures.py; fixtures in tests/fixtures). Together the two fixtures cover GQA and MQA,
// RNoPE and RoPE, tied and untied heads, QK-norm, z-loss, ignored targets and packed documents.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kiln/backend/cpu.hpp"
#include "kiln/io/safetensors.hpp"

using namespace kiln;

namespace {

using TinyRnope = Decoder<Embedding<vocab<96>, hidden<64>, tied<true>>, layers<4>,
                          Attention<heads<4>, kv_heads<2>, head_dim<16>, RNoPE<2, 10000.0>>, SwiGLU<ffn<96>>,
                          RMSNorm<1e-6>, z_loss<1e-4>>;
using TinyRnopeStage = Stage<micro_batch<2>, seq_len<24>>;
using TinyQk = Decoder<Embedding<vocab<80>, hidden<48>, tied<false>>, layers<2>,
                       Attention<heads<3>, kv_heads<1>, head_dim<16>, RoPE<500000.0>, qk_norm<true>>, SwiGLU<ffn<64>>,
                       RMSNorm<1e-5>>;
using TinyQkStage = Stage<micro_batch<2>, seq_len<20>>;

// max |a - b| over a tensor, relative to the reference's largest magnitude.
double rel_err(const float* a, const std::vector<float>& ref) {
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < ref.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(ref[i])));
    den = std::max(den, std::abs(double(ref[i])));
  }
  return num / den;
}

template <class M, class S>
void check_against_fixture(const std::string& file) {
  using P = plan::ParamPlan<M>;
  constexpr int B = S::micro_batch, T = S::seq_len;
  io::Safetensors fx(std::string(KILN_TEST_FIXTURES) + "/" + file);

  auto state = std::make_unique<backend::cpu::State<M>>();
  float* params = state->host_mut(backend::Tensor::params);
  for (const auto& e : P::table.entries) fx.copy_to(e.name.view(), params + e.offset, e.count());
  state->commit(backend::Tensor::params);

  auto tokens = fx.to_vector<int32_t>("batch.tokens"), targets = fx.to_vector<int32_t>("batch.targets"),
       positions = fx.to_vector<int32_t>("batch.position_ids"), docs = fx.to_vector<int32_t>("batch.doc_ids");
  REQUIRE(tokens.size() == size_t(B) * T);
  std::vector<int32_t> doc_start(tokens.size());
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) {
      const size_t k = size_t(b) * T + i;
      doc_start[k] = (i > 0 && docs[k] == docs[k - 1]) ? doc_start[k - 1] : i;
    }
  backend::Batch batch{tokens.data(), targets.data(), positions.data(), doc_start.data()};
  long valid = 0;
  for (int32_t t : targets) valid += t >= 0;

  auto exec = std::make_unique<backend::cpu::Executor<M, B, T>>();
  std::vector<float> logits(size_t(B) * T * M::vocab);
  exec->forward_logits(*state, batch, logits.data());
  CHECK(rel_err(logits.data(), fx.to_vector<float>("out.logits")) < 1e-5);

  // Per-sequence log-probabilities over a mask (evaluation, DPO): each document's summed log p(target) equals the
  // sum of PyTorch's token log-probabilities (log_softmax at the target, float64) over the same tokens.
  const auto ref_logp = fx.to_vector<double>("out.token_logp");
  REQUIRE(ref_logp.size() == size_t(B) * T);
  std::vector<int32_t> segment(size_t(B) * T);
  int n_docs = 0;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) {
      const size_t k = size_t(b) * T + i;
      if (i == 0 || docs[k] != docs[k - 1]) ++n_docs;
      segment[k] = targets[k] >= 0 ? n_docs - 1 : -1;  // ignored targets are outside the mask
    }
  std::vector<double> sums(static_cast<size_t>(n_docs)), ref_sums(static_cast<size_t>(n_docs), 0.0);
  exec->sequence_logprobs(segment.data(), n_docs, sums.data());
  for (size_t k = 0; k < segment.size(); ++k)
    if (segment[k] >= 0) ref_sums[size_t(segment[k])] += ref_logp[k];
  for (int d = 0; d < n_docs; ++d) CHECK(sums[size_t(d)] == doctest::Approx(ref_sums[size_t(d)]).epsilon(1e-5));

  state->zero_grad();
  const double loss = exec->forward_backward(*state, batch, 1.0f / float(valid)) / double(valid);
  const double ref_loss = fx.to_vector<double>("out.loss")[0];
  CHECK(loss == doctest::Approx(ref_loss).epsilon(1e-5));
  // the training program leaves the same per-token log-probabilities as the evaluation program
  for (size_t k = 0; k < ref_logp.size(); ++k) CHECK(exec->token_logp()[k] == doctest::Approx(ref_logp[k]).epsilon(1e-4));

  const float* grads = state->host(backend::Tensor::grads);
  for (const auto& e : P::table.entries) {
    const std::string name(e.name.view());
    const double err = rel_err(grads + e.offset, fx.to_vector<float>("grad." + name));
    INFO("gradient of ", name, ": relative error ", err);
    CHECK(err < 1e-4);
  }
}

}  // namespace

TEST_CASE("tiny RNoPE model (GQA, tied, z-loss, packed documents) matches PyTorch float64") {
  check_against_fixture<TinyRnope, TinyRnopeStage>("tiny_rnope.safetensors");
}

TEST_CASE("tiny QK-norm model (MQA, untied head, RoPE everywhere) matches PyTorch float64") {
  check_against_fixture<TinyQk, TinyQkStage>("tiny_qknorm.safetensors");
}
