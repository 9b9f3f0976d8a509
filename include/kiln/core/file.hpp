// kiln/core/file.hpp: the files Kiln reads and writes, done once for data, io and checkpoints alike.
//   MappedFile          a read-only mapping of a whole file (shards, Megatron files, tokenizer.json)
//   AtomicFile          a streaming writer through a fixed buffer into <path>.tmp.<pid>, renamed over path on commit()
//   write_file_atomic   a writer callback into <path>.tmp.<pid>; fsync, rename over path, fsync of the directory
//   write_text_atomic   the same for a string (configs, checkpoint state, tokenizer.json)
//   fsync_dir, write_all, errno_text
// A crash leaves either the old file or the new one whole; errors name the path.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"

namespace kiln::core {

inline std::string errno_text() { return std::strerror(errno); }

inline void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    KILN_CHECK(w > 0, path, ": write failed: ", errno_text());
    c += w;
    n -= size_t(w);
  }
}

// fsyncs a directory, so that a rename into it survives a power cut. Errors name the directory.
inline void fsync_dir(const std::filesystem::path& dir) {
  const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
  int dfd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  KILN_CHECK(dfd >= 0, d.string(), ": cannot open directory to fsync: ", errno_text());
  int rc = ::fsync(dfd);
  std::string e = rc != 0 ? errno_text() : std::string();
  ::close(dfd);
  KILN_CHECK(rc == 0, d.string(), ": fsync of directory failed: ", e);
}

// Atomic replacement of `path`: `body(fd, tmp_path)` writes the contents into a temporary file, which is fsync'd and
// renamed over `path`; the directory is fsync'd so the rename survives a power cut. On any error the temporary file
// is removed and `path` is untouched. Errors name the path.
inline void write_file_atomic(const std::string& path, const std::function<void(int fd, const std::string& tmp)>& body) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  KILN_CHECK(fd >= 0, tmp, ": cannot create: ", errno_text());
  try {
    body(fd, tmp);
    KILN_CHECK(::fsync(fd) == 0, tmp, ": fsync failed: ", errno_text());
    int rc = ::close(fd);
    fd = -1;
    KILN_CHECK(rc == 0, tmp, ": close failed: ", errno_text());
    KILN_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, tmp, ": rename to ", path, " failed: ", errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(std::filesystem::path(path).parent_path());
}

// Atomic write of `text` to `path`.
inline void write_text_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, [&](int fd, const std::string& tmp) { write_all(fd, text.data(), text.size(), tmp); });
}

// A read-only mapping of a whole file (an empty file maps to an empty span).
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    KILN_CHECK(fd >= 0, path, ": cannot open: ", errno_text());
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      const std::string e = S_ISREG(st.st_mode) || st.st_mode == 0 ? errno_text() : "not a regular file";
      ::close(fd);
      KILN_FAIL(path, ": cannot read: ", e);
    }
    size_ = size_t(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
      const std::string e = p == MAP_FAILED ? errno_text() : std::string();
      ::close(fd);
      KILN_CHECK(p != MAP_FAILED, path, ": cannot map ", size_, " bytes: ", e);
      data_ = static_cast<const std::byte*>(p);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() { reset(); }
  MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      path_ = std::move(o.path_);
    }
    return *this;
  }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // Tells the kernel the file will be read at random (documents in shuffled order): no large read-ahead.
  void advise_random() const {
    if (data_) ::madvise(const_cast<std::byte*>(data_), size_, MADV_RANDOM);
  }

 private:
  void reset() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Writes a file through a fixed buffer to `<path>.tmp.<pid>`; commit() fsyncs and renames it over `path`.
// Destroyed without commit(), it removes the temporary.
class AtomicFile {
 public:
  static constexpr size_t kBuffer = 1 << 20;
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    KILN_CHECK(fd_ >= 0, "cannot create '", tmp_, "': ", std::strerror(errno));
    buf_.reserve(kBuffer);
  }
  ~AtomicFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    if (buf_.size() + n > kBuffer) flush();
    if (n >= kBuffer) {
      write_all(c, n);
      return;
    }
    buf_.insert(buf_.end(), c, c + n);
  }
  void commit() {
    flush();
    KILN_CHECK(::fsync(fd_) == 0, "cannot fsync '", tmp_, "': ", std::strerror(errno));
    KILN_CHECK(::close(fd_) == 0, "cannot close '", tmp_, "': ", std::strerror(errno));
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      int e = errno;
      ::unlink(tmp_.c_str());
      KILN_FAIL("cannot rename '", tmp_, "' to '", path_, "': ", std::strerror(e));
    }
  }
  const std::string& path() const { return path_; }

 private:
  void flush() {
    if (!buf_.empty()) write_all(buf_.data(), buf_.size());
    buf_.clear();
  }
  void write_all(const char* p, size_t n) { core::write_all(fd_, p, n, tmp_); }
  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<char> buf_;
};

}  // namespace kiln::core
