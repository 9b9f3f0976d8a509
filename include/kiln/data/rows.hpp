// kiln/data/rows.hpp: the trainer's row streams (row_source.hpp) over token shards: MixedShards reads the mixture
// loader (loader.hpp). The byte-level PackedBytes is in row_source.hpp, which the trainer includes without the loader.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kiln/data/loader.hpp"
#include "kiln/data/row_source.hpp"

namespace kiln::data {

// Token shards mixed by named sources and stages (loader.hpp).
class MixedShards final : public RowSource {
 public:
  explicit MixedShards(std::unique_ptr<Loader> l) : l_(std::move(l)) {}
  void next(int B, int T, int32_t* tk, int32_t* tg, int32_t* ps, int32_t* ds) override { l_->next(B, T, tk, tg, ps, ds); }
  std::vector<uint8_t> state() const override {
    const auto b = l_->state().to_bytes();
    std::vector<uint8_t> out(b.size());
    std::memcpy(out.data(), b.data(), b.size());
    return out;
  }
  void restore(std::span<const uint8_t> b) override {
    l_->restore(LoaderState::from_bytes(std::as_bytes(b)));
  }
  std::string where() const override { return "stage " + std::to_string(l_->stage() + 1); }
  Loader& loader() { return *l_; }

 private:
  std::unique_ptr<Loader> l_;
};

}  // namespace kiln::data
