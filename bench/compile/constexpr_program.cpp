// bench/compile/constexpr_program.cpp: the same training program as hana_program.cpp in Kiln's representation:
// ops as values in a constexpr array (built by a constexpr function, as kiln/plan/program.hpp does), walked by a
// loop whose switch calls one kernel instantiation per op kind; the shapes that fix code stay template arguments
// of those kernels, the per-op numbers (layer, dims) are read from the array.
#include <array>
#include <cstdio>

enum Kind { embedding, rmsnorm, gemm, rope, attention, add, swiglu, loss };
struct Op {
  Kind kind = add;
  int layer = -1;
  bool backward = false;
  long rows = 0, in = 0, out = 0;
};

volatile long sink = 0;
template <Kind K, long D>
void run_kind(const Op& o) {  // a kernel specialized to the model's static width D, fed the op's numbers
  sink = sink + K * 1000 + o.layer + (o.backward ? 7 : 0) + o.rows + o.in + o.out + D * 0;
}

constexpr long R = 12288, H = 2048, QKV = 3072, F = 11008;
constexpr int kOps = 2 + LAYERS * 20 + 3;
constexpr std::array<Op, kOps> build() {
  std::array<Op, kOps> p{};
  int n = 0;
  auto op = [&](Kind k, int l, bool b, long r, long i, long o) { p[size_t(n++)] = Op{k, l, b, r, i, o}; };
  op(embedding, -1, false, R, H, 0);
  for (int l = 0; l < LAYERS; ++l) {
    op(rmsnorm, l, false, R, H, 0), op(gemm, l, false, R, H, QKV), op(rope, l, false, R, 128, 0);
    op(attention, l, false, R, 128, 0), op(gemm, l, false, R, H, H), op(add, l, false, R, H, 0);
    op(rmsnorm, l, false, R, H, 0), op(gemm, l, false, R, H, 2 * F), op(swiglu, l, false, R, F, 0);
    op(gemm, l, false, R, F, H), op(add, l, false, R, H, 0);
  }
  op(rmsnorm, -1, false, R, H, 0), op(loss, -1, false, R, H, 128256), op(rmsnorm, -1, true, R, H, 0);
  for (int l = LAYERS - 1; l >= 0; --l) {
    op(gemm, l, true, R, F, H), op(swiglu, l, true, R, F, 0), op(gemm, l, true, R, H, 2 * F);
    op(rmsnorm, l, true, R, H, 0), op(gemm, l, true, R, H, H), op(attention, l, true, R, 128, 0);
    op(rope, l, true, R, 128, 0), op(gemm, l, true, R, H, QKV), op(rmsnorm, l, true, R, H, 0);
  }
  op(embedding, -1, true, R, H, 0);
  return p;
}
constexpr auto program = build();

int main() {
  for (const Op& o : program) switch (o.kind) {
      case embedding: run_kind<embedding, H>(o); break;
      case rmsnorm: run_kind<rmsnorm, H>(o); break;
      case gemm: run_kind<gemm, 0>(o); break;
      case rope: run_kind<rope, 128>(o); break;
      case attention: run_kind<attention, 128>(o); break;
      case add: run_kind<add, H>(o); break;
      case swiglu: run_kind<swiglu, F>(o); break;
      case loss: run_kind<loss, H>(o); break;
    }
  std::printf("%d ops, %ld\n", kOps, long(sink));
}
