// tests/test_ops.cpp: every CPU kernel registered with the conformance checker (finite-difference gradients in
// double, float-vs-double agreement, bitwise repeatability), plus the op-specific tests: AdamW against a
// hand-computed example, sum_squares, the LM head's logits and eval paths, and a test that the checker itself fails
// on a wrong gradient.
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>

#include "kernels/adamw.hpp"
#include "kernels/attention.hpp"
#include "kernels/attention_blocked.hpp"
#include "kernels/cross_entropy.hpp"
#include "kernels/embedding.hpp"
#include "kernels/exp.hpp"
#include "kernels/gemm.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rope.hpp"
#include "kernels/swiglu.hpp"
#include "kiln/backend/batch.hpp"
#include "kiln/core/bf16.hpp"
#include "kiln/model/model.hpp"
#include "tests/conformance.hpp"

namespace kk = kiln::kernels;
using kiln::testing::Grad;
using kiln::testing::Tensors;

namespace {

template <class T>
std::vector<T> zeros(size_t n) {
  return std::vector<T>(n, T(0));
}

// ---- linear: y(R,Out) = x W^T --------------------------------------------------------------------------------
template <bool AccumulateDx>
struct LinearOp {
  static constexpr int R = 5, In = 4, Out = 3;
  static constexpr const char* name = AccumulateDx ? "linear (dx accumulated)" : "linear";
  static std::vector<size_t> input_sizes() { return {R * In, Out * In}; }
  static std::vector<Grad> grads() { return {AccumulateDx ? Grad::Accumulate : Grad::Overwrite, Grad::Accumulate}; }
  static size_t output_size() { return R * Out; }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    kk::linear_forward<T>(in[0].data(), in[1].data(), out.data(), R, In, Out);
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    kk::linear_backward<T>(in[0].data(), in[1].data(), dout.data(), din[0].data(), din[1].data(), R, In, Out,
                           AccumulateDx);
  }
};
KILN_REGISTER_OP(LinearOp<false>);
KILN_REGISTER_OP(LinearOp<true>);

// ---- embedding, with repeated token ids ------------------------------------------------------------------------
struct EmbeddingOp {
  static constexpr int V = 7, H = 5, R = 9;
  static constexpr int32_t tokens[R] = {3, 1, 3, 0, 6, 3, 1, 2, 3};
  static constexpr const char* name = "embedding";
  static std::vector<size_t> input_sizes() { return {V * H}; }
  static std::vector<Grad> grads() { return {Grad::Accumulate}; }
  static size_t output_size() { return R * H; }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    kk::embedding_forward<T, H>(tokens, R, in[0].data(), out.data());
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    kk::embedding_backward<T, T, H>(tokens, R, dout.data(), din[0].data());
  }
};
KILN_REGISTER_OP(EmbeddingOp);

// ---- rmsnorm (dx and dw accumulate) ----------------------------------------------------------------------------
struct RmsNormOp {
  static constexpr int R = 4, D = 16, kBlocks = 3;  // 3 row blocks of 2, 2, 0 rows
  static constexpr const char* name = "rmsnorm";
  static std::vector<size_t> input_sizes() { return {R * D, D}; }
  static std::vector<Grad> grads() { return {Grad::Accumulate, Grad::Accumulate}; }
  static size_t output_size() { return R * D; }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    std::vector<T> rstd(R);
    kk::rmsnorm_forward<T, T, D>(in[0].data(), in[1].data(), out.data(), rstd.data(), R, T(1e-5));
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    std::vector<T> y(R * D), rstd(R);
    kk::rmsnorm_forward<T, T, D>(in[0].data(), in[1].data(), y.data(), rstd.data(), R, T(1e-5));
    std::vector<T> partials(kBlocks * D);
    kk::rmsnorm_backward<T, T, D>(in[0].data(), in[1].data(), rstd.data(), dout.data(), din[0].data(), din[1].data(),
                                  partials.data(), kBlocks, R);
  }
};
KILN_REGISTER_OP(RmsNormOp);

