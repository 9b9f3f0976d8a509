// kiln/io/safetensors.hpp: read (mmap, validated) and write (atomic) safetensors files.
//
// Format (huggingface/safetensors README; FACTS.md "Formats"):
//   [u64 LE N][N bytes of JSON header, space-padded][data region: raw little-endian row-major tensors]
//   header = { "__metadata__": {str: str}?,
//              "<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ... }
//   offsets are relative to the data start; sorted by offset the tensors tile the data region exactly
//   (no holes, no overlaps, no trailing bytes) and end - begin == prod(shape) * sizeof(dtype).
//   A key appears once per object: a tensor name given twice is refused (nlohmann::json would keep one silently).
//
// Reading never trusts the file: every violation throws kiln::Error naming the file, the tensor or
// field, and what was expected. Writing goes to `path.tmp.<pid>`, is fsync'd, renamed over `path`,
// and the directory is fsync'd, so a crash never leaves a half-written file under the final name.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"

namespace kiln::io {

static_assert(std::endian::native == std::endian::little,
              "kiln::io::safetensors reads and writes little-endian data in place; big-endian hosts are not supported");

// ---------------------------------------------------------------------------------------------
// Dtypes
// ---------------------------------------------------------------------------------------------
enum class Dtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline constexpr Dtype kAllDtypes[] = {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64,
                                       Dtype::I32, Dtype::I16, Dtype::I8,  Dtype::U8,   Dtype::BOOL};

// Bytes per element.
constexpr size_t dtype_size(Dtype d) {
  switch (d) {
    case Dtype::F64: case Dtype::I64: return 8;
    case Dtype::F32: case Dtype::I32: return 4;
    case Dtype::F16: case Dtype::BF16: case Dtype::I16: return 2;
    case Dtype::I8: case Dtype::U8: case Dtype::BOOL: return 1;
  }
  return 0;
}

// The header spelling ("F32", "BF16", ...).
constexpr std::string_view dtype_name(Dtype d) {
  switch (d) {
    case Dtype::F64: return "F64";
    case Dtype::F32: return "F32";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I64: return "I64";
    case Dtype::I32: return "I32";
    case Dtype::I16: return "I16";
    case Dtype::I8: return "I8";
    case Dtype::U8: return "U8";
    case Dtype::BOOL: return "BOOL";
  }
  return "?";
}

inline std::optional<Dtype> dtype_from_name(std::string_view s) {
  for (Dtype d : kAllDtypes)
    if (dtype_name(d) == s) return d;
  return std::nullopt;
}

inline std::string dtype_choices() {
  std::string s;
  for (Dtype d : kAllDtypes) {
    if (!s.empty()) s += ", ";
    s += dtype_name(d);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

// One tensor inside a mapped file. `data` points into the mapping (valid while the Safetensors lives)
// and may be unaligned for its dtype if the writer did not align it: read it with memcpy.
struct Tensor {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

namespace detail {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the safetensors crate

// IEEE binary16 -> float (exact).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {        // subnormal: normalize
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

template <class S>
S load(const std::byte* p) {
  S s;
  std::memcpy(&s, p, sizeof(S));
  return s;
}

// Element i of a tensor of dtype d as T.
template <class T>
T element_as(Dtype d, const std::byte* base, size_t i) {
  const std::byte* p = base + i * dtype_size(d);
  switch (d) {
    case Dtype::F64: return static_cast<T>(load<double>(p));
    case Dtype::F32: return static_cast<T>(load<float>(p));
    case Dtype::F16: return static_cast<T>(half_to_float(load<uint16_t>(p)));
    case Dtype::BF16: return static_cast<T>(std::bit_cast<float>(uint32_t(load<uint16_t>(p)) << 16));
    case Dtype::I64: return static_cast<T>(load<int64_t>(p));
    case Dtype::I32: return static_cast<T>(load<int32_t>(p));
    case Dtype::I16: return static_cast<T>(load<int16_t>(p));
    case Dtype::I8: return static_cast<T>(load<int8_t>(p));
    case Dtype::U8: return static_cast<T>(load<uint8_t>(p));
    case Dtype::BOOL: return static_cast<T>(load<uint8_t>(p) != 0);
  }
  return T{};
}

// A JSON value that is a non-negative integer fitting in int64, or nullopt.
inline std::optional<uint64_t> as_index(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u <= uint64_t(INT64_MAX)) return u;
    return std::nullopt;
  }
  if (v.is_number_integer()) {
    int64_t s = v.get<int64_t>();
    if (s >= 0) return uint64_t(s);
  }
  return std::nullopt;
}

// A key given twice in a header: the tensor or field it belongs to (core::parse_json refuses every duplicate).
[[noreturn]] inline void duplicate_header_key(const std::string& path, const core::JsonDom& dom, const std::string& k) {
  if (dom.depth() == 1) {
    KILN_CHECK(k != "__metadata__", path, ": __metadata__ is given twice in the header");
    KILN_FAIL(path, ": duplicate tensor name ", k, " in the header");
  }
  if (dom.depth() == 2 && dom.key_at(0) == "__metadata__")
    KILN_FAIL(path, ": __metadata__ key \"", k, "\" is given twice in the header");
  if (dom.depth() == 2) KILN_FAIL(path, ": tensor ", dom.key_at(0), ": field ", k, " is given twice in the header");
  KILN_FAIL(path, ": key \"", k, "\" is given twice in one object of the header");
}

}  // namespace detail

class Safetensors {
 public:
  explicit Safetensors(std::string path) : path_(std::move(path)) {
    map_file();
    try {
      parse_header();
    } catch (...) {
      unmap();
      throw;
    }
  }
  ~Safetensors() { unmap(); }

  Safetensors(const Safetensors&) = delete;
  Safetensors& operator=(const Safetensors&) = delete;
  Safetensors(Safetensors&& o) noexcept { steal(o); }
  Safetensors& operator=(Safetensors&& o) noexcept {
    if (this != &o) {
      unmap();
      steal(o);
    }
    return *this;
  }

  const std::string& path() const { return path_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }  // in file (offset) order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(std::string_view name) const { return index_.find(std::string(name)) != index_.end(); }

  const Tensor& at(std::string_view name) const {
    auto it = index_.find(std::string(name));
    if (it == index_.end()) KILN_FAIL(path_, ": no tensor named ", name);
    return tensors_[it->second];
  }

  // All elements of `name` converted to T (any arithmetic T, from any dtype).
  template <class T>
  std::vector<T> to_vector(std::string_view name) const {
    static_assert(std::is_arithmetic_v<T>, "to_vector<T>: T must be an arithmetic type (float, int32_t, ...)");
    const Tensor& t = at(name);
    const size_t n = t.nbytes / dtype_size(t.dtype);
    std::vector<T> out(n);
    if (t.dtype == dtype_of<T>()) {
      if (n) std::memcpy(out.data(), t.data, t.nbytes);
    } else {
      for (size_t i = 0; i < n; ++i) out[i] = detail::element_as<T>(t.dtype, t.data, i);
    }
    return out;
  }

  // Copy `name` converted to float into dst[0, n); n must equal the tensor's element count.
  void copy_to(std::string_view name, float* dst, size_t n) const {
    const Tensor& t = at(name);
    const size_t count = t.nbytes / dtype_size(t.dtype);
    KILN_CHECK(n == count, path_, ": tensor ", name, " has ", count, " elements, but copy_to was given room for ", n);
    if (t.dtype == Dtype::F32) {
      if (n) std::memcpy(dst, t.data, t.nbytes);
      return;
    }
    for (size_t i = 0; i < n; ++i) dst[i] = detail::element_as<float>(t.dtype, t.data, i);
  }

 private:
  template <class T>
  static constexpr std::optional<Dtype> dtype_of() {
    if constexpr (std::is_same_v<T, double>) return Dtype::F64;
    else if constexpr (std::is_same_v<T, float>) return Dtype::F32;
    else if constexpr (std::is_same_v<T, int64_t>) return Dtype::I64;
    else if constexpr (std::is_same_v<T, int32_t>) return Dtype::I32;
    else if constexpr (std::is_same_v<T, int16_t>) return Dtype::I16;
    else if constexpr (std::is_same_v<T, int8_t>) return Dtype::I8;
    else if constexpr (std::is_same_v<T, uint8_t>) return Dtype::U8;
    else return std::nullopt;
  }

  void map_file() {
    file_ = core::MappedFile(path_);  // errors name the path: cannot open, not a regular file, cannot map
    size_ = file_.bytes().size();
    KILN_CHECK(size_ >= 8, path_, ": file truncated: ", size_,
               " bytes, but a safetensors file starts with an 8-byte header length");
  }

  void unmap() noexcept {
    file_ = core::MappedFile();
    size_ = 0;
  }

  void steal(Safetensors& o) noexcept {
    path_ = std::move(o.path_);
    file_ = std::move(o.file_);
    size_ = std::exchange(o.size_, 0);
    tensors_ = std::move(o.tensors_);
    index_ = std::move(o.index_);
    metadata_ = std::move(o.metadata_);
  }

  void parse_header() {
    using nlohmann::json;
    const auto* bytes = file_.bytes().data();
    const uint64_t n = detail::load<uint64_t>(bytes);
    KILN_CHECK(n <= detail::kMaxHeaderBytes, path_, ": header too large: header length ", n,
               " bytes, expected at most ", detail::kMaxHeaderBytes);
    KILN_CHECK(n <= size_ - 8, path_, ": header length ", n, " goes beyond the end of the file (file has ", size_ - 8,
               " bytes after the 8-byte length; truncated file?)");
    const char* hb = reinterpret_cast<const char*>(bytes + 8);
    const json h = core::parse_json(std::string_view(hb, n), path_ + ": header",
                                    [&](const core::JsonDom& dom, const std::string& k) {
                                      detail::duplicate_header_key(path_, dom, k);
                                    });
    KILN_CHECK(h.is_object(), path_, ": header must be a JSON object, got ", h.type_name());

    const std::byte* data = bytes + 8 + n;
    const uint64_t data_size = size_ - 8 - n;

    struct Entry {
      uint64_t begin, end;
      size_t index;
    };
    std::vector<Tensor> parsed;
    std::vector<Entry> spans;
    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string& name = it.key();
      const json& v = it.value();
      if (name == "__metadata__") {
        KILN_CHECK(v.is_object(), path_, ": __metadata__ must be an object of string -> string, got ", v.type_name());
        for (auto m = v.begin(); m != v.end(); ++m) {
          KILN_CHECK(m.value().is_string(), path_, ": __metadata__ value for key \"", m.key(),
                     "\" must be a string, got ", m.value().type_name());
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      KILN_CHECK(v.is_object(), path_, ": tensor ", name, ": entry must be an object with dtype, shape, data_offsets, got ",
                 v.type_name());
      // dtype
      auto dt = v.find("dtype");
      KILN_CHECK(dt != v.end() && dt->is_string(), path_, ": tensor ", name, ": missing or non-string field dtype");
      auto dtype = dtype_from_name(dt->get<std::string>());
      KILN_CHECK(dtype.has_value(), path_, ": tensor ", name, ": unknown dtype \"", dt->get<std::string>(),
                 "\", expected one of ", dtype_choices());
      // shape
      auto sh = v.find("shape");
      KILN_CHECK(sh != v.end() && sh->is_array(), path_, ": tensor ", name, ": missing or non-array field shape");
      Tensor t;
      t.name = name;
      t.dtype = *dtype;
      uint64_t expect = dtype_size(*dtype);  // bytes implied by the shape; saturates at UINT64_MAX on overflow
      bool overflow = false;
      for (const json& d : *sh) {
        auto u = detail::as_index(d);
        KILN_CHECK(u.has_value(), path_, ": tensor ", name, ": shape ", sh->dump(),
                   " must hold non-negative integers");
        t.shape.push_back(int64_t(*u));
        if (!overflow && __builtin_mul_overflow(expect, *u, &expect)) overflow = true;
      }
      // data_offsets
      auto off = v.find("data_offsets");
      KILN_CHECK(off != v.end() && off->is_array() && off->size() == 2, path_, ": tensor ", name,
                 ": field data_offsets must be an array [begin, end]");
      auto b = detail::as_index((*off)[0]), e = detail::as_index((*off)[1]);
      KILN_CHECK(b && e, path_, ": tensor ", name, ": data_offsets ", off->dump(), " must be non-negative integers");
      KILN_CHECK(*b <= *e, path_, ": tensor ", name, ": data_offsets ", off->dump(), " have begin > end");
      KILN_CHECK(*e <= data_size, path_, ": tensor ", name, ": data_offsets end ", *e, " is beyond the data region of ",
                 data_size, " bytes (truncated file?)");
      KILN_CHECK(!overflow && *e - *b == expect, path_, ": tensor ", name, ": size mismatch: data_offsets ", off->dump(),
                 " span ", *e - *b, " bytes, but shape ", sh->dump(), " of ", dtype_name(*dtype), " needs ",
                 overflow ? std::string("more than 2^64") : std::to_string(expect), " bytes");
      t.data = data + *b;
      t.nbytes = size_t(*e - *b);
      spans.push_back({*b, *e, parsed.size()});
      parsed.push_back(std::move(t));
    }

    // Sorted by offset, the tensors must tile [0, data_size) exactly.
    std::sort(spans.begin(), spans.end(),
              [](const Entry& x, const Entry& y) { return x.begin != y.begin ? x.begin < y.begin : x.end < y.end; });
    uint64_t cursor = 0;
    const std::string* prev = nullptr;
    for (const Entry& s : spans) {
      const std::string& name = parsed[s.index].name;
      KILN_CHECK(s.begin >= cursor, path_, ": tensor ", name, ": data_offsets [", s.begin, ", ", s.end,
                 "] overlap the previous tensor ", prev ? *prev : std::string("?"), " which ends at ", cursor);
      KILN_CHECK(s.begin == cursor, path_, ": tensor ", name, ": hole of ", s.begin - cursor,
                 " bytes in the data region before it (previous tensor ends at ", cursor,
                 ", this one begins at ", s.begin, "); offsets must be contiguous");
      cursor = s.end;
      prev = &name;
    }
    KILN_CHECK(cursor == data_size, path_, ": hole of ", data_size - cursor,
               " bytes at the end of the data region: tensors cover ", cursor, " of ", data_size,
               " bytes; file size must be exact");

    tensors_.reserve(parsed.size());
    for (const Entry& s : spans) {
      index_.emplace(parsed[s.index].name, tensors_.size());
      tensors_.push_back(std::move(parsed[s.index]));
    }
  }

  std::string path_;
  core::MappedFile file_;
  size_t size_ = 0;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

// A tensor to write: `data` holds prod(shape) * dtype_size(dtype) bytes, row-major, little-endian.
struct TensorView {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};


// Writes tensors in the given order (data offsets follow it) with `metadata` plus "format":"pt"
// unless metadata sets "format". Atomic: path.tmp.<pid> -> fsync -> rename -> fsync(dir).
inline void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h;
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  if (!metadata.count("format")) meta["format"] = "pt";
  for (const auto& [k, v] : metadata) meta[k] = v;
  h["__metadata__"] = meta;

  std::vector<size_t> sizes;
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    KILN_CHECK(t.name != "__metadata__", path, ": a tensor may not be named __metadata__");
    KILN_CHECK(!h.contains(t.name), path, ": tensor name ", t.name, " given twice");
    uint64_t nbytes = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      KILN_CHECK(d >= 0, path, ": tensor ", t.name, ": negative dimension ", d, " in shape");
      KILN_CHECK(!__builtin_mul_overflow(nbytes, uint64_t(d), &nbytes), path, ": tensor ", t.name, ": shape too large");
    }
    KILN_CHECK(nbytes == 0 || t.data != nullptr, path, ": tensor ", t.name, ": data is null but shape needs ", nbytes,
               " bytes");
    h[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    sizes.push_back(size_t(nbytes));
    offset += nbytes;
  }
  std::string header = h.dump();
  header.append((8 - (8 + header.size()) % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t n = header.size();

  core::write_file_atomic(path, [&](int fd, const std::string& tmp) {
    core::write_all(fd, &n, 8, tmp);
    core::write_all(fd, header.data(), header.size(), tmp);
    for (size_t i = 0; i < tensors.size(); ++i)
      if (sizes[i]) core::write_all(fd, tensors[i].data, sizes[i], tmp);
  });
}

}  // namespace kiln::io
