// kiln/core/error.hpp: one exception type and a check macro whose message says what was expected.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace kiln {

// Every run-time failure Kiln reports: bad input, bad configuration, a failed system call.
// The message (what()) names the file / field / value and what was expected, in words for the user; where() is
// the source location that raised it, for developers (not part of the message).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
  Error(const std::string& message, std::string where) : std::runtime_error(message), where_(std::move(where)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

namespace detail {
template <class... A>
[[noreturn]] inline void fail(const char* file, int line, A&&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  throw Error(s.str(), std::string(file) + ":" + std::to_string(line));
}
}  // namespace detail

}  // namespace kiln

// KILN_CHECK(cond, "what", value, "is wrong and what was expected");
#define KILN_CHECK(cond, ...)                                         \
  do {                                                                \
    if (!(cond)) ::kiln::detail::fail(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
#define KILN_FAIL(...) ::kiln::detail::fail(__FILE__, __LINE__, __VA_ARGS__)
