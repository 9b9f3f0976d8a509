// kiln/plan/program.hpp: the step of a model as one ordered op program, built by the compiler. This is the one
// place where the order of a training step (and of evaluation and KV-cache decoding) is written; backends walk it.
//
//   Program<M, B, T, Precision, Mode>      Mode::train   forward, fused LM head + loss (+ its backward), backward
//                                          Mode::eval    forward and the loss only (evaluation, log-probabilities)
//                                          Mode::decode  one new token against a KV cache (B = 1, T = 1 row;
//                                                        MaxT = the cache length), ending in the logits
// Each op names its kind and pass, the buffers it reads, writes or accumulates into (with shape and dtype), the
// parameter group it reads and whether it accumulates that group's gradient, its FLOPs and the bytes it moves.
// Buffers are the activations of the step (and the batch that enters it): their lifetime is read off the program
// (first use .. last use) and they are placed in one arena, reusing the bytes of buffers that are dead.
//
// One layer's forward (x = layer input, the residual stream):
//   rmsnorm(x) -> xn1, rstd1 | gemm qkv | [head_rmsnorm q, k] | [rope q, k] | attention -> att, lse | gemm o -> x_mid
//   | add x_mid += x | rmsnorm(x_mid) -> xn2, rstd2 | gemm gate_up -> gu | swiglu -> act | gemm down -> x' | add x' += x_mid
// The loss: rmsnorm(x_L) -> xn_f | lm_head_loss (LM head GEMM, softmax cross-entropy, z-loss, per-token loss and
// log-probability, and in training its gradient dxn_f and dW) | [train] rmsnorm backward -> dx.
// The backward walks the layers in reverse: each forward op that has parameters or inputs to differentiate gets
// its backward op, and the residual gradient dx is accumulated in place by the norms' backward ops.
// RoPE ops exist only on RoPE layers (a NoPE layer's program has none); QK-norm ops only with qk_norm.
//
// FLOPs follow the MFU convention (plan/flops.hpp): matrix products and attention only; elementwise ops are
// memory-bound and count 0 FLOPs but their bytes. The sum over a training program equals Flops::train_per_token
// times the rows.
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kiln/plan/params.hpp"
#include "kiln/plan/phase.hpp"
#include "kiln/plan/sdpa_memory.hpp"

