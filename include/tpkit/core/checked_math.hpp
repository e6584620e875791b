// tpkit/core/checked_math.hpp: size arithmetic that cannot wrap. Sizes computed from files and
// configs (element counts, byte counts) go through these, so a hostile shape is an error
// instead of a small allocation that is then overrun.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "tpkit/core/error.hpp"

namespace tpkit {

// a * b, or InvalidArgument naming `what` when the product does not fit in T (or a factor is
// negative).
template <class T>
T checked_mul(T a, T b, const char* what) {
  static_assert(std::is_integral_v<T>, "checked_mul takes integers");
  T out{};
  if ((std::is_signed_v<T> && (a < 0 || b < 0)) || __builtin_mul_overflow(a, b, &out))
    TPKIT_THROW(InvalidArgument, what, ": ", a, " x ", b, " overflows a ", sizeof(T) * 8, "-bit size");
  return out;
}

template <class T>
T checked_add(T a, T b, const char* what) {
  static_assert(std::is_integral_v<T>, "checked_add takes integers");
  T out{};
  if ((std::is_signed_v<T> && (a < 0 || b < 0)) || __builtin_add_overflow(a, b, &out))
    TPKIT_THROW(InvalidArgument, what, ": ", a, " + ", b, " overflows a ", sizeof(T) * 8, "-bit size");
  return out;
}

// Bytes of `count` elements of `element_size` bytes each.
inline std::size_t checked_bytes(std::size_t count, std::size_t element_size, const char* what) {
  return checked_mul(count, element_size, what);
}

}  // namespace tpkit
