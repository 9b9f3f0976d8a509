// kiln/data/synthetic.hpp: documents generated from text on the machine, for skills the text alone does not teach.
//
// Retrieval ("passkey") documents, the long-context extension's probe and its training signal: a key stated at the
// start, filler text, and the question at the end, answered by the key:
//   "The password is mango. <filler: whole documents, whitespace folded> What is the password? The password is mango."
// The key is one of kRetrievalKeys (common words), the filler a run of documents whose length is drawn between
// min_chars and max_chars, short ones more often (the last document cut at a word boundary): a model can predict the final word only by looking back across the filler. At a
// short sequence length only the documents with short filler fit a row; a long-context phase sees the long ones.
// The same builder makes the evaluation task (kiln/eval/make_tasks.hpp: retrieval_task), from held-out filler.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"

namespace kiln::data {

inline constexpr const char* kRetrievalKeys[] = {
    "apple",  "river",  "tiger",   "candle", "garden", "silver", "pencil", "rocket", "window", "forest", "button",
    "dragon", "violin", "harbor",  "copper", "lemon",  "island", "mirror", "falcon", "marble", "orange", "castle",
    "pepper", "planet", "saddle",  "tunnel", "walnut", "anchor", "basket", "cactus", "donkey", "engine", "feather",
    "ginger", "hammer", "jacket",  "kettle", "ladder", "magnet", "needle", "oyster", "parrot", "rabbit", "salmon",
    "thunder", "umbrella", "velvet", "wizard", "yogurt", "zebra", "bridge", "cherry", "desert", "meadow", "pirate",
    "shadow", "spider", "summer", "turtle", "valley", "winter", "coffee", "dollar", "monkey"};
// The generator's version: part of the cached file's key, so that a changed generator makes a new file.
inline constexpr int kRetrievalFormat = 1;
inline constexpr int kRetrievalKeyCount = int(sizeof(kRetrievalKeys) / sizeof(kRetrievalKeys[0]));

// Whitespace runs (space, newline, tab, CR) folded to one space, none at the ends.
inline std::string fold_spaces(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

struct RetrievalOptions {
  int min_chars = 0, max_chars = 2400;  // the filler's length in characters, drawn uniformly
  uint64_t seed = 7;
};

struct RetrievalItem {
  std::string context;  // up to and including "The password is"
  std::string key;      // the answer: " <key>." follows the context
};

// One document's parts from the generator `rng` over the filler documents `fill` (folded already, none empty).
inline RetrievalItem retrieval_item(const std::vector<std::string>& fill, const RetrievalOptions& o, Rng& rng) {
  KILN_CHECK(!fill.empty(), "retrieval documents: no filler text");
  KILN_CHECK(o.min_chars >= 0 && o.max_chars >= o.min_chars, "retrieval documents: 0 <= min_chars <= max_chars, got ",
             o.min_chars, " and ", o.max_chars);
  RetrievalItem it;
  it.key = kRetrievalKeys[rng.below(uint64_t(kRetrievalKeyCount))];
  // min + (max - min) u^3, u uniform: short fillers more often (a quarter of the range on average, 63% below the
  // range's quarter), so that a short-context phase sees the skill in rows it fits whole and a long phase extends it
  const double u = double(rng.below(1u << 20)) / double(1u << 20);
  const size_t want = size_t(o.min_chars) + size_t(double(o.max_chars - o.min_chars) * u * u * u + 0.5);
  std::string filler;
  while (filler.size() < want) filler += (filler.empty() ? "" : " ") + fill[rng.below(fill.size())];
  if (filler.size() > size_t(o.max_chars)) {  // the last document cut at a word boundary: at most max_chars
    const size_t space = filler.rfind(' ', size_t(o.max_chars));
    filler.resize(space == std::string::npos || space < size_t(o.min_chars) ? size_t(o.max_chars) : space);
  }
  it.context = "The password is " + it.key + ". " + (filler.empty() ? "" : filler + " ") +
               "What is the password? The password is";
  return it;
}

// n training documents, deterministic for (filler, options).
inline std::vector<std::string> retrieval_documents(const std::vector<std::string>& filler_docs, int n,
                                                    const RetrievalOptions& o) {
  std::vector<std::string> fill;
  for (const auto& d : filler_docs)
    if (std::string f = fold_spaces(d); !f.empty()) fill.push_back(std::move(f));
  Rng rng(o.seed);
  std::vector<std::string> out;
  out.reserve(size_t(n));
  for (int i = 0; i < n; ++i) {
    const RetrievalItem it = retrieval_item(fill, o, rng);
    out.push_back(it.context + " " + it.key + ".");
  }
  return out;
}

}  // namespace kiln::data
