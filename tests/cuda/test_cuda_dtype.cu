// Device half of the mixed binary: tpkit's 16-bit conversions run in a kernel and must give the
// bits the host code gives, for every 16-bit pattern and a sweep of floats. It also proves the
// public headers compile under nvcc.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tpkit/tpkit.hpp"

std::vector<std::uint32_t> host_widen_all(bool bf16);
std::uint16_t host_narrow(float f, bool bf16);

__global__ void widen_all(std::uint32_t* out, bool bf16) {
  const std::uint32_t b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= 65536) return;
  const float f = bf16 ? tpkit::bfloat16::to_float(std::uint16_t(b)) : tpkit::half::to_float(std::uint16_t(b));
  out[b] = tpkit::detail::float_bits(f);
}

__global__ void narrow(const float* in, std::uint16_t* out, int n, bool bf16) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = bf16 ? tpkit::bfloat16::from_float(in[i]) : tpkit::half::from_float(in[i]);
}

#define CHECK_CUDA(call)                                                     \
  do {                                                                       \
    cudaError_t e = (call);                                                  \
    if (e != cudaSuccess) {                                                  \
      std::printf("%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      return 1;                                                              \
    }                                                                        \
  } while (0)

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  const int n = 1 << 20;
  std::vector<float> floats(n);
  for (int i = 0; i < n; ++i) {
    const std::uint32_t bits = (std::uint32_t(i) * 2654435761u) ^ (std::uint32_t(i) << 7);
    const std::uint32_t exponent = 90 + (bits >> 25) % 70;
    const std::uint32_t u = (bits & 0x807fffffu) | (exponent << 23);
    std::memcpy(&floats[i], &u, 4);
  }
  std::uint32_t* d_wide;
  float* d_in;
  std::uint16_t* d_narrow;
  CHECK_CUDA(cudaMalloc(&d_wide, 65536 * 4));
  CHECK_CUDA(cudaMalloc(&d_in, n * 4));
  CHECK_CUDA(cudaMalloc(&d_narrow, n * 2));
  CHECK_CUDA(cudaMemcpy(d_in, floats.data(), n * 4, cudaMemcpyHostToDevice));
  int failures = 0;
  for (bool bf16 : {false, true}) {
    widen_all<<<256, 256>>>(d_wide, bf16);
    narrow<<<(n + 255) / 256, 256>>>(d_in, d_narrow, n, bf16);
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<std::uint32_t> wide(65536);
    std::vector<std::uint16_t> narrowed(n);
    CHECK_CUDA(cudaMemcpy(wide.data(), d_wide, 65536 * 4, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(narrowed.data(), d_narrow, n * 2, cudaMemcpyDeviceToHost));
    const auto expected = host_widen_all(bf16);
    for (int b = 0; b < 65536; ++b) failures += wide[b] != expected[b];
    for (int i = 0; i < n; ++i) failures += narrowed[i] != host_narrow(floats[i], bf16);
  }
  cudaFree(d_wide);
  cudaFree(d_in);
  cudaFree(d_narrow);
  std::printf("%d mismatches between device and host conversions\n", failures);
  return failures ? 1 : 0;
}
