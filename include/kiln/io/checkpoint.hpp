// kiln/io/checkpoint.hpp: training checkpoints that a crash, a full disk or a flipped bit cannot make a run resume
// from silently.
//
// Layout: <root>/step_<%08d step>/
//   <blob>.safetensors   named tensor sets (e.g. parameters, adam_m, adam_v: F32 with HF names via param_views<M>)
//   state.json           {"step", "schedule_step", "tokens_seen", "data_state_hex", "config", "extra"}
//   manifest.json        {"format": "kiln-checkpoint/1", "step": n, "checksum": "xxh64",
//                         "files": {"<name>": {"size": bytes, "xxh64": "<16 hex digits>"}, ...}}  (written last)
//
// Writing: everything goes into <root>/.tmp.step_<n>.<pid>/; each file is written to a temp name, fsync'd and renamed
// (write_safetensors / write_text_atomic) and the directory fsync'd; the manifest is computed by reading the files
// back (so it vouches for what reached the file system), written last; then the directory is renamed to step_<n> and
// <root> fsync'd. Only after that are older checkpoints pruned to the newest `keep_last`. One writer per root: stray
// `.tmp.step_*` directories of an interrupted writer are removed (with a warning) when the next checkpoint is written.
//
// Checksum: XXH64 (Yann Collet's xxHash, 64-bit variant, seed 0) from Debian's libxxhash, tested against the
// reference implementation's values. It is a fast non-cryptographic hash (about 10 GB/s): it detects truncation and
// random corruption, not tampering.
//
// Finding: find_latest_valid(root) returns the newest step_<n> whose manifest verifies (every listed file present with
// its size and checksum, state.json and every blob parse), reporting each skipped checkpoint and stray temp
// directory through the warning callback; it never throws for a bad checkpoint.
#pragma once
#include <xxhash.h>

#include <memory>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/core/file.hpp"
#include "kiln/core/json.hpp"
#include "kiln/io/safetensors.hpp"

namespace kiln::io {

// ---- XXH64 (Debian's libxxhash) ------------------------------------------------------------------
// Streaming XXH64 of a sequence of byte ranges.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0) : s_(XXH64_createState()) {
    KILN_CHECK(s_ && XXH64_reset(s_.get(), seed) == XXH_OK, "xxh64: cannot make a hash state (out of memory)");
  }
  void update(const void* data, size_t n) { XXH64_update(s_.get(), data, n); }
  uint64_t digest() const { return XXH64_digest(s_.get()); }

 private:
  struct Free {
    void operator()(XXH64_state_t* p) const { XXH64_freeState(p); }
  };
  std::unique_ptr<XXH64_state_t, Free> s_;
};

inline uint64_t xxh64(const void* data, size_t n, uint64_t seed = 0) { return XXH64(data, n, seed); }

inline std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// XXH64 and size of a file, read in 1 MiB pieces. Throws kiln::Error naming the file.
struct FileDigest {
  uint64_t size = 0;
  uint64_t xxh64 = 0;
};
inline FileDigest digest_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, path, ": cannot open: ", core::errno_text());
  Xxh64 h;
  std::vector<char> buf(1 << 20);
  FileDigest d;
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      std::string e = core::errno_text();
      ::close(fd);
      KILN_FAIL(path, ": read failed: ", e);
    }
    if (r == 0) break;
    h.update(buf.data(), size_t(r));
    d.size += uint64_t(r);
  }
  ::close(fd);
  d.xxh64 = h.digest();
  return d;
}

// ---- hex bytes ----------------------------------------------------------------------------------
inline std::string to_hex(const std::vector<uint8_t>& b) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (uint8_t c : b) {
    s.push_back(digits[c >> 4]);
    s.push_back(digits[c & 15]);
  }
  return s;
}
inline std::optional<std::vector<uint8_t>> from_hex(std::string_view s) {
  if (s.size() % 2) return std::nullopt;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<uint8_t> b(s.size() / 2);
  for (size_t i = 0; i < b.size(); ++i) {
    int hi = nib(s[2 * i]), lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    b[i] = uint8_t(hi * 16 + lo);
  }
  return b;
}

// ---- checkpoint contents ------------------------------------------------------------------------