// ---- rmsnorm strided: one head of a packed qkv row (QK-norm), dx overwritten ----------------------------------
struct RmsNormStridedOp {
  static constexpr int R = 5, HD = 8, XS = 3 * HD, YS = 4 * HD, DYS = 2 * HD + 3, DXS = HD + 5, OFF = HD;
  static constexpr const char* name = "rmsnorm_strided (qk-norm)";
  static std::vector<size_t> input_sizes() { return {R * HD, HD}; }
  static std::vector<Grad> grads() { return {Grad::Overwrite, Grad::Accumulate}; }
  static size_t output_size() { return R * HD; }
  template <class T>
  static std::vector<T> spread(const std::vector<T>& compact, int stride, T fill) {  // (R, HD) -> rows `stride` apart
    std::vector<T> s(size_t(R) * stride + OFF, fill);
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < HD; ++j) s[size_t(r) * stride + OFF + j] = compact[size_t(r) * HD + j];
    return s;
  }
  template <class T>
  static void gather(const std::vector<T>& s, int stride, std::vector<T>& compact) {
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < HD; ++j) compact[size_t(r) * HD + j] = s[size_t(r) * stride + OFF + j];
  }
  template <class T>
  static void fwd(const Tensors<T>& in, std::vector<T>& y, std::vector<T>& rstd) {
    std::vector<T> x = spread(in[0], XS, T(1e3));
    y.assign(size_t(R) * YS + OFF, T(7));
    kk::rmsnorm_forward_strided<T, T, HD>(x.data() + OFF, XS, in[1].data(), y.data() + OFF, YS, rstd.data(), R, T(1e-6));
  }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    std::vector<T> y, rstd(R);
    fwd(in, y, rstd);
    gather(y, YS, out);
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    std::vector<T> y, rstd(R);
    fwd(in, y, rstd);
    std::vector<T> x = spread(in[0], XS, T(1e3)), dy = spread(dout, DYS, T(-5)), dx = spread(din[0], DXS, T(9));
    std::vector<T> partials(2 * HD);
    kk::rmsnorm_backward_strided<T, T, HD>(x.data() + OFF, XS, in[1].data(), rstd.data(), dy.data() + OFF, DYS,
                                           dx.data() + OFF, DXS, din[1].data(), partials.data(), 2, R, false);
    gather(dx, DXS, din[0]);
  }
};
KILN_REGISTER_OP(RmsNormStridedOp);

// ---- rope on strided rows, positions restarting (packed documents) -------------------------------------------
struct RopeOp {
  static constexpr int R = 7, NHEADS = 3, HD = 8, STRIDE = NHEADS * HD + 5;
  static constexpr int32_t pos[R] = {0, 1, 2, 0, 1, 5, 7};
  static constexpr const char* name = "rope";
  static std::vector<size_t> input_sizes() { return {R * NHEADS * HD}; }
  static std::vector<Grad> grads() { return {Grad::Overwrite}; }
  static size_t output_size() { return R * NHEADS * HD; }
  template <class T>
  static const kk::RopeTable<T, HD>& table() {
    static const kk::RopeTable<T, HD> t(8, 50.0);
    return t;
  }
  template <class T>
  static void run(const std::vector<T>& src, std::vector<T>& dst, bool back) {
    std::vector<T> buf(size_t(R) * STRIDE, T(3));
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < NHEADS * HD; ++k) buf[size_t(r) * STRIDE + k] = src[size_t(r) * NHEADS * HD + k];
    if (back)
      kk::rope_backward<T, T, NHEADS, HD>(buf.data(), STRIDE, pos, R, table<T>());
    else
      kk::rope_forward<T, T, NHEADS, HD>(buf.data(), STRIDE, pos, R, table<T>());
    for (int r = 0; r < R; ++r) {
      for (int k = 0; k < NHEADS * HD; ++k) dst[size_t(r) * NHEADS * HD + k] = buf[size_t(r) * STRIDE + k];
      for (int k = NHEADS * HD; k < STRIDE; ++k) REQUIRE(buf[size_t(r) * STRIDE + k] == T(3));  // gaps untouched
    }
  }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    run(in[0], out, false);
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    run(dout, din[0], true);
  }
};
KILN_REGISTER_OP(RopeOp);

// ---- attention: B=2, T=9, GQA 4/2, several documents per row --------------------------------------------------
struct AttentionOp {
  static constexpr int B = 2, Tn = 9, NH = 4, NKV = 2, HD = 8, C = (NH + 2 * NKV) * HD;
  static constexpr int32_t doc_start[B * Tn] = {0, 0, 0, 0, 4, 4, 4, 7, 7,   //
                                                0, 1, 1, 3, 3, 3, 3, 3, 8};
  static constexpr const char* name = "attention";
  static std::vector<size_t> input_sizes() { return {B * Tn * C}; }
  static std::vector<Grad> grads() { return {Grad::Overwrite}; }
  static size_t output_size() { return B * Tn * NH * HD; }
  static void init(Tensors<double>& in, uint64_t seed) { kiln::testing::fill_uniform(in[0], seed, 7, -2, 2); }
  template <class T>
  static T scale() {
    return T(1) / std::sqrt(T(HD));
  }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    std::vector<T> lse(B * NH * Tn), scores(B * NH * Tn);
    kk::attention_forward<T, T, NH, NKV, HD>(in[0].data(), doc_start, out.data(), lse.data(), scores.data(), B, Tn,
                                             scale<T>());
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    std::vector<T> out(output_size()), lse(B * NH * Tn), scores(B * NH * Tn);
    kk::attention_forward<T, T, NH, NKV, HD>(in[0].data(), doc_start, out.data(), lse.data(), scores.data(), B, Tn,
                                             scale<T>());
    kk::attention_backward<T, T, NH, NKV, HD>(in[0].data(), doc_start, out.data(), lse.data(), dout.data(), din[0].data(),
                                           B, Tn, scale<T>());
  }
};
KILN_REGISTER_OP(AttentionOp);

