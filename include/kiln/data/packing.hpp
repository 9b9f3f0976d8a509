// kiln/data/packing.hpp: one packed training row from T + 1 consecutive tokens of the document stream.
//   inputs row[0..T), targets row[1..T]; a token's document starts after the previous end-of-document token or at
//   the row start; doc_start[i] is that position, positions[i] = i - doc_start[i] (RoPE restarts per document).
#pragma once
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

}  // namespace kiln::data
