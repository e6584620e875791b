// Helpers shared by the CUDA tests (host code; no Catch2, as these run as plain programs that
// exit 77 when skipped).
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// Whether to run a reduced set of cases (TPKIT_CUDA_TEST_QUICK=1): a test under
// compute-sanitizer, which runs kernels tens of times slower, still covers every kernel and
// code path, but not every size (scripts/gpu-check.sh sets it).
inline bool quick() {
  const char* v = std::getenv("TPKIT_CUDA_TEST_QUICK");
  return v && *v && *v != '0';
}

// False, after printing why, when no CUDA device is present: the test then exits 77 (skipped).
inline bool have_gpu() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) return true;
  std::printf("no CUDA device: skipped\n");
  return false;
}

// A device copy of `host` (one spare byte, so that an empty vector still gets a pointer).
template <class T>
T* to_device(const std::vector<T>& host) {
  T* d = nullptr;
  cudaMalloc(&d, host.size() * sizeof(T) + 1);
  cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

// `n` elements with every bit set (NaN for floats), so that unwritten outputs are caught.
template <class T>
T* poisoned(std::size_t n) {
  T* d = nullptr;
  cudaMalloc(&d, n * sizeof(T) + 1);
  cudaMemset(d, 0xff, n * sizeof(T));
  return d;
}

// The host copy of `n` elements, after the device has finished.
template <class T>
std::vector<T> to_host(const T* d, std::size_t n) {
  std::vector<T> h(n);
  cudaDeviceSynchronize();
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

namespace cuda_test {
// Failed expectations so far; a test's main returns 1 when there are any.
inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  if (!ok) std::printf("FAILED: %s\n", what.c_str()), ++failures;
}
}  // namespace cuda_test
