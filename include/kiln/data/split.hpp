// kiln/data/split.hpp: which documents are held out of training, in a header of its own (no JSON, no I/O) because
// the trainer's row sources (bytes.hpp) need it in every recipe's translation unit, nvcc's included.
#pragma once
#include <cstdint>
#include <string_view>

#include "kiln/core/rng.hpp"

namespace kiln::data {

// Whether a document is held out of training: every val_every-th by a hash of its content (FNV-1a, mixed), so the
// split depends on neither file order nor tokenizer. The trainers' data (prepare.hpp, bytes.hpp) and the tasks made
// from held-out text (kiln_make_task --held-out) split the same way.
inline bool held_out_document(std::string_view doc, int val_every) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : doc) h = (h ^ ch) * 1099511628211ull;
  return mix64(h) % uint64_t(val_every) == 0;
}

}  // namespace kiln::data
