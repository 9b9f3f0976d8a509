// tests/fuzz/fuzz_hf_config.cpp: libFuzzer target for kiln::io::parse_hf_config. Any input must either parse or
// throw kiln::Error (no other exception, no crash). A config that parses must survive a round trip through the
// writer's JSON unchanged: parse(write(parse(x))) == parse(x).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kiln/io/hf_config_core.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  kiln::io::HfConfig c;
  try {
    c = kiln::io::parse_hf_config(text, "<fuzz input>");
  } catch (const kiln::Error&) {
    return 0;
  }
  const std::string again = kiln::io::hf_config_json(c).dump();
  try {
    if (!(kiln::io::parse_hf_config(again, "<round trip>") == c)) __builtin_trap();
  } catch (const kiln::Error&) {
    __builtin_trap();  // what the writer writes, the reader must read
  }
  return 0;
}
