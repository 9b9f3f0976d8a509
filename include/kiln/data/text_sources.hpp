// kiln/data/text_sources.hpp: raw text inputs as a stream of documents, read with bounded memory.
//
// Formats (per file; `TextOptions::format` forces one, `auto` decides per file):
//   jsonl    one JSON object per line, the document is the string field `field` ("text"); blank lines skipped.
//            auto: extension .jsonl or .ndjson.
//   fortune  documents separated by lines holding just `%` (strfile format, /usr/share/games/fortunes); trailing
//            newlines and spaces of a document are dropped, empty documents skipped.
//            auto: a file whose first 64 KiB hold a line that is just `%`.
//   text     the whole file is one document, or with `split_lines` each non-empty line is one (without its newline).
// Directories are walked (not recursively; entries sorted by name); strfile indexes (`.dat`), the `.u8` links of the
// fortunes package, hidden files and symlinks inside directories are skipped. Memory: one line, or one document for
// whole-file / fortune documents.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/json.hpp"
#include "kiln/data/split.hpp"  // held_out_document, for the readers' users

namespace kiln::data {

struct TextOptions {
  std::string format = "auto";  // auto | text | jsonl | fortune
  std::string field = "text";   // jsonl field holding the document
  bool split_lines = false;     // text: one document per line
};

// The text files a list of paths names (files as given, directories expanded as described above).
inline std::vector<std::string> text_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> in_dir;
      for (const auto& e : fs::directory_iterator(p)) {
        const auto name = e.path().filename().string();
        const auto ext = e.path().extension().string();
        if (e.is_symlink() || !e.is_regular_file() || ext == ".dat" || ext == ".u8" || name.starts_with(".")) continue;
        in_dir.push_back(e.path().string());
      }
      std::sort(in_dir.begin(), in_dir.end());
      out.insert(out.end(), in_dir.begin(), in_dir.end());
    } else {
      KILN_CHECK(fs::is_regular_file(p, ec), "input '", p, "' is not a readable file or directory");
      out.push_back(p);
    }
  }
  return out;
}

// The format auto-detection picks for one file.
inline std::string detect_text_format(const std::string& file, const TextOptions& o) {
  if (o.format != "auto") {
    KILN_CHECK(o.format == "text" || o.format == "jsonl" || o.format == "fortune", "text format '", o.format,
               "' is not one of: auto, text, jsonl, fortune");
    return o.format;
  }
  const auto ext = std::filesystem::path(file).extension().string();
  if (ext == ".jsonl" || ext == ".ndjson") return "jsonl";
  std::ifstream in(file, std::ios::binary);
  std::string head(65536, '\0');
  in.read(head.data(), std::streamsize(head.size()));
  head.resize(size_t(in.gcount()));
  size_t pos = 0;
  while (pos < head.size()) {
    size_t e = head.find('\n', pos);
    if (e == std::string::npos) break;  // the last, possibly cut, line does not count
    std::string_view line(head.data() + pos, e - pos);
    if (line == "%" || line == "%\r") return "fortune";
    pos = e + 1;
  }
  return "text";
}

// Documents of every file in order. next(doc) replaces doc with the next document; false at the end.
class TextStream {
 public:
  TextStream(const std::vector<std::string>& paths, TextOptions o) : files_(text_files(paths)), o_(std::move(o)) {}

  bool next(std::string& doc) {
    for (;;) {
      if (!in_.is_open()) {
        if (file_ >= files_.size()) return false;
        open(files_[file_]);
      }
      if (read_document(doc)) return true;
      in_.close();
      ++file_;
    }
  }

  const std::vector<std::string>& files() const { return files_; }
  uint64_t bytes_read() const { return bytes_; }  // input bytes consumed so far (for throughput)
  const std::string& current_file() const { return files_[std::min(file_, files_.size() - 1)]; }

 private:
  void open(const std::string& f) {
    format_ = detect_text_format(f, o_);
    in_.open(f, std::ios::binary);
    KILN_CHECK(in_.is_open(), "cannot read '", f, "'");
    line_no_ = 0;
    eof_ = false;
  }

  bool getline(std::string& line) {
    if (eof_ || !std::getline(in_, line)) return false;
    ++line_no_;
    bytes_ += line.size() + (in_.eof() ? 0 : 1);
    if (in_.eof()) eof_ = true;
    return true;
  }

  bool read_document(std::string& doc) {
    std::string line;
    const std::string& f = files_[file_];
    if (format_ == "jsonl") {
      while (getline(line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const auto j = core::parse_json(line, f + ":" + std::to_string(line_no_));
        KILN_CHECK(j.is_object(), f, ":", line_no_, ": not a JSON object (one object per line expected)");
        auto it = j.find(o_.field);
        KILN_CHECK(it != j.end(), f, ":", line_no_, ": field \"", o_.field, "\" is missing");
        KILN_CHECK(it->is_string(), f, ":", line_no_, ": field \"", o_.field, "\" is not a string");
        doc = it->get<std::string>();
        return true;
      }
      return false;
    }
    if (format_ == "fortune") {
      doc.clear();
      bool any = false;
      while (getline(line)) {
        any = true;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line == "%") {
          trim(doc);
          if (!doc.empty()) return true;
          continue;
        }
        doc += line;
        doc += '\n';
      }
      trim(doc);
      return any && !doc.empty();
    }
    if (o_.split_lines) {
      while (getline(line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) {
          doc = std::move(line);
          return true;
        }
      }
      return false;
    }
    if (eof_) return false;  // whole file: one document
    doc.assign(std::istreambuf_iterator<char>(in_), std::istreambuf_iterator<char>());
    bytes_ += doc.size();
    eof_ = true;
    return !doc.empty();
  }

  static void trim(std::string& d) {
    while (!d.empty() && (d.back() == '\n' || d.back() == ' ')) d.pop_back();
  }

  std::vector<std::string> files_;
  TextOptions o_;
  size_t file_ = 0;
  std::ifstream in_;
  std::string format_;
  uint64_t line_no_ = 0, bytes_ = 0;
  bool eof_ = false;
};

}  // namespace kiln::data
