// kiln/io/tensorboard.hpp: TensorBoard scalar event files without TensorFlow or protobuf.
//
// File `<dir>/events.out.tfevents.<unix_ts>.<host>` (a `.<pid>` suffix is added if that name exists) is a sequence of
// TFRecords (tensorflow/core/lib/io/record_writer.cc; FACTS.md "Formats"):
//   u64 LE len | u32 LE masked_crc32c(len bytes) | data[len] | u32 LE masked_crc32c(data)
//   masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8   (mod 2^32)
// Each `data` is a serialized tensorflow.Event protobuf, encoded here by hand:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record is an Event with file_version "brain.Event:2". Wire types used: varint (0), fixed64 (1),
// length-delimited (2), fixed32 (5); a key is varint((field << 3) | wire_type).
// CRC32C is the Castagnoli CRC (reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF), table-driven.
//
// Records are buffered in memory and written on flush() (and when the buffer passes 1 MiB, and on destruction), so a
// TensorBoard reading the file while training runs sees whole records up to the last flush.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"

namespace kiln::io {

// ---- CRC32C (Castagnoli) ----------------------------------------------------------------------
namespace detail {
inline constexpr std::array<uint32_t, 256> kCrc32cTable = [] {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}();
}  // namespace detail

// crc32c of bytes, continuing from `crc` (pass the previous result to checksum a stream in pieces).
inline uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = detail::kCrc32cTable[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}
inline uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

inline constexpr uint32_t kTfRecordMaskDelta = 0xa282ead8u;
inline uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + kTfRecordMaskDelta;
}

// ---- protobuf wire encoding (the few pieces an Event needs) ------------------------------------
namespace pb {
enum Wire : uint32_t { varint = 0, fixed64 = 1, bytes = 2, fixed32 = 5 };
inline void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(uint8_t(v)));
}
inline void put_key(std::string& out, uint32_t field, Wire w) { put_varint(out, (uint64_t(field) << 3) | w); }
inline void put_fixed64(std::string& out, uint32_t field, uint64_t v) {
  put_key(out, field, fixed64);
  for (int i = 0; i < 8; ++i) out.push_back(char(uint8_t(v >> (8 * i))));
}
inline void put_fixed32(std::string& out, uint32_t field, uint32_t v) {
  put_key(out, field, fixed32);
  for (int i = 0; i < 4; ++i) out.push_back(char(uint8_t(v >> (8 * i))));
}
inline void put_bytes(std::string& out, uint32_t field, std::string_view s) {
  put_key(out, field, bytes);
  put_varint(out, s.size());
  out.append(s);
}
inline void put_int64(std::string& out, uint32_t field, int64_t v) {  // proto int64: two's complement as varint
  put_key(out, field, varint);
  put_varint(out, uint64_t(v));
}
}  // namespace pb

// One TFRecord framing `data`.
inline std::string tf_record(std::string_view data) {
  std::string r;
  const uint64_t len = data.size();
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = char(uint8_t(len >> (8 * i)));
  r.append(b, 8);
  uint32_t lc = masked_crc32c(b, 8);
  for (int i = 0; i < 4; ++i) r.push_back(char(uint8_t(lc >> (8 * i))));
  r.append(data);
  uint32_t dc = masked_crc32c(data.data(), data.size());
  for (int i = 0; i < 4; ++i) r.push_back(char(uint8_t(dc >> (8 * i))));
  return r;
}

inline double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class TensorBoardWriter {
 public:
  // Creates `dir` (and parents) if needed and a new event file in it.
  explicit TensorBoardWriter(const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    KILN_CHECK(!ec, dir, ": cannot create TensorBoard log directory: ", ec.message());
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) std::strcpy(host, "localhost");
    const double now = unix_now();
    const std::string base = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(long(now)) + "." + host)).string();
    path_ = base;
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno == EEXIST) {  // two writers in one second: keep both files
      path_ = base + "." + std::to_string(::getpid());
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    KILN_CHECK(fd_ >= 0, path_, ": cannot create TensorBoard event file: ", core::errno_text());
    std::string ev;
    pb::put_fixed64(ev, 1, std::bit_cast<uint64_t>(now));
    pb::put_bytes(ev, 3, "brain.Event:2");
    buffer_ += tf_record(ev);
    flush();
  }
  ~TensorBoardWriter() {
    if (fd_ < 0) return;
    try {
      flush();
    } catch (...) {  // a destructor must not throw; flush() explicitly to see write errors
    }
    ::close(fd_);
  }
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;
  TensorBoardWriter(TensorBoardWriter&& o) noexcept
      : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), buffer_(std::move(o.buffer_)) {}

  const std::string& path() const { return path_; }

  // One scalar at `step` (TensorBoard's x axis). Tags group by their prefix before '/': "train/loss".
  void scalar(std::string_view tag, long step, float value, double wall_time = unix_now()) {
    scalars(step, {{tag, value}}, wall_time);
  }

  // Several scalars in one event (one record).
  void scalars(long step, std::initializer_list<std::pair<std::string_view, float>> values,
               double wall_time = unix_now()) {
    std::string summary;
    for (const auto& [tag, v] : values) {
      KILN_CHECK(!tag.empty(), path_, ": TensorBoard scalar tag must not be empty");
      std::string value;
      pb::put_bytes(value, 1, tag);
      pb::put_fixed32(value, 2, std::bit_cast<uint32_t>(v));
      pb::put_bytes(summary, 1, value);
    }
    std::string ev;
    pb::put_fixed64(ev, 1, std::bit_cast<uint64_t>(wall_time));
    pb::put_int64(ev, 2, step);
    pb::put_bytes(ev, 5, summary);
    buffer_ += tf_record(ev);
    if (buffer_.size() > (1u << 20)) flush();
  }

  // Hands buffered records to the OS (no fsync: losing the last seconds of a log in a power cut is acceptable).
  void flush() {
    if (buffer_.empty()) return;
    core::write_all(fd_, buffer_.data(), buffer_.size(), path_);
    buffer_.clear();
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::string buffer_;
};

}  // namespace kiln::io
