// kiln/eval/score.hpp: log-likelihood scoring of multiple-choice tasks (kiln/eval/tasks.hpp), as lighteval and
// lm-evaluation-harness score them.
//   cloze (CF)             each choice's text scored after the context: "Question: ...\nAnswer:" + " <choice>"
//   multiple choice (MCF)  the choices listed under their letters, the letter scored: "...\nA. x\nB. y\nAnswer:" + " A"
// For every (context, continuation) pair: the summed log-probability of the continuation's tokens given everything
// before them. Per task:
//   acc             the choice of the largest log-probability is the right one (ties: the first)
//   acc_norm_char   ... of log-probability / the continuation's length in characters (lm-eval's acc_norm,
//                   lighteval's LogProbCharNorm)
//   acc_norm_token  ... / its length in tokens (llm.c's normalisation)
//   random          the mean of 1 / choices: what guessing scores
// Many pairs are packed into the rows of one (B, T) micro-batch, each pair one document (intra-document masking keeps
// them apart, positions restart at 0), only its continuation's targets scored; the model's per-token
// log-probabilities (an executor's token_logp) are summed per pair. A pair longer than T loses context tokens from
// the left (counted in `truncated`); a continuation that alone does not fit is an error.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kiln/backend/batch.hpp"
#include "kiln/core/error.hpp"
#include "kiln/eval/tasks.hpp"

