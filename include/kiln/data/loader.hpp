// kiln/data/loader.hpp: training rows from tokenized shards: a weighted mixture of named sources, staged by token
// count, deterministic per (seed, rank, world), with a small fixed-size state that restores exactly.
//
// Rows (data/packing.hpp, the packer the byte-level Packer uses too): documents, each followed by the end-of-document
// id `eod` (Kiln's shards store documents without it and the loader appends it; a document that ends with it already,
// as datatrove's and Megatron's do, gets no second one), are concatenated into one stream per rank and
// cut into rows of T + 1 tokens: inputs row[0..T), targets row[1..T]. The previous row's last target is the next
// row's first input. doc_start[i] is the index in the row where token i's document starts: after the previous eod
// token or at the row start; positions[i] = i - doc_start[i].
//
// Which document comes next (all counter-based, so the state is a few counters):
//   - Mixture: rank r's k-th document draw picks a source with u = uniform01(seed, stream(r), k) against the
//     cumulative weights of the current stage (per-document sampling).
//   - Stages: the stage of a draw is the last StageMix whose start_tokens <= global tokens consumed before the draw,
//     where global tokens = this rank's input tokens x world (every rank takes the same B x T per step). A change is
//     reported through on_event and stage() returns the stage for the current token count.
//   - Order inside a source: epoch e of source s visits its documents in the permutation P_{s,e} (a 4-round Feistel
//     network over the next power of 4 with cycle walking: a bijection of [0, n) computed per index, no table), keyed
//     by (seed, hash of the source name, e) - the same on every rank.
//   - Rank split: rank r takes positions r, r + world, r + 2 world, ... of P_{s,e}; so ranks draw disjoint documents
//     within an epoch, and each rank's epoch of source s covers ceil or floor(n / world) documents. When a rank's next
//     position passes n, that rank's source s starts epoch e + 1 and on_event says its documents now repeat.
// Checks and masks:
//   - Given the model's vocabulary (the constructor's model_vocab), a shard whose metadata's vocab_size is larger is
//     refused when the loader is built, and a token >= it met while packing is an error naming the file, the document
//     and the position (a datatrove shard has no vocab_size: only the second check can catch it).
//   - A part with a loss mask (datatrove's .ds.loss) makes the target of each masked token -1 (no loss there); the
//     appended eod is always a target.
// The state (LoaderState) is a fixed-size trivially copyable value; nothing grows with the number of steps.
#pragma once

#include <algorithm>
#include <iomanip>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/rng.hpp"
#include "kiln/data/megatron.hpp"
#include "kiln/data/packing.hpp"
#include "kiln/data/shards.hpp"

namespace kiln::data {

// A named source: the documents of its parts, one after another.
struct Source {
  std::string name;
  std::vector<std::shared_ptr<const DocumentSource>> parts;

  // Every shard under the given paths (prefixes, .ds files, directories of .ds) and Megatron prefixes (x for x.idx).
  // token_bytes: the token size of shards whose metadata does not give it (datatrove's without it, or none), as
  // ShardReader's: 0 = every shard must say (the default), 2 = u16, 4 = u32.
  static Source open(std::string name, const std::vector<std::string>& paths, int token_bytes = 0) {
    Source s{std::move(name), {}};
    for (const auto& p : paths) {
      std::error_code ec;
      if (!std::filesystem::is_directory(p, ec) && std::filesystem::is_regular_file(p + ".idx", ec)) {
        s.parts.push_back(std::make_shared<MegatronReader>(p));
        continue;
      }
      for (auto& shard : open_shards(p, token_bytes)) s.parts.push_back(std::move(shard));
    }
    return s;
  }
};

// From start_tokens (global) on, documents are drawn with these weights (normalised; unnamed sources get 0).
struct StageMix {
  uint64_t start_tokens = 0;
  std::vector<std::pair<std::string, double>> weights;
};

// Everything needed to continue exactly: plain fixed-size fields (no pointers, no growing containers).
struct LoaderState {
  static constexpr uint32_t kMagic = 0x52444c4b;  // "KLDR"
  static constexpr uint32_t kVersion = 1;
  static constexpr int kMaxSources = 64;  // the fortunes corpus has 43 categories

  struct Cursor {
    uint64_t epoch = 0;   // epoch of this source on this rank
    uint64_t cursor = 0;  // documents of the epoch this rank has drawn (next position: cursor * world + rank)
    bool operator==(const Cursor&) const = default;
  };