namespace kiln::plan {

// ---- dtypes and precision policies -------------------------------------------------------------
enum class DType : uint8_t { f32, bf16, i32 };
constexpr size_t dtype_size(DType d) { return d == DType::bf16 ? 2 : 4; }
constexpr const char* dtype_name(DType d) { return d == DType::f32 ? "f32" : d == DType::bf16 ? "bf16" : "i32"; }

// Storage: parameters as the kernels read them and the activations; compute: accumulation, statistics (norm rstd,
// softmax lse), the loss. Master weights, gradients and AdamW moments are always fp32. Kernels: whose kernels the
// program's scratch buffers are shaped for (the CPU's blocked attention keeps score tiles; the CUDA kernels keep
// the attention's D = dO . out and a bf16 tile of dlogits, and group the batch's rows by token for the embedding).
enum class Kernels : uint8_t { cpu, cuda };
template <DType Storage, DType Compute = DType::f32, Kernels K = Kernels::cpu>
struct Precision {
  static_assert(Compute == DType::f32, "Precision: compute (accumulation, statistics, loss) must be f32");
  static_assert(Storage == DType::f32 || Storage == DType::bf16, "Precision: storage must be f32 or bf16");
  static constexpr DType storage = Storage;
  static constexpr DType compute = Compute;
  static constexpr Kernels kernels = K;
};
using Fp32 = Precision<DType::f32>;                                    // the CPU backend: fp32 everything (the reference)
using Bf16Mixed = Precision<DType::bf16, DType::f32, Kernels::cuda>;  // the CUDA backend: bf16 weights and activations
using CudaFp32 = Precision<DType::f32, DType::f32, Kernels::cuda>;    // the CUDA kernels in fp32 (their CPU tests)

// ---- ops --------------------------------------------------------------------------------------
enum class Mode : uint8_t { train, eval, decode };

enum class OpKind : uint8_t {
  embedding,         // fwd: x = E[tokens];                         bwd: dE[tokens] += dx
  rmsnorm,           // fwd: y = x rstd w, rstd saved;               bwd: dx (+)= ..., dw +=
  head_rmsnorm,      // QK-norm: rmsnorm per q and k head (head_dim), v copied through; fwd and bwd
  gemm,              // fwd: y = x W^T;                              bwd: dx = dy W, dW += dy^T x
  rope,              // in place on the q and k heads of qkv;        bwd: the inverse rotation of dqkv, in place
  attention,         // causal, intra-document, GQA: fwd out, lse;   bwd: dqkv
  add,               // y += x (the residual stream); its backward is the identity, folded into dx
  swiglu,            // fwd: act = silu(gate) * up;                  bwd: dgu
  lm_head_loss,      // the LM head fused with cross-entropy and z-loss (chunked); per-token loss and log-prob;
                     // in training also dxn and dW (one op: nothing of size (rows, vocab) is kept)
  kv_append,         // decode: the new token's k and v rows into the layer's cache at the current length
  attention_decode,  // decode: the new token's queries against the cache
  lm_head_logits,    // decode: logits = xn W^T of the new token
};
inline constexpr int kOpKinds = 12;
constexpr const char* op_kind_name(OpKind k) {
  constexpr const char* n[kOpKinds] = {"embedding", "rmsnorm", "head_rmsnorm", "gemm", "rope", "attention",
                                       "add", "swiglu", "lm_head_loss", "kv_append", "attention_decode",
                                       "lm_head_logits"};
  return n[int(k)];
}

enum class Pass : uint8_t { forward, loss, backward };
constexpr const char* pass_name(Pass p) { return p == Pass::forward ? "fwd" : p == Pass::loss ? "loss" : "bwd"; }

enum class Access : uint8_t { read, write, accumulate };

// An activation buffer (or a batch input, or a persistent cache) of the program.
enum class Space : uint8_t { batch, activation, scratch, persistent };
struct BufferInfo {
  Name name;
  DType dtype = DType::f32;
  Space space = Space::activation;
  int rank = 1;
  int64_t dims[3] = {0, 0, 0};
  int layer = -1;
  int first = -1, last = -1;  // op indices of its first and last use
  int alias = -1;             // written in place of this buffer, which dies at the op that writes this one
  size_t offset = 0;          // bytes into the arena
  constexpr size_t elements() const {
    size_t n = 1;
    for (int i = 0; i < rank; ++i) n *= size_t(dims[i]);
    return n;
  }
  constexpr size_t bytes() const { return elements() * dtype_size(dtype); }
};

struct Use {
  int16_t buf = -1;
  Access access = Access::read;
};

// Which operand is which is fixed per (kind, pass): the list below is what the builder emits and backends read.
//   embedding fwd  [tokens, x]                 bwd [tokens, dx]                        (param: embedding)
//   rmsnorm fwd    [x, y, rstd, (cuda) residual]  bwd [x, rstd, dy, dx, dw_scratch]      (param: the norm)
//                  (cuda) with the residual: x += residual first, in place (the residual add fused; no add op)
//   head_rmsnorm   fwd [raw, qkv, rstd]        bwd [raw, rstd, dqkv, draw, dw_scratch]   (param: q_norm, k_norm)
//   gemm fwd       [x, y]                      bwd [x, dy, dx]                          (param: the matrix)
//   rope fwd       [positions, qkv]            bwd [positions, dqkv]
//   attention fwd  [qkv, doc_start, out, lse, (cpu) scores]   bwd [qkv, doc_start, out, lse, dout, dqkv, scratch]
//                  scratch: (cpu) the score tiles (B NKV, 2 block, T); (cuda) D = dO . out (B, NH, T)
//   add            [x, y]  (y += x; the CPU kernels' only: the CUDA ones fuse it into the next rmsnorm)
//   swiglu fwd     [gu, act]                   bwd [gu, dact, dgu]
//   lm_head_loss   [xn, targets, token_loss, token_logp, logits_chunk, (train) dxn, (train, cuda) dlogits_chunk]
//   embedding bwd (cuda) [tokens, dx, batch.embedding_grad]   (the rows grouped by token, built where the batch enters)
//   kv_append      [qkv, k_cache, v_cache]     attention_decode [qkv, k_cache, v_cache, out, scores]
//   lm_head_logits [xn, logits]                                                     (param: lm_head)
struct Op {
  OpKind kind = OpKind::add;
  Pass pass = Pass::forward;
  int16_t layer = -1;
  int8_t n_use = 0;
  Use use[8] = {};
  int16_t param = -1;           // first parameter-table entry of the group read (-1: none)
  int8_t param_entries = 0;     // entries in the group (q, k, v: 3; gate, up: 2)
  bool grad = false;            // accumulates the gradient of that group
  bool accumulate_dx = false;   // rmsnorm bwd: dx += (false: dx =, the first writer of the residual gradient)
  int64_t rows = 0, in = 0, out = 0;  // gemm: rows x in -> rows x out; others: rows and the width they work on
  double flops = 0;             // MFU convention: matrix products and attention
  double bytes = 0;             // buffers and parameters read and written (accumulation counts both ways)
};

// ---- the program -------------------------------------------------------------------------------
template <DecoderModel M>
struct ProgramCapacity {
  static constexpr int ops = 8 + M::layers * 26;
  static constexpr int buffers = 16 + M::layers * 28;
};

// Arena alignment: 256 bytes (what cuBLASLt and TMA want on the GPU; a multiple of the CPU's cache line).
inline constexpr size_t kArenaAlign = 256;
// cuBLASLt's workspace on the CUDA backend (NVIDIA recommends 32 MiB on Hopper).
inline constexpr size_t kGemmWorkspace = size_t(32) << 20;
// The CUDA state's block for a step's decision on the device (kernels/step.cuh's DeviceStep: the step's arguments,
// the loss guard's counters and window of up to kMaxSpikeWindow losses, the update count, the AdamW constants).
inline constexpr size_t kStepBlockBytes = size_t(36) << 10;

template <DecoderModel M, int B_, int T_, class Prec, Mode Mode_>
struct Program {
  static_assert(B_ > 0 && T_ > 0, "Program: micro-batch and sequence length must be positive");
  static_assert(Mode_ != Mode::decode || B_ == 1, "Program: the decode program has one sequence (B = 1)");
  static constexpr int B = B_, T = T_;
  static constexpr Mode mode = Mode_;
  using precision = Prec;
  using Model = M;
  using Params = ParamPlan<M>;
  static constexpr int MaxT = T;                                   // decode: the cache length
  static constexpr int64_t R = Mode_ == Mode::decode ? 1 : int64_t(B) * T;  // rows one pass works on
  static constexpr int64_t H = M::hidden, F = M::ffn, V = M::vocab, NH = M::heads, NKV = M::kv_heads,
                           HD = M::head_dim, Q = M::q_dim, QKV = M::qkv_dim, KV = M::kv_dim;
  // Rows of the LM head + loss handled at once: the (chunk, V) logits tile is bounded to ~64 MiB, and chunks stay
  // large because each chunk's dW product reads and writes all of dW (at least 64 rows).
  static constexpr int64_t loss_chunk = std::min<int64_t>(R, std::max<int64_t>(64, (int64_t(1) << 24) / V));
  // Row blocks of a norm weight's gradient: each block's partial sum is its own row of scratch, summed in block
  // order afterwards, so dw is bitwise the same for every thread count and no kernel allocates.
  static constexpr int64_t norm_blocks = std::min<int64_t>(R, 64);
  // Query rows the attention handles per block (its score tile is (block, T) per task; its products are GEMMs).
  static constexpr int64_t attn_block = std::min<int64_t>(T, 64);

