// bench/compile/hana_program.cpp: the training program of a LAYERS-layer decoder as a Boost.Hana heterogeneous
// sequence (every op its own type, walked with hana::for_each), for bench/compile/program.sh to time against
// constexpr_program.cpp (Kiln's representation: a constexpr array of op values walked by a loop). Both describe the
// same ops (kind, layer, pass, dims) and call one kernel stub per op; only the representation differs.
#include <boost/hana.hpp>
#include <cstdio>

namespace hana = boost::hana;

enum Kind { embedding, rmsnorm, gemm, rope, attention, add, swiglu, loss };
template <Kind K, int Layer, bool Backward, long Rows, long In, long Out>
struct Op {};

volatile long sink = 0;
template <Kind K, int Layer, bool Bwd, long R, long I, long O>
void run(Op<K, Layer, Bwd, R, I, O>) {  // a kernel call specialized to the op's static shape
  sink = sink + K * 1000 + Layer + (Bwd ? 7 : 0) + R + I + O;
}

constexpr long R = 12288, H = 2048, QKV = 3072, F = 11008;
template <int L>
constexpr auto layer_forward() {
  return hana::make_tuple(Op<rmsnorm, L, false, R, H, 0>{}, Op<gemm, L, false, R, H, QKV>{}, Op<rope, L, false, R, 128, 0>{},
                          Op<attention, L, false, R, 128, 0>{}, Op<gemm, L, false, R, H, H>{}, Op<add, L, false, R, H, 0>{},
                          Op<rmsnorm, L, false, R, H, 0>{}, Op<gemm, L, false, R, H, 2 * F>{}, Op<swiglu, L, false, R, F, 0>{},
                          Op<gemm, L, false, R, F, H>{}, Op<add, L, false, R, H, 0>{});
}
template <int L>
constexpr auto layer_backward() {
  return hana::make_tuple(Op<gemm, L, true, R, F, H>{}, Op<swiglu, L, true, R, F, 0>{}, Op<gemm, L, true, R, H, 2 * F>{},
                          Op<rmsnorm, L, true, R, H, 0>{}, Op<gemm, L, true, R, H, H>{}, Op<attention, L, true, R, 128, 0>{},
                          Op<rope, L, true, R, 128, 0>{}, Op<gemm, L, true, R, H, QKV>{}, Op<rmsnorm, L, true, R, H, 0>{});
}
template <int... L>
constexpr auto program(std::integer_sequence<int, L...>) {
  constexpr int N = sizeof...(L);
  return hana::flatten(hana::make_tuple(hana::make_tuple(Op<embedding, -1, false, R, H, 0>{}), layer_forward<L>()...,
                                        hana::make_tuple(Op<rmsnorm, -1, false, R, H, 0>{}, Op<loss, -1, false, R, H, 128256>{},
                                                         Op<rmsnorm, -1, true, R, H, 0>{}),
                                        layer_backward<N - 1 - L>()..., hana::make_tuple(Op<embedding, -1, true, R, H, 0>{})));
}

int main() {
  constexpr auto p = program(std::make_integer_sequence<int, LAYERS>{});
  hana::for_each(p, [](auto op) { run(op); });
  std::printf("%d ops, %ld\n", int(hana::length(p)), long(sink));
}
