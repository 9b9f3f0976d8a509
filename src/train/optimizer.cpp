// src/train/optimizer.cpp: the no-decay patterns of kiln/train/optimizer.hpp, compiled once for every trainer.
#include "kiln/train/optimizer.hpp"

#include <regex>

namespace kiln {

namespace {
std::vector<std::regex> compile_patterns(const std::vector<std::string>& no_decay) {
  std::vector<std::regex> patterns;
  for (const auto& p : no_decay) {
    try {
      patterns.emplace_back(p);
    } catch (const std::regex_error& e) {
      KILN_FAIL("--no-decay pattern '", p, "' is not a valid regular expression: ", e.what());
    }
  }
  return patterns;
}

bool matches_any(const std::string& name, const std::vector<std::regex>& patterns) {
  for (const auto& re : patterns)
    if (std::regex_search(name, re)) return true;
  return false;
}
}  // namespace

std::vector<plan::DecayRange> decay_ranges(std::span<const plan::ParamEntry> table, size_t total,
                                           const std::vector<std::string>& no_decay) {
  KILN_CHECK(!table.empty(), "decay_ranges: the parameter table is empty");
  const auto patterns = compile_patterns(no_decay);
  std::vector<plan::DecayRange> out;
  for (const auto& e : table) {
    const bool nd = matches_any(std::string(e.name.view()), patterns);
    if (!out.empty() && out.back().decay == !nd) {
      out.back().end = e.offset + e.count();
      continue;
    }
    if (!out.empty()) out.back().end = e.offset;  // padding before this tensor joins the previous range
    out.push_back({out.empty() ? 0 : e.offset, e.offset + e.count(), !nd});
  }
  out.back().end = total;
  return out;
}

std::function<bool(const std::string& name)> decays(const std::vector<std::string>& no_decay) {
  return [patterns = compile_patterns(no_decay)](const std::string& name) { return !matches_any(name, patterns); };
}

}  // namespace kiln
