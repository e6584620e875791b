// tpkit/core/dtype.hpp: element types, including 16-bit float storage usable on the host.
//
// `half` (IEEE binary16) and `bfloat16` are storage types: values are converted to float for
// arithmetic and rounded back to nearest-even on store, exactly as GPU kernels do, so the host
// path can run the same dtypes as the device path and accumulate in float.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "tpkit/config.hpp"
#include "tpkit/core/error.hpp"

namespace tpkit {

enum class DType : std::uint8_t { f32, f64, f16, bf16, i32, i64, u8 };

TPKIT_HOST_DEVICE constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f16:
    case DType::bf16:
      return 2;
    case DType::u8:
      return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::f16:
      return "f16";
    case DType::bf16:
      return "bf16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::u8:
      return "u8";
  }
  return "unknown";
}

namespace detail {
TPKIT_HOST_DEVICE std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
TPKIT_HOST_DEVICE float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace detail

// IEEE 754 binary16 storage.
struct half {
  std::uint16_t bits = 0;

  half() = default;
  TPKIT_HOST_DEVICE explicit half(float f) : bits(from_float(f)) {}
  TPKIT_HOST_DEVICE explicit operator float() const { return to_float(bits); }

  TPKIT_HOST_DEVICE static half from_bits(std::uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }

  TPKIT_HOST_DEVICE static float to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu;
    const std::uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
      const float magnitude = float(mantissa) * 5.9604644775390625e-8f;
      return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return detail::bits_float(sign | 0x7f800000u | (mantissa << 13));
    return detail::bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }

  // Round to nearest, ties to even; overflow goes to infinity, NaN stays NaN.
  TPKIT_HOST_DEVICE static std::uint16_t from_float(float f) {
    std::uint32_t x = detail::float_bits(f);
    const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) return std::uint16_t(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (x >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (x < 0x38800000u) {                                       // below 2^-14: subnormal half
      if (x < 0x33000000u) return sign;                          // <= 2^-25 rounds to zero
      const std::uint32_t exponent = x >> 23;
      const std::uint32_t mantissa = (x & 0x7fffffu) | 0x800000u;
      const std::uint32_t shift = 126u - exponent;
      std::uint32_t result = mantissa >> shift;
      const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
      const std::uint32_t halfway = 1u << (shift - 1u);
      if (rest > halfway || (rest == halfway && (result & 1u))) ++result;
      return std::uint16_t(sign | result);
    }
    const std::uint32_t rebased = x - 0x38000000u;  // exponent bias 127 -> 15
    const std::uint32_t rounded = rebased + 0xfffu + ((rebased >> 13) & 1u);
    return std::uint16_t(sign | (rounded >> 13));
  }
};

// bfloat16 storage: the top 16 bits of a float, rounded to nearest even.
struct bfloat16 {
  std::uint16_t bits = 0;

  bfloat16() = default;
  TPKIT_HOST_DEVICE explicit bfloat16(float f) : bits(from_float(f)) {}
  TPKIT_HOST_DEVICE explicit operator float() const { return to_float(bits); }

  TPKIT_HOST_DEVICE static bfloat16 from_bits(std::uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  TPKIT_HOST_DEVICE static float to_float(std::uint16_t b) { return detail::bits_float(std::uint32_t(b) << 16); }
  TPKIT_HOST_DEVICE static std::uint16_t from_float(float f) {
    const std::uint32_t x = detail::float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((x >> 16) | 0x40u);  // quiet NaN
    return std::uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
  }
};

// Conversions used by every kernel: read any element as float, write float as any element.
template <class T>
TPKIT_HOST_DEVICE float to_float(T v) {
  return static_cast<float>(v);
}
template <class T>
TPKIT_HOST_DEVICE T from_float(float f) {
  return static_cast<T>(f);
}

TPKIT_HOST_DEVICE constexpr bool is_floating_dtype(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> : std::integral_constant<DType, DType::f32> {};
template <>
struct dtype_of<double> : std::integral_constant<DType, DType::f64> {};
template <>
struct dtype_of<half> : std::integral_constant<DType, DType::f16> {};
template <>
struct dtype_of<bfloat16> : std::integral_constant<DType, DType::bf16> {};
template <>
struct dtype_of<std::int32_t> : std::integral_constant<DType, DType::i32> {};
template <>
struct dtype_of<std::int64_t> : std::integral_constant<DType, DType::i64> {};
template <>
struct dtype_of<std::uint8_t> : std::integral_constant<DType, DType::u8> {};
template <class T>
struct dtype_of<const T> : dtype_of<T> {};

template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

// Unit roundoff of a floating storage type: the relative error of one rounding to it.
template <class T>
constexpr double unit_roundoff() {
  if constexpr (std::is_same_v<T, double>) return 0x1p-53;
  if constexpr (std::is_same_v<T, float>) return 0x1p-24;
  if constexpr (std::is_same_v<T, half>) return 0x1p-11;
  if constexpr (std::is_same_v<T, bfloat16>) return 0x1p-8;
  return 0.0;
}

// Calls f(T{}) with T the C++ type of a floating dtype; the one runtime -> compile-time dispatch
// for element types.
template <class F>
decltype(auto) dispatch_float_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    case DType::f16:
      return f(half{});
    case DType::bf16:
      return f(bfloat16{});
    default:
      break;
  }
  TPKIT_THROW(InvalidArgument, "dtype ", dtype_name(t), " is not a floating-point type");
}

}  // namespace tpkit