  struct Data {
    std::array<Op, ProgramCapacity<M>::ops> ops{};
    std::array<BufferInfo, ProgramCapacity<M>::buffers> bufs{};
    int n_ops = 0, n_bufs = 0;
    // The batch and the outputs a backend reads (buffer ids; -1 where the mode has none).
    int tokens = -1, targets = -1, positions = -1, doc_start = -1, token_loss = -1, token_logp = -1, logits = -1;
    int k_cache = -1, v_cache = -1;
    int embedding_grad = -1;    // cuda kernels, training: the batch's rows grouped by token (i32, 3R + 1)
    size_t arena_bytes = 0;     // with reuse
    size_t unshared_bytes = 0;  // every buffer its own bytes
  };

  // ---- the builder ----
  struct Builder {
    Data d;
    static constexpr DType S = Prec::storage, C = Prec::compute;

    constexpr int buffer(Name name, DType dt, Space sp, int layer, int64_t d0, int64_t d1 = 0, int64_t d2 = 0) {
      if (d.n_bufs >= int(d.bufs.size())) throw "Program: more buffers than ProgramCapacity allows: raise it";
      BufferInfo& b = d.bufs[size_t(d.n_bufs)];
      b.name = name, b.dtype = dt, b.space = sp, b.layer = layer;
      b.dims[0] = d0, b.dims[1] = d1, b.dims[2] = d2;
      b.rank = d2 ? 3 : d1 ? 2 : 1;
      return d.n_bufs++;
    }
    static constexpr Name lname(int l, const char* leaf) {
      Name n;
      if (l >= 0) {
        n += "layers.";
        n += long(l);
        n += ".";
      }
      n += leaf;
      return n;
    }
    constexpr int act(int l, const char* leaf, int64_t d0, int64_t d1 = 0, int64_t d2 = 0) {
      return buffer(lname(l, leaf), S, Space::activation, l, d0, d1, d2);
    }
    constexpr int stat(int l, const char* leaf, int64_t d0, int64_t d1 = 0, int64_t d2 = 0) {
      return buffer(lname(l, leaf), C, Space::activation, l, d0, d1, d2);
    }
    constexpr int scratch(int l, const char* leaf, int64_t d0, int64_t d1 = 0) {
      return buffer(lname(l, leaf), C, Space::scratch, l, d0, d1);
    }

    struct Emit {
      Builder* b;
      Op* op;
      constexpr Emit& use(int buf, Access a) {
        if (op->n_use >= int8_t(sizeof op->use / sizeof op->use[0])) throw "Program: an op with more operands than Op::use holds";
        op->use[op->n_use++] = Use{int16_t(buf), a};
        return *this;
      }
      constexpr Emit& r(int buf) { return use(buf, Access::read); }
      constexpr Emit& w(int buf) { return use(buf, Access::write); }
      // Writes `buf` over the bytes of `dying` (read by this op for the last time): an elementwise op in place.
      constexpr Emit& w_over(int buf, int dying) {
        b->d.bufs[size_t(buf)].alias = dying;
        return use(buf, Access::write);
      }
      constexpr Emit& acc(int buf) { return use(buf, Access::accumulate); }
      constexpr Emit& param(size_t offset_of_first, int entries, bool grad) {
        int lo = 0, hi = Params::count - 1;  // entries are in offset order: binary search
        while (lo < hi) {
          const int mid = (lo + hi) / 2;
          if (Params::table.entries[size_t(mid)].offset < offset_of_first) lo = mid + 1;
          else hi = mid;
        }
        op->param = int16_t(lo);
        op->param_entries = int8_t(entries);
        op->grad = grad;
        return *this;
      }
      constexpr Emit& dims(int64_t rows, int64_t in, int64_t out = 0) {
        op->rows = rows, op->in = in, op->out = out;
        return *this;
      }
      constexpr Emit& flops(double f) {
        op->flops = f;
        return *this;
      }
    };
    constexpr Emit op(OpKind k, Pass p, int layer) {
      if (d.n_ops >= int(d.ops.size())) throw "Program: more ops than ProgramCapacity allows: raise it";
      Op& o = d.ops[size_t(d.n_ops++)];
      o.kind = k, o.pass = p, o.layer = int16_t(layer);
      return Emit{this, &o};
    }
  };

