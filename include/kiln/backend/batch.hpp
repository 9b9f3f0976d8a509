// kiln/backend/batch.hpp: the plain types of the backend interface (what the trainer hands a backend without
// knowing which one): a micro-batch as it enters, the checks made there once per batch (the kernels check nothing
// per layer), and the names of the state's flat buffers.
//   tokens     (B, T) input ids in [0, vocab)
//   targets    (B, T) next-token ids in [0, vocab), or < 0 for no loss at this position
//   positions  (B, T) position ids in [0, max_pos) (restart at 0 at each document start)
//   doc_start  (B, T) for token i of a row, the index in that row of its document's first token: in [0, i]
#pragma once
#include <cstdint>

#include "kiln/core/error.hpp"

namespace kiln::backend {

// Host arrays of B*T int32 values each, row-major (B, T).
struct Batch {
  const int32_t* tokens;
  const int32_t* targets;
  const int32_t* positions;
  const int32_t* doc_start;
  // (B, T) weights of each token's loss gradient (nullptr: 1): preference optimisation's -dL/dlog p of the token's
  // sequence (train/preference.hpp). The CPU and CUDA backends take them, without tensor parallelism.
  const float* weights = nullptr;
};

// The flat buffers of a run's state, each in the parameter table's layout.
enum class Tensor { params, grads, adam_m, adam_v };

inline void validate_batch(const Batch& b, int B, int T, int vocab, int max_pos) {
  for (int r = 0; r < B; ++r)
    for (int i = 0; i < T; ++i) {
      const size_t k = size_t(r) * T + i;
      KILN_CHECK(b.tokens[k] >= 0 && b.tokens[k] < vocab, "batch: token id ", b.tokens[k], " at row ", r, ", position ",
                 i, " is outside the model's vocabulary [0, ", vocab, ")");
      KILN_CHECK(b.targets[k] < vocab, "batch: target ", b.targets[k], " at row ", r, ", position ", i,
                 " is outside the vocabulary [0, ", vocab, ") (a negative target means no loss there)");
      KILN_CHECK(b.positions[k] >= 0 && b.positions[k] < max_pos, "batch: position id ", b.positions[k], " at row ", r,
                 ", position ", i, " is outside [0, ", max_pos, ")");
      KILN_CHECK(b.doc_start[k] >= 0 && b.doc_start[k] <= i, "batch: doc_start ", b.doc_start[k], " at row ", r,
                 ", position ", i, " must lie in [0, ", i, "] (the first position of the token's document)");
    }
}

// Sums of per-token log-probabilities by sequence (an executor's sequence_logprobs, from its token_logp of R
// tokens): segment[r] names the sequence (0 .. n-1) that token r's target belongs to, or -1 to leave it out (a
// prompt, padding). sums has n entries, overwritten; each sum is taken in row order in double.
inline void sum_by_sequence(const float* logp, const int32_t* segment, int R, int n, double* sums) {
  for (int i = 0; i < n; ++i) sums[i] = 0;
  for (int r = 0; r < R; ++r) {
    const int32_t s = segment[r];
    KILN_CHECK(s < n, "sequence_logprobs: segment id ", s, " at token ", r, " is not below the ", n, " sequences asked for");
    if (s >= 0) sums[s] += double(logp[r]);
  }
}

}  // namespace kiln::backend
