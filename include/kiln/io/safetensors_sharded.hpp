// kiln/io/safetensors_sharded.hpp: a model as Hugging Face stores it: one `model.safetensors`, or shards
// `model-0000i-of-0000K.safetensors` plus `model.safetensors.index.json` (FACTS.md "Formats"):
//   {"metadata": {"total_size": B}, "weight_map": {"<tensor name>": "model-00001-of-00003.safetensors", ...}}
// with B = the sum of the tensors' data bytes (as transformers' save_pretrained computes it).
//
// Writing: tensors go to shards in the given order, a new shard starting when the next tensor would push the current
// one past `max_shard_bytes` of tensor data (a tensor larger than that gets a shard of its own); when everything fits
// in one shard the result is a single `model.safetensors` and no index. Each file is written atomically
// (write_safetensors), the index last; files of an earlier export in the same directory that the new one does not
// use (other `model-*-of-*.safetensors`, a stale index or single file) are removed only after that.
//
// Reading (`SafetensorsModel`): a directory (index if present, else model.safetensors), an index .json, or one
// .safetensors file. The index is validated: it must be an object with metadata.total_size and weight_map; shard
// names must be plain file names in the same directory; every shard must exist and open (the full safetensors
// validation); every tensor must be in the shard the map names; no shard may hold a tensor the map omits or puts
// elsewhere; total_size must equal the bytes found. Every violation is a kiln::Error naming the file and the field.
//
// The plan helpers connect this to a Kiln model: `param_views<M>(params)` lists the flat fp32 buffer's tensors with
// HF names and shapes (tied models omit lm_head.weight, as HF does); `load_params<M>(source, params)` fills the buffer
// from any source with contains/at/copy_to (Safetensors or SafetensorsModel), checking every shape.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"
#include "kiln/io/safetensors.hpp"
#include "kiln/plan/params.hpp"

