// tests/test_tensorboard.cpp: CRC32C against published vectors, the TensorBoard event writer parsed back by an
// independent minimal reader written here (TFRecord framing with both CRCs checked, protobuf decoded field by
// field), and the JSONL writer.
//
// Set KILN_TENSORBOARD_KEEP=<dir> to keep the event file of the "reference scenario" in <dir>; then
// tests/reference/check_tensorboard.py <dir> reads it with the `tensorboard` package (tests/reference/README.md).
#include <doctest/doctest.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/io/jsonl.hpp"
#include "kiln/io/tensorboard.hpp"

namespace fs = std::filesystem;
using kiln::io::crc32c;

namespace {

fs::path scratch(const char* what) {
  fs::path d = fs::temp_directory_path() / (std::string("kiln_test_") + what + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// ---- a minimal, independent reader -------------------------------------------------------------
struct Scalar {
  std::string tag;
  float value;
};
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<Scalar> values;
};

uint32_t unmask(uint32_t m) {
  uint32_t r = m - 0xa282ead8u;
  return (r >> 17) | (r << 15);
}

struct Cursor {
  const std::string& s;
  size_t i = 0;
  size_t end;
  bool done() const { return i >= end; }
  uint8_t byte() {
    REQUIRE(i < end);
    return uint8_t(s[i++]);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      REQUIRE(shift < 64);
      uint8_t b = byte();
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  }
  uint64_t fixed(int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= uint64_t(byte()) << (8 * k);
    return v;
  }
  std::string bytes() {
    uint64_t n = varint();
    REQUIRE(n <= end - i);
    std::string r = s.substr(i, n);
    i += n;
    return r;
  }
};

Scalar decode_value(const std::string& b) {
  Cursor c{b, 0, b.size()};
  Scalar v{};
  bool has_value = false;
  while (!c.done()) {
    uint64_t key = c.varint();
    if (key == ((1 << 3) | 2)) v.tag = c.bytes();
    else if (key == ((2 << 3) | 5)) { v.value = std::bit_cast<float>(uint32_t(c.fixed(4))); has_value = true; }
    else FAIL("unexpected Value key ", key);
  }
  CHECK(has_value);
  return v;
}

Event decode_event(const std::string& b) {
  Cursor c{b, 0, b.size()};
  Event e;
  while (!c.done()) {
    uint64_t key = c.varint();
    if (key == ((1 << 3) | 1)) e.wall_time = std::bit_cast<double>(c.fixed(8));
    else if (key == ((2 << 3) | 0)) e.step = int64_t(c.varint());
    else if (key == ((3 << 3) | 2)) e.file_version = c.bytes();
    else if (key == ((5 << 3) | 2)) {
      std::string summary = c.bytes();
      Cursor sc{summary, 0, summary.size()};
      while (!sc.done()) {
        REQUIRE(sc.varint() == ((1 << 3) | 2));
        e.values.push_back(decode_value(sc.bytes()));
      }
    } else FAIL("unexpected Event key ", key);
  }
  return e;
}

std::vector<Event> read_events(const std::string& file) {
  std::vector<Event> out;
  Cursor c{file, 0, file.size()};
  while (!c.done()) {
    REQUIRE(file.size() - c.i >= 12);
    const size_t len_at = c.i;
    uint64_t len = c.fixed(8);
    uint32_t len_crc = uint32_t(c.fixed(4));
    CHECK(unmask(len_crc) == crc32c(file.data() + len_at, 8));
    REQUIRE(len + 4 <= file.size() - c.i);
    std::string data = file.substr(c.i, len);
    c.i += len;
    uint32_t data_crc = uint32_t(c.fixed(4));
    CHECK(unmask(data_crc) == crc32c(data));
    out.push_back(decode_event(data));
  }
  return out;
}

// The scenario check_tensorboard.py verifies too (keep the two in step).
void write_reference_scenario(kiln::io::TensorBoardWriter& w) {
  for (int s = 0; s < 100; ++s) {
    w.scalar("train/loss", s, 3.5f - float(s) / 64.0f, 1700000000.0 + s);  // dyadic: exact in float and in Python
    if (s % 10 == 0)
      w.scalars(s, {{"train/lr", float(s) / 16384.0f}, {"eval/loss", 4.0f - float(s) / 32.0f}}, 1700000000.5 + s);
  }
  w.scalar("big/step", 1099511627776L, 1.25f, 1700000200.0);  // 2^40: a 6-byte varint
  w.scalar("unicode/\xc3\xbcnits", 7, -0.5f, 1700000201.0);
  w.flush();
}

}  // namespace

TEST_CASE("crc32c: published check values (RFC 3720 B.4 and the CRC catalogue)") {
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(crc32c("") == 0u);
  std::string zeros(32, '\0'), ones(32, '\xff'), inc(32, '\0'), dec(32, '\0');
  for (int i = 0; i < 32; ++i) {
    inc[i] = char(i);
    dec[i] = char(31 - i);
  }
  CHECK(crc32c(zeros) == 0x8A9136AAu);
  CHECK(crc32c(ones) == 0x62A8AB43u);
  CHECK(crc32c(inc) == 0x46DD794Eu);
  CHECK(crc32c(dec) == 0x113FDB5Cu);
  // streaming in pieces gives the same CRC
  std::string text = "The quick brown fox jumps over the lazy dog";
  CHECK(crc32c(text.data() + 10, text.size() - 10, crc32c(text.data(), 10)) == crc32c(text));
}

TEST_CASE("tensorboard: protobuf varints") {
  std::string s;
  kiln::io::pb::put_varint(s, 300);
  CHECK(s == std::string("\xac\x02", 2));  // the protobuf documentation's example
  s.clear();
  kiln::io::pb::put_int64(s, 2, -1);  // negative int64: ten bytes
  CHECK(s.size() == 11);
}

TEST_CASE("tensorboard: the writer's file parses back record by record") {
  fs::path dir = scratch("tensorboard");
  std::string path;
  {
    kiln::io::TensorBoardWriter w((dir / "run").string());
    path = w.path();
    CHECK(fs::path(path).filename().string().rfind("events.out.tfevents.", 0) == 0);
    write_reference_scenario(w);
  }
  std::vector<Event> ev = read_events(slurp(path));
  REQUIRE(ev.size() == 1 + 100 + 10 + 2);
  CHECK(ev[0].file_version == "brain.Event:2");
  CHECK(ev[0].values.empty());
  CHECK(ev[0].wall_time > 1.6e9);
  std::map<std::string, std::vector<std::pair<int64_t, float>>> series;
  for (size_t i = 1; i < ev.size(); ++i) {
    CHECK(ev[i].file_version.empty());
    for (auto& v : ev[i].values) series[v.tag].push_back({ev[i].step, v.value});
  }
  REQUIRE(series["train/loss"].size() == 100);
  for (int s = 0; s < 100; ++s) {
    CHECK(series["train/loss"][s].first == s);
    CHECK(series["train/loss"][s].second == 3.5f - float(s) / 64.0f);
  }
  REQUIRE(series["train/lr"].size() == 10);
  CHECK(series["train/lr"][3].first == 30);
  CHECK(series["train/lr"][3].second == 30.0f / 16384.0f);
  CHECK(series["eval/loss"][9].second == 4.0f - 90.0f / 32.0f);
  REQUIRE(series["big/step"].size() == 1);
  CHECK(series["big/step"][0].first == 1099511627776L);
  CHECK(series["big/step"][0].second == 1.25f);
  CHECK(series["unicode/\xc3\xbcnits"][0].second == -0.5f);
  CHECK(ev[1].wall_time == 1700000000.0);

  // A second writer in the same second and directory gets its own file.
  {
    kiln::io::TensorBoardWriter a((dir / "two").string()), b((dir / "two").string());
    CHECK(a.path() != b.path());
  }
  if (const char* keep = std::getenv("KILN_TENSORBOARD_KEEP")) {
    fs::create_directories(keep);
    kiln::io::TensorBoardWriter w(keep);
    write_reference_scenario(w);
    MESSAGE("kept reference event file " << w.path());
  }
  fs::remove_all(dir);
}

TEST_CASE("tensorboard: unwritable directory is a kiln::Error naming it") {
  CHECK_THROWS_WITH_AS(kiln::io::TensorBoardWriter("/proc/kiln_no_such/run"), doctest::Contains("/proc/kiln_no_such/run"),
                       kiln::Error);
}

TEST_CASE("jsonl: one line per record, append or truncate") {
  fs::path dir = scratch("jsonl");
  const std::string p = (dir / "metrics.jsonl").string();
  {
    kiln::io::JsonlWriter w(p, false);
    w.write({{"step", 1}, {"loss", 2.5}});
    // visible before the writer closes: every line is handed to the OS as it is written
    CHECK(slurp(p) == "{\"loss\":2.5,\"step\":1}\n");  // nlohmann::json orders keys
    w.write({{"step", 2}, {"loss", std::nan("")}, {"note", "a\nb"}});
  }
  CHECK(slurp(p) == "{\"loss\":2.5,\"step\":1}\n{\"loss\":null,\"note\":\"a\\nb\",\"step\":2}\n");
  { kiln::io::JsonlWriter w(p, true); w.write({{"step", 3}}); }
  std::ifstream f(p);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    CHECK(j["step"] == ++n);
  }
  CHECK(n == 3);
  { kiln::io::JsonlWriter w(p, false); w.write({{"step", 9}}); }
  CHECK(slurp(p) == "{\"step\":9}\n");
  CHECK_THROWS_WITH_AS(kiln::io::JsonlWriter((dir / "no/such/dir.jsonl").string(), true),
                       doctest::Contains("no/such/dir.jsonl: cannot open JSONL file"), kiln::Error);
  fs::remove_all(dir);
}
