// kiln/io/optimizer_shards.hpp: the AdamW moments of a checkpoint, whole or in the shards of ZeRO-1 ranks, read
// back into any other sharding (a checkpoint of ZeRO-1 on 2 ranks resumes in one process, or on 4).
//   whole    <blob>.safetensors: one F32 tensor per parameter, with its HF name and shape (param_views)
//   sharded  <blob>-shard-<r>-of-<n>.safetensors, one per rank r of n (%05d each): rank r's range [begin, end) of
//            the flat buffer, as one 1-D F32 tensor per parameter it meets, named by the parameter and holding
//            the parameter's elements in that range (a parameter cut between two ranks is in both files, each
//            with its part); __metadata__ kiln_shard = {"rank", "ranks", "begin", "end", "floats"}
// Reading takes the range a rank holds now and fills it from whichever files cover it, checking that the shards
// tile the buffer, that each piece has the size the parameter table gives it, and that every float of the range
// (padding aside) was found: a missing or foreign file is an error naming it.
#pragma once
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <span>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/io/checkpoint.hpp"
#include "kiln/io/safetensors_sharded.hpp"
#include "kiln/parallel/layout.hpp"

namespace kiln::io {

inline std::string shard_blob_name(const std::string& blob, int r, int n) {
  char b[48];
  std::snprintf(b, sizeof b, "-shard-%05d-of-%05d", r, n);
  return blob + b;
}

// Rank r's shard `s` of a flat buffer as a blob: `data` holds the shard's floats (s.size(), from s.begin).
inline CheckpointBlob shard_blob(std::span<const plan::ParamEntry> table, size_t floats, const std::string& blob,
                                 const float* data, parallel::Shard s, int r, int n) {
  CheckpointBlob b{shard_blob_name(blob, r, n), {}, {}};
  for (const plan::ParamEntry& e : table) {
    const size_t lo = std::max(s.begin, e.offset), hi = std::min(s.end, e.offset + e.count());
    if (lo >= hi) continue;
    TensorView t;
    t.name = std::string(e.name.view());
    t.dtype = Dtype::F32;
    t.shape = {int64_t(hi - lo)};
    t.data = data + (lo - s.begin);
    b.tensors.push_back(std::move(t));
  }
  b.metadata["kiln_shard"] = nlohmann::json{{"rank", r}, {"ranks", n}, {"begin", s.begin}, {"end", s.end},
                                            {"floats", floats}}.dump();
  return b;
}

// Fills dst (s.size() floats: the range s of the flat buffer) with blob `blob` of checkpoint ck, whole or sharded.
inline void load_sharded(std::span<const plan::ParamEntry> table, size_t floats, const Checkpoint& ck,
                         const std::string& blob, float* dst, parallel::Shard s) {
  const std::string dir = ck.dir().string();
  std::fill(dst, dst + s.size(), 0.0f);
  size_t want = 0, got = 0;  // the range's floats that belong to a parameter; those found
  for (const plan::ParamEntry& e : table)
    want += std::max(s.begin, e.offset) < std::min(s.end, e.offset + e.count())
                ? std::min(s.end, e.offset + e.count()) - std::max(s.begin, e.offset)
                : 0;
  if (ck.has_blob(blob)) {  // whole: each parameter's part in the range
    const Safetensors& f = ck.blob(blob);
    const std::string origin = dir + "/" + blob + ".safetensors";
    for (const plan::ParamEntry& e : table) {
      const size_t lo = std::max(s.begin, e.offset), hi = std::min(s.end, e.offset + e.count());
      if (lo >= hi) continue;
      const std::string name(e.name.view());
      KILN_CHECK(f.contains(name), origin, ": missing tensor ", name);
      const Tensor& t = f.at(name);
      KILN_CHECK(t.dtype == Dtype::F32 && t.nbytes == e.count() * 4, origin, ": tensor ", name, " is ",
                 dtype_name(t.dtype), " of ", t.nbytes, " bytes, expected F32 of ", e.count() * 4);
      std::memcpy(dst + (lo - s.begin), reinterpret_cast<const char*>(t.data) + (lo - e.offset) * 4, (hi - lo) * 4);
    }
    return;
  }
  // sharded: the files' ranges must tile [0, floats)
  struct Part {
    size_t rank;
    std::string origin;
    parallel::Shard range;
  };
  std::vector<Part> shards;
  int ranks = -1;
  for (const std::string& name : ck.blob_names()) {
    if (name.rfind(blob + "-shard-", 0) != 0) continue;
    const std::string origin = dir + "/" + name + ".safetensors";
    const auto& meta = ck.blob(name).metadata();
    const auto it = meta.find("kiln_shard");
    KILN_CHECK(it != meta.end(), origin, ": __metadata__ has no kiln_shard (the range of the flat buffer it holds)");
    const nlohmann::json j = core::parse_json(it->second, origin + " (__metadata__.kiln_shard)");
    const auto field = [&](const char* k) {
      KILN_CHECK(j.is_object() && j.contains(k) && j[k].is_number_unsigned(), origin, ": __metadata__.kiln_shard.", k,
                 " missing or not a non-negative integer");
      return j[k].get<size_t>();
    };
    const size_t r = field("rank"), n = field("ranks"), b = field("begin"), e = field("end"), fl = field("floats");
    KILN_CHECK(name == shard_blob_name(blob, int(r), int(n)), origin, ": __metadata__.kiln_shard says rank ", r, " of ",
               n, ", which is not the file's name");
    KILN_CHECK(fl == floats, origin, ": a shard of a flat buffer of ", fl, " floats; this model's has ", floats,
               " (a checkpoint of another model)");
    KILN_CHECK(ranks < 0 || size_t(ranks) == n, dir, ": shards of ", blob, " from ", ranks, " and from ", n, " ranks");
    KILN_CHECK(b <= e && e <= floats, origin, ": __metadata__.kiln_shard range [", b, ", ", e, ") is not inside [0, ",
               floats, ")");
    ranks = int(n);
    shards.push_back({r, origin, {b, e}});
  }
  KILN_CHECK(ranks > 0, dir, ": no blob ", blob, " (neither ", blob, ".safetensors nor ", blob, "-shard-*.safetensors)");
  KILN_CHECK(shards.size() == size_t(ranks), dir, ": ", shards.size(), " shards of ", blob, " where ", ranks,
             " ranks wrote one each (a shard file is missing)");
  std::sort(shards.begin(), shards.end(), [](const Part& a, const Part& b) { return a.rank < b.rank; });  // rank order
  size_t at = 0;
  for (const auto& [rank, origin, sh] : shards) {
    KILN_CHECK(sh.begin == at, origin, ": holds [", sh.begin, ", ", sh.end, ") where [", at, ", ...) was expected "
               "(the shards do not tile the buffer)");
    at = sh.end;
  }
  KILN_CHECK(at == floats, dir, ": the shards of ", blob, " end at float ", at, " of ", floats);
  for (const auto& [rank, origin, sh] : shards) {
    if (std::max(sh.begin, s.begin) >= std::min(sh.end, s.end)) continue;
    const Safetensors& f = ck.blob(std::filesystem::path(origin).stem().string());
    for (const plan::ParamEntry& e : table) {
      const size_t plo = std::max(sh.begin, e.offset), phi = std::min(sh.end, e.offset + e.count());  // the piece
      if (plo >= phi) continue;
      const std::string name(e.name.view());
      KILN_CHECK(f.contains(name), origin, ": missing the piece of ", name, " (floats ", plo - e.offset, " to ",
                 phi - e.offset, " of it)");
      const Tensor& t = f.at(name);
      KILN_CHECK(t.dtype == Dtype::F32 && t.nbytes == (phi - plo) * 4, origin, ": the piece of ", name, " is ",
                 dtype_name(t.dtype), " of ", t.nbytes, " bytes, expected F32 of ", (phi - plo) * 4);
      const size_t lo = std::max(plo, s.begin), hi = std::min(phi, s.end);
      if (lo >= hi) continue;
      std::memcpy(dst + (lo - s.begin), reinterpret_cast<const char*>(t.data) + (lo - plo) * 4, (hi - lo) * 4);
      got += hi - lo;
    }
  }
  KILN_CHECK(got == want, dir, ": the shards of ", blob, " gave ", got, " of the ", want, " floats of [", s.begin, ", ",
             s.end, ")");
}

}  // namespace kiln::io
