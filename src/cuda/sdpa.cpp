// src/cuda/sdpa.cpp: cuDNN's SDPA through the cuDNN frontend; the one file that includes it (see sdpa.hpp for the
// layouts). Host code, compiled by g++ and linked with cuDNN 9 and the CUDA runtime.
#include "kiln/backend/cuda/sdpa.hpp"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <cudnn_frontend.h>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kiln/core/error.hpp"
#include "kiln/plan/sdpa_memory.hpp"

namespace fe = cudnn_frontend;

namespace kiln::backend::cuda {
namespace {

using Tensor = std::shared_ptr<fe::graph::Tensor_attributes>;

// Tensor uids: the variant pack binds device pointers by these.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSeqQ, kSeqKV, kOffQKV, kOffO, kOffStats, kOffKV
};

// GQA's backward writes dK and dV into dense (rows, NKV HD) views that the backend copies into dqkv: cuDNN's fp32
// full-head accumulators take dK's row stride times the group size (plan/sdpa_memory.hpp)
bool gqa(const SdpaShape& s) { return s.heads != s.kv_heads; }

std::string describe(const SdpaShape& s, int n) {
  return "attention of " + std::to_string(s.heads) + " query / " + std::to_string(s.kv_heads) + " kv heads of " +
         std::to_string(s.head_dim) + ", " + std::to_string(n) + " documents in " + std::to_string(s.rows) +
         " tokens (rows of " + std::to_string(s.seq) + ") and their scratch row";
}

// The tensors both graphs share: Q, K, V as views into qkv, the per-slot lengths and the ragged offsets.
struct Common {
  Tensor q, k, v, seq_q, seq_kv, off_qkv, off_o, off_stats, off_kv;
};

Common common(fe::graph::Graph& g, const SdpaShape& s, int n, bool backward) {
  const int64_t T = s.seq, HD = s.head_dim, QKV = int64_t(s.heads + 2 * s.kv_heads) * HD;
  auto index = [&](Uid uid, const char* name, int64_t len, fe::DataType_t t) {
    return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim({len, 1, 1, 1})
                        .set_stride({1, 1, 1, 1}).set_data_type(t));
  };
  Common c;
  c.off_qkv = index(kOffQKV, "offset_qkv", n + 1, fe::DataType_t::INT64);
  c.off_o = index(kOffO, "offset_o", n + 1, fe::DataType_t::INT64);
  c.off_stats = index(kOffStats, "offset_stats", n + 1, fe::DataType_t::INT64);
  if (backward && gqa(s)) c.off_kv = index(kOffKV, "offset_kv", n + 1, fe::DataType_t::INT64);  // dense dK, dV
  c.seq_q = index(kSeqQ, "seq_len_q", n, fe::DataType_t::INT32);
  c.seq_kv = index(kSeqKV, "seq_len_kv", n, fe::DataType_t::INT32);
  auto view = [&](Uid uid, const char* name, int64_t heads) {
    Tensor t = g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim({n, heads, T, HD})
                            .set_stride({T * QKV, HD, QKV, 1}));
    t->set_ragged_offset(c.off_qkv);
    return t;
  };
  c.q = view(kQ, "Q", s.heads);
  c.k = view(kK, "K", s.kv_heads);
  c.v = view(kV, "V", s.kv_heads);
  return c;
}

// (n, heads, T, HD) over a (R, heads * HD) buffer: O and dO
void as_o(const Tensor& t, const SdpaShape& s, int n, Uid uid, const Tensor& off) {
  const int64_t T = s.seq, HD = s.head_dim, W = int64_t(s.heads) * HD;
  t->set_uid(uid).set_dim({n, s.heads, T, HD}).set_stride({T * W, HD, W, 1}).set_ragged_offset(off);
}
// (n, heads, T, 1) fp32 over (R, heads): the log-sum-exp
void as_stats(const Tensor& t, const SdpaShape& s, int n, const Tensor& off) {
  const int64_t T = s.seq, NH = s.heads;
  t->set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim({n, NH, T, 1}).set_stride({T * NH, 1, NH, 1})
      .set_ragged_offset(off);
}
// (n, heads, T, HD) over the dqkv buffer at the column of Q, K or V
void as_qkv(const Tensor& t, const SdpaShape& s, int n, Uid uid, int heads) {
  const int64_t T = s.seq, HD = s.head_dim, QKV = int64_t(s.heads + 2 * s.kv_heads) * HD;
  t->set_uid(uid).set_dim({n, heads, T, HD}).set_stride({T * QKV, HD, QKV, 1});
}