  // Buffers one layer's forward produces (ids), for its backward.
  struct LayerBufs {
    int x_in, xn1, rstd1, qkv_raw, qk_rstd, qkv, att, lse, x_mid, xn2, rstd2, gu, act;
  };

  static constexpr Data build() {
    Builder b;
    const auto& tab = Params::table;
    constexpr bool dec = Mode_ == Mode::decode;
    constexpr bool train = Mode_ == Mode::train;
    constexpr bool cuda = Prec::kernels == Kernels::cuda;
    // cuDNN's attention (bf16 storage; backend/cuda/sdpa.hpp) pads the packed batch's documents with one-token dummy
    // slots that live in a scratch row after the R tokens of each buffer it reads or writes: qkv, att, lse, d.att,
    // d.qkv get R + 1 rows (the products and other kernels work on the first R).
    constexpr int RA = R + (cuda && Prec::storage == DType::bf16 && !dec ? 1 : 0);
    // The batch (int32, (B, T)); decode: the new token and its position.
    b.d.tokens = b.buffer(Builder::lname(-1, "batch.tokens"), DType::i32, Space::batch, -1, dec ? 1 : B, dec ? 0 : T);
    b.d.positions =
        b.buffer(Builder::lname(-1, "batch.positions"), DType::i32, Space::batch, -1, dec ? 1 : B, dec ? 0 : T);
    if constexpr (!dec) {
      b.d.targets = b.buffer(Builder::lname(-1, "batch.targets"), DType::i32, Space::batch, -1, B, T);
      b.d.doc_start = b.buffer(Builder::lname(-1, "batch.doc_start"), DType::i32, Space::batch, -1, B, T);
    } else {
      b.d.k_cache = b.buffer(Builder::lname(-1, "kv_cache.k"), Prec::storage, Space::persistent, -1, M::layers, MaxT, KV);
      b.d.v_cache = b.buffer(Builder::lname(-1, "kv_cache.v"), Prec::storage, Space::persistent, -1, M::layers, MaxT, KV);
    }
    const double ctx = dec ? double(MaxT) : (double(T) + 1.0) / 2.0;  // mean causal context (decode: an upper bound)

    // ---- forward ----
    std::array<LayerBufs, M::layers> lb{};
    // The CUDA kernels fuse each residual add into the RMSNorm after it (x += residual, then normalise x): the add
    // op is not emitted, and the norm reads the residual as a fourth operand and updates x in place.
    int residual = -1;
    auto norm = [&](int l, int xin, int y, int rstd, size_t param) {
      auto e = b.op(OpKind::rmsnorm, Pass::forward, l);
      if (residual >= 0) e.acc(xin).w(y).w(rstd).r(residual);
      else e.r(xin).w(y).w(rstd);
      e.param(param, 1, false).dims(R, H);
      residual = -1;
    };
    auto add = [&](int from, int into, int l) {
      if constexpr (cuda) residual = from;
      else b.op(OpKind::add, Pass::forward, l).r(from).acc(into).dims(R, H);
    };
    int x = b.act(0, "x_in", R, H);
    b.op(OpKind::embedding, Pass::forward, -1).r(b.d.tokens).w(x).param(tab.embedding, 1, false).dims(R, H);
    for (int l = 0; l < M::layers; ++l) {
      const LayerOffsets& o = tab.layer[size_t(l)];
      LayerBufs& L = lb[size_t(l)];
      L.x_in = x;
      L.xn1 = b.act(l, "xn1", R, H);
      L.rstd1 = b.stat(l, "rstd1", R);
      norm(l, x, L.xn1, L.rstd1, o.input_norm);
      L.qkv = b.act(l, "qkv", RA, QKV);
      if constexpr (M::qk_norm) {
        L.qkv_raw = b.act(l, "qkv_raw", R, QKV);
        L.qk_rstd = b.stat(l, "qk_rstd", NH + NKV, R);
        b.op(OpKind::gemm, Pass::forward, l).r(L.xn1).w(L.qkv_raw).param(o.qkv, 3, false).dims(R, H, QKV)
            .flops(2.0 * R * H * QKV);
        b.op(OpKind::head_rmsnorm, Pass::forward, l).r(L.qkv_raw).w(L.qkv).w(L.qk_rstd).param(o.q_norm, 2, false)
            .dims(R, HD);
      } else {
        b.op(OpKind::gemm, Pass::forward, l).r(L.xn1).w(L.qkv).param(o.qkv, 3, false).dims(R, H, QKV)
            .flops(2.0 * R * H * QKV);
      }
      if (M::uses_rope(l)) b.op(OpKind::rope, Pass::forward, l).r(b.d.positions).acc(L.qkv).dims(R, HD);
      L.att = b.act(l, "att", RA, Q);
      if constexpr (dec) {
        b.op(OpKind::kv_append, Pass::forward, l).r(L.qkv).acc(b.d.k_cache).acc(b.d.v_cache).dims(1, KV);
        const int scores = b.scratch(l, "scores", NH, MaxT);
        b.op(OpKind::attention_decode, Pass::forward, l).r(L.qkv).r(b.d.k_cache).r(b.d.v_cache).w(L.att).w(scores)
            .dims(1, HD).flops(2.0 * 2.0 * Q * ctx);
      } else {
        L.lse = RA > R ? b.stat(l, "lse", RA, NH) : b.stat(l, "lse", B, NH, T);
        auto e = b.op(OpKind::attention, Pass::forward, l);
        e.r(L.qkv).r(b.d.doc_start).w(L.att).w(L.lse).dims(R, HD).flops(2.0 * 2.0 * double(R) * Q * ctx);
        if constexpr (!cuda)
          e.w(b.buffer(Builder::lname(l, "scores"), Prec::compute, Space::scratch, l, B * NH, attn_block, T));
      }
      L.x_mid = b.act(l, "x_mid", R, H);
      b.op(OpKind::gemm, Pass::forward, l).r(L.att).w(L.x_mid).param(o.o, 1, false).dims(R, Q, H).flops(2.0 * R * Q * H);
      add(x, L.x_mid, l);
      L.xn2 = b.act(l, "xn2", R, H);
      L.rstd2 = b.stat(l, "rstd2", R);
      norm(l, L.x_mid, L.xn2, L.rstd2, o.post_norm);
      L.gu = b.act(l, "gate_up", R, 2 * F);
      b.op(OpKind::gemm, Pass::forward, l).r(L.xn2).w(L.gu).param(o.gate_up, 2, false).dims(R, H, 2 * F)
          .flops(2.0 * R * H * 2 * F);
      L.act = b.act(l, "act", R, F);
      b.op(OpKind::swiglu, Pass::forward, l).r(L.gu).w(L.act).dims(R, F);
      const int next = b.act(l + 1 < M::layers ? l + 1 : -1, l + 1 < M::layers ? "x_in" : "x_out", R, H);
      b.op(OpKind::gemm, Pass::forward, l).r(L.act).w(next).param(o.down, 1, false).dims(R, F, H).flops(2.0 * R * F * H);
      add(L.x_mid, next, l);
      x = next;
    }

    // ---- the loss (or, decoding, the logits) ----
    const int xn_f = b.act(-1, "xn_final", R, H);
    const int rstd_f = b.stat(-1, "rstd_final", R);
    norm(-1, x, xn_f, rstd_f, tab.final_norm);
    if constexpr (dec) {
      b.d.logits = b.buffer(Builder::lname(-1, "logits"), DType::f32, Space::activation, -1, 1, V);
      b.op(OpKind::lm_head_logits, Pass::forward, -1).r(xn_f).w(b.d.logits).param(tab.lm_head, 1, false).dims(1, H, V)
          .flops(2.0 * H * V);
    } else {
      b.d.token_loss = b.buffer(Builder::lname(-1, "token_loss"), DType::f32, Space::activation, -1, B, T);
      b.d.token_logp = b.buffer(Builder::lname(-1, "token_logp"), DType::f32, Space::activation, -1, B, T);
      const int chunk = b.scratch(-1, "logits_chunk", loss_chunk, V);
      auto e = b.op(OpKind::lm_head_loss, Pass::loss, -1);
      e.r(xn_f).r(b.d.targets).w(b.d.token_loss).w(b.d.token_logp).w(chunk);
      if constexpr (train) {
        const int dxn_f = b.act(-1, "d.xn_final", R, H);
        e.w(dxn_f).param(tab.lm_head, 1, true).dims(R, H, V).flops(3.0 * 2.0 * R * H * V);
        if constexpr (cuda) e.w(b.act(-1, "d.logits_chunk", loss_chunk, V));  // dlogits in S, for the dx / dW GEMMs
        // ---- backward ----
        const int dx = b.act(-1, "d.x", R, H);  // the residual stream's gradient, accumulated in place
        const int dw_f = b.scratch(-1, "d.norm_partials", norm_blocks, H);
        b.op(OpKind::rmsnorm, Pass::backward, -1).r(x).r(rstd_f).r(dxn_f).w(dx).w(dw_f)
            .param(tab.final_norm, 1, true).dims(R, H);
        for (int l = M::layers - 1; l >= 0; --l) {
          const LayerOffsets& o = tab.layer[size_t(l)];
          const LayerBufs& L = lb[size_t(l)];
          // MLP half: x' = x_mid + down(swiglu(gate_up(rms(x_mid))))
          const int dact = b.act(l, "d.act", R, F);
          b.op(OpKind::gemm, Pass::backward, l).r(L.act).r(dx).w(dact).param(o.down, 1, true).dims(R, F, H)
              .flops(4.0 * R * F * H);
          const int dgu = b.act(l, "d.gate_up", R, 2 * F);
          b.op(OpKind::swiglu, Pass::backward, l).r(L.gu).r(dact).w_over(dgu, L.gu).dims(R, F);  // dgu over gu
          const int dxn2 = b.act(l, "d.xn2", R, H);
          b.op(OpKind::gemm, Pass::backward, l).r(L.xn2).r(dgu).w(dxn2).param(o.gate_up, 2, true).dims(R, H, 2 * F)
              .flops(4.0 * R * H * 2 * F);
          const int dw2 = b.scratch(l, "d.norm_partials2", norm_blocks, H);
          b.op(OpKind::rmsnorm, Pass::backward, l).r(L.x_mid).r(L.rstd2).r(dxn2).acc(dx).w(dw2)
              .param(o.post_norm, 1, true).dims(R, H);
          // attention half: x_mid = x + o(attention(rope(qk_norm(qkv(rms(x))))))
          const int datt = b.act(l, "d.att", RA, Q);
          b.op(OpKind::gemm, Pass::backward, l).r(L.att).r(dx).w(datt).param(o.o, 1, true).dims(R, Q, H)
              .flops(4.0 * R * Q * H);
          const int dqkv = b.act(l, "d.qkv", RA, QKV);
          const int dscores = cuda ? b.scratch(l, "d.attention_delta", B * NH, T)
                                   : b.buffer(Builder::lname(l, "d.scores"), Prec::compute, Space::scratch, l, B * NKV,
                                              2 * attn_block, T);
          b.op(OpKind::attention, Pass::backward, l).r(L.qkv).r(b.d.doc_start).r(L.att).r(L.lse).r(datt).w(dqkv)
              .w(dscores).dims(R, HD).flops(2.0 * 2.0 * 2.0 * double(R) * Q * ctx);
          if (M::uses_rope(l)) b.op(OpKind::rope, Pass::backward, l).r(b.d.positions).acc(dqkv).dims(R, HD);
          int dproj = dqkv;
          if constexpr (M::qk_norm) {
            dproj = b.act(l, "d.qkv_raw", R, QKV);
            const int dwq = b.scratch(l, "d.qk_norm_partials", 2 * norm_blocks, HD);
            b.op(OpKind::head_rmsnorm, Pass::backward, l).r(L.qkv_raw).r(L.qk_rstd).r(dqkv).w(dproj).w(dwq)
                .param(o.q_norm, 2, true).dims(R, HD);
          }
          const int dxn1 = b.act(l, "d.xn1", R, H);
          b.op(OpKind::gemm, Pass::backward, l).r(L.xn1).r(dproj).w(dxn1).param(o.qkv, 3, true).dims(R, H, QKV)
              .flops(4.0 * R * H * QKV);
          const int dw1 = b.scratch(l, "d.norm_partials1", norm_blocks, H);
          b.op(OpKind::rmsnorm, Pass::backward, l).r(L.x_in).r(L.rstd1).r(dxn1).acc(dx).w(dw1)
              .param(o.input_norm, 1, true).dims(R, H);
        }
        auto eb = b.op(OpKind::embedding, Pass::backward, -1);
        eb.r(b.d.tokens).r(dx).param(tab.embedding, 1, true).dims(R, H);
        if constexpr (cuda) {  // token ids, segment starts and rows: at most R + (R + 1) + R values
          b.d.embedding_grad =
              b.buffer(Builder::lname(-1, "batch.embedding_grad"), DType::i32, Space::batch, -1, 3 * R + 1);
          eb.r(b.d.embedding_grad);
        }
      } else {
        e.param(tab.lm_head, 1, false).dims(R, H, V).flops(2.0 * R * H * V);
      }
    }
    // The rmsnorm backward of the final norm is the first writer of dx: it overwrites; the others accumulate.
    for (int i = 0; i < b.d.n_ops; ++i) {
      Op& o = b.d.ops[size_t(i)];
      if (o.kind == OpKind::rmsnorm && o.pass == Pass::backward) o.accumulate_dx = o.layer >= 0;
    }
    finish(b.d);
    return b.d;
  }