// Everything besides tensors that a resumed run needs.
struct CheckpointState {
  int64_t step = 0;           // optimizer steps completed
  int64_t schedule_step = 0;  // position in the LR schedule (equals step unless a run re-warms)
  int64_t tokens_seen = 0;
  std::vector<uint8_t> data_state;  // the data loader's opaque state (hex in state.json)
  nlohmann::json config = nlohmann::json::object();  // echo of the run's configuration
  nlohmann::json extra = nlohmann::json::object();   // anything else the trainer wants back
  bool operator==(const CheckpointState&) const = default;
};

// A named tensor set, stored as <name>.safetensors. Names: [A-Za-z0-9_-]+ (e.g. "parameters", "adam_m", "adam_v").
struct CheckpointBlob {
  std::string name;
  std::vector<TensorView> tensors;
  std::map<std::string, std::string> metadata = {};  // the file's __metadata__ (kiln_checkpoint_step is added)
};

struct CheckpointInfo {
  std::filesystem::path dir;
  int64_t step = 0;
};

using CheckpointWarning = std::function<void(const std::string&)>;

enum class Verify {
  sizes,      // every listed file present with its size; state.json and blob headers parse (cheap)
  checksums,  // and every file's XXH64 matches (reads every byte)
};

inline constexpr const char* kCheckpointFormat = "kiln-checkpoint/1";

