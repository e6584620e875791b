// Helpers shared by tpkit's tests: conversions between test data and tpkit storage types, and
// the tolerance of a sharded linear layer against the float64 reference.
#pragma once

#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "reference/reference.hpp"
#include "tpkit/core/dtype.hpp"
#include "tpkit/core/tensor.hpp"

namespace ref {
template <>
inline double roundoff<float>() {
  return 0x1p-24;
}
template <>
inline double roundoff<tpkit::bfloat16>() {
  return 0x1p-8;
}
template <>
inline double roundoff<tpkit::half>() {
  return 0x1p-11;
}
}  // namespace ref

namespace test {

template <class T>
std::vector<T> to_storage(const std::vector<float>& v) {
  std::vector<T> out;
  out.reserve(v.size());
  for (float f : v) out.push_back(T(f));
  return out;
}

template <class T>
double as_double(T v) {
  return double(float(v));
}

// The values a layer of storage type T really multiplies: inputs rounded to T, then widened.
template <class T>
std::vector<double> rounded(const std::vector<float>& v) {
  std::vector<double> out;
  out.reserve(v.size());
  for (float f : v) out.push_back(double(float(T(f))));
  return out;
}

inline tpkit::RawTensorView raw(const std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
  return tpkit::RawTensorView(v.data(), tpkit::DType::f32, {rows, cols});
}
inline tpkit::RawTensorView raw(const std::vector<float>& v, std::int64_t n) {
  return tpkit::RawTensorView(v.data(), tpkit::DType::f32, {n});
}

// Error bound of one output of a sharded linear layer of storage T against the exact result on
// the same T-rounded inputs:
//   * float accumulation of the K products, the tp partial sums and the bias, in any order:
//     gamma_{K + tp + 1} * S (S = sum |x w| + |b|, which bounds every partial sum too);
//   * `t_roundings` roundings to T on the way (a stored output, a stored partial sum, the sum
//     of partials, the bias add), each at most u_T times a value bounded by S (1 + gamma).
template <class T>
double linear_tolerance(double magnitude, int K, int tp, int t_roundings) {
  const double g = ref::gamma_float(K + tp + 1);
  return g * magnitude + t_roundings * ref::roundoff<T>() * magnitude * (1.0 + g) + 1e-30;
}

template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  if constexpr (std::is_same_v<T, tpkit::bfloat16>) return "bf16";
  if constexpr (std::is_same_v<T, tpkit::half>) return "f16";
  return "?";
}

}  // namespace test

namespace test {

// Compares an assembled [rows] result with the float64 reference element by element, each
// against its own bound; returns the number of violations and describes the worst one.
struct Comparison {
  int violations = 0;
  double worst_ratio = 0.0;  // largest |got - ref| / bound
  std::string worst;
};
template <class T>
Comparison compare(const std::vector<double>& got, const ref::DenseResult& expected, int K, int tp, int t_roundings) {
  Comparison c;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double bound = linear_tolerance<T>(expected.magnitude[i], K, tp, t_roundings);
    const double err = std::fabs(got[i] - expected.y[i]);
    const double ratio = err / bound;
    if (!(err <= bound)) ++c.violations;  // NaN counts as a violation
    if (!(ratio <= c.worst_ratio)) {
      c.worst_ratio = ratio;
      c.worst = "element " + std::to_string(i) + ": got " + std::to_string(got[i]) + ", reference " +
                std::to_string(expected.y[i]) + ", bound " + std::to_string(bound);
    }
  }
  return c;
}

}  // namespace test

namespace test {

// Catch2 assertions are not thread-safe: checks made on rank threads are recorded here and
// asserted on the test's thread with REQUIRE_RANK_CHECKS.
class RankChecks {
 public:
  void require(bool ok, const char* expr, int line) {
    if (ok) return;
    std::lock_guard<std::mutex> lock(mutex_);
    failures_ += "line " + std::to_string(line) + ": " + expr + "\n";
  }
  const std::string& failures() const { return failures_; }

 private:
  std::mutex mutex_;
  std::string failures_;
};

}  // namespace test

#define RANK_CHECK(checks, cond) (checks).require(bool(cond), #cond, __LINE__)
#define REQUIRE_RANK_CHECKS(checks)       \
  do {                                    \
    INFO((checks).failures());            \
    REQUIRE((checks).failures().empty()); \
  } while (0)
