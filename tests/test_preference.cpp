// Preference optimisation: DPO's and APO-zero's losses and derivatives against TRL's formulas in PyTorch
// (tests/reference/make_preference_fixture.py), TRL's rpo_alpha on whole batches (make_rpo_fixture.py), the pairs
// reader's errors, and the whole gradient (each answer
// token's loss gradient weighted by -dL/dlog p, the CPU backend's weighted loss kernel) against central finite
// differences of the preference loss itself; and the merge arithmetic (kiln/train/merge.hpp).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>

#include "kiln/backend/cpu.hpp"
#include "kiln/data/chat.hpp"
#include "kiln/data/chat_synthetic.hpp"
#include "kiln/data/pairs.hpp"
#include "kiln/recipe.hpp"
#include "kiln/train/merge.hpp"
#include "kiln/train/preference.hpp"
#include "kiln/train/trainer.hpp"

using namespace kiln;

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
std::string write_temp(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / ("kiln_test_pref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string p = (dir / name).string();
  std::ofstream(p) << text;
  return p;
}
}  // namespace

TEST_CASE("preference: DPO and APO-zero equal TRL's formulas (PyTorch autograd, float64)") {
  std::ifstream f(std::string(KILN_TEST_FIXTURES) + "/preference/trl.json");
  const nlohmann::json cases = nlohmann::json::parse(f);
  REQUIRE(cases.size() >= 20);
  for (const auto& c : cases) {
    const PreferenceLoss l = c["loss_type"] == "sigmoid" ? PreferenceLoss::dpo : PreferenceLoss::apo_zero;
    const PairTerms t = preference_terms(l, c["beta"], {c["policy_chosen"], c["policy_rejected"], c["ref_chosen"],
                                                        c["ref_rejected"]});
    CAPTURE(c.dump());
    CHECK(t.loss == doctest::Approx(c["loss"].get<double>()).epsilon(1e-12));
    CHECK(t.d_chosen == doctest::Approx(c["d_chosen"].get<double>()).epsilon(1e-12));
    CHECK(t.d_rejected == doctest::Approx(c["d_rejected"].get<double>()).epsilon(1e-12));
    CHECK(t.reward_chosen == doctest::Approx(c["reward_chosen"].get<double>()).epsilon(1e-12));
    CHECK(t.reward_rejected == doctest::Approx(c["reward_rejected"].get<double>()).epsilon(1e-12));
  }
}

TEST_CASE("preference: TRL's rpo_alpha on whole batches (the batch loss and each answer token's weight)") {
  std::ifstream f(std::string(KILN_TEST_FIXTURES) + "/preference/rpo.json");
  const nlohmann::json cases = nlohmann::json::parse(f);
  REQUIRE(cases.size() >= 10);
  for (const auto& c : cases) {
    CAPTURE(c.dump());
    const PreferenceLoss l = c["loss_type"] == "sigmoid" ? PreferenceLoss::dpo : PreferenceLoss::apo_zero;
    const double beta = c["beta"], alpha = c["rpo_alpha"];
    const size_t n = c["pairs"].size();
    double sum = 0, nll = 0, tokens = 0;
    std::vector<PairTerms> terms;
    for (size_t p = 0; p < n; ++p) {
      const auto& q = c["pairs"][p];
      terms.push_back(preference_terms(l, beta, {q[0], q[1], q[2], q[3]}));
      sum += terms.back().loss;
      nll -= q[0].get<double>();
      tokens += c["chosen_tokens"][p].get<double>();
    }
    CHECK(batch_preference_loss(sum, double(n), nll, tokens, alpha) == doctest::Approx(c["loss"].get<double>()).epsilon(1e-12));
    for (size_t p = 0; p < n; ++p) {  // a token's weight is -dL/dlog p(token) = -dL/d(its answer's summed log p)
      CHECK(-answer_token_weight(terms[p], true, double(n), tokens, alpha) ==
            doctest::Approx(c["d_chosen"][p].get<double>()).epsilon(1e-7));
      CHECK(-answer_token_weight(terms[p], false, double(n), tokens, alpha) ==
            doctest::Approx(c["d_rejected"][p].get<double>()).epsilon(1e-7));
    }
  }
}

