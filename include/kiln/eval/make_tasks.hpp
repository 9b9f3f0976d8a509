// kiln/eval/make_tasks.hpp: evaluation tasks made from text on the machine, in HellaSwag's layout (no public set can
// be downloaded here). A completion task: each example is a document's beginning (ctx) with its true ending and
// `choices - 1` endings of other documents of the closest lengths (so length alone does not give the answer away),
// the true one at a seeded place (label). Deterministic: the same documents, options and seed give the same file.
//   documents   whitespace runs folded to one space; those of min_chars to max_chars characters are used
//   split       at the word boundary nearest `split` of the document's length
//   examples    `count` documents in a seeded order (all of them when fewer)
//   distractors for the document at rank i by ending length, `choices - 1` drawn (seeded) from the 2 (choices - 1)
//               other ranks nearest to i whose endings differ from the true one and from each other (the same
//               ending under two documents, "-- Mark Twain" say, would make two right answers)
#pragma once
#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/synthetic.hpp"

namespace kiln::eval {

struct CompletionOptions {
  int count = 500, choices = 4, min_chars = 80, max_chars = 400;
  double split = 0.55;
  uint64_t seed = 1;
};

// Whitespace runs folded to one space, none at the ends (kiln/data/synthetic.hpp's, shared with the generators).
inline std::string fold_whitespace(const std::string& s) { return data::fold_spaces(s); }

// docs: (text, source) pairs. Returns the records (ctx, endings, label, source), one a line of a task file.
inline std::vector<nlohmann::json> completion_task(const std::vector<std::pair<std::string, std::string>>& docs,
                                                   const CompletionOptions& o) {
  KILN_CHECK(o.choices >= 2 && o.count > 0 && o.min_chars > 0 && o.max_chars >= o.min_chars && o.split > 0 &&
             o.split < 1, "completion_task: choices >= 2, count > 0, 0 < min_chars <= max_chars, 0 < split < 1");
  struct Cut {
    std::string ctx, ending, source;
  };
  std::vector<Cut> cuts;
  for (const auto& [text, source] : docs) {
    const std::string d = fold_whitespace(text);
    if (int(d.size()) < o.min_chars || int(d.size()) > o.max_chars) continue;
    const size_t want = size_t(double(d.size()) * o.split);
    size_t best = std::string::npos;  // the space nearest to `want`
    for (size_t i = 1; i + 1 < d.size(); ++i)
      if (d[i] == ' ' && (best == std::string::npos || (i > want ? i - want : want - i) < (best > want ? best - want : want - best)))
        best = i;
    if (best == std::string::npos) continue;
    cuts.push_back({d.substr(0, best), d.substr(best + 1), source});
  }
  const int n = int(cuts.size());
  KILN_CHECK(n >= o.choices, "completion_task: ", n, " usable documents (", o.min_chars, " to ", o.max_chars,
             " characters, with a space to split at); ", o.choices, " choices need at least that many");
  std::vector<int> by_len(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) by_len[size_t(i)] = i;
  std::stable_sort(by_len.begin(), by_len.end(),
                   [&](int a, int b) { return cuts[size_t(a)].ending.size() < cuts[size_t(b)].ending.size(); });
  std::vector<int> rank(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) rank[size_t(by_len[size_t(r)])] = r;
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  Rng rng(o.seed);
  for (int i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[rng.below(uint64_t(i) + 1)]);  // Fisher-Yates
  std::vector<nlohmann::json> out;
  for (int k = 0; k < n && int(out.size()) < o.count; ++k) {
    const int doc = order[size_t(k)], r = rank[size_t(doc)];
    const std::string& truth = cuts[size_t(doc)].ending;
    std::vector<int> near;  // the other ranks nearest to r whose endings differ from the truth and from each other
    const auto take = [&](int c) {
      const std::string& e = cuts[size_t(c)].ending;
      if (e == truth) return;
      for (int m : near)
        if (cuts[size_t(m)].ending == e) return;
      near.push_back(c);
    };
    for (int d = 1; int(near.size()) < 2 * (o.choices - 1) && (r - d >= 0 || r + d < n); ++d) {
      if (r - d >= 0) take(by_len[size_t(r - d)]);
      if (r + d < n) take(by_len[size_t(r + d)]);
    }
    if (int(near.size()) < o.choices - 1) continue;  // too few distinct endings: no fair example
    std::vector<int> picked;
    while (int(picked.size()) < o.choices - 1) {
      const int c = near[rng.below(near.size())];
      if (std::find(picked.begin(), picked.end(), c) == picked.end()) picked.push_back(c);
    }
    const int label = int(rng.below(uint64_t(o.choices)));
    std::vector<std::string> endings;
    for (int c : picked) endings.push_back(cuts[size_t(c)].ending);
    endings.insert(endings.begin() + label, cuts[size_t(doc)].ending);
    out.push_back({{"ctx", cuts[size_t(doc)].ctx}, {"endings", endings}, {"label", label},
                   {"source", cuts[size_t(doc)].source}});
  }
  return out;
}

// A retrieval task (kiln/data/synthetic.hpp) in HellaSwag's layout: each context states a password, runs filler
// documents of min_chars to max_chars, and asks for it; the endings are the password and choices - 1 other keys,
// the label's place drawn. Deterministic for (docs, options, seed).
inline std::vector<nlohmann::json> retrieval_task(const std::vector<std::string>& docs, int count, int choices,
                                                  const data::RetrievalOptions& o) {
  KILN_CHECK(choices >= 2 && choices <= data::kRetrievalKeyCount && count > 0,
             "retrieval_task: 2 <= choices <= ", data::kRetrievalKeyCount, " and count > 0");
  std::vector<std::string> fill;
  for (const auto& d : docs)
    if (std::string f = data::fold_spaces(d); !f.empty()) fill.push_back(std::move(f));
  Rng rng(o.seed);
  std::vector<nlohmann::json> out;
  for (int k = 0; k < count; ++k) {
    const data::RetrievalItem it = data::retrieval_item(fill, o, rng);
    std::vector<std::string> endings = {it.key + "."};
    while (int(endings.size()) < choices) {
      const std::string e = std::string(data::kRetrievalKeys[rng.below(uint64_t(data::kRetrievalKeyCount))]) + ".";
      if (std::find(endings.begin(), endings.end(), e) == endings.end()) endings.push_back(e);
    }
    const int label = int(rng.below(uint64_t(choices)));
    std::swap(endings[0], endings[size_t(label)]);
    out.push_back({{"ctx", it.context}, {"endings", endings}, {"label", label}, {"source", "retrieval"}});
  }
  return out;
}

}  // namespace kiln::eval