  uint32_t magic = kMagic, version = kVersion;
  uint64_t seed = 0;
  int32_t rank = 0, world = 1;
  uint32_t n_sources = 0;
  int32_t stage = -1;             // stage of the last draw (-1: none yet)
  uint64_t sources_hash = 0;      // names of the sources, in order: a restore into another mixture is refused
  uint64_t tokens = 0;            // input tokens delivered by this rank (B x T per next())
  uint64_t draws = 0;             // documents drawn by this rank: the mixture's RNG counter
  int32_t cur_source = -1;        // the document being read (-1: draw one next)
  int32_t carry = 0;              // the previous row's last target, the next row's first input
  uint64_t cur_doc = 0;           // its index within the source (all parts)
  uint64_t cur_offset = 0;        // next token within it; == its length: the eod token is next
  uint32_t has_carry = 0;
  uint32_t reserved = 0;
  Cursor src[kMaxSources] = {};

  bool operator==(const LoaderState&) const = default;

  std::vector<std::byte> to_bytes() const {
    std::vector<std::byte> b(sizeof(LoaderState));
    std::memcpy(b.data(), this, sizeof(LoaderState));
    return b;
  }
  static LoaderState from_bytes(std::span<const std::byte> b) {
    KILN_CHECK(b.size() == sizeof(LoaderState), "loader state: ", b.size(), " bytes, expected ", sizeof(LoaderState));
    LoaderState s;
    std::memcpy(&s, b.data(), sizeof(LoaderState));
    KILN_CHECK(s.magic == kMagic, "loader state: bad magic (not a Kiln loader state)");
    KILN_CHECK(s.version == kVersion, "loader state: version ", s.version, ", this build reads ", kVersion);
    return s;
  }
};
static_assert(std::is_trivially_copyable_v<LoaderState>, "LoaderState is saved by memcpy: keep it trivially copyable");
static_assert(sizeof(LoaderState) == 88 + 16 * LoaderState::kMaxSources, "LoaderState has padding: reorder fields");

// A bijection of [0, n) computed per index: a balanced Feistel network over 2^(2h) >= n with cycle walking
// (expected fewer than 4 rounds of walking, since 2^(2h) < 4n).
class FeistelPermutation {
 public:
  FeistelPermutation(uint64_t n, uint64_t key) : n_(n) {
    int bits = 1;
    while (bits < 64 && (uint64_t(1) << bits) < n) ++bits;
    half_ = (bits + 1) / 2;
    mask_ = (uint64_t(1) << half_) - 1;
    for (int r = 0; r < kRounds; ++r) k_[r] = mix64(key ^ mix64(uint64_t(r) + 0x243f6a8885a308d3ull));
  }
  uint64_t operator()(uint64_t i) const {
    do i = encrypt(i);
    while (i >= n_);
    return i;
  }

 private:
  static constexpr int kRounds = 4;
  uint64_t encrypt(uint64_t i) const {
    uint64_t l = i >> half_, r = i & mask_;
    for (int k = 0; k < kRounds; ++k) {
      uint64_t f = mix64(r ^ k_[k]) & mask_;
      uint64_t t = l ^ f;
      l = r;
      r = t;
    }
    return (l << half_) | r;
  }
  uint64_t n_, mask_;
  int half_;
  uint64_t k_[kRounds];
};

inline uint64_t name_hash(std::string_view s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return mix64(h);
}

class Loader {
 public:
  // Stage switches, and a source starting to repeat, are reported here; unset: printed to stderr.
  std::function<void(const std::string&)> on_event;