namespace kiln::io {

inline constexpr const char* kSingleFileName = "model.safetensors";
inline constexpr const char* kIndexFileName = "model.safetensors.index.json";

// "model-00002-of-00005.safetensors" (1-based i).
inline std::string shard_file_name(int i, int k) {
  char b[64];
  std::snprintf(b, sizeof b, "model-%05d-of-%05d.safetensors", i, k);
  return b;
}

namespace detail {
inline uint64_t tensor_bytes(const TensorView& t) {
  uint64_t n = dtype_size(t.dtype);
  for (int64_t d : t.shape) n *= uint64_t(d < 0 ? 0 : d);
  return n;
}
// model-NNNNN-of-MMMMM.safetensors
inline bool is_shard_file_name(const std::string& s) {
  int i = 0, k = 0, used = 0;
  return s.size() == 32 && std::sscanf(s.c_str(), "model-%5d-of-%5d.safetensors%n", &i, &k, &used) == 2 &&
         used == 32 && shard_file_name(i, k) == s;
}
}  // namespace detail

struct ShardedWriteResult {
  std::vector<std::string> files;  // file names inside the directory, in order (index last when sharded)
  uint64_t total_size = 0;         // tensor data bytes
  bool sharded = false;
};

// Writes `tensors` into directory `dir` (created if needed) as model.safetensors, or as shards + index when their
// data exceeds max_shard_bytes. `metadata` goes into every file's __metadata__ (plus "format": "pt").
inline ShardedWriteResult write_safetensors_sharded(const std::string& dir, const std::vector<TensorView>& tensors,
                                                    uint64_t max_shard_bytes,
                                                    const std::map<std::string, std::string>& metadata = {}) {
  namespace fs = std::filesystem;
  KILN_CHECK(max_shard_bytes > 0, dir, ": max_shard_bytes must be positive");
  std::error_code ec;
  fs::create_directories(dir, ec);
  KILN_CHECK(!ec, dir, ": cannot create directory: ", ec.message());

  // Plan the shards.
  std::vector<std::vector<TensorView>> shards;
  uint64_t total = 0, current = 0;
  for (const TensorView& t : tensors) {
    const uint64_t b = detail::tensor_bytes(t);
    if (shards.empty() || (current > 0 && current + b > max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(t);
    current += b;
    total += b;
  }
  if (shards.empty()) shards.emplace_back();

  ShardedWriteResult r;
  r.total_size = total;
  r.sharded = shards.size() > 1;
  const fs::path d(dir);
  if (!r.sharded) {
    write_safetensors((d / kSingleFileName).string(), shards[0], metadata);
    r.files.push_back(kSingleFileName);
  } else {
    const int k = int(shards.size());
    nlohmann::ordered_json map = nlohmann::ordered_json::object();
    for (int i = 0; i < k; ++i) {
      const std::string name = shard_file_name(i + 1, k);
      write_safetensors((d / name).string(), shards[size_t(i)], metadata);
      for (const TensorView& t : shards[size_t(i)]) map[t.name] = name;
      r.files.push_back(name);
    }
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = map;
    core::write_text_atomic((d / kIndexFileName).string(), index.dump(2) + "\n");
    r.files.push_back(kIndexFileName);
  }
  // Remove what an earlier export left that this one does not use.
  std::set<std::string> keep(r.files.begin(), r.files.end());
  for (const auto& e : fs::directory_iterator(d)) {
    const std::string n = e.path().filename().string();
    if (keep.count(n)) continue;
    if (n == kSingleFileName || n == kIndexFileName || detail::is_shard_file_name(n)) {
      fs::remove(e.path(), ec);
      KILN_CHECK(!ec, e.path().string(), ": cannot remove the stale file of an earlier export: ", ec.message());
    }
  }
  return r;
}

// A model stored as one safetensors file or as shards with an index.
class SafetensorsModel {
 public:
  explicit SafetensorsModel(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path p(path);
    if (fs::is_directory(p, ec)) {
      if (fs::exists(p / kIndexFileName, ec)) {
        open_index((p / kIndexFileName).string());
      } else if (fs::exists(p / kSingleFileName, ec)) {
        open_single((p / kSingleFileName).string());
      } else {
        KILN_FAIL(path, ": directory holds neither ", kIndexFileName, " nor ", kSingleFileName,
                  " (expected a Hugging Face safetensors model)");
      }
    } else if (p.extension() == ".json") {
      open_index(path);
    } else {
      open_single(path);
    }
  }

  bool sharded() const { return !index_path_.empty(); }
  const std::string& index_path() const { return index_path_; }  // empty for a single file
  std::vector<std::string> files() const {
    std::vector<std::string> f;
    for (const auto& s : shards_) f.push_back(s->path());
    return f;
  }
  // Tensor names, file by file in data order.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& s : shards_)
      for (const Tensor& t : s->tensors()) n.push_back(t.name);
    return n;
  }
  uint64_t total_size() const { return total_size_; }
  bool contains(std::string_view name) const { return where_.count(std::string(name)) != 0; }
  const Safetensors& file_of(std::string_view name) const {
    auto it = where_.find(std::string(name));
    if (it == where_.end()) KILN_FAIL(origin(), ": no tensor named ", name);
    return *shards_[it->second];
  }
  const Tensor& at(std::string_view name) const { return file_of(name).at(name); }
  void copy_to(std::string_view name, float* dst, size_t n) const { file_of(name).copy_to(name, dst, n); }
  template <class T>
  std::vector<T> to_vector(std::string_view name) const {
    return file_of(name).template to_vector<T>(name);
  }

 private:
  std::string origin() const { return index_path_.empty() ? shards_.at(0)->path() : index_path_; }

  void open_single(const std::string& path) {
    shards_.push_back(std::make_unique<Safetensors>(path));
    for (const Tensor& t : shards_[0]->tensors()) {
      where_.emplace(t.name, 0);
      total_size_ += t.nbytes;
    }
  }

  void open_index(const std::string& path) {
    namespace fs = std::filesystem;
    using nlohmann::json;
    index_path_ = path;
    std::ifstream f(path, std::ios::binary);
    KILN_CHECK(f.good(), path, ": cannot open safetensors index");
    std::ostringstream text;
    text << f.rdbuf();
    const json j = core::parse_json(text.str(), path);
    KILN_CHECK(j.is_object(), path, ": expected a JSON object with metadata and weight_map, got ", j.type_name());
    auto wm = j.find("weight_map");
    KILN_CHECK(wm != j.end() && wm->is_object(), path, ": missing field weight_map (expected an object tensor -> file)");
    KILN_CHECK(!wm->empty(), path, ": field weight_map is empty (expected at least one tensor)");
    std::optional<uint64_t> total;
    if (auto m = j.find("metadata"); m != j.end() && m->is_object()) {
      if (auto t = m->find("total_size"); t != m->end()) {
        total = detail::as_index(*t);
        if (!total && t->is_number_float() && t->get<double>() >= 0 && t->get<double>() < 9e18)
          total = uint64_t(t->get<double>());  // some writers emit 1.2e10
        KILN_CHECK(total, path, ": field metadata.total_size = ", t->dump(), ": expected a non-negative integer");
      }
    }
    KILN_CHECK(total, path, ": missing field metadata.total_size (expected the sum of the tensors' bytes)");

    const fs::path dir = fs::path(path).parent_path();
    std::map<std::string, size_t> file_index;  // shard file name -> position in shards_
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      KILN_CHECK(it.value().is_string(), path, ": weight_map[\"", it.key(), "\"] = ", it.value().dump(),
                 ": expected a file name");
      const std::string file = it.value().get<std::string>();
      KILN_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..", path,
                 ": weight_map[\"", it.key(), "\"] = \"", file,
                 "\": expected a plain file name in the index's directory");
      auto [fi, added] = file_index.emplace(file, shards_.size());
      if (added) {
        const fs::path fp = dir / file;
        std::error_code ec;
        KILN_CHECK(fs::exists(fp, ec), path, ": weight_map[\"", it.key(), "\"] names ", file,
                   ", which does not exist (expected ", fp.string(), ")");
        shards_.push_back(std::make_unique<Safetensors>(fp.string()));
      }
      KILN_CHECK(shards_[fi->second]->contains(it.key()), path, ": weight_map says tensor ", it.key(), " is in ", file,
                 ", but that file has no such tensor");
      where_.emplace(it.key(), fi->second);
    }
    for (const auto& s : shards_) {
      for (const Tensor& t : s->tensors()) {
        auto w = where_.find(t.name);
        KILN_CHECK(w != where_.end(), path, ": shard ", s->path(), " holds tensor ", t.name,
                   ", which weight_map does not list");
        KILN_CHECK(shards_[w->second].get() == s.get(), path, ": tensor ", t.name, " is in both ", s->path(), " and ",
                   shards_[w->second]->path(), " (weight_map names the latter)");
        total_size_ += t.nbytes;
      }
    }
    KILN_CHECK(*total == total_size_, path, ": field metadata.total_size = ", *total, " but the shards hold ",
               total_size_, " bytes of tensor data");
  }

