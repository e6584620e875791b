// Host linear-layer throughput against this machine's own memory bandwidth, measured in the
// same run: a batch-1 decode step is a matrix-vector product whose floor is streaming the
// weights once. Prints effective weight bandwidth and its ratio to a single-thread copy.
//
//   bench_linear [N K]   (default 4096 x 4096: a 64 MiB fp32 weight, far larger than cache)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <tpkit/tpkit.hpp>

using Clock = std::chrono::steady_clock;

template <class F>
double best_seconds(int repeats, F&& f) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Copy bandwidth counted as bytes read + bytes written, as STREAM does.
double copy_bandwidth(std::size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  const double s = best_seconds(5, [&] { std::memcpy(b.data(), a.data(), bytes); });
  if (b[bytes / 2] != 1) std::abort();
  return 2.0 * double(bytes) / s;
}

// Read-only streaming bandwidth: the ceiling for a kernel that only reads its weights.
double read_bandwidth(std::size_t bytes) {
  tpkit::HostBuffer<float> a(bytes / sizeof(float), 1.0f);
  float total = 0;
  const double s = best_seconds(5, [&] {
    float acc[16] = {};
    for (std::size_t i = 0; i + 16 <= a.size(); i += 16)
      for (int j = 0; j < 16; ++j) acc[j] += a[i + std::size_t(j)];
    for (float v : acc) total += v;
  });
  if (total == 0) std::abort();
  return double(bytes) / s;
}

template <class T>
void run(const char* name, std::int64_t N, std::int64_t K, std::int64_t batch, double copy_bw, double read_bw) {
  tpkit::HostBuffer<T> w(std::size_t(N * K), T(0.001f)), x(std::size_t(batch * K), T(1.0f)), y(std::size_t(batch * N));
  const tpkit::HostOps ops;  // one thread: the kernel's own rate
  const double s =
      best_seconds(5, [&] { ops.linear<T, T>(x.data(), K, batch, w.data(), K, N, K, nullptr, y.data(), N); });
  const double weight_bw = double(N * K) * sizeof(T) / s;
  const double flops = 2.0 * double(N * K * batch) / s;
  std::printf("%-5s batch %3lld: %8.3f ms  weights %6.2f GB/s (%5.1f%% of copy, %5.1f%% of read)  %7.2f GFLOP/s\n",
              name, static_cast<long long>(batch), s * 1e3, weight_bw / 1e9, 100.0 * weight_bw / copy_bw,
              100.0 * weight_bw / read_bw, flops / 1e9);
}

int main(int argc, char** argv) {
  const std::int64_t N = argc > 2 ? std::atoll(argv[1]) : 4096, K = argc > 2 ? std::atoll(argv[2]) : 4096;
  const double copy_bw = copy_bandwidth(std::size_t(256) << 20), read_bw = read_bandwidth(std::size_t(256) << 20);
  std::printf("single thread: copy %.2f GB/s (read + write), read %.2f GB/s\nweight [%lld, %lld]\n", copy_bw / 1e9,
              read_bw / 1e9, static_cast<long long>(N), static_cast<long long>(K));
  for (std::int64_t batch : {1, 16}) {
    run<float>("f32", N, K, batch, copy_bw, read_bw);
    run<tpkit::bfloat16>("bf16", N, K, batch, copy_bw, read_bw);
  }
}