  // model_vocab: the rows of the model's embedding; > 0: a shard whose metadata's vocab_size exceeds it is refused
  // here, and a token >= it met while packing is an error naming the file, document and position (0: not checked).
  Loader(std::vector<Source> sources, std::vector<StageMix> stages, int32_t eod, uint64_t seed, int rank, int world,
         int64_t model_vocab = 0)
      : sources_(std::move(sources)), stages_(std::move(stages)), eod_(eod), model_vocab_(model_vocab) {
    KILN_CHECK(world >= 1 && rank >= 0 && rank < world, "loader: rank ", rank, " is not in [0, world ", world, ")");
    KILN_CHECK(!sources_.empty(), "loader: no sources");
    KILN_CHECK(sources_.size() <= size_t(LoaderState::kMaxSources), "loader: ", sources_.size(),
               " sources, at most ", LoaderState::kMaxSources, " (LoaderState::kMaxSources)");
    KILN_CHECK(eod >= 0, "loader: end-of-document id ", eod, " must be >= 0");
    KILN_CHECK(model_vocab >= 0, "loader: model vocabulary ", model_vocab, " must be >= 0 (0: not checked)");
    KILN_CHECK(model_vocab == 0 || eod < model_vocab, "loader: end-of-document id ", eod,
               " is outside the model's vocabulary of ", model_vocab, " ids");
    KILN_CHECK(!stages_.empty(), "loader: no stages (give at least one StageMix starting at token 0)");
    KILN_CHECK(stages_[0].start_tokens == 0, "loader: the first stage starts at ", stages_[0].start_tokens,
               " tokens, expected 0");
    st_.seed = seed;
    st_.rank = rank;
    st_.world = world;
    st_.n_sources = uint32_t(sources_.size());
    uint64_t h = 0;
    for (size_t s = 0; s < sources_.size(); ++s) {
      auto& src = sources_[s];
      for (size_t t = 0; t < s; ++t)
        KILN_CHECK(sources_[t].name != src.name, "loader: source name '", src.name, "' given twice");
      h = mix64(h ^ name_hash(src.name));
      std::vector<uint64_t> ends;
      uint64_t total = 0;
      for (const auto& p : src.parts) {
        KILN_CHECK(p, "loader: source '", src.name, "' has a null part");
        total += p->size();
        ends.push_back(total);
        KILN_CHECK(p->vocab_size() <= 0 || eod < p->vocab_size(), "loader: end-of-document id ", eod,
                   " is outside the vocabulary of ", p->name(), " (", p->vocab_size(), " ids)");
        KILN_CHECK(model_vocab == 0 || p->vocab_size() <= model_vocab, "loader: source '", src.name, "': ",
                   p->data_file(), " holds tokens of a ", p->vocab_size(), "-id vocabulary (its metadata's vocab_size)",
                   ", more than the model's vocabulary of ", model_vocab, " ids");
        masked_ = masked_ || p->has_loss_mask();
      }
      part_ends_.push_back(std::move(ends));
      docs_.push_back(total);
      keys_.push_back(mix64(seed ^ name_hash(src.name)));
    }
    st_.sources_hash = h;
    // Stages: cumulative weights per source.
    for (size_t g = 0; g < stages_.size(); ++g) {
      const auto& sm = stages_[g];
      KILN_CHECK(g == 0 || sm.start_tokens > stages_[g - 1].start_tokens, "loader: stage ", g, " starts at ",
                 sm.start_tokens, " tokens, not after stage ", g - 1, " (", stages_[g - 1].start_tokens, ")");
      std::vector<double> w(sources_.size(), 0.0);
      for (const auto& [name, weight] : sm.weights) {
        size_t s = index_of(name);
        KILN_CHECK(s < sources_.size(), "loader: stage ", g, " names source '", name, "', which is not one of: ",
                   names());
        KILN_CHECK(weight >= 0 && std::isfinite(weight), "loader: stage ", g, " weight of '", name, "' is ", weight,
                   ", expected a finite value >= 0");
        w[s] += weight;
      }
      double sum = 0;
      for (size_t s = 0; s < w.size(); ++s) {
        if (w[s] > 0) {
          KILN_CHECK(docs_[s] >= uint64_t(world), "loader: source '", sources_[s].name, "' has ", docs_[s],
                     " documents, fewer than the ", world, " ranks that split it");
        }
        sum += w[s];
      }
      KILN_CHECK(sum > 0, "loader: stage ", g, " gives no source a positive weight");
      double c = 0;
      for (auto& x : w) x = (c += x / sum);
      w.back() = 1.0;
      cum_.push_back(std::move(w));
    }
  }

  // Fills B rows: tokens, targets, positions, doc_start, each (B, T) row-major.
  void next(int B, int T, int32_t* tokens, int32_t* targets, int32_t* positions, int32_t* doc_start) {
    KILN_CHECK(B >= 1 && T >= 1, "loader: batch ", B, " x ", T, " must be at least 1 x 1");
    row_.resize(size_t(T) + 1);
    mask_.assign(size_t(T) + 1, 1);
    for (int b = 0; b < B; ++b) {
      in_row_ = 0;
      const size_t o = size_t(b) * T;
      cut_row(T, eod_, st_.carry, st_.has_carry, row_.data(),  // the carried input's mask does not matter
              [&](size_t from, size_t n) { fill(row_.data() + from, mask_.data() + from, n); },
              tokens + o, targets + o, positions + o, doc_start + o);
      if (masked_)  // a loss mask: no loss where the target token's mask is 0
        for (int i = 0; i < T; ++i)
          if (!mask_[size_t(i) + 1]) targets[o + size_t(i)] = -1;
      st_.tokens += uint64_t(T);
    }
    in_row_ = 0;
  }

