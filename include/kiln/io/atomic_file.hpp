// kiln/io/atomic_file.hpp: replace a file's contents so that a crash leaves either the old or the new file whole.
//   write_file_atomic(path, body): body writes into path.tmp.<pid>; then fsync, rename over path, fsync(dir).
// Every Kiln writer of a file that must not be half-written (safetensors, configs, checkpoint state) goes through it.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "kiln/core/error.hpp"

namespace kiln::io {

namespace detail {

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

}  // namespace detail

// Atomic replacement of `path`: `body(fd, tmp_path)` writes the contents into a temporary file, which is fsync'd and
// renamed over `path`; the directory is fsync'd so the rename survives a power cut. On any error the temporary file
// is removed and `path` is untouched. Errors name the path.
inline void write_file_atomic(const std::string& path, const std::function<void(int fd, const std::string& tmp)>& body) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  KILN_CHECK(fd >= 0, tmp, ": cannot create: ", detail::errno_text());
  try {
    body(fd, tmp);
    KILN_CHECK(::fsync(fd) == 0, tmp, ": fsync failed: ", detail::errno_text());
    int rc = ::close(fd);
    fd = -1;
    KILN_CHECK(rc == 0, tmp, ": close failed: ", detail::errno_text());
    KILN_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, tmp, ": rename to ", path, " failed: ", detail::errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  KILN_CHECK(dfd >= 0, dir.string(), ": cannot open directory to fsync: ", detail::errno_text());
  int rc = ::fsync(dfd);
  std::string e = rc != 0 ? detail::errno_text() : std::string();
  ::close(dfd);
  KILN_CHECK(rc == 0, dir.string(), ": fsync of directory failed: ", e);
}

// Atomic write of `text` to `path`.
inline void write_text_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, [&](int fd, const std::string& tmp) { detail::write_all(fd, text.data(), text.size(), tmp); });
}

}  // namespace kiln::io
