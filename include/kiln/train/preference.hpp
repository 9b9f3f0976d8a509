// kiln/train/preference.hpp: the losses of preference optimisation on one pair, with their derivatives, as TRL's
// DPOTrainer defines them (loss_type "sigmoid" and "apo_zero", label smoothing 0), and the statistics it logs.
//
// For a pair (chosen c, rejected r) with summed log-probabilities of the answer's tokens under the policy (pi) and
// the frozen reference (ref):
//   chosen_logratio = pi_c - ref_c,   rejected_logratio = pi_r - ref_r,   x = chosen_logratio - rejected_logratio
//   dpo:       L = -log sigmoid(beta x)
//   apo_zero:  L = (1 - sigmoid(beta chosen_logratio)) + sigmoid(beta rejected_logratio)
// A batch's loss is the mean over its pairs. The trainer turns dL/dpi_c and dL/dpi_r into each answer token's
// gradient weight: pi_s is a sum of log p(token), so dL/dlog p(token) = dL/dpi_s for every token of s, and the loss
// kernel's per-token gradient is that of -log p, scaled by the weight -dL/dpi_s / pairs.
// TRL's rpo_alpha (the RPO paper's term) adds to a batch's loss alpha x nll, the mean negative log-likelihood of
// every chosen answer's tokens (their count N_c): -alpha sum_p pi_c(p) / N_c, whose derivative by each pi_c is
// -alpha / N_c: each chosen token's weight gains alpha / N_c (answer_token_weight).
// Logged (TRL's names): rewards/chosen = beta chosen_logratio, rewards/rejected, rewards/margins (their difference),
// rewards/accuracies (chosen reward > rejected reward), logps/chosen, logps/rejected (the policy's); nll_loss with
// rpo_alpha.
#pragma once
#include <cmath>

#include "kiln/plan/objective.hpp"

namespace kiln {

struct PairLogps {
  double policy_chosen, policy_rejected, ref_chosen, ref_rejected;
};
struct PairTerms {
  double loss = 0;
  double d_chosen = 0, d_rejected = 0;  // dL/d policy_chosen, dL/d policy_rejected
  double reward_chosen = 0, reward_rejected = 0;
};

inline double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
inline double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

inline PairTerms preference_terms(PreferenceLoss loss, double beta, const PairLogps& p) {
  PairTerms t;
  const double lc = p.policy_chosen - p.ref_chosen, lr = p.policy_rejected - p.ref_rejected;
  t.reward_chosen = beta * lc, t.reward_rejected = beta * lr;
  if (loss == PreferenceLoss::dpo) {
    const double x = beta * (lc - lr);
    t.loss = -log_sigmoid(x);
    const double g = -beta * sigmoid(-x);  // dL/d(lc - lr)
    t.d_chosen = g, t.d_rejected = -g;
  } else {
    const double sc = sigmoid(beta * lc), sr = sigmoid(beta * lr);
    t.loss = (1.0 - sc) + sr;
    t.d_chosen = -beta * sc * (1.0 - sc);
    t.d_rejected = beta * sr * (1.0 - sr);
  }
  return t;
}

// The loss-gradient weight of a token of a pair's chosen or rejected answer: -dL/dlog p(token) for a batch of
// `pairs` pairs whose chosen answers hold `chosen_tokens` tokens, with TRL's rpo_alpha (0: none).
inline double answer_token_weight(const PairTerms& t, bool chosen, double pairs, double chosen_tokens, double rpo_alpha) {
  const double w = -(chosen ? t.d_chosen : t.d_rejected) / pairs;
  return chosen && rpo_alpha > 0 ? w + rpo_alpha / chosen_tokens : w;
}
// The batch loss with TRL's rpo_alpha: the pairs' mean loss plus alpha x the chosen answers' mean negative
// log-likelihood (`chosen_nll` = -sum of their log-probabilities, over `chosen_tokens` tokens).
inline double batch_preference_loss(double loss_sum, double pairs, double chosen_nll, double chosen_tokens,
                                    double rpo_alpha) {
  const double mean = pairs > 0 ? loss_sum / pairs : 0.0;
  return rpo_alpha > 0 && chosen_tokens > 0 ? mean + rpo_alpha * chosen_nll / chosen_tokens : mean;
}

// Sums over a batch's pairs, for the console, metrics.jsonl and the held-out evaluation.
struct PreferenceStats {
  long pairs = 0;
  double loss = 0, reward_chosen = 0, reward_rejected = 0, correct = 0, logp_chosen = 0, logp_rejected = 0;
  double chosen_tokens = 0;  // the chosen answers' tokens (for rpo_alpha's mean negative log-likelihood)
  void add(const PairLogps& p, const PairTerms& t) {
    ++pairs;
    loss += t.loss, reward_chosen += t.reward_chosen, reward_rejected += t.reward_rejected;
    correct += t.reward_chosen > t.reward_rejected ? 1.0 : 0.0;
    logp_chosen += p.policy_chosen, logp_rejected += p.policy_rejected;
  }
  void add(const PreferenceStats& o) {
    pairs += o.pairs, loss += o.loss, reward_chosen += o.reward_chosen, reward_rejected += o.reward_rejected;
    correct += o.correct, logp_chosen += o.logp_chosen, logp_rejected += o.logp_rejected;
    chosen_tokens += o.chosen_tokens;
  }
  double nll() const { return chosen_tokens > 0 ? -logp_chosen / chosen_tokens : 0.0; }  // TRL's nll_loss
  // The sums as one array (data parallelism: summed over the ranks, as TRL gathers its metrics), and back.
  static constexpr int kFields = 8;
  void to(double* v) const {
    const double f[kFields] = {double(pairs), loss, reward_chosen, reward_rejected, correct, logp_chosen, logp_rejected,
                               chosen_tokens};
    for (int i = 0; i < kFields; ++i) v[i] = f[i];
  }
  void from(const double* v) {
    pairs = long(v[0]), loss = v[1], reward_chosen = v[2], reward_rejected = v[3], correct = v[4];
    logp_chosen = v[5], logp_rejected = v[6], chosen_tokens = v[7];
  }
  double batch_loss(double rpo_alpha) const { return batch_preference_loss(loss, double(pairs), -logp_chosen, chosen_tokens, rpo_alpha); }
  double mean(double v) const { return pairs ? v / double(pairs) : 0.0; }
  double accuracy() const { return mean(correct); }
  double margin() const { return mean(reward_chosen - reward_rejected); }
};

}  // namespace kiln
