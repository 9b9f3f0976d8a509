// tests/fuzz/fuzz_tokenizer_json.cpp: libFuzzer target for kiln::data::Tokenizer::from_json.
// The input is split at its first 0xFF byte (none: all JSON): the part before is a tokenizer.json, the part after a
// text. If the JSON loads, the text and a fixed one are encoded; every id must be below vocab_size(), and
// decode(encode(x)) must give x back when the round trip is promised: all 256 byte tokens present, no prefix space,
// no Split "Removed", no added token sharing an id with a different model token. kiln::Error is the expected
// failure of bad input; anything else (another exception, a crash, an ASan report, an abort here) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "kiln/data/tokenizer.hpp"

namespace {
bool round_trip_promised(const kiln::data::Tokenizer& t) {
  for (int b = 0; b < 256; ++b)
    if (!t.token_to_id(kiln::data::tokenizer_detail::byte_level_encode(std::string(1, char(b))))) return false;
  const nlohmann::json j = nlohmann::json::parse(t.to_json());
  const std::string pre = j["pre_tokenizer"].dump();
  if (pre.find("\"add_prefix_space\":true") != std::string::npos || pre.find("\"Removed\"") != std::string::npos)
    return false;
  for (const auto& a : j["added_tokens"])
    for (const auto& [tok, id] : j["model"]["vocab"].items())
      if (id == a["id"] && tok != a["content"].get<std::string>()) return false;
  return true;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t cut = in.find('\xFF');
  const std::string_view json = in.substr(0, cut);
  const std::string_view text =
      cut == std::string_view::npos ? std::string_view("Hello <|endoftext|> w\xC3rld 123") : in.substr(cut + 1);
  try {
    const kiln::data::Tokenizer t = kiln::data::Tokenizer::from_json(json, "<fuzz>");
    const bool promised = round_trip_promised(t);
    for (std::string_view s : {text, std::string_view(" 's DON'T \t\n\n  \xE6\x97\xA5 \xF0\x9F\x99\x82 \xFF\xFE <|im_start|>")}) {
      const auto ids = t.encode(s);
      for (int32_t id : ids)
        if (id < 0 || id >= t.vocab_size()) std::abort();
      if (promised && t.decode(ids) != s) std::abort();
      (void)t.pre_tokenize(s);
    }
    (void)t.name();
  } catch (const kiln::Error&) {
  }
  return 0;
}
