// Host half of the mixed .cu/.cpp binary: the same conversions compiled by the host compiler.
#include <cstdint>
#include <vector>

#include "tpkit/tpkit.hpp"  // every public header also compiles in a host translation unit here

std::vector<std::uint32_t> host_widen_all(bool bf16) {
  std::vector<std::uint32_t> out(65536);
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16 ? tpkit::bfloat16::to_float(std::uint16_t(b)) : tpkit::half::to_float(std::uint16_t(b));
    out[b] = tpkit::detail::float_bits(f);
  }
  return out;
}

std::uint16_t host_narrow(float f, bool bf16) {
  return bf16 ? tpkit::bfloat16::from_float(f) : tpkit::half::from_float(f);
}
