// tests/conformance.hpp: the op conformance checker (STYLE.md §8). An op gets its gradient check and its
// float-vs-double check by being registered, not by someone remembering:
//
//   struct MyOp {
//     static constexpr const char* name = "my_op";
//     static std::vector<size_t> input_sizes();                 // flat sizes of the inputs
//     static std::vector<kiln::testing::Grad> grads();          // per input: Overwrite, Accumulate or None
//     static size_t output_size();
//     template <class T> static void forward(const Tensors<T>& in, std::vector<T>& out);
//     template <class T> static void backward(const Tensors<T>& in, const std::vector<T>& dout, Tensors<T>& din);
//     static void init(Tensors<double>& in, uint64_t seed);    // optional; default uniform in [-1, 1)
//   };
//   KILN_REGISTER_OP(MyOp);
//
// check_gradients: random inputs and a random cotangent c; L = sum(c * y). The analytic gradients come from
// backward; the numeric ones from central finite differences in double (every element, or a random sample of
// max_elems for big inputs). Before backward each gradient buffer is pre-filled with random values: for Accumulate
// inputs they are subtracted afterwards (so a kernel that overwrites fails), for Overwrite inputs they are left
// (so a kernel that accumulates, or skips elements, fails). Error per element:
//   |analytic - numeric| / max(floor, |analytic| + |numeric|).
// check_float_agreement: the float instantiation against the double one on the same (float-rounded) inputs,
// relative to each tensor's largest value, and the float run repeated must be bitwise identical.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/core/rng.hpp"