TEST_CASE("preference: pairs in TRL's standard and conversational layouts; malformed ones named by file and line") {
  const std::string ok = write_temp(
      "ok.jsonl", "{\"prompt\": \"What is 2 + 2?\", \"chosen\": \"4\", \"rejected\": \"5\"}\n\n"
                  "{\"prompt\": [{\"role\": \"system\", \"content\": \"/no_think\"}, {\"role\": \"user\", \"content\": \"q\"}], "
                  "\"chosen\": [{\"role\": \"assistant\", \"content\": \"yes\"}], "
                  "\"rejected\": [{\"role\": \"assistant\", \"content\": \"no\"}]}\n");
  const auto pairs = data::read_pairs(ok);
  REQUIRE(pairs.size() == 2);
  CHECK(pairs[0].prompt.size() == 1);
  CHECK(pairs[0].prompt[0].role == "user");
  CHECK(pairs[0].chosen[0].role == "assistant");
  CHECK(pairs[1].where.ends_with("ok.jsonl:3"));
  auto err = [](const std::string& line) {
    const std::string p = write_temp("bad.jsonl", line + "\n");
    return error_of([&] { data::read_pairs(p); });
  };
  CHECK(err("{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"a\"}").find("bad.jsonl:1: the chosen and the "
                                                                           "rejected answer are the same") != std::string::npos);
  CHECK(err("{\"prompt\": \"q\", \"chosen\": \"a\"}").find("bad.jsonl:1: field rejected is missing") != std::string::npos);
  CHECK(err("{\"prompt\": \"q\", \"chosen\": [{\"role\": \"user\", \"content\": \"a\"}], \"rejected\": \"b\"}")
            .find("bad.jsonl:1: field chosen[0].role = \"user\": an answer's messages are the assistant's") !=
        std::string::npos);
  CHECK(err("{\"prompt\": [{\"role\": \"robot\", \"content\": \"q\"}], \"chosen\": \"a\", \"rejected\": \"b\"}")
            .find("field prompt[0].role = \"robot\"") != std::string::npos);
  CHECK(err("{\"prompt\": \"q\", \"chosen\": \"\", \"rejected\": \"b\"}").find("field chosen is empty") != std::string::npos);
  CHECK(err("[1, 2]").find("bad.jsonl:1: not a JSON object") != std::string::npos);
  // a pair longer than the phase's rows
  const data::Tokenizer tok = data::Tokenizer::load(std::string(KILN_TEST_FIXTURES) + "/chat/tokenizer.json");
  CHECK(error_of([&] { data::tokenize_pairs(tok, pairs, 20, 20); }).find("ok.jsonl:1: the pair's chosen and rejected "
                                                                       "sequences are") != std::string::npos);
}

TEST_CASE("preference: generated pairs: the chosen answer is right and on topic, the rejected one is not") {
  long bad = 0;
  CHECK(data::careless_steps(67, 576, &bad) == "7+6=13\n6+7=13\n0+5=5\n");
  CHECK(bad == 533);
  data::careless_steps(12, 30, &bad);  // no carry: the last digit is off by one
  CHECK(bad == 43);
  std::vector<std::pair<std::string, std::string>> docs;
  for (int i = 0; i < 30; ++i) docs.push_back({"computer text " + std::to_string(i), "computers"}),
                               docs.push_back({"love text " + std::to_string(i), "love"});
  data::ChatSyntheticOptions o;
  o.instructions = 20, o.arithmetic = 20;
  for (const auto& p : data::synthetic_pairs(docs, o)) {
    const std::string& q = p.prompt.back().content;
    CHECK(p.chosen != p.rejected);
    long a = 0, b = 0;
    if (std::sscanf(q.c_str(), "What is %ld + %ld?", &a, &b) == 2) {
      CHECK(p.chosen.ends_with(std::to_string(a + b)));
      CHECK(!p.rejected.ends_with(std::to_string(a + b)));
    } else {
      const bool computers = q.find("computers") != std::string::npos;
      CHECK(p.chosen.starts_with(computers ? "computer" : "love"));
      CHECK(p.rejected.starts_with(computers ? "love" : "computer"));
    }
  }
}

