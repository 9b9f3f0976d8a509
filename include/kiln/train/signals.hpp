// kiln/train/signals.hpp: SIGTERM / SIGINT ask the trainer to stop after the current step (it saves a checkpoint
// first); a second signal of either kind ends the process at once, as a user pressing Ctrl-C twice expects.
#pragma once
#include <atomic>
#include <csignal>

namespace kiln {

inline std::atomic<int>& stop_signal() {
  static std::atomic<int> s{0};
  return s;
}

inline void install_stop_handlers() {
  auto handler = [](int sig) {
    if (stop_signal().exchange(sig) != 0) {  // the second one: leave now
      std::signal(sig, SIG_DFL);
      std::raise(sig);
    }
  };
  std::signal(SIGTERM, handler);
  std::signal(SIGINT, handler);
}

}  // namespace kiln
