// kiln/io/jsonl.hpp: one JSON object per line: the writer of metrics logs, each line handed to the OS as it is
// written, and read_jsonl, the reader of tasks, conversations and pairs.
//
// Every write() is a single write(2) of "<compact json>\n" on a file opened O_APPEND, so a line is never split
// between two writers appending to the same file, and `tail -f` / a crash sees whole lines only (up to the
// filesystem's guarantees for one write).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"

namespace kiln::io {

class JsonlWriter {
 public:
  // append = false truncates an existing file; the parent directory must exist.
  JsonlWriter(std::string path, bool append) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (append ? 0 : O_TRUNC), 0644);
    KILN_CHECK(fd_ >= 0, path_, ": cannot open JSONL file for ", append ? "appending" : "writing", ": ",
               core::errno_text());
  }
  ~JsonlWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;
  JsonlWriter(JsonlWriter&& o) noexcept : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)) {}

  const std::string& path() const { return path_; }

  // Non-finite floats are written as null (JSON has no NaN); invalid UTF-8 in strings is replaced by U+FFFD.
  void write(const nlohmann::json& record) {
    std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.push_back('\n');
    core::write_all(fd_, line.data(), line.size(), path_);
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// Reads a jsonl file line by line (blank lines skipped): each(record, "file:line"). A file that cannot be opened
// (`what` says what it should hold) or a line that is not JSON is an error naming the file and the line.
template <class Each>
void read_jsonl(const std::string& path, const std::string& what, Each&& each) {
  std::ifstream in(path);
  KILN_CHECK(in.good(), path, ": cannot open ", what);
  std::string line;
  for (long n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      KILN_FAIL(where, ": not valid JSON (", e.what(), ")");
    }
    each(j, where);
  }
}

}  // namespace kiln::io
