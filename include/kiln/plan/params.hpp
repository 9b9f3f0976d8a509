// kiln/plan/params.hpp: the parameter table of a model, computed by the compiler.
//
// Every parameter lives in one flat fp32 buffer (gradients and AdamW moments are buffers of the same layout).
// Order within a layer is chosen so that fused GEMMs read contiguous weights:
//   input_layernorm | q_proj k_proj v_proj (one (qkv_dim, H) matrix) | [q_norm k_norm] | o_proj
//   | post_attention_layernorm | gate_proj up_proj (one (2F, H) matrix) | down_proj
// Groups start on 64-byte boundaries; names are Hugging Face's, shapes are [out, in] like HF Linear.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kiln/core/adamw_step.hpp"
#include "kiln/model/model.hpp"

namespace kiln::plan {

inline constexpr size_t kAlignFloats = 16;  // 64 bytes
constexpr size_t align_up(size_t n, size_t a = kAlignFloats) { return (n + a - 1) / a * a; }

// A fixed-capacity string the compiler can build (HF names are at most ~50 characters).
struct Name {
  char s[64] = {};
  int n = 0;
  constexpr Name& operator+=(std::string_view t) {
    for (char c : t) s[n++] = c;
    return *this;
  }
  constexpr Name& operator+=(long v) {
    char d[20];
    int k = 0;
    do { d[k++] = char('0' + v % 10); v /= 10; } while (v);
    while (k) s[n++] = d[--k];
    return *this;
  }
  constexpr std::string_view view() const { return {s, size_t(n)}; }
};

enum class Role : uint8_t { embedding, norm, matrix, lm_head };

struct ParamEntry {
  Name name;
  Role role;
  int layer;           // -1 outside the layers
  int64_t rows, cols;  // cols == 0 for vectors
  size_t offset;       // in floats, into the flat parameter buffer
  constexpr size_t count() const { return size_t(rows) * size_t(cols ? cols : 1); }
};

// A range of the flat buffer [begin, end) (floats) with one weight-decay choice: the optimizer's no-decay mask is a
// short sorted list of these, computed once from the table.
using DecayRange = kiln::DecayRange;  // core/adamw_step.hpp

// Offsets (in floats) of one layer's parameters in the flat buffer.
struct LayerOffsets {
  size_t input_norm, qkv, q_norm, k_norm, o, post_norm, gate_up, down;
};

template <DecoderModel M>
struct ParamPlan {
  static constexpr int per_layer = M::qk_norm ? 11 : 9;
  static constexpr int count = 1 + M::layers * per_layer + 1 + (M::tied ? 0 : 1);

  struct Table {
    std::array<ParamEntry, count> entries{};
    std::array<LayerOffsets, M::layers> layer{};
    size_t embedding = 0, final_norm = 0, lm_head = 0;
    size_t total = 0;  // floats in the flat buffer, padding included
  };

  static constexpr Table build() {
    Table t;
    int i = 0;
    size_t off = 0;
    auto add = [&](Name name, Role role, int layer, int64_t rows, int64_t cols, bool group_start) {
      if (group_start) off = align_up(off);
      t.entries[i] = ParamEntry{name, role, layer, rows, cols, off};
      off += t.entries[i].count();
      return t.entries[i++].offset;
    };
    auto lname = [](int l, std::string_view leaf) {
      Name n;
      n += "model.layers.";
      n += long(l);
      n += ".";
      n += leaf;
      return n;
    };
    const int H = M::hidden, HD = M::head_dim, F = M::ffn;
    Name emb;
    emb += "model.embed_tokens.weight";
    t.embedding = add(emb, Role::embedding, -1, M::vocab, H, true);
    for (int l = 0; l < M::layers; ++l) {
      LayerOffsets& o = t.layer[l];
      o.input_norm = add(lname(l, "input_layernorm.weight"), Role::norm, l, H, 0, true);
      o.qkv = add(lname(l, "self_attn.q_proj.weight"), Role::matrix, l, M::q_dim, H, true);
      add(lname(l, "self_attn.k_proj.weight"), Role::matrix, l, M::kv_dim, H, false);
      add(lname(l, "self_attn.v_proj.weight"), Role::matrix, l, M::kv_dim, H, false);
      if constexpr (M::qk_norm) {
        o.q_norm = add(lname(l, "self_attn.q_norm.weight"), Role::norm, l, HD, 0, true);
        o.k_norm = add(lname(l, "self_attn.k_norm.weight"), Role::norm, l, HD, 0, true);
      }
      o.o = add(lname(l, "self_attn.o_proj.weight"), Role::matrix, l, H, M::q_dim, true);
      o.post_norm = add(lname(l, "post_attention_layernorm.weight"), Role::norm, l, H, 0, true);
      o.gate_up = add(lname(l, "mlp.gate_proj.weight"), Role::matrix, l, F, H, true);
      add(lname(l, "mlp.up_proj.weight"), Role::matrix, l, F, H, false);
      o.down = add(lname(l, "mlp.down_proj.weight"), Role::matrix, l, H, F, true);
    }
    Name fn;
    fn += "model.norm.weight";
    t.final_norm = add(fn, Role::norm, -1, H, 0, true);
    if constexpr (M::tied) {
      t.lm_head = t.embedding;
    } else {
      Name lm;
      lm += "lm_head.weight";
      t.lm_head = add(lm, Role::lm_head, -1, M::vocab, H, true);
    }
    t.total = align_up(off);
    return t;
  }

  static constexpr Table table = build();

  // Parameters a user would count (HF's num_parameters): padding excluded, a tied head counted once.
  static constexpr size_t parameters = [] {
    size_t n = 0;
    for (const auto& e : table.entries) n += e.count();
    return n;
  }();
  static constexpr size_t embedding_parameters = size_t(M::vocab) * M::hidden * (M::tied ? 1 : 2);
};

}  // namespace kiln::plan