// ---- attention by query blocks through the GEMM (what the CPU backend runs): blocks of 4 rows on T=9 --------
struct AttentionBlockedOp : AttentionOp {
  static constexpr int QB = 4;
  static constexpr const char* name = "attention (blocked, GEMM)";
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    std::vector<T> lse(B * NH * Tn), scratch(size_t(B) * NH * QB * Tn);
    kk::attention_forward_blocked<T, NH, NKV, HD, QB>(in[0].data(), doc_start, out.data(), lse.data(), scratch.data(), B,
                                                      Tn, scale<T>());
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    std::vector<T> out(output_size()), lse(B * NH * Tn), scratch(size_t(B) * NH * QB * Tn),
        bscratch(size_t(B) * NKV * 2 * QB * Tn);
    kk::attention_forward_blocked<T, NH, NKV, HD, QB>(in[0].data(), doc_start, out.data(), lse.data(), scratch.data(), B,
                                                      Tn, scale<T>());
    kk::attention_backward_blocked<T, NH, NKV, HD, QB>(in[0].data(), doc_start, out.data(), lse.data(), dout.data(),
                                                       din[0].data(), bscratch.data(), B, Tn, scale<T>());
  }
};
KILN_REGISTER_OP(AttentionBlockedOp);

// ---- swiglu ----------------------------------------------------------------------------------------------------
struct SwiGluOp {
  static constexpr int R = 3, F = 5;
  static constexpr const char* name = "swiglu";
  static std::vector<size_t> input_sizes() { return {R * 2 * F}; }
  static std::vector<Grad> grads() { return {Grad::Overwrite}; }
  static size_t output_size() { return R * F; }
  static void init(Tensors<double>& in, uint64_t seed) { kiln::testing::fill_uniform(in[0], seed, 9, -3, 3); }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    kk::swiglu_forward<T, T, F>(in[0].data(), out.data(), R);
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    kk::swiglu_backward<T, T, F>(in[0].data(), dout.data(), din[0].data(), R);
  }
};
KILN_REGISTER_OP(SwiGluOp);

// ---- LM head + cross-entropy + z-loss, chunked (chunk 3 < R 7), some targets ignored ---------------------------
struct LmHeadCeOp {
  static constexpr int V = 11, H = 6, R = 7, kChunk = 3;
  static constexpr int32_t targets[R] = {3, -1, 10, 0, -1, 5, 3};
  static constexpr double z_coef = 1e-2;
  static constexpr const char* name = "lm_head_cross_entropy";
  static std::vector<size_t> input_sizes() { return {R * H, V * H}; }
  static std::vector<Grad> grads() { return {Grad::Overwrite, Grad::Accumulate}; }
  static size_t output_size() { return 1; }
  static void init(Tensors<double>& in, uint64_t seed) {
    kiln::testing::fill_uniform(in[0], seed, 11, -2, 2);
    kiln::testing::fill_uniform(in[1], seed, 12, -1, 1);
  }
  template <class T>
  static void forward(const Tensors<T>& in, std::vector<T>& out) {
    std::vector<T> scratch(kChunk * V), loss(R), logp(R);
    out[0] = T(kk::lm_head_cross_entropy<T, V, H>(in[0].data(), in[1].data(), targets, R, T(z_coef), T(0), nullptr,
                                                  nullptr, scratch.data(), kChunk, loss.data(), logp.data()));
  }
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    std::vector<T> scratch(kChunk * V), loss(R), logp(R);
    kk::lm_head_cross_entropy<T, V, H>(in[0].data(), in[1].data(), targets, R, T(z_coef), dout[0], din[0].data(),
                                       din[1].data(), scratch.data(), kChunk, loss.data(), logp.data());
  }
};
KILN_REGISTER_OP(LmHeadCeOp);

}  // namespace

TEST_CASE("conformance: finite-difference gradients of every registered op") {
  const auto& ops = kiln::testing::op_registry();
  REQUIRE(ops.size() >= 9);
  for (const auto& op : ops) {
    SUBCASE(op.name.c_str()) {
      for (uint64_t seed : {1, 2}) {
        const auto rep = kiln::testing::check_gradients(op, seed);
        INFO(rep.message);
        CHECK(rep.ok);
      }
    }
  }
}