  std::string index_path_;
  std::vector<std::unique_ptr<Safetensors>> shards_;
  std::unordered_map<std::string, size_t> where_;
  uint64_t total_size_ = 0;
};

// ---- Kiln model <-> HF tensors --------------------------------------------------------------------

// The flat fp32 buffer's tensors, one per entry of a parameter table (plan::ParamPlan<M>::table.entries), with HF
// names and shapes (tied models have no lm_head.weight entry, as HF has none).
inline std::vector<TensorView> param_views(std::span<const plan::ParamEntry> table, const float* params) {
  std::vector<TensorView> v;
  for (const plan::ParamEntry& e : table) {
    TensorView t;
    t.name = std::string(e.name.view());
    t.dtype = Dtype::F32;
    t.shape = e.cols ? std::vector<int64_t>{e.rows, e.cols} : std::vector<int64_t>{e.rows};
    t.data = params + e.offset;
    v.push_back(std::move(t));
  }
  return v;
}
template <DecoderModel M>
std::vector<TensorView> param_views(const float* params) {
  return param_views(plan::ParamPlan<M>::table.entries, params);
}

// Fills the flat buffer `params` (the table's total floats; padding is left untouched) from `src` (Safetensors or
// SafetensorsModel: contains/at/copy_to), converting any float dtype to fp32. Every table entry must be present with
// the table's shape. A tied model also accepts (and ignores) an lm_head.weight in `src`; an untied model requires it.
template <class Source>
void load_params(std::span<const plan::ParamEntry> table, const Source& src, float* params, const std::string& origin) {
  for (const plan::ParamEntry& e : table) {
    const std::string name(e.name.view());
    KILN_CHECK(src.contains(name), origin, ": missing tensor ", name, " (the model needs it with shape [", e.rows,
               e.cols ? ", " + std::to_string(e.cols) : std::string(), "])");
    const Tensor& t = src.at(name);
    KILN_CHECK(t.dtype == Dtype::F32 || t.dtype == Dtype::BF16 || t.dtype == Dtype::F16 || t.dtype == Dtype::F64, origin,
               ": tensor ", name, " has dtype ", dtype_name(t.dtype), ", expected a float dtype (F32, BF16, F16, F64)");
    const std::vector<int64_t> want = e.cols ? std::vector<int64_t>{e.rows, e.cols} : std::vector<int64_t>{e.rows};
    if (t.shape != want) {
      auto show = [](const std::vector<int64_t>& s) {
        std::string r = "[";
        for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
        return r + "]";
      };
      KILN_FAIL(origin, ": tensor ", name, " has shape ", show(t.shape), ", expected ", show(want));
    }
    src.copy_to(name, params + e.offset, e.count());
  }
}
template <DecoderModel M, class Source>
void load_params(const Source& src, float* params, const std::string& origin) {
  load_params(plan::ParamPlan<M>::table.entries, src, params, origin);
}

}  // namespace kiln::io