// Graphs of one direction share a kernel cache (cuDNN 9.4 on): a graph for a new document count reuses the kernel
// the first one compiled, so a batch with a new count costs a plan finalisation, not a kernel build.
using Cache = std::shared_ptr<fe::KernelCache>;
bool dynamic_shapes() { return cudnnGetVersion() >= 90400; }

// sm_version 0: the current device's; otherwise set before any node is added (each node copies the graph's context)
std::shared_ptr<fe::graph::Graph> new_graph(int sm_version, const Cache& cache) {
  auto g = std::make_shared<fe::graph::Graph>();
  if (sm_version > 0) g->set_sm_version(sm_version);
  if (cache) g->set_dynamic_shape_enabled(true).set_kernel_cache(cache);
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

// What both directions share: the scale, the documents as padded sequences, causal from each one's start, and the
// ragged token totals (the dummies' scratch row included).
template <class A>
A& masks(A& a, const SdpaShape& s, const Common& c) {
  a.set_attn_scale(s.scale)
      .set_padding_mask(true)
      .set_seq_len_q(c.seq_q)
      .set_seq_len_kv(c.seq_kv)
      .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
      .set_diagonal_band_right_bound(0)
      .set_max_total_seq_len_q(s.rows + 1)
      .set_max_total_seq_len_kv(s.rows + 1);
  return a;
}

std::shared_ptr<fe::graph::Graph> forward_graph(const SdpaShape& s, int n, const Cache& cache, int sm_version = 0) {
  auto g = new_graph(sm_version, cache);
  Common c = common(*g, s, n, false);
  auto opts = fe::graph::SDPA_attributes()
                  .set_name("kiln_attention")
                  .set_implementation(fe::AttentionImplementation_t::COMPOSITE)  // what plan/sdpa_memory.hpp sizes
                  .set_generate_stats(true);
  masks(opts, s, c);
  auto [o, stats] = g->sdpa(c.q, c.k, c.v, opts);
  o->set_output(true);
  as_o(o, s, n, kO, c.off_o);
  stats->set_output(true);
  as_stats(stats, s, n, c.off_stats);
  return g;
}

std::shared_ptr<fe::graph::Graph> backward_graph(const SdpaShape& s, int n, const Cache& cache, int sm_version = 0) {
  auto g = new_graph(sm_version, cache);
  Common c = common(*g, s, n, true);
  Tensor o = g->tensor(fe::graph::Tensor_attributes().set_name("O"));
  as_o(o, s, n, kO, c.off_o);
  Tensor dout = g->tensor(fe::graph::Tensor_attributes().set_name("dO"));
  as_o(dout, s, n, kDO, c.off_o);
  Tensor stats = g->tensor(fe::graph::Tensor_attributes().set_name("Stats"));
  as_stats(stats, s, n, c.off_stats);
  auto opts = fe::graph::SDPA_backward_attributes().set_name("kiln_attention_backward");
  masks(opts, s, c);
  auto [dq, dk, dv] = g->sdpa_backward(c.q, c.k, c.v, o, dout, stats, opts);
  dq->set_output(true);
  as_qkv(dq, s, n, kDQ, s.heads);
  dq->set_ragged_offset(c.off_qkv);
  const int64_t T = s.seq, HD = s.head_dim, KVW = int64_t(s.kv_heads) * HD;
  for (auto& [t, uid] : {std::pair{dk, kDK}, {dv, kDV}}) {
    t->set_output(true);
    if (gqa(s)) {  // dense (rows, NKV HD)
      t->set_uid(uid).set_dim({n, s.kv_heads, T, HD}).set_stride({T * KVW, HD, KVW, 1}).set_ragged_offset(c.off_kv);
    } else {
      as_qkv(t, s, n, uid, s.kv_heads);
      t->set_ragged_offset(c.off_qkv);
    }
  }
  return g;
}

void check_shape(const SdpaShape& s) {
  // head_dim a multiple of 16: otherwise the frontend drops max_total_seq_len and sizes its workspace for every
  // slot at full length. Larger than 256 is left to cuDNN to refuse (sm_90's backward stops there).
  KILN_CHECK(s.heads > 0 && s.kv_heads > 0 && s.heads % s.kv_heads == 0 && s.head_dim % 16 == 0 &&
                 s.head_dim <= 512 && s.rows > 0 && s.seq > 1 && s.rows % s.seq == 0 && s.scale > 0,
             "cuDNN attention: a shape of ", s.heads, " / ", s.kv_heads, " heads of ", s.head_dim, ", ", s.rows,
             " tokens in rows of ", s.seq, " (expected heads a multiple of kv_heads, head_dim a multiple of 16, "
             "rows longer than one token and tokens a multiple of the row length)");
}

void cuda_ok(cudaError_t e, const char* what) {
  KILN_CHECK(e == cudaSuccess, "cuDNN attention: ", what, ": ", cudaGetErrorString(e));
}
void cudnn_ok(cudnnStatus_t e, const char* what) {
  KILN_CHECK(e == CUDNN_STATUS_SUCCESS, "cuDNN attention: ", what, ": ", cudnnGetErrorString(e));
}

}  // namespace

