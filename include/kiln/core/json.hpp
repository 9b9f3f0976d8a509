// kiln/core/json.hpp: JSON text into nlohmann::json, refusing a key given twice in one object.
//   nlohmann::json::parse keeps one of two equal keys silently: a tensor name twice in a safetensors header then reads
//   as a hole in the data, a config field twice hides which value counts. Every file Kiln reads goes through here:
//     parse_json(text, origin)  the DOM, or a kiln::Error "<origin>: not valid JSON: ..." or
//                               "<origin>: key "k" is given twice in <where>" (where: "the top-level object",
//                               "object weight_map", "object layers[3].attn", ...)
//     JsonDom                   the DOM builder behind it, for SAX readers that look at values while they arrive
//                               (tokenizer.json checks merges as it reads them) or word the duplicate message
//                               themselves (a safetensors header names the tensor).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/core/error.hpp"

namespace kiln::core {

// Builds a DOM from SAX events. key() refuses a key the innermost object already holds.
class JsonDom {
 public:
  using json = nlohmann::json;
  explicit JsonDom(json& root) : root_(&root) {}

  // Places a scalar (or an empty container) as the next value; returns where it lives (stable while it is open).
  json* put(json&& v) {
    if (open_.empty()) {
      *root_ = std::move(v);
      return root_;
    }
    Frame& f = open_.back();
    if (f.node->is_array()) {
      auto& a = f.node->get_ref<json::array_t&>();
      a.push_back(std::move(v));
      return &a.back();
    }
    json& slot = (*f.node)[f.key];
    slot = std::move(v);
    return &slot;
  }
  void start(json&& container) { open_.push_back({put(std::move(container)), {}}); }
  const json* end() {
    const json* closed = open_.back().node;
    open_.pop_back();
    return closed;
  }
  // The key of the next value in the innermost object; false (nothing changed) when that object holds it already.
  bool key(std::string k) {
    Frame& f = open_.back();
    if (f.node->contains(k)) return false;
    f.key = std::move(k);
    return true;
  }

  size_t depth() const { return open_.size(); }  // open containers; 1: inside the top-level value
  // The key being read in the object at `level` (0: the top level).
  const std::string& key_at(size_t level) const { return open_[level].key; }
  // The innermost open container as a path: "" at the top level, else "weight_map", "layers[3].attn", ...
  std::string path() const {
    std::string p;
    for (size_t i = 0; i + 1 < open_.size(); ++i) {
      const json& n = *open_[i].node;
      if (n.is_array()) p += "[" + std::to_string(n.size() - 1) + "]";
      else p += (p.empty() ? "" : ".") + open_[i].key;
    }
    return p;
  }
  std::string where() const {
    const std::string p = path();
    return p.empty() ? "the top-level object" : "object " + p;
  }

 private:
  struct Frame {
    json* node;
    std::string key;  // the key of the value being read, when node is an object
  };
  json* root_;
  std::vector<Frame> open_;  // containers being read, innermost last
};

// A SAX handler that builds the whole DOM; a duplicate key calls on_duplicate (which throws), or fails with the
// default message.
class StrictJsonReader {
 public:
  using json = nlohmann::json;
  using OnDuplicate = std::function<void(const JsonDom&, const std::string& key)>;
  StrictJsonReader(json& root, std::string origin, OnDuplicate on_duplicate = {})
      : dom_(root), origin_(std::move(origin)), on_duplicate_(std::move(on_duplicate)) {}

  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return put(json(v)); }
  bool string(json::string_t& v) { return put(json(std::move(v))); }
  bool binary(json::binary_t& v) { return put(json(json::binary_t(std::move(v)))); }
  bool start_object(std::size_t) { return start(json::object()); }
  bool start_array(std::size_t) { return start(json::array()); }
  bool end_object() { return end(); }
  bool end_array() { return end(); }
  bool key(json::string_t& k) {
    if (dom_.key(k)) return true;
    if (on_duplicate_) on_duplicate_(dom_, k);
    KILN_FAIL(origin_, ": key \"", k, "\" is given twice in ", dom_.where());
  }
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& e) {
    throw e;  // a json::exception: reported by parse_json as invalid JSON
  }

 private:
  bool put(json&& v) {
    dom_.put(std::move(v));
    return true;
  }
  bool start(json&& v) {
    dom_.start(std::move(v));
    return true;
  }
  bool end() {
    dom_.end();
    return true;
  }
  JsonDom dom_;
  std::string origin_;
  OnDuplicate on_duplicate_;
};

// The DOM of `text`; `origin` (a path, "<fuzz input>") names it in errors.
inline nlohmann::json parse_json(std::string_view text, const std::string& origin,
                                 StrictJsonReader::OnDuplicate on_duplicate = {}) {
  nlohmann::json j;
  StrictJsonReader reader(j, origin, std::move(on_duplicate));
  try {
    nlohmann::json::sax_parse(text.begin(), text.end(), &reader);
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL(origin, ": not valid JSON: ", e.what());
  }
  return j;
}

}  // namespace kiln::core
