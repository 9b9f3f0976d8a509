// tests/gpu/test_kernels_gpu.cu: Kiln's CUDA kernels on the GPU against the CPU kernels (the cases of
// tests/kernels_cuda_cases.hpp, which CPU CI also runs in the SIMT layer). ctest label `gpu`: without a CUDA device
// it prints "skipped: no CUDA device" and ctest counts it as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#define KC_WHERE "cuda kernels on the GPU"
#include "../kernels_cuda_cases.hpp"

#include <cstdio>

#include "kiln/backend/cuda/runtime.hpp"

#if defined(KILN_HAVE_CUDNN)
#include <algorithm>

#include "kiln/backend/cuda/sdpa.hpp"
#include "kiln/plan/program.hpp"

namespace {

// largest |got - want| over the largest |want|: cuDNN rounds the probabilities to bf16 before P V, so its error
// scales with the output's magnitude rather than each element's
template <class S>
double relative_max_error(const std::vector<S>& got, const std::vector<S>& want) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = float(got[i]), b = float(want[i]);
    err = std::max(err, std::isfinite(a) ? std::fabs(a - b) : INFINITY);
    mag = std::max(mag, std::fabs(b));
  }
  return err / mag;
}

// cuDNN's SDPA over the plan's buffers (backend/cuda/sdpa.hpp) against the CPU reference of kernels/attention.hpp,
// computed in fp32 from the same bf16 inputs: documents of several lengths in each row (one of length 1), GQA.
template <int NH, int NKV, int HD>
void cudnn_attention_case(int T) {
  using S = kiln::bf16;
  constexpr int B = 2, C = (NH + 2 * NKV) * HD;
  const int R = B * T;
  const float scale = 1.f / std::sqrt(float(HD));
  const auto qkv = kc::random<S>(size_t(R) * C, 26, 2.0), dout = kc::random<S>(size_t(R) * NH * HD, 27);
  // row 0: three documents, the middle one 1 long; row 1: one document the whole row
  std::vector<int32_t> ds;
  const int32_t third = T / 3;
  for (int t = 0; t < T; ++t) ds.push_back(t < third ? 0 : t == third ? third : third + 1);
  for (int t = 0; t < T; ++t) ds.push_back(0);
  std::vector<float> qkv_f(qkv.size()), dout_f(dout.size()), out_f(dout.size()), dqkv_f(qkv.size());
  for (size_t i = 0; i < qkv.size(); ++i) qkv_f[i] = float(qkv[i]);
  for (size_t i = 0; i < dout.size(); ++i) dout_f[i] = float(dout[i]);
  std::vector<float> lse(size_t(R) * NH), scores(size_t(R) * NH);
  kiln::kernels::attention_forward<float, float, NH, NKV, HD>(qkv_f.data(), ds.data(), out_f.data(), lse.data(),
                                                              scores.data(), B, T, scale);
  kiln::kernels::attention_backward<float, float, NH, NKV, HD>(qkv_f.data(), ds.data(), out_f.data(), lse.data(),
                                                               dout_f.data(), dqkv_f.data(), B, T, scale);
  std::vector<S> out_ref(out_f.size()), dqkv_ref(qkv.size());
  for (size_t i = 0; i < out_f.size(); ++i) out_ref[i] = S(out_f[i]);
  for (size_t i = 0; i < dqkv_f.size(); ++i) dqkv_ref[i] = S(dqkv_f[i]);

  // the plan's buffers have one more row, the dummy slots' scratch
  const size_t ws_bytes = kiln::plan::sdpa_workspace_bytes(NH, NKV, HD, R + 1);
  auto padded = [](std::vector<S> v, size_t width) {
    v.resize(v.size() + width, S(0.f));
    return v;
  };
  auto first_rows = [&](std::vector<S> v, size_t width) {
    v.resize(size_t(R) * width);
    return v;
  };
  kc::DevVec<std::byte> ws(ws_bytes), meta(kiln::plan::sdpa_metadata_bytes(R + 1));
  // the host's copy of the metadata: pageable here, so each copy has read it when cudaMemcpyAsync returns
  std::vector<std::byte> host_meta(kiln::plan::sdpa_metadata_bytes(R + 1));
  kc::DevVec<S> d_qkv(padded(qkv, C)), d_out(size_t(R + 1) * NH * HD), d_dout(padded(dout, NH * HD)),
      d_dqkv(size_t(R + 1) * C);
  kc::DevVec<float> d_lse(size_t(R + 1) * NH);
  kiln::backend::cuda::Sdpa sdpa({NH, NKV, HD, R, T, scale}, ws.data(), ws_bytes, meta.data());
  sdpa.set_batch(ds.data(), B, T, host_meta.data(), nullptr);
  CHECK(sdpa.slots() == 4);
  CHECK(sdpa.padded_slots() == 4);
  sdpa.forward(d_qkv.data(), d_out.data(), d_lse.data(), nullptr);
  const double e_out = relative_max_error(first_rows(d_out.host(), NH * HD), out_ref);
  sdpa.backward(d_qkv.data(), d_out.data(), d_lse.data(), d_dout.data(), d_dqkv.data(), nullptr);
  const double e_dqkv = relative_max_error(first_rows(d_dqkv.host(), C), dqkv_ref);
  std::printf("cuDNN attention %d/%d heads of %d, T %d: out %.2e, dqkv %.2e (relative to the largest); workspace "
              "%zu of %zu reserved\n", NH, NKV, HD, T, e_out, e_dqkv, sdpa.largest_workspace(), ws_bytes);
  CHECK(e_out < 2e-2);
  CHECK(e_dqkv < 4e-2);
  // documents of 16 tokens: another bucket, another graph pair; the first batch again reuses its graphs
  std::vector<int32_t> ds2;
  for (int i = 0; i < R; ++i) ds2.push_back((i % T) / 16 * 16);
  sdpa.set_batch(ds2.data(), B, T, host_meta.data(), nullptr);
  CHECK(sdpa.graphs_built() == 2);
  sdpa.set_batch(ds.data(), B, T, host_meta.data(), nullptr);
  CHECK(sdpa.graphs_built() == 2);
  // five documents run in a bucket of eight, three of them dummies in the scratch row: the same values
  std::vector<int32_t> ds5 = ds;
  for (int t = T / 2; t < T; ++t) ds5[size_t(T + t)] = T / 2;  // row 1: two documents
  sdpa.set_batch(ds5.data(), B, T, host_meta.data(), nullptr);
  CHECK(sdpa.slots() == 5);
  CHECK(sdpa.padded_slots() == 8);
  std::vector<float> out5(dout.size()), lse5(size_t(R) * NH), dqkv5(qkv.size());
  kiln::kernels::attention_forward<float, float, NH, NKV, HD>(qkv_f.data(), ds5.data(), out5.data(), lse5.data(),
                                                              scores.data(), B, T, scale);
  kiln::kernels::attention_backward<float, float, NH, NKV, HD>(qkv_f.data(), ds5.data(), out5.data(), lse5.data(),
                                                               dout_f.data(), dqkv5.data(), B, T, scale);
  std::vector<S> out5_ref(out5.size()), dqkv5_ref(dqkv5.size());
  for (size_t i = 0; i < out5.size(); ++i) out5_ref[i] = S(out5[i]);
  for (size_t i = 0; i < dqkv5.size(); ++i) dqkv5_ref[i] = S(dqkv5[i]);
  sdpa.forward(d_qkv.data(), d_out.data(), d_lse.data(), nullptr);
  CHECK(relative_max_error(first_rows(d_out.host(), NH * HD), out5_ref) < 2e-2);
  sdpa.backward(d_qkv.data(), d_out.data(), d_lse.data(), d_dout.data(), d_dqkv.data(), nullptr);
  CHECK(relative_max_error(first_rows(d_dqkv.host(), C), dqkv5_ref) < 4e-2);
}

}  // namespace

TEST_CASE("cuDNN attention (ragged documents, causal, GQA) against the CPU reference, forward and backward") {
  cudnn_attention_case<8, 2, 64>(256);
  cudnn_attention_case<16, 4, 128>(384);  // SmolLM3's heads
  cudnn_attention_case<4, 1, 128>(100);   // MQA, a row not a multiple of cuDNN's tiles
}
#endif

int main(int argc, char** argv) {
  if (!kiln::backend::cuda::device_or_skip()) return 0;
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  if (p.major < 9) {
    std::printf("test_kernels_gpu: device 0 is %s (sm_%d%d); this build is for sm_90a (H100 / H200)\n", p.name,
                p.major, p.minor);
    return 1;
  }
  std::printf("test_kernels_gpu: %s\n", p.name);
#if defined(KILN_HAVE_CUDNN)
  std::printf("test_kernels_gpu: cuDNN %s\n", kiln::backend::cuda::sdpa_cudnn_version().c_str());
#endif
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