namespace kiln::testing {

template <class T>
using Tensors = std::vector<std::vector<T>>;

enum class Grad { None, Overwrite, Accumulate };

struct OpCase {
  std::string name;
  std::vector<size_t> input_sizes;
  std::vector<Grad> grads;
  size_t output_size = 0;
  std::function<void(Tensors<double>&, uint64_t)> init;
  std::function<void(const Tensors<double>&, std::vector<double>&)> forward;
  std::function<void(const Tensors<double>&, const std::vector<double>&, Tensors<double>&)> backward;
  std::function<void(const Tensors<float>&, std::vector<float>&)> forward_f;                         // may be empty
  std::function<void(const Tensors<float>&, const std::vector<float>&, Tensors<float>&)> backward_f;  // may be empty
};

inline std::vector<OpCase>& op_registry() {
  static std::vector<OpCase> ops;
  return ops;
}

struct CheckReport {
  bool ok = true;
  double worst = 0;     // largest error seen
  std::string message;  // the first failure (or a summary)
};

inline void fill_uniform(std::vector<double>& v, uint64_t seed, uint64_t stream, double lo = -1, double hi = 1) {
  for (size_t i = 0; i < v.size(); ++i) v[i] = lo + (hi - lo) * uniform01(seed, stream, i);
}

inline void default_init(Tensors<double>& in, uint64_t seed) {
  for (size_t i = 0; i < in.size(); ++i) fill_uniform(in[i], seed, 100 + i);
}

namespace detail {
template <class Op>
concept HasInit = requires(Tensors<double>& in, uint64_t s) { Op::init(in, s); };
}  // namespace detail

template <class Op>
bool register_op() {
  OpCase c;
  c.name = Op::name;
  c.input_sizes = Op::input_sizes();
  c.grads = Op::grads();
  c.output_size = Op::output_size();
  if constexpr (detail::HasInit<Op>)
    c.init = [](Tensors<double>& in, uint64_t s) { Op::init(in, s); };
  c.forward = [](const Tensors<double>& in, std::vector<double>& out) { Op::template forward<double>(in, out); };
  c.backward = [](const Tensors<double>& in, const std::vector<double>& dout, Tensors<double>& din) {
    Op::template backward<double>(in, dout, din);
  };
  c.forward_f = [](const Tensors<float>& in, std::vector<float>& out) { Op::template forward<float>(in, out); };
  c.backward_f = [](const Tensors<float>& in, const std::vector<float>& dout, Tensors<float>& din) {
    Op::template backward<float>(in, dout, din);
  };
  op_registry().push_back(std::move(c));
  return true;
}

inline Tensors<double> make_inputs(const OpCase& op, uint64_t seed) {
  Tensors<double> in(op.input_sizes.size());
  for (size_t i = 0; i < in.size(); ++i) in[i].assign(op.input_sizes[i], 0.0);
  if (op.init)
    op.init(in, seed);
  else
    default_init(in, seed);
  for (size_t i = 0; i < in.size(); ++i)
    if (in[i].size() != op.input_sizes[i]) throw std::logic_error(op.name + ": init changed an input's size");
  return in;
}

inline double contract(const std::vector<double>& c, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += c[i] * y[i];
  return s;
}

// Finite-difference gradient check of one op (see the header comment).
inline CheckReport check_gradients(const OpCase& op, uint64_t seed = 1, double tol = 1e-6, size_t max_elems = 200,
                                   double h = 1e-5, double floor = 1e-4) {
  CheckReport rep;
  Tensors<double> in = make_inputs(op, seed);
  std::vector<double> y(op.output_size, 0.0), c(op.output_size);
  op.forward(in, y);
  fill_uniform(c, seed, 1);
  Tensors<double> din(in.size()), prefill(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    prefill[i].assign(in[i].size(), 0.0);
    fill_uniform(prefill[i], seed, 200 + i, -3, 3);
    din[i] = prefill[i];
  }
  op.backward(in, c, din);
  for (size_t i = 0; i < in.size(); ++i) {
    if (op.grads[i] == Grad::None) continue;
    std::vector<double> analytic = din[i];
    if (op.grads[i] == Grad::Accumulate)
      for (size_t k = 0; k < analytic.size(); ++k) analytic[k] -= prefill[i][k];
    std::vector<size_t> idx;
    if (in[i].size() <= max_elems) {
      for (size_t k = 0; k < in[i].size(); ++k) idx.push_back(k);
    } else {
      Rng rng(seed * 7919 + i);
      for (size_t k = 0; k < max_elems; ++k) idx.push_back(size_t(rng.below(in[i].size())));
    }
    for (size_t k : idx) {
      const double x0 = in[i][k];
      in[i][k] = x0 + h;
      op.forward(in, y);
      const double lp = contract(c, y);
      in[i][k] = x0 - h;
      op.forward(in, y);
      const double lm = contract(c, y);
      in[i][k] = x0;
      const double numeric = (lp - lm) / (2 * h);
      const double a = analytic[k];
      const double err = std::abs(a - numeric) / std::max(floor, std::abs(a) + std::abs(numeric));
      if (!(err <= tol) && rep.ok) {  // !(<=) also catches NaN
        std::ostringstream s;
        s << "op " << op.name << ": input " << i << " element " << k << ": analytic " << a << " vs numeric " << numeric
          << " (relative error " << err << " > " << tol << ")";
        rep.ok = false;
        rep.message = s.str();
      }
      if (!(err <= rep.worst)) rep.worst = err;
    }
  }
  if (rep.ok) {
    std::ostringstream s;
    s << "op " << op.name << ": worst relative error " << rep.worst;
    rep.message = s.str();
  }
  return rep;
}

// Float instantiation vs double on the same inputs (rounded to float), plus bitwise repeatability of the float run.
inline CheckReport check_float_agreement(const OpCase& op, uint64_t seed = 2, double tol = 2e-5) {
  CheckReport rep;
  if (!op.forward_f) return rep;
  Tensors<double> in = make_inputs(op, seed);
  Tensors<float> inf(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    inf[i].resize(in[i].size());
    for (size_t k = 0; k < in[i].size(); ++k) {
      inf[i][k] = float(in[i][k]);
      in[i][k] = double(inf[i][k]);
    }
  }
  std::vector<double> c(op.output_size), y(op.output_size, 0.0);
  fill_uniform(c, seed, 1);
  std::vector<float> cf(c.begin(), c.end()), yf(op.output_size, 0.f);
  for (size_t k = 0; k < c.size(); ++k) c[k] = double(cf[k]);
  op.forward(in, y);
  op.forward_f(inf, yf);
  Tensors<double> din(in.size());
  Tensors<float> dinf(in.size()), dinf2(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    din[i].assign(in[i].size(), 0.0);
    dinf[i].assign(in[i].size(), 0.f);
    dinf2[i].assign(in[i].size(), 0.f);
  }
  op.backward(in, c, din);
  op.backward_f(inf, cf, dinf);
  op.backward_f(inf, cf, dinf2);
  std::vector<float> yf2(op.output_size, 0.f);
  op.forward_f(inf, yf2);
  auto compare = [&](const char* what, size_t which, const std::vector<double>& d, const std::vector<float>& f) {
    double scale = 0;
    for (double v : d) scale = std::max(scale, std::abs(v));
    if (scale == 0) scale = 1;
    for (size_t k = 0; k < d.size(); ++k) {
      const double err = std::abs(double(f[k]) - d[k]) / scale;
      if (!(err <= rep.worst)) rep.worst = err;
      if (!(err <= tol) && rep.ok) {
        std::ostringstream s;
        s << "op " << op.name << ": " << what << " " << which << " element " << k << ": float " << f[k] << " vs double "
          << d[k] << " (error " << err << " of the tensor's largest value " << scale << ", > " << tol << ")";
        rep.ok = false;
        rep.message = s.str();
      }
    }
  };
  compare("output", 0, y, yf);
  for (size_t i = 0; i < in.size(); ++i)
    if (op.grads[i] != Grad::None) compare("gradient of input", i, din[i], dinf[i]);
  bool same = std::memcmp(yf.data(), yf2.data(), sizeof(float) * yf.size()) == 0;
  for (size_t i = 0; i < in.size(); ++i)
    same = same && std::memcmp(dinf[i].data(), dinf2[i].data(), sizeof(float) * dinf[i].size()) == 0;
  if (!same && rep.ok) {
    rep.ok = false;
    rep.message = "op " + op.name + ": the float run repeated is not bitwise identical";
  }
  if (rep.ok) {
    std::ostringstream s;
    s << "op " << op.name << ": worst float-vs-double error " << rep.worst;
    rep.message = s.str();
  }
  return rep;
}

}  // namespace kiln::testing

#define KILN_TESTING_CONCAT2(a, b) a##b
#define KILN_TESTING_CONCAT(a, b) KILN_TESTING_CONCAT2(a, b)
// Register an op struct (see above) with the conformance checker; use at namespace scope in any test file.
#define KILN_REGISTER_OP(Op) \
  [[maybe_unused]] static const bool KILN_TESTING_CONCAT(kiln_registered_op_, __LINE__) = ::kiln::testing::register_op<Op>()
