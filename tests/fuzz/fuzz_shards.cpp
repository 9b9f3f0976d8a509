// tests/fuzz/fuzz_shards.cpp: libFuzzer target for the shard and Megatron parsers (from memory, no files).
//
// Input layout: byte 0 = mode % 4, then u32 LE length A and A bytes (the first part), then:
//   mode 0 / 1: first part = .ds.index, rest = .ds, no metadata, 2- / 4-byte tokens
//   mode 2:     u32 LE length B and B bytes of metadata (Kiln's JSON or datatrove's text), first part = .ds.index,
//               rest = .ds
//   mode 3:     first part = Megatron .idx, rest = .bin (vocab 50000)
// Every input must either parse, and then read every document in bounds, or throw kiln::Error. Anything else (a crash,
// an ASan report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kiln/data/megatron.hpp"
#include "kiln/data/shards.hpp"

namespace {

bool take(std::span<const std::byte>& in, size_t n, std::span<const std::byte>& out) {
  if (in.size() < n) return false;
  out = in.first(n);
  in = in.subspan(n);
  return true;
}

bool take_part(std::span<const std::byte>& in, std::span<const std::byte>& out) {
  std::span<const std::byte> len;
  if (!take(in, 4, len)) return false;
  uint32_t n;
  std::memcpy(&n, len.data(), 4);
  return take(in, std::min<size_t>(n, in.size()), out);
}

void read_all(const kiln::data::DocumentSource& s) {
  std::vector<int32_t> doc;
  uint64_t total = 0;
  for (uint64_t i = 0; i < s.size() && i < 4096; ++i) {
    s.copy_document(i, doc);
    total += doc.size();
  }
  if (s.size() <= 4096 && total != s.total_tokens()) __builtin_trap();  // documents must tile the data
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size), first, meta;
  if (in.empty()) return 0;
  const int mode = int(in[0]) % 4;
  in = in.subspan(1);
  if (!take_part(in, first)) return 0;
  try {
    if (mode == 3) {
      kiln::data::MegatronView v(first, in, "fuzz", 50000);
      read_all(v);
      return 0;
    }
    kiln::data::AnyShardMetadata md;
    if (mode == 2) {
      if (!take_part(in, meta)) return 0;
      md = kiln::data::AnyShardMetadata::parse(
          std::string_view(reinterpret_cast<const char*>(meta.data()), meta.size()), "fuzz.ds.metadata");
    }
    kiln::data::ShardView v(in, first, md, mode == 2 ? 0 : (mode == 0 ? 2 : 4), "fuzz");
    read_all(v);
  } catch (const kiln::Error&) {
  }
  return 0;
}
