// The fused kernels of tpkit/kernels/fused_kernels.cuh against a float64 reference written here
// from the math, in float, half and bfloat16, on random inputs from fixed seeds, with outputs
// poisoned (all bits set: NaN) before each launch so that an element a kernel fails to write
// is caught. Skipped (exit 77) without a GPU.
//
// Bounds. Inputs are exactly representable in T; the reference computes in float64 from them.
// A kernel computes in float and rounds its result to T once: |error| <= u_T |ref| (u_T =
// 2^-24, 2^-11, 2^-8) plus the float arithmetic before it, c * 2^-24 times the magnitudes
// involved, where c counts the float operations: the sum of squares of `cols` values (cols +
// 2), RoPE's two products and a sum (3), SiLU's exp and division (8, as CUDA's expf is within
// 2 ulp). Each check below states its bound in those terms.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_test_support.hpp"
#include "tpkit/kernels/fused_kernels.cuh"

using namespace tpkit;

namespace {
int failures = 0;
void expect(bool ok, const char* what, const char* type, long long shape) {
  if (!ok) std::printf("FAILED: %s (%s, size %lld)\n", what, type, shape), ++failures;
}

const double kFloat = std::ldexp(1.0, -24);

template <class T>
std::vector<T> random_values(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = from_float<T>(d(rng));
  return v;
}

template <class T>
double value(T v) {
  return double(to_float(v));
}

template <class T>
void test_rms_norm(std::mt19937& rng) {
  const double u = unit_roundoff<T>();
  for (long long cols : {1, 7, 64, 255, 256, 4096, 5000})
    for (long long rows : {1, 3, 17}) {
      const auto res = random_values<T>(std::size_t(rows * cols), rng, 2.0f);
      const auto x = random_values<T>(std::size_t(rows * cols), rng);
      std::vector<float> w(static_cast<std::size_t>(cols));
      for (auto& v : w) v = std::uniform_real_distribution<float>(0.5f, 1.5f)(rng);
      T* d_res = to_device(res);
      T* d_x = to_device(x);
      float* d_w = to_device(w);
      T* d_out = poisoned<T>(std::size_t(rows * cols));
      const float eps = 1e-5f;
      bool ok = tpkit::gpu::fused_add_rms_norm(d_res, cols, d_x, cols, rows, cols, d_w, eps, d_out, cols, nullptr) ==
                tpkit::gpu::Status::ok;
      const auto got_res = to_host(d_res, std::size_t(rows * cols));
      const auto got = to_host(d_out, std::size_t(rows * cols));
      for (long long r = 0; r < rows && ok; ++r) {
        // residual: one rounding to T of an exact float sum of two T values.
        double sum_sq = 0;
        std::vector<double> stored(static_cast<std::size_t>(cols));
        for (long long c = 0; c < cols; ++c) {
          const std::size_t i = std::size_t(r * cols + c);
          const double want = value(res[i]) + value(x[i]);
          ok &= std::fabs(value(got_res[i]) - want) <= u * std::fabs(want);
          stored[std::size_t(c)] = value(got_res[i]);  // normalised as stored, like the host
          sum_sq += stored[std::size_t(c)] * stored[std::size_t(c)];
        }
        const double scale = 1.0 / std::sqrt(sum_sq / double(cols) + eps);
        for (long long c = 0; c < cols; ++c) {
          const double want = stored[std::size_t(c)] * scale * w[std::size_t(c)];
          const double bound = (u + double(cols + 6) * kFloat) * std::fabs(want) + 1e-30;
          ok &= std::fabs(value(got[std::size_t(r * cols + c)]) - want) <= bound;
        }
      }
      expect(ok, "fused_add_rms_norm", dtype_name(dtype_of_v<T>), cols);
      cudaFree(d_res), cudaFree(d_x), cudaFree(d_w), cudaFree(d_out);
    }
}

template <class T>
void test_silu_and_rope(std::mt19937& rng) {
  const double u = unit_roundoff<T>();
  for (long long n : {1, 31, 256, 11008}) {
    const long long rows = 5;
    const auto gu = random_values<T>(std::size_t(rows * 2 * n), rng, 3.0f);
    T* d_gu = to_device(gu);
    T* d_out = poisoned<T>(std::size_t(rows * n));
    bool ok = tpkit::gpu::silu_and_mul(d_gu, rows, n, d_out, nullptr) == tpkit::gpu::Status::ok;
    const auto got = to_host(d_out, std::size_t(rows * n));
    for (long long r = 0; r < rows && ok; ++r)
      for (long long i = 0; i < n; ++i) {
        const double g = value(gu[std::size_t(r * 2 * n + i)]), up = value(gu[std::size_t(r * 2 * n + n + i)]);
        const double want = g / (1.0 + std::exp(-g)) * up;
        ok &= std::fabs(value(got[std::size_t(r * n + i)]) - want) <= (u + 8 * kFloat) * std::fabs(want) + 1e-30;
      }
    expect(ok, "silu_and_mul", dtype_name(dtype_of_v<T>), n);
    cudaFree(d_gu), cudaFree(d_out);
  }
  for (long long head_dim : {64, 128, 256})
    for (bool interleaved : {false, true}) {
      const long long rows = 7, heads = 3, ld = heads * head_dim + 8, half_dim = head_dim / 2;
      const auto x = random_values<T>(std::size_t(rows * ld), rng);
      std::vector<float> cos(static_cast<std::size_t>(rows * half_dim)), sin(cos.size());
      for (std::size_t i = 0; i < cos.size(); ++i) {
        const float angle = std::uniform_real_distribution<float>(-10.0f, 10.0f)(rng);
        cos[i] = std::cos(angle), sin[i] = std::sin(angle);
      }
      T* d_x = to_device(x);
      float* d_cos = to_device(cos);
      float* d_sin = to_device(sin);
      bool ok = tpkit::gpu::rope(d_x, ld, rows, int(heads), head_dim, d_cos, d_sin, interleaved, nullptr) ==
                tpkit::gpu::Status::ok;
      const auto got = to_host(d_x, std::size_t(rows * ld));
      for (long long r = 0; r < rows && ok; ++r) {
        for (long long h = 0; h < heads; ++h)
          for (long long k = 0; k < half_dim; ++k) {
            const long long a = r * ld + h * head_dim + (interleaved ? 2 * k : k);
            const long long b = r * ld + h * head_dim + (interleaved ? 2 * k + 1 : k + half_dim);
            const double c = cos[std::size_t(r * half_dim + k)], s = sin[std::size_t(r * half_dim + k)];
            const double x0 = value(x[std::size_t(a)]), x1 = value(x[std::size_t(b)]);
            const double magnitude = std::fabs(x0 * c) + std::fabs(x1 * s);
            const double want0 = x0 * c - x1 * s, want1 = x1 * c + x0 * s;
            ok &= std::fabs(value(got[std::size_t(a)]) - want0) <= u * std::fabs(want0) + 3 * kFloat * magnitude;
            ok &= std::fabs(value(got[std::size_t(b)]) - want1) <= u * std::fabs(want1) + 3 * kFloat * magnitude;
          }
        for (long long p = heads * head_dim; p < ld; ++p)  // the row's padding is not touched
          ok &= std::memcmp(&got[std::size_t(r * ld + p)], &x[std::size_t(r * ld + p)], sizeof(T)) == 0;
      }
      expect(ok, interleaved ? "rope (interleaved pairs)" : "rope (rotate half)", dtype_name(dtype_of_v<T>), head_dim);
      cudaFree(d_x), cudaFree(d_cos), cudaFree(d_sin);
    }
}

template <class T>
void test_embedding_and_argmax(std::mt19937& rng) {
  const long long vocab_rows = 37, first = 100, hidden = 300, count = 9;
  const auto table = random_values<T>(std::size_t(vocab_rows * hidden), rng);
  // Ids below, inside (both ends) and above this rank's rows.
  const std::vector<std::int32_t> ids = {0, 99, 100, 101, 120, 136, 137, 5000, 100};
  T* d_table = to_device(table);
  std::int32_t* d_ids = to_device(ids);
  T* d_out = poisoned<T>(std::size_t(count * hidden));
  bool ok = tpkit::gpu::embedding_lookup(d_ids, count, d_table, first, vocab_rows, hidden, d_out, hidden, nullptr) ==
            tpkit::gpu::Status::ok;
  const auto got = to_host(d_out, std::size_t(count * hidden));
  for (long long t = 0; t < count && ok; ++t)
    for (long long c = 0; c < hidden; ++c) {
      const long long local = ids[std::size_t(t)] - first;
      const double want = local >= 0 && local < vocab_rows ? value(table[std::size_t(local * hidden + c)]) : 0.0;
      ok &= value(got[std::size_t(t * hidden + c)]) == want;
    }
  expect(ok, "embedding_lookup", dtype_name(dtype_of_v<T>), hidden);
  cudaFree(d_table), cudaFree(d_ids), cudaFree(d_out);

  for (long long n : {1, 5, 256, 32000, 151936}) {
    const long long batch = 4;
    auto values = random_values<T>(std::size_t(batch * n), rng);
    // Row 1 has its maximum twice (the lower index must win); row 2 is constant.
    if (n > 3) values[std::size_t(n + 2)] = values[std::size_t(n + n - 1)] = from_float<T>(100.0f);
    for (long long c = 0; c < n; ++c) values[std::size_t(2 * n + c)] = from_float<T>(-3.0f);
    T* d_values = to_device(values);
    float* d_best = poisoned<float>(std::size_t(batch));
    std::int64_t* d_index = poisoned<std::int64_t>(std::size_t(batch));
    ok = tpkit::gpu::row_argmax(d_values, n, batch, n, d_best, d_index, nullptr) == tpkit::gpu::Status::ok;
    const auto best = to_host(d_best, std::size_t(batch));
    const auto index = to_host(d_index, std::size_t(batch));
    for (long long b = 0; b < batch && ok; ++b) {
      long long want = 0;
      for (long long c = 1; c < n; ++c)
        if (value(values[std::size_t(b * n + c)]) > value(values[std::size_t(b * n + want)])) want = c;
      ok &= index[std::size_t(b)] == want && double(best[std::size_t(b)]) == value(values[std::size_t(b * n + want)]);
    }
    expect(ok, "row_argmax (ties: lowest index)", dtype_name(dtype_of_v<T>), n);
    cudaFree(d_values), cudaFree(d_best), cudaFree(d_index);
  }
}

void test_bad_arguments() {
  float* p = nullptr;
  expect(tpkit::gpu::rms_norm(p, 4, 2, 8, nullptr, 1e-5f, p, 8, nullptr) == tpkit::gpu::Status::invalid_argument,
         "rms_norm refuses ldx < cols", "f32", 8);
  expect(tpkit::gpu::rope(p, 10, 1, 2, 7, nullptr, nullptr, false, nullptr) == tpkit::gpu::Status::invalid_argument,
         "rope refuses an odd head_dim", "f32", 7);
  expect(tpkit::gpu::row_argmax(p, 4, 1, 0, nullptr, nullptr, nullptr) == tpkit::gpu::Status::invalid_argument,
         "row_argmax refuses an empty row", "f32", 0);
}
}  // namespace

int main() {
  if (!have_gpu()) return 77;
  std::mt19937 rng(20261122);
  test_rms_norm<float>(rng), test_rms_norm<half>(rng), test_rms_norm<bfloat16>(rng);
  test_silu_and_rope<float>(rng), test_silu_and_rope<half>(rng), test_silu_and_rope<bfloat16>(rng);
  test_embedding_and_argmax<float>(rng), test_embedding_and_argmax<half>(rng), test_embedding_and_argmax<bfloat16>(rng);
  test_bad_arguments();
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) std::printf("FAILED: %s\n", cudaGetErrorString(e)), ++failures;
  std::printf("fused kernels: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