TEST_CASE("conformance: float agrees with double and repeats bitwise, for every registered op") {
  for (const auto& op : kiln::testing::op_registry()) {
    SUBCASE(op.name.c_str()) {
      const auto rep = kiln::testing::check_float_agreement(op, 3);
      INFO(rep.message);
      CHECK(rep.ok);
    }
  }
}

namespace {
// A linear op whose dW is wrong by 0.1% in one element, and one whose dx accumulates instead of overwriting.
struct BrokenLinearOp : LinearOp<false> {
  static constexpr const char* name = "broken linear";
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    T before = din[1][5];
    LinearOp<false>::backward(in, dout, din);
    din[1][5] += T(1e-3) * (din[1][5] - before);
  }
};
struct AccumulatingLinearOp : LinearOp<false> {
  static constexpr const char* name = "linear that accumulates dx";
  template <class T>
  static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din) {
    kk::linear_backward<T>(in[0].data(), in[1].data(), dout.data(), din[0].data(), din[1].data(), R, In, Out, true);
  }
};
template <class Op>
kiln::testing::OpCase unregistered_case() {
  auto& reg = kiln::testing::op_registry();
  kiln::testing::register_op<Op>();
  kiln::testing::OpCase c = reg.back();
  reg.pop_back();
  return c;
}
}  // namespace

TEST_CASE("conformance: the checker catches a wrong gradient") {
  const auto rep = kiln::testing::check_gradients(unregistered_case<BrokenLinearOp>());
  INFO(rep.message);
  CHECK_FALSE(rep.ok);
  CHECK(rep.message.find("input 1 element 5") != std::string::npos);
  const auto rep2 = kiln::testing::check_gradients(unregistered_case<AccumulatingLinearOp>());
  CHECK_FALSE(rep2.ok);
  CHECK(kiln::testing::check_gradients(unregistered_case<LinearOp<false>>()).ok);
}

TEST_CASE("lm_head_cross_entropy: logits_out, eval path, loss value, per-token losses and log-probabilities") {
  constexpr int V = 11, H = 6, R = 5;
  std::vector<double> x(R * H), W(V * H);
  kiln::testing::fill_uniform(x, 5, 1);
  kiln::testing::fill_uniform(W, 5, 2);
  const int32_t targets[R] = {2, -1, 0, 10, 4};
  std::vector<double> logits(R * V), ref(R * V), scratch(2 * V), loss_r(R, 9.0), logp_r(R, 9.0);
  kk::linear_forward<double>(x.data(), W.data(), ref.data(), R, H, V);
  const double z = 1e-2;
  const double loss = kk::lm_head_cross_entropy<double, V, H>(x.data(), W.data(), targets, R, z, 0.0, nullptr, nullptr,
                                                              scratch.data(), 2, loss_r.data(), logp_r.data(),
                                                              logits.data());
  double expect = 0;
  for (int r = 0; r < R; ++r) {
    double s = 0;
    for (int j = 0; j < V; ++j) {
      CHECK(logits[r * V + j] == doctest::Approx(ref[r * V + j]).epsilon(1e-12));
      s += std::exp(ref[r * V + j]);
    }
    const double lse = std::log(s);
    const double row = targets[r] >= 0 ? lse - ref[r * V + targets[r]] + z * lse * lse : 0.0;
    const double logp = targets[r] >= 0 ? ref[r * V + targets[r]] - lse : 0.0;  // log softmax at the target
    CHECK(loss_r[r] == doctest::Approx(row).epsilon(1e-12));
    CHECK(logp_r[r] == doctest::Approx(logp).epsilon(1e-12));
    expect += row;
  }
  CHECK(loss == doctest::Approx(expect).epsilon(1e-12));
  // no targets at all: loss 0, logits still written
  std::vector<double> logits2(R * V, 0.0);
  CHECK(kk::lm_head_cross_entropy<double, V, H>(x.data(), W.data(), nullptr, R, z, 0.0, nullptr, nullptr,
                                                scratch.data(), 2, loss_r.data(), logp_r.data(), logits2.data()) == 0.0);
  CHECK(logits2 == logits);
}