  // Lifetimes, bytes moved, and the arena placement.
  static constexpr void finish(Data& d) {
    for (int i = 0; i < d.n_ops; ++i) {
      Op& o = d.ops[size_t(i)];
      double bytes = 0;
      for (int u = 0; u < o.n_use; ++u) {
        BufferInfo& buf = d.bufs[size_t(o.use[u].buf)];
        if (buf.first < 0) buf.first = i;
        buf.last = i;
        const double n = double(buf.bytes());
        bytes += o.use[u].access == Access::accumulate ? 2 * n : n;
      }
      if (o.param >= 0) {
        double n = 0;
        for (int e = 0; e < o.param_entries; ++e) n += double(Params::table.entries[size_t(o.param + e)].count());
        bytes += n * double(dtype_size(Prec::storage)) + (o.grad ? 2.0 * n * 4.0 : 0.0);  // gradients: fp32, +=
      }
      o.bytes = bytes;
    }
    const int last = d.n_ops - 1;
    for (int i = 0; i < d.n_bufs; ++i) {
      BufferInfo& buf = d.bufs[size_t(i)];
      if (buf.space == Space::batch || buf.space == Space::persistent) buf.first = 0, buf.last = last;  // whole program
      if (i == d.token_loss || i == d.token_logp || i == d.logits) buf.first = 0, buf.last = last;  // outputs, read after it
      if (buf.first < 0) buf.first = buf.last = 0;
    }
    d.arena_bytes = place(d);
    d.unshared_bytes = 0;
    for (int i = 0; i < d.n_bufs; ++i) d.unshared_bytes += align_up(d.bufs[size_t(i)].bytes(), kArenaAlign);
  }