namespace detail {

inline std::string checkpoint_dir_name(int64_t step) {
  char b[40];
  std::snprintf(b, sizeof b, "step_%08lld", static_cast<long long>(step));
  return b;
}

// step_<digits> -> step; anything else -> nullopt.
inline std::optional<int64_t> checkpoint_step_of(std::string_view name) {
  if (name.size() < 6 || name.substr(0, 5) != "step_") return std::nullopt;
  int64_t v = 0;
  for (char c : name.substr(5)) {
    if (c < '0' || c > '9' || v > (INT64_MAX - 9) / 10) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

inline bool valid_blob_name(std::string_view n) {
  if (n.empty() || n.size() > 100 || n == "state" || n == "manifest") return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return false;
  return true;
}

using core::fsync_dir;  // kiln/core/file.hpp

inline nlohmann::json state_json(const CheckpointState& s) {
  return {{"step", s.step},
          {"schedule_step", s.schedule_step},
          {"tokens_seen", s.tokens_seen},
          {"data_state_hex", to_hex(s.data_state)},
          {"config", s.config},
          {"extra", s.extra}};
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), path, ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline nlohmann::json parse_json_file(const std::string& path) {
  return core::parse_json(read_text(path), path);
}

inline CheckpointState parse_state(const std::string& path) {
  nlohmann::json j = parse_json_file(path);
  KILN_CHECK(j.is_object(), path, ": expected a JSON object, got ", j.type_name());
  CheckpointState s;
  auto integer = [&](const char* k) {
    auto it = j.find(k);
    KILN_CHECK(it != j.end() && it->is_number_integer(), path, ": field ", k, " missing or not an integer");
    return it->get<int64_t>();
  };
  auto bytes = [&](const char* k) {
    auto it = j.find(k);
    KILN_CHECK(it != j.end() && it->is_string(), path, ": field ", k, " missing or not a string of hex digits");
    auto b = from_hex(it->get<std::string>());
    KILN_CHECK(b, path, ": field ", k, " is not an even-length string of hex digits");
    return *b;
  };
  s.step = integer("step");
  s.schedule_step = integer("schedule_step");
  s.tokens_seen = integer("tokens_seen");
  s.data_state = bytes("data_state_hex");
  // (older checkpoints also hold rng_state_hex, never filled: initialisation and data order are counter-based)
  if (auto it = j.find("config"); it != j.end()) s.config = *it;
  if (auto it = j.find("extra"); it != j.end()) s.extra = *it;
  return s;
}

}  // namespace detail

// What is wrong with checkpoint directory `dir`, or nullopt when it verifies. Never throws for bad contents.
inline std::optional<std::string> checkpoint_problem(const std::filesystem::path& dir, Verify verify = Verify::checksums) {
  namespace fs = std::filesystem;
  try {
    const auto step = detail::checkpoint_step_of(dir.filename().string());
    if (!step) return dir.string() + ": not a checkpoint directory name (expected step_<digits>)";
    const fs::path mp = dir / "manifest.json";
    std::error_code ec;
    if (!fs::exists(mp, ec)) return mp.string() + ": missing (the write did not finish, or the file was deleted)";
    nlohmann::json m = detail::parse_json_file(mp.string());
    if (!m.is_object()) return mp.string() + ": expected a JSON object";
    if (m.value("format", std::string()) != kCheckpointFormat)
      return mp.string() + ": field format is not \"" + kCheckpointFormat + "\"";
    if (!m.contains("step") || !m["step"].is_number_integer() || m["step"].get<int64_t>() != *step)
      return mp.string() + ": field step does not match the directory name (expected " + std::to_string(*step) + ")";
    auto files = m.find("files");
    if (files == m.end() || !files->is_object() || !files->contains("state.json"))
      return mp.string() + ": field files missing, not an object, or without state.json";
    for (auto it = files->begin(); it != files->end(); ++it) {
      const std::string& name = it.key();
      if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
        return mp.string() + ": files[\"" + name + "\"] is not a plain file name";
      const fs::path fp = dir / name;
      const auto& e = it.value();
      if (!e.is_object() || !e.contains("size") || !e["size"].is_number_unsigned() || !e.contains("xxh64") ||
          !e["xxh64"].is_string())
        return mp.string() + ": files[\"" + name + "\"] must be {\"size\": bytes, \"xxh64\": hex}";
      if (!fs::is_regular_file(fp, ec)) return fp.string() + ": missing (listed in the manifest)";
      const uint64_t want = e["size"].get<uint64_t>();
      const uint64_t have = fs::file_size(fp, ec);
      if (ec) return fp.string() + ": cannot stat: " + ec.message();
      if (have != want)
        return fp.string() + ": size " + std::to_string(have) + " bytes, manifest says " + std::to_string(want) +
               (have < want ? " (truncated)" : "");
      if (verify == Verify::checksums) {
        const std::string got = hex64(digest_file(fp.string()).xxh64);
        if (got != e["xxh64"].get<std::string>())
          return fp.string() + ": xxh64 " + got + ", manifest says " + e["xxh64"].get<std::string>() +
                 " (the file is corrupt)";
      }
      if (fp.extension() == ".safetensors") Safetensors check(fp.string());  // header and offsets validate
    }
    CheckpointState s = detail::parse_state((dir / "state.json").string());
    if (s.step != *step)
      return (dir / "state.json").string() + ": field step " + std::to_string(s.step) +
             " does not match the directory name (expected " + std::to_string(*step) + ")";
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
}

// Checkpoints under root (step_<n> directories, whatever their state), oldest first.
inline std::vector<CheckpointInfo> list_checkpoints(const std::string& root) {
  namespace fs = std::filesystem;
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    if (auto s = detail::checkpoint_step_of(it->path().filename().string())) out.push_back({it->path(), *s});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

// The newest checkpoint under `root` that verifies; each one skipped, and each stray temp directory, is reported
// through `warn` with the problem. nullopt when there is none (or root does not exist).
inline std::optional<CheckpointInfo> find_latest_valid(const std::string& root, const CheckpointWarning& warn = {},
                                                       Verify verify = Verify::checksums) {
  namespace fs = std::filesystem;
  auto say = [&](const std::string& s) {
    if (warn) warn(s);
  };
  try {
    std::error_code ec;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().filename().string().rfind(".tmp.step_", 0) == 0)
        say("ignoring " + it->path().string() + ": partial checkpoint left by an interrupted write");
    auto all = list_checkpoints(root);
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      if (auto problem = checkpoint_problem(it->dir, verify)) {
        say("skipping checkpoint " + it->dir.string() + ": " + *problem);
        continue;
      }
      return *it;
    }
  } catch (const std::exception& e) {
    say(root + ": " + e.what());
  }
  return std::nullopt;
}

// Writing in three parts, so that several processes can write one checkpoint (ZeRO-1: each rank its shard of the
// optimizer state): begin_checkpoint makes the temporary directory (one process: a checkpoint root has one
// writer); any process then writes blobs into it (write_blob); once all are written, finish_checkpoint writes
// state.json and the manifest of every file there (read back from the file system), renames the directory into
// place and prunes. write_checkpoint does the three in one process.
inline std::filesystem::path begin_checkpoint(const std::string& root, int64_t step, const CheckpointWarning& warn = {}) {
  namespace fs = std::filesystem;
  KILN_CHECK(step >= 0, root, ": checkpoint step ", step, " is negative");
  std::error_code ec;
  fs::create_directories(root, ec);
  KILN_CHECK(!ec, root, ": cannot create checkpoint root: ", ec.message());
  const fs::path r(root);
  // One writer per root: temp directories here are leftovers of an interrupted write.
  for (fs::directory_iterator it(r, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.rfind(".tmp.step_", 0) == 0 || n.rfind(".old.step_", 0) == 0) {
      if (warn) warn("removing " + it->path().string() + ": partial checkpoint left by an interrupted write");
      fs::remove_all(it->path(), ec);
    }
  }
  const fs::path tmp = r / (".tmp." + detail::checkpoint_dir_name(step) + "." + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  KILN_CHECK(!ec, tmp.string(), ": cannot create: ", ec.message());
  return tmp;
}

inline void write_blob(const std::filesystem::path& tmp, const CheckpointBlob& b, int64_t step) {
  KILN_CHECK(detail::valid_blob_name(b.name), tmp.string(), ": checkpoint blob name \"", b.name,
             "\" must be 1-100 characters of [A-Za-z0-9_-] and not state/manifest");
  std::map<std::string, std::string> meta = b.metadata;
  meta["kiln_checkpoint_step"] = std::to_string(step);
  write_safetensors((tmp / (b.name + ".safetensors")).string(), b.tensors, meta);
}

// `expect`: blob files other processes wrote, which must be there (a listing of a network file system may lag).
inline CheckpointInfo finish_checkpoint(const std::string& root, const std::filesystem::path& tmp,
                                        const CheckpointState& state, int keep_last, const CheckpointWarning& warn = {},
                                        const std::vector<std::string>& expect = {}) {
  namespace fs = std::filesystem;
  KILN_CHECK(keep_last >= 1, root, ": keep_last = ", keep_last, ", expected at least 1");
  auto say = [&](const std::string& s) {
    if (warn) warn(s);
  };
  std::error_code ec;
  const fs::path r(root);
  const std::string name = detail::checkpoint_dir_name(state.step);
  const fs::path final_dir = r / name;
  try {
    core::write_text_atomic((tmp / "state.json").string(), detail::state_json(state).dump(2) + "\n");
    std::vector<std::string> files;  // every blob written here, by whichever process, and state.json
    for (fs::directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().extension() == ".safetensors") files.push_back(it->path().filename().string());
    KILN_CHECK(!ec, tmp.string(), ": cannot list: ", ec.message());
    for (const std::string& f : expect)
      if (std::find(files.begin(), files.end(), f) == files.end()) {
        KILN_CHECK(fs::is_regular_file(tmp / f, ec), (tmp / f).string(), ": missing (another rank was to write it)");
        files.push_back(f);
      }
    std::sort(files.begin(), files.end());
    files.push_back("state.json");
    nlohmann::ordered_json m;
    m["format"] = kCheckpointFormat;
    m["step"] = state.step;
    m["checksum"] = "xxh64";
    nlohmann::ordered_json fl = nlohmann::ordered_json::object();
    for (const std::string& f : files) {
      FileDigest d = digest_file((tmp / f).string());
      fl[f] = {{"size", d.size}, {"xxh64", hex64(d.xxh64)}};
    }
    m["files"] = fl;
    core::write_text_atomic((tmp / "manifest.json").string(), m.dump(2) + "\n");  // fsyncs tmp too

    std::optional<fs::path> aside;
    if (fs::exists(final_dir, ec)) {
      aside = r / (".old." + name + "." + std::to_string(::getpid()));
      fs::remove_all(*aside, ec);
      KILN_CHECK(::rename(final_dir.c_str(), aside->c_str()) == 0, final_dir.string(), ": cannot move the old checkpoint aside: ",
                 core::errno_text());
    }
    KILN_CHECK(::rename(tmp.c_str(), final_dir.c_str()) == 0, tmp.string(), ": rename to ", final_dir.string(),
               " failed: ", core::errno_text());
    detail::fsync_dir(r);
    if (aside) fs::remove_all(*aside, ec);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }

  // Prune: keep the new one and the newest keep_last - 1 older ones. Newer ones (an abandoned run's future, e.g.
  // after resuming from an older checkpoint) are left alone, with a warning.
  auto all = list_checkpoints(root);
  int kept_older = 0;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->step > state.step) {
      say("leaving " + it->dir.string() + ": newer than the checkpoint just written (step " +
          std::to_string(state.step) + ")");
    } else if (it->step < state.step) {
      if (++kept_older >= keep_last) {
        fs::remove_all(it->dir, ec);
        if (ec) say("cannot remove old checkpoint " + it->dir.string() + ": " + ec.message());
      }
    }
  }
  return {final_dir, state.step};
}

// Writes a checkpoint of `state` (directory step_<state.step>) and prunes older ones to the newest `keep_last`.
// Replaces an existing step_<n> of the same step (renamed aside first, removed after the new one is in place).
inline CheckpointInfo write_checkpoint(const std::string& root, const CheckpointState& state,
                                       const std::vector<CheckpointBlob>& blobs, int keep_last,
                                       const CheckpointWarning& warn = {}) {
  KILN_CHECK(keep_last >= 1, root, ": keep_last = ", keep_last, ", expected at least 1");
  for (size_t i = 0; i < blobs.size(); ++i) {
    KILN_CHECK(detail::valid_blob_name(blobs[i].name), root, ": checkpoint blob name \"", blobs[i].name,
               "\" must be 1-100 characters of [A-Za-z0-9_-] and not state/manifest");
    for (size_t k = 0; k < i; ++k)
      KILN_CHECK(blobs[k].name != blobs[i].name, root, ": checkpoint blob \"", blobs[i].name, "\" given twice");
  }
  const std::filesystem::path tmp = begin_checkpoint(root, state.step, warn);
  try {
    for (const CheckpointBlob& b : blobs) write_blob(tmp, b, state.step);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);
    throw;
  }
  return finish_checkpoint(root, tmp, state, keep_last, warn);
}