TEST_CASE("validate_batch: every bad id names the row, the position and what was expected") {
  constexpr int B = 1, T = 4, V = 10;
  std::vector<int32_t> tok = {1, 2, 3, 4}, tgt = {2, 3, 4, -1}, pos = {0, 1, 0, 1}, ds = {0, 0, 2, 2};
  const kiln::backend::Batch ok{tok.data(), tgt.data(), pos.data(), ds.data()};
  CHECK_NOTHROW(kiln::backend::validate_batch(ok, B, T, V, T));
  auto fails = [&](std::vector<int32_t>& v, size_t i, int32_t bad, const char* what) {
    const int32_t keep = v[i];
    v[i] = bad;
    std::string msg;
    try {
      kiln::backend::validate_batch(ok, B, T, V, T);
    } catch (const kiln::Error& e) {
      msg = e.what();
    }
    v[i] = keep;
    INFO(msg);
    CHECK(msg.find(what) != std::string::npos);
    CHECK(msg.find("position " + std::to_string(i)) != std::string::npos);
  };
  fails(tok, 2, 10, "token id 10 at row 0");
  fails(tok, 1, -1, "outside the model's vocabulary [0, 10)");
  fails(tgt, 0, 11, "target 11 at row 0");
  fails(pos, 3, 4, "position id 4");
  fails(ds, 1, 2, "doc_start 2 at row 0");
}

TEST_CASE("rope: position 0 is the identity; HF rotate_half at position 1") {
  kk::RopeTable<double, 4> t(3, 10000.0);
  std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8};
  const int32_t p0[2] = {0, 0};
  auto y = x;
  kk::rope_forward<double, double, 1, 4>(y.data(), 4, p0, 2, t);
  CHECK(y == x);
  // HF rotate_half at position 1, HD 4: inv_freq = {1, 1/100}
  const int32_t p1[1] = {1};
  std::vector<double> z = {1, 2, 3, 4};
  kk::rope_forward<double, double, 1, 4>(z.data(), 4, p1, 1, t);
  CHECK(z[0] == doctest::Approx(1 * std::cos(1.0) - 3 * std::sin(1.0)));
  CHECK(z[2] == doctest::Approx(3 * std::cos(1.0) + 1 * std::sin(1.0)));
  CHECK(z[1] == doctest::Approx(2 * std::cos(0.01) - 4 * std::sin(0.01)));
  CHECK(z[3] == doctest::Approx(4 * std::cos(0.01) + 2 * std::sin(0.01)));
}

namespace {
using kiln::RNoPE, kiln::RoPE, kiln::RopeScaling, kiln::YaRN, kiln::rope_inv_freq;
// One case of tests/fixtures/yarn.json (transformers' YaRN, tests/reference/make_yarn_fixture.py) against the policy
// type that should mean it: its scaling (the DSL's fields), inv_freq and attention factor (kiln/core/rope_scaling.hpp),
// and the cos / sin of Kiln's RoPE table (in transformers' rotate_half layout: both halves the same).
template <int HD, class Policy>
void yarn_case(const nlohmann::json& fx, const char* name) {
  CAPTURE(name);
  const nlohmann::json& c = fx.at("cases").at(name);
  const auto& cfg = c.at("config");
  CHECK(cfg.at("head_dim").get<int>() == HD);
  CHECK(Policy::theta == cfg.at("theta").get<double>());
  constexpr RopeScaling s = Policy::scaling;
  static_assert(s.yarn);
  CHECK(s.factor == cfg.at("factor").get<double>());
  CHECK(s.original_max == cfg.at("original").get<int>());
  const std::vector<double> f = rope_inv_freq(HD, Policy::theta, s);
  const auto want = c.at("inv_freq").get<std::vector<double>>();
  REQUIRE(f.size() == want.size());
  for (size_t i = 0; i < f.size(); ++i) {
    CAPTURE(i);
    CHECK(f[i] == doctest::Approx(want[i]).epsilon(2e-7));  // transformers' float32
  }
  CHECK(s.attention() == doctest::Approx(c.at("attention_factor").get<double>()).epsilon(1e-12));
  const auto pos = c.at("positions").get<std::vector<int>>();
  const kk::RopeTable<float, HD> t(pos.back() + 1, Policy::theta, s);
  for (size_t k = 0; k < pos.size(); ++k)
    for (int i = 0; i < HD; ++i) {  // transformers' cos / sin repeat the HD/2 frequencies in both halves
      const size_t at = size_t(pos[k]) * (HD / 2) + size_t(i % (HD / 2));
      CHECK(t.cos[at] == doctest::Approx(c.at("cos")[k][size_t(i)].get<double>()).epsilon(1e-5).scale(1.0));
      CHECK(t.sin[at] == doctest::Approx(c.at("sin")[k][size_t(i)].get<double>()).epsilon(1e-5).scale(1.0));
    }
}
}  // namespace