  // Placement by replaying the program with a best-fit allocator: at each op the buffers it first uses are
  // allocated (before any buffer dies there, so an op's outputs never alias its inputs), then the buffers it uses
  // last are freed. Freed holes merge with their neighbours; an allocation takes the smallest hole that fits, or
  // grows the arena at its top. Linear in the program (the greedy size-sorted placement this replaced was
  // quadratic and too slow for the compiler at 36 layers). Returns the arena size in bytes.
  static constexpr size_t place(Data& d) {
    constexpr int N = ProgramCapacity<M>::buffers;
    struct Hole {
      size_t begin = 0, end = 0;
    };
    std::array<Hole, N + 1> holes{};  // free ranges below the top, by offset
    int n_holes = 0;
    size_t top = 0, arena = 0;
    auto size_of = [&](int i) { return align_up(d.bufs[size_t(i)].bytes(), kArenaAlign); };
    std::array<bool, N> handed_over{};  // died into an in-place output: its bytes are not freed
    auto alloc = [&](int i) {
      const size_t need = size_of(i);
      if (const int a = d.bufs[size_t(i)].alias; a >= 0) {
        if (d.bufs[size_t(a)].last != d.bufs[size_t(i)].first || size_of(a) != need)
          throw "Program: an in-place output needs an input of its size that dies at the op writing it";
        d.bufs[size_t(i)].offset = d.bufs[size_t(a)].offset;
        handed_over[size_t(a)] = true;
        return;
      }
      int best = -1;
      for (int h = 0; h < n_holes; ++h) {
        const size_t room = holes[size_t(h)].end - holes[size_t(h)].begin;
        if (room >= need && (best < 0 || room < holes[size_t(best)].end - holes[size_t(best)].begin)) best = h;
      }
      if (best >= 0) {
        d.bufs[size_t(i)].offset = holes[size_t(best)].begin;
        holes[size_t(best)].begin += need;
        if (holes[size_t(best)].begin == holes[size_t(best)].end) {
          for (int h = best; h + 1 < n_holes; ++h) holes[size_t(h)] = holes[size_t(h + 1)];
          --n_holes;
        }
      } else if (n_holes > 0 && holes[size_t(n_holes - 1)].end == top) {  // the last hole touches the top: extend it
        d.bufs[size_t(i)].offset = holes[size_t(n_holes - 1)].begin;
        top = holes[size_t(n_holes - 1)].begin + need;
        --n_holes;
      } else {
        d.bufs[size_t(i)].offset = top;
        top += need;
      }
      arena = std::max(arena, top);
    };
    auto release = [&](int i) {
      if (handed_over[size_t(i)]) return;
      const size_t b = d.bufs[size_t(i)].offset, e = b + size_of(i);
      int at = 0;
      while (at < n_holes && holes[size_t(at)].begin < b) ++at;
      for (int h = n_holes; h > at; --h) holes[size_t(h)] = holes[size_t(h - 1)];
      holes[size_t(at)] = Hole{b, e};
      ++n_holes;
      if (at + 1 < n_holes && holes[size_t(at)].end == holes[size_t(at + 1)].begin) {  // merge with the next
        holes[size_t(at)].end = holes[size_t(at + 1)].end;
        for (int h = at + 1; h + 1 < n_holes; ++h) holes[size_t(h)] = holes[size_t(h + 1)];
        --n_holes;
      }
      if (at > 0 && holes[size_t(at - 1)].end == holes[size_t(at)].begin) {  // merge with the previous
        holes[size_t(at - 1)].end = holes[size_t(at)].end;
        for (int h = at; h + 1 < n_holes; ++h) holes[size_t(h)] = holes[size_t(h + 1)];
        --n_holes;
      }
      if (n_holes > 0 && holes[size_t(n_holes - 1)].end == top) top = holes[size_t(--n_holes)].begin;  // back to the top
    };
    // Buffers by first use and by last use (counting sorts over op indices).
    std::array<int16_t, N> by_first{}, by_last{};
    std::array<int, ProgramCapacity<M>::ops + 1> first_at{}, last_at{};
    for (int i = 0; i < d.n_bufs; ++i) ++first_at[size_t(d.bufs[size_t(i)].first + 1)], ++last_at[size_t(d.bufs[size_t(i)].last + 1)];
    for (int k = 0; k < d.n_ops; ++k) first_at[size_t(k + 1)] += first_at[size_t(k)], last_at[size_t(k + 1)] += last_at[size_t(k)];
    {
      std::array<int, ProgramCapacity<M>::ops + 1> f = first_at, l = last_at;
      for (int i = 0; i < d.n_bufs; ++i) {
        by_first[size_t(f[size_t(d.bufs[size_t(i)].first)]++)] = int16_t(i);
        by_last[size_t(l[size_t(d.bufs[size_t(i)].last)]++)] = int16_t(i);
      }
    }
    for (int k = 0; k < d.n_ops; ++k) {
      for (int j = first_at[size_t(k)]; j < first_at[size_t(k + 1)]; ++j) alloc(by_first[size_t(j)]);
      for (int j = last_at[size_t(k)]; j < last_at[size_t(k + 1)]; ++j) release(by_last[size_t(j)]);
    }
    return arena;
  }