// A verified checkpoint, opened for reading. Throws kiln::Error naming the problem when it does not verify.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& dir, Verify verify = Verify::checksums) : dir_(dir) {
    if (auto problem = checkpoint_problem(dir, verify)) KILN_FAIL("checkpoint ", dir.string(), " is not valid: ", *problem);
    state_ = detail::parse_state((dir / "state.json").string());
    nlohmann::json m = detail::parse_json_file((dir / "manifest.json").string());
    for (auto it = m["files"].begin(); it != m["files"].end(); ++it) {
      const std::string& f = it.key();
      const std::string ext = ".safetensors";
      if (f.size() > ext.size() && f.compare(f.size() - ext.size(), ext.size(), ext) == 0)
        blobs_.emplace(f.substr(0, f.size() - ext.size()), std::make_unique<Safetensors>((dir / f).string()));
    }
  }
  explicit Checkpoint(const CheckpointInfo& info, Verify verify = Verify::checksums) : Checkpoint(info.dir, verify) {}

  const std::filesystem::path& dir() const { return dir_; }
  int64_t step() const { return state_.step; }
  const CheckpointState& state() const { return state_; }
  std::vector<std::string> blob_names() const {
    std::vector<std::string> n;
    for (const auto& [k, v] : blobs_) n.push_back(k);
    return n;
  }
  bool has_blob(std::string_view name) const { return blobs_.count(std::string(name)) != 0; }
  // The tensors of blob `name` (use with load_params<M>(ckpt.blob("parameters"), buffer, origin)).
  const Safetensors& blob(std::string_view name) const {
    auto it = blobs_.find(std::string(name));
    if (it == blobs_.end()) {
      std::string have;
      for (const auto& [k, v] : blobs_) have += (have.empty() ? "" : ", ") + k;
      KILN_FAIL("checkpoint ", dir_.string(), ": no blob named ", name, " (it has: ", have, ")");
    }
    return *it->second;
  }

 private:
  std::filesystem::path dir_;
  CheckpointState state_;
  std::map<std::string, std::unique_ptr<Safetensors>> blobs_;
};

}  // namespace kiln::io