TEST_CASE("YaRN: inverse frequencies, attention factor and RoPE tables equal transformers' (tests/fixtures/yarn.json)") {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/yarn.json");
  REQUIRE(in.good());
  const nlohmann::json fx = nlohmann::json::parse(in);
  MESSAGE("fixture from transformers ", fx.at("transformers").get<std::string>());
  yarn_case<128, YaRN<RNoPE<4, 5'000'000.0>, 2.0, 65536>>(fx, "smollm3_128k");  // SmolLM3 at 128k
  yarn_case<16, YaRN<RoPE<10000.0>, 4.0, 32>>(fx, "small");
  yarn_case<64, YaRN<RoPE<500000.0>, 8.0, 4096, 16.0, 2.0, 0.9>>(fx, "betas");
  yarn_case<32, YaRN<RoPE<10000.0>, 3.0, 64, 32.0, 1.0, 0.0, false>>(fx, "no_truncate");
  // the policy keeps its base's layers and theta; the table without scaling is plain RoPE's
  using P = YaRN<RNoPE<4, 5'000'000.0>, 2.0, 65536>;
  static_assert(P::interval == 4 && !P::uses_rope(3, 36) && P::uses_rope(4, 36) && P::theta == 5e6);
  static_assert(!RNoPE<4, 5e6>::scaling.yarn && RNoPE<4, 5e6>::scaling.attention_factor == 0);
  const std::vector<double> plain = rope_inv_freq(8, 100.0, {});
  CHECK(plain[1] == doctest::Approx(std::pow(100.0, -0.25)));
}

TEST_CASE("adamw: two steps against a hand computation") {
  // p0 = 1, grads 0.5 then -0.25 (before grad_scale 2), lr 0.1, b1 0.9, b2 0.99, eps 1e-8, wd 0.01
  const double lr = 0.1, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.01, gs = 2.0;
  double p = 1, m = 0, v = 0;
  const double grads[2] = {0.5, -0.25};
  double hp = 1, hm = 0, hv = 0;
  for (int t = 1; t <= 2; ++t) {
    kk::adamw_update<double>(&p, &grads[t - 1], &m, &v, 1, {lr, b1, b2, eps, wd, t, gs});
    const double g = grads[t - 1] * gs;
    hm = b1 * hm + (1 - b1) * g;
    hv = b2 * hv + (1 - b2) * g * g;
    const double mhat = hm / (1 - std::pow(b1, t)), vhat = hv / (1 - std::pow(b2, t));
    hp -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * hp);
  }
  // by hand: step 1: g=1, m=.1, v=.01, mhat=1, vhat=1 -> p = 1 - .1*(1 + .01) = 0.899
  // step 2: g=-.5, m=.09-.05=.04, v=.0099+.0025=.0124, mhat=.04/.19, vhat=.0124/.0199
  const double p1 = 1 - 0.1 * (1 / (1 + 1e-8) + 0.01);
  const double mhat2 = 0.04 / 0.19, vhat2 = 0.0124 / 0.0199;
  const double p2 = p1 - 0.1 * (mhat2 / (std::sqrt(vhat2) + 1e-8) + 0.01 * p1);
  CHECK(p == doctest::Approx(p2).epsilon(1e-12));
  CHECK(hp == doctest::Approx(p2).epsilon(1e-12));
  CHECK(m == doctest::Approx(0.04).epsilon(1e-12));
  CHECK(v == doctest::Approx(0.0124).epsilon(1e-12));
  // float path on many elements matches the double one
  const size_t n = 1000;
  std::vector<float> pf(n), gf(n), mf(n, 0.f), vf(n, 0.f);
  std::vector<double> pd(n), gd(n), md(n, 0.0), vd(n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    pf[i] = float(kiln::uniform01(9, 1, i) - 0.5);
    gf[i] = float(kiln::uniform01(9, 2, i) - 0.5);
    pd[i] = pf[i];
    gd[i] = gf[i];
  }
  for (long t = 1; t <= 3; ++t) {
    kk::adamw_update<float>(pf.data(), gf.data(), mf.data(), vf.data(), n, {1e-3, 0.9, 0.95, 1e-8, 0.1, t, 0.5});
    kk::adamw_update<double>(pd.data(), gd.data(), md.data(), vd.data(), n, {1e-3, 0.9, 0.95, 1e-8, 0.1, t, 0.5});
  }
  for (size_t i = 0; i < n; ++i) REQUIRE(std::abs(double(pf[i]) - pd[i]) < 1e-6);
}