  const LoaderState& state() const { return st_; }

  void restore(const LoaderState& s) {
    KILN_CHECK(s.magic == LoaderState::kMagic && s.version == LoaderState::kVersion,
               "loader restore: not a version-", LoaderState::kVersion, " Kiln loader state");
    KILN_CHECK(s.seed == st_.seed && s.rank == st_.rank && s.world == st_.world, "loader restore: the state is for seed ",
               s.seed, " rank ", s.rank, " of ", s.world, ", this loader has seed ", st_.seed, " rank ", st_.rank, " of ",
               st_.world);
    KILN_CHECK(s.n_sources == st_.n_sources && s.sources_hash == st_.sources_hash,
               "loader restore: the state was saved with other sources (", s.n_sources, " sources; this loader has ",
               names(), ")");
    KILN_CHECK(s.stage >= -1 && s.stage < int32_t(stages_.size()), "loader restore: stage ", s.stage, " out of range");
    KILN_CHECK(s.cur_source >= -1 && s.cur_source < int32_t(sources_.size()), "loader restore: source ", s.cur_source,
               " out of range");
    if (s.cur_source >= 0) {
      KILN_CHECK(s.cur_doc < docs_[size_t(s.cur_source)], "loader restore: document ", s.cur_doc, " out of range");
      KILN_CHECK(s.cur_offset <= doc_tokens(size_t(s.cur_source), s.cur_doc), "loader restore: offset ", s.cur_offset,
                 " past the end of its document");
    }
    for (size_t i = 0; i < sources_.size(); ++i)
      KILN_CHECK(s.src[i].cursor * uint64_t(st_.world) <= docs_[i] + uint64_t(st_.world), "loader restore: cursor ",
                 s.src[i].cursor, " of source '", sources_[i].name, "' is past its ", docs_[i], " documents");
    st_ = s;
  }

  // The stage for the current token count (what the next draw uses).
  int stage() const { return stage_for(st_.tokens * uint64_t(st_.world)); }
  uint64_t tokens_consumed() const { return st_.tokens; }  // this rank's input tokens
  uint64_t global_tokens() const { return st_.tokens * uint64_t(st_.world); }
  uint64_t epoch(size_t source) const { return st_.src[source].epoch; }
  uint64_t documents(size_t source) const { return docs_.at(source); }
  size_t sources() const { return sources_.size(); }
  const std::string& source_name(size_t s) const { return sources_.at(s).name; }
  int32_t eod() const { return eod_; }
  int64_t model_vocab() const { return model_vocab_; }  // 0: not checked

  std::string names() const {
    std::string s;
    for (const auto& src : sources_) s += (s.empty() ? "" : ", ") + src.name;
    return s;
  }

 private:
  static constexpr uint64_t kMixStream = 0x6d69787475726500ull;  // "mixture"

  size_t index_of(const std::string& name) const {
    for (size_t s = 0; s < sources_.size(); ++s)
      if (sources_[s].name == name) return s;
    return sources_.size();
  }

  int stage_for(uint64_t global) const {
    int g = 0;
    while (g + 1 < int(stages_.size()) && stages_[size_t(g) + 1].start_tokens <= global) ++g;
    return g;
  }

  // (part, index in part) of a source's document.
  std::pair<size_t, uint64_t> locate(size_t s, uint64_t doc) const {
    const auto& ends = part_ends_[s];
    size_t p = size_t(std::upper_bound(ends.begin(), ends.end(), doc) - ends.begin());
    return {p, doc - (p ? ends[p - 1] : 0)};
  }
  uint64_t doc_tokens(size_t s, uint64_t doc) const {
    auto [p, i] = locate(s, doc);
    return sources_[s].parts[p]->tokens_in(i);
  }

  void event(const std::string& msg) {
    if (on_event) on_event(msg);
    else std::cerr << "kiln data: " << msg << "\n";
  }