namespace {
struct pref_tiny {
  using model = Decoder<Embedding<vocab<704>, hidden<32>, tied<true>>, layers<2>,
                        Attention<heads<2>, kv_heads<1>, RNoPE<2, 10000.0>>, SwiGLU<ffn<64>>, RMSNorm<1e-6>>;
  using stage = Stage<micro_batch<2>, seq_len<128>>;
  static TrainConfig defaults() { return {}; }
};
}  // namespace

// The trainer's preference step in miniature (train/trainer.hpp: start_preference_step): the gradient of the mean
// pair loss through per-token weights -dL/dpi_s / pairs on the loss kernel (with rpo_alpha: each chosen token's also
// alpha / the chosen tokens), against finite differences of the loss.
TEST_CASE("preference: the weighted backward is the gradient of the preference loss (finite differences)") {
  using M = pref_tiny::model;
  constexpr int B = 2, T = 128;
  const data::Tokenizer tok = data::Tokenizer::load(std::string(KILN_TEST_FIXTURES) + "/chat/tokenizer.json");
  std::vector<data::Pair> pairs = {
      {{{"user", "What is 12 + 30?"}}, {{"assistant", "42"}}, {{"assistant", "43 is the sum"}}, "a"},
      {{{"system", "/no_think"}, {"user", "Tell me a fortune."}}, {{"assistant", "You will learn."}},
       {{"assistant", "No."}}, "b"},
      {{{"user", "Hello there"}}, {{"assistant", "Hi!"}}, {{"assistant", "Go away, please."}}, "c"}};
  auto groups = std::make_shared<std::vector<data::ChatGroup>>();
  for (const auto& p : pairs) groups->push_back(data::tokenize_pair(tok, p));
  HostBatch<B, T> mb;
  data::ChatRows rows(groups, 0, 1, false);
  mb.fill(rows);
  std::vector<int32_t> seg;
  const int n = mb.sequences(seg);
  REQUIRE((n >= 4 && n % 2 == 0));
  backend::cpu::State<M> policy, ref;
  ref.init(0.1, 5);
  policy.init(0.1, 5);
  {  // the policy a little away from the reference, so that the loss is not at its symmetric point
    float* p = policy.host_mut(backend::Tensor::params);
    Rng rng(9);
    for (size_t i = 0; i < plan::ParamPlan<M>::table.total; ++i) p[i] += 0.02f * (float(rng.below(1000)) / 500.0f - 1.0f);
    policy.commit(backend::Tensor::params);
  }
  auto exec = std::make_unique<backend::cpu::Executor<M, B, T>>();
  std::vector<double> lr(static_cast<size_t>(n));
  exec->forward(ref, mb.view());
  exec->sequence_logprobs(seg.data(), n, lr.data());
  double chosen_tokens = 0;
  for (int32_t s : seg) chosen_tokens += s >= 0 && s % 2 == 0;
  struct Case {
    PreferenceLoss kind;
    double rpo_alpha;
  };
  for (const Case cs : {Case{PreferenceLoss::dpo, 0.0}, Case{PreferenceLoss::apo_zero, 0.0},
                        Case{PreferenceLoss::apo_zero, 0.7}}) {
    const PreferenceLoss kind = cs.kind;
    CAPTURE(preference_loss_name(kind));
    CAPTURE(cs.rpo_alpha);
    const double beta = 1.0;
    auto loss_and_terms = [&](std::vector<PairTerms>* terms) {
      std::vector<double> lp(static_cast<size_t>(n));
      exec->forward(policy, mb.view());
      exec->sequence_logprobs(seg.data(), n, lp.data());
      double sum = 0, nll = 0;
      for (int p = 0; p < n / 2; ++p) {
        const PairTerms t = preference_terms(kind, beta, {lp[size_t(2 * p)], lp[size_t(2 * p + 1)], lr[size_t(2 * p)],
                                                          lr[size_t(2 * p + 1)]});
        if (terms) terms->push_back(t);
        sum += t.loss;
        nll -= lp[size_t(2 * p)];
      }
      return batch_preference_loss(sum, double(n / 2), nll, chosen_tokens, cs.rpo_alpha);
    };
    std::vector<PairTerms> terms;
    loss_and_terms(&terms);
    HostBatch<B, T> w = mb;
    w.weights.assign(w.tokens.size(), 0.0f);
    for (size_t k = 0; k < seg.size(); ++k)
      if (seg[k] >= 0)
        w.weights[k] = float(answer_token_weight(terms[size_t(seg[k] / 2)], seg[k] % 2 == 0, double(n / 2),
                                                 chosen_tokens, cs.rpo_alpha));
    policy.zero_grad();
    exec->forward_backward(policy, w.view(), 1.0f);
    const float* g = policy.host(backend::Tensor::grads);
    const size_t total = plan::ParamPlan<M>::table.total;
    std::vector<size_t> idx(total);
    std::iota(idx.begin(), idx.end(), size_t(0));
    std::partial_sort(idx.begin(), idx.begin() + 12, idx.end(),
                      [&](size_t a, size_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
    REQUIRE(std::fabs(g[idx[0]]) > 1e-3);
    float* p = policy.host_mut(backend::Tensor::params);
    for (int k = 0; k < 12; ++k) {
      const size_t i = idx[size_t(k)];
      const float x = p[i], h = 1e-2f;
      p[i] = x + h;
      policy.commit(backend::Tensor::params);
      const double up = loss_and_terms(nullptr);
      p[i] = x - h;
      policy.commit(backend::Tensor::params);
      const double down = loss_and_terms(nullptr);
      p[i] = x;
      policy.commit(backend::Tensor::params);
      const double fd = (up - down) / (double(x + h) - double(x - h));
      CAPTURE(i);
      CHECK(double(g[i]) == doctest::Approx(fd).epsilon(0.03).scale(1e-4));
    }
  }
}

TEST_CASE("merge: soup, linear and task arithmetic, exact on small buffers") {
  const std::vector<float> a = {1.0f, -2.0f, 0.5f, 3.0f}, b = {3.0f, 2.0f, 0.25f, -1.0f}, base = {1.0f, 1.0f, 1.0f, 1.0f};
  const std::vector<const float*> ab = {a.data(), b.data()};
  CHECK(merge_params(MergeMethod::soup, ab, {}, nullptr, 4) == std::vector<float>{2.0f, 0.0f, 0.375f, 1.0f});
  // linear, normalised: (3 a + 1 b) / 4
  CHECK(merge_params(MergeMethod::linear, ab, {3.0, 1.0}, nullptr, 4) ==
        std::vector<float>{1.5f, -1.0f, 0.4375f, 2.0f});
  // task arithmetic: base + 0.5 (a - base) + 2 (b - base)
  CHECK(merge_params(MergeMethod::task_arithmetic, ab, {0.5, 2.0}, base.data(), 4) ==
        std::vector<float>{5.0f, 1.5f, -0.75f, -2.0f});
  // one model with weight 1, or a soup of a model with itself, is that model bitwise
  const std::vector<float> odd = {0.1f, 1e-30f, -3.3333333f, 123456.79f};
  CHECK(merge_params(MergeMethod::linear, {odd.data()}, {1.0}, nullptr, 4) == odd);
  CHECK(merge_params(MergeMethod::soup, {odd.data(), odd.data(), odd.data()}, {}, nullptr, 4) == odd);
  // SmolLM3's last step: 0.9 of a soup + 0.1 of another, in double then rounded once
  const float x = 0.3f, y = 0.7f;
  CHECK(merge_params(MergeMethod::linear, {&x, &y}, {0.9, 0.1}, nullptr, 1)[0] == float(0.9 * double(x) + 0.1 * double(y)));
  CHECK(error_of([&] { merge_params(MergeMethod::task_arithmetic, ab, {1, 1}, nullptr, 4); }).find("needs a base") !=
        std::string::npos);
  CHECK(error_of([&] { merge_params(MergeMethod::linear, ab, {1}, nullptr, 4); }).find("2 models but 1 weights") !=
        std::string::npos);
  CHECK(error_of([&] { merge_params(MergeMethod::linear, ab, {1, -1}, nullptr, 4); }).find("sum to a positive") !=
        std::string::npos);
}