TEST_CASE("adamw_flat: one pass over the flat buffer equals per-range updates with the decay mask") {
  // Ranges cut across the 16384-value chunks of the fused pass, so chunks meet several ranges.
  const size_t n = 40000;
  const std::vector<kiln::plan::DecayRange> ranges = {{0, 100, false}, {100, 20000, true}, {20000, 20001, false},
                                                      {20001, 39000, true}, {39000, n, false}};
  std::vector<float> p(n), g(n), m(n, 0.f), v(n, 0.f);
  for (size_t i = 0; i < n; ++i) p[i] = float(kiln::uniform01(5, 1, i) - 0.5), g[i] = float(kiln::uniform01(5, 2, i) - 0.5);
  auto p2 = p, m2 = m, v2 = v;
  for (long t = 1; t <= 2; ++t) {
    const kiln::AdamWStep a{1e-2, 0.9, 0.95, 1e-8, 0.1, t, 0.7};
    kk::adamw_flat(p.data(), g.data(), m.data(), v.data(), n, ranges.data(), int(ranges.size()), a);
    for (const auto& r : ranges) {
      kiln::AdamWStep ar = a;
      ar.weight_decay = r.decay ? a.weight_decay : 0.0;
      kk::adamw_update(p2.data() + r.begin, g.data() + r.begin, m2.data() + r.begin, v2.data() + r.begin,
                       r.end - r.begin, ar);
    }
  }
  CHECK(p == p2);
  CHECK(m == m2);
  CHECK(v == v2);
}

TEST_CASE("sum_squares: exact on integers, deterministic, every length") {
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(9), size_t(100000)}) {
    std::vector<float> x(n);
    double expect = 0;
    for (size_t i = 0; i < n; ++i) {
      x[i] = float(int(i % 13) - 6);
      expect += double(x[i]) * x[i];
    }
    std::vector<double> partials(kk::sum_squares_partials(n));
    CHECK(kk::sum_squares(x.data(), n, partials.data()) == expect);
  }
  std::vector<float> y(200001);
  for (size_t i = 0; i < y.size(); ++i) y[i] = float(kiln::uniform01(3, 0, i));
  std::vector<double> partials(kk::sum_squares_partials(y.size()));
  const double a = kk::sum_squares(y.data(), y.size(), partials.data());
  omp_set_num_threads(1);
  const double b = kk::sum_squares(y.data(), y.size(), partials.data());
  omp_set_num_threads(2);
  CHECK(std::memcmp(&a, &b, sizeof a) == 0);
  double ref = 0;
  for (float v : y) ref += double(v) * v;
  CHECK(a == doctest::Approx(ref).epsilon(1e-12));
}

TEST_CASE("embedding_backward: bitwise independent of the thread count") {
  constexpr int V = 5, H = 200, R = 64;
  std::vector<int32_t> tok(R);
  for (int r = 0; r < R; ++r) tok[r] = (r * 7) % V;
  std::vector<float> dout(R * H);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = float(kiln::uniform01(4, 0, i));
  std::vector<float> a(V * H, 0.f), b(V * H, 0.f);
  kk::embedding_backward<float, float, H>(tok.data(), R, dout.data(), a.data());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  kk::embedding_backward<float, float, H>(tok.data(), R, dout.data(), b.data());
  omp_set_num_threads(saved);
  CHECK(a == b);
}

TEST_CASE("rmsnorm_backward: dw bitwise independent of the thread count (fixed row blocks)") {
  constexpr int R = 300, D = 32, kBlocks = 64;
  std::vector<float> x(R * D), w(D), dy(R * D), rstd(R), y(R * D);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(kiln::uniform01(6, 0, i) - 0.5), dy[i] = float(kiln::uniform01(6, 1, i));
  for (int j = 0; j < D; ++j) w[j] = float(1 + 0.1 * j);
  kk::rmsnorm_forward<float, float, D>(x.data(), w.data(), y.data(), rstd.data(), R, 1e-6f);
  std::vector<float> dx1(R * D), dw1(D, 0.f), dx2(R * D), dw2(D, 0.f), partials(kBlocks * D);
  kk::rmsnorm_backward<float, float, D>(x.data(), w.data(), rstd.data(), dy.data(), dx1.data(), dw1.data(), partials.data(),
                                        kBlocks, R, false);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  kk::rmsnorm_backward<float, float, D>(x.data(), w.data(), rstd.data(), dy.data(), dx2.data(), dw2.data(), partials.data(),
                                        kBlocks, R, false);
  omp_set_num_threads(saved);
  CHECK(dw1 == dw2);
  CHECK(dx1 == dx2);
}

