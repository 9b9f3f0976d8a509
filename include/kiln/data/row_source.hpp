// kiln/data/row_source.hpp: what the trainer reads: an endless stream of packed rows, whose position is a small
// value a checkpoint stores. Implemented by the byte-level packer here (bytes.hpp) and by the shard mixture loader
// (rows.hpp: MixedShards over loader.hpp), which the trainer's translation unit does not need to include.
//   next(B, T, ...) fills B rows of T: tokens, targets (next tokens; -1 = no loss), positions, doc_start.
#pragma once
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/data/bytes.hpp"

namespace kiln::data {

class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual void next(int B, int T, int32_t* tokens, int32_t* targets, int32_t* positions, int32_t* doc_start) = 0;
  virtual std::vector<uint8_t> state() const = 0;
  virtual void restore(std::span<const uint8_t> state) = 0;
  virtual std::string where() const = 0;  // for log lines: "epoch 1", "stage 2"
};

// Byte-level documents in memory (the fortunes corpus before a tokenizer).
class PackedBytes final : public RowSource {
 public:
  PackedBytes(const std::vector<std::vector<int32_t>>* docs, uint64_t seed, bool shuffle) : p_(docs, seed, shuffle) {}
  void next(int B, int T, int32_t* tk, int32_t* tg, int32_t* ps, int32_t* ds) override { p_.next(B, T, tk, tg, ps, ds); }
  std::vector<uint8_t> state() const override {
    const PackerState& s = p_.state();
    std::vector<uint8_t> b(sizeof s);
    std::memcpy(b.data(), &s, sizeof s);
    return b;
  }
  void restore(std::span<const uint8_t> b) override {
    KILN_CHECK(b.size() == sizeof(PackerState), "data state holds ", b.size(), " bytes, expected ", sizeof(PackerState),
               " (a byte-level packer's state)");
    PackerState s;
    std::memcpy(&s, b.data(), sizeof s);
    p_.restore(s);
  }
  std::string where() const override { return "epoch " + std::to_string(p_.epoch()); }

 private:
  Packer p_;
};

}  // namespace kiln::data
