// recipes/ablations/demo_no_docmask.hpp: demo_pretrain (the demo's pretraining) with one change, no document masking: a
// packed row of 256 tokens is one sequence (a token attends to the documents before it in the row, positions run
// 0..255) instead of each document its own (SmolLM3's intra-document masking). The model is the demo's; the change is
// in how rows are read (TrainConfig::document_masking, --document-masking). The playbook found the two equal at short
// context.
#pragma once
#include "../demo_pretrain.hpp"

namespace recipes {

struct demo_no_docmask : demo_pretrain {
  static kiln::TrainConfig defaults() {
    kiln::TrainConfig c = demo_pretrain::defaults();
    c.document_masking = false;
    return c;
  }
};

}  // namespace recipes