  void draw() {
    const uint64_t global = (st_.tokens + in_row_) * uint64_t(st_.world);
    const int g = stage_for(global);
    if (g != st_.stage) {
      std::ostringstream m;
      m << "stage " << g + 1 << " of " << stages_.size() << " (planned from token " << stages_[size_t(g)].start_tokens
        << ") begins at global token " << global << " (rank " << st_.rank << "); mixture:";
      const auto& w = cum_[size_t(g)];
      std::vector<std::pair<double, size_t>> share;  // largest first; the rest summed up
      for (size_t s = 0; s < w.size(); ++s) share.emplace_back(w[s] - (s ? w[s - 1] : 0.0), s);
      std::stable_sort(share.begin(), share.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      double rest = 0;
      for (size_t k = 0; k < share.size(); ++k) {
        if (k < 6) m << " " << sources_[share[k].second].name << " " << std::fixed << std::setprecision(1)
                     << 100 * share[k].first << "%";
        else rest += share[k].first;
      }
      if (share.size() > 6) m << ", " << share.size() - 6 << " more " << std::setprecision(1) << 100 * rest << "%";
      st_.stage = g;
      event(m.str());
    }
    const double u = uniform01(st_.seed, kMixStream ^ mix64(uint64_t(st_.rank)), st_.draws++);
    const auto& w = cum_[size_t(g)];
    size_t s = size_t(std::upper_bound(w.begin(), w.end(), u) - w.begin());
    s = std::min(s, w.size() - 1);
    auto& c = st_.src[s];
    const uint64_t n = docs_[s], world = uint64_t(st_.world), rank = uint64_t(st_.rank);
    uint64_t pos = c.cursor * world + rank;
    if (pos >= n) {
      ++c.epoch;
      c.cursor = 0;
      pos = rank;
      std::ostringstream m;
      m << "source '" << sources_[s].name << "' starts epoch " << c.epoch << " at " << global
        << " tokens (rank " << st_.rank << "): its " << n << " documents now repeat";
      event(m.str());
    }
    ++c.cursor;
    st_.cur_source = int32_t(s);
    st_.cur_doc = FeistelPermutation(n, mix64(keys_[s] ^ mix64(c.epoch)))(pos);
    st_.cur_offset = 0;
  }

  // The next n tokens of this rank's stream, and their loss mask (1: a target to train on) when a part has one.
  void fill(int32_t* out, uint8_t* mask, size_t n) {
    while (n > 0) {
      if (st_.cur_source < 0) draw();
      const size_t s = size_t(st_.cur_source);
      auto [p, i] = locate(s, st_.cur_doc);
      const DocumentSource& part = *sources_[s].parts[p];
      const uint64_t len = part.tokens_in(i);
      if (st_.cur_offset < len) {
        uint64_t k = std::min<uint64_t>(n, len - st_.cur_offset);
        part.read(i, st_.cur_offset, k, out);
        if (model_vocab_ > 0)
          for (uint64_t j = 0; j < k; ++j)
            KILN_CHECK(out[j] < model_vocab_, part.data_file(), ": document ", i, ", position ", st_.cur_offset + j,
                       ": token ", out[j], " is outside the model's vocabulary of ", model_vocab_, " ids (source '",
                       sources_[s].name, "')");
        if (masked_) {
          if (part.has_loss_mask()) part.read_loss_mask(i, st_.cur_offset, k, mask);
          else std::fill_n(mask, k, uint8_t(1));
          mask += k;
        }
        out += k;
        n -= k;
        in_row_ += k;
        st_.cur_offset += k;
      } else {
        // The document's end: the eod id, unless it ends with it already (datatrove's and Megatron's tokenizers
        // append one; a second would teach the model an empty document).
        int32_t last = -1;
        if (len > 0) part.read(i, len - 1, 1, &last);
        if (last != eod_) {
          *out++ = eod_;
          if (masked_) *mask++ = 1;
          --n;
          ++in_row_;
        }
        st_.cur_source = -1;
      }
    }
  }

  std::vector<Source> sources_;
  std::vector<StageMix> stages_;
  int32_t eod_;
  std::vector<std::vector<uint64_t>> part_ends_;  // per source: cumulative documents of its parts
  std::vector<uint64_t> docs_, keys_;             // per source: documents, permutation key
  std::vector<std::vector<double>> cum_;          // per stage: cumulative normalised weights
  int64_t model_vocab_ = 0;                       // 0: token ids not checked against the model
  bool masked_ = false;                           // some part has a loss mask
  std::vector<int32_t> row_;                      // (T + 1) scratch row
  std::vector<uint8_t> mask_;                     // (T + 1) its loss mask (1: train on it as a target)
  uint64_t in_row_ = 0;                           // tokens placed in the current row (for a draw's stage)
  LoaderState st_;
};

}  // namespace kiln::data
