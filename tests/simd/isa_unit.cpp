// One translation unit of the SIMD-namespace test, compiled twice with different instruction
// sets (ISA_SUFFIX names each copy's functions; see tests/CMakeLists.txt).
#include <cstdint>
#include <typeinfo>
#include <vector>

#include "tpkit/ops/host_ops.hpp"

#define TPKIT_ISA_FN2(name, suffix) name##_##suffix
#define TPKIT_ISA_FN(name, suffix) TPKIT_ISA_FN2(name, suffix)

// The type name HostOps has in this unit, and the ISA its SIMD code was compiled for.
const char* TPKIT_ISA_FN(host_ops_type, ISA_SUFFIX)() { return typeid(tpkit::HostOps).name(); }
const char* TPKIT_ISA_FN(simd_isa, ISA_SUFFIX)() { return tpkit::host_detail::simd_isa(); }

// y = x W^T for the given [n, k] weights (float), with this unit's HostOps and two threads.
std::vector<float> TPKIT_ISA_FN(linear, ISA_SUFFIX)(const std::vector<float>& x, const std::vector<float>& w,
                                                    std::int64_t n, std::int64_t k) {
  std::vector<float> y(static_cast<std::size_t>(n));
  tpkit::HostOps(2).linear(x.data(), k, 1, w.data(), k, n, k, static_cast<const float*>(nullptr), y.data(), n);
  return y;
}
