// kiln/backend/cuda/gemm.hpp: the CUDA backend's matrix products, in the HF nn.Linear convention (row-major, W is
// (out, in)):
//   linear_forward   y (M, N) = x (M, K) W^T          y in S (an activation) or fp32 (the LM head's logits tile)
//   linear_dx        dx (M, K) = dy (M, N) W          overwritten, in S
//   linear_dw        dW (N, K) += dy^T x              fp32, accumulated (the parameter gradients)
// nvcc: cuBLASLt with S inputs, fp32 accumulation (CUBLAS_COMPUTE_32F) and the workspace the plan counts
// (plan::kGemmWorkspace, from the backend). Each distinct (shape, transposes, types) gets its descriptors and the
// heuristic's first algorithm once, the first time it is used, and keeps them: a step's products are the same every
// step, so after the first step nothing is chosen again (and a captured CUDA graph replays the same algorithms).
// Row-major products map to cuBLAS's column-major ones by transposing the whole equation (C^T = B^T A^T).
// g++ (the SIMT layer): the CPU's OpenBLAS products (kernels/gemm.hpp) over fp32 copies of bf16 operands; only for
// running the CUDA backend's code on the CPU in tests.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/device.hpp"
#include "kiln/core/bf16.hpp"
#include "kiln/core/error.hpp"

#if defined(__CUDACC__)
#include <cublasLt.h>

#include <unordered_map>
#else
#include "kernels/gemm.hpp"
#endif

namespace kiln::backend::cuda {

#if defined(__CUDACC__)

namespace detail {
template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else return CUDA_R_16BF;  // kiln::bf16: the bits of __nv_bfloat16
}
inline void check_lt(cublasStatus_t s, const char* what) {
  KILN_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt: ", what, " failed (status ", int(s), ")");
}
}  // namespace detail

class Gemm {
 public:
  Gemm(void* workspace, size_t bytes) : ws_(workspace), ws_bytes_(bytes) {
    detail::check_lt(cublasLtCreate(&h_), "cublasLtCreate");
  }
  ~Gemm() {
    for (auto& [k, p] : plans_) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    cublasLtDestroy(h_);
  }
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  template <class S, class Y>
  void linear_forward(const S* x, const S* W, Y* y, int M, int K, int N, gpu::Stream s) {
    matmul<S, Y>(true, false, N, M, K, W, K, x, K, y, N, 0.f, s);
  }
  template <class S>
  void linear_dx(const S* dy, const S* W, S* dx, int M, int K, int N, gpu::Stream s) {
    matmul<S, S>(false, false, K, M, N, W, K, dy, N, dx, K, 0.f, s);
  }
  template <class S>
  void linear_dw(const S* dy, const S* x, float* dW, int M, int K, int N, gpu::Stream s) {
    matmul<S, float>(false, true, K, N, M, x, K, dy, N, dW, K, 1.f, s);
  }

 private:
  struct Key {
    bool ta, tb;
    int m, n, k, lda, ldb, ldc;
    cudaDataType_t in, out;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const {
      size_t h = size_t(k.ta) | size_t(k.tb) << 1 | size_t(k.in) << 2 | size_t(k.out) << 10;
      for (int v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldc}) h = h * 1000003u ^ size_t(v);
      return h;
    }
  };
  struct Plan {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
  };

  // Column-major C (m, n) = beta C + op(A) (m, k) op(B) (k, n).
  template <class S, class Y>
  void matmul(bool ta, bool tb, int m, int n, int k, const S* A, int lda, const S* B, int ldb, Y* C, int ldc,
              float beta, gpu::Stream s) {
    const Key key{ta, tb, m, n, k, lda, ldb, ldc, detail::cuda_type<S>(), detail::cuda_type<Y>()};
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(key)).first;
    const Plan& p = it->second;
    const float alpha = 1.f;
    detail::check_lt(cublasLtMatmul(h_, p.op, &alpha, A, p.a, B, p.b, &beta, C, p.c, C, p.c, &p.algo, ws_, ws_bytes_,
                                    s),
                     "cublasLtMatmul");
  }

  Plan make_plan(const Key& k) {
    Plan p{};
    detail::check_lt(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t ta = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    detail::check_lt(cublasLtMatrixLayoutCreate(&p.a, k.in, k.ta ? k.k : k.m, k.ta ? k.m : k.k, k.lda), "layout A");
    detail::check_lt(cublasLtMatrixLayoutCreate(&p.b, k.in, k.tb ? k.n : k.k, k.tb ? k.k : k.n, k.ldb), "layout B");
    detail::check_lt(cublasLtMatrixLayoutCreate(&p.c, k.out, k.m, k.n, k.ldc), "layout C");
    cublasLtMatmulPreference_t pref;
    detail::check_lt(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes_, sizeof ws_bytes_);
    cublasLtMatmulHeuristicResult_t r{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h_, p.op, p.a, p.b, p.c, p.c, pref, 1, &r, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    KILN_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0, "cuBLASLt: no algorithm for a ", k.m, " x ", k.n, " x ",
               k.k, " product (", k.in == CUDA_R_16BF ? "bf16" : "fp32", " in, ",
               k.out == CUDA_R_16BF ? "bf16" : "fp32", " out; status ", int(st), ")");
    p.algo = r.algo;
    return p;
  }

  cublasLtHandle_t h_{};
  void* ws_;
  size_t ws_bytes_;
  std::unordered_map<Key, Plan, KeyHash> plans_;
};

#else  // the SIMT layer: the CPU's products

class Gemm {
 public:
  Gemm(void*, size_t) {}

  template <class S, class Y>
  void linear_forward(const S* x, const S* W, Y* y, int M, int K, int N, gpu::Stream) {
    if constexpr (std::is_same_v<S, float> && std::is_same_v<Y, float>) {
      kernels::linear_forward<float>(x, W, y, M, K, N);
    } else {
      const auto xf = widen(x, size_t(M) * K), wf = widen(W, size_t(N) * K);
      std::vector<float> yf(size_t(M) * N);
      kernels::linear_forward<float>(xf.data(), wf.data(), yf.data(), M, K, N);
      for (size_t i = 0; i < yf.size(); ++i) y[i] = Y(yf[i]);
    }
  }
  template <class S>
  void linear_dx(const S* dy, const S* W, S* dx, int M, int K, int N, gpu::Stream) {
    const auto dyf = widen(dy, size_t(M) * N), wf = widen(W, size_t(N) * K);
    std::vector<float> dxf(size_t(M) * K);
    kernels::gemm<float>(false, false, M, K, N, 1.f, dyf.data(), N, wf.data(), K, 0.f, dxf.data(), K);
    for (size_t i = 0; i < dxf.size(); ++i) dx[i] = S(dxf[i]);
  }
  template <class S>
  void linear_dw(const S* dy, const S* x, float* dW, int M, int K, int N, gpu::Stream) {
    const auto dyf = widen(dy, size_t(M) * N), xf = widen(x, size_t(M) * K);
    kernels::gemm<float>(true, false, N, K, M, 1.f, dyf.data(), N, xf.data(), K, 1.f, dW, K);
  }

 private:
  template <class S>
  static std::vector<float> widen(const S* p, size_t n) {
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = float(p[i]);
    return f;
  }
};

#endif

}  // namespace kiln::backend::cuda