std::string sdpa_cudnn_version() {
  const size_t v = cudnnGetVersion();  // 9.19.0 is 91900
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

std::string sdpa_validate(const SdpaShape& shape, int slots, int sm_version) {
  check_shape(shape);
  KILN_CHECK(slots >= 1 && slots <= shape.rows, "sdpa_validate: ", slots, " slots for ", shape.rows, " tokens");
  for (bool fwd : {true, false}) {
    const Cache cache = dynamic_shapes() ? std::make_shared<fe::KernelCache>() : nullptr;
    auto g = fwd ? forward_graph(shape, slots, cache, sm_version) : backward_graph(shape, slots, cache, sm_version);
    fe::error_t e = g->validate();
    if (e.is_bad())
      return std::string(fwd ? "forward" : "backward") + " graph of the " + describe(shape, slots) + " for sm_" +
             std::to_string(sm_version) + ": " + e.get_message();
  }
  return "";
}

struct Sdpa::Impl {
  SdpaShape shape;
  std::byte* workspace;
  size_t workspace_bytes;
  int32_t* d_len;
  int64_t *d_off_qkv, *d_off_o, *d_off_stats, *d_off_kv;
  std::byte *dense_k = nullptr, *dense_v = nullptr;  // GQA: the backward's dK, dV (rows, NKV HD) bf16
  size_t cudnn_bytes = 0;                             // the workspace's part cuDNN may use
  cudnnHandle_t handle = nullptr;
  struct Graphs {
    std::shared_ptr<fe::graph::Graph> fwd, bwd;
  };
  std::unordered_map<int, Graphs> graphs;
  // null: static graphs (a cuDNN before 9.4, or one that refused a dynamic-shape graph of this attention)
  Cache fwd_cache, bwd_cache;
  Graphs* current = nullptr;
  int n = 0, padded = 0;
  size_t largest = 0;
  std::vector<int32_t> len;
  std::vector<int64_t> start;

  std::shared_ptr<fe::graph::Graph> build(bool fwd, int slots) {
    Cache& cache = fwd ? fwd_cache : bwd_cache;
    auto make = [&] { return fwd ? forward_graph(shape, slots, cache) : backward_graph(shape, slots, cache); };
    std::shared_ptr<fe::graph::Graph> g = make();
    fe::error_t e = g->build(handle, {fe::HeurMode_t::A});
    if (e.is_bad() && cache) {  // a static graph per document count instead: slower to build, the same kernels
      std::fprintf(stderr, "kiln: cuDNN %s refused the dynamic-shape %s attention graph (%s); building one graph "
                   "per document count instead\n", sdpa_cudnn_version().c_str(), fwd ? "forward" : "backward",
                   e.get_message().c_str());
      cache = nullptr;
      g = make();
      e = g->build(handle, {fe::HeurMode_t::A});
    }
    KILN_CHECK(e.is_good(), "cuDNN ", sdpa_cudnn_version(), " cannot run the ", fwd ? "forward" : "backward",
               " graph of the ", describe(shape, slots), ": ", e.get_message(),
               " (KILN_ATTENTION=kiln runs Kiln's own attention kernel instead)");
    int64_t ws = 0;
    KILN_CHECK(g->get_workspace_size(ws).is_good(), "cuDNN attention: reading the workspace size");
    KILN_CHECK(size_t(ws) <= cudnn_bytes, "cuDNN attention: the ", fwd ? "forward" : "backward", " graph of the ",
               describe(shape, slots), " asks ", ws, " bytes of workspace; the plan reserves ", cudnn_bytes,
               " (MemoryPlan::attention_workspace; KILN_ATTENTION=kiln runs Kiln's own kernel instead)");
    largest = std::max(largest, size_t(ws));
    return g;
  }

  void execute(fe::graph::Graph& g, std::unordered_map<int64_t, void*>& pack, void* stream, bool backward) {
    const char* what = backward ? "backward" : "forward";
    pack[kSeqQ] = d_len, pack[kSeqKV] = d_len;
    pack[kOffQKV] = d_off_qkv, pack[kOffO] = d_off_o, pack[kOffStats] = d_off_stats;
    if (backward && gqa(shape)) pack[kOffKV] = d_off_kv;
    cudnn_ok(cudnnSetStream(handle, static_cast<cudaStream_t>(stream)), "set the stream");
    fe::error_t e = g.execute(handle, pack, workspace);
    KILN_CHECK(e.is_good(), "cuDNN attention ", what, " of the ", describe(shape, padded), ": ", e.get_message());
  }
};

Sdpa::Sdpa(const SdpaShape& shape, void* workspace, size_t workspace_bytes, void* metadata) : impl_(new Impl) {
  check_shape(shape);
  Impl& m = *impl_;
  m.shape = shape;
  m.workspace = static_cast<std::byte*>(workspace);
  m.workspace_bytes = workspace_bytes;
  const int rows = shape.rows + 1;  // with the scratch row
  const size_t n1 = size_t(rows);
  KILN_CHECK(workspace_bytes == plan::sdpa_workspace_bytes(shape.heads, shape.kv_heads, shape.head_dim, rows),
             "cuDNN attention: a workspace block of ", workspace_bytes, " bytes; the plan's is ",
             plan::sdpa_workspace_bytes(shape.heads, shape.kv_heads, shape.head_dim, rows));
  m.cudnn_bytes = plan::sdpa_cudnn_workspace_bytes(shape.heads, shape.kv_heads, shape.head_dim, rows);
  const size_t dense = plan::sdpa_dense_kv_bytes(shape.heads, shape.kv_heads, shape.head_dim, rows);
  if (dense) m.dense_k = m.workspace + m.cudnn_bytes, m.dense_v = m.dense_k + dense;
  auto* meta = static_cast<std::byte*>(metadata);  // plan::sdpa_metadata_offset's layout, 16-byte aligned arrays
  auto array = [&](int k) { return meta + plan::sdpa_metadata_offset(k, rows); };
  m.d_off_qkv = reinterpret_cast<int64_t*>(array(0));
  m.d_off_o = reinterpret_cast<int64_t*>(array(1));
  m.d_off_stats = reinterpret_cast<int64_t*>(array(2));
  m.d_off_kv = reinterpret_cast<int64_t*>(array(3));
  m.d_len = reinterpret_cast<int32_t*>(array(4));
  m.len.resize(n1);
  m.start.resize(n1);
  if (dynamic_shapes()) {
    m.fwd_cache = std::make_shared<fe::KernelCache>();
    m.bwd_cache = std::make_shared<fe::KernelCache>();
  }
  cudnn_ok(cudnnCreate(&m.handle), "create a cuDNN handle (needs a CUDA device)");
}

Sdpa::~Sdpa() {
  if (impl_ && impl_->handle) cudnnDestroy(impl_->handle);
}

void Sdpa::set_batch(const int32_t* doc_start, int B, int T, void* host_metadata, void* stream) {
  Impl& m = *impl_;
  KILN_CHECK(int64_t(B) * T == m.shape.rows && T == m.shape.seq, "cuDNN attention: a ", B, " x ", T,
             " batch for an attention of ", m.shape.rows, " tokens in rows of ", m.shape.seq);
  const int n = sdpa_slots(doc_start, B, T, m.len.data(), m.start.data());
  KILN_CHECK(n > 0, "cuDNN attention: token ", -1 - n, " of the batch continues a document that is not the one "
             "before it (doc_start must start a new document or repeat the previous token's); cuDNN's ragged "
             "layout holds contiguous documents only (KILN_ATTENTION=kiln runs Kiln's kernel, which takes any)");
  const int64_t QKV = int64_t(m.shape.heads + 2 * m.shape.kv_heads) * m.shape.head_dim,
                W = int64_t(m.shape.heads) * m.shape.head_dim, NH = m.shape.heads,
                KVW = int64_t(m.shape.kv_heads) * m.shape.head_dim;
  // dummy slots up to the bucket: one token each, in the scratch row R
  const int N = sdpa_bucket(n, m.shape.rows);
  for (int k = n; k < N; ++k) m.start[size_t(k)] = m.shape.rows, m.len[size_t(k)] = 1;
  m.start[size_t(N)] = int64_t(m.shape.rows) + (N > n ? 1 : 0);
  // the arrays in the host mirror of the device block (plan::sdpa_metadata_offset's layout), copied from there:
  // the caller keeps the mirror unchanged until the stream has run the copies, so nothing here waits
  const int rows = m.shape.rows + 1;
  auto* host = static_cast<std::byte*>(host_metadata);
  auto array = [&](int k) { return host + plan::sdpa_metadata_offset(k, rows); };
  int64_t* off[4] = {reinterpret_cast<int64_t*>(array(0)), reinterpret_cast<int64_t*>(array(1)),
                     reinterpret_cast<int64_t*>(array(2)), reinterpret_cast<int64_t*>(array(3))};
  auto* len = reinterpret_cast<int32_t*>(array(4));
  const size_t n1 = size_t(N) + 1;
  for (size_t k = 0; k < n1; ++k) {
    off[0][k] = m.start[k] * QKV;
    off[1][k] = m.start[k] * W;
    off[2][k] = m.start[k] * NH;
    off[3][k] = m.start[k] * KVW;
  }
  std::copy(m.len.begin(), m.len.begin() + N, len);
  auto* s = static_cast<cudaStream_t>(stream);
  int64_t* dev[4] = {m.d_off_qkv, m.d_off_o, m.d_off_stats, m.d_off_kv};
  for (int k = 0; k < 4; ++k)
    cuda_ok(cudaMemcpyAsync(dev[k], off[k], n1 * 8, cudaMemcpyHostToDevice, s), "upload the ragged offsets");
  cuda_ok(cudaMemcpyAsync(m.d_len, len, size_t(N) * 4, cudaMemcpyHostToDevice, s), "upload the documents' lengths");
  m.n = n;
  m.padded = N;
  auto it = m.graphs.find(N);
  if (it == m.graphs.end()) {
    Impl::Graphs g;
    g.fwd = m.build(true, N);
    g.bwd = m.build(false, N);
    it = m.graphs.emplace(N, std::move(g)).first;
  }
  m.current = &it->second;
}

void Sdpa::forward(const void* qkv, void* out, float* lse, void* stream) {
  Impl& m = *impl_;
  KILN_CHECK(m.current, "cuDNN attention: forward before set_batch");
  auto* base = static_cast<std::byte*>(const_cast<void*>(qkv));
  const size_t hd2 = size_t(m.shape.head_dim) * 2;  // bf16
  std::unordered_map<int64_t, void*> pack = {{kQ, base},
                                              {kK, base + size_t(m.shape.heads) * hd2},
                                              {kV, base + size_t(m.shape.heads + m.shape.kv_heads) * hd2},
                                              {kO, out},
                                              {kStats, lse}};
  m.execute(*m.current->fwd, pack, stream, false);
}

void Sdpa::backward(const void* qkv, const void* out, const float* lse, const void* dout, void* dqkv, void* stream) {
  Impl& m = *impl_;
  KILN_CHECK(m.current, "cuDNN attention: backward before set_batch");
  auto* base = static_cast<std::byte*>(const_cast<void*>(qkv));
  auto* dbase = static_cast<std::byte*>(dqkv);
  const size_t hd2 = size_t(m.shape.head_dim) * 2, k_at = size_t(m.shape.heads) * hd2,
               v_at = size_t(m.shape.heads + m.shape.kv_heads) * hd2;
  std::unordered_map<int64_t, void*> pack = {{kQ, base},
                                              {kK, base + k_at},
                                              {kV, base + v_at},
                                              {kO, const_cast<void*>(out)},
                                              {kDO, const_cast<void*>(dout)},
                                              {kStats, const_cast<float*>(lse)},
                                              {kDQ, dbase},
                                              {kDK, m.dense_k ? m.dense_k : dbase + k_at},
                                              {kDV, m.dense_v ? m.dense_v : dbase + v_at}};
  m.execute(*m.current->bwd, pack, stream, true);
  if (m.dense_k) {  // GQA: the dense dK, dV into dqkv's columns, the R token rows
    const size_t kvw = size_t(m.shape.kv_heads) * hd2, pitch = size_t(m.shape.heads + 2 * m.shape.kv_heads) * hd2;
    auto* s = static_cast<cudaStream_t>(stream);
    for (auto [dst, src] : {std::pair{dbase + k_at, m.dense_k}, {dbase + v_at, m.dense_v}})
      cuda_ok(cudaMemcpy2DAsync(dst, pitch, src, kvw, kvw, size_t(m.shape.rows), cudaMemcpyDeviceToDevice, s),
              "copy dK / dV into dqkv");
  }
}

int Sdpa::slots() const { return impl_->n; }
int Sdpa::padded_slots() const { return impl_->padded; }
int Sdpa::graphs_built() const { return int(impl_->graphs.size()); }
size_t Sdpa::largest_workspace() const { return impl_->largest; }

}  // namespace kiln::backend::cuda
