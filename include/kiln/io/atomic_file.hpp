// kiln/io/atomic_file.hpp: replace a file's contents so that a crash leaves either the old or the new file whole.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "kiln/core/error.hpp"
#include "kiln/io/safetensors.hpp"  // detail::write_all, detail::errno_text

namespace kiln::io {

// Atomic write of `text` to `path`: path.tmp.<pid>, fsync, rename, fsync(dir). Errors name the path.
inline void write_text_atomic(const std::string& path, std::string_view text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  KILN_CHECK(fd >= 0, tmp, ": cannot create: ", detail::errno_text());
  try {
    detail::write_all(fd, text.data(), text.size(), tmp);
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

}  // namespace kiln::io
