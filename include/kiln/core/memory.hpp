// kiln/core/memory.hpp: aligned host buffers; the plan decides sizes, this only owns the bytes.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "kiln/core/error.hpp"

namespace kiln {

inline constexpr size_t kAlign = 64;  // one cache line; also the AVX-512 vector width

// An owning, 64-byte aligned, zero-initialised array of T.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t n) : n_(n) {
    if (n == 0) return;
    size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes);
    KILN_CHECK(p, "out of host memory allocating ", bytes, " bytes");
    std::memset(p, 0, bytes);
    p_.reset(static_cast<T*>(p));
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_.get()[i]; }
  const T& operator[](size_t i) const { return p_.get()[i]; }
  void zero() { if (n_) std::memset(p_.get(), 0, n_ * sizeof(T)); }

 private:
  struct Free { void operator()(T* p) const { std::free(p); } };
  std::unique_ptr<T, Free> p_;
  size_t n_ = 0;
};

}  // namespace kiln
