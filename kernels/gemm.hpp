// kernels/gemm.hpp: matrix products through OpenBLAS (row-major cblas_sgemm / cblas_dgemm). The short fixed-length
// dot products inside Kiln's fused kernels are in kernels/dot.hpp, which needs no BLAS header.
//
// gemm:             C(M,N) = alpha * op(A)(M,K) op(B)(K,N) + beta * C,  op(X) = X or X^T
// linear_forward:   y(R,Out) = x(R,In) W(Out,In)^T                     (HF nn.Linear convention, no bias)
// linear_backward:  dW(Out,In) += dy(R,Out)^T x(R,In)                 (parameter gradients accumulate)
//                   dx(R,In)    = dy(R,Out) W(Out,In)   (or += when accumulate_dx; skipped when dx == nullptr)
// Nothing is saved: backward needs the forward input x, which the caller keeps.
// Determinism: OpenBLAS splits a GEMM by output tiles, so with a fixed thread count its results are bitwise repeatable.
#pragma once
#include <cblas.h>

#include <type_traits>

#include "kernels/dot.hpp"
#include "kiln/core/error.hpp"

namespace kiln::kernels {

template <class T>
void gemm(bool transA, bool transB, int M, int N, int K, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
          T* C, int ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "gemm: only float (training) and double (gradient checks) are supported");
  KILN_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: sizes must be non-negative, got M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
  const CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transB ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// y(R,Out) = x(R,In) W(Out,In)^T
template <class T>
void linear_forward(const T* x, const T* W, T* y, int R, int In, int Out) {
  gemm<T>(false, true, R, Out, In, T(1), x, In, W, In, T(0), y, Out);
}

// dW(Out,In) += dy^T x ;  dx(R,In) = dy W  (+= when accumulate_dx; dx == nullptr skips it)
template <class T>
void linear_backward(const T* x, const T* W, const T* dy, T* dx, T* dW, int R, int In, int Out, bool accumulate_dx) {
  if (R == 0) return;
  if (dW) gemm<T>(true, false, Out, In, R, T(1), dy, Out, x, In, T(1), dW, In);
  if (dx) gemm<T>(false, false, R, In, Out, T(1), dy, Out, W, In, accumulate_dx ? T(1) : T(0), dx, In);
}

}  // namespace kiln::kernels
