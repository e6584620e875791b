// tpkit/ops/host_kernels.hpp: the element-wise and per-row kernels of a transformer block on
// the host (RMSNorm, RoPE, SiLU-and-mul, residual add). Float arithmetic, T storage.
#pragma once

#include <cmath>
#include <cstdint>

#include "tpkit/core/dtype.hpp"

namespace tpkit {
namespace host_kernels {

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `cols` elements.
template <class T>
void rms_norm(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols, const float* weight, float eps, T* y,
              std::int64_t ldy) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * ldx;
    float sum = 0;
    for (std::int64_t c = 0; c < cols; ++c) sum += to_float(xr[c]) * to_float(xr[c]);
    const float scale = 1.0f / std::sqrt(sum / float(cols) + eps);
    for (std::int64_t c = 0; c < cols; ++c) y[r * ldy + c] = from_float<T>(to_float(xr[c]) * scale * weight[c]);
  }
}

// Rotates `heads` heads of head_dim in each of `rows` rows (row stride ld) by the per-row
// angles (cos, sin: [rows, head_dim / 2]). interleaved: pairs (2i, 2i+1); otherwise (i, i+d/2).
template <class T>
void rope(T* x, std::int64_t ld, std::int64_t rows, int heads, std::int64_t head_dim, const float* cos,
          const float* sin, bool interleaved) {
  const std::int64_t half = head_dim / 2;
  for (std::int64_t r = 0; r < rows; ++r)
    for (int h = 0; h < heads; ++h) {
      T* v = x + r * ld + h * head_dim;
      for (std::int64_t i = 0; i < half; ++i) {
        const std::int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        const float c = cos[r * half + i], s = sin[r * half + i];
        const float x0 = to_float(v[a]), x1 = to_float(v[b]);
        v[a] = from_float<T>(x0 * c - x1 * s);
        v[b] = from_float<T>(x1 * c + x0 * s);
      }
    }
}

// out[r][i] = silu(gu[r][i]) * gu[r][n + i], where each row of gu is [gate (n) | up (n)].
template <class T>
void silu_and_mul(const T* gu, std::int64_t rows, std::int64_t n, T* out) {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t i = 0; i < n; ++i) {
      const float g = to_float(gu[r * 2 * n + i]), u = to_float(gu[r * 2 * n + n + i]);
      out[r * n + i] = from_float<T>(g / (1.0f + std::exp(-g)) * u);
    }
}

// x[i] += y[i].
template <class T>
void add(T* x, const T* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) x[i] = from_float<T>(to_float(x[i]) + to_float(y[i]));
}

}  // namespace host_kernels
}  // namespace tpkit