namespace kiln::eval {

enum class Formulation { cloze, multiple_choice };
inline const char* formulation_name(Formulation f) { return f == Formulation::cloze ? "CF" : "MCF"; }

struct Pair {
  std::string context, continuation;
};

// Example e's pairs, one per choice.
inline std::vector<Pair> pairs_of(const Example& e, Formulation f) {
  std::vector<Pair> out;
  if (f == Formulation::cloze) {
    for (int i = 0; i < e.count(); ++i) out.push_back({e.context(i), e.continuation(i)});
    return out;
  }
  KILN_CHECK(e.count() <= 26, "multiple-choice formulation: ", e.count(), " choices, more than the letters A-Z");
  std::string ctx = "Question: " + e.question + "\n";
  for (int i = 0; i < e.count(); ++i) ctx += std::string(1, char('A' + i)) + ". " + e.choices[size_t(i)] + "\n";
  ctx += "Answer:";
  for (int i = 0; i < e.count(); ++i) out.push_back({ctx, std::string(" ") + char('A' + i)});
  return out;
}

// UTF-8 code points (what Python's len gives lm-eval for a str).
inline int characters(const std::string& s) {
  int n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

struct Scored {
  double logprob = 0;
  int tokens = 0, characters = 0;
};

struct Metrics {
  double acc = 0, acc_norm_char = 0, acc_norm_token = 0, random = 0;
  long examples = 0;
};

// The task's metrics from every example's scored pairs (scores[k][i]: example k, choice i).
inline Metrics metrics(const std::vector<Example>& examples, const std::vector<std::vector<Scored>>& scores) {
  KILN_CHECK(examples.size() == scores.size(), "metrics: ", scores.size(), " scored examples for ", examples.size());
  Metrics m;
  const auto argmax = [](const std::vector<Scored>& s, auto value) {
    int best = 0;
    for (int i = 1; i < int(s.size()); ++i)
      if (value(s[size_t(i)]) > value(s[size_t(best)])) best = i;
    return best;
  };
  for (size_t k = 0; k < examples.size(); ++k) {
    const auto& s = scores[k];
    const int right = examples[k].label;
    m.acc += argmax(s, [](const Scored& x) { return x.logprob; }) == right;
    m.acc_norm_char += argmax(s, [](const Scored& x) { return x.logprob / std::max(1, x.characters); }) == right;
    m.acc_norm_token += argmax(s, [](const Scored& x) { return x.logprob / std::max(1, x.tokens); }) == right;
    m.random += 1.0 / double(s.size());
  }
  m.examples = long(examples.size());
  if (m.examples) {
    const double n = double(m.examples);
    m.acc /= n, m.acc_norm_char /= n, m.acc_norm_token /= n, m.random /= n;
  }
  return m;
}

// Runs one (B, T) batch and leaves its per-token log p(target) in `logp` (B * T values; where the target is < 0 the
// value is unused).
using RunBatch = std::function<void(const backend::Batch& batch, float* logp)>;

// The summed log-probabilities of every pair's continuation (ids: context, continuation), packed B x T at a time.
// truncated: pairs whose context lost tokens on the left to fit T.
inline std::vector<Scored> score_pairs(const std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>>& ids,
                                       int B, int T, const RunBatch& run, long* truncated = nullptr) {
  KILN_CHECK(B > 0 && T > 1, "score_pairs: a (", B, ", ", T, ") batch");
  const size_t R = size_t(B) * size_t(T);
  std::vector<int32_t> tokens(R), targets(R), positions(R), doc_start(R), owner(R);
  std::vector<float> logp(R);
  std::vector<Scored> out(ids.size());
  long cut = 0;
  size_t at = 0;  // the next free token of the batch (row-major)
  // [from, to) inside one row: a document of padding, nothing scored
  const auto pad = [&](size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) {
      tokens[k] = 0, targets[k] = -1, owner[k] = -1;
      doc_start[k] = int(from % size_t(T));
      positions[k] = int(k - from);
    }
  };
  const auto flush = [&] {
    if (at == 0) return;
    for (size_t k = at; k < R; k = (k / size_t(T) + 1) * size_t(T)) pad(k, (k / size_t(T) + 1) * size_t(T));
    run(backend::Batch{tokens.data(), targets.data(), positions.data(), doc_start.data()}, logp.data());
    for (size_t k = 0; k < R; ++k)
      if (owner[k] >= 0 && targets[k] >= 0) out[size_t(owner[k])].logprob += double(logp[k]);
    at = 0;
  };
  for (size_t p = 0; p < ids.size(); ++p) {
    const auto& [ctx, cont] = ids[p];
    KILN_CHECK(!ctx.empty() && !cont.empty(), "score_pairs: pair ", p, " has an empty ",
               ctx.empty() ? "context" : "continuation", " (every pair needs a token to condition on and one to score)");
    KILN_CHECK(int(cont.size()) < T, "score_pairs: pair ", p, "'s continuation has ", cont.size(), " tokens: with at "
               "least one of context it does not fit the ", T, " positions of the phase");
    // the document: context + continuation, less its last token (inputs); its targets are the next tokens
    size_t drop = 0, len = ctx.size() + cont.size() - 1;
    if (len > size_t(T)) drop = len - size_t(T), len = size_t(T), ++cut;
    const size_t row_left = size_t(T) - at % size_t(T);
    if (len > row_left) pad(at, at + row_left), at += row_left;  // to the next row
    if (at == R) flush();
    const int start = int(at % size_t(T));
    for (size_t j = 0; j < len; ++j) {
      const size_t s = drop + j;  // index in ctx ++ cont
      const auto tok = [&](size_t q) { return q < ctx.size() ? ctx[q] : cont[q - ctx.size()]; };
      const size_t k = at + j;
      tokens[k] = tok(s);
      targets[k] = s + 1 >= ctx.size() ? tok(s + 1) : -1;  // only the continuation's tokens are scored
      positions[k] = int(j);
      doc_start[k] = start;
      owner[k] = int(p);
    }
    out[p].tokens = int(cont.size());
    at += len;
    if (at == R) flush();
  }
  flush();
  if (truncated) *truncated = cut;
  return out;
}

// A whole task under one formulation: every example's pairs tokenized by `encode`, scored, and the metrics.
struct TaskResult {
  Metrics metrics;
  long pairs = 0, truncated = 0;
  std::vector<std::vector<Scored>> scores;
};
inline TaskResult evaluate(const std::vector<Example>& examples, Formulation f,
                           const std::function<std::vector<int32_t>(const std::string&)>& encode, int B, int T,
                           const RunBatch& run) {
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> ids;
  std::vector<int> chars;
  for (const auto& e : examples) {
    int i = 0;
    for (const Pair& p : pairs_of(e, f)) {
      ids.push_back({encode(p.context), encode(p.continuation)});
      chars.push_back(characters(p.continuation));
      KILN_CHECK(int(ids.back().second.size()) < T, e.where.empty() ? "an example" : e.where, ": choice ", i, " is ",
                 ids.back().second.size(), " tokens under the ", formulation_name(f), " formulation, more than the ",
                 T - 1, " a sequence of ", T, " positions can score after one token of context (evaluate with a "
                 "phase of longer sequences, or leave the example out)");
      ++i;
    }
  }
  TaskResult r;
  const std::vector<Scored> flat = score_pairs(ids, B, T, run, &r.truncated);
  size_t k = 0;
  for (const auto& e : examples) {
    std::vector<Scored> s(flat.begin() + long(k), flat.begin() + long(k) + e.count());
    for (int i = 0; i < e.count(); ++i) s[size_t(i)].characters = chars[k + size_t(i)];
    k += size_t(e.count());
    r.scores.push_back(std::move(s));
  }
  r.pairs = long(flat.size());
  r.metrics = metrics(examples, r.scores);
  return r;
}

// Bits per byte of a text: its tokens cut into sequences of T - 1 scored tokens, each conditioned on the token
// before it (the text's first token is the only one not scored), -sum log p / ln 2 / the scored tokens' bytes
// (bytes_of: the UTF-8 bytes a run of tokens decodes to). Comparable across tokenizers, unlike a loss per token.
struct BitsPerByte {
  double bits_per_byte = 0, nats = 0;
  long tokens = 0, bytes = 0;
};
inline BitsPerByte bits_per_byte(const std::vector<int32_t>& ids, int B, int T, const RunBatch& run,
                                 const std::function<long(const std::vector<int32_t>&)>& bytes_of) {
  KILN_CHECK(ids.size() >= 2, "bits per byte: the text is ", ids.size(), " token(s): at least 2 are needed");
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs;
  for (size_t at = 1; at < ids.size(); at += size_t(T - 1)) {
    const size_t end = std::min(ids.size(), at + size_t(T - 1));
    pairs.push_back({{ids[at - 1]}, std::vector<int32_t>(ids.begin() + long(at), ids.begin() + long(end))});
  }
  BitsPerByte b;
  for (const Scored& s : score_pairs(pairs, B, T, run)) b.nats -= s.logprob, b.tokens += s.tokens;
  b.bytes = bytes_of(std::vector<int32_t>(ids.begin() + 1, ids.end()));
  KILN_CHECK(b.bytes > 0, "bits per byte: the scored tokens decode to no bytes");
  b.bits_per_byte = b.nats / std::log(2.0) / double(b.bytes);
  return b;
}

// Loss by position: a long-context check. The text is cut into rows of T + 1 consecutive tokens, each row one
// sequence from position 0 (the last row's short tail is dropped), and the mean loss (nats a token) of the targets at
// positions [edges[k], edges[k + 1]) is reported, edges running from 0 to T. A model that works at the phase's length
// keeps the loss at late positions at or below the early ones' (more context); one that never saw such positions, or
// a RoPE theta it was not trained with, does worse there.
struct PositionLoss {
  std::vector<int> edges;      // 0 = edges[0] < ... < edges.back() = T
  std::vector<double> nats;    // mean loss of each bucket
  std::vector<long> tokens;    // targets of each bucket
  long rows = 0;
};
inline PositionLoss loss_by_position(const std::vector<int32_t>& ids, int B, int T, const RunBatch& run,
                                     std::vector<int> edges) {
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  edges.erase(std::remove_if(edges.begin(), edges.end(), [&](int e) { return e <= 0 || e >= T; }), edges.end());
  edges.insert(edges.begin(), 0);
  edges.push_back(T);
  const long rows = ids.size() > size_t(T) ? long((ids.size() - 1) / size_t(T)) : 0;
  KILN_CHECK(rows > 0, "loss by position: the text is ", ids.size(), " tokens, fewer than the ", T + 1,
             " one row of the phase needs");
  PositionLoss p;
  p.edges = edges;
  p.nats.assign(edges.size() - 1, 0.0);
  p.tokens.assign(edges.size() - 1, 0);
  p.rows = rows;
  std::vector<int32_t> tokens(size_t(B) * T), targets(tokens.size()), positions(tokens.size()), doc_start(tokens.size(), 0);
  std::vector<float> logp(tokens.size());
  for (long r0 = 0; r0 < rows; r0 += B) {
    for (int b = 0; b < B; ++b) {
      const long r = r0 + b;
      for (int i = 0; i < T; ++i) {
        const size_t k = size_t(b) * T + size_t(i);
        positions[k] = i;
        tokens[k] = r < rows ? ids[size_t(r) * T + size_t(i)] : 0;
        targets[k] = r < rows ? ids[size_t(r) * T + size_t(i) + 1] : -1;
      }
    }
    run(backend::Batch{tokens.data(), targets.data(), positions.data(), doc_start.data()}, logp.data());
    for (int b = 0; b < B && r0 + b < rows; ++b)
      for (size_t e = 0, i = 0; i < size_t(T); ++i) {
        while (int(i) >= edges[e + 1]) ++e;
        p.nats[e] -= logp[size_t(b) * T + i];
        p.tokens[e] += 1;
      }
  }
  for (size_t e = 0; e < p.nats.size(); ++e) p.nats[e] /= double(std::max<long>(1, p.tokens[e]));
  return p;
}

}  // namespace kiln::eval
