// kiln/train/schedule.hpp: learning rate at an optimizer step (0-based), all schedules with linear warmup.
//   warmup:   lr * (s + 1) / warmup                              for s < warmup
//   cosine:   min + (lr - min) * (1 + cos(pi * p)) / 2           p = (s - warmup) / (steps - warmup)
//   linear:   lr + (min - lr) * p
//   wsd:      lr until the last decay_fraction of the steps, then linear to min (warmup-stable-decay)
//   constant: lr
#pragma once
#include <algorithm>
#include <cmath>

#include "kiln/train/config.hpp"

namespace kiln {

inline double learning_rate(const TrainConfig& c, long s) {
  if (c.warmup > 0 && s < c.warmup) return c.lr * double(s + 1) / double(c.warmup);
  const double span = double(std::max(1L, c.steps - c.warmup));
  const double p = std::clamp(double(s - c.warmup) / span, 0.0, 1.0);
  switch (c.schedule) {
    case Schedule::constant: return c.lr;
    case Schedule::cosine: return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + std::cos(M_PI * p));
    case Schedule::linear: return c.lr + (c.min_lr - c.lr) * p;
    case Schedule::wsd: {
      const long decay_steps = std::max(1L, long(std::lround(c.decay_fraction * double(c.steps))));
      const long decay_start = c.steps - decay_steps;
      if (s < decay_start) return c.lr;
      const double q = std::clamp(double(s - decay_start + 1) / double(decay_steps), 0.0, 1.0);
      return c.lr + (c.min_lr - c.lr) * q;
    }
  }
  return c.lr;
}

}  // namespace kiln
