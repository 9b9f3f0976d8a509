// kiln/data/packing.hpp: packed training rows from a document stream, the one packer of every row source (the
// byte-level Packer in bytes.hpp, the shard mixture Loader in loader.hpp).
//   A row is T + 1 consecutive tokens of the stream (documents, each followed by the end-of-document id `eod`):
//   inputs row[0..T), targets row[1..T]. The previous row's last target is the next row's first input (the stream's
//   `carry`, part of its checkpointed state), so no token of the stream is lost between rows. A token's document
//   starts after the previous eod token or at the row start; doc_start[i] is that position, positions[i] =
//   i - doc_start[i] (RoPE restarts per document).
#pragma once
#include <cstddef>
#include <cstdint>

namespace kiln::data {

inline void emit_row(const int32_t* row, int T, int32_t eod, int32_t* tokens, int32_t* targets, int32_t* positions,
                     int32_t* doc_start) {
  int start = 0;
  for (int i = 0; i < T; ++i) {
    if (i > 0 && row[i - 1] == eod) start = i;
    tokens[i] = row[i];
    targets[i] = row[i + 1];
    doc_start[i] = start;
    positions[i] = i - start;
  }
}

// Cuts the next row from a stream: fill(from, n) writes the stream's next n tokens to row[from, from + n) (and their
// loss masks, by the stream's own means). carry / has_carry are the stream's state; row holds T + 1 tokens.
template <class Flag, class Fill>
void cut_row(int T, int32_t eod, int32_t& carry, Flag& has_carry, int32_t* row, Fill&& fill, int32_t* tokens,
             int32_t* targets, int32_t* positions, int32_t* doc_start) {
  if (has_carry) {
    row[0] = carry;  // an input only
    fill(size_t(1), size_t(T));
  } else {
    fill(size_t(0), size_t(T) + 1);
  }
  carry = row[T];
  has_carry = Flag(1);
  emit_row(row, T, eod, tokens, targets, positions, doc_start);
}

}  // namespace kiln::data
