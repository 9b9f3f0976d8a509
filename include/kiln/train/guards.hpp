// kiln/train/guards.hpp: never continue silently past a bad step.
//   not finite:  the loss or the gradient norm is NaN or Inf
//   spike:       loss > mean + z * std over the last `window` accepted losses (once the window is full; the window
//                starts over at the first step of each later data stage, whose new mixture moves the loss)
// A bad step is skipped (no update; its data is consumed). After `max_bad` bad steps in a row the trainer rolls
// back to its last checkpoint (keeping the data position, so the offending batches are not replayed) or, with no
// checkpoint to go back to, stops with the numbers. Every decision is one log line.
// The guard's whole state is fixed-size (a ring of `window` losses), so a checkpoint stores it and a resumed run
// takes exactly the decisions the uninterrupted one would. The rule itself is kiln/core/step_rule.hpp, shared with
// the backends, which judge each step where its loss is (on a GPU, without the host waiting): the trainer's guard
// adopts their verdicts, and hands its state back to them after a checkpoint is loaded.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/step_rule.hpp"

namespace kiln {

struct GuardConfig {
  double spike_zscore = 6.0;  // 0 disables spike detection
  int spike_window = 50;
  int max_bad_steps = 3;
  GuardCounters counters() const { return {spike_zscore, spike_window, 0, 0}; }
};

class LossGuard {
 public:
  using Verdict = kiln::Verdict;

  explicit LossGuard(const GuardConfig& g) : g_(g), ring_(size_t(std::max(g.spike_window, 2)), 0.0) {
    KILN_CHECK(g.spike_window >= 2 && g.spike_window <= kMaxSpikeWindow, "--spike-window must be in [2, ",
               kMaxSpikeWindow, "], got ", g.spike_window);
    KILN_CHECK(g.max_bad_steps >= 1, "--max-bad-steps must be at least 1, got ", g.max_bad_steps);
    KILN_CHECK(g.spike_zscore >= 0, "--spike-zscore must be >= 0 (0 disables), got ", g.spike_zscore);
    c_ = g.counters();
  }

  // Judges a step; records it (accepted losses join the window; bad ones count towards max_bad).
  Verdict judge(double loss, double grad_norm) { return guard_judge(ring_.data(), c_, loss, grad_norm); }
  // Records the verdict a backend reached for this loss (the same rule on its copy of this guard's state).
  void adopt(double loss, Verdict v) {
    if (v == Verdict::ok) {
      ring_[size_t(c_.count % long(ring_.size()))] = loss;
      ++c_.count;
      c_.bad_in_a_row = 0;
    } else {
      ++c_.bad_in_a_row;
    }
  }

  // How many standard deviations `loss` lies above the window's mean.
  double zscore(double loss) const { return guard_zscore(ring_.data(), c_, loss); }

  bool must_roll_back() const { return c_.bad_in_a_row >= g_.max_bad_steps; }
  int bad_in_a_row() const { return c_.bad_in_a_row; }
  void clear_bad() { c_.bad_in_a_row = 0; }
  const GuardConfig& config() const { return g_; }

  // State for checkpoints: the ring, how many losses it has seen, the current run of bad steps.
  struct State {
    std::vector<double> ring;
    long count = 0;
    int bad_in_a_row = 0;
  };
  State state() const { return {ring_, c_.count, c_.bad_in_a_row}; }
  void restore(const State& s) {
    KILN_CHECK(s.ring.size() == ring_.size(), "checkpoint: loss-guard window holds ", s.ring.size(),
               " values but --spike-window is ", ring_.size());
    ring_ = s.ring, c_.count = s.count, c_.bad_in_a_row = s.bad_in_a_row;
  }

 private:
  GuardConfig g_;
  std::vector<double> ring_;
  GuardCounters c_;
};

}  // namespace kiln