// Storage and compute are separate template parameters: bf16 storage with fp32 compute is expressible and agrees
// with fp32 storage within bf16 rounding (8 bits of mantissa: relative 2^-8 per stored value).
TEST_CASE("kernels with bf16 storage and fp32 compute agree with fp32 within bf16 rounding") {
  using kiln::bf16;
  constexpr int R = 6, D = 64, F = 48;
  std::vector<float> x(R * D), w(D), gu(R * 2 * F);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(kiln::uniform01(8, 0, i) * 4 - 2);
  for (int j = 0; j < D; ++j) w[j] = float(0.5 + kiln::uniform01(8, 1, j));
  for (size_t i = 0; i < gu.size(); ++i) gu[i] = float(kiln::uniform01(8, 2, i) * 6 - 3);
  auto narrow = [](const std::vector<float>& v) {
    std::vector<bf16> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = bf16(v[i]);
    return o;
  };
  auto widen = [](const std::vector<bf16>& v) {
    std::vector<float> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = float(v[i]);
    return o;
  };
  auto close = [](const std::vector<float>& a, const std::vector<float>& ref, double rel) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - ref[i]))), scale = std::max(scale, double(std::abs(ref[i])));
    return worst <= rel * scale;
  };
  // the fp32 reference runs on the bf16-rounded inputs, so only the narrowing of outputs and intermediates differs
  const std::vector<bf16> xb = narrow(x), wb = narrow(w), gub = narrow(gu);
  const std::vector<float> xr = widen(xb), wr = widen(wb), gur = widen(gub);
  std::vector<float> y(R * D), rstd(R), rstd_b(R), h(R * F);
  std::vector<bf16> yb(R * D), hb(R * F);
  kk::rmsnorm_forward<float, float, D>(xr.data(), wr.data(), y.data(), rstd.data(), R, 1e-6f);
  kk::rmsnorm_forward<bf16, float, D>(xb.data(), wb.data(), yb.data(), rstd_b.data(), R, 1e-6f);
  CHECK(rstd_b == rstd);  // statistics are computed in fp32 from the same values
  CHECK(close(widen(yb), y, 1.0 / 256));
  kk::swiglu_forward<float, float, F>(gur.data(), h.data(), R);
  kk::swiglu_forward<bf16, float, F>(gub.data(), hb.data(), R);
  CHECK(close(widen(hb), h, 1.0 / 256));
  std::vector<float> dgu(R * 2 * F);
  std::vector<bf16> dgub(R * 2 * F);
  const std::vector<bf16> dhb = narrow(h);
  const std::vector<float> dhr = widen(dhb);
  kk::swiglu_backward<float, float, F>(gur.data(), dhr.data(), dgu.data(), R);
  kk::swiglu_backward<bf16, float, F>(gub.data(), dhb.data(), dgub.data(), R);
  CHECK(close(widen(dgub), dgu, 1.0 / 256));
}

TEST_CASE("swiglu_backward in place (dgu over gu, as the plan runs it) equals out of place") {
  constexpr int R = 5, F = 24;
  std::vector<float> gu(R * 2 * F), dh(R * F), dgu(R * 2 * F);
  for (size_t i = 0; i < gu.size(); ++i) gu[i] = float(kiln::uniform01(10, 0, i) * 6 - 3);
  for (size_t i = 0; i < dh.size(); ++i) dh[i] = float(kiln::uniform01(10, 1, i) - 0.5);
  kk::swiglu_backward<float, float, F>(gu.data(), dh.data(), dgu.data(), R);
  kk::swiglu_backward<float, float, F>(gu.data(), dh.data(), gu.data(), R);
  CHECK(gu == dgu);
}

TEST_CASE("exp_vec: within 2 ulp of exp (double) over the float range, expf's edges, and the loops vectorize to it") {
  using kiln::kernels::exp_vec;
  double worst = 0;
  float worst_x = 0;
  long checked = 0;
  for (uint64_t b = 0; b <= 0xffffffffull; b += 4099) {  // every 4099th bit pattern: all exponents, both signs
    float x;
    const uint32_t u = uint32_t(b);
    std::memcpy(&x, &u, sizeof x);
    if (!std::isfinite(x) || x < -110.0f || x > 90.0f) continue;
    const double want = std::exp(double(x));
    const float got = exp_vec(x), wf = float(want);
    if (wf == 0.0f || std::isinf(wf)) {
      CHECK_MESSAGE((got == wf || std::fabs(double(got) - want) <= 1.5e-45), "x = ", x);
      continue;
    }
    const double ulp = double(std::nextafter(std::fabs(wf), INFINITY)) - double(std::fabs(wf));
    const double e = std::fabs(double(got) - want) / ulp;
    if (e > worst) worst = e, worst_x = x;
    ++checked;
  }
  CHECK(checked > 400000);
  CHECK_MESSAGE(worst <= 2.0, "worst ", worst, " ulp at x = ", worst_x);
  CHECK(exp_vec(0.0f) == 1.0f);
  CHECK(exp_vec(-INFINITY) == 0.0f);
  CHECK(exp_vec(-104.5f) == 0.0f);
  CHECK(std::isinf(exp_vec(INFINITY)));
  CHECK(std::isinf(exp_vec(88.8f)));
  CHECK(exp_vec(88.7f) > 1e38f);
  CHECK(std::isnan(exp_vec(NAN)));
  CHECK(exp_vec(-100.0f) > 0.0f);  // a subnormal, not flushed
  CHECK(exp_vec(1.0) == std::exp(1.0));  // double: libm
}
