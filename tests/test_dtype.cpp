// 16-bit storage types: conversions checked against independent references (the compiler's
// _Float16 for binary16, nearest-even selection in float64 for bfloat16).
#include <cmath>
#include <cstring>
#include <limits>

#include "catch.hpp"
#include "reference/reference.hpp"
#include "tpkit/core/dtype.hpp"

using tpkit::bfloat16;
using tpkit::half;

namespace {
float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
// Floats spread over every exponent that matters to 16-bit types (and beyond, both ways).
std::vector<float> probe_floats() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          65504.0f,
                          65519.99f,
                          65520.0f,
                          65536.0f,
                          0x1p-14f,
                          0x1p-24f,
                          0x1p-25f,
                          0x1.8p-25f,
                          0x1p-26f,
                          3e38f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::denorm_min()};
  ref::Rng rng(7);
  for (int i = 0; i < 400000; ++i) {
    const std::uint32_t exponent = 90 + std::uint32_t(rng.next() % 70);  // 2^-37 .. 2^32
    const std::uint32_t mantissa = std::uint32_t(rng.next()) & 0x7fffffu;
    const std::uint32_t sign = (rng.next() & 1) << 31;
    v.push_back(from_bits(sign | (exponent << 23) | mantissa));
    // Exact ties of both formats: the bits below the kept mantissa are exactly one half.
    v.push_back(from_bits(sign | (exponent << 23) | (mantissa & ~0x1fffu) | 0x1000u));
    v.push_back(from_bits(sign | (exponent << 23) | (mantissa & ~0xffffu) | 0x8000u));
  }
  return v;
}

// Nearest bfloat16 to f with ties to even, chosen by comparing distances in float64.
std::uint16_t reference_bf16(float f) {
  const std::uint32_t u = bits_of(f);
  const std::uint16_t down = std::uint16_t(u >> 16);
  const std::uint16_t up = std::uint16_t(down + 1);  // next magnitude (may become inf: fine)
  const double lo = double(from_bits(std::uint32_t(down) << 16));
  const double hi = double(from_bits(std::uint32_t(up) << 16));
  const double d_lo = std::fabs(double(f) - lo), d_hi = std::fabs(hi - double(f));
  if (d_lo < d_hi) return down;
  if (d_hi < d_lo) return up;
  return (down & 1) ? up : down;
}
}  // namespace

TEST_CASE("bfloat16 widening is exact and rounding is to nearest even", "[dtype]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bfloat16::to_float(std::uint16_t(b));
    REQUIRE(bits_of(f) == (b << 16));
  }
  for (float f : probe_floats()) {
    if (std::isinf(f)) {
      REQUIRE(bfloat16::to_float(bfloat16::from_float(f)) == f);
      continue;
    }
    INFO("f = " << f);
    REQUIRE(bfloat16::from_float(f) == reference_bf16(f));
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  REQUIRE(std::isnan(float(bfloat16(nan))));
  REQUIRE(std::isnan(float(bfloat16(from_bits(0x7f800001u)))));  // a NaN that truncation would turn into inf
}

#if defined(__FLT16_MAX__)
TEST_CASE("half conversions equal the compiler's _Float16", "[dtype]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    _Float16 h;
    const std::uint16_t bits = std::uint16_t(b);
    std::memcpy(&h, &bits, 2);
    const float expected = float(h);
    const float got = half::to_float(bits);
    if (std::isnan(expected)) {
      REQUIRE(std::isnan(got));
      continue;
    }
    REQUIRE(bits_of(got) == bits_of(expected));
    REQUIRE(half::from_float(got) == bits);  // every half survives a round trip
  }
  for (float f : probe_floats()) {
    const _Float16 h = _Float16(f);
    std::uint16_t expected;
    std::memcpy(&expected, &h, 2);
    INFO("f = " << f);
    REQUIRE(half::from_float(f) == expected);
  }
  REQUIRE(std::isnan(float(half(std::numeric_limits<float>::quiet_NaN()))));
}
#else
TEST_CASE("half round trip (compiler has no _Float16 reference)", "[dtype]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = half::to_float(std::uint16_t(b));
    if (!std::isnan(f)) REQUIRE(half::from_float(f) == b);
  }
}
#endif

TEST_CASE("dtype sizes, names and the floating dispatch", "[dtype]") {
  using tpkit::DType;
  REQUIRE(tpkit::dtype_size(DType::bf16) == 2);
  REQUIRE(tpkit::dtype_size(DType::f64) == 8);
  REQUIRE(std::string(tpkit::dtype_name(DType::f16)) == "f16");
  REQUIRE(tpkit::dtype_of_v<bfloat16> == DType::bf16);
  const auto size = [](auto v) { return sizeof(v); };
  REQUIRE(tpkit::dispatch_float_dtype(DType::bf16, size) == 2);
  REQUIRE(tpkit::dispatch_float_dtype(DType::f64, size) == 8);
  REQUIRE_THROWS_AS(tpkit::dispatch_float_dtype(DType::i32, size), tpkit::InvalidArgument);
}
