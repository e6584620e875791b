// HostOps and its SIMD code compiled for two instruction sets in one program (one unit with
// -mavx2 -mfma, one for the x86-64 baseline): each unit keeps its own code, because HostOps lives
// in a namespace named after the instruction set (config.hpp, TPKIT_SIMD_BEGIN). Without that,
// both units would define the same inline functions with different bodies and the linker would
// keep one for both: AVX2 code reached from a unit built for machines without it. Each unit's
// linear must also be right (against a double reference). Exits 77 without AVX2 and FMA.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

const char* host_ops_type_avx2();
const char* host_ops_type_baseline();
const char* simd_isa_avx2();
const char* simd_isa_baseline();
std::vector<float> linear_avx2(const std::vector<float>&, const std::vector<float>&, std::int64_t, std::int64_t);
std::vector<float> linear_baseline(const std::vector<float>&, const std::vector<float>&, std::int64_t, std::int64_t);

int main() {
  int failures = 0;
  const auto expect = [&](bool ok, const char* what) {
    if (!ok) std::printf("FAILED: %s\n", what), ++failures;
  };
  std::printf("HostOps in the AVX2 unit: %s (%s)\nHostOps in the baseline unit: %s (%s)\n", host_ops_type_avx2(),
              simd_isa_avx2(), host_ops_type_baseline(), simd_isa_baseline());
  expect(std::strcmp(host_ops_type_avx2(), host_ops_type_baseline()) != 0,
         "HostOps has one name in units compiled for different instruction sets");
  expect(std::strcmp(simd_isa_avx2(), "simd_avx2_fma") == 0, "the AVX2 unit's SIMD code is tagged simd_avx2_fma");
  expect(std::strcmp(simd_isa_baseline(), "simd_sse2") == 0, "the baseline unit's SIMD code is tagged simd_sse2");
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::printf("skipped: this CPU has no AVX2 and FMA\n");
    return failures ? 1 : 77;
  }
  const std::int64_t n = 37, k = 203;
  std::vector<float> x(static_cast<std::size_t>(k)), w(static_cast<std::size_t>(n * k));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(double(i)));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(std::cos(double(i) * 0.7));
  const std::vector<float> a = linear_avx2(x, w, n, k), b = linear_baseline(x, w, n, k);
  for (std::int64_t j = 0; j < n; ++j) {
    double want = 0, magnitude = 0;
    for (std::int64_t i = 0; i < k; ++i) {
      want += double(x[std::size_t(i)]) * double(w[std::size_t(j * k + i)]);
      magnitude += std::fabs(double(x[std::size_t(i)]) * double(w[std::size_t(j * k + i)]));
    }
    // Float accumulation in any order: at most k * 2^-24 of the sum of magnitudes.
    const double bound = double(k) * 0x1p-24 * magnitude;
    expect(std::fabs(a[std::size_t(j)] - want) <= bound, "the AVX2 unit's linear");
    expect(std::fabs(b[std::size_t(j)] - want) <= bound, "the baseline unit's linear");
  }
  std::printf("%s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
