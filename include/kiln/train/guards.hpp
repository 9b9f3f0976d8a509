// kiln/train/guards.hpp: never continue silently past a bad step.
//   not finite:  the loss or the gradient norm is NaN or Inf
//   spike:       loss > mean + z * std over the last `window` accepted losses (once the window is full)
// A bad step is skipped (no update; its data is consumed). After `max_bad` bad steps in a row the trainer rolls
// back to its last checkpoint (keeping the data position, so the offending batches are not replayed) or, with no
// checkpoint to go back to, stops with the numbers. Every decision is one log line.
// The guard's whole state is fixed-size (a ring of `window` losses), so a checkpoint stores it and a resumed run
// takes exactly the decisions the uninterrupted one would.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"

namespace kiln {

struct GuardConfig {
  double spike_zscore = 6.0;  // 0 disables spike detection
  int spike_window = 50;
  int max_bad_steps = 3;
};

class LossGuard {
 public:
  enum class Verdict { ok, not_finite, spike };

  explicit LossGuard(const GuardConfig& g) : g_(g), ring_(size_t(std::max(g.spike_window, 2)), 0.0) {
    KILN_CHECK(g.spike_window >= 2, "--spike-window must be at least 2, got ", g.spike_window);
    KILN_CHECK(g.max_bad_steps >= 1, "--max-bad-steps must be at least 1, got ", g.max_bad_steps);
    KILN_CHECK(g.spike_zscore >= 0, "--spike-zscore must be >= 0 (0 disables), got ", g.spike_zscore);
  }

  // Judges a step; records it (accepted losses join the window; bad ones count towards max_bad).
  Verdict judge(double loss, double grad_norm) {
    Verdict v = Verdict::ok;
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) v = Verdict::not_finite;
    else if (g_.spike_zscore > 0 && count_ >= long(ring_.size()) && zscore(loss) > g_.spike_zscore) v = Verdict::spike;
    if (v == Verdict::ok) {
      ring_[size_t(count_ % long(ring_.size()))] = loss;
      ++count_;
      bad_in_a_row_ = 0;
    } else {
      ++bad_in_a_row_;
    }
    return v;
  }

  // How many standard deviations `loss` lies above the window's mean.
  double zscore(double loss) const {
    const size_t n = size_t(std::min<long>(count_, long(ring_.size())));
    if (n < 2) return 0;
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; ++i) mean += ring_[i];
    mean /= double(n);
    for (size_t i = 0; i < n; ++i) var += (ring_[i] - mean) * (ring_[i] - mean);
    const double sd = std::sqrt(var / double(n - 1));
    return sd > 0 ? (loss - mean) / sd : 0;
  }

  bool must_roll_back() const { return bad_in_a_row_ >= g_.max_bad_steps; }
  int bad_in_a_row() const { return bad_in_a_row_; }
  void clear_bad() { bad_in_a_row_ = 0; }

  // State for checkpoints: the ring, how many losses it has seen, the current run of bad steps.
  struct State {
    std::vector<double> ring;
    long count = 0;
    int bad_in_a_row = 0;
  };
  State state() const { return {ring_, count_, bad_in_a_row_}; }
  void restore(const State& s) {
    KILN_CHECK(s.ring.size() == ring_.size(), "checkpoint: loss-guard window holds ", s.ring.size(),
               " values but --spike-window is ", ring_.size());
    ring_ = s.ring, count_ = s.count, bad_in_a_row_ = s.bad_in_a_row;
  }

 private:
  GuardConfig g_;
  std::vector<double> ring_;
  long count_ = 0;
  int bad_in_a_row_ = 0;
};

}  // namespace kiln