  static constexpr Data data = build();

  static constexpr const BufferInfo& buffer(int id) { return data.bufs[size_t(id)]; }
  static constexpr size_t arena_bytes = data.arena_bytes;
  static constexpr double flops() {
    double f = 0;
    for (int i = 0; i < data.n_ops; ++i) f += data.ops[size_t(i)].flops;
    return f;
  }
  static constexpr double bytes() {
    double f = 0;
    for (int i = 0; i < data.n_ops; ++i) f += data.ops[size_t(i)].bytes;
    return f;
  }
  static constexpr int count(OpKind k, Pass p) {
    int n = 0;
    for (int i = 0; i < data.n_ops; ++i) n += data.ops[size_t(i)].kind == k && data.ops[size_t(i)].pass == p;
    return n;
  }
};

// The programs of one phase shape (micro-batch B x sequence T): training and evaluation share the arena (the
// training program's is the larger), and the decode program of a KV cache of MaxT positions.
template <DecoderModel M, int B, int T, class Prec = Fp32>
using TrainProgram = Program<M, B, T, Prec, Mode::train>;
template <DecoderModel M, int B, int T, class Prec = Fp32>
using EvalProgram = Program<M, B, T, Prec, Mode::eval>;
template <DecoderModel M, int MaxT, class Prec = Fp32>
using DecodeProgram = Program<M, 1, MaxT, Prec, Mode::decode>;

// For each parameter entry of a training program P, the op after which its gradient is final (the last op that adds
// to it; -1: none does): where data parallelism may start summing it while the backward goes on.
template <class P>
std::vector<int> last_gradient_ops(int entries) {
  std::vector<int> last(size_t(entries), -1);
  for (int i = 0; i < P::data.n_ops; ++i) {
    const Op& op = P::data.ops[size_t(i)];
    if (op.grad && op.param >= 0)
      for (int e = op.param; e < op.param + (op.param_entries > 1 ? op.param_entries : 1); ++e) last[size_t(e)] = i;
  }
  return last;
}

// Bytes per rank of one phase shape, exactly as a backend of this precision allocates them.
template <DecoderModel M, int B, int T, class Prec = Fp32>
struct MemoryPlan {
  using P = ParamPlan<M>;
  static constexpr size_t floats = P::table.total;  // the flat buffer, padding included
  // Parameters as the kernels read them; fp32 master weights besides them when that is not fp32 already.
  static constexpr size_t params = floats * dtype_size(Prec::storage);
  static constexpr size_t master = Prec::storage == DType::f32 ? 0 : floats * 4;
  static constexpr size_t grads = floats * 4;
  static constexpr size_t adam = 2 * floats * 4;
  static constexpr size_t arena = std::max(TrainProgram<M, B, T, Prec>::arena_bytes, EvalProgram<M, B, T, Prec>::arena_bytes);
  static constexpr size_t norm_partials = ((floats + (size_t(1) << 15) - 1) >> 15) * sizeof(double);
  // RoPE's cos and sin tables (fp32, T x head_dim / 2 each) where a layer uses RoPE
  static constexpr size_t rope_tables = M::positional::any_rope ? 2 * size_t(T) * size_t(M::head_dim / 2) * 4 : 0;
  // The CUDA kernels' own: cuBLASLt's workspace, the decay ranges (at most one per tensor and one between each
  // two), the state's step block (kStepBlockBytes), the executor's 256 bytes of scalars (the loss scale, its
  // own loss sum) and its tokens' loss-gradient weights (B T floats): what backend/cuda.hpp allocates besides the above
  static constexpr bool cuda = Prec::kernels == Kernels::cuda;
  static constexpr size_t gemm_workspace = cuda ? kGemmWorkspace : 0;
  static constexpr size_t device_small =
      cuda ? (2 * size_t(P::count) + 1) * sizeof(DecayRange) + kStepBlockBytes + 256 + size_t(B) * T * 4 : 0;
  // cuDNN's attention (bf16 storage only; backend/cuda/sdpa.hpp): the block its workspace lives in, and the
  // documents' lengths and ragged offsets. Reserved whichever attention runs, so the total does not depend on it.
  static constexpr bool sdpa = cuda && Prec::storage == DType::bf16;
  static constexpr size_t attention_workspace =
      sdpa ? sdpa_workspace_bytes(M::heads, M::kv_heads, M::head_dim, B * T + 1) : 0;  // + the scratch row
  static constexpr size_t attention_metadata = sdpa ? sdpa_metadata_bytes(B * T + 1) : 0;
  static constexpr size_t total = params + master + grads + adam + arena + norm_partials + rope_tables +
                                  gemm_workspace + device_small + attention_workspace + attention_metadata;
  // A preference phase holds besides total a frozen reference model: its parameters as the kernels read them
  // (backend cpu::Frozen / cuda::Frozen).
  static constexpr size_t reference = params;
};

}  // namespace kiln::plan
