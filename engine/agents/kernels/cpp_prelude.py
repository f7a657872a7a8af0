"""The C++ every generated CPU kernel module starts with: the headers and `namespace stark`.

The headers are the few the kernels need rather than `torch/extension.h` (the module passes
`no_implicit_headers=True`): that halves a build. `namespace stark` holds what the group
functions share, written once per module:

- `check_input`: the dtype/device/shape checks at the top of every group function;
- elementary functions overloaded for one `float` and for `at::vec::Vectorized<float>`
  (`Vec`, whose exp/tanh/erf/log are SLEEF's vector versions), so each operator below is
  one template and a kernel's vector and scalar loops read alike;
- the operators of the IR vocabulary with PyTorch's formulas (gelu's erf and tanh forms,
  softplus's threshold, elu/selu/celu through expm1, NaN-propagating maximum/minimum);
- reduction accumulators (`Sum`, `KahanSum`, `DoubleSum`, `Max`, `Min`) over a `float` or
  the lanes of a `Vec`.
"""

from __future__ import annotations

HEADERS = """\
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>
"""

STARK_NAMESPACE = """\
namespace stark {

using Vec = at::vec::Vectorized<float>;
constexpr float kInf = std::numeric_limits<float>::infinity();

// The checks every group function makes before it reads a tensor's data.
inline void check_input(const at::Tensor& t, const char* fn, const char* arg) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, fn, ": ", arg, " must be float32, got ",
              t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), fn, ": ", arg, " must be a CPU tensor, got one on ",
              t.device());
}

inline void check_input(const at::Tensor& t, const char* fn, const char* arg,
                        at::IntArrayRef shape) {
  check_input(t, fn, arg);
  TORCH_CHECK(t.sizes() == shape, fn, ": ", arg, " must have the captured shape ", shape,
              ", got ", t.sizes());
}

// Elementary functions, for one float and for a vector of floats.
inline float neg(float x) { return -x; }
inline Vec neg(const Vec& x) { return x.neg(); }
inline float abs(float x) { return std::abs(x); }
inline Vec abs(const Vec& x) { return x.abs(); }
inline float exp(float x) { return std::exp(x); }
inline Vec exp(const Vec& x) { return x.exp(); }
inline float expm1(float x) { return std::expm1(x); }
inline Vec expm1(const Vec& x) { return x.expm1(); }
inline float log(float x) { return std::log(x); }
inline Vec log(const Vec& x) { return x.log(); }
inline float log1p(float x) { return std::log1p(x); }
inline Vec log1p(const Vec& x) { return x.log1p(); }
inline float sqrt(float x) { return std::sqrt(x); }
inline Vec sqrt(const Vec& x) { return x.sqrt(); }
inline float rsqrt(float x) { return 1.0f / std::sqrt(x); }
inline Vec rsqrt(const Vec& x) { return x.rsqrt(); }
inline float reciprocal(float x) { return 1.0f / x; }
inline Vec reciprocal(const Vec& x) { return x.reciprocal(); }
inline float erf(float x) { return std::erf(x); }
inline Vec erf(const Vec& x) { return x.erf(); }
inline float tanh(float x) { return std::tanh(x); }
inline Vec tanh(const Vec& x) { return x.tanh(); }
inline float sin(float x) { return std::sin(x); }
inline Vec sin(const Vec& x) { return x.sin(); }
inline float cos(float x) { return std::cos(x); }
inline Vec cos(const Vec& x) { return x.cos(); }
inline float pow(float x, float e) { return std::pow(x, e); }
inline Vec pow(const Vec& x, float e) { return x.pow(Vec(e)); }
// maximum/minimum propagate NaN, as torch.maximum and clamp do.
inline float maximum(float a, float b) { return (a > b || a != a) ? a : b; }
inline Vec maximum(const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }
inline float minimum(float a, float b) { return (a < b || a != a) ? a : b; }
inline Vec minimum(const Vec& a, const Vec& b) { return at::vec::minimum(a, b); }
inline float where(bool c, float a, float b) { return c ? a : b; }
inline Vec where(const Vec& c, const Vec& a, const Vec& b) { return Vec::blendv(b, a, c); }
// logsumexp's shift: the row maximum, or 0 where it is infinite (as torch does).
inline float finite_or_zero(float x) { return std::isinf(x) ? 0.0f : x; }
inline Vec finite_or_zero(const Vec& x) {
  return Vec::blendv(x, Vec(0.0f), x.abs() == Vec(kInf));
}
// A reduction's parallel_for grain (rows or tiles), capped so every thread gets a share:
// 16 rows of 2 MB with grain 16 would otherwise run on one thread.
inline int64_t grain_for(int64_t count, int64_t grain) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, std::min<int64_t>(grain, (count + threads - 1) / threads));
}
// Lanes [0, n) of v, the others `fill` (the identity of a reduction, for a tail).
inline Vec first(const Vec& v, int64_t n, float fill) { return Vec::set(Vec(fill), v, n); }

// The IR's pointwise operators, with PyTorch's formulas.
template <typename T> T relu(const T& x) { return stark::maximum(x, T(0.0f)); }
template <typename T> T sigmoid(const T& x) {
  return T(1.0f) / (T(1.0f) + stark::exp(stark::neg(x)));
}
template <typename T> T silu(const T& x) { return x / (T(1.0f) + stark::exp(stark::neg(x))); }
template <typename T> T gelu(const T& x) {
  return x * T(0.5f) * (T(1.0f) + stark::erf(x * T(0.70710678118654752440f)));
}
template <typename T> T gelu_tanh(const T& x) {
  const T inner = T(0.79788456080286535588f) * (x + T(0.044715f) * x * x * x);
  return T(0.5f) * x * (T(1.0f) + stark::tanh(inner));
}
template <typename T> T mish(const T& x) { return x * stark::tanh(stark::log1p(stark::exp(x))); }
template <typename T> T softsign(const T& x) { return x / (T(1.0f) + stark::abs(x)); }
template <typename T> T softplus(const T& x, float beta, float threshold) {
  const T scaled = x * T(beta);
  return stark::where(scaled > T(threshold), x, stark::log1p(stark::exp(scaled)) / T(beta));
}
// elu, selu and celu: x * scale above 0, alpha * scale * expm1(x * input_scale) below.
template <typename T> T elu(const T& x, float alpha, float scale, float input_scale) {
  return stark::where(x > T(0.0f), x * T(scale),
                      stark::expm1(x * T(input_scale)) * T(alpha * scale));
}
template <typename T> T leaky_relu(const T& x, float slope) {
  return stark::where(x > T(0.0f), x, x * T(slope));
}
template <typename T> T hardsigmoid(const T& x) {
  return stark::minimum(stark::maximum(x + T(3.0f), T(0.0f)), T(6.0f)) / T(6.0f);
}
template <typename T> T hardswish(const T& x) {
  return x * stark::minimum(stark::maximum(x + T(3.0f), T(0.0f)), T(6.0f)) / T(6.0f);
}

// Sum of a value's horizontal lanes (a float is its own sum).
inline float hsum(float x) { return x; }
inline float hsum(const Vec& v) {
  return at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, v);
}
inline float hmax(float x) { return x; }
inline float hmax(const Vec& v) {
  return at::vec::vec_reduce_all<float>(
      [](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, v);
}
inline float hmin(float x) { return x; }
inline float hmin(const Vec& v) {
  return at::vec::vec_reduce_all<float>(
      [](const Vec& a, const Vec& b) { return at::vec::minimum(a, b); }, v);
}

// Accumulators over a float or the lanes of a Vec: add, merge another, read per lane
// (lanes) or reduced across lanes (horizontal).
template <typename T> struct Sum {
  T total = T(0.0f);
  void add(const T& v) { total = total + v; }
  void merge(const Sum& other) { total = total + other.total; }
  T lanes() const { return total; }
  float horizontal() const { return stark::hsum(total); }
};

// Kahan-compensated: `compensation` carries what the last addition lost.
template <typename T> struct KahanSum {
  T total = T(0.0f);
  T compensation = T(0.0f);
  void add(const T& v) {
    const T y = v - compensation;
    const T t = total + y;
    compensation = (t - total) - y;
    total = t;
  }
  void merge(const KahanSum& other) {
    add(other.total);
    add(stark::neg(other.compensation));
  }
  T lanes() const { return total - compensation; }
  float horizontal() const {
    if constexpr (std::is_same_v<T, float>) {
      return lanes();
    } else {
      float lane[Vec::size()];
      lanes().store(lane);
      KahanSum<float> across;
      for (int k = 0; k < Vec::size(); ++k) across.add(lane[k]);
      return across.lanes();
    }
  }
};

// Double-precision lanes: every float added is widened first.
template <typename T> struct DoubleSum {
  static constexpr int kLanes = std::is_same_v<T, float> ? 1 : Vec::size();
  double total[kLanes] = {};
  void add(const T& v) {
    if constexpr (std::is_same_v<T, float>) {
      total[0] += v;
    } else {
      float lane[Vec::size()];
      v.store(lane);
      for (int k = 0; k < Vec::size(); ++k) total[k] += lane[k];
    }
  }
  void merge(const DoubleSum& other) {
    for (int k = 0; k < kLanes; ++k) total[k] += other.total[k];
  }
  T lanes() const {
    if constexpr (std::is_same_v<T, float>) {
      return static_cast<float>(total[0]);
    } else {
      float lane[Vec::size()];
      for (int k = 0; k < Vec::size(); ++k) lane[k] = static_cast<float>(total[k]);
      return Vec::loadu(lane);
    }
  }
  float horizontal() const {
    double across = 0.0;
    for (int k = 0; k < kLanes; ++k) across += total[k];
    return static_cast<float>(across);
  }
};

template <typename T> struct Max {
  T total = T(-kInf);
  void add(const T& v) { total = stark::maximum(total, v); }
  void merge(const Max& other) { add(other.total); }
  T lanes() const { return total; }
  float horizontal() const { return stark::hmax(total); }
};

template <typename T> struct Min {
  T total = T(kInf);
  void add(const T& v) { total = stark::minimum(total, v); }
  void merge(const Min& other) { add(other.total); }
  T lanes() const { return total; }
  float horizontal() const { return stark::hmin(total); }
};

}  // namespace stark

using stark::Vec;
"""


def cpp_prelude() -> str:
    """The headers and helpers, once at the top of a module's C++ source."""
    return HEADERS + "\n" + STARK_NAMESPACE
